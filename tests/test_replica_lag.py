"""Replication lag against a real replica (tests/replication.py), not a stand-in: what
`read_lag` reads in each state, the archive's `--max-replica-lag` pausing and resuming, and the
reporting validation calling a mismatch inside the lag inconclusive."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import queue
import re
import signal
import subprocess
import threading
import time
from urllib.parse import quote

import pytest
from conftest import (
    job_context,
    require_mariadb_programs,
    run_cli,
    start_cli,
    tool_env,
    unique_name,
)
from replication import ReplicaPair, ReplicationSetupError, Server
from sqlalchemy import create_engine, func, insert, select

from ops_lib.db import connect
from ops_lib.errors import PreconditionFailed
from ops_lib.jobs import archive_hot_path
from ops_lib.jobs.schema_admin import create_scratch_database, drop_database
from ops_lib.replica import NOT_A_REPLICA, describe_lag, read_lag
from ops_lib.runtime import Budget
from ops_lib.schema import (
    attendance_records,
    institutions,
    notifications,
    notifications_archive,
    students,
)
from ops_lib.timeutil import utcnow
from tests.fakes.smtp_server import free_port

# The replica pair (two servers of the tests' own) is started once per test process: every
# test that uses it runs in the same one.
pytestmark = [pytest.mark.mariadb, pytest.mark.slow, pytest.mark.xdist_group("replica_pair")]

OLD = dt.datetime(2020, 1, 1)  # older than every retention
HELD_BACK = 3600  # seconds of lag `hold_back` makes the replica report
WAIT = 120.0  # a generous deadline for what must happen, never an expectation of speed


class Replica:
    """A fresh database on the session's pair; the pair is left replicating, not delayed."""

    def __init__(self, pair, name: str):
        self.pair, self.name = pair, name
        self.primary_url = create_scratch_database(pair.primary_url(), name)
        self.replica_url = pair.replica_url(name)
        self.processes: list[subprocess.Popen] = []  # killed at teardown if still running
        pair.wait_caught_up()  # the schema is on the replica too

    def count(self, url: str, table) -> int:
        database = connect(url)
        try:
            with database.engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(table)).scalar_one()
        finally:
            database.engine.dispose()


@pytest.fixture
def replica(replica_pair):
    pair = replica_pair
    target = Replica(pair, unique_name("ops_lag"))
    yield target
    for process in target.processes:
        if process.poll() is None:  # a failed test left it paused
            process.kill()
            process.wait(timeout=30)
    pair.release()  # whatever the test left stopped or delayed
    drop_database(pair.primary_url(), target.name)
    pair.wait_caught_up()


def lag_of(url: str):
    database = connect(url)
    try:
        return read_lag(database)
    finally:
        database.engine.dispose()


def seed_old_notifications(url: str, count: int) -> None:
    database = connect(url)
    try:
        with database.begin() as conn:
            conn.execute(insert(notifications), [
                {"id": i, "guardian_id": 7, "student_id": 3, "kind": "attendance",
                 "title": f"Title {i}", "body": "body", "data": None, "dedupe_key": f"n-{i}",
                 "created_at": OLD + dt.timedelta(minutes=i), "read_at": None}
                for i in range(1, count + 1)])
    finally:
        database.engine.dispose()


