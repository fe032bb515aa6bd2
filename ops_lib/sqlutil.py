"""Dialect-aware statements the jobs share: insert-or-ignore, upsert and keyed batch updates.

Batches of rows go in as one statement: on MySQL/MariaDB one JSON document (json.dumps, C)
read by JSON_TABLE, elsewhere one DB-API executemany of a single-row statement, which the
driver makes one multi-row INSERT; a multi-VALUES statement would be compiled anew per batch.
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import contextmanager, suppress
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping, Sequence

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    MetaData,
    Table,
    bindparam,
    exists,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.sql import ColumnElement, Select


# Beyond this many runs of consecutive keys, a list is cheaper than the ranges.
MAX_KEY_RANGES = 16


def in_keys(column: Column, keys: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN keys` for a batch of integer keys, as ranges where they run on.

    A claimed batch is mostly one run (`id BETWEEN 1 AND 5000`): two values instead of
    thousands, and a range that names only the batch's rows. Keys that do not run on are
    written into the SQL (literal_execute), not bound one by one: PyMySQL escaping thousands
    of parameters cost more than the server's work.
    """
    values = sorted(set(keys))
    if values and all(type(v) is int for v in values):
        runs = _runs(values)
        if len(runs) <= MAX_KEY_RANGES:
            return or_(*(column == first if first == last else column.between(first, last)
                         for first, last in runs))
    return column.in_(bindparam("keys", values, unique=True, literal_execute=True))


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs = [[values[0], values[0]]]
    for value in values[1:]:
        if value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return [(first, last) for first, last in runs]


def render_sql(statement, dialect) -> str:
    """`statement` as one line of SQL with its values inlined, as a dry run shows it."""
    return " ".join(str(statement.compile(dialect=dialect,
                                          compile_kwargs={"literal_binds": True})).split())


def force_index(query: Select, table: Table, index: str) -> Select:
    """`query` reading `table` through `index` on MySQL/MariaDB (other databases choose)."""
    for dialect in ("mysql", "mariadb"):
        query = query.with_hint(table, f"FORCE INDEX ({index})", dialect)
    return query


def _insert(conn: Connection, table: Table):
    # Only the connected database's dialect is imported (each is 7-13 ms at start-up).
    if conn.dialect.name == "mysql":
        from sqlalchemy.dialects.mysql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)


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


def _on_conflict_update(conn: Connection, statement, keys: Sequence[str],
                        updates: Callable[[Table, object], dict[str, ColumnElement]]):
    table = statement.table
    if conn.dialect.name == "mysql":
        return statement.on_duplicate_key_update(list(updates(table, statement.inserted).items()))
    return statement.on_conflict_do_update(index_elements=list(keys),
                                           set_=updates(table, statement.excluded))


def upsert_from_select(conn: Connection, table: Table, columns: Sequence[str], query: Select,
                       keys: Sequence[str],
                       updates: Callable[[Table, object], dict[str, ColumnElement]]) -> None:
    """INSERT ... SELECT, updating the rows whose unique `keys` exist (see upsert)."""
    statement = _insert(conn, table).from_select(list(columns), query)
    conn.execute(_on_conflict_update(conn, statement, keys, updates))


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
    conn.execute(_on_conflict_update(conn, _insert(conn, table), keys, updates), list(rows))


def update_each(conn: Connection, table: Table, key: Column, per_row: Mapping[Any, dict],
                common: dict | None = None, where: Sequence[ColumnElement[bool]] = ()) -> int:
    """One UPDATE for many rows, each with its own values; returns the rows it matched.

    The values go into a temporary table (one multi-row INSERT) that the UPDATE joins. A
    `CASE key WHEN ...` per column would have SQLAlchemy build and bind thousands of parameters
    per call: 2.5x slower for 2,000 rows on MariaDB.
    """
    by_columns: dict[tuple[str, ...], dict[Any, dict]] = {}
    for row_key, values in per_row.items():
        by_columns.setdefault(tuple(sorted(values)), {})[row_key] = values
    return sum(_update_from_values(conn, table, key, columns, rows, common or {}, where)
               for columns, rows in by_columns.items())


