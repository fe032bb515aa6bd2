"""Claiming queue rows so that concurrent workers never process the same row twice.

A claim is a short transaction: pick ready rows (`FOR UPDATE SKIP LOCKED` where the server has it),
stamp them with the run id and a lease, commit, then work. The stamp is a compare-and-swap
(`... WHERE claimed_by IS NULL`), so on servers without SKIP LOCKED two runs still cannot both win.
Every write-back checks that the run still owns the rows (`still_owned`, or, in the push stage, its
UPDATEs' own `claimed_by = run` and the rows they matched): a row whose lease ran out and another
run took over is counted `lost`, never `done`. Slow work extends the lease as it goes
(`extend_lease`). Rows whose lease expired (a run that died) are released at the start of a run.

Stages whose work stays in the database skip the claim: `lock_ready` locks the batch inside the
transaction that works it and writes its new status (the worker's `LockedBatchStage`).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import Connection, Table, and_, case, func, or_, select, true, tuple_, update
from sqlalchemy.sql import ColumnElement, Select, Subquery

from .db import Database
from .schema import (
    attendance_rollup_queue,
    attendance_scan_queue,
    guardian_snapshot_queue,
    notifications,
    push_deliveries,
    report_email_queue,
)
from .sqlutil import force_index, in_keys
from .timeutil import utcnow


@dataclass(frozen=True)
class Queue:
    """A claimable table: its key columns, what makes a row waiting, done or dead-lettered.

    Status queues keep a finished row (`done` or `failed`, stamped in `finished_at`); marker
    queues (no status column) delete a row once it is done, so only their depth, latency and
    claims can be told.
    """

    name: str  # what operators call it: manage_dead_letters --queue, queue health, settings
    table: Table
    key: tuple[str, ...] = ("id",)
    status_column: str | None = "status"  # None: the row's presence means "waiting"
    waiting: str = "pending"
    counts_attempts: bool = True
    done: tuple[str, ...] = ()  # statuses of a row finished for good
    failed: str | None = None  # status of a dead-lettered row
    finished_at: str | None = None  # column: when a row became done or failed
    became_available: str = "created_at"  # column: when a row (without available_at) was due

    @property
    def has_status(self) -> bool:
        return self.status_column is not None

    @property
    def poll_index(self) -> str:
        """The index that reads the waiting rows in key order: (status, key) of a status queue,
        the primary key of a marker queue (its rows go when done)."""
        if self.status_column is None:
            return "PRIMARY"
        wanted = [self.status_column, *self.key]
        for index in self.table.indexes:
            if [column.name for column in index.columns] == wanted:
                return index.name
        raise LookupError(f"{self.table.name} has no index on ({', '.join(wanted)})")

    def key_of(self, row: Any) -> Any:
        mapping = row._mapping if hasattr(row, "_mapping") else row
        return mapping[self.key[0]] if len(self.key) == 1 else tuple(mapping[k] for k in self.key)

    def keys_of(self, result) -> list[Any]:
        """The keys of a result of the key columns (in key order): ints, or tuples."""
        return result.scalars().all() if len(self.key) == 1 else [tuple(r) for r in result]

    def key_in(self, keys: Sequence[Any]) -> ColumnElement[bool]:
        columns = [self.table.c[k] for k in self.key]
        if len(columns) == 1:
            return in_keys(columns[0], keys)
        return tuple_(*columns).in_(list(keys))

    def is_waiting(self) -> ColumnElement[bool]:
        if self.status_column is None:
            return true()
        return self.table.c[self.status_column] == self.waiting

    def ready(self, now: dt.datetime) -> ColumnElement[bool]:
        c = self.table.c
        return and_(
            self.is_waiting(),
            c.claimed_by.is_(None),
            or_(c.available_at.is_(None), c.available_at <= now),
        )

    def owned_by(self, run_id: str, keys: Sequence[Any]) -> ColumnElement[bool]:
        return and_(self.key_in(keys), self.table.c.claimed_by == run_id)

    def finished_values(self, status: str, now: dt.datetime) -> dict[str, Any]:
        """The values that finish a row as `status` (one of `done`, or `failed`), stamped with
        the time: every path that finishes or dead-letters a row writes them (queue health's
        done last 15 minutes and failed last hour; manage_dead_letters' prune)."""
        if status not in (*self.done, self.failed):
            raise ValueError(f"{self.name}: {status!r} is not a finished status")
        values: dict[str, Any] = {self.status_column: status}
        if self.finished_at:
            values[self.finished_at] = now
        return values

    def dead_letter_values(self, now: dt.datetime) -> dict[str, Any]:
        return self.finished_values(self.failed, now)


@dataclass(frozen=True)
class Held:
    """What the ownership check found: the keys still this run's, and how many were lost."""

    keys: list[Any]
    lost: int


def still_owned(conn: Connection, queue: Queue, run_id: str, keys: Sequence[Any]) -> Held:
    """The ownership check of every claim-then-work write-back: locks the rows of `keys` this
    run still holds (until the transaction ends, so no run can take them before the write-back)
    and returns them; the others were taken over after our lease ran out."""
    if not keys:
        return Held([], 0)
    wanted = sorted(set(keys))
    # Counted first: the rows are almost always all still ours, and then not one key travels
    # back (a batch's keys read back per call cost the push stage more than its sends).
    count = conn.execute(select(func.count()).select_from(queue.table)
                         .where(queue.owned_by(run_id, wanted)).with_for_update()).scalar_one()
    if count == len(wanted):
        return Held(wanted, 0)
    key_columns = [queue.table.c[k] for k in queue.key]
    held = queue.keys_of(conn.execute(
        select(*key_columns).where(queue.owned_by(run_id, wanted))
        .order_by(*key_columns).with_for_update()))
    return Held(held, len(wanted) - len(held))


def extend_lease(db: Database, queue: Queue, run_id: str, keys: Sequence[Any],
                 lease_seconds: int, now: dt.datetime) -> Held:
    """Before slow work on claimed rows (an SMTP send, a send_each call): give the rows still
    this run's a full lease again, so no other run recovers them meanwhile. Returns them; work
    on the others must not start (another run has them)."""

    def work(conn: Connection) -> Held:
        held = still_owned(conn, queue, run_id, keys)
        if held.keys:
            conn.execute(update(queue.table).where(queue.key_in(held.keys)).values(
                lease_expires_at=now + dt.timedelta(seconds=lease_seconds)))
        return held

    return db.run(work, what=f"extend lease {queue.name}")


def claim(db: Database, queue: Queue, run_id: str, limit: int, lease_seconds: int,
          now: dt.datetime) -> list[Any]:
    """Take up to `limit` ready rows for this run; returns their keys (committed before any work)."""

    def work(conn: Connection) -> list[Any]:
        key_columns = [queue.table.c[k] for k in queue.key]
        keys = _ready_keys(conn, queue, limit, now, lock=True if db.caps.skip_locked else None)
        if not keys:
            return []
        values: dict[str, Any] = {
            "claimed_by": run_id,
            "lease_expires_at": now + dt.timedelta(seconds=lease_seconds),
        }
        if queue.counts_attempts:
            values["attempts"] = queue.table.c.attempts + 1
        stamped = conn.execute(
            update(queue.table).where(queue.key_in(keys), queue.ready(now)).values(**values)
        ).rowcount
        if stamped == len(keys):
            return keys
        # Lost some compare-and-swaps to another run (servers without SKIP LOCKED): keep ours.
        return queue.keys_of(conn.execute(
            select(*key_columns).where(queue.owned_by(run_id, keys))))

    return db.run(work, what=f"claim {queue.name}")


def lock_ready(conn: Connection, queue: Queue, limit: int, now: dt.datetime,
               skip_locked: bool) -> list[Any]:
    """Lock up to `limit` ready rows for the rest of this transaction; returns their keys.

    For work done inside that transaction: `FOR UPDATE SKIP LOCKED` passes over rows other
    transactions hold (plain `FOR UPDATE`, waiting, on servers without it); SQLite has no row
    locks, and its writing transaction (`BEGIN IMMEDIATE`) already holds the only writer lock.
    """
    return _ready_keys(conn, queue, limit, now, _lock_mode(conn, skip_locked))


def locked_ready(conn: Connection, queue: Queue, limit: int, now: dt.datetime,
                 skip_locked: bool) -> Subquery:
    """The keys of up to `limit` ready rows as a derived table, locked (as lock_ready locks
    them) by the statement that reads it: join it to the queue to read the batch's rows in
    the statement that locks them, not in a second one by their keys.

    Only the queue's rows are locked: the derived table locks what it reads, and the rest of
    the statement reads without locks, as a plain SELECT does. The join sees the rows as they
    were locked because the worker's transactions are READ COMMITTED (db.py): under REPEATABLE
    READ a row committed after the transaction's snapshot would be locked but not joined.
    """
    return _ready_keys_query(queue, limit, now, _lock_mode(conn, skip_locked)).subquery("locked")


def _lock_mode(conn: Connection, skip_locked: bool) -> bool | None:
    return None if conn.dialect.name == "sqlite" else skip_locked


def _ready_keys(conn: Connection, queue: Queue, limit: int, now: dt.datetime,
                lock: bool | None) -> list[Any]:
    """Keys of up to `limit` ready rows in key order; `lock`: None reads without locks, True
    locks them skipping rows others hold, False locks them waiting for such rows."""
    return queue.keys_of(conn.execute(_ready_keys_query(queue, limit, now, lock)))


def _ready_keys_query(queue: Queue, limit: int, now: dt.datetime, lock: bool | None) -> Select:
    key_columns = [queue.table.c[k] for k in queue.key]
    query = select(*key_columns).where(queue.ready(now)).order_by(*key_columns).limit(limit)
    # Named: MariaDB's statistics of a queue half worked through made it walk the primary key
    # from the first row, done ones included, or sort every waiting row, for each batch (50,000
    # rows read per batch of 2,000 from 100,000 scans). This index reads the batch and stops.
    query = force_index(query, queue.table, queue.poll_index)
    if lock is not None:
        query = query.with_for_update(skip_locked=lock)
    return query


def release(conn: Connection, queue: Queue, run_id: str, keys: Sequence[Any]) -> int:
    """Give back claimed rows that were not started, without spending an attempt."""
    if not keys:
        return 0
    values: dict[str, Any] = {"claimed_by": None, "lease_expires_at": None}
    if queue.counts_attempts:
        values["attempts"] = case((queue.table.c.attempts > 0, queue.table.c.attempts - 1),
                                  else_=0)
    return conn.execute(
        update(queue.table).where(queue.owned_by(run_id, keys)).values(**values)
    ).rowcount


def abandon(conn: Connection, queue: Queue, run_id: str | None, keys: Sequence[Any], error: str,
            max_attempts: int, retry_at: dt.datetime,
            now: dt.datetime | None = None) -> dict[str, int]:
    """Give back a batch whose work failed unexpectedly, with the attempt spent.

    A row that always breaks its stage then waits (`retry_at`) and is dead-lettered once out of
    attempts, instead of blocking the stage on every run. `run_id` None: a batch worked inside
    the transaction that locked it, rolled back; its rows are waiting again (unclaimed), and the
    attempt, which no claim counted, is counted here.
    """
    if not keys:
        return {"failed": 0, "released": 0}
    c = queue.table.c
    spend: dict[str, Any] = {}
    spent_at = max_attempts
    if run_id is None:
        # Still waiting: another run may have taken and finished a row since the rollback.
        mine = and_(queue.key_in(keys), queue.is_waiting(), c.claimed_by.is_(None))
        if queue.counts_attempts:
            spend, spent_at = {"attempts": c.attempts + 1}, max_attempts - 1
    else:
        mine = queue.owned_by(run_id, keys)
    free = {"claimed_by": None, "lease_expires_at": None}
    if not (queue.counts_attempts and queue.failed):
        # No attempts to count here: back the rows off, so the rows after them get their turn.
        return {"failed": 0, "released": conn.execute(update(queue.table).where(mine).values(
            available_at=retry_at, **free, **spend)).rowcount}
    failed = conn.execute(update(queue.table).where(mine, c.attempts >= spent_at).values(
        {**queue.dead_letter_values(now or utcnow()), "error": error[:500], **free, **spend})
    ).rowcount
    released = conn.execute(update(queue.table).where(mine).values(
        error=error[:500], available_at=retry_at, **free, **spend)).rowcount
    return {"failed": failed, "released": released}


def recover_expired(db: Database, queue: Queue, now: dt.datetime, max_attempts: int) -> dict:
    """Release rows whose lease expired (their run died); dead-letter those out of attempts."""
    c = queue.table.c
    expired = and_(queue.is_waiting(), c.claimed_by.isnot(None), c.lease_expires_at < now)

    def work(conn: Connection) -> dict:
        # Look first, without locks: usually nothing expired, and then nothing is written.
        key_columns = [queue.table.c[k] for k in queue.key]
        keys = queue.keys_of(conn.execute(select(*key_columns).where(expired)))
        if not keys:
            return {"recovered": 0, "dead_lettered": 0}
        mine = and_(queue.key_in(keys), expired)
        given_up = 0
        if queue.counts_attempts and queue.failed:
            given_up = conn.execute(
                update(queue.table).where(mine, c.attempts >= max_attempts).values(
                    {**queue.dead_letter_values(now), "claimed_by": None,
                     "lease_expires_at": None,
                     "error": f"gave up after {max_attempts} attempts: the worker holding it "
                              "stopped before finishing (lease expired)"})
            ).rowcount
        recovered = conn.execute(
            update(queue.table).where(mine).values(claimed_by=None, lease_expires_at=None)
        ).rowcount
        return {"recovered": recovered, "dead_lettered": given_up}

    return db.run(work, what=f"recover {queue.name}")


def backoff_seconds(attempts: int, base: int, cap: int, rng: random.Random | None = None) -> int:
    """Capped exponential backoff with full jitter between half and all of the delay."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return int((rng or random).uniform(delay / 2, delay))


# Every queue the toolkit drains, in the background worker's stage order. The worker's stages,
# queue health and manage_dead_letters all read this one list.
QUEUES: dict[str, Queue] = {q.name: q for q in (
    Queue("scans", attendance_scan_queue, done=("done",), failed="failed",
          finished_at="processed_at"),
    Queue("fanout", notifications, status_column="fanout_status", counts_attempts=False,
          done=("done",), finished_at="fanned_out_at"),
    Queue("deliveries", push_deliveries, done=("sent", "cancelled"), failed="failed",
          finished_at="finished_at"),
    Queue("rollups", attendance_rollup_queue, key=("institution_id", "attendance_date"),
          status_column=None, counts_attempts=False, became_available="marked_at"),
    Queue("snapshots", guardian_snapshot_queue, key=("guardian_id",), status_column=None,
          counts_attempts=False, became_available="marked_at"),
    Queue("emails", report_email_queue, done=("sent",), failed="failed",
          finished_at="finished_at"),
)}
