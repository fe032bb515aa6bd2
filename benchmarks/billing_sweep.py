"""Benchmark: the billing sweep's time and peak memory as the number of fee-paying students grows.

    python benchmarks/billing_sweep.py [--students 20000,80000,200000] [--per-institution 500]

For each size, on MariaDB (OPS_BENCH_MYSQL_URL, default root@127.0.0.1:3306, scratch database
ops_bench_billing): loads institutions of `--per-institution` fee-paying students (one guardian
each), then runs with --execute, each in its own child process:
- the first sweep of a month (2026-12-01: issues every invoice), and
- the next month's sweep (2027-01-01: issues January, December's invoices turn blocked,
  every institution and student is restricted, every December invoice gets its "blocked"
  reminder: guardian notifications and one email per institution, written to an outbox).
Prints each run's seconds and the child's peak RSS (getrusage ru_maxrss), then the growth from
the smallest size to the largest: time against linear (time ratio / student ratio; 1.0 is
linear, done when <= 1.3) and peak memory (done when <= 1.25).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SERVER = os.environ.get("OPS_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
NAME = "ops_bench_billing"
RUNS = [("first sweep of the month", "2026-12-01"), ("next month's sweep", "2027-01-01")]
CHUNK = 5000


def load(url: str, students: int, per_institution: int) -> None:
    """Institutions with `per_institution` fee-paying students each, one guardian per student."""
    from sqlalchemy import insert

    from ops_lib.db import connect
    from ops_lib.schema import guardian_students, guardians, institutions, plans
    from ops_lib.schema import students as students_table

    db = connect(url)
    count = max(1, students // per_institution)
    with db.engine.begin() as conn:
        conn.execute(insert(plans).values(id=1, name="Basic", monthly_fee_minor=250_000,
                                          currency="BDT"))
        conn.execute(insert(institutions), [
            {"id": i, "name": f"School {i}", "code": f"S{i}", "plan_id": 1,
             "billing_email": f"billing{i}@school.example"} for i in range(1, count + 1)])
        for start in range(0, students, CHUNK):
            ids = range(start + 1, min(students, start + CHUNK) + 1)
            conn.execute(insert(students_table), [
                {"id": s, "institution_id": (s - 1) // per_institution + 1, "name": f"Student {s}",
                 "monthly_fee_minor": 150_000} for s in ids])
            conn.execute(insert(guardians), [{"id": s, "name": f"Guardian {s}"} for s in ids])
            conn.execute(insert(guardian_students),
                         [{"guardian_id": s, "student_id": s} for s in ids])
    db.engine.dispose()


def child(url: str, as_of: str, outbox: str) -> None:
    """One sweep in this process; prints its seconds, counts and peak RSS as JSON."""
    from ops_lib.db import connect
    from ops_lib.jobs import billing
    from ops_lib.ledger import new_run_id
    from ops_lib.runtime import Budget, RunContext, StopSignal
    from ops_lib.settings import load_settings

    db = connect(url)
    settings = load_settings({"database_url": url}, env={"OPS_OUTBOX_DIR": outbox})
    ctx = RunContext(db=db, settings=settings, run_id=new_run_id(), tool="benchmark",
                     dry_run=False, budget=Budget(None), stop=StopSignal())
    started = time.perf_counter()
    result = billing.run(ctx, as_of=dt.date.fromisoformat(as_of))
    seconds = time.perf_counter() - started
    assert result.status == "ok", result.error
    print(json.dumps({"seconds": seconds, "counts": result.counts, "timings": result.timings,
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(url: str, as_of: str, outbox: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", url, as_of, outbox],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", default="20000,80000,200000",
                        help="fee-paying student counts, comma-separated")
    parser.add_argument("--per-institution", type=int, default=500)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from sqlalchemy import create_engine

    from ops_lib.jobs.schema_admin import create_scratch_database

    sizes = [int(s) for s in args.students.split(",")]
    results: dict[tuple[int, str], dict] = {}
    for students in sizes:
        url = create_scratch_database(SERVER, NAME)
        started = time.perf_counter()
        load(url, students, args.per_institution)
        print(f"{students:,} fee-paying students ({args.per_institution} per institution) "
              f"loaded in {time.perf_counter() - started:.1f}s", flush=True)
        with tempfile.TemporaryDirectory(prefix="billing-bench-") as outbox:
            for label, as_of in RUNS:
                r = results[students, label] = measure(url, as_of, outbox)
                c = r["counts"]
                print(f"  {label} ({as_of}): {r['seconds']:.2f}s, peak RSS "
                      f"{r['maxrss_mb']:.0f} MB; invoices "
                      f"{c['platform_invoices_issued'] + c['attendee_invoices_issued']:,}, "
                      f"reminders {sum(v for k, v in c.items() if k.startswith('reminders_')):,}, "
                      f"emails {c['reminder_emails']:,}, notifications "
                      f"{c['guardian_notifications']:,}", flush=True)
                print("    seconds per step: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in r["timings"].items()), flush=True)

    server = create_engine(SERVER)
    with server.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{NAME}`")
    server.dispose()

    print()
    header = f"{'run':<26}" + "".join(f"{n:>12,}" for n in sizes)
    print(header + f"{'time vs linear':>16}{'memory growth':>15}")
    small, large = sizes[0], sizes[-1]
    for label, _ in RUNS:
        times = [results[n, label]["seconds"] for n in sizes]
        memory = [results[n, label]["maxrss_mb"] for n in sizes]
        growth = (times[-1] / times[0]) / (large / small)
        print(f"{label + ' (s)':<26}" + "".join(f"{t:>12.2f}" for t in times)
              + f"{growth:>15.2f}x" + f"{memory[-1] / memory[0]:>14.2f}x")
        print(f"{'  peak RSS (MB)':<26}" + "".join(f"{m:>12.0f}" for m in memory))
    print(f"\n(time vs linear = (time at {large:,} / time at {small:,}) / "
          f"({large:,} / {small:,}); done when <= 1.3; memory growth done when <= 1.25)")


if __name__ == "__main__":
    main()
