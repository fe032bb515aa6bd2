"""The scratch schema the drift check loads schema.sql into: named, refused, dropped, swept.

Every run of the drift check or the index preview sweeps generated scratch databases older than
an hour, on a server every test run (of every worktree) shares. So the "old" databases made here
are younger than an hour, swept with a shorter `older_than`; and the two tests that sweep so take
a server-wide named lock (`sweep_turn`), so that no copy of them, in this run or another, sweeps
the other's old databases or waits on the metadata lock the other holds.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import signal
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ops_lib.db import connect
from ops_lib.errors import BadInput, JobFailed, PreconditionFailed
from ops_lib.runtime import StopSignal
from ops_lib.schema_sql import Statement, schema_statements
from ops_lib.jobs.schema_admin import create_scratch_database
from ops_lib.scratch_schema import (
    GENERATED_NAME,
    SCRATCH_MARKER,
    SCRATCH_PREFIX,
    STALE_AFTER,
    ScratchInterrupted,
    check_scratch_name,
    expected_and_live,
    generated_scratch_name,
    scratch_created_at,
    scratch_schema,
    stale_scratch_names,
    sweep_stale_scratch_schemas,
)
from ops_lib.timeutil import utcnow

from tests.conftest import (
    loaded_scratch, named_at, scratch_sweep_turn, wait_for_drop_waiting_on_lock,
    MYSQL_SERVER_URL,
    REPO,
    job_context,
    require_mariadb,
    sqlite_database,
    unique_name,
)

PROCESS = REPO / "tests" / "scratch_schema_process.py"
NOW = dt.datetime(2026, 11, 28, 8, 15, 0)


# Names, no database.

def test_a_generated_name_is_the_prefix_the_utc_time_and_six_random_hex():
    name = generated_scratch_name(NOW)
    assert re.fullmatch(r"ops_scratch_20261128081500_[0-9a-f]{6}", name), name
    assert GENERATED_NAME.fullmatch(name)
    assert scratch_created_at(name) == NOW
    assert generated_scratch_name(NOW) != name  # the random part tells two runs apart


def test_only_the_exact_generated_pattern_has_a_creation_time():
    for other in ("ops_scratch_x", "ops_scratch_keep", "ops_scratch_2026112808150_3fa9c2",
                  "ops_scratch_20261128081500_3FA9C2", "ops_scratch_20261128081500_3fa9c2x",
                  "xops_scratch_20261128081500_3fa9c2", "ops_scratch_20261128081500-3fa9c2",
                  "ops_scratch_20261328081500_3fa9c2",  # month 13: digits, but no time
                  "drift_20261128081500_3fa9c2"):
        assert scratch_created_at(other) is None, other


def test_stale_names_are_generated_ones_older_than_an_hour_and_no_others():
    old = named_at(NOW - STALE_AFTER - dt.timedelta(seconds=1))
    just_an_hour = named_at(NOW - STALE_AFTER)
    young = named_at(NOW - dt.timedelta(minutes=5))
    future = named_at(NOW + dt.timedelta(hours=3))  # another host's clock ahead of ours
    names = [young, "ops_scratch_keep", old, "ops_scratch_x", just_an_hour, future,
             "ops_scratch_19990101000000_3fa9c2x", "drift_check_scratch"]
    assert stale_scratch_names(names, NOW) == [old]
    assert stale_scratch_names(names, NOW, older_than=dt.timedelta(minutes=4)) == sorted(
        [old, just_an_hour, young])


def test_an_operator_scratch_name_needs_no_quoting():
    assert check_scratch_name(None) == []
    assert check_scratch_name("drift-scratch_1") == []
    for bad in ("", "a`b", "a b", "a%", "x" * 65, "a;drop"):
        assert check_scratch_name(bad), bad


# On MariaDB.

@pytest.fixture
def server():
    require_mariadb()
    engine = create_engine(MYSQL_SERVER_URL, isolation_level="AUTOCOMMIT")
    made: list[str] = []
    engine.made = made  # databases the test made, dropped at its end whatever happened
    yield engine
    with engine.connect() as conn:
        for name in made:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    engine.dispose()


def create_database(server, name: str, *, table: bool = False, options: str = "") -> str:
    server.made.append(name)
    with server.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` {options}")
        if table:
            conn.exec_driver_sql(f"CREATE TABLE `{name}`.kept (id INT PRIMARY KEY)")
            conn.exec_driver_sql(f"INSERT INTO `{name}`.kept VALUES (7)")
    return name


def existing(server, *names: str) -> set[str]:
    with server.connect() as conn:
        found = conn.execute(text("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA"))
        return {name for (name,) in found} & set(names)


def tables_of(server, name: str) -> set[str]:
    with server.connect() as conn:
        return set(conn.execute(text("SELECT TABLE_NAME FROM information_schema.TABLES "
                                     "WHERE TABLE_SCHEMA = :s"), {"s": name}).scalars())


@pytest.fixture
def live(server):
    """A live database of the test's own, its default collation not the server's default."""
    name = create_database(server, unique_name("ops_test_live"),
                           options="CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    database = connect(f"{MYSQL_SERVER_URL.rstrip('/')}/{name}")
    yield database
    database.engine.dispose()


def live_name(live) -> str:
    return live.engine.url.database


def scratch_named_in(message: str) -> str:
    match = re.search(r"scratch database ([A-Za-z0-9_$-]+)", message)
    assert match, message
    return match.group(1)


def test_schema_sql_is_loaded_with_the_live_collation_and_dropped_after_a_normal_use(
        server, live):
    created_tables = {s.table for s in schema_statements() if s.table}
    with scratch_schema(live.engine, live_name(live)) as name:
        server.made.append(name)
        assert GENERATED_NAME.fullmatch(name)
        assert tables_of(server, name) == created_tables | {SCRATCH_MARKER}
        with server.connect() as conn:
            assert conn.execute(text(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :s"), {"s": name}
            ).one() == ("utf8mb4", "utf8mb4_bin")
    assert existing(server, name) == set()
    # Its session (USE scratch, sql_log_bin, lock_wait_timeout) did not go back to the pool.
    for _ in range(3):
        with live.engine.connect() as conn:
            assert conn.exec_driver_sql(
                "SELECT DATABASE(), @@session.lock_wait_timeout = @@global.lock_wait_timeout"
            ).one() == (live_name(live), 1)


def test_an_operator_named_scratch_is_used_and_dropped(server, live):
    name = unique_name("drift_scratch")
    server.made.append(name)
    with scratch_schema(live.engine, live_name(live), name=name) as used:
        assert used == name and existing(server, name) == {name}
    assert existing(server, name) == set()


def test_an_operator_named_scratch_a_killed_run_left_is_dropped_and_created_again(
        server, live, caplog):
    # kill -9 leaves the operator's scratch, marked as ours: the next run must not be blocked.
    name = create_database(server, unique_name("drift_scratch"), table=True)
    with server.connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE `{name}`.{SCRATCH_MARKER} (created_at DATETIME)")
    with caplog.at_level(logging.WARNING, logger="ops"):
        with scratch_schema(live.engine, live_name(live), name=name) as used:
            assert used == name
            assert "kept" not in tables_of(server, name)
            assert {SCRATCH_MARKER, "ops_job_runs"} <= tables_of(server, name)
    assert existing(server, name) == set()
    assert any(f"--scratch-database {name} is a scratch an earlier run left" in r.getMessage()
               for r in caplog.records), caplog.records


@pytest.mark.parametrize("kind", ["operator", "generated"])
def test_an_existing_scratch_name_is_refused_and_left_as_it_was(server, live, kind):
    name = unique_name("drift_scratch") if kind == "operator" else named_at(utcnow())
    create_database(server, name, table=True)
    with pytest.raises(BadInput) as raised:
        with scratch_schema(live.engine, live_name(live), name=name):
            pytest.fail("the with-block ran on a database that existed")
    message = str(raised.value)
    assert "\n" not in message and f"{name} already exists" in message
    # A generated name is ours to drop; an operator's may be anyone's: no DROP suggested.
    assert (f"DROP DATABASE IF EXISTS `{name}`" in message) == (kind == "generated")
    assert tables_of(server, name) == {"kept"}
    with server.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT id FROM `{name}`.kept").scalars().all() == [7]


def test_the_live_database_is_refused_as_the_scratch(server, live):
    with pytest.raises(BadInput, match="is the live database"):
        with scratch_schema(live.engine, live_name(live), name=live_name(live)):
            pytest.fail("the with-block ran")
    assert existing(server, live_name(live)) == {live_name(live)}


def test_a_live_database_that_does_not_exist_is_a_precondition_and_creates_nothing(server, live):
    name = unique_name("drift_scratch")
    server.made.append(name)
    with pytest.raises(PreconditionFailed, match="does not exist"):
        with scratch_schema(live.engine, unique_name("ops_test_gone"), name=name):
            pytest.fail("the with-block ran")
    assert existing(server, name) == set()


def test_a_failed_statement_stops_the_load_names_its_line_and_the_scratch_is_dropped(
        server, live):
    statements = [Statement("CREATE TABLE first_one (id INT PRIMARY KEY)", 1, "first_one"),
                  Statement("CREATE TABLE broken (id INT PRIMARY KEY,\n  name INT,,\n"
                            "  other INT\n)", 3, "broken"),
                  Statement("CREATE TABLE never_made (id INT PRIMARY KEY)", 5, "never_made")]
    with pytest.raises(JobFailed) as raised:
        with scratch_schema(live.engine, live_name(live), statements=statements):
            pytest.fail("the with-block ran after a failed load")
    message = str(raised.value)
    assert "schema.sql line 3" in message and "CREATE TABLE of broken" in message
    # The server's "near '...'" quotes the multi-line statement: still one line, spaces kept.
    assert "\n" not in message and "near ' other INT )'" in message, message
    name = scratch_named_in(message)
    server.made.append(name)
    assert GENERATED_NAME.fullmatch(name)
    assert existing(server, name) == set()


def test_an_exception_in_the_with_block_drops_the_scratch_and_goes_on_up(server, live):
    with pytest.raises(ZeroDivisionError):
        with scratch_schema(live.engine, live_name(live)) as name:
            server.made.append(name)
            assert existing(server, name) == {name}
            1 / 0
    assert existing(server, name) == set()


def test_a_stop_signal_before_the_load_stops_it_and_leaves_no_scratch(server, live):
    stop = StopSignal()
    stop.set("SIGTERM")
    with pytest.raises(ScratchInterrupted) as raised:
        with scratch_schema(live.engine, live_name(live), stop=stop):
            pytest.fail("the with-block ran after a stop signal")
    assert "interrupted by SIGTERM" in str(raised.value)
    name = scratch_named_in(str(raised.value))
    server.made.append(name)
    assert existing(server, name) == set()


def test_a_drop_that_fails_is_a_warning_with_the_statement_and_the_first_error_goes_on(
        server, live, caplog):
    with server.connect() as holder:
        with pytest.raises(ZeroDivisionError):
            with scratch_schema(live.engine, live_name(live), lock_wait_timeout=1) as name:
                server.made.append(name)
                holder.exec_driver_sql("BEGIN")  # a reader of the scratch holds a metadata lock
                holder.exec_driver_sql(f"SELECT * FROM `{name}`.ops_job_runs")
                1 / 0
        assert existing(server, name) == {name}  # the drop gave up on the lock
        holder.exec_driver_sql("ROLLBACK")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(name in w and f"drop it by hand: DROP DATABASE IF EXISTS `{name}`" in w
               for w in warnings), warnings


@pytest.fixture
def sweep_turn(server):
    with scratch_sweep_turn(server):
        yield


def test_the_sweep_drops_old_generated_scratches_only_and_a_locked_one_is_a_warning(
        server, sweep_turn, caplog):
    now = utcnow()
    old = create_database(server, named_at(now - dt.timedelta(minutes=15)))
    old_locked = create_database(server, named_at(now - dt.timedelta(minutes=15)), table=True)
    young = create_database(server, named_at(now - dt.timedelta(minutes=5)))
    kept = [create_database(server, name) for name in (
        f"ops_scratch_keep_{secrets.token_hex(3)}", unique_name("drift_scratch"),
        f"{SCRATCH_PREFIX}{secrets.token_hex(4)}",
        named_at(now - dt.timedelta(minutes=15)) + "x")]
    with server.connect() as holder, server.connect() as sweeper:
        holder.exec_driver_sql("BEGIN")
        holder.exec_driver_sql(f"SELECT * FROM `{old_locked}`.kept")
        sweeper.exec_driver_sql("SET SESSION lock_wait_timeout = 1")
        with caplog.at_level(logging.INFO, logger="ops"):
            dropped = sweep_stale_scratch_schemas(sweeper, now,
                                                  older_than=dt.timedelta(minutes=10))
        holder.exec_driver_sql("ROLLBACK")
    mine = {old, old_locked, young, *kept}
    assert set(dropped) & mine == {old}
    assert existing(server, *mine) == mine - {old}
    assert tables_of(server, old_locked) == {"kept"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(old_locked in w and "Lock wait timeout" in w for w in warnings), warnings
    assert not any(old in w for w in warnings)
    assert any(old in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_sigterm_while_sweeping_drops_the_new_scratch_the_sweep_finishes_and_says_interrupted(
        server, live, sweep_turn):
    old = create_database(server, named_at(utcnow() - dt.timedelta(minutes=30)), table=True)
    with server.connect() as holder:
        holder.exec_driver_sql("BEGIN")
        holder.exec_driver_sql(f"SELECT * FROM `{old}`.kept")  # a metadata lock the sweep waits on
        process = subprocess.Popen(
            [sys.executable, str(PROCESS), live.url, "--sweep-older-than-minutes", "20",
             "--lock-wait-timeout", "3600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        try:
            scratch = loaded_scratch(process)
            server.made.append(scratch)
            wait_for_drop_waiting_on_lock(server, process, scratch, old)
            assert existing(server, scratch, old) == {scratch, old}
            # The sweep runs after the load: the new scratch holds all of schema.sql by now.
            assert tables_of(server, scratch) == \
                {s.table for s in schema_statements() if s.table} | {SCRATCH_MARKER}
            process.send_signal(signal.SIGTERM)
        finally:
            holder.exec_driver_sql("ROLLBACK")
            out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    assert out == ""  # the with-block never ran
    assert f"error: interrupted by SIGTERM while preparing the scratch database {scratch}" in err
    assert existing(server, scratch, old) == set()


# expected_and_live: what the drift check and index preview call.

def test_on_mariadb_expected_is_read_from_a_scratch_that_is_gone_afterwards(
        tmp_path, caplog, server):
    # A database of its own, built from schema.sql: the session's shared one is other tests'.
    name = unique_name("ops_test_expected_live")
    server.made.append(name)
    ctx = job_context(create_scratch_database(MYSQL_SERVER_URL, name), tmp_path)
    try:
        with caplog.at_level(logging.DEBUG, logger="ops"):
            expected, live = expected_and_live(ctx)
    finally:
        ctx.db.engine.dispose()
    scratch = next(re.search(r"scratch database (\S+)", r.getMessage()).group(1)
                   for r in caplog.records if "loaded into the scratch database" in r.getMessage())
    server.made.append(scratch)
    assert existing(server, scratch) == set()
    assert set(expected.tables) == {s.table for s in schema_statements() if s.table}
    # A live database built from schema.sql reads as the scratch does, table by table.
    assert expected.tables == live.tables  # size estimates are no part of a Table's equality


def test_on_mariadb_an_operator_named_scratch_is_used_and_dropped(mariadb_url, tmp_path, server):
    name = unique_name("drift_scratch")
    server.made.append(name)
    ctx = job_context(mariadb_url, tmp_path)
    try:
        expected, _live = expected_and_live(ctx, scratch_database=name)
    finally:
        ctx.db.engine.dispose()
    assert "ops_job_runs" in expected.tables
    assert existing(server, name) == set()


def test_on_sqlite_expected_is_built_in_memory_and_a_scratch_database_is_refused(tmp_path):
    ctx = job_context(sqlite_database(tmp_path), tmp_path)
    try:
        expected, live = expected_and_live(ctx)
        assert (expected.dialect, live.dialect) == ("sqlite", "sqlite")
        assert expected.tables == live.tables
        with pytest.raises(BadInput, match="--scratch-database is for MySQL/MariaDB"):
            expected_and_live(ctx, scratch_database="drift_scratch")
    finally:
        ctx.db.engine.dispose()


@pytest.fixture
def restricted_user(server, live):
    """A user with no SUPER (no sql_log_bin), who may use the live database only; the test
    grants more. Yields (grant on the server, URL of the live database as that user)."""
    user, password = unique_name("ops_scr"), secrets.token_hex(8)
    with server.connect() as conn:
        cursor = conn.connection.cursor()  # the driver's: `%` is no placeholder here
        cursor.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cursor.execute(f"GRANT SELECT ON `{live_name(live)}`.* TO '{user}'@'%'")

        def grant(what: str) -> None:
            cursor.execute(f"GRANT {what} TO '{user}'@'%'")

        address = make_url(MYSQL_SERVER_URL).set(username=user, password=password,
                                                 database=live_name(live))
        try:
            yield grant, address.render_as_string(hide_password=False)
        finally:
            cursor.execute(f"DROP USER '{user}'@'%'")


def test_a_user_granted_the_scratch_prefix_only_loads_and_drops_its_scratch(
        server, live, restricted_user, caplog):
    grant, url = restricted_user
    grant(r"ALL ON `ops\_scratch\_%`.*")
    database = connect(url)
    try:
        with caplog.at_level(logging.DEBUG, logger="ops"), \
                scratch_schema(database.engine, live_name(live)) as name:
            # No SUPER: the binary log keeps the scratch's DDL, and that is no error.
            assert any("binary log" in r.getMessage() for r in caplog.records)
            server.made.append(name)
            assert "ops_job_runs" in tables_of(server, name)
    finally:
        database.engine.dispose()
    assert existing(server, name) == set()


def test_a_user_who_may_not_create_the_scratch_is_told_what_to_grant(server, live,
                                                                      restricted_user):
    _grant, url = restricted_user
    database = connect(url)
    try:
        with pytest.raises(PreconditionFailed) as raised:
            with scratch_schema(database.engine, live_name(live)):
                pytest.fail("the with-block ran without a scratch database")
    finally:
        database.engine.dispose()
    message = str(raised.value)
    assert r"ALL ON `ops\_scratch\_%`.*" in message and "--scratch-database NAME" in message
    server.made.append(scratch_named_in(message))


@pytest.mark.slow
@pytest.mark.xdist_group("replica_pair")  # the pair test_replica_lag.py starts
def test_the_scratch_ddl_stays_out_of_the_binary_log_so_a_replica_never_sees_it(replica_pair):
    pair = replica_pair
    live_db = unique_name("ops_test_live")
    pair.primary.query(f"CREATE DATABASE `{live_db}`")
    database = connect(pair.primary_url(live_db))
    try:
        with scratch_schema(database.engine, live_db) as name:
            pair.wait_caught_up()  # the replica has applied all the primary logged so far
            assert pair.primary.query(f"SHOW DATABASES LIKE '{name}'")
            assert not pair.replica.query(f"SHOW DATABASES LIKE '{name}'")
        events = pair.primary.query("SHOW BINLOG EVENTS IN "
                                    f"'{pair.primary.query('SHOW MASTER STATUS')[0]['File']}'")
        assert not [event for event in events if name in (event.get("Info") or "")]
        assert not pair.primary.query(f"SHOW DATABASES LIKE '{name}'")
    finally:
        database.engine.dispose()
        pair.primary.query(f"DROP DATABASE IF EXISTS `{live_db}`")
        pair.wait_caught_up()
