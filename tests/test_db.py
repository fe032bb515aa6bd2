"""Database: engine set-up and what the server can do, detected from its version."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, insert, select, text

from ops_lib.db import connect
from ops_lib.schema import divisions


def test_capabilities_follow_the_server(db):
    caps = db.caps
    if db.engine.dialect.name == "sqlite":
        assert (caps.dialect, caps.is_mysql, caps.skip_locked, caps.named_locks) == \
            ("sqlite", False, False, False)
        assert caps.server_version.startswith("3.")
        return
    with db.engine.connect() as conn:
        version = conn.execute(text("select version()")).scalar()
    major, minor = (int(n) for n in version.split(".")[:2])
    assert caps.dialect == "mysql" and caps.is_mysql and caps.named_locks
    assert caps.is_mariadb == ("mariadb" in version.lower())
    assert caps.skip_locked == ((major, minor) >= ((10, 6) if caps.is_mariadb else (8, 0)))
    assert caps.server_version == version


@pytest.mark.mariadb
def test_a_mysql_session_is_utc_read_committed_and_utf8mb4(mariadb_url):
    bare = mariadb_url.replace("mysql+pymysql://", "mysql://", 1)  # no driver named
    database = connect(bare)
    try:
        with database.engine.connect() as conn:
            zone, isolation = conn.execute(text(
                "select @@session.time_zone, @@session.tx_isolation")).one()
        assert (zone, isolation) == ("+00:00", "READ-COMMITTED")
        with database.begin() as conn:
            conn.execute(insert(divisions).values(code="30", name_en="Dhaka", name_bn="ঢাকা 😀"))
        with database.begin(write=False) as conn:
            assert conn.execute(select(divisions.c.name_bn)).scalar_one() == "ঢাকা 😀"
    finally:
        database.engine.dispose()


def test_an_sqlite_write_transaction_takes_the_write_lock_up_front(tmp_path):
    """BEGIN IMMEDIATE: a second writer waits at BEGIN, never fails half-way with a deadlock."""
    database = connect(f"sqlite:///{tmp_path / 'w.db'}", create=True)
    try:
        with database.begin() as writer:
            writer.exec_driver_sql("create table t (id integer primary key)")
            with database.engine.connect() as other:
                other.exec_driver_sql("PRAGMA busy_timeout = 0")
                other.commit()
                with pytest.raises(Exception, match="database is locked"):
                    with other.execution_options(ops_write=True).begin():
                        pass
            with database.begin(write=False) as reader:  # a reader is not blocked (WAL)
                assert reader.exec_driver_sql("select count(*) from sqlite_master").scalar() == 0
        with database.begin(write=False) as reader:  # committed now
            assert reader.exec_driver_sql("select count(*) from sqlite_master").scalar() == 1
    finally:
        database.engine.dispose()


def test_the_quicker_datetime_encoders_write_what_pymysql_writes():
    import datetime as dt

    from pymysql import converters

    from ops_lib.db import pymysql_conversions

    values = [dt.datetime(2026, 11, 24, 3, 4, 5), dt.datetime(2026, 11, 24, 3, 4, 5, 7),
              dt.datetime(5, 1, 1), dt.date(999, 1, 2), dt.date(2026, 2, 28),
              dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)]
    for value in values:
        assert converters.escape_item(value, "utf8mb4", pymysql_conversions()) == \
            converters.escape_item(value, "utf8mb4", converters.encoders)


@pytest.mark.mariadb
def test_mysql_connections_use_the_quicker_encoders_and_round_trip_microseconds(mariadb_url):
    import datetime as dt

    from ops_lib.db import pymysql_conversions

    at = dt.datetime(2026, 11, 24, 3, 4, 5, 7)
    database = connect(mariadb_url)
    try:
        with database.engine.connect() as conn:
            encoders = conn.connection.dbapi_connection.encoders
            assert encoders[dt.datetime] is pymysql_conversions()[dt.datetime]
            assert encoders[dt.date] is pymysql_conversions()[dt.date]
            assert conn.execute(text("SELECT CAST(:at AS DATETIME(6))"),
                                {"at": at}).scalar_one() == at
    finally:
        database.engine.dispose()


def test_the_repr_of_a_database_and_of_a_run_context_shows_no_password():
    from sqlalchemy import create_engine

    from ops_lib.db import Capabilities, Database
    from ops_lib.runtime import Budget, RunContext, StopSignal
    from ops_lib.settings import load_settings

    url = "mysql+pymysql://ops:S3cretPw@db.internal/platform"
    database = Database(engine=create_engine(url), url=url,
                        caps=Capabilities("mysql", "10.11", True, True, True))
    context = RunContext(db=database, settings=load_settings(env={"OPS_DATABASE_URL": url}),
                         run_id="r", tool="t", dry_run=True, budget=Budget(None),
                         stop=StopSignal())
    for shown in (repr(database), repr(context), str(context)):
        assert "S3cretPw" not in shown
        assert "mysql+pymysql://ops:***@db.internal/platform" in shown
    database.engine.dispose()


@pytest.mark.mariadb
def test_a_server_without_tls_costs_one_tls_context_not_one_per_connection(mariadb_url,
                                                                           monkeypatch):
    """PyMySQL builds a TLS context (the system CA bundle, 0.1-0.2 s) for every connection the
    URL says nothing of TLS for; once the server has shown it offers none, no more are built."""
    import ssl

    built = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context",
                        lambda *args, **kwargs: built.append(1) or real(*args, **kwargs))
    database = connect(mariadb_url)
    try:
        with database.engine.connect() as conn:
            offers_tls = conn.exec_driver_sql("select @@have_ssl").scalar() == "YES"
        first = len(built)
        connections = [database.engine.connect() for _ in range(3)]  # three new sessions
        try:
            assert [c.exec_driver_sql("select 1").scalar() for c in connections] == [1, 1, 1]
        finally:
            for conn in connections:
                conn.close()
        assert first <= 1  # PyMySQL before 1.2 builds none unless the URL asks for TLS
        assert len(built) - first == (3 if offers_tls else 0)
    finally:
        database.engine.dispose()


@pytest.mark.parametrize("url, setting, expected", [
    ("mysql://u@h/db", None, "pymysql"),  # PyMySQL, the default
    ("mysql://u@h/db", "mysqlclient", "mysqldb"),
    ("mariadb://u@h/db", "pymysql", "pymysql"),
    ("mysql+mysqldb://u@h/db", None, "mysqldb"),
    ("mysql+pymysql://u@h/db", "mysqlclient", "pymysql"),  # the URL's own driver wins
])
def test_the_driver_is_the_urls_else_the_settings_else_pymysql(url, setting, expected):
    from ops_lib.db import mysql_driver

    assert mysql_driver(url, setting) == expected


def test_a_driver_the_toolkit_does_not_support_is_bad_input():
    from ops_lib.db import mysql_driver
    from ops_lib.errors import BadInput

    with pytest.raises(BadInput, match="unsupported MySQL driver 'mysqlconnector'.*mysql\\+mysqldb"):
        mysql_driver("mysql+mysqlconnector://u@h/db")


@pytest.mark.mariadb
def test_db_driver_mysqlclient_connects_through_the_c_driver_with_the_same_session(mariadb_url):
    """The setting picks mysqlclient for a URL naming no driver; the session is the one every
    driver gets (UTC, READ COMMITTED, the schema's collation), and values round-trip alike."""
    import datetime as dt

    from sqlalchemy.engine import make_url

    from tests.conftest import require_mysqlclient

    require_mysqlclient()
    plain = make_url(mariadb_url).set(drivername="mysql").render_as_string(hide_password=False)
    database = connect(plain, driver="mysqlclient")
    at = dt.datetime(2026, 11, 24, 3, 4, 5, 7)
    try:
        assert database.engine.dialect.driver == "mysqldb"
        with database.begin() as conn:
            assert conn.connection.dbapi_connection.__class__.__module__.startswith("MySQLdb")
            assert conn.execute(text(
                "SELECT @@session.time_zone, @@session.collation_connection, "
                "@@session.tx_isolation")).one() == (
                "+00:00", "utf8mb4_unicode_ci", "READ-COMMITTED")
            assert conn.execute(text("SELECT CAST(:at AS DATETIME(6)), :text"),
                                {"at": at, "text": "Zoë's"}).one() == (at, "Zoë's")
    finally:
        database.engine.dispose()


@pytest.mark.mariadb
@pytest.mark.parametrize("driver", ["pymysql", "mysqldb"])
def test_the_quicker_datetime_decoder_reads_what_the_drivers_own_reads(mariadb_url, driver):
    # Parsed in C where the text is a whole date and time; a zero date, a date alone and the
    # like are left to the driver's decoder, which gives None (mysqlclient) or the text (PyMySQL).
    from tests.conftest import require_mysqlclient, with_driver

    if driver == "mysqldb":
        require_mysqlclient()
    url = with_driver(mariadb_url, driver)
    values = ("CAST('2026-11-24 03:04:05' AS DATETIME)", "CAST('2026-11-24 03:04:05.25' AS "
              "DATETIME(2))", "CAST('2026-11-24 03:04:05.000007' AS DATETIME(6))",
              "CAST('0999-01-02 00:00:00' AS DATETIME)", "TIMESTAMP('2026-02-28 23:59:59')",
              "CAST('0000-00-00 00:00:00' AS DATETIME)", "CAST('2026-11-24' AS DATE)",
              "CAST(NULL AS DATETIME)")
    sql = "SELECT " + ", ".join(values)
    database = connect(url)
    plain = create_engine(url)  # the driver's own decoders
    try:
        with database.engine.connect() as conn, plain.connect() as plain_conn:
            ours = conn.exec_driver_sql(sql).one()
            theirs = plain_conn.exec_driver_sql(sql).one()
            decoders = getattr(conn.connection.dbapi_connection, "decoders", None) or \
                conn.connection.dbapi_connection.converter
    finally:
        database.engine.dispose()
        plain.dispose()
    assert tuple(ours) == tuple(theirs)
    assert ours[2].microsecond == 7
    assert decoders[12].__qualname__.startswith("_quick_datetime_decoder")  # DATETIME's own
