"""What every worker stage shares: its queue, its figures, and marking downstream work."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
import logging
import threading
from typing import Any, Iterable, Sequence

from sqlalchemy import Connection, DateTime, Select, case, literal, null, select

from ...db import describe_db_error
from ...errors import OpsError
from ...queue import Queue, abandon, backoff_seconds, claim, lock_ready, recover_expired, release
from ...runtime import RunContext
from ...schema import attendance_rollup_queue, guardian_snapshot_queue, guardian_students
from ...sqlutil import upsert, upsert_from_select
from ...timeutil import utcnow
from ..queue_health.figures import due_count, queue_figures
from ..queue_health.model import QueueHealth

log = logging.getLogger(__name__)

# Stop claiming when less than this is left of --max-runtime: one batch must fit in it.
BUDGET_MARGIN_SECONDS = 5.0


@dataclass
class StageStats:
    claimed: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    lost: int = 0  # claimed rows another run took over after our lease ran out
    seconds: float = 0.0
    details: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None  # why this stage stopped early (auth error, ...)

    def add(self, name: str, amount: int = 1) -> None:
        if amount:
            self.details[name] = self.details.get(name, 0) + amount

    def merge(self, other: "StageStats") -> None:
        """Add the figures of one committed transaction (a retried one counts once), or of
        another lane of the run."""
        for name in ("claimed", "done", "failed", "retried", "released", "lost", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, amount in other.details.items():
            self.add(name, amount)
        self.stopped = self.stopped or other.stopped


@dataclass
class StagePlan:
    """What a dry run says --execute would do with a stage's next rows."""

    figures: dict[str, int] = field(default_factory=dict)  # the Stages table's details column
    samples: list[dict[str, Any]] = field(default_factory=list)  # rows that would fail, and why
    note: str | None = None  # one line, e.g. where the output would go
    sections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # tables of its own


class Stage:
    """A queue-draining step of the background worker.

    The worker drives every stage through the same four calls (`recover`, `figures`, `ready`,
    `take`); a stage that is not a claimable queue overrides them. This `take` claims a batch
    (committed), then works it (`process`): for stages with outside effects (push, email). Those
    whose work stays in the database work inside the lock instead (`LockedBatchStage`).
    """

    name: str
    queue: Queue
    batch_size: int = 500
    # Stages whose output this one summarises: within a run it waits until they are idle, so a
    # roll-up is computed once after the scans rather than again after every scan batch.
    waits_for: tuple[str, ...] = ()
    # Worked by the first lane only (ops_lib/jobs/workers/lanes.py): its work is not claimable
    # rows another lane would pass over.
    first_lane_only: bool = False

    def batch_limit(self, ctx: RunContext) -> int:
        return self.batch_size

    def recover(self, ctx: RunContext) -> dict[str, int]:
        """At the start of a run: free what runs that died left claimed."""
        return recover_expired(ctx.db, self.queue, utcnow(), ctx.settings.worker_max_attempts)

    def figures(self, conn: Connection, now: dt.datetime) -> QueueHealth:
        """Queue health's figures of this stage's queue, exact (the dry run's table)."""
        return queue_figures(conn, self.queue, now, cap=None)

    def ready(self, conn: Connection, now: dt.datetime) -> int:
        """What a run could take now (exact)."""
        return due_count(conn, self.queue, now, cap=None)

    def take(self, ctx: RunContext, size: int, stats: StageStats) -> int:
        """Take and work up to `size` items; how many were taken (0: nothing is ready)."""
        leased_at = utcnow()
        keys = claim(ctx.db, self.queue, ctx.run_id, size, ctx.settings.worker_lease_seconds,
                     leased_at)
        if not keys:
            return 0
        stats.claimed += len(keys)
        try:
            self.process(ctx, keys, stats, leased_at)
        except Exception as exc:
            self.give_back(ctx, keys, stats, exc)
        return len(keys)

    def process(self, ctx: RunContext, keys: Sequence[Any], stats: StageStats,
                leased_at: dt.datetime) -> None:
        """Work the claimed rows of `keys`, whose lease began at `leased_at`."""
        raise NotImplementedError

    def give_back(self, ctx: RunContext, keys: Sequence[Any], stats: StageStats,
                  exc: Exception) -> None:
        """The stage broke: stop it (the other stages go on) and give its batch back.

        A configuration problem (an OpsError) gives the rows back untouched; anything else delays
        them (and spends their attempt where the queue counts attempts, dead-lettering them in the
        end), so a row that breaks its stage cannot block it forever.
        """
        give_back_batch(self, ctx, ctx.run_id, keys, stats, exc)

    def plan(self, conn: Connection, ctx: RunContext, limit: int) -> StagePlan:
        """Read-only: what --execute would do with the next `limit` rows."""
        return StagePlan()

    def close(self) -> None:
        """Release what the stage opened (SMTP connection, Firebase app)."""


