"""Benchmark: archive_hot_path_data.py against Percona's pt-archiver on identical data (MariaDB).

Fills `notifications` with ROWS old rows (default 1,000,000) in a fresh scratch database, moves
them into `notifications_archive` with one tool, checks that every row arrived exactly once with
the same contents, and starts over for the next run. The runs go pt-archiver, this tool, this
tool, pt-archiver (ABBA, per round), each after InnoDB has purged and flushed the previous run's
work, so neither tool gains from its place in the order. It prints the mean rows/s of each tool,
every run's figure, and the ratios.

    python benchmarks/archive_vs_pt_archiver.py [--rows N] [--batch N] [--rounds N] [--plain]

pt-archiver runs in its bulk mode: `--limit 1000 --commit-each --bulk-insert --bulk-delete`
(Debian package `percona-toolkit`); where it is not installed its column says so. A third
column, "plain SQL", is the bare loop INSERT ... SELECT + DELETE by id range, 1,000 rows a
transaction, without any of the tool's checks (`--plain`): the ceiling to compare with. It runs
twice a round, between two runs of this tool (tool, plain, plain, tool: ABBA again, so a
neighbour's load drifting over the run weighs on both alike), and "ratio tool/plain loop"
compares the two means of the same benchmark run.

Times are wall-clock times of the whole process (start-up, planning, the copy, statistics), the
same for both tools. The server is OPS_BENCH_MYSQL_URL (default root@127.0.0.1:3306).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from ops_lib.jobs.schema_admin import create_scratch_database  # noqa: E402

SERVER = os.environ.get("OPS_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
DATABASE = "ops_bench_archive"
CUTOFF = "2025-01-01 00:00:00"  # every benchmark row is older than this and than 90 days


def scratch_url() -> str:
    return f"{SERVER.rstrip('/')}/{DATABASE}"


def prepare() -> None:
    """A fresh scratch database with the schema: no tool inherits another's deleted pages."""
    create_scratch_database(SERVER, DATABASE)


def seq_chunks(total: int, step: int = 200_000):
    """(low, high) ranges of 1..total for MariaDB's seq_<low>_to_<high> tables, one INSERT each."""
    for low in range(1, total + 1, step):
        yield low, min(total, low + step - 1)


def fill(rows: int) -> float:
    """The same rows every time: ids 1..rows, created in 2023-2024 (MariaDB's SEQUENCE engine)."""
    engine = create_engine(scratch_url())
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE TABLE notifications")
        conn.exec_driver_sql("TRUNCATE TABLE notifications_archive")
        for low, high in seq_chunks(rows):
            conn.exec_driver_sql(
                "INSERT INTO notifications (id, guardian_id, student_id, kind, title, body, data, "
                "dedupe_key, created_at, read_at, fanout_status) "
                "SELECT seq, 1 + MOD(seq, 50000), 1 + MOD(seq, 20000), 'attendance', "
                "CONCAT('Arrived at school #', seq), "
                "CONCAT('Your child tapped in at 07:', LPAD(MOD(seq, 60), 2, '0'), ' today.'), "
                "JSON_OBJECT('student', MOD(seq, 20000), 'status', 'present'), "
                "CONCAT('att:', seq), "
                "TIMESTAMP'2023-01-01 00:00:00' + INTERVAL (seq * 30) SECOND, "
                "IF(MOD(seq, 3) = 0, NULL, "
                "TIMESTAMP'2023-01-01 06:00:00' + INTERVAL (seq * 30) SECOND), "
                "'done' "
                f"FROM seq_{low}_to_{high}"
            )
    engine.dispose()
    return time.perf_counter() - started


def wait_until_quiet(timeout: float = 60) -> None:
    """Let InnoDB purge old deletes and flush dirty pages first, so no tool pays for another's."""
    engine = create_engine(SERVER)
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            status = conn.exec_driver_sql("SHOW ENGINE INNODB STATUS").one()[2]
            line = next((x for x in status.splitlines() if "History list length" in x), "0")
            dirty, total = (int(conn.exec_driver_sql(
                f"SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_{name}'").one()[1])
                for name in ("dirty", "total"))
            if int(line.split()[-1]) < 1000 and dirty < total // 10:
                break
            time.sleep(2)
    engine.dispose()


