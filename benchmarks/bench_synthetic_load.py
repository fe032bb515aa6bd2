"""Benchmark: the synthetic load generator making 100,000 queued scans on MariaDB.

Creates a scratch database on the server, loads schema.sql, runs
`tools/generate_synthetic_load.py --execute --json` as a real process, prints rows, seconds and
rows/s per table (from the job's own timings) and for the whole run, then drops the database.
The generator's defaults include the demo's history (about 700 rows); --no-history measures the
bare load alone.

    python benchmarks/bench_synthetic_load.py [--server-url mysql+pymysql://root@127.0.0.1:3306]
        [--no-history]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import click  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402

from ops_lib.jobs.schema_admin import create_scratch_database  # noqa: E402


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 else "-"


@click.command()
@click.option("--server-url", default="mysql+pymysql://root@127.0.0.1:3306", show_default=True,
              help="MariaDB/MySQL server (no database): a scratch database is made there.")
@click.option("--scans", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=1, show_default=True)
@click.option("--history/--no-history", default=True, show_default=True,
              help="The generator's demo history too (its default).")
def main(server_url: str, scans: int, seed: int, history: bool) -> None:
    name = f"ops_bench_synthetic_{os.getpid()}"
    server = create_engine(server_url)
    with server.connect() as conn:
        version = conn.exec_driver_sql("select version()").scalar()
    url = create_scratch_database(server_url, name)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
        env["OPS_DATABASE_URL"] = url
        command = [sys.executable, str(REPO / "tools" / "generate_synthetic_load.py"),
                   "--scans", str(scans), "--seed", str(seed), "--execute", "--json",
                   "--history" if history else "--no-history"]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"generator failed ({done.returncode}): {done.stderr.strip()}")
        result = json.loads(done.stdout)
    finally:
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        server.dispose()

    counts = {k.removesuffix("_inserted"): v for k, v in result["counts"].items()}
    timings = result["timings"]
    total = sum(counts.values())
    print(f"synthetic load on {version}: {scans:,} queued scans, seed {seed}, "
          f"{'with' if history else 'without'} the demo history")
    print(f"{'what':<28} {'rows':>9} {'seconds':>8} {'rows/s':>9}")
    for table, rows in counts.items():
        seconds = timings.get(f"insert_{table}", 0.0)
        print(f"{table:<28} {rows:>9,} {seconds:>8.2f} {rate(rows, seconds):>9}")
    print(f"{'build rows (Python)':<28} {total:>9,} {timings['build']:>8.2f} "
          f"{rate(total, timings['build']):>9}")
    print(f"{'insert + commit':<28} {total:>9,} {timings['insert']:>8.2f} "
          f"{rate(total, timings['insert']):>9}")
    print(f"{'whole run (process wall)':<28} {total:>9,} {wall:>8.2f} {rate(total, wall):>9}")


if __name__ == "__main__":
    main()
