"""The job registry: each `cron_jobs.job_type` the toolkit runs, and its handler.

A handler is one function `handler(conn, call) -> rows affected` doing ONE batch of its work in the
caller's transaction: one set-based statement of at most `call.batch_size` rows. The stage calls
it again, each batch its own transaction, until a batch affects fewer rows than that; the last
batch commits together with the slot's `cron_job_runs` row and the job's `last_run_at`. So every
batch must be idempotent: a batch that ran and whose slot was then not recorded (a crash, another
worker recording the slot first) may run again.

Adding a job type is one function and one line in HANDLERS. A handler built with `RowsWhere`
also tells the dry run how many rows it would touch (`preview`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Protocol

from sqlalchemy import Connection, Table, and_, delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ColumnElement

from ...db import privilege_problem
from ...schema import password_reset_codes, pending_registrations, user_sessions


@dataclass(frozen=True)
class JobCall:
    """What a handler is told: which job, for which slot, as of when, and its batch size."""

    job_id: int
    name: str
    job_type: str
    user_id: int | None
    slot_at: dt.datetime
    now: dt.datetime
    batch_size: int


class Handler(Protocol):
    def __call__(self, conn: Connection, call: JobCall) -> int: ...


@dataclass(frozen=True)
class RowsWhere:
    """A handler that deletes (or updates with `values`) the rows `where(call)` picks, a batch at
    a time; its dry run counts them."""

    table: Table
    where: Callable[[JobCall], ColumnElement[bool]]
    values: dict | None = None  # None: delete the rows
    doc: str = ""

    def __call__(self, conn: Connection, call: JobCall) -> int:
        return conn.execute(_limited(conn, self.table, self.where(call), call.batch_size,
                                     self.values)).rowcount

    def preview(self, conn: Connection, call: JobCall) -> int:
        return conn.execute(select(func.count()).select_from(self.table)
                            .where(self.where(call))).scalar_one()

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        return self.doc


def _limited(conn: Connection, table: Table, where: ColumnElement[bool], limit: int,
             values: dict | None):
    """One statement touching at most `limit` rows matching `where`.

    MySQL/MariaDB: `DELETE/UPDATE ... LIMIT n` (they refuse LIMIT inside an IN subquery);
    SQLite: `... WHERE id IN (SELECT id ... LIMIT n)` (it has no LIMIT on DELETE/UPDATE).
    """
    statement = delete(table) if values is None else update(table).values(**values)
    if conn.dialect.name == "mysql":
        return statement.where(where).with_dialect_options(mysql_limit=limit)
    ids = select(table.c.id).where(where).limit(limit).scalar_subquery()
    return statement.where(table.c.id.in_(ids))


def _of_user(table: Table, call: JobCall) -> list[ColumnElement[bool]]:
    """A job naming a user works on that user's rows only."""
    return [] if call.user_id is None else [table.c.user_id == call.user_id]


def noop(conn: Connection, call: JobCall) -> int:
    """Does nothing (a test of the scheduling itself)."""
    return 0


_codes, _registrations, _sessions = (password_reset_codes.c, pending_registrations.c,
                                     user_sessions.c)

HANDLERS: dict[str, Handler] = {
    "noop": noop,
    "expire_password_reset_codes": RowsWhere(
        password_reset_codes,
        lambda call: and_(_codes.expires_at < call.now, *_of_user(password_reset_codes, call)),
        doc="deletes password-reset codes past their expires_at (used or not)"),
    "expire_pending_registrations": RowsWhere(
        pending_registrations,
        lambda call: and_(_registrations.status == "pending", _registrations.expires_at < call.now),
        values={"status": "expired"},
        doc="marks pending registrations past their expires_at 'expired' (rows kept)"),
    "purge_expired_sessions": RowsWhere(
        user_sessions,
        lambda call: and_(_sessions.expires_at < call.now, *_of_user(user_sessions, call)),
        doc="deletes user sessions past their expires_at"),
}


def describe(job_type: str) -> str:
    """One line saying what a job type does (the support tool's list)."""
    handler = HANDLERS.get(job_type)
    if handler is None:
        return "unknown job type"
    return ((handler.__doc__ or "").strip().splitlines() or [job_type])[0]


def preview(conn: Connection, job_type: str, call: JobCall) -> int | None:
    """Rows the job would touch now, where its handler can tell (None: it cannot)."""
    counter = getattr(HANDLERS.get(job_type), "preview", None)
    if counter is None:
        return None
    try:
        return counter(conn, call)
    except DBAPIError as exc:
        # A dry run under the monitor's login, which never reads the web app's credentials.
        if privilege_problem(exc) is None:
            raise
        return None