class Lines:
    """A process's stdout and stderr, read as they come (threads), to wait for a line."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._new: queue.Queue = queue.Queue()
        self._readers = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                         for stream, into in ((process.stdout, self.stdout),
                                              (process.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)
            self._new.put(line)
        self._new.put(None)

    def wait_for(self, pattern: str) -> re.Match:
        """The first stderr line matching `pattern`; fails when the process ends first or
        the deadline passes."""
        deadline = time.monotonic() + WAIT
        seen = 0
        while True:
            for line in self.stderr[seen:]:
                seen += 1
                found = re.search(pattern, line)
                if found:
                    return found
            if self.process.poll() is not None and all(not r.is_alive() for r in self._readers):
                pytest.fail(f"the process exited {self.process.returncode} before logging "
                            f"{pattern!r}:\n{self.text()}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"no line {pattern!r} within {WAIT:g} s:\n{self.text()}")
            try:
                self._new.get(timeout=0.5)
            except queue.Empty:
                pass

    def finish(self) -> int:
        try:
            code = self.process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the process did not finish within {WAIT:g} s:\n{self.text()}")
        for reader in self._readers:
            reader.join(timeout=WAIT)
        return code

    def text(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)


# ---------------------------------------------------------------------------------------------
# The helper itself


def test_a_server_that_cannot_start_fails_at_once_with_the_end_of_its_error_log(tmp_path):
    require_mariadb_programs()
    server = Server(tmp_path, "broken", 9, ("--no-such-option",))
    server.install()
    with pytest.raises(ReplicationSetupError) as failed:
        server.start()
    assert server.process.poll() is not None
    message = str(failed.value)
    assert message.startswith(f"broken: mariadbd on port {server.port} exited "), message
    assert "unknown option '--no-such-option'" in message


def test_a_pair_stops_both_servers_and_removes_its_folder_when_the_test_fails():
    require_mariadb_programs()
    with pytest.raises(ZeroDivisionError):
        with ReplicaPair() as pair:
            servers = [pair.primary.process, pair.replica.process]
            assert pair.lag() == 0
            1 / 0
    assert [server.returncode for server in servers] == [0, 0]  # shut down cleanly
    assert not pair.folder.exists()


# ---------------------------------------------------------------------------------------------
# read_lag


def test_a_replica_that_has_caught_up_reports_a_lag_of_zero(replica):
    assert lag_of(replica.replica_url) == 0.0


def test_the_primary_is_not_a_replica(replica):
    assert lag_of(replica.primary_url) == NOT_A_REPLICA
    assert describe_lag(NOT_A_REPLICA) == "not a replica"


def test_a_stopped_sql_thread_makes_the_lag_unknown_even_with_changes_waiting(replica):
    replica.pair.stop_sql_thread()
    seed_old_notifications(replica.primary_url, 3)
    assert replica.pair.status()["Slave_IO_Running"] == "Yes"  # events still arrive
    assert lag_of(replica.replica_url) is None
    assert describe_lag(None) == "unknown (replication stopped)"
    assert replica.count(replica.replica_url, notifications) == 0

    replica.pair.start_sql_thread()
    replica.pair.wait_caught_up()
    assert lag_of(replica.replica_url) == 0.0
    assert replica.count(replica.replica_url, notifications) == 3


def test_a_replica_applying_an_old_event_reports_its_age_in_seconds(replica):
    replica.pair.hold_back(HELD_BACK)
    lag = lag_of(replica.replica_url)
    assert isinstance(lag, float)
    # The event is HELD_BACK s old and waits until it is twice that: the lag lies between.
    assert HELD_BACK <= lag < 2 * HELD_BACK
    assert describe_lag(lag) == f"{lag:g}s"

    replica.pair.release()
    assert lag_of(replica.replica_url) == 0.0


@pytest.fixture
def reader(replica):
    """A user of the replica's database who may read it but not the replication status."""
    user, password = unique_name("reader"), "reader pw"
    replica.pair.primary.query(
        f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'",
        f"GRANT SELECT ON `{replica.name}`.* TO '{user}'@'127.0.0.1'")
    replica.pair.wait_caught_up()  # the user is on the replica too
    yield f"mysql+pymysql://{user}:{quote(password)}@127.0.0.1:{replica.pair.replica.port}/" \
          f"{replica.name}"
    replica.pair.primary.query(f"DROP USER '{user}'@'127.0.0.1'")


def test_a_user_without_the_privilege_is_told_which_one_it_needs(replica, reader):
    database = connect(reader)
    try:
        with pytest.raises(PreconditionFailed) as failed:
            read_lag(database)
    finally:
        database.engine.dispose()
    assert str(failed.value).startswith(  # error 1227 in words (MariaDB names both privileges)
        "cannot read replication lag: the database user lacks the SUPER, SLAVE MONITOR privilege "
        "(error 1227)")
    assert str(failed.value).endswith("(the user needs REPLICATION CLIENT / SLAVE MONITOR)")


def test_a_replica_gone_away_is_not_blamed_on_privileges(replica):
    """Regression: every failure to read the status said the user lacked a privilege."""
    database = connect(replica.replica_url)
    gone = dataclasses.replace(database, engine=create_engine(
        f"mysql+pymysql://root@127.0.0.1:{free_port()}/{replica.name}"))
    try:
        with pytest.raises(PreconditionFailed) as failed:
            read_lag(gone)
    finally:
        database.engine.dispose()
        gone.engine.dispose()
    assert str(failed.value).startswith("cannot read replication lag: (2003) Can't connect")
    assert "privilege" not in str(failed.value) and "needs" not in str(failed.value)


