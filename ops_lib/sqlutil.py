"""Dialect-aware statements the jobs share: insert-or-ignore, upsert and keyed batch updates.

Batches go to the driver as one executemany of a single-row statement: SQLAlchemy compiles it
once (cached) and PyMySQL rewrites it into multi-row INSERTs, where a multi-VALUES statement
would be compiled anew for every batch.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from sqlalchemy import Column, Connection, Table, case, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.sql import ColumnElement, Select


def _insert(conn: Connection, table: Table):
    return (mysql.insert if conn.dialect.name == "mysql" else sqlite.insert)(table)


def _ignore_duplicates(conn: Connection, statement, keys: Sequence[str]):
    if conn.dialect.name == "mysql":
        # A no-op update rather than INSERT IGNORE, which would also swallow other errors.
        first = keys[0]
        return statement.on_duplicate_key_update({first: statement.inserted[first]})
    return statement.on_conflict_do_nothing(index_elements=list(keys))


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict], keys: Sequence[str]) -> int:
    """Insert rows, skipping those whose unique `keys` already exist. Returns rows offered."""
    if rows:
        conn.execute(_ignore_duplicates(conn, _insert(conn, table), keys), list(rows))
    return len(rows)


def insert_ignore_from_select(conn: Connection, table: Table, columns: Sequence[str],
                              query: Select, keys: Sequence[str]) -> None:
    """INSERT ... SELECT, skipping rows whose unique `keys` already exist."""
    statement = _insert(conn, table).from_select(list(columns), query)
    conn.execute(_ignore_duplicates(conn, statement, keys))


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
    statement = _insert(conn, table)
    if conn.dialect.name == "mysql":
        statement = statement.on_duplicate_key_update(
            list(updates(table, statement.inserted).items()))
    else:
        statement = statement.on_conflict_do_update(
            index_elements=list(keys), set_=updates(table, statement.excluded))
    conn.execute(statement, list(rows))


def update_each(conn: Connection, table: Table, key: Column, per_row: Mapping[Any, dict],
                common: dict | None = None, where: Sequence[ColumnElement[bool]] = ()) -> int:
    """One UPDATE for many rows, each with its own values (CASE key WHEN ... THEN ...)."""
    if not per_row:
        return 0
    columns = sorted({name for values in per_row.values() for name in values})
    sets: dict[str, Any] = dict(common or {})
    for name in columns:
        sets[name] = case({k: v[name] for k, v in per_row.items() if name in v},
                          value=key, else_=table.c[name])
    statement = update(table).where(key.in_(list(per_row)), *where).values(sets)
    return conn.execute(statement).rowcount
