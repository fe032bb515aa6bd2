"""Dialect-aware statements the jobs share: insert-or-ignore and upsert, on MySQL and SQLite."""

from __future__ import annotations

from typing import Callable, Sequence

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.sql import ColumnElement, Select


def _insert(conn: Connection, table: Table):
    return (mysql.insert if conn.dialect.name == "mysql" else sqlite.insert)(table)


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict], keys: Sequence[str]) -> int:
    """Insert rows, skipping those whose unique `keys` already exist. Returns rows inserted."""
    if not rows:
        return 0
    statement = _insert(conn, table)
    if conn.dialect.name == "mysql":
        # A no-op update rather than INSERT IGNORE, which would also swallow other errors.
        first = keys[0]
        statement = statement.on_duplicate_key_update({first: statement.inserted[first]})
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(keys))
    if len(rows) == 1:
        return conn.execute(statement.values(rows[0])).rowcount
    return conn.execute(statement.values(list(rows))).rowcount


def insert_ignore_from_select(conn: Connection, table: Table, columns: Sequence[str],
                              query: Select, keys: Sequence[str]) -> int:
    """INSERT ... SELECT, skipping rows whose unique `keys` already exist."""
    statement = _insert(conn, table).from_select(list(columns), query)
    if conn.dialect.name == "mysql":
        first = keys[0]
        statement = statement.on_duplicate_key_update({first: statement.inserted[first]})
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(keys))
    return conn.execute(statement).rowcount


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[dict],
    keys: Sequence[str],
    updates: Callable[[Table, object], dict[str, ColumnElement]],
) -> None:
    """Insert rows, or update the existing ones: `updates(table, incoming)` gives SET expressions.

    `incoming` is the row that was offered (MySQL's VALUES()/inserted, SQLite's excluded). On
    MySQL the SET clauses run left to right, each seeing the ones before: order them with care.
    """
    if not rows:
        return
    statement = _insert(conn, table).values(list(rows))
    if conn.dialect.name == "mysql":
        statement = statement.on_duplicate_key_update(list(updates(table, statement.inserted).items()))
    else:
        statement = statement.on_conflict_do_update(
            index_elements=list(keys), set_=updates(table, statement.excluded)
        )
    conn.execute(statement)
