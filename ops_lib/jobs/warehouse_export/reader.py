"""The rows of a window, streamed from the server in chunks: memory stays flat however many.

The statement walks the cursor's index in keyset order, `ORDER BY time, key...`, so a run that
stops early (budget, signal) has exported a prefix of the window and its last row is the next
watermark. The server streams the rows (SQLAlchemy `stream_results`: PyMySQL's and mysqlclient's
unbuffered cursors); the reader takes them `chunk_rows` at a time.

Reading speed is the driver's (benchmarks/bench_warehouse_export.py): mysqlclient, the C driver
of the optional `[fast]` extra, with DATETIME parsed by `datetime.fromisoformat`, is several
times faster than PyMySQL, which stays the fallback (`export_driver`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Iterator, Sequence

from sqlalchemy import Connection, func, literal_column, select, union_all

from ...db import mysqlclient_available
from .tables import Export
from .window import Watermark, Window

CHUNK_ROWS = 10_000
PAGE_ROWS = 200_000


def choose_driver(setting: str) -> str:
    """The driver the export reads MySQL/MariaDB with: the `export_driver` setting, `auto`
    being mysqlclient when it is installed."""
    if setting == "auto":
        return "mysqlclient" if mysqlclient_available() else "pymysql"
    return setting


def _sources(export: Export, window: Window, limit: int | None = None) -> list:
    """One SELECT per table the rows live in: the hot table and, where the archive moves rows
    out, its archive (same columns, archived_at left out); each in keyset order up to `limit`."""
    tables = [export.table] + ([export.archive] if export.archive is not None else [])
    sources = []
    for table in tables:
        source = select(*[table.c[name] for name in export.columns]) \
            .where(window.where(export, table))
        if limit is not None:
            source = source.order_by(*[table.c[c.name] for c in export.cursor_columns]) \
                .limit(limit)
        sources.append(source)
    return sources


def rows_statement(export: Export, window: Window, limit: int):
    """The window's first `limit` rows, in keyset order."""
    sources = _sources(export, window, limit)
    order = [c.name for c in export.cursor_columns]
    if len(sources) == 1:
        return sources[0]
    union = union_all(*[select(*s.subquery().c) for s in sources]).subquery("rows")
    return select(*union.c).order_by(*[union.c[name] for name in order]).limit(limit)


def stream_window(conn: Connection, export: Export, window: Window, page_rows: int = PAGE_ROWS,
                  chunk_rows: int = CHUNK_ROWS) -> Iterator[Sequence[Sequence]]:
    """Every row of the window, in keyset order, `chunk_rows` at a time.

    Read a page of `page_rows` per statement, each page after the last row of the one before
    (all in the caller's snapshot): a reader that stops early leaves at most the rest of one
    page unread, which an unbuffered cursor must still drain when it closes.
    """
    positions = [export.columns.index(c.name) for c in export.cursor_columns]
    start = window.start
    while True:
        page = replace(window, start=start)
        read = 0
        last = None
        for chunk in stream(conn, rows_statement(export, page, page_rows), chunk_rows):
            read += len(chunk)
            last = chunk[-1]
            yield chunk
        if read < page_rows:
            return
        start = cursor_of(last, positions)


def cursor_of(row: Sequence, positions: list[int], run_id: str | None = None) -> Watermark:
    """The watermark a row's cursor columns make."""
    return Watermark(row[positions[0]], tuple(row[p] for p in positions[1:]), run_id)


def count(conn: Connection, export: Export, window: Window) -> int:
    return sum(conn.execute(select(func.count()).select_from(source.subquery())).scalar_one()
               for source in _sources(export, window))


def partition_key(conn: Connection, column, by: str):
    """The partition value of `column` as text: 'YYYY-MM' by month, 'YYYY-MM-DD' by day."""
    if conn.dialect.name == "mysql":
        return func.date_format(column, "%Y-%m" if by == "month" else "%Y-%m-%d")
    return func.strftime("%Y-%m" if by == "month" else "%Y-%m-%d", column)


def partition_counts(conn: Connection, export: Export, window: Window,
                     by: str) -> dict[str, int]:
    """Rows per partition value ('2026-11' or '2026-11-28'), in order: one GROUP BY per table."""
    counts: dict[str, int] = {}
    for source in _sources(export, window):
        rows = source.subquery()
        key = partition_key(conn, rows.c[export.partition], by).label("part")
        for part, number in conn.execute(select(key, func.count()).group_by(literal_column("part"))):
            counts[part] = counts.get(part, 0) + number
    return dict(sorted(counts.items()))


def stream(conn: Connection, statement, chunk_rows: int = CHUNK_ROWS
           ) -> Iterator[Sequence[Sequence]]:
    """The statement's rows, `chunk_rows` at a time, from an unbuffered (server-side) cursor."""
    result = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows) \
        .execute(statement)
    try:
        while True:
            chunk = result.fetchmany(chunk_rows)
            if not chunk:
                return
            yield chunk
    finally:
        result.close()


def as_partition_value(value) -> dt.date | None:
    """A partition column's value as a date (a date-time's day)."""
    if isinstance(value, dt.datetime):
        return value.date()
    return value
