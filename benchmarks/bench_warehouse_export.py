"""Benchmark: export_operational_warehouse_batch.py against `mariadb --batch` on the same rows.

Fills `attendance_records` of a scratch MariaDB database with ROWS narrow records (1,000,000 and
2,000,000 by default; MariaDB's SEQUENCE engine), then for each size:
- `mariadb --batch -e 'SELECT <the export's columns> FROM attendance_records' > file`, the
  command-line client writing tab-separated text: the yardstick;
- the tool itself, `attendance_records --full-refresh --execute` to Parquet, as a process (start-up,
  ledger, snapshot, counting, reading, writing, fsync, manifest), once per reader: connectorx
  (the `[fast]` extra, the default when installed) and PyMySQL (the fallback).
It prints rows/s (the best of --runs; the client and the tool take turns, so a load that comes
and goes hits both), the highest peak RSS of the process over the runs (os.wait4), its CPU
seconds (user + system, the least over the runs: steadier than the wall clock on a busy
machine; the client's leaves out the server's work) and the ratio to the client's rate. Memory is flat when the 2,000,000-row peak is within 10 % of the
1,000,000-row one.

    python benchmarks/bench_warehouse_export.py [--rows 1000000 2000000] [--runs 1]
        [--readers connectorx pymysql] [--format parquet] [--reuse]

--reuse keeps one database per size (`ops_bench_warehouse_export_<rows>`) and seeds it only when
it does not hold the rows already: seeding 2,000,000 records takes minutes.

The server is OPS_BENCH_MYSQL_URL (default root@127.0.0.1:3306).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from ops_lib.jobs.schema_admin import create_scratch_database  # noqa: E402
from ops_lib.schema import attendance_records  # noqa: E402

SERVER = os.environ.get("OPS_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
DATABASE = "ops_bench_warehouse_export"
TOOL = REPO / "tools" / "export_operational_warehouse_batch.py"


def fill(url: str, rows: int) -> float:
    """Records 1..rows: 50 institutions, dates over 20 months, updated over the past year."""
    engine = create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
        conn.exec_driver_sql("TRUNCATE TABLE attendance_records")
        conn.exec_driver_sql("TRUNCATE TABLE ops_export_watermarks")
        for low in range(1, rows + 1, 200_000):
            high = min(rows, low + 199_999)
            conn.exec_driver_sql(
                "INSERT INTO attendance_records (id, institution_id, student_id, "
                "attendance_date, first_scan_at, last_scan_at, scan_count, status, is_archived, "
                "created_at, updated_at) "
                "SELECT seq, 1 + MOD(seq, 50), seq, DATE'2025-01-01' + INTERVAL MOD(seq, 600) DAY, "
                "TIMESTAMP'2025-01-01 07:00:00' + INTERVAL seq SECOND, "
                "TIMESTAMP'2025-01-01 08:00:00' + INTERVAL seq SECOND, 1 + MOD(seq, 3), "
                "IF(MOD(seq, 7) = 0, 'late', 'present'), 0, "
                "TIMESTAMP'2025-06-01 09:00:00' + INTERVAL (seq * 10) SECOND, "
                "TIMESTAMP'2025-06-01 09:00:00' + INTERVAL (seq * 10) SECOND "
                f"FROM seq_{low}_to_{high}")
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
    engine.dispose()
    return time.perf_counter() - started


def seeded_database(rows: int, reuse: bool) -> str:
    """The URL of a database holding `rows` records, seeded unless --reuse finds it ready."""
    if not reuse:
        url = create_scratch_database(SERVER, DATABASE)
    else:
        name = f"{DATABASE}_{rows}"
        url = make_url(SERVER).set(database=name).render_as_string(hide_password=False)
        try:
            engine = create_engine(url)
            with engine.connect() as conn:
                held = conn.execute(text("SELECT COUNT(*), MAX(id) FROM attendance_records")).one()
            engine.dispose()
        except Exception:  # no such database yet (or an older schema): seed a new one
            held = None
        if held is not None and tuple(held) == (rows, rows):
            print(f"reusing {name} ({rows:,} records)", file=sys.stderr)
            return url
        url = create_scratch_database(SERVER, name)
    seconds = fill(url, rows)
    print(f"seeded {rows:,} records in {seconds:.1f}s", file=sys.stderr)
    return url


def timed(command: list[str], env: dict | None = None, stdout=subprocess.DEVNULL
          ) -> tuple[float, float, float]:
    """(seconds, peak RSS in MiB, CPU seconds: user + system) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=stdout, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[0]} failed: {process.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def client_command(url: str) -> list[str]:
    parsed = make_url(url)
    columns = ", ".join(c.name for c in attendance_records.columns)
    command = [shutil.which("mariadb") or "mysql", "--batch", f"-h{parsed.host or '127.0.0.1'}",
               f"-P{parsed.port or 3306}", f"-u{parsed.username or 'root'}"]
    if parsed.password:
        command.append(f"-p{parsed.password}")
    return command + [parsed.database, "-e", f"SELECT {columns} FROM attendance_records"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 2_000_000])
    parser.add_argument("--runs", type=int, default=1, help="runs of each; the best counts")
    parser.add_argument("--readers", nargs="+", default=["connectorx", "pymysql"])
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv", "jsonl"])
    parser.add_argument("--reuse", action="store_true",
                        help="keep a database per size and reuse it when it holds the rows")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_export_"))
    table = []
    try:
        for rows in args.rows:
            url = seeded_database(rows, args.reuse)
            runs: dict[str, list[tuple[float, float, float]]] = {"client": []}
            for _ in range(args.runs):
                with open(work / "client.tsv", "wb") as out:
                    runs["client"].append(timed(client_command(url), stdout=out))
                for reader in args.readers:
                    env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
                    env.update(OPS_DATABASE_URL=url, OPS_EXPORT_DIR=str(work / "exports"),
                               OPS_EXPORT_LAG_SECONDS="0", OPS_EXPORT_READER=reader,
                               OPS_LOCK_DIR=str(work / "locks"))
                    shutil.rmtree(work / "exports", ignore_errors=True)
                    runs.setdefault(reader, []).append(timed(
                        [sys.executable, str(TOOL), "attendance_records", "--full-refresh",
                         "--execute", "--quiet", "--format", args.format], env=env))
            client_s = min(s for s, _, _ in runs["client"])
            client_rate = rows / client_s
            for what, name in [("client", "mariadb --batch")] + [
                    (reader, f"export ({args.format}, {reader})") for reader in args.readers]:
                seconds = min(s for s, _, _ in runs[what])
                table.append((rows, name, seconds, rows / seconds,
                              max(r for _, r, _ in runs[what]),
                              min(c for _, _, c in runs[what]), rows / seconds / client_rate))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'rows':>10}  {'what':<32} {'seconds':>8} {'rows/s':>10} {'peak RSS MiB':>13} "
          f"{'CPU s':>6} {'x client':>9}")
    for rows, what, seconds, rate, rss, cpu, ratio in table:
        print(f"{rows:>10,}  {what:<32} {seconds:>8.2f} {rate:>10,.0f} {rss:>13.0f} "
              f"{cpu:>6.2f} {ratio:>9.2f}")


if __name__ == "__main__":
    main()
