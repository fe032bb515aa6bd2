"""Benchmark: export_operational_warehouse_batch.py against `mariadb --batch` on the same rows.

Fills `attendance_records` of a scratch MariaDB database with ROWS narrow records (1,000,000 and
2,000,000 by default; MariaDB's SEQUENCE engine), then for each size:
- `mariadb --batch -e 'SELECT <the export's columns> FROM attendance_records' > file`, the
  command-line client writing tab-separated text: the yardstick;
- the tool itself, `attendance_records --full-refresh --execute` to Parquet, as a process (start-up,
  ledger, snapshot, counting, reading, writing, fsync, manifest), once per reader: connectorx
  (the `[fast]` extra, the default when installed) and PyMySQL (the fallback).
It prints rows/s, peak RSS of the process (os.wait4) and the ratio to the client's rate. Memory is
flat when the 2,000,000-row peak is within 10 % of the 1,000,000-row one.

    python benchmarks/bench_warehouse_export.py [--rows 1000000 2000000] [--runs 1]
        [--readers connectorx pymysql] [--format parquet]

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

from sqlalchemy import create_engine  # noqa: E402
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


def timed(command: list[str], env: dict | None = None, stdout=subprocess.DEVNULL
          ) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=stdout, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[0]} failed: {process.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024


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
    args = parser.parse_args()

    url = create_scratch_database(SERVER, DATABASE)
    work = Path(tempfile.mkdtemp(prefix="bench_export_"))
    table = []
    try:
        for rows in args.rows:
            seeded = fill(url, rows)
            print(f"seeded {rows:,} records in {seeded:.1f}s", file=sys.stderr)
            client = []
            for _ in range(args.runs):
                with open(work / "client.tsv", "wb") as out:
                    client.append(timed(client_command(url), stdout=out))
            client_s, client_rss = min(client)
            client_rate = rows / client_s
            table.append((rows, "mariadb --batch", client_s, client_rate, client_rss, 1.0))
            for reader in args.readers:
                env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
                env.update(OPS_DATABASE_URL=url, OPS_EXPORT_DIR=str(work / "exports"),
                           OPS_EXPORT_LAG_SECONDS="0", OPS_EXPORT_READER=reader,
                           OPS_LOCK_DIR=str(work / "locks"))
                runs = []
                for _ in range(args.runs):
                    shutil.rmtree(work / "exports", ignore_errors=True)
                    runs.append(timed([sys.executable, str(TOOL), "attendance_records",
                                       "--full-refresh", "--execute", "--quiet",
                                       "--format", args.format], env=env))
                seconds, rss = min(runs)
                rate = rows / seconds
                table.append((rows, f"export ({args.format}, {reader})", seconds, rate, rss,
                              rate / client_rate))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'rows':>10}  {'what':<32} {'seconds':>8} {'rows/s':>10} {'peak RSS MiB':>13} "
          f"{'x client':>9}")
    for rows, what, seconds, rate, rss, ratio in table:
        print(f"{rows:>10,}  {what:<32} {seconds:>8.2f} {rate:>10,.0f} {rss:>13.0f} "
              f"{ratio:>9.2f}")


if __name__ == "__main__":
    main()
