"""Benchmark: check_schema_drift.py against `skeema diff` on the same live schema (MariaDB).

A scratch database is built from schema.sql (28 tables); each tool compares it with schema.sql,
first as it is (no difference), then with one column dropped (`guardians.email`). skeema reads
schema.sql split per table, one `CREATE TABLE` a file, as it wants it, with a `.skeema` file
naming the database and its charset, and loads them into its own temporary schema the same way
(`--workspace=temp-schema`). Runs alternate (ABBA per round) so neither gains from its place.

    python benchmarks/bench_schema_drift.py [--rounds N]

It prints, per case, the mean wall-clock time of each process, this tool's time less a bare
interpreter's start-up (`python -c pass`, measured alongside), and the ratio to skeema. The
issue's target: that difference no slower than skeema. Where Debian's `skeema` is not installed,
its column says so. The server is OPS_BENCH_MYSQL_URL (default root@127.0.0.1:3306).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from ops_lib.jobs.schema_admin import create_scratch_database, drop_database  # noqa: E402
from ops_lib.schema_sql import schema_statements  # noqa: E402

SERVER = os.environ.get("OPS_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
DATABASE = "ops_bench_drift"
DROP_ONE_COLUMN = "ALTER TABLE guardians DROP COLUMN email"


def timed(command: list[str], env: dict | None = None, expect: int = 0,
          cwd: str | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(command[:3])}: exit {done.returncode}, expected {expect}: "
                         f"{(done.stderr or done.stdout)[-2000:]}")
    return elapsed


def skeema_folder(folder: Path) -> None:
    """schema.sql as skeema wants it: one file per table, and a .skeema naming the database."""
    url = make_url(SERVER)
    (folder / ".skeema").write_text(
        f"host={url.host or '127.0.0.1'}\nport={url.port or 3306}\n"
        f"user={url.username or 'root'}\n" + (f"password={url.password}\n" if url.password else "")
        + f"schema={DATABASE}\ndefault-character-set=utf8mb4\n"
        "default-collation=utf8mb4_unicode_ci\n", encoding="utf-8")
    for statement in schema_statements():
        if statement.table:
            (folder / f"{statement.table}.sql").write_text(
                statement.text.replace("IF NOT EXISTS ", "", 1) + ";\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="each round runs the tool, skeema, skeema, the tool (ABBA)")
    args = parser.parse_args()

    have_skeema = shutil.which("skeema") is not None
    url = create_scratch_database(SERVER, DATABASE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
    env.update(OPS_DATABASE_URL=url, OPS_LOCK_DIR=tempfile.gettempdir())
    tool = [sys.executable, str(REPO / "tools" / "check_schema_drift.py"), "--quiet"]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            skeema_folder(Path(folder))
            skeema = ["skeema", "diff", "--allow-unsafe"]  # reads the folder it runs in
            for case, expect in (("no difference", 0), ("one dropped column", 1)):
                if expect:
                    engine = create_engine(url)
                    with engine.begin() as conn:
                        conn.exec_driver_sql(DROP_ONE_COLUMN)
                    engine.dispose()
                times: dict[str, list[float]] = {"tool": [], "skeema": [], "python": []}
                for _ in range(args.rounds):
                    for name in ("tool", "skeema", "skeema", "tool"):
                        if name == "tool":
                            times["tool"].append(timed(tool, env, expect))
                        elif have_skeema:
                            times["skeema"].append(timed(skeema, expect=expect, cwd=folder))
                    times["python"].append(timed([sys.executable, "-c", "pass"]))
                rows.append((case, times))
    finally:
        drop_database(SERVER, DATABASE)

    tables = sum(1 for statement in schema_statements() if statement.table)
    print(f"check_schema_drift.py vs skeema diff, schema.sql's {tables} tables, MariaDB at "
          f"{make_url(SERVER).host}; mean of {args.rounds * 2} runs each")
    print(f"{'case':<20} {'this tool':>10} {'less start-up':>14} {'skeema diff':>12} "
          f"{'ratio':>7}")
    for case, times in rows:
        mean_tool = statistics.mean(times["tool"])
        start_up = statistics.mean(times["python"])
        net = mean_tool - start_up
        if times["skeema"]:
            mean_skeema = statistics.mean(times["skeema"])
            theirs, ratio = f"{mean_skeema:.3f} s", f"{net / mean_skeema:.2f}x"
        else:
            theirs, ratio = "not installed", "-"
        print(f"{case:<20} {mean_tool:>8.3f} s {net:>12.3f} s {theirs:>12} {ratio:>7}")
    print(f"bare interpreter start-up (python -c pass): {statistics.mean(times['python']):.3f} s")
    if not have_skeema:
        print("note: skeema skipped, not installed (apt-get install skeema)")


if __name__ == "__main__":
    main()
