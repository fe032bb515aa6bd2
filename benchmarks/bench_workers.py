"""Benchmark: the background worker's end-to-end scans/s beside the server's raw insert rate.

    python benchmarks/bench_workers.py [--server-url URL] [--scans 100000] [--workers 1,2]
                                       [--drivers pymysql,mysqldb] [--threads N]

1. Creates a scratch database on the server (dropped at the end unless --keep) with the schema.
2. Raw, measured once for the whole run: inserts the scan rows into attendance_scan_queue with
   PyMySQL executemany (which sends multi-row INSERTs), one transaction, then truncates the
   table; three times, the median counts.
3. For each driver in --drivers (default: PyMySQL, and mysqlclient when it is installed) and each
   count in --workers: fills the scans afresh with the synthetic-load generator (institutions,
   students, guardians, devices, queued scans), then starts that many
   `tools/run_background_workers.py LIMIT --execute --json` processes at once on a
   `mysql+<driver>://` URL, as overlapping cron runs do, round after round until every queue is
   empty.
4. Prints, per driver and process count, the worker's scans/s (scans / wall time of the rounds,
   all stages included: records, notifications, deliveries, roll-ups, snapshots) and its ratio
   to the raw rate (targets: one process >= 0.10, two >= 0.15), with the threads (lanes) each
   process ran (the tool's default for the server, or --threads); the CPU seconds the worker
   processes used, and the server's when it runs on this machine (Linux /proc: mariadbd's utime
   + stime before and after); then the seconds each stage reported, per configuration.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pymysql
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ops_lib.jobs.schema_admin import create_scratch_database  # noqa: E402
from ops_lib.jobs.synthetic_load import TABLES, LoadSize, build_rows  # noqa: E402
from ops_lib.jobs.workers import stages  # noqa: E402
from ops_lib.timeutil import utcnow  # noqa: E402

TARGETS = {1: 0.10, 2: 0.15}  # ratio to the raw rate, by worker processes (issue 18)
DRIVERS = {"pymysql": "PyMySQL", "mysqldb": "mysqlclient"}
STAGES = [stage.name for stage in stages()]  # the worker's own rotation, so a new stage shows
SCAN_COLUMNS = ["id", "institution_id", "card_uid", "device_serial", "scanned_at", "status",
                "attempts", "created_at"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", default="mysql+pymysql://root@127.0.0.1:3306",
                        help="SQLAlchemy URL of the MariaDB/MySQL server (no database)")
    parser.add_argument("--database", default="ops_bench_workers", help="scratch database")
    parser.add_argument("--scans", type=int, default=100_000)
    parser.add_argument("--institutions", type=int, default=20)
    parser.add_argument("--students-per-institution", type=int, default=500)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--workers", default="1,2",
                        help="worker processes started at once; a comma list runs each in turn")
    parser.add_argument("--drivers", default=None,
                        help="comma list of pymysql, mysqldb (default: each one installed)")
    parser.add_argument("--limit", type=int, default=200_000, help="worker LIMIT per stage")
    parser.add_argument("--threads", type=int, default=None,
                        help="lanes per worker process (default: the tool's own default)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    return parser.parse_args()


def pymysql_connect(url, database: str):
    return pymysql.connect(host=url.host or "127.0.0.1", port=url.port or 3306,
                           user=url.username or "root", password=url.password or "",
                           database=database, autocommit=False, charset="utf8mb4")


def raw_insert_rate(url, database: str, scan_rows: list[dict], runs: int = 3) -> float:
    """Median rows/s of `runs` executemany of every scan row, one transaction each."""
    return statistics.median(_raw_insert_once(url, database, scan_rows) for _ in range(runs))


def _raw_insert_once(url, database: str, scan_rows: list[dict]) -> float:
    values = [tuple(row[c] for c in SCAN_COLUMNS) for row in scan_rows]
    statement = (f"INSERT INTO attendance_scan_queue ({', '.join(SCAN_COLUMNS)}) "
                 f"VALUES ({', '.join(['%s'] * len(SCAN_COLUMNS))})")
    conn = pymysql_connect(url, database)
    try:
        with conn.cursor() as cursor:
            started = time.perf_counter()
            cursor.executemany(statement, values)
            conn.commit()
            elapsed = time.perf_counter() - started
            cursor.execute("TRUNCATE TABLE attendance_scan_queue")
        conn.commit()
    finally:
        conn.close()
    return len(values) / elapsed


def backlog(engine) -> int:
    with engine.connect() as conn:
        return sum(conn.execute(text(sql)).scalar_one() for sql in (
            "SELECT COUNT(*) FROM attendance_scan_queue WHERE status = 'pending'",
            "SELECT COUNT(*) FROM notifications WHERE fanout_status = 'pending'",
            "SELECT COUNT(*) FROM push_deliveries WHERE status = 'pending'",
            "SELECT COUNT(*) FROM attendance_rollup_queue",
            "SELECT COUNT(*) FROM guardian_snapshot_queue",
        ))


def server_cpu_seconds(engine) -> float | None:
    """CPU time used so far by the MariaDB/MySQL server `engine` talks to, when it runs on this
    machine (Linux /proc; its pid from its own pid file: other mariadbd may run here), else None."""
    try:
        with engine.connect() as conn:
            pid_file = conn.exec_driver_sql("SELECT @@pid_file").scalar_one()
        pid = Path(pid_file).read_text().split()[0]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_cpu_seconds() -> float:
    """CPU time of this script's finished children (the worker processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_workers(db_url: str, workers: int, limit: int, outbox: Path, engine,
                threads: int | None = None) -> tuple:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
    env.update(OPS_DATABASE_URL=db_url, OPS_OUTBOX_DIR=str(outbox),
               OPS_LOCK_DIR=str(outbox / "locks"))
    results, rounds = [], 0
    started = time.perf_counter()
    while True:
        rounds += 1
        procs = [subprocess.Popen(
            [sys.executable, str(REPO / "tools" / "run_background_workers.py"), str(limit),
             "--execute", "--json", "--quiet",
             *(["--threads", str(threads)] if threads else [])], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True) for _ in range(workers)]
        for proc in procs:
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"worker failed ({proc.returncode}): {err[-2000:]}")
            results.append(json.loads(out))
        if backlog(engine) == 0 or rounds >= 20:
            break
    return time.perf_counter() - started, rounds, results


