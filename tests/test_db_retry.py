"""Transient database errors are retried, permanent ones are not: real errors from MariaDB."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

from ops_lib.db import connect, is_transient, mysql_error_code, retry_transient

pytestmark = pytest.mark.mariadb


@pytest.fixture
def mdb(mariadb_url):
    database = connect(mariadb_url)
    with database.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS retry_probe")
        conn.exec_driver_sql(
            "CREATE TABLE retry_probe (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB")
        conn.exec_driver_sql(
            "INSERT INTO retry_probe VALUES " + ", ".join(f"({i}, 0)" for i in range(1, 11)))
    yield database
    with database.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS retry_probe")
    database.engine.dispose()


def wait_until_lock_wait(db, blocker: threading.Thread, errors: list, timeout: float = 120
                         ) -> None:
    """Until some transaction is waiting for a row lock (so the cycle is about to close). The
    bound is only against a hang: it returns as soon as the wait shows, and a busy CI machine
    (another suite's processes on the same server) once took more than 10 s to get there. A
    blocker that ended without waiting fails the test at once, with its error."""
    deadline = time.monotonic() + timeout
    with db.engine.connect() as conn:
        while time.monotonic() < deadline:
            assert blocker.is_alive(), f"the blocking transaction ended without waiting: {errors}"
            waiting = conn.execute(text(
                "SELECT COUNT(*) FROM information_schema.innodb_trx "
                "WHERE trx_state = 'LOCK WAIT'")).scalar()
            conn.rollback()
            if waiting:
                return
            time.sleep(0.01)
    raise AssertionError(f"no transaction started waiting for a lock in {timeout:g} s")


def test_a_real_deadlock_is_retried_by_database_run_and_then_succeeds(mdb, caplog):
    """Two connections lock rows 1 and 2..10 in opposite orders: InnoDB kills the lighter one."""
    other = mdb.engine.connect()
    other.begin()
    # The other transaction changes nine rows, so InnoDB picks ours (one row) as the victim.
    other.execute(text("UPDATE retry_probe SET v = v + 100 WHERE id >= 2"))
    errors: list[BaseException] = []

    def other_wants_row_1() -> None:
        try:
            other.execute(text("UPDATE retry_probe SET v = v + 100 WHERE id = 1"))
            other.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            other.rollback()

    attempts: list[int] = []

    def work(conn):
        attempts.append(len(attempts) + 1)
        conn.execute(text("UPDATE retry_probe SET v = v + 1 WHERE id = 1"))
        if len(attempts) == 1:
            blocker = threading.Thread(target=other_wants_row_1)
            blocker.start()
            wait_until_lock_wait(mdb, blocker, errors)
            work.blocker = blocker
        conn.execute(text("UPDATE retry_probe SET v = v + 1 WHERE id = 2"))  # closes the cycle
        return conn.execute(text("SELECT v FROM retry_probe WHERE id IN (1, 2) ORDER BY id")
                            ).scalars().all()

    values = mdb.run(work, what="deadlock test")
    work.blocker.join(timeout=30)
    other.close()
    assert errors == []
    assert attempts == [1, 2]
    [warning] = [r.getMessage() for r in caplog.records if "transient" in r.getMessage()]
    assert "in deadlock test (attempt 1 of 6)" in warning and "(1213) Deadlock found" in warning
    # The other transaction committed first (+100 on both rows), then ours (+1) on retry.
    assert values == [101, 101]


def test_a_real_lock_wait_timeout_is_retried_and_then_succeeds(mdb):
    holder = mdb.engine.connect()
    holder.begin()
    holder.execute(text("UPDATE retry_probe SET v = 7 WHERE id = 3"))
    attempts: list[int] = []

    def work(conn):
        attempts.append(len(attempts) + 1)
        conn.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
        if len(attempts) == 2:
            holder.commit()  # the lock goes away before the second try
        conn.execute(text("UPDATE retry_probe SET v = v + 1 WHERE id = 3"))
        return conn.execute(text("SELECT v FROM retry_probe WHERE id = 3")).scalar()

    try:
        assert mdb.run(work) == 8
    finally:
        holder.close()
    assert attempts == [1, 2]


def server_error(conn, code: int, sqlstate: str = "40001") -> None:
    """Ask the server itself to raise error `code` (SIGNAL in an anonymous block)."""
    conn.exec_driver_sql(
        f"BEGIN NOT ATOMIC SIGNAL SQLSTATE '{sqlstate}' "
        f"SET MYSQL_ERRNO = {code}, MESSAGE_TEXT = 'raised by the test'; END")


def test_a_deadlock_error_from_the_server_is_retried_until_attempts_run_out(mdb):
    calls, delays = [], []

    def work():
        calls.append(1)
        with mdb.engine.connect() as conn:
            server_error(conn, 1213)

    with pytest.raises(DBAPIError) as raised:
        retry_transient(work, attempts=4, base_delay=0.1, max_delay=0.25, sleep=delays.append)
    assert mysql_error_code(raised.value) == 1213
    assert is_transient(raised.value)
    assert len(calls) == 4
    assert len(delays) == 3
    # Capped exponential backoff with jitter: 0.1, 0.2, 0.25 (cap), each scaled by 0.5-1.0.
    for delay, full in zip(delays, (0.1, 0.2, 0.25)):
        assert full * 0.5 <= delay <= full


def test_a_missing_table_is_permanent_and_not_retried(mdb):
    attempts: list[int] = []

    def work(conn):
        attempts.append(1)
        conn.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(ProgrammingError) as raised:
        mdb.run(work)
    assert mysql_error_code(raised.value) == 1146
    assert attempts == [1]


def test_a_duplicate_key_is_permanent_and_not_retried(mdb):
    attempts: list[int] = []

    def work(conn):
        attempts.append(1)
        conn.execute(text("INSERT INTO retry_probe VALUES (1, 0)"))

    with pytest.raises(IntegrityError) as raised:
        mdb.run(work)
    assert mysql_error_code(raised.value) == 1062
    assert attempts == [1]


@pytest.mark.parametrize("code", [1213, 1467])  # 1467: a deadlock on the AUTO-INC lock
def test_a_failed_attempt_is_rolled_back_before_the_retry(mdb, code):
    attempts: list[int] = []

    def work(conn):
        attempts.append(1)
        conn.execute(text("UPDATE retry_probe SET v = v + 1 WHERE id = 5"))
        if len(attempts) == 1:
            server_error(conn, code, sqlstate="HY000")
        return conn.execute(text("SELECT v FROM retry_probe WHERE id = 5")).scalar()

    assert mdb.run(work) == 1  # not 2: the first attempt's update was rolled back
    assert len(attempts) == 2


def test_a_busy_sqlite_database_is_transient(tmp_path):
    database = connect(f"sqlite:///{tmp_path / 'busy.db'}", create=True)
    with database.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    holder = database.engine.connect().execution_options(ops_write=True)
    holder.begin()  # BEGIN IMMEDIATE: holds the write lock
    try:
        with database.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout = 0")  # fail at once instead of waiting
            conn.commit()
            with pytest.raises(DBAPIError) as raised:
                with conn.execution_options(ops_write=True).begin():  # BEGIN IMMEDIATE
                    pass
    finally:
        holder.rollback()
        holder.close()
        database.engine.dispose()
    assert "database is locked" in str(raised.value)
    assert is_transient(raised.value)
