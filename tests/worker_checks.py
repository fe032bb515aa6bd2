"""Exactly-once checks over a drained database, shared by the worker concurrency and kill tests.

Every expectation is computed from the queue rows themselves (SQL over attendance_scan_queue), not
from what the worker says it did: one record per student-day with scan_count = the distinct scan
times of that day, first/last scan right, one arrival notification per guardian per student-day,
one push delivery per active device of the guardian, roll-ups equal to a recount of the records.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
QUEUE_TABLES = {
    "attendance_scan_queue": "status = 'pending'",
    "notifications": "fanout_status = 'pending'",
    "push_deliveries": "status = 'pending'",
    "report_email_queue": "status = 'pending'",
    "attendance_rollup_queue": "1 = 1",
    "guardian_snapshot_queue": "1 = 1",
}


def _fixed_offset_minutes(zone_name: str) -> int:
    """The zone's UTC offset in minutes; the test data only uses zones without DST."""
    zone = ZoneInfo(zone_name)
    winter = dt.datetime(2026, 1, 15, tzinfo=zone).utcoffset()
    summer = dt.datetime(2026, 7, 15, tzinfo=zone).utcoffset()
    assert winter == summer, f"{zone_name} has DST: the SQL expectation needs a fixed offset"
    return int(winter.total_seconds() // 60)


def local_date_sql(conn, is_mysql: bool) -> str:
    """SQL for the scan's local date in its institution's timezone (CASE over institution ids)."""
    offsets = {row.id: _fixed_offset_minutes(row.timezone)
               for row in conn.execute(text("SELECT id, timezone FROM institutions"))}
    case = " ".join(f"WHEN {i} THEN {m}" for i, m in sorted(offsets.items())) or "WHEN 0 THEN 0"
    minutes = f"(CASE q.institution_id {case} ELSE 0 END)"
    if is_mysql:
        return f"DATE(DATE_ADD(q.scanned_at, INTERVAL {minutes} MINUTE))"
    return f"DATE(q.scanned_at, {minutes} || ' minutes')"


def queue_backlog(url: str) -> dict[str, int]:
    """Rows still waiting or claimed, per queue table."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: conn.execute(text(
                    f"SELECT COUNT(*) FROM {name} WHERE ({where}) OR claimed_by IS NOT NULL"
                )).scalar_one()
                for name, where in QUEUE_TABLES.items()
            }
    finally:
        engine.dispose()


def claimed_rows(url: str, run_id: str | None = None) -> dict[str, int]:
    """Rows claimed (by anyone, or by one run), per queue table."""
    engine = create_engine(url)
    where = "claimed_by IS NOT NULL" if run_id is None else "claimed_by = :run"
    try:
        with engine.connect() as conn:
            return {name: conn.execute(text(f"SELECT COUNT(*) FROM {name} WHERE {where}"),
                                       {"run": run_id}).scalar_one()
                    for name in QUEUE_TABLES}
    finally:
        engine.dispose()


@contextmanager
def runs_held_at_start(url: str, runs: int, timeout: float = 60):
    """Hold every run started inside (their processes go into the list this yields) at their
    ledger insert until `runs` of them wait there, then let them go at once, so they overlap
    whatever the machine's speed. MariaDB: a table lock on the ledger, and the processlist says
    who waits; SQLite: the writer lock, and /proc says who has the file open (waiting for it)."""
    started: list[subprocess.Popen] = []
    if make_url(url).get_backend_name() == "sqlite":
        file = Path(make_url(url).database).resolve()
        holder = sqlite3.connect(file, timeout=30, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield started
            deadline = time.monotonic() + timeout
            while sum(_has_open(proc.pid, file) for proc in started) < runs:
                assert time.monotonic() < deadline, f"{runs} runs never opened the database"
                time.sleep(0.02)
            time.sleep(0.2)  # past connecting, into the busy wait for the writer lock
        finally:
            holder.rollback()
            holder.close()
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("LOCK TABLES ops_job_runs WRITE"))
            try:
                yield started
                deadline = time.monotonic() + timeout
                while conn.execute(text(
                        "SELECT COUNT(*) FROM information_schema.processlist "
                        "WHERE db = DATABASE() AND state LIKE 'Waiting for table%' "
                        "AND info LIKE 'INSERT INTO ops_job_runs%'")).scalar_one() < runs:
                    assert time.monotonic() < deadline, f"{runs} runs never reached the ledger"
                    time.sleep(0.02)
            finally:
                conn.execute(text("UNLOCK TABLES"))
    finally:
        engine.dispose()


def _has_open(pid: int, file: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(file)
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # it ended, or closed a descriptor while we looked
        return False


def rows_in_work(url: str) -> int:
    """How much a worker is working on inside an open transaction right now: MariaDB, the rows
    its batches' transactions hold locked (a batch locks its rows as it starts); SQLite, 1 while
    a writer holds the database's only writer lock, else 0."""
    if make_url(url).get_backend_name() == "sqlite":
        probe = sqlite3.connect(make_url(url).database, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return 0
        except sqlite3.OperationalError:  # database is locked: a writer is in a transaction
            return 1
        finally:
            probe.close()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(
                "SELECT COALESCE(SUM(t.trx_rows_locked), 0) FROM information_schema.innodb_trx t "
                "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                # More than the run ledger's row or two: a batch.
                "WHERE p.db = DATABASE() AND t.trx_rows_locked > 10")).scalar_one()
    finally:
        engine.dispose()


def run_worker_until_drained(env: dict, workers: int = 1, limit: int = 100000,
                             rounds: int = 6, timeout: float = 120,
                             start_together: bool = False) -> list[dict]:
    """Start `workers` worker processes together, again until every queue is empty.

    `start_together` holds the first round's runs at their start until all of them are
    there. Returns each run's JSON result. Fails on a non-zero exit or if the queues never drain.
    """
    results = []
    for round_ in range(rounds):
        def start() -> list[subprocess.Popen]:
            return [subprocess.Popen(
                [sys.executable, str(REPO / "tools" / "run_background_workers.py"), str(limit),
                 "--execute", "--json", "--quiet"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                stdin=subprocess.DEVNULL) for _ in range(workers)]

        if start_together and round_ == 0:
            with runs_held_at_start(env["OPS_DATABASE_URL"], workers) as procs:
                procs.extend(start())
        else:
            procs = start()
        try:
            for proc in procs:
                out, err = proc.communicate(timeout=timeout)
                assert proc.returncode == 0, f"worker exited {proc.returncode}: {err[-2000:]}"
                results.append(json.loads(out))
        finally:  # a failed run's siblings must not work on into the next test's database
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        if not any(queue_backlog(env["OPS_DATABASE_URL"]).values()):
            return results
    raise AssertionError(f"queues not drained after {rounds} rounds: "
                         f"{queue_backlog(env['OPS_DATABASE_URL'])}")


def stage_total(results: list[dict], stage: str, figure: str) -> int:
    return sum(row[figure] for r in results for row in r["sections"]["Stages"]
               if row["stage"] == stage)


def outbox_delivery_ids(outbox: Path) -> Counter:
    """How many times each push delivery id was written to the push outbox."""
    seen: Counter = Counter()
    for path in sorted((outbox / "push").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                seen[json.loads(line)["delivery_id"]] += 1
    return seen


def assert_processed_exactly_once(url: str, outbox: Path | None = None,
                                  push_sent_once: bool = True) -> dict[str, int]:
    """Check the whole pipeline's result against the queued scans; returns a few totals."""
    engine = create_engine(url)
    is_mysql = engine.dialect.name == "mysql"
    try:
        with engine.connect() as conn:
            return _check(conn, is_mysql, outbox, push_sent_once)
    finally:
        engine.dispose()


def _check(conn, is_mysql: bool, outbox: Path | None, push_sent_once: bool) -> dict[str, int]:
    q = lambda sql, **p: conn.execute(text(sql), p).all()  # noqa: E731
    one = lambda sql, **p: conn.execute(text(sql), p).scalar_one()  # noqa: E731

    # Every scan processed exactly once: done (or failed for an unknown card), none left waiting.
    statuses = dict(q("SELECT status, COUNT(*) FROM attendance_scan_queue GROUP BY status"))
    assert set(statuses) <= {"done", "failed"}, f"scans left unprocessed: {statuses}"
    assert one("SELECT COUNT(*) FROM attendance_scan_queue WHERE claimed_by IS NOT NULL "
               "OR processed_at IS NULL") == 0
    unknown = one("SELECT COUNT(*) FROM attendance_scan_queue q LEFT JOIN students s "
                  "ON s.institution_id = q.institution_id AND s.card_uid = q.card_uid "
                  "WHERE s.id IS NULL")
    assert statuses.get("failed", 0) == unknown, "only unknown cards may fail"

    # One record per student-day, scan_count = distinct scan times, first/last right.
    local_date = local_date_sql(conn, is_mysql)
    expected = {
        (row.student_id, str(row.day)): (row.scans, row.first_at, row.last_at)
        for row in q(
            f"SELECT s.id AS student_id, {local_date} AS day, "
            "COUNT(DISTINCT q.scanned_at) AS scans, MIN(q.scanned_at) AS first_at, "
            "MAX(q.scanned_at) AS last_at "
            "FROM attendance_scan_queue q JOIN students s "
            "ON s.institution_id = q.institution_id AND s.card_uid = q.card_uid "
            f"GROUP BY s.id, {local_date}")
    }
    actual = {
        (row.student_id, str(row.attendance_date)): (row.scan_count, row.first_scan_at,
                                                     row.last_scan_at)
        for row in q("SELECT student_id, attendance_date, scan_count, first_scan_at, "
                     "last_scan_at FROM attendance_records")
    }
    assert one("SELECT COUNT(*) FROM attendance_records") == len(actual)
    missing = expected.keys() - actual.keys()
    extra = actual.keys() - expected.keys()
    assert not missing and not extra, f"records missing {sorted(missing)[:5]} extra {sorted(extra)[:5]}"
    wrong = {k: (expected[k], actual[k]) for k in expected
             if tuple(map(str, expected[k])) != tuple(map(str, actual[k]))}
    assert not wrong, f"{len(wrong)} records differ (expected, actual): {list(wrong.items())[:3]}"
    duplicates_marked = one("SELECT COUNT(*) FROM attendance_scan_queue WHERE status = 'done' "
                            "AND error IS NOT NULL")
    assert duplicates_marked == statuses.get("done", 0) - sum(v[0] for v in expected.values())

    # One arrival notification per guardian per student-day, no more, no less.
    guardians_of: dict[int, list[int]] = {}
    for row in q("SELECT student_id, guardian_id FROM guardian_students"):
        guardians_of.setdefault(row.student_id, []).append(row.guardian_id)
    wanted_keys = {f"arrival:{student}:{day}:{guardian}"
                   for (student, day) in expected for guardian in guardians_of.get(student, [])}
    got_keys = [row.dedupe_key for row in q("SELECT dedupe_key FROM notifications "
                                            "WHERE kind = 'arrival'")]
    assert len(got_keys) == len(set(got_keys))
    assert set(got_keys) == wanted_keys, (
        f"notifications missing {len(wanted_keys - set(got_keys))}, "
        f"extra {len(set(got_keys) - wanted_keys)}")
    assert one("SELECT COUNT(*) FROM notifications WHERE fanout_status <> 'done' "
               "OR claimed_by IS NOT NULL") == 0

    # One delivery per active device of the notification's guardian, each sent.
    wanted_pairs = set(map(tuple, q(
        "SELECT n.id, d.id FROM notifications n JOIN notification_devices d "
        "ON d.guardian_id = n.guardian_id WHERE d.is_active = 1")))
    got_pairs = list(map(tuple, q("SELECT notification_id, device_id FROM push_deliveries")))
    assert len(got_pairs) == len(set(got_pairs))
    assert set(got_pairs) == wanted_pairs
    statuses_push = dict(q("SELECT status, COUNT(*) FROM push_deliveries GROUP BY status"))
    assert set(statuses_push) <= {"sent"}, f"deliveries not sent: {statuses_push}"
    assert one("SELECT COUNT(*) FROM push_deliveries WHERE provider_message_id IS NULL "
               "OR claimed_by IS NOT NULL") == 0
    if outbox is not None:
        written = outbox_delivery_ids(outbox)
        ids = {row[0] for row in q("SELECT id FROM push_deliveries")}
        assert set(written) == ids, "every delivery written to the outbox, and only those"
        if push_sent_once:
            doubled = {i: n for i, n in written.items() if n > 1}
            assert not doubled, f"deliveries pushed more than once: {list(doubled.items())[:5]}"

    # Roll-ups equal a recount of the records, for every (institution, date) with a record.
    recount = {
        (row.institution_id, str(row.attendance_date), row.class_name):
            (int(row.present), int(row.late))
        for row in q("SELECT r.institution_id, r.attendance_date, s.class_name, "
                     "SUM(CASE WHEN r.status = 'present' THEN 1 ELSE 0 END) AS present, "
                     "SUM(CASE WHEN r.status = 'late' THEN 1 ELSE 0 END) AS late "
                     "FROM attendance_records r JOIN students s ON s.id = r.student_id "
                     "WHERE s.is_active = 1 "
                     "GROUP BY r.institution_id, r.attendance_date, s.class_name")
    }
    enrolled = {(row.institution_id, row.class_name): row.n for row in q(
        "SELECT institution_id, class_name, COUNT(*) AS n FROM students WHERE is_active = 1 "
        "GROUP BY institution_id, class_name")}
    rollups = {(row.institution_id, str(row.attendance_date), row.class_name): row
               for row in q("SELECT * FROM attendance_rollups")}
    days = {(i, d) for (i, d, _c) in recount}
    assert {(i, d) for (i, d, _c) in rollups} == days
    for (institution, day, class_name), row in rollups.items():
        present, late = recount.get((institution, day, class_name), (0, 0))
        total = enrolled[(institution, class_name)]
        assert (row.present_count, row.late_count, row.enrolled_count, row.absent_count) == (
            present, late, total, total - present - late), (institution, day, class_name)

    # Every guardian with a child who scanned has a snapshot; no marker left behind.
    touched = {g for (student, _day) in expected for g in guardians_of.get(student, [])}
    snapshots = {row[0] for row in q("SELECT guardian_id FROM guardian_snapshots")}
    assert touched <= snapshots
    assert one("SELECT COUNT(*) FROM attendance_rollup_queue") == 0
    assert one("SELECT COUNT(*) FROM guardian_snapshot_queue") == 0
    return {"scans": sum(statuses.values()), "records": len(actual),
            "notifications": len(got_keys), "deliveries": len(got_pairs),
            "duplicates": duplicates_marked}


class ArrivalHold:
    """Scan batches of a worker held inside their transactions by the test (see arrivals_held)."""

    def __init__(self, conn):
        self._conn = conn
        self._others = ("SELECT id FROM information_schema.processlist "
                        "WHERE db = DATABASE() AND id <> CONNECTION_ID()")

    def waiting(self) -> bool:
        """A worker's batch is in its arrivals' INSERT (with its scans locked): one that waits on
        a held arrival, or any other that is in that statement at that moment."""
        return bool(self._conn.execute(text(
            self._others + " AND info LIKE 'INSERT INTO notifications%'")).first())

    def end_dead_worker_sessions(self) -> None:
        """After a SIGKILL the server still runs the dead worker's waiting statement, until it
        notices: end its sessions now, so nothing of the killed run goes on."""
        for (thread,) in self._conn.execute(text(self._others)).all():
            self._conn.exec_driver_sql(f"KILL CONNECTION {int(thread)}")


@contextmanager
def arrivals_held(url: str, batches: list[int], batch_size: int):
    """MariaDB: hold the scan batches numbered `batches` (0 = the first `batch_size` pending
    scans by id, as the worker takes them) inside their transactions until the block ends;
    yields an ArrivalHold (None on SQLite, which has no lock to hold this way).

    For each batch the test inserts, uncommitted, the arrival notification of a student-day that
    first appears in that batch (its dedupe key): the batch's own insert waits on that key with
    its scans locked, however fast the machine. Rolled back when the block ends."""
    if make_url(url).get_backend_name() == "sqlite":
        yield None
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            scans = conn.execute(text(
                "SELECT q.id, s.id AS student_id, s.is_active, q.scanned_at, i.timezone, "
                "(SELECT MIN(g.guardian_id) FROM guardian_students g "
                " WHERE g.student_id = s.id) AS guardian_id "
                "FROM attendance_scan_queue q "
                "JOIN institutions i ON i.id = q.institution_id "
                "LEFT JOIN students s ON s.institution_id = q.institution_id "
                " AND s.card_uid = q.card_uid "
                "WHERE q.status = 'pending' ORDER BY q.id")).all()
            # A student-day with a record makes no arrival: only a new one can be held.
            seen = {tuple(day) for day in conn.execute(text(
                "SELECT student_id, attendance_date FROM attendance_records")).all()}
            held: dict[int, dict] = {}
            for position, scan in enumerate(scans):
                if scan.student_id is None:
                    continue
                day = scan.scanned_at.replace(tzinfo=dt.timezone.utc).astimezone(
                    ZoneInfo(scan.timezone)).date()
                batch = position // batch_size
                if ((scan.student_id, day) not in seen and batch in batches
                        and batch not in held and scan.is_active and scan.guardian_id):
                    held[batch] = {
                        "g": scan.guardian_id, "s": scan.student_id,
                        "key": f"arrival:{scan.student_id}:{day.isoformat()}:{scan.guardian_id}"}
                seen.add((scan.student_id, day))
            assert sorted(held) == sorted(batches), f"no new student-day to hold in {batches}"
            conn.rollback()  # the read's own transaction; the hold gets one of its own
            transaction = conn.begin()
            conn.execute(text(
                "INSERT INTO notifications (guardian_id, student_id, kind, title, dedupe_key) "
                "VALUES (:g, :s, 'arrival', 'held by the test', :key)"), list(held.values()))
            try:
                yield ArrivalHold(conn)
            finally:
                transaction.rollback()
    finally:
        engine.dispose()