def fill(engine, rows: dict) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        for name, batch in rows.items():
            for i in range(0, len(batch), 5000):
                conn.execute(insert(TABLES[name]), batch[i:i + 5000])
    return time.perf_counter() - started


def measure(args, db_url: str, engine, rows: dict, workers: int) -> dict:
    """Fill the queues, drain them with `workers` processes at once; the figures of that run."""
    fill_seconds = fill(engine, rows)
    outbox = Path("/tmp") / f"{args.database}_outbox"
    cpu_before, server_before = workers_cpu_seconds(), server_cpu_seconds(engine)
    wall, rounds, results = run_workers(db_url, workers, args.limit, outbox, engine,
                                        args.threads)
    worker_cpu = workers_cpu_seconds() - cpu_before
    server_after = server_cpu_seconds(engine)
    server_cpu = None if None in (server_before, server_after) else server_after - server_before
    with engine.connect() as conn:
        done = conn.execute(text("SELECT COUNT(*) FROM attendance_scan_queue "
                                 "WHERE status IN ('done', 'failed')")).scalar_one()
        records = conn.execute(text("SELECT COUNT(*) FROM attendance_records")).scalar_one()
        deliveries = conn.execute(text("SELECT COUNT(*) FROM push_deliveries "
                                       "WHERE status = 'sent'")).scalar_one()
    # The lanes each process ran (the tool's default for the server; 1 before lanes existed).
    threads = sorted({result["counts"].get("threads", 1) for result in results})
    per_stage = {s: 0.0 for s in STAGES}
    claimed = {s: 0 for s in STAGES}
    for result in results:
        for row in result["sections"]["Stages"]:
            per_stage[row["stage"]] += row["seconds"]
            claimed[row["stage"]] += row["claimed"]
    return {"workers": workers, "threads": threads, "fill": fill_seconds, "wall": wall,
            "rounds": rounds, "done": done, "records": records, "deliveries": deliveries,
            "per_stage": per_stage, "claimed": claimed, "worker_cpu": worker_cpu,
            "server_cpu": server_cpu}


