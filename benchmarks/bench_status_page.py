"""Benchmark: what --html and --alert add to queue health's run, on MariaDB.

The same scratch data as bench_queue_health.py (PENDING pending scans, LEDGER worker runs in the
run ledger), in a database of its own (`ops_bench_status_page`), plus HEALTH runs of queue
health itself without --alert, all newer than any --alert run: the worst case of the --alert
look-up, which walks past every one of them to find no previous --alert run. Prints
the median wall time of RUNS runs of the tool as a process for: the default check, --html FILE,
--alert (no alert_email or alert_ping_url: nothing is sent), and both; and in-process (steadier
on a busy machine) the page's render time and the --alert look-up.

    python benchmarks/bench_status_page.py [--pending N] [--health N] [--runs N] [--keep]

The archive tables are empty here: --html's archive-readiness counts cost what the archive's own
dry run costs on the real tables (benchmarks/archive_*.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine  # noqa: E402

from benchmarks import bench_queue_health as data  # noqa: E402
from benchmarks.archive_vs_pt_archiver import seq_chunks  # noqa: E402
from ops_lib.jobs.schema_admin import drop_database  # noqa: E402

data.DATABASE = "ops_bench_status_page"
NOW_ARG = ("--now", data.NOW.replace(" ", "T"))


def add_health_runs(count: int) -> None:
    engine = create_engine(data.url())
    with engine.begin() as conn:
        for low, high in seq_chunks(count):
            conn.exec_driver_sql(
                "INSERT INTO ops_job_runs (run_id, tool, host, pid, args, dry_run, started_at, "
                "heartbeat_at, finished_at, status, stop_reason, counts) "
                "SELECT MD5(CONCAT('health', seq)), 'queue_health_summary', 'bench', 1, "
                "'{\"json_output\": true}', 1, "
                "UTC_TIMESTAMP() + INTERVAL 1 DAY - INTERVAL seq SECOND, "
                "UTC_TIMESTAMP() + INTERVAL 1 DAY - INTERVAL seq SECOND, "
                "UTC_TIMESTAMP() + INTERVAL 1 DAY - INTERVAL seq SECOND + INTERVAL 1 SECOND, "
                "'ok', 'checked: OK', '{\"state\": 0}' "
                f"FROM seq_{low}_to_{high}")
    engine.dispose()


def as_process(runs: int, *args: str) -> float:
    command = [sys.executable, str(REPO / "tools" / "queue_health_summary.py"), *NOW_ARG, *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
    env.update(OPS_DATABASE_URL=data.url(), OPS_LOCK_DIR=tempfile.gettempdir())

    def once() -> float:
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, stdin=subprocess.DEVNULL)
        if done.returncode not in (0, 1, 2):
            raise SystemExit(f"{' '.join(command)} exited {done.returncode}: {done.stderr}")
        return time.perf_counter() - started

    once()
    return statistics.median(once() for _ in range(runs))


def in_process(runs: int) -> tuple[float, int, float]:
    """Medians: seconds to render the page of this database's report, its size in bytes, and
    seconds of the --alert look-up of the previous --alert run (past the HEALTH runs)."""
    from ops_lib.db import connect
    from ops_lib.jobs import queue_health
    from ops_lib.jobs.queue_health.alerting import previous_alert_state
    from ops_lib.jobs.queue_health.page import render_status_page
    from ops_lib.ledger import new_run_id
    from ops_lib.runtime import Budget, RunContext, StopSignal
    from ops_lib.settings import load_settings

    db = connect(data.url())
    ctx = RunContext(db=db, settings=load_settings(env={}), run_id=new_run_id(),
                     tool="queue_health_summary", dry_run=True, budget=Budget(None),
                     stop=StopSignal())
    with db.begin(write=False) as conn:
        report = queue_health.build_report(conn, ctx, dt.datetime.fromisoformat(data.NOW))

    def timed(work) -> float:
        started = time.perf_counter()
        work()
        return time.perf_counter() - started

    render = statistics.median(timed(lambda: render_status_page(report, []))
                               for _ in range(runs))
    lookup = statistics.median(timed(lambda: previous_alert_state(ctx)) for _ in range(runs))
    size = len(render_status_page(report, []).encode())
    db.engine.dispose()
    return render, size, lookup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--ledger", type=int, default=200_000, help="worker runs in the ledger")
    parser.add_argument("--health", type=int, default=10_000,
                        help="earlier queue health runs without --alert in the ledger")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    print(f"filling {args.pending:,} pending scans, {args.ledger:,} worker runs and "
          f"{args.health:,} queue health runs ...", flush=True)
    started = time.perf_counter()
    data.fill(args.pending, args.ledger)
    add_health_runs(args.health)
    print(f"  filled in {time.perf_counter() - started:.1f} s", flush=True)
    try:
        with tempfile.TemporaryDirectory() as folder:
            page = str(Path(folder) / "status.html")
            rows = [
                ("default check", as_process(args.runs)),
                ("--html FILE", as_process(args.runs, "--html", page)),
                ("--alert", as_process(args.runs, "--alert")),
                ("--alert --html FILE", as_process(args.runs, "--alert", "--html", page)),
            ]
        render, size, lookup = in_process(args.runs)
    finally:
        if not args.keep:
            drop_database(data.SERVER, data.DATABASE)
    base = rows[0][1]
    print(f"\nqueue_health_summary.py as a process, median of {args.runs} runs "
          f"({args.pending:,} pending scans):")
    print(f"  {'run':<22} {'wall s':>8} {'vs default':>11}")
    for name, seconds in rows:
        print(f"  {name:<22} {seconds:>8.3f} {seconds - base:>+11.3f}")
    print(f"\nin-process, median of {args.runs}: page render {render * 1000:.2f} ms "
          f"({size:,} bytes); --alert's look-up of the previous --alert run past "
          f"{args.health:,} runs without --alert {lookup * 1000:.1f} ms")


if __name__ == "__main__":
    main()