def checksum(table: str) -> tuple[int, int]:
    engine = create_engine(scratch_url())
    with engine.connect() as conn:
        count, crc = conn.execute(text(
            f"SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('|', id, guardian_id, student_id, "
            f"kind, title, body, data, dedupe_key, created_at, read_at, fanout_status))), 0) "
            f"FROM {table}")).one()
    engine.dispose()
    return int(count), int(crc)


def run_archive(url: str, batch: int) -> tuple[float, dict]:
    """One `archive_hot_path_data.py BATCH --execute --json` process: (seconds, its result)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
    env["OPS_DATABASE_URL"] = url
    env["OPS_LOCK_DIR"] = "/tmp/ops_bench_locks"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "archive_hot_path_data.py"), str(batch),
         "--execute", "--json"], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"archive_hot_path_data failed: {proc.stderr[-2000:]}")
    return elapsed, json.loads(proc.stdout)


# The tool's own time for its batches (its `total` timing: no start-up, no planning), per run.
TOOL_BATCH_SECONDS: list[float] = []


def run_tool(batch: int) -> float:
    elapsed, result = run_archive(scratch_url(), batch)
    stats = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(result["timings"].items()))
    print(f"  archive_hot_path_data: {result['counts']['notifications_moved']:,} rows; {stats}",
          file=sys.stderr)
    TOOL_BATCH_SECONDS.append(result["timings"]["total"])
    return elapsed


def run_pt_archiver(batch: int) -> float:
    url = make_url(scratch_url())
    dsn = f"h={url.host},P={url.port or 3306},u={url.username},D={DATABASE},t=notifications"
    if url.password:
        dsn += f",p={url.password}"
    command = [
        "pt-archiver", "--source", dsn + ",L=1", "--dest", "t=notifications_archive,L=1",
        "--where", f"created_at < '{CUTOFF}'", "--limit", str(batch), "--commit-each",
        "--bulk-insert", "--bulk-delete", "--no-safe-auto-increment", "--no-check-charset",
        "--no-check-columns",
        "--statistics",
    ]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"pt-archiver failed: {proc.stderr[-2000:]}")
    print("  pt-archiver statistics: " + " | ".join(
        line.strip() for line in proc.stdout.splitlines() if line.strip()), file=sys.stderr)
    return elapsed


def run_plain_sql(batch: int) -> float:
    """The bare loop: INSERT ... SELECT and DELETE by id range, one transaction per batch."""
    engine = create_engine(scratch_url(), isolation_level="READ COMMITTED")
    columns = ("id, guardian_id, student_id, kind, title, body, data, dedupe_key, created_at, "
               "read_at, fanout_status, claimed_by, lease_expires_at, available_at")
    started = time.perf_counter()
    with engine.connect() as conn:
        low, high = conn.execute(text("SELECT MIN(id), MAX(id) FROM notifications "
                                      f"WHERE created_at < '{CUTOFF}'")).one()
        conn.commit()
        for start in range(low, high + 1, batch):
            end = start + batch - 1
            with conn.begin():
                conn.exec_driver_sql(
                    f"INSERT INTO notifications_archive ({columns}, archived_at) "
                    f"SELECT {columns}, NOW() FROM notifications "
                    f"WHERE id BETWEEN {start} AND {end} AND created_at < '{CUTOFF}'")
                conn.exec_driver_sql(f"DELETE FROM notifications WHERE id BETWEEN {start} "
                                     f"AND {end} AND created_at < '{CUTOFF}'")
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def client_cpu() -> float:
    """CPU seconds of this process and its finished children (the tool, pt-archiver)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def load_text(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.2f}" for x in load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1,
                        help="each round runs pt-archiver, this tool, this tool, pt-archiver "
                             "(ABBA, so neither gains from going first)")
    parser.add_argument("--plain", action="store_true",
                        help="also run the plain SQL loop, twice a round between the tool's runs")
    args = parser.parse_args()

    notes = []
    have_pt = shutil.which("pt-archiver") is not None
    if not have_pt:
        notes.append("pt-archiver: skipped, not installed (apt-get install percona-toolkit)")
    tool, plain = ["archive_hot_path_data"], ["plain SQL loop"]
    middle = tool + plain * 2 + tool if args.plain else tool * (2 if have_pt else 1)
    order = []
    for _ in range(args.rounds):
        order += ["pt-archiver (bulk)", *middle, "pt-archiver (bulk)"] if have_pt else middle
    runners = {"pt-archiver (bulk)": run_pt_archiver, "archive_hot_path_data": run_tool,
               "plain SQL loop": run_plain_sql}

    load_before = os.getloadavg()
    figures: dict[str, list[float]] = {}
    for name in order:
        prepare()
        fill_seconds = fill(args.rows)
        source = checksum("notifications")
        wait_until_quiet()
        print(f"filled {args.rows:,} rows in {fill_seconds:.1f}s; running {name}", file=sys.stderr)
        cpu_before = client_cpu()
        seconds = runners[name](args.batch)
        cpu = client_cpu() - cpu_before
        hot, archived = checksum("notifications"), checksum("notifications_archive")
        if hot[0] != 0 or archived != source:
            raise SystemExit(f"{name}: rows lost or changed: hot {hot}, archive {archived}, "
                             f"source {source}")
        figures.setdefault(name, []).append(args.rows / seconds)
        print(f"  {name}: {args.rows / seconds:,.0f} rows/s ({seconds:.1f}s; client CPU "
              f"{cpu:.1f}s)", file=sys.stderr)

    server = create_engine(SERVER)
    with server.connect() as conn:
        version = conn.execute(text("SELECT VERSION()")).scalar()
        pool = conn.execute(text("SELECT @@innodb_buffer_pool_size")).scalar()
    print(f"\nMoving {args.rows:,} notifications to notifications_archive, "
          f"{args.batch} rows a transaction, MariaDB {version} "
          f"(buffer pool {int(pool) // 2**20} MB); wall time of the whole process; load average "
          f"(1, 5, 15 min) {load_text(load_before)} at the start, {load_text(os.getloadavg())} "
          "at the end")
    print(f"{'tool':<24}{'rows/s (mean)':>14}   runs")
    mean = {name: sum(rates) / len(rates) for name, rates in figures.items()}
    for name in runners:
        if name in figures:
            runs = ", ".join(f"{r:,.0f}" for r in figures[name])
            print(f"{name:<24}{mean[name]:>14,.0f}   {runs}")
    if "pt-archiver (bulk)" in mean:
        ratio = mean["archive_hot_path_data"] / mean["pt-archiver (bulk)"]
        print(f"{'ratio tool/pt-archiver':<24}{ratio:>13.2f}x")
    else:
        print(f"{'ratio tool/pt-archiver':<24}{'skipped':>14}")
    if "plain SQL loop" in mean:
        ratio = mean["archive_hot_path_data"] / mean["plain SQL loop"]
        print(f"{'ratio tool/plain loop':<24}{ratio:>13.2f}x")
        batches = args.rows * len(TOOL_BATCH_SECONDS) / sum(TOOL_BATCH_SECONDS)
        print(f"{'  batches only':<24}{batches / mean['plain SQL loop']:>13.2f}x   (the tool's "
              f"own time for its batches, {batches:,.0f} rows/s: without its start-up and plan; "
              "the plain loop is timed in this process, without a start-up either)")
    for note in notes:
        print(f"note: {note}")
    with create_engine(SERVER).begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{DATABASE}`")


if __name__ == "__main__":
    main()