def test_the_archive_refuses_with_one_line_when_it_cannot_read_the_lag(replica, reader,
                                                                       tmp_path):
    seed_old_notifications(replica.primary_url, 5)
    env = tool_env(replica.primary_url, tmp_path, OPS_REPLICA_DATABASE_URL=reader)
    done = run_cli("archive_hot_path_data", "--execute", "--max-replica-lag", "5", env=env)
    assert done.returncode == 1, done.stdout
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and ("cannot read replication lag: the database user lacks the "
                                 "SUPER, SLAVE MONITOR privilege (error 1227)") in errors[0]
    assert "reader pw" not in done.stderr + done.stdout and "Traceback" not in done.stderr
    assert replica.count(replica.primary_url, notifications) == 5  # nothing moved


# ---------------------------------------------------------------------------------------------
# archive_hot_path_data --max-replica-lag


def start_archive(replica, tmp_path, max_lag: str, batch: str = "10") -> Lines:
    env = tool_env(replica.primary_url, tmp_path, OPS_REPLICA_DATABASE_URL=replica.replica_url)
    process = start_cli("archive_hot_path_data", batch, "--execute", "--max-replica-lag",
                        max_lag, env=env)
    replica.processes.append(process)
    return Lines(process)


def assert_everything_archived(replica, rows: int, batches: int, run: Lines) -> None:
    assert run.finish() == 0, run.text()
    assert "replica caught up: resuming" in "".join(run.stderr)
    out = "".join(run.stdout)
    assert (f"archived: Area=notifications Eligible={rows} Done={rows} Action=moved "
            f"Batches={batches} Pre-archived=0") in out, out
    # One pause at least: a loaded machine's replica may fall behind again after it.
    assert re.search(r'statistics: Action="replica wait" Count=[1-9]', out), out
    assert "stopped: no more work" in out, out
    assert replica.count(replica.primary_url, notifications) == 0
    assert replica.count(replica.primary_url, notifications_archive) == rows
    replica.pair.wait_caught_up()
    assert replica.count(replica.replica_url, notifications) == 0
    assert replica.count(replica.replica_url, notifications_archive) == rows


def test_the_archive_pauses_while_replication_is_stopped_and_resumes_when_it_runs(replica,
                                                                                 tmp_path):
    seed_old_notifications(replica.primary_url, 30)
    replica.pair.wait_caught_up()
    replica.pair.stop_sql_thread()

    run = start_archive(replica, tmp_path, "5")
    run.wait_for(r"replica lag unknown \(replication stopped\) > 5s: pausing")
    # Lag is read before the first batch, and a run leaves the pause only on a lag it can read
    # (a number <= 5): while the SQL thread is stopped not one row can have moved.
    assert run.process.poll() is None
    assert replica.count(replica.primary_url, notifications) == 30
    assert replica.count(replica.primary_url, notifications_archive) == 0

    replica.pair.start_sql_thread()
    assert_everything_archived(replica, 30, 3, run)
    assert (f"note: --max-replica-lag 5s watches replica {replica.replica_url} "
            "(lag now unknown (replication stopped))") in "".join(run.stdout)


def test_the_archive_pauses_while_the_lag_exceeds_the_limit_and_resumes_below_it(replica,
                                                                                tmp_path):
    seed_old_notifications(replica.primary_url, 25)
    replica.pair.wait_caught_up()
    replica.pair.hold_back(HELD_BACK)

    run = start_archive(replica, tmp_path, "5")
    paused = run.wait_for(r"replica lag (\d+)s > 5s: pausing")
    assert int(paused.group(1)) >= HELD_BACK
    assert run.process.poll() is None
    assert replica.count(replica.primary_url, notifications) == 25

    replica.pair.release()
    assert_everything_archived(replica, 25, 3, run)


def test_sigterm_ends_the_pause_and_nothing_has_moved(replica, tmp_path):
    seed_old_notifications(replica.primary_url, 20)
    replica.pair.wait_caught_up()
    replica.pair.stop_sql_thread()
    run = start_archive(replica, tmp_path, "5")
    run.wait_for(r"> 5s: pausing")
    run.process.send_signal(signal.SIGTERM)
    assert run.finish() == 0, run.text()
    out = "".join(run.stdout)
    assert "stopped: interrupted by SIGTERM" in out, out
    assert "archived: Area=notifications Eligible=20 Done=0 Action=moved Batches=0" in out, out
    assert "note: 20 eligible rows left for the next run" in out, out
    assert replica.count(replica.primary_url, notifications) == 20