def _update_from_values(conn: Connection, table: Table, key: Column, columns: Sequence[str],
                        rows: Mapping[Any, dict], common: dict,
                        where: Sequence[ColumnElement[bool]]) -> int:
    definition = [Column(key.name, key.type, primary_key=True),
                  *[Column(name, table.c[name].type) for name in columns]]
    with temporary_table(conn, f"each_{table.name}", definition,
                         [{key.name: k, **v} for k, v in rows.items()]) as values:
        return update_from(
            conn, table, values, key == values.c[key.name],
            lambda new: [*common.items(), *((name, new[name]) for name in columns)], where)


def update_from(conn: Connection, table: Table, source: Table, match: ColumnElement[bool],
                values: Callable[[Any], Sequence[tuple[Any, Any]]],
                where: Sequence[ColumnElement[bool]] = ()) -> int:
    """UPDATE the rows of `table` that `match` a row of `source` (one each at most); returns
    the rows matched.

    `values(new)` gives the SET pairs, in order, where `new.<column>` (or `new["column"]`) is
    the matching source row's value. MySQL: a multi-table UPDATE, which assigns left to right
    as it joins (or, buffering, from the old row: either way an expression first in the list
    reads the old values). SQLite (no UPDATE ... FROM before 3.33): each source value is a
    correlated subquery, and every expression reads the old values.
    """
    if conn.dialect.name == "mysql":
        new: Any = source.c
        condition = match
    else:
        new = _Correlated(source, match)
        condition = exists(select(literal(1)).select_from(source).where(match))
    return conn.execute(
        update(table).where(condition, *where).ordered_values(*values(new))).rowcount


class _Correlated:
    """A source row's columns as correlated scalar subqueries (SQLite's update_from)."""

    def __init__(self, source: Table, match: ColumnElement[bool]):
        self.source, self.match = source, match

    def __getitem__(self, name: str):
        return select(self.source.c[name]).where(self.match).scalar_subquery()

    __getattr__ = __getitem__


def _insert_many(conn: Connection, table: Table, rows: Sequence[Mapping | Sequence]) -> None:
    """`rows` (mappings, or tuples in the table's column order) into `table`: on MySQL/MariaDB
    as one JSON document, elsewhere as one DB-API executemany of tuples (the drivers make it
    one multi-row INSERT). SQLAlchemy's own executemany processes every row's parameters in
    Python first: a fifth of the worker's time in its batches' temporary tables. Each column's
    own bind processor (JSON's serialising, for one) still converts its values."""
    columns = list(table.columns)
    if isinstance(rows[0], Mapping):
        rows = [tuple(row.get(c.name) for c in columns) for row in rows]
    dialect = conn.dialect  # the dialect's own type: SQLite's DATETIME is text in its format
    if dialect.name == "mysql" and _insert_from_json(conn, table, rows):
        return
    if dialect.paramstyle not in ("format", "pyformat", "qmark"):
        conn.execute(insert(table), [dict(zip((c.name for c in columns), row)) for row in rows])
        return
    into, marker = _insert_into(dialect, table)
    statement = f"{into} VALUES ({', '.join(marker for _ in columns)})"
    rows = _converted(rows, [c.type.dialect_impl(dialect).bind_processor(dialect)
                             for c in columns])
    conn.exec_driver_sql(statement, list(rows))


def _insert_into(dialect, table: Table) -> tuple[str, str]:
    """`INSERT INTO table (its columns)`, and the driver's parameter marker."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c.name) for c in table.columns)
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    return f"INSERT INTO {quote(table.name)} ({names})", marker


def _converted(rows: Sequence[tuple], converters: Sequence[Callable[[Any], Any] | None]):
    """`rows` with each column's converter (None: none) applied to its values."""
    if not any(converters):
        return rows
    return [tuple(convert(value) if convert else value for convert, value in zip(converters, row))
            for row in rows]


# A JSON document of rows this long (characters) at most per statement: well under the
# server's max_allowed_packet (16 MB on MariaDB, 64 MB on MySQL 8) at 4 bytes a character,
# twice that where the driver escapes a quote or backslash of the literal.
MAX_JSON_ROWS_TEXT = 1_000_000