def with_driver(url: str, driver: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername=f"{parsed.get_backend_name()}+{driver}").render_as_string(
        hide_password=False)


def available_drivers(wanted: str | None) -> list[str]:
    if wanted:
        return [name.strip() for name in wanted.split(",")]
    return [name for name, module in (("pymysql", "pymysql"), ("mysqldb", "MySQLdb"))
            if importlib.util.find_spec(module)]


def main() -> None:
    args = parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    drivers = available_drivers(args.drivers)
    admin = create_engine(args.server_url)
    with admin.connect() as conn:
        version = conn.exec_driver_sql("SELECT VERSION()").scalar_one()
    size = LoadSize(institutions=args.institutions,
                    students_per_institution=args.students_per_institution,
                    scans=args.scans, days=args.days, seed=1)
    server = make_url(args.server_url)
    print(f"bench_workers on {server.render_as_string(hide_password=True)} "
          f"(server {version}), LIMIT {args.limit}, {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    print(f"load: {args.institutions} institutions x {args.students_per_institution} students, "
          f"{args.scans:,} scans over {args.days} days")
    runs, raw = [], None
    try:
        for driver in drivers:
            for workers in counts:
                db_url = create_scratch_database(args.server_url, args.database)
                engine = create_engine(db_url)
                try:
                    with engine.begin() as conn:
                        rows = build_rows(conn, size, utcnow())
                    if raw is None:
                        raw = raw_insert_rate(server, args.database,
                                              rows["attendance_scan_queue"])
                        print(f"raw insert (PyMySQL executemany, median of 3, measured once): "
                              f"{raw:,.0f} rows/s")
                        print()
                        print(f"{'driver':<12} {'processes':>9} {'threads':>7} {'seconds':>8} "
                              f"{'scans/s':>8} {'ratio':>6} {'target':>14}  {'CPU s: workers':>14} "
                              f"{'server':>7}  records / deliveries sent", flush=True)
                    run = measure(args, with_driver(db_url, driver), engine, rows, workers)
                    runs.append(dict(run, driver=driver))
                    print_run(runs[-1], raw)
                finally:
                    engine.dispose()
    finally:
        if not args.keep:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{args.database}`")
        admin.dispose()

    print()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print("stage seconds, summed over each configuration's processes (rows claimed in brackets); "
          "rounds: the times the processes were started until every queue was empty:")
    print(f"{'driver':<12} {'processes':>9} {'rounds':>6} "
          + " ".join(f"{stage:>17}" for stage in STAGES))
    for run in runs:
        cells = [f"{run['per_stage'][stage]:>7.2f} ({run['claimed'][stage]:>7,})"
                 for stage in STAGES]
        print(f"{DRIVERS.get(run['driver'], run['driver']):<12} {run['workers']:>9} "
              f"{run['rounds']:>6} " + " ".join(f"{cell:>17}" for cell in cells))


def print_run(run: dict, raw: float) -> None:
    """One configuration's line, as soon as it is measured."""
    rate = run["done"] / run["wall"]
    ratio = rate / raw
    target = TARGETS.get(run["workers"])
    verdict = "-" if target is None else f">= {target:.2f} {'met' if ratio >= target else 'NOT met'}"
    server_cpu = "-" if run["server_cpu"] is None else f"{run['server_cpu']:.1f}"
    threads = ",".join(map(str, run["threads"]))
    print(f"{DRIVERS.get(run['driver'], run['driver']):<12} {run['workers']:>9} {threads:>7} "
          f"{run['wall']:>8.1f} {rate:>8,.0f} {ratio:>6.3f} {verdict:>14}"
          f"  {run['worker_cpu']:>14.1f} {server_cpu:>7}"
          f"  {run['records']:,} / {run['deliveries']:,}", flush=True)


if __name__ == "__main__":
    main()
