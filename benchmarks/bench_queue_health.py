"""Benchmark: queue health on 1,000,000 pending scans on MariaDB.

Fills a scratch database (`ops_bench_queue_health`) with PENDING pending scans (MariaDB's
SEQUENCE engine, INSERT ... SELECT, seconds) and a run ledger of LEDGER worker runs, then prints,
as medians of RUNS runs:

- a raw `SELECT COUNT(*)` of the scan queue (the floor any exact count pays);
- the default check (no --html) in-process, the job only;
- the same as a process (`python tools/queue_health_summary.py`), and that minus the process
  floor (`python tools/queue_health_summary.py --help`: interpreter start-up, click, the tool);
- with --explain, the EXPLAIN of every statement the check runs (which index each uses).

    python benchmarks/bench_queue_health.py [--pending N] [--runs N] [--explain] [--keep]

The server is OPS_BENCH_MYSQL_URL (default root@127.0.0.1:3306).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, event  # noqa: E402

from benchmarks.archive_vs_pt_archiver import seq_chunks  # noqa: E402
from ops_lib.jobs.schema_admin import create_scratch_database, drop_database  # noqa: E402

SERVER = os.environ.get("OPS_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
DATABASE = "ops_bench_queue_health"
NOW = "2026-11-28 12:00:00"


def url() -> str:
    return f"{SERVER.rstrip('/')}/{DATABASE}"


def fill(pending: int, ledger: int) -> float:
    started = time.perf_counter()
    create_scratch_database(SERVER, DATABASE)
    engine = create_engine(url())
    with engine.begin() as conn:
        for low, high in seq_chunks(pending):
            conn.exec_driver_sql(
                "INSERT INTO attendance_scan_queue (id, institution_id, card_uid, scanned_at, "
                "status, attempts, created_at) "
                "SELECT seq, 1 + MOD(seq, 500), CONCAT('card-', seq), "
                f"TIMESTAMP'{NOW}' - INTERVAL 1 HOUR + INTERVAL (seq DIV 300) SECOND, "
                "'pending', 0, "
                f"TIMESTAMP'{NOW}' - INTERVAL 1 HOUR + INTERVAL (seq DIV 300) SECOND "
                f"FROM seq_{low}_to_{high}")
        for low, high in seq_chunks(ledger):
            conn.exec_driver_sql(
                "INSERT INTO ops_job_runs (run_id, tool, host, pid, args, dry_run, started_at, "
                "heartbeat_at, finished_at, status) "
                "SELECT MD5(seq), 'run_background_workers', 'bench', 1, '{}', 0, "
                f"TIMESTAMP'{NOW}' - INTERVAL seq MINUTE, "
                f"TIMESTAMP'{NOW}' - INTERVAL seq MINUTE + INTERVAL 40 SECOND, "
                f"TIMESTAMP'{NOW}' - INTERVAL seq MINUTE + INTERVAL 40 SECOND, "
                "IF(MOD(seq, 97) = 0, 'failed', 'ok') "
                f"FROM seq_{low}_to_{high}")
        conn.exec_driver_sql("ANALYZE TABLE attendance_scan_queue, ops_job_runs")
    engine.dispose()
    return time.perf_counter() - started


def median_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def raw_count() -> float:
    engine = create_engine(url())
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT COUNT(*) FROM attendance_scan_queue").scalar_one()  # warm
        took = median_of(ARGS.runs, lambda: conn.exec_driver_sql(
            "SELECT COUNT(*) FROM attendance_scan_queue").scalar_one())
    engine.dispose()
    return took


def context(explain: list[str] | None = None):
    from ops_lib.db import connect
    from ops_lib.ledger import new_run_id
    from ops_lib.runtime import Budget, RunContext, StopSignal
    from ops_lib.settings import load_settings

    database = connect(url())
    if explain is not None:
        @event.listens_for(database.engine, "before_cursor_execute")
        def record(_conn, _cursor, statement, parameters, _context, _many):
            # PyMySQL's pyformat parameters, inlined so the statement can be EXPLAINed.
            if isinstance(parameters, dict):
                statement = statement % {k: _literal(v) for k, v in parameters.items()}
            elif parameters:
                statement = statement % tuple(_literal(v) for v in parameters)
            explain.append(statement)

    return RunContext(db=database, settings=load_settings(env={}), run_id=new_run_id(),
                      tool="queue_health_summary", dry_run=True, budget=Budget(None),
                      stop=StopSignal())


def _literal(value) -> str:
    import datetime as dt

    if isinstance(value, (dt.datetime, dt.date)):
        return f"'{value}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def in_process() -> float:
    import datetime as dt

    from ops_lib.jobs import queue_health

    ctx = context()
    now = dt.datetime.fromisoformat(NOW)
    queue_health.run(ctx, now=now)  # warm: the first connection, the imports
    took = median_of(ARGS.runs, lambda: queue_health.run(ctx, now=now))
    ctx.db.engine.dispose()
    return took


def as_process(*args: str) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of the child) of the tool as a process."""
    command = [sys.executable, str(REPO / "tools" / "queue_health_summary.py"), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
    env.update(OPS_DATABASE_URL=url(), OPS_LOCK_DIR="/tmp/ops-bench-locks")

    def once() -> tuple[float, float]:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) not in (0, 1, 2):
            raise SystemExit(f"{' '.join(command)} exited {os.waitstatus_to_exitcode(status)}")
        return wall, usage.ru_utime + usage.ru_stime

    once()
    runs = [once() for _ in range(ARGS.runs)]
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def explain() -> None:
    import datetime as dt

    from ops_lib.jobs import queue_health

    statements: list[str] = []
    ctx = context(statements)
    queue_health.run(ctx, now=dt.datetime.fromisoformat(NOW))
    print("\nEXPLAIN of every statement of the check (table, type, key, rows, Extra):")
    with ctx.db.engine.connect() as conn:
        shown_ledger = False
        for statement in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            if "ops_job_runs" in statement:  # one tool's freshness query stands for all
                if shown_ledger:
                    continue
                shown_ledger = True
            plan = conn.exec_driver_sql("EXPLAIN " + statement).mappings().all()
            for row in plan:
                print(f"  {row['table'] or '-':<28} {row['type'] or '-':<12} "
                      f"{row['key'] or '-':<30} {row['rows'] or '-':>8}  {row['Extra'] or ''}")
            print(f"    {' '.join(statement.split())[:150]}")
    ctx.db.engine.dispose()


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--ledger", type=int, default=200_000, help="worker runs in the ledger")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    ARGS = parser.parse_args()
    print(f"filling {ARGS.pending:,} pending scans and {ARGS.ledger:,} ledger rows ...",
          flush=True)
    print(f"  filled in {fill(ARGS.pending, ARGS.ledger):.1f} s", flush=True)
    try:
        count = raw_count()
        job = in_process()
        process, process_cpu = as_process()
        floor, floor_cpu = as_process("--help")
        rows = [
            ("raw SELECT COUNT(*) of the scan queue", count, None),
            ("check, in-process (job only)", job, None),
            ("check, as a process", process, process_cpu),
            ("process floor (--help: interpreter, click)", floor, floor_cpu),
            ("check, process minus the floor", process - floor, process_cpu - floor_cpu),
        ]
        print(f"\nqueue health on {ARGS.pending:,} pending scans (median of {ARGS.runs} runs; "
              "CPU = the child's user + system)")
        print(f"{'what':<46} {'seconds':>8} {'x COUNT(*)':>11} {'CPU s':>7}")
        for name, seconds, cpu in rows:
            shown = f"{cpu:>7.3f}" if cpu is not None else f"{'':>7}"
            print(f"{name:<46} {seconds:>8.3f} {seconds / count:>11.1f} {shown}")
        if ARGS.explain:
            explain()
    finally:
        if not ARGS.keep:
            drop_database(SERVER, DATABASE)


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