def _insert_from_json(conn: Connection, table: Table, rows: Sequence[tuple]) -> bool:
    """`rows` into `table` as `INSERT ... SELECT ... FROM JSON_TABLE(<one JSON parameter>)`
    (MySQL 8, MariaDB 10.6+). Returns False, having written nothing, for values JSON cannot
    carry (bytes): the caller binds them instead.

    json.dumps writes the whole batch in C, where both drivers format every value of a
    multi-row INSERT in Python (MySQLdb's datetime literals: a fifth of the worker's CPU in
    its scans). Each value reaches the table's column as text, as a literal would: cut,
    rounded or refused there, by the same rules. A Python bool becomes 1 or 0 in a Boolean
    column only; in another column its JSON text (`true`) is refused, where a driver would
    have bound 1: pass ints there.
    """
    dialect = conn.dialect
    paths, conversions = [], []
    for position, column in enumerate(table.columns):
        kind, convert = _json_column(column, dialect)
        paths.append(f"{_JSON_COLUMN_PREFIX}{position} {kind} PATH '$[{position}]'")
        conversions.append(convert)
    try:
        documents = _json_documents(list(_converted(rows, conversions)))
    except (TypeError, ValueError):  # bytes, NaN: values only the driver can bind
        return False
    into, marker = _insert_into(dialect, table)
    picked = ", ".join(f"{_JSON_COLUMN_PREFIX}{i}" for i in range(len(paths)))
    statement = (f"{into} SELECT {picked} FROM "
                 f"JSON_TABLE({marker}, '$[*]' COLUMNS ({', '.join(paths)})) AS json_rows")
    for document in documents:
        conn.exec_driver_sql(statement, (document,))
    return True


_JSON_COLUMN_PREFIX = "c"


def _json_column(column: Column, dialect) -> tuple[str, Callable[[Any], Any] | None]:
    """The JSON_TABLE type that carries `column`'s values, and the column type's own
    conversion of a value, if it has one (JSON's serialising, an Enum's name)."""
    impl = column.type.dialect_impl(dialect)
    if isinstance(impl, Boolean):
        return "BIGINT", None  # JSON's true and false arrive as 1 and 0
    # Text the column converts as it would a quoted literal: JSON_TABLE's own conversion to a
    # DATETIME or an INT would turn a value the column refuses into a zero, with a warning.
    return "LONGTEXT", impl.bind_processor(dialect)


def _json_documents(rows: list[tuple]) -> list[str]:
    document = json.dumps(rows, default=_json_default, allow_nan=False, ensure_ascii=False,
                          separators=(",", ":"))
    if len(document) <= MAX_JSON_ROWS_TEXT or len(rows) == 1:
        return [document]
    half = len(rows) // 2
    return _json_documents(rows[:half]) + _json_documents(rows[half:])


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        # An aware datetime is written as its wall time, as the drivers write it.
        return value.replace(tzinfo=None).isoformat(" ") if value.tzinfo else value.isoformat(" ")
    if isinstance(value, (dt.date, Decimal)):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no JSON form")


@contextmanager
def temporary_table(conn: Connection, name: str, columns: Sequence[Column],
                    rows: Sequence[Mapping | Sequence]) -> Iterator[Table]:
    """A temporary table of `rows` (mappings, or tuples in the order of `columns`) for the
    statements inside; dropped after.

    Rows go in as one statement (`_insert_many`: a JSON document on MySQL/MariaDB), so a
    set-based statement can join them instead of binding thousands of parameters or shipping
    rows back and forth.
    """
    table = Table(name, MetaData(), *columns, prefixes=["TEMPORARY"],
                  mysql_charset="utf8mb4", mysql_collate="utf8mb4_unicode_ci")
    # TEMPORARY / temp.: never a permanent table of that name. MySQL would also commit the open
    # transaction on a plain DROP TABLE, even of a temporary table.
    if conn.dialect.name == "mysql":
        drop = f"DROP TEMPORARY TABLE IF EXISTS {name}"
    else:
        drop = f"DROP TABLE IF EXISTS temp.{name}"
    conn.exec_driver_sql(drop)  # one a failed statement left on this (pinned) connection
    table.create(conn)
    try:
        if rows:
            _insert_many(conn, table, rows)
        yield table
    except BaseException:
        # A lost connection took its temporary tables with it, and the error that brought us
        # here is the one to report: the next use drops what is left.
        if not conn.invalidated:
            with suppress(Exception):
                conn.exec_driver_sql(drop)
        raise
    conn.exec_driver_sql(drop)