class LockedBatchStage(Stage):
    """A stage whose work stays in the database: it works its batch inside the transaction that
    locks the rows, and commits the work and the rows' new status together.

    `SELECT ... FOR UPDATE SKIP LOCKED` picks the batch (SQLite: the writer lock its writing
    transaction takes up front), so no other run can take those rows until the commit; a crash
    rolls everything back and frees them. Nothing is claimed, leased, re-read or recovered. A
    batch that fails is rolled back, and its failure (attempt, error, backoff, dead letter) is
    written in a transaction of its own, so a row that always breaks still reaches its dead
    letter. The rows stay locked for the whole batch: `batch_size` keeps that well under a
    second. Stages with outside effects (a push, an email) cannot undo them on a rollback: they
    claim first (`Stage.take`).
    """

    def take(self, ctx: RunContext, size: int, stats: StageStats) -> int:
        locked: list[Any] = []

        def work(conn: Connection) -> StageStats:
            locked.clear()  # a retried transaction locks its batch afresh
            keys, rows = self.lock_batch(conn, ctx, size)
            locked.extend(keys)
            batch = StageStats(claimed=len(locked))
            if locked:
                self.work_locked(conn, ctx, rows, batch)
            return batch

        try:
            batch = self.run_locked(ctx, work)
        except Exception as exc:
            if not locked:  # it failed picking the batch: nothing to give back
                raise
            stats.claimed += len(locked)
            self.give_back(ctx, list(locked), stats, exc)
            return len(locked)
        stats.merge(batch)
        return batch.claimed

    def run_locked(self, ctx: RunContext, work) -> StageStats:
        """Run one batch's transaction (retried on transient errors); a stage may retry more."""
        return ctx.db.run(work, what=self.name)

    def lock_batch(self, conn: Connection, ctx: RunContext,
                   size: int) -> tuple[list[Any], Sequence[Any]]:
        """Lock up to `size` ready rows for the rest of the transaction: their keys, and what
        work_locked is given of them (here the keys; a stage may read the rows it needs in
        the statement that locks them)."""
        keys = lock_ready(conn, self.queue, size, utcnow(), ctx.db.caps.skip_locked)
        return keys, keys

    def work_locked(self, conn: Connection, ctx: RunContext, keys: Sequence[Any],
                    batch: StageStats) -> None:
        """Work the locked rows (`keys`: what lock_batch gave) in `conn`'s transaction and
        finish them there."""
        raise NotImplementedError

    def give_back(self, ctx: RunContext, keys: Sequence[Any], stats: StageStats,
                  exc: Exception) -> None:
        """The batch was rolled back (its rows are waiting again): stop the stage and count the
        failure of its rows, as `Stage.give_back` does for claimed ones."""
        give_back_batch(self, ctx, None, keys, stats, exc)


