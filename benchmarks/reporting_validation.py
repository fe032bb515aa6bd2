"""Benchmark: does the reporting validation's cost follow its window, not the table? (MariaDB)

For each size (default 500,000, 1,000,000 and 2,000,000 attendance records: one per student and
day, 5,000 students in 20 institutions, so the table covers size / 5,000 days) it builds a fresh
scratch database, runs `shadow_reporting_validation.py` on the last 7 days as cron would, with
the database as its own target (each side's figures read once), and prints the job's seconds per
side and the whole process's. Beside them: the same attendance statement without its
`is_archived IN (0, 1)` condition, which the server answers with a full scan.

    python benchmarks/reporting_validation.py [--sizes 500000,1000000,2000000] [--rounds N]

The server is OPS_BENCH_MYSQL_URL (default root@127.0.0.1:3306); the scratch database
`ops_bench_validation` is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine  # noqa: E402

from archive_vs_pt_archiver import seq_chunks  # noqa: E402
from ops_lib.jobs.reporting_validation import Window, areas  # noqa: E402
from ops_lib.jobs.schema_admin import create_scratch_database, drop_database  # noqa: E402

SERVER = os.environ.get("OPS_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
DATABASE = "ops_bench_validation"
STUDENTS = 5000
INSTITUTIONS = 20
WINDOW_DAYS = 7


def fill(url: str, records: int) -> Window:
    """One record per student and day up to yesterday; the window is the last 7 days."""
    days = -(-records // STUDENTS)
    today = dt.datetime.now(dt.timezone.utc).date()
    first = today - dt.timedelta(days=days)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO institutions (id, name, code) "
            f"SELECT seq, CONCAT('School ', seq), CONCAT('S', seq) FROM seq_1_to_{INSTITUTIONS}")
        conn.exec_driver_sql(
            "INSERT INTO students (id, institution_id, name) "
            f"SELECT seq, 1 + MOD(seq, {INSTITUTIONS}), CONCAT('Student ', seq) "
            f"FROM seq_1_to_{STUDENTS}")
        for low, high in seq_chunks(records):
            conn.exec_driver_sql(
                "INSERT INTO attendance_records (id, institution_id, student_id, attendance_date, "
                "first_scan_at, last_scan_at, status, created_at, updated_at) "
                f"SELECT seq, 1 + MOD(1 + MOD(seq - 1, {STUDENTS}), {INSTITUTIONS}), "
                f"1 + MOD(seq - 1, {STUDENTS}), d, d, d, IF(MOD(seq, 7) = 0, 'late', 'present'), "
                f"d, d FROM (SELECT seq, DATE'{first}' + INTERVAL ((seq - 1) DIV {STUDENTS}) DAY "
                f"AS d FROM seq_{low}_to_{high}) AS s")
        conn.exec_driver_sql("ANALYZE TABLE attendance_records")
    engine.dispose()
    return Window(today - dt.timedelta(days=WINDOW_DAYS), today)


def full_scan_seconds(url: str, window: Window) -> float:
    """The attendance statement without the index's flag condition (a full scan)."""
    engine = create_engine(url)
    statement = areas(window)[0].statement
    sql = " ".join(str(statement.compile(dialect=engine.dialect,
                                         compile_kwargs={"literal_binds": True})).split())
    sql = sql.replace("attendance_records.is_archived IN (false, true) AND ", "")
    with engine.connect() as conn:
        started = time.perf_counter()
        conn.exec_driver_sql(sql).all()
        seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def run_tool(url: str, window: Window) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
    env.update(OPS_DATABASE_URL=url, OPS_VALIDATION_TARGET_URL=url)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "shadow_reporting_validation.py"),
         "--from", str(window.start), "--to", str(window.end), "--json", "--quiet"],
        env=env, capture_output=True, text=True, check=False)
    process = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the tool failed ({done.returncode}): {done.stderr}")
    timings = json.loads(done.stdout)["timings"]
    return {"primary": timings["primary"], "target": timings["target"], "process": process}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500000,1000000,2000000")
    parser.add_argument("--rounds", type=int, default=3, help="tool runs per size (median)")
    args = parser.parse_args()
    rows = []
    try:
        for size in (int(part) for part in args.sizes.split(",")):
            url = create_scratch_database(SERVER, DATABASE)
            window = fill(url, size)
            runs = [run_tool(url, window) for _ in range(args.rounds)]
            scans = [full_scan_seconds(url, window) for _ in range(args.rounds)]
            rows.append((size, STUDENTS * WINDOW_DAYS,
                         statistics.median(r["primary"] for r in runs),
                         statistics.median(r["target"] for r in runs),
                         statistics.median(r["process"] for r in runs),
                         statistics.median(scans)))
    finally:
        drop_database(SERVER, DATABASE)
    print("| records in table | in the 7-day window | primary s | target s | process s "
          "| attendance statement as a full scan s |")
    print("|---|---|---|---|---|---|")
    for size, window_rows, primary, target, process, scan in rows:
        print(f"| {size:,} | {window_rows:,} | {primary:.3f} | {target:.3f} | {process:.2f} "
              f"| {scan:.3f} |")


if __name__ == "__main__":
    main()