def test_max_runtime_ends_the_pause_and_nothing_has_moved(replica, tmp_path, caplog):
    seed_old_notifications(replica.primary_url, 20)
    replica.pair.wait_caught_up()
    replica.pair.stop_sql_thread()
    ctx = job_context(replica.primary_url, tmp_path,
                      OPS_REPLICA_DATABASE_URL=replica.replica_url)

    def paused() -> bool:
        return any(record.message.endswith("> 5s: pausing") for record in caplog.records)

    # The budget's clock stands still until the run pauses, then runs out: whatever the speed.
    ctx.budget = Budget(60, clock=lambda: 1000.0 if paused() else 0.0)
    caplog.set_level(logging.INFO)
    try:
        result = archive_hot_path.run(ctx, batch=10, max_replica_lag=5)
    finally:
        ctx.db.engine.dispose()
    assert paused()
    assert (result.status, result.stop_reason) == ("ok", "max runtime reached")
    assert result.counts["notifications_moved"] == 0
    assert "20 eligible rows left for the next run" in result.notes
    assert replica.count(replica.primary_url, notifications) == 20
    assert replica.count(replica.primary_url, notifications_archive) == 0


def test_a_lag_below_the_limit_does_not_pause_the_archive(replica, tmp_path):
    seed_old_notifications(replica.primary_url, 12)
    replica.pair.wait_caught_up()
    replica.pair.hold_back(HELD_BACK)

    env = tool_env(replica.primary_url, tmp_path, OPS_REPLICA_DATABASE_URL=replica.replica_url)
    done = run_cli("archive_hot_path_data", "5", "--execute", "--max-replica-lag",
                   str(10 * HELD_BACK), env=env)
    assert done.returncode == 0, done.stderr
    assert "pausing" not in done.stderr
    watched = re.search(r"--max-replica-lag (\d+)s watches replica \S+ \(lag now (\d+)s\)",
                        done.stdout + done.stderr)
    assert watched, done.stdout
    assert int(watched.group(1)) == 10 * HELD_BACK
    assert int(watched.group(2)) >= HELD_BACK
    assert replica.count(replica.primary_url, notifications) == 0
    assert replica.count(replica.primary_url, notifications_archive) == 12
    # Held back: the replica has applied none of it.
    assert replica.count(replica.replica_url, notifications) == 12


@pytest.fixture
def named_connection(replica):
    """The replica replicates over a named connection (MariaDB multi-source) during the test."""
    replica.pair.rename_connection("east")
    yield replica
    replica.pair.release()
    replica.pair.rename_connection("")


def test_a_replica_on_a_named_connection_is_read_too(named_connection):
    """Regression: SHOW REPLICA STATUS on MariaDB shows the default connection only; a replica
    replicating over a named one was "not a replica", and --max-replica-lag had no effect."""
    replica = named_connection
    assert replica.pair.replica.query("SHOW REPLICA STATUS") == []
    assert lag_of(replica.replica_url) == 0.0
    replica.pair.stop_sql_thread()
    assert lag_of(replica.replica_url) is None
    replica.pair.start_sql_thread()
    replica.pair.hold_back(HELD_BACK)
    assert HELD_BACK <= lag_of(replica.replica_url) < 2 * HELD_BACK


# ---------------------------------------------------------------------------------------------
# shadow_reporting_validation against the replica

VALIDATION = "shadow_reporting_validation"
MARCH_10, MARCH_11 = dt.date(2025, 3, 10), dt.date(2025, 3, 11)


def seed_attendance(url: str) -> None:
    """One institution, three students, two of them seen on 10 March 2025."""
    database = connect(url)
    try:
        with database.begin() as conn:
            conn.execute(insert(institutions), [{"id": 1, "name": "School", "code": "S1"}])
            conn.execute(insert(students), [
                {"id": s, "institution_id": 1, "name": f"Student {s}", "card_uid": f"C{s}"}
                for s in (1, 2, 3)])
        for student in (1, 2):
            record(url, student, MARCH_10)
    finally:
        database.engine.dispose()