def give_back_batch(stage: Stage, ctx: RunContext, run_id: str | None, keys: Sequence[Any],
                    stats: StageStats, exc: Exception) -> None:
    """Stop `stage` and give its failed batch back: claimed by `run_id`, or (None) rolled back
    from the transaction that locked it."""
    message = stopped_because(stage, stats, exc)
    s = ctx.settings
    if isinstance(exc, OpsError) and run_id is None:
        stats.released += len(keys)  # the rollback gave them back untouched
        return

    def work(conn):
        if isinstance(exc, OpsError):
            return {"released": release(conn, stage.queue, run_id, keys), "failed": 0}
        now = utcnow()
        retry_at = now + dt.timedelta(seconds=backoff_seconds(
            1, s.worker_backoff_seconds, s.worker_backoff_cap_seconds))
        return abandon(conn, stage.queue, run_id, keys, f"{stage.name}: {message}",
                       s.worker_max_attempts, retry_at, now)

    try:
        outcome = ctx.db.run(work, what="release")
        stats.released += outcome["released"]
        stats.failed += outcome["failed"]
    except Exception as release_error:
        # Claimed rows come back when their lease ends; rolled-back ones are waiting already.
        log.warning("%s: could not give the batch back (%s)", stage.name, release_error)


def stopped_because(stage: Stage, stats: StageStats, exc: Exception) -> str:
    """Log why a stage stopped, mark it stopped in its figures, and return the one-line reason."""
    message = describe_db_error(exc) if hasattr(exc, "orig") else str(exc)
    if not isinstance(exc, OpsError):
        message = f"{type(exc).__name__}: {message}"
    log.error("%s stage stopped: %s", stage.name, message)
    log.debug("%s: traceback", stage.name, exc_info=True)
    stats.stopped = message
    return message


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def warn_once(ctx: RunContext, what: str, message: str, *args: Any) -> None:
    """Log a warning once per run, however many of its lanes meet the same condition."""
    with _warned_lock:
        if (ctx.run_id, what) in _warned:
            return
        _warned.add((ctx.run_id, what))
    log.warning(message, *args)


def mark_rollups(conn: Connection, pairs: Iterable[tuple[int, dt.date]], now: dt.datetime) -> None:
    """(institution, date) roll-ups are stale. Re-marking clears a claim so the row runs again."""
    rows = [{"institution_id": i, "attendance_date": d, "marked_at": now} for i, d in set(pairs)]
    _mark(conn, attendance_rollup_queue, rows, ["institution_id", "attendance_date"])


def mark_snapshots(conn: Connection, guardian_ids: Iterable[int], now: dt.datetime) -> None:
    rows = [{"guardian_id": g, "marked_at": now} for g in set(guardian_ids)]
    _mark(conn, guardian_snapshot_queue, rows, ["guardian_id"])


def mark_snapshots_of_students(conn: Connection, student_ids: Select, now: dt.datetime) -> None:
    """The snapshots of the guardians of these students (a query of their ids) are stale: one
    INSERT ... SELECT, so the guardian ids never travel to the worker and back."""
    gs = guardian_students.c
    students = student_ids.subquery()
    # A join from the batch's students, DISTINCT, not `IN (subquery) GROUP BY`: MariaDB
    # materialized the subquery and grouped in a second temporary table before sorting (17,700
    # rows read and 5,900 temporary rows written per 2,000 scans; now 15,900 and 4,000, one
    # temporary table). STRAIGHT_JOIN: the other order reads all of guardian_students.
    query = (select(gs.guardian_id, literal(now, DateTime)).distinct()
             .select_from(students.join(guardian_students, gs.student_id == students.c[0]))
             .prefix_with("STRAIGHT_JOIN", dialect="mysql")
             .order_by(gs.guardian_id))  # one lock order for concurrent workers, as in _mark
    upsert_from_select(conn, guardian_snapshot_queue, ["guardian_id", "marked_at"], query,
                       ["guardian_id"], _remark)


def _mark(conn: Connection, table, rows: list[dict], keys: list[str]) -> None:
    # Sorted, so that concurrent workers take the marker rows' locks in one order.
    rows.sort(key=lambda r: tuple(r[k] for k in keys))
    upsert(conn, table, rows, keys, _remark)


def _remark(table, new) -> dict:
    """A marker waiting unclaimed stays as it is (no row write: the values do not change); one a
    run is computing loses its claim, so it runs again. MySQL applies these left to right."""
    return {"marked_at": case((table.c.claimed_by.is_(None), table.c.marked_at),
                              else_=new.marked_at),
            # null(), not None: PyMySQL's executemany cannot take parameters after VALUES (...).
            "claimed_by": null(), "lease_expires_at": null()}
