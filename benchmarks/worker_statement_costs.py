"""What each statement of the background worker costs the server, in rows, not seconds.

    python benchmarks/worker_statement_costs.py [--server-url URL] [--scans 100000]
                                                [--stages scans,fanout,...] [--explain]

Loads the same synthetic load as bench_workers.py into a scratch database (a unique name,
dropped at the end), runs the worker once in this process on PyMySQL, and reads the session's
handler counters (SHOW SESSION STATUS) before and after every statement, and its own time for
it (SHOW PROFILES). When the server is a MariaDB on this machine (it names each session's thread
in information_schema.PROCESSLIST.TID), also the CPU seconds that thread spent on the statement
(/proc/<tid>/schedstat): time on a CPU only, where SHOW PROFILES' seconds are wall-clock and
grow with other sessions' load. Prints, per stage and statement shape, how often it ran, the
rows the server read, wrote and sorted, its seconds and its CPU, per run of it and in all. Row
counts and CPU seconds do not depend on machine load (CPU seconds a little, through caches): on
a shared machine they are the figures to compare before and after a change, where seconds are
noise. --explain also prints the EXPLAIN of each SELECT, INSERT ... SELECT, UPDATE and DELETE
shape at its costliest run.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

from sqlalchemy import create_engine, event, insert

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ops_lib.db import connect  # noqa: E402
from ops_lib.jobs import workers  # noqa: E402
from ops_lib.jobs.schema_admin import create_scratch_database  # noqa: E402
from ops_lib.jobs.synthetic_load import TABLES, LoadSize, build_rows  # noqa: E402
from ops_lib.ledger import new_run_id  # noqa: E402
from ops_lib.runtime import Budget, RunContext, StopSignal  # noqa: E402
from ops_lib.settings import load_settings  # noqa: E402
from ops_lib.timeutil import utcnow  # noqa: E402

COUNTERS = {
    "read_key": "Handler_read_key", "read_next": "Handler_read_next",
    "read_prev": "Handler_read_prev", "read_first": "Handler_read_first",
    "read_rnd": "Handler_read_rnd", "read_rnd_next": "Handler_read_rnd_next",
    "write": "Handler_write", "update": "Handler_update", "delete": "Handler_delete",
    "tmp_write": "Handler_tmp_write", "sort_rows": "Sort_rows",
    "tmp_disk": "Created_tmp_disk_tables",
}
READS = ("read_key", "read_next", "read_prev", "read_first", "read_rnd", "read_rnd_next")
EXPLAINABLE = re.compile(r"(SELECT|INSERT INTO \S+ \([^)]*\) SELECT|UPDATE|DELETE)", re.I)
STATUS_SQL = ("SHOW SESSION STATUS WHERE Variable_name IN ("
              + ", ".join(f"'{name}'" for name in COUNTERS.values()) + ")")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", default="mysql+pymysql://root@127.0.0.1:3306")
    parser.add_argument("--scans", type=int, default=100_000)
    parser.add_argument("--institutions", type=int, default=20)
    parser.add_argument("--students-per-institution", type=int, default=500)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--limit", type=int, default=200_000, help="worker LIMIT per stage")
    parser.add_argument("--stages", default=None, help="comma list of stages to print")
    parser.add_argument("--explain", action="store_true")
    return parser.parse_args()


def shape(statement: str) -> str:
    """A statement with its values taken out, short enough to read in a table."""
    text = " ".join(statement.split())
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "?", text)
    text = re.sub(r"\b\d+\b", "N", text)
    text = re.sub(r"(%\(\w+\)s|%s|\?)(\s*,\s*(%\(\w+\)s|%s|\?))+", "?..", text)
    text = re.sub(r"(\(\?\.*\)\s*,\s*)+\(\?\.*\)", "(..)", text)
    text = re.sub(r"(id (= N|BETWEEN N AND N) OR )+", "id IN RANGES.. OR ", text)
    return text[:150]


def counters(cursor) -> dict[str, int]:
    cursor.execute(STATUS_SQL)
    values = {name: int(value) for name, value in cursor.fetchall()}
    return {key: values.get(name, 0) for key, name in COUNTERS.items()}


class Recorder:
    """Per (stage, statement shape): handler counter deltas, read around every statement, and
    the server's own seconds for it (the session's profiling, SHOW PROFILES)."""

    def __init__(self, explain: bool) -> None:
        self.stage = "setup"
        self.totals: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.explain = explain
        self.costliest: dict[tuple[str, str], int] = {}
        self.plans: dict[tuple[str, str], list] = {}
        self.overhead: dict[str, int] = {}
        self.before: dict[str, int] = {}
        self.last_profiled = 0
        self.threads: dict[int, Path] = {}  # id() of a DB-API connection -> its thread's stats
        self.cpu_before = 0

    def attach(self, engine) -> None:
        @event.listens_for(engine, "connect")
        def profile(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("SET SESSION profiling = 1, profiling_history_size = 100")
            thread = server_thread(cursor)
            if thread:
                self.threads[id(dbapi_connection)] = thread
            cursor.close()

        @event.listens_for(engine, "before_cursor_execute")
        def before(_conn, cursor, statement, parameters, _context, _many):
            own = cursor.connection.cursor()
            self.before = counters(own)
            self.last_profiled = max((row[0] for row in profiles(own)), default=0)
            self.cpu_before = thread_cpu(self.threads.get(id(cursor.connection)))

        @event.listens_for(engine, "after_cursor_execute")
        def after(_conn, cursor, statement, parameters, _context, many):
            cpu = thread_cpu(self.threads.get(id(cursor.connection))) - self.cpu_before
            own = cursor.connection.cursor()
            # An executemany may have gone as several statements: all of them.
            seconds = sum(row[1] for row in profiles(own) if row[0] > self.last_profiled)
            delta = {name: value - self.before[name] - self.overhead.get(name, 0)
                     for name, value in counters(own).items()}
            key = (self.stage, shape(statement))
            row = self.totals[key]
            row["runs"] += 1
            row["seconds"] += seconds
            row["cpu"] += cpu / 1e9
            for name, value in delta.items():
                row[name] += value
            reads = sum(delta[name] for name in READS)
            if self.explain and not many and EXPLAINABLE.match(statement.lstrip()) and (
                    reads > self.costliest.get(key, -1)):
                # While its temporary tables exist, and the data is as that run saw it.
                self.costliest[key] = reads
                self.plans[key] = explain(own, statement, parameters)

    def measure_overhead(self, engine) -> None:
        """What reading the counters adds to them (SHOW STATUS counts its own rows)."""
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            first, second = counters(cursor), counters(cursor)
            self.overhead = {k: second[k] - first[k] for k in COUNTERS}
        finally:
            raw.close()


def server_thread(cursor) -> Path | None:
    """/proc's schedstat of the session's server thread, when the server runs here."""
    try:
        cursor.execute("SELECT TID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
        thread = Path(f"/proc/{cursor.fetchone()[0]}")
        # A remote server's thread id may name some other local thread, or none.
        if (thread / "comm").read_text().strip() not in ("mariadbd", "mysqld"):
            return None
    except Exception:  # MySQL has no TID column; no such local thread
        return None
    return thread / "schedstat"


def thread_cpu(schedstat: Path | None) -> int:
    """Nanoseconds the thread has spent on a CPU (0 when it cannot be read)."""
    return int(schedstat.read_text().split()[0]) if schedstat else 0


def profiles(cursor) -> list[tuple[int, float]]:
    cursor.execute("SHOW PROFILES")
    return [(int(row[0]), float(row[1])) for row in cursor.fetchall()]


def explain(cursor, statement: str, parameters) -> list:
    try:
        cursor.execute("EXPLAIN " + statement, parameters)
        return list(cursor.fetchall())
    except Exception as exc:
        return [f"(no plan: {exc})"]


def main() -> None:
    args = parse_args()
    name = f"ops_stmt_costs_{uuid.uuid4().hex[:8]}"
    url = create_scratch_database(args.server_url, name)
    admin = create_engine(args.server_url)
    try:
        loader = create_engine(url)
        size = LoadSize(institutions=args.institutions,
                        students_per_institution=args.students_per_institution,
                        scans=args.scans, days=args.days, seed=1)
        with loader.begin() as conn:
            rows = build_rows(conn, size, utcnow())
            for table, batch in rows.items():
                for i in range(0, len(batch), 5000):
                    conn.execute(insert(TABLES[table]), batch[i:i + 5000])
        loader.dispose()
        db = connect(url)
        recorder = Recorder(args.explain)
        recorder.measure_overhead(db.engine)
        recorder.attach(db.engine)
        db.engine.dispose()  # the connections opened so far do not profile
        for stage_class in {type(stage) for stage in workers.stages()}:
            original = stage_class.take

            def take(self, ctx, size, stats, original=original):
                recorder.stage = self.name
                try:
                    return original(self, ctx, size, stats)
                finally:
                    recorder.stage = "between"
            stage_class.take = take
        outbox = Path("/tmp") / f"{name}_outbox"
        settings = load_settings(env={"OPS_DATABASE_URL": url, "OPS_OUTBOX_DIR": str(outbox),
                                      "OPS_LOCK_DIR": str(outbox / "locks"),
                                      # One lane: the counters are the session's, so every
                                      # statement must run on this one connection.
                                      "OPS_WORKER_THREADS": "1"})
        ctx = RunContext(db=db, settings=settings, run_id=new_run_id(), tool="profile",
                         dry_run=False, budget=Budget(None), stop=StopSignal())
        started = time.perf_counter()
        with db.pinned():
            result = workers.run(ctx, limit=args.limit)
        wall = time.perf_counter() - started
        report(recorder, result, wall, args)
        db.engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


def report(recorder: Recorder, result, wall: float, args) -> None:
    wanted = set(args.stages.split(",")) if args.stages else None
    by_stage: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (stage, _shape), row in recorder.totals.items():
        for name, value in row.items():
            by_stage[stage][name] += value
    stages = next(s.rows for s in result.sections if s.title == "Stages")
    stage_rows = {row["stage"]: row for row in stages}
    print(f"{args.scans:,} scans; {wall:.1f} s in all with the counters read around every "
          f"statement; s = the server's seconds (SHOW PROFILES), on a loaded machine a rough "
          f"guide; cpu = its session thread's CPU seconds (0: the server is not on this machine)")
    header = (f"{'runs':>6} {'rows read':>11} {'written':>9} {'updated':>9} {'deleted':>8} "
              f"{'sorted':>9} {'tmp':>9} {'on disk':>7} {'s':>6} {'cpu':>6}")
    print(f"\n{'stage':<10} {header}  batches / rows claimed")
    for stage, row in sorted(by_stage.items()):
        claimed = stage_rows.get(stage, {}).get("claimed", "")
        print(f"{stage:<10} {_cells(row)}  {claimed}")
    for stage in sorted(by_stage):
        if wanted and stage not in wanted:
            continue
        print(f"\n== {stage}: per statement shape (per run, then in all)")
        shapes = sorted(((s, row) for (st, s), row in recorder.totals.items() if st == stage),
                        key=lambda item: -sum(item[1][r] for r in READS))
        for text, row in shapes:
            runs = row["runs"]
            per_run = {k: v / runs for k, v in row.items()}
            per_run["runs"] = runs
            print(f"  {text}")
            print(f"    per run {_cells(per_run)}")
            print(f"    in all  {_cells(row)}")
            for plan in recorder.plans.get((stage, text), []):
                print(f"    plan (costliest run) {plan}")


def _cells(row) -> str:
    reads = sum(row[name] for name in READS)
    return (f"{row['runs']:>6.0f} {reads:>11,.0f} {row['write']:>9,.0f} {row['update']:>9,.0f} "
            f"{row['delete']:>8,.0f} {row['sort_rows']:>9,.0f} {row['tmp_write']:>9,.0f} "
            f"{row['tmp_disk']:>7,.0f} {row['seconds']:>6.2f} {row['cpu']:>6.2f}")


if __name__ == "__main__":
    main()