def record(url: str, student: int, day: dt.date) -> None:
    """One attendance record on the primary: a change inside the window."""
    database = connect(url)
    seen = dt.datetime.combine(day, dt.time(3, 0))
    try:
        with database.begin() as conn:
            conn.execute(insert(attendance_records).values(
                institution_id=1, student_id=student, attendance_date=day,
                first_scan_at=seen, last_scan_at=seen, status="present"))
    finally:
        database.engine.dispose()


def validate(replica, tmp_path, first: dt.date, end: dt.date) -> tuple[int, dict]:
    done = run_cli(VALIDATION, "--target-url", replica.replica_url, "--from", str(first),
                   "--to", str(end), "--json", env=tool_env(replica.primary_url, tmp_path))
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def lag_note(answer: dict) -> str:
    return next((note for note in answer["notes"] if note.startswith("target lag")), "")


def group(row: dict) -> tuple:
    """A mismatching attendance group: its day, institution, records on the primary, the
    target's figures (None: the group is missing there) and the verdict."""
    return (row["attendance_date"], row["institution_id"], row["primary"]["records"],
            row["target"], row["verdict"])


def only_row(answer: dict) -> dict:
    rows = [row for area in answer["sections"].values() for row in area]
    assert len(rows) == 1, answer["sections"]
    return rows[0]


def test_validation_calls_a_change_the_stopped_replica_has_not_applied_inconclusive(
        replica, tmp_path):
    seed_attendance(replica.primary_url)
    replica.pair.wait_caught_up()
    window = (MARCH_10, MARCH_10 + dt.timedelta(days=7))
    code, answer = validate(replica, tmp_path, *window)
    assert (code, answer["stop_reason"]) == (0, "equal: 1 groups in 3 areas"), answer
    # A number (the run's own ledger row may be on its way): not "unknown", not "not a replica".
    assert re.fullmatch(r"target lag: \d+s before the comparison, \d+s after",
                        lag_note(answer)), answer["notes"]

    replica.pair.stop_sql_thread()
    record(replica.primary_url, 3, MARCH_11)  # the replica receives it, but does not apply it
    code, answer = validate(replica, tmp_path, *window)
    assert code == 1, answer
    assert answer["status"] == "ok"  # not a failure: no alert
    assert answer["stop_reason"].startswith(
        "inconclusive: 1 mismatching rows inside the replica lag"), answer["stop_reason"]
    assert answer["counts"] == {"areas_checked": 3, "groups_compared": 2, "mismatches": 0,
                                "inconclusive": 1}
    assert group(only_row(answer)) == ("2025-03-11", 1, 1, None, "inconclusive")
    assert lag_note(answer) == ("target lag: unknown (replication stopped) before the "
                                "comparison, unknown (replication stopped) after")

    replica.pair.start_sql_thread()
    replica.pair.wait_caught_up()
    code, answer = validate(replica, tmp_path, *window)
    assert (code, answer["stop_reason"]) == (0, "equal: 2 groups in 3 areas"), answer
    assert answer["counts"]["inconclusive"] == answer["counts"]["mismatches"] == 0


def test_validation_calls_a_change_of_today_inside_a_real_lag_inconclusive(replica, tmp_path):
    """The replica reports a lag of an hour or more (hold_back): today's change, not yet
    applied there, is inside the lag whatever the time of day (now - lag is today or
    yesterday)."""
    seed_attendance(replica.primary_url)
    replica.pair.wait_caught_up()
    replica.pair.hold_back(HELD_BACK)
    today = utcnow().date()
    record(replica.primary_url, 3, today)
    code, answer = validate(replica, tmp_path, today - dt.timedelta(days=1),
                            today + dt.timedelta(days=2))
    assert code == 1, answer
    assert answer["status"] == "ok"
    assert answer["stop_reason"].startswith("inconclusive: 1 mismatching rows"), answer
    assert group(only_row(answer)) == (str(today), 1, 1, None, "inconclusive")
    before_after = re.fullmatch(r"target lag: (\d+)s before the comparison, (\d+)s after",
                                lag_note(answer))
    assert before_after and int(before_after.group(1)) >= HELD_BACK, answer["notes"]

    replica.pair.release()
    code, answer = validate(replica, tmp_path, today - dt.timedelta(days=1),
                            today + dt.timedelta(days=2))
    assert (code, answer["stop_reason"]) == (0, "equal: 1 groups in 3 areas"), answer
