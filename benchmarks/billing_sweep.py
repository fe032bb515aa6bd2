"""Benchmark: the billing sweep on MariaDB, first run of a month against a repeat run.

    python benchmarks/billing_sweep.py [--institutions 2000] [--students-per-institution 100]

Creates a scratch database (OPS_BENCH_MYSQL_URL, default root@127.0.0.1:3306, database
ops_bench_billing), loads synthetic institutions, students and guardians, then times with
--execute: the first run of a month (issues every invoice), a repeat run the same day, a reminder
day (every invoice's "due-3" step: reminders recorded, emails written to a temporary outbox,
guardian notifications) and its repeat. Prints a table and the first/repeat ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine  # noqa: E402

from ops_lib.db import connect  # noqa: E402
from ops_lib.jobs import billing, synthetic_load  # noqa: E402
from ops_lib.jobs.schema_admin import create_scratch_database  # noqa: E402
from ops_lib.ledger import new_run_id  # noqa: E402
from ops_lib.runtime import Budget, RunContext, StopSignal  # noqa: E402
from ops_lib.settings import load_settings  # noqa: E402

SERVER = os.environ.get("OPS_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
NAME = "ops_bench_billing"


def context(db, outbox: str, dry_run: bool = False) -> RunContext:
    settings = load_settings({"database_url": db.url}, env={"OPS_OUTBOX_DIR": outbox})
    return RunContext(db=db, settings=settings, run_id=new_run_id(), tool="benchmark",
                      dry_run=dry_run, budget=Budget(None), stop=StopSignal())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--institutions", type=int, default=2000)
    parser.add_argument("--students-per-institution", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    server = create_engine(SERVER)
    db = connect(create_scratch_database(SERVER, NAME))
    outbox = tempfile.mkdtemp(prefix="billing-bench-")
    started = time.perf_counter()
    size = synthetic_load.LoadSize(
        institutions=args.institutions, students_per_institution=args.students_per_institution,
        guardians_per_student=1, devices_per_guardian=0, scans=0)
    synthetic_load.run(context(db, outbox), size)
    load_seconds = time.perf_counter() - started
    print(f"database: {db.display_url} ({db.caps.server_version}); loaded "
          f"{args.institutions:,} institutions, "
          f"{args.institutions * args.students_per_institution:,} students in {load_seconds:.1f}s")

    runs = [
        ("dry run, first day of the month", dt.date(2026, 12, 1), True),
        ("first run of the month", dt.date(2026, 12, 1), False),
        ("repeat run, same day", dt.date(2026, 12, 1), False),
        ("reminder day (due-3 for all)", dt.date(2026, 12, 8), False),
        ("repeat run of the reminder day", dt.date(2026, 12, 8), False),
    ]
    rows, timings = [], []
    for label, day, dry_run in runs:
        ctx = context(db, outbox, dry_run)
        started = time.perf_counter()
        result = billing.run(ctx, as_of=day)
        seconds = time.perf_counter() - started
        assert result.status == "ok", result.error
        c = result.counts
        timings.append((label, result.timings))
        rows.append((label, seconds,
                     c["platform_invoices_issued"] + c["attendee_invoices_issued"],
                     sum(v for k, v in c.items() if k.startswith("reminders_")),
                     c["reminder_emails"], c["guardian_notifications"]))
    header = ("run", "seconds", "invoices", "reminders", "emails", "notifications")
    widths = [34, 9, 10, 10, 8, 14]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                    for i, (h, w) in enumerate(zip(header, widths))))
    for row in rows:
        cells = [row[0].ljust(widths[0]), f"{row[1]:.2f}".rjust(widths[1])]
        cells += [f"{v:,}".rjust(w) for v, w in zip(row[2:], widths[2:])]
        print("  ".join(cells))
    print("\nseconds per step:")
    steps = list(timings[0][1])
    print("  ".join(["run".ljust(34)] + [s.rjust(max(len(s), 6)) for s in steps]))
    for label, t in timings:
        print("  ".join([label.ljust(34)] + [f"{t.get(s, 0):.2f}".rjust(max(len(s), 6))
                                            for s in steps]))
    first, repeat = rows[1][1], rows[2][1]
    print(f"first run / repeat run: {first / repeat:.1f}x "
          f"({first:.2f}s against {repeat:.2f}s)")
    db.engine.dispose()
    if not args.keep:
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{NAME}`")
    server.dispose()


if __name__ == "__main__":
    main()
