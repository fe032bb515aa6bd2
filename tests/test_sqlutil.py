"""Shared statements: per-row updates, and the pinned connection the jobs run on."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    LargeBinary,
    Numeric,
    String,
    Text,
    insert,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError

from ops_lib.schema import divisions
from ops_lib.sqlutil import MAX_KEY_RANGES, in_keys, temporary_table, update_each
from tests.conftest import EVERY_BACKEND


def _names(db) -> list[tuple]:
    with db.engine.connect() as conn:
        return conn.execute(select(divisions.c.id, divisions.c.name_en, divisions.c.code)
                            .order_by(divisions.c.id)).all()


def _seed(db) -> None:
    with db.begin() as conn:
        conn.execute(insert(divisions), [{"id": i, "name_en": f"d{i}", "code": f"c{i}"}
                                         for i in range(1, 6)])


@pytest.mark.parametrize("keys", [
    [2, 3, 4], [5, 1, 2, 3], [1, 3, 5], [4], [], list(range(1, 6)) + [99],
    list(range(-2 * MAX_KEY_RANGES, 0, 2)) + [2, 3],  # too many runs: a list
])
def test_in_keys_picks_exactly_the_keys_as_ranges_or_a_list(db, keys):
    _seed(db)
    with db.engine.connect() as conn:
        found = conn.execute(select(divisions.c.id).where(in_keys(divisions.c.id, keys))
                             .order_by(divisions.c.id)).scalars().all()
    assert found == sorted(set(keys) & {1, 2, 3, 4, 5})


def test_in_keys_names_a_run_of_keys_by_its_ends():
    from sqlalchemy.dialects import mysql

    sql = str(select(divisions.c.id).where(in_keys(divisions.c.id, [7, 3, 4, 5, 6, 10]))
              .compile(dialect=mysql.dialect(), compile_kwargs={"literal_binds": True}))
    assert "divisions.id BETWEEN 3 AND 7 OR divisions.id = 10" in sql


def test_update_each_gives_each_row_its_own_values_and_only_where_allowed(db):
    _seed(db)
    with db.begin() as conn:
        matched = update_each(
            conn, divisions, divisions.c.id,
            {1: {"name_en": "one"}, 2: {"name_en": "two", "code": "II"}, 3: {"name_en": "three"},
             99: {"name_en": "missing"}},
            common={"code": "set"}, where=[divisions.c.id != 3])
    assert matched == 2  # 3 is excluded by `where`, 99 does not exist
    assert _names(db) == [(1, "one", "set"), (2, "two", "II"), (3, "d3", "c3"),
                          (4, "d4", "c4"), (5, "d5", "c5")]


@pytest.mark.parametrize("db_url", EVERY_BACKEND, indirect=True)
def test_a_temporary_table_gives_back_every_value_as_its_column_type_would(db):
    # Its rows go in as driver-level tuples (SQLite) or one JSON document (MySQL): each type's
    # own conversion must still apply (JSON serialised, SQLite's DATETIME text with
    # microseconds, as everywhere else), and NULL, booleans and text of any kind come back.
    rows = [
        {"id": 1, "note": "it's 100% 'quoted' \\ text \"x\" \\n 😀 é", "at": dt.datetime(2026, 11, 26, 1, 25, 13),
         "data": {"student": "Ayesha", "scans": [1, 2]}, "day": dt.date(2026, 11, 26),
         "flag": True, "amount": Decimal("12.50"), "count": 2**40},
        {"id": 2, "note": None, "at": dt.datetime(2026, 11, 26, 1, 25, 13, 250000), "data": None,
         "day": None, "flag": False, "amount": None, "count": None},
        {"id": 3, "note": "", "at": None, "data": ["[1]", "null"], "day": dt.date(1999, 1, 2),
         "flag": None, "amount": Decimal("-0.01"), "count": -7},
    ]
    columns = [Column("id", BigInteger, primary_key=True), Column("note", String(100)),
               Column("at", DateTime), Column("data", JSON), Column("day", Date),
               Column("flag", Boolean), Column("amount", Numeric(10, 2)),
               Column("count", BigInteger)]
    with db.begin() as conn:
        with temporary_table(conn, "probe", columns, rows) as probe:
            back = [dict(row._mapping) for row in conn.execute(select(probe).order_by(probe.c.id))]
            later = conn.execute(select(probe.c.id).where(
                probe.c.at > dt.datetime(2026, 11, 26, 1, 25, 13, 100000))).scalars().all()
            # SQLite compares DATETIME as text: a value stored in another format than the
            # bound one would fall out of this comparison.
            from_first = conn.execute(select(probe.c.id).where(probe.c.at >= rows[0]["at"])
                                      .order_by(probe.c.id)).scalars().all()
    if db.caps.is_mysql:  # DATETIME without fractional seconds on MySQL
        rows[1]["at"] = rows[1]["at"].replace(microsecond=0)
    assert back == rows
    assert later == ([] if db.caps.is_mysql else [2])
    assert from_first == [1, 2]


@pytest.mark.parametrize("db_url", ["mariadb", "mariadb-mysqlclient"], indirect=True)
def test_a_temporary_table_refuses_a_value_its_column_would_refuse(db):
    # The values reach the table's columns as literals would, under the same strict rules.
    for bad in ({"id": 1, "code": "toolong", "at": None},
                {"id": 1, "code": "ok", "at": "not a time"}):
        with pytest.raises(DBAPIError):
            with db.begin() as conn:
                with temporary_table(conn, "probe", [
                        Column("id", BigInteger, primary_key=True), Column("code", String(3)),
                        Column("at", DateTime)], [bad]):
                    pass


@pytest.mark.parametrize("db_url", EVERY_BACKEND, indirect=True)
def test_a_temporary_table_takes_rows_beyond_one_statement_and_bytes(db):
    # Rows of more text than one JSON document carries go in several; bytes, which JSON
    # cannot carry, are bound by the driver.
    long_rows = [(i, "é" * 5000, None) for i in range(1, 301)]
    rows = [(1, "a", b"\x00\xff'"), (2, None, None)]
    def columns():
        return [Column("id", BigInteger, primary_key=True), Column("note", Text),
                Column("blob", LargeBinary)]

    with db.begin() as conn:
        with temporary_table(conn, "probe", columns(), long_rows) as probe:
            long_back = conn.execute(select(probe.c.id, probe.c.note).order_by(probe.c.id)).all()
        with temporary_table(conn, "probe", columns(), rows) as probe:
            bytes_back = conn.execute(select(probe).order_by(probe.c.id)).all()
    assert long_back == [(i, note) for i, note, _blob in long_rows]
    assert [tuple(row) for row in bytes_back] == rows


def test_update_each_stays_inside_the_callers_transaction(db):
    # MySQL commits the open transaction on a plain DROP TABLE, even of a temporary table.
    _seed(db)
    before = _names(db)
    with db.engine.connect() as conn:
        transaction = conn.begin()
        update_each(conn, divisions, divisions.c.id, {1: {"name_en": "x"}, 2: {"name_en": "y"}})
        update_each(conn, divisions, divisions.c.id, {3: {"name_en": "z"}})  # the table again
        transaction.rollback()
    assert _names(db) == before


def test_a_pinned_database_runs_every_transaction_on_one_connection(db):
    def connection_of(conn):
        return id(conn.connection.dbapi_connection)

    with db.pinned():
        first = db.run(connection_of)
        assert db.run(connection_of, write=False) == first
        # A transaction opened inside another one (a heartbeat) takes a connection of its own.
        assert db.run(lambda conn: db.run(connection_of, write=False)) != first


@pytest.mark.mariadb
def test_a_pinned_connection_the_server_killed_reconnects_on_the_next_transaction(mariadb_url):
    from ops_lib.db import connect

    db = connect(mariadb_url)
    try:
        with db.pinned():
            victim = db.run(lambda conn: conn.execute(text("SELECT CONNECTION_ID()")).scalar())
            with db.engine.connect() as other:
                other.execute(text(f"KILL {int(victim)}"))
            # The first statement on the dead connection fails as transient and is retried.
            after = db.run(lambda conn: conn.execute(text("SELECT CONNECTION_ID()")).scalar())
        assert after != victim
    finally:
        db.engine.dispose()


@pytest.mark.mariadb
def test_a_connection_lost_inside_update_each_is_retried_and_updates_once(mariadb_url):
    from sqlalchemy import event

    from ops_lib.db import connect

    db = connect(mariadb_url)
    _seed(db)
    killed = []

    def kill_before_the_update(conn, _cursor, statement, *_args):
        if statement.startswith("UPDATE divisions") and not killed:
            victim = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
            with db.engine.connect() as other:
                other.execute(text(f"KILL {int(victim)}"))
            killed.append(victim)

    event.listen(db.engine, "before_cursor_execute", kill_before_the_update)
    try:
        with db.pinned():
            matched = db.run(lambda conn: update_each(
                conn, divisions, divisions.c.id, {1: {"name_en": "one"}, 2: {"name_en": "two"}}))
            # The same pinned connection goes on working (its temporary table was recreated).
            again = db.run(lambda conn: update_each(
                conn, divisions, divisions.c.id, {3: {"name_en": "three"}}))
    finally:
        event.remove(db.engine, "before_cursor_execute", kill_before_the_update)
        db.engine.dispose()
    assert killed and (matched, again) == (2, 1)
    assert [r.name_en for r in _names(db)][:3] == ["one", "two", "three"]
