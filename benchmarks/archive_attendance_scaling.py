"""Benchmark: does archiving attendance records grow linearly with the rows to archive? (MariaDB)

For each size (default 100,000, 200,000 and 400,000 eligible records) it builds a fresh scratch
database whose `attendance_records` hold, in id order as the web app writes them, a history
already archived (`is_archived = 1`), then SIZE records older than the retention, then 60 recent
days; runs `archive_hot_path_data.py BATCH --execute` as cron would; checks that exactly the
eligible records were marked and nothing else changed; and prints the archive's own seconds
(the job's `total` timing, without start-up) and the whole process's, with the growth per step
against linear: (t_n / t_first) / (n / first), 1.00 being exactly linear. Each size runs
--rounds times on fresh data (the sizes interleaved), after InnoDB has flushed and purged the
fill, and the median round counts (the machine is shared: one round can catch a busy neighbour
or a quiet moment).

    python benchmarks/archive_attendance_scaling.py [--sizes 100000,200000,400000] [--batch N]
                                                    [--students N] [--rounds N]

The server is OPS_BENCH_MYSQL_URL (default root@127.0.0.1:3306); the scratch database
`ops_bench_attendance` is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine  # noqa: E402

from archive_vs_pt_archiver import run_archive, seq_chunks, wait_until_quiet  # noqa: E402
from ops_lib.jobs.schema_admin import create_scratch_database  # noqa: E402

SERVER = os.environ.get("OPS_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
DATABASE = "ops_bench_attendance"
RETENTION_DAYS = 400  # the tool's default attendance_retention_days
HISTORY_DAYS = 100  # already archived by earlier runs
RECENT_DAYS = 60  # within the retention: stay unmarked


def fill(url: str, eligible: int, students: int) -> dict[str, int]:
    """One record per student and school day, ids rising with the date (as the web app writes)."""
    eligible_days = -(-eligible // students)
    today = dt.datetime.now(dt.timezone.utc).date()
    newest_old = today - dt.timedelta(days=RETENTION_DAYS + 10)
    first_day = newest_old - dt.timedelta(days=eligible_days + HISTORY_DAYS - 1)
    archived_rows = HISTORY_DAYS * students
    recent_first = today - dt.timedelta(days=RECENT_DAYS)
    total = archived_rows + eligible + RECENT_DAYS * students
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO institutions (id, name, code) VALUES (1, 'School', 'S1')")
        conn.exec_driver_sql(
            "INSERT INTO students (id, institution_id, name, card_uid) "
            f"SELECT seq, 1, CONCAT('Student ', seq), CONCAT('C', seq) FROM seq_1_to_{students}")
        for low, high in seq_chunks(total):
            # Rows past the eligible ones are the recent days (dates restart at recent_first).
            conn.exec_driver_sql(
                "INSERT INTO attendance_records (id, institution_id, student_id, attendance_date, "
                "first_scan_at, last_scan_at, status, is_archived, created_at, updated_at) "
                "SELECT seq, 1, 1 + MOD(seq - 1, %(students)s), d, d + INTERVAL 7 HOUR, "
                "d + INTERVAL 14 HOUR, 'present', seq <= %(archived)s, d, d "
                "FROM (SELECT seq, IF(seq <= %(old)s, "
                "DATE'%(first)s' + INTERVAL ((seq - 1) DIV %(students)s) DAY, "
                "DATE'%(recent)s' + INTERVAL ((seq - %(old)s - 1) DIV %(students)s) DAY) AS d "
                "FROM seq_%(low)s_to_%(high)s) AS s" % {
                    "students": students, "archived": archived_rows,
                    "old": archived_rows + eligible, "first": first_day.isoformat(),
                    "recent": recent_first.isoformat(), "low": low, "high": high})
    engine.dispose()
    return {"total": total, "archived": archived_rows}


def marked(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        count = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM attendance_records WHERE is_archived = 1").scalar_one()
    engine.dispose()
    return int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,200000,400000",
                        help="eligible records per run, comma-separated")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--students", type=int, default=1000, help="records per school day")
    parser.add_argument("--rounds", type=int, default=3, help="runs per size; the median counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    runs: dict[int, list[tuple[int, int, float, float]]] = {}
    for _ in range(args.rounds):  # sizes interleaved: a busy neighbour slows every size alike
        for size in sizes:
            url = create_scratch_database(SERVER, DATABASE)
            shape = fill(url, size, args.students)
            before = marked(url)
            wait_until_quiet()
            wall, result = run_archive(url, args.batch)
            done = result["counts"]["attendance_records_marked"]
            if done != size or marked(url) != before + size:
                raise SystemExit(f"{size:,} eligible: marked {done:,}, "
                                 f"table has {marked(url) - before:,} newly archived")
            seconds = result["timings"]["total"]
            steps = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(result["timings"].items()))
            print(f"  {size:,} eligible of {shape['total']:,} records: {seconds:.2f}s "
                  f"(process {wall:.2f}s; {steps})", file=sys.stderr)
            runs.setdefault(size, []).append((size, shape["total"], seconds, wall))
    # The median round: a lucky quiet moment or a busy neighbour moves one round, not the median.
    rows = [sorted(runs[size], key=lambda run: run[2])[len(runs[size]) // 2] for size in sizes]

    engine = create_engine(SERVER)
    with engine.begin() as conn:
        version = conn.exec_driver_sql("SELECT VERSION()").scalar_one()
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{DATABASE}`")
    engine.dispose()
    print(f"\nMarking old attendance records archived, BATCH {args.batch}, MariaDB {version}, "
          f"median of {args.rounds} rounds")
    print(f"{'eligible':>10}{'table rows':>12}{'archive s':>11}{'process s':>11}"
          f"{'rows/s':>10}{'vs linear':>11}")
    first_size, _, first_seconds, _ = rows[0]
    for size, total, seconds, wall in rows:
        growth = (seconds / first_seconds) / (size / first_size)
        print(f"{size:>10,}{total:>12,}{seconds:>11.2f}{wall:>11.2f}{size / seconds:>10,.0f}"
              f"{growth:>10.2f}x")
    print("vs linear = (t / t_first) / (rows / rows_first): 1.00 is linear, 1.30 the limit")


if __name__ == "__main__":
    main()
