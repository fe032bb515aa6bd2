"""The rows of a window, streamed from the server in chunks: memory stays flat however many.

Two readers, chosen by the `export_reader` setting (`auto`: connectorx when installed):
- PyMySQL (and SQLite) through SQLAlchemy, inside the export's own snapshot, from an unbuffered
  server-side cursor (`stream_results`), `chunk_rows` DB-API rows at a time;
- connectorx (the optional `[fast]` extra), which reads the server's rows straight into Arrow
  record batches in Rust: 7-10x faster end to end (benchmarks/bench_warehouse_export.py). It
  opens connections of its own, so it reads in a later snapshot than the one the window was
  taken in; that gives the same rows because every row with a time before the window's bound
  was committed when the bound was taken (window.py), and a row changed since carries a newer
  time, outside this window and inside the next run's.

Both walk the window in keyset order, `ORDER BY time, key...`, a page of `page_rows` per
statement, each page after the last row of the one before: a run that stops early has exported
a prefix of the window, whose last row is the next watermark, and leaves at most the rest of one
page unread (an unbuffered cursor drains it when it closes).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import queue
import threading
from dataclasses import replace
from typing import Any, Iterator, Sequence

from sqlalchemy import Connection, func, literal_column, select, union_all
from sqlalchemy.engine import make_url

from .tables import Export
from .window import Watermark, Window

CHUNK_ROWS = 10_000  # DB-API rows handed to the writer at a time
ARROW_BATCH_ROWS = 50_000  # rows of one connectorx record batch
PAGE_ROWS = 200_000  # rows of one statement


def choose_reader(setting: str, is_mysql: bool) -> str:
    """"connectorx" or "pymysql" on MySQL/MariaDB ("auto": connectorx when it is installed);
    "sqlite" on SQLite."""
    if not is_mysql:
        return "sqlite"
    if setting == "auto":
        return "connectorx" if importlib.util.find_spec("connectorx") else "pymysql"
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


def last_row(batch) -> tuple:
    """The last row of an Arrow record batch, as Python values."""
    return tuple(column[len(batch) - 1].as_py() for column in batch.columns)


def connectorx_url(url: str) -> str:
    """connectorx's connection string for an SQLAlchemy MySQL URL (driver and options off)."""
    parsed = make_url(url)
    return parsed.set(drivername="mysql", query={}).render_as_string(hide_password=False)


def stream_window_arrow(url: str, dialect: Any, export: Export, window: Window,
                        page_rows: int = PAGE_ROWS, batch_rows: int = ARROW_BATCH_ROWS
                        ) -> Iterator[Any]:
    """Every row of the window as Arrow record batches, in keyset order, read by connectorx on
    connections of its own (see the module's docstring for why that gives the same rows)."""
    import connectorx

    positions = [export.columns.index(c.name) for c in export.cursor_columns]
    source = connectorx_url(url)
    start = window.start
    while True:
        statement = rows_statement(export, replace(window, start=start), page_rows)
        sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        batches = connectorx.read_sql(source, sql, return_type="arrow_stream",
                                      batch_size=batch_rows,
                                      pre_execution_query="SET time_zone = '+00:00'")
        read, last = 0, None
        for batch in batches:
            if not len(batch):
                continue
            read += len(batch)
            last = batch
            yield batch
        if read < page_rows:
            return
        start = cursor_of(last_row(last), positions)


def count(conn: Connection, export: Export, window: Window) -> int:
    return sum(conn.execute(select(func.count()).select_from(source.subquery())).scalar_one()
               for source in _sources(export, window))


def partition_value(conn: Connection, column, by: str):
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
        key = partition_value(conn, rows.c[export.partition], by).label("part")
        per_part = select(key, func.count()).group_by(literal_column("part"))
        for part, number in conn.execute(per_part):
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


@functools.lru_cache(maxsize=None)
def _malloc_trim():
    """glibc's malloc_trim, or None (another C library: musl, macOS, Windows)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc; elsewhere nothing).

    connectorx builds each page's record batches on threads of its own, and glibc gives every
    thread its own heap ("arena") and keeps what is freed there: the peak grew with the pages
    read (2M rows 13 % above 1M) while Arrow's own memory stayed flat. malloc_trim(0) returns
    the free pages of every arena; it takes under a millisecond."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_END = object()


def prefetched(chunks: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """`chunks`, read ahead by `depth` in a thread of their own: the next batch comes off the
    wire (connectorx and Arrow release the GIL) while the writer encodes this one. Memory holds
    at most `depth` + 2 chunks; an error in the reading thread is raised here; closing this
    generator stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    thread = threading.Thread(target=read, name="export-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
