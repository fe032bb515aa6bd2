"""The watermark of each exported table, and the window of rows one run exports.

A run exports the rows whose cursor `(time, key...)` is after the watermark and whose time is
before the run's *bound*; the next run starts where this one's last row was. Nothing is lost:

- The bound and the rows come from one consistent snapshot (`Database.snapshot`: REPEATABLE
  READ and START TRANSACTION WITH CONSISTENT SNAPSHOT on MySQL/MariaDB, one read transaction on
  SQLite). Airbyte's MySQL source takes MAX(cursor) and the rows in two snapshots and loses the
  rows committed in between.
- The bound is at most now minus `export_lag_seconds` and at most the start of the oldest open
  transaction (information_schema.INNODB_TRX, where the user may read it): a transaction stamps
  `updated_at` when it writes and commits later, so a row stamped before the bound but committed
  after the snapshot would otherwise fall below the next run's watermark for good. Every row
  with a time before the bound is committed when the bound is taken ("settled"): a reader with
  connections of its own (another snapshot) that reads exactly the window `after(watermark) AND
  time < bound` sees the same rows, newer versions of rows changed since aside (they carry a
  newer time and are exported by the next run as well).
- Rows sharing a time with the watermark are told apart by the key: `(time, key) > watermark`,
  neither lost nor exported twice, also when a run stops in the middle of a second.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Date, Table, and_, func, or_, select
from sqlalchemy.exc import DBAPIError

from ...db import Capabilities, describe_db_error
from ...schema import ops_export_watermarks as marks
from ...sqlutil import upsert
from ...timeutil import utcnow
from .tables import Export


@dataclass(frozen=True)
class Watermark:
    """The last exported row's cursor: its time and key. `at` None: nothing exported yet."""

    at: dt.datetime | None = None
    key: tuple = ()
    last_run_id: str | None = None

    @property
    def empty(self) -> bool:
        return self.at is None

    def as_dict(self) -> dict[str, Any] | None:
        if self.empty:
            return None
        return {"at": self.at.isoformat(), "key": [_json_value(v) for v in self.key]}

    def __str__(self) -> str:
        if self.empty:
            return "the beginning"
        return f"{self.at.isoformat(' ')} key {', '.join(str(_json_value(v)) for v in self.key)}"


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value


def _key_from_json(export: Export, text: str | None) -> tuple:
    if not text:
        return ()
    values = json.loads(text)
    return tuple(dt.date.fromisoformat(v) if isinstance(c.type, Date) else v
                 for c, v in zip(export.key, values))


def read_watermark(conn: Connection, export: Export) -> Watermark:
    row = conn.execute(select(marks.c.watermark_at, marks.c.watermark_key, marks.c.last_run_id)
                       .where(marks.c.table_name == export.name)).first()
    if row is None or row.watermark_at is None:
        return Watermark(last_run_id=row.last_run_id if row is not None else None)
    return Watermark(row.watermark_at, _key_from_json(export, row.watermark_key),
                     row.last_run_id)


def save_watermark(conn: Connection, export: Export, mark: Watermark, rows: int) -> None:
    """Move the table's watermark (after its batch is published)."""
    values = {"table_name": export.name, "watermark_at": mark.at,
              "watermark_key": json.dumps([_json_value(v) for v in mark.key]),
              "last_run_id": mark.last_run_id, "last_rows": rows, "updated_at": utcnow()}
    upsert(conn, marks, [values], ["table_name"],
           lambda _table, new: {c: new[c] for c in values if c != "table_name"})


def after(columns: list, values: tuple):
    """`(c0, c1, ...) > (v0, v1, ...)`, written out as ORs of equalities and one `>`, the form
    every server turns into a range of the cursor's index."""
    return or_(*[and_(*[columns[j] == values[j] for j in range(i)], columns[i] > values[i])
                 for i in range(len(columns))])


@dataclass
class Window:
    """The rows one run exports: cursor after `start`, time before `bound` (exclusive)."""

    start: Watermark
    bound: dt.datetime
    now: dt.datetime
    lag_seconds: int
    full_refresh: bool = False
    held_back_by: str | None = None
    notes: list[str] = field(default_factory=list)

    def where(self, export: Export, table: Table):
        """The window's condition on `table` (the hot table or its archive, same columns)."""
        time = table.c[export.cursor]
        conditions = [time < self.bound]
        if not self.start.empty:
            columns = [time, *[table.c[c.name] for c in export.key]]
            conditions.append(after(columns, (self.start.at, *self.start.key)))
        return and_(*conditions)


def oldest_open_transaction(conn: Connection) -> tuple[dt.datetime | None, str | None]:
    """The start of the oldest transaction open on the server besides this one, and what to
    say about it; (None, note) when the user may not read INNODB_TRX (PROCESS privilege)."""
    try:
        row = conn.exec_driver_sql(
            "SELECT trx_started, trx_mysql_thread_id FROM information_schema.INNODB_TRX "
            "WHERE trx_mysql_thread_id <> CONNECTION_ID() ORDER BY trx_started LIMIT 1").first()
    except DBAPIError as exc:
        return None, (f"cannot read information_schema.INNODB_TRX ({describe_db_error(exc)}): "
                      "the bound is now minus export_lag_seconds alone; grant PROCESS to the "
                      "export's user, or keep the lag above the longest transaction")
    if row is None:
        return None, None
    return row[0], f"a transaction open since {row[0].isoformat(' ')} (thread {row[1]})"


def take_window(conn: Connection, caps: Capabilities, start: Watermark, lag_seconds: int,
                full_refresh: bool = False) -> Window:
    """The window of this run, read inside the export's snapshot (`conn`)."""
    if caps.is_mysql:
        now = conn.execute(select(func.utc_timestamp())).scalar_one()
    else:
        now = utcnow()
    window = Window(start=Watermark(last_run_id=start.last_run_id) if full_refresh else start,
                    bound=now - dt.timedelta(seconds=lag_seconds), now=now,
                    lag_seconds=lag_seconds, full_refresh=full_refresh)
    if caps.is_mysql:
        oldest, note = oldest_open_transaction(conn)
        if oldest is None and note:
            window.notes.append(note)
        # A second before it: trx_started and a row's stamp are whole seconds, truncated
        # apart (a statement that began at .999 may start its transaction in the next second).
        oldest = oldest - dt.timedelta(seconds=1) if oldest is not None else None
        if oldest is not None and oldest < window.bound:
            window.bound = oldest
            window.held_back_by = note
            window.notes.append(f"bound held back to {oldest.isoformat(' ')} by {note}: its "
                                "rows may still commit with an earlier time")
    else:
        window.notes.append("SQLite shows no open transactions: the bound is now minus "
                            "export_lag_seconds")
    return window
