"""Dead letters: queue rows that failed for good, listed, retried, forgotten or pruned.

A dead letter is a row with status `failed` in one of the worker's queues:
`attendance_scan_queue` (scans), `push_deliveries` (deliveries), `report_email_queue` (emails),
or a DB job's slot that ran out of attempts: `cron_job_runs` (dbjobs).
The worker never touches them again; this support tool does, and only them: every write is
`... WHERE status = 'failed'`, so a row that is pending, done or sent is never changed or deleted,
even when its id is given.

- list: per queue the number of failed rows and the oldest one's age, and a sample with the error.
- retry: back to `pending` with attempts reset and the error cleared, so the next worker run takes
  the row as new (chosen ids, or every failed row of the chosen queues). A dead DB job slot is
  retried by making its one-off job due again (its failed row removed); a recurring job's dead
  slot is left alone: its series went on.
- forget: delete the chosen failed rows (ids required).
- prune: delete rows that failed more than `dead_letter_retention_days` ago (or
  --older-than-days), by the time each was dead-lettered (`finished_at`, `processed_at` for scans);
  rows dead-lettered before the queues kept that time count from when they were queued.

Writes go in keyset batches of BATCH rows (one short transaction each, ids ascending), so a
retry of 100,000 rows never holds one long lock, and a row the worker fails again while the tool
runs is not taken twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from sqlalchemy import Connection, Table, and_, delete, func, select, update
from sqlalchemy.sql import ColumnElement

from ..queue import QUEUES as WORKER_QUEUES
from ..queue import Queue
from ..result import DRY_RUN, JobResult
from ..runtime import RunContext
from ..sqlutil import render_sql
from ..timeutil import utcnow
from .db_jobs import runner as db_jobs
from .dead_letter_names import ACTIONS, QUEUE_CHOICES, QUEUE_NAMES, SAMPLE  # noqa: F401

BATCH = 1000


@dataclass(frozen=True)
class DeadLetterQueue:
    """A queue of the registry (`ops_lib.queue.QUEUES`) whose failed rows this tool handles, and
    how its rows are shown."""

    queue: Queue
    describe: Callable[[Any], str]  # one row -> what it was (for the sample)
    extra_columns: tuple[str, ...] = ()
    reset: dict[str, Any] = field(default_factory=dict)  # also cleared on retry
    # A table that is no claimable queue says how its rows are retried, and which can be.
    retry_writes: Callable[[ColumnElement[bool]], list] | None = None
    retryable: Callable[[], ColumnElement[bool]] | None = None

    @property
    def name(self) -> str:
        return self.queue.name

    @property
    def table(self) -> Table:
        return self.queue.table

    def is_failed(self) -> ColumnElement[bool]:
        return self.table.c[self.queue.status_column] == self.queue.failed

    def failed_since(self) -> ColumnElement:
        """When a row was dead-lettered (when it was queued, for rows failed before this was
        recorded)."""
        c = self.table.c
        return func.coalesce(c[self.queue.finished_at], c.created_at)

    def retry_values(self) -> dict[str, Any]:
        return {self.queue.status_column: self.queue.waiting, "attempts": 0, "error": None,
                "claimed_by": None, "lease_expires_at": None, "available_at": None,
                self.queue.finished_at: None, **self.reset}


QUEUES: dict[str, DeadLetterQueue] = {dlq.name: dlq for dlq in (
    DeadLetterQueue(
        WORKER_QUEUES["scans"],
        lambda r: f"card {r.card_uid} at institution {r.institution_id}, scanned {r.scanned_at}",
        ("card_uid", "institution_id", "scanned_at")),
    DeadLetterQueue(
        WORKER_QUEUES["deliveries"],
        lambda r: f"notification {r.notification_id} to device {r.device_id}"
                  + (f" ({r.error_code})" if r.error_code else ""),
        ("notification_id", "device_id", "error_code"), {"error_code": None}),
    DeadLetterQueue(
        WORKER_QUEUES["emails"],
        lambda r: f"{r.report_type} report of institution {r.institution_id} to {r.recipient}",
        ("report_type", "institution_id", "recipient")),
    DeadLetterQueue(
        db_jobs.DEAD_LETTERS,
        lambda r: f"{r.job_type} job {r.cron_job_id}, slot {r.slot_at:%Y-%m-%d %H:%M}",
        ("cron_job_id", "job_type", "slot_at"),
        retry_writes=db_jobs.retry_statements, retryable=db_jobs.retry_selection),
)}
# Every queue of the registry that dead-letters rows has its entry here, and the DB jobs.
assert set(QUEUES) == {q.name for q in WORKER_QUEUES.values() if q.failed} | {"dbjobs"}
assert tuple(QUEUES) == QUEUE_NAMES, "dead_letter_names.QUEUE_NAMES is out of date"


def validate(action: str, queue: str, ids: Sequence[int],
             older_than_days: int | None) -> list[str]:
    """Argument problems, all at once, before anything connects."""
    problems = []
    if action == "forget" and not ids:
        problems.append("forget needs --id (the failed rows to delete); "
                        "prune deletes failed rows by age")
    if ids and queue == "all":
        problems.append("--id needs one --queue (scans, deliveries, emails or dbjobs): ids are "
                        "per table")
    if ids and action == "prune":
        problems.append("prune deletes by age, not by id: use forget --id")
    if older_than_days is not None and action != "prune":
        problems.append("--older-than-days only applies to prune")
    return problems


def chosen_queues(queue: str) -> list[DeadLetterQueue]:
    return list(QUEUES.values()) if queue == "all" else [QUEUES[queue]]


def selection(dlq: DeadLetterQueue, action: str, ids: Sequence[int],
              cutoff: dt.datetime | None) -> ColumnElement[bool]:
    """The rows an action works on: always failed ones, then by id or by age."""
    c = dlq.table.c
    where = [dlq.is_failed()]
    if ids:
        where.append(c.id.in_(sorted(set(ids))))
    if action == "prune" and cutoff is not None:
        where.append(dlq.failed_since() < cutoff)
    if action == "retry" and dlq.retryable is not None:
        where.append(dlq.retryable())
    return and_(*where)


def run(ctx: RunContext, action: str, queue: str = "all", ids: Sequence[int] = (),
        older_than_days: int | None = None, sample: int = SAMPLE) -> JobResult:
    result = JobResult(ctx.tool, ctx.dry_run)
    now = utcnow()
    days = older_than_days if older_than_days is not None else (
        ctx.settings.dead_letter_retention_days)
    cutoff = now - dt.timedelta(days=days) if action == "prune" else None
    queues = chosen_queues(queue)

    overview, samples = [], []
    with ctx.db.begin(write=False) as conn:
        for dlq in queues:
            figures = _figures(conn, dlq, action, ids, cutoff, now)
            overview.append(figures)
            samples.extend(_sample(conn, dlq, action, ids, cutoff, now, sample))
            if ids:
                result.notes.extend(_ids_left_alone(conn, dlq, ids))
    result.section("Dead letters", overview)
    result.section("Sample" if action == "list" else f"Rows to {action}", samples,
                   ["queue", "id", "attempts", "age_days", "what", "error"])
    for figures in overview:
        result.counts[f"{figures['queue']}_failed"] = figures["failed"]
        if action != "list":
            result.counts[f"{figures['queue']}_selected"] = figures["selected"]
    if action == "list":
        result.stop_reason = "listed"
        return result
    if action == "prune":
        result.notes.append(f"prune: failed rows queued before {cutoff:%Y-%m-%d %H:%M} UTC "
                            f"({days} days; dead_letter_retention_days or --older-than-days)")
    result.statements.extend(_statement(ctx, dlq, action, ids, cutoff) for dlq in queues)
    if action == "retry" and any(dlq.retryable is not None for dlq in queues):
        result.notes.append("dbjobs: a one-off job's dead slot is retried (the job due again); "
                            "a recurring job's is not, its series went on: forget or prune it")
    if ctx.dry_run:
        selected = sum(f["selected"] for f in overview)
        verb = {"retry": "put back to pending (attempts 0, error cleared)",
                "forget": "delete", "prune": "delete"}[action]
        result.notes.append(f"--execute would {verb} {selected} failed rows")
        result.stop_reason = DRY_RUN
        return result

    for dlq in queues:
        done, reason = _apply(ctx, dlq, selection(dlq, action, ids, cutoff),
                              lambda where, dlq=dlq: _write(dlq, action, where))
        past = {"retry": "retried", "forget": "forgotten", "prune": "pruned"}[action]
        result.counts[f"{dlq.name}_{past}"] = done
        if reason:
            result.stop_reason = reason
            result.notes.append(f"stopped before finishing {dlq.name}: {reason}")
            break
    return result


def _figures(conn: Connection, dlq: DeadLetterQueue, action: str, ids, cutoff, now) -> dict:
    c = dlq.table.c
    failed, oldest = conn.execute(
        select(func.count(), func.min(c.created_at)).where(dlq.is_failed())).one()
    figures = {"queue": dlq.name, "table": dlq.table.name, "failed": failed,
               "oldest_age_days": _age_days(oldest, now)}
    if action != "list":
        figures["selected"] = conn.execute(select(func.count()).select_from(dlq.table).where(
            selection(dlq, action, ids, cutoff))).scalar_one()
    return figures


def _sample(conn: Connection, dlq: DeadLetterQueue, action: str, ids, cutoff, now,
            limit: int) -> list[dict]:
    c = dlq.table.c
    columns = [c.id, c.attempts, c.created_at, c.error, *(c[k] for k in dlq.extra_columns)]
    rows = conn.execute(select(*columns).where(selection(dlq, action, ids, cutoff))
                        .order_by(c.id).limit(limit)).all()
    return [{"queue": dlq.name, "id": r.id, "attempts": r.attempts,
             "age_days": _age_days(r.created_at, now), "what": dlq.describe(r),
             "error": (r.error or "-")[:160]} for r in rows]


def _ids_left_alone(conn: Connection, dlq: DeadLetterQueue, ids: Sequence[int]) -> list[str]:
    """Notes for chosen ids that are not dead letters: they are never changed."""
    c = dlq.table.c
    wanted = sorted(set(ids))
    status = dict(conn.execute(select(c.id, c.status).where(c.id.in_(wanted))).all())
    notes = []
    for row_id in wanted:
        if row_id not in status:
            notes.append(f"{dlq.name} {row_id}: no such row")
        elif status[row_id] != dlq.queue.failed:
            notes.append(f"{dlq.name} {row_id}: status {status[row_id]}, not failed: left alone")
    return notes


def _age_days(created_at: dt.datetime | None, now: dt.datetime) -> int | None:
    return None if created_at is None else max(0, (now - created_at).days)


def _write(dlq: DeadLetterQueue, action: str, where: ColumnElement[bool]) -> list:
    """The statements of an action, in order; the last one's row count is the rows done."""
    if action == "retry" and dlq.retry_writes is not None:
        return dlq.retry_writes(where)
    if action == "retry":
        return [update(dlq.table).where(where).values(**dlq.retry_values())]
    return [delete(dlq.table).where(where)]


def _statement(ctx: RunContext, dlq: DeadLetterQueue, action: str, ids, cutoff) -> str:
    statements = _write(dlq, action, selection(dlq, action, ids, cutoff))
    sql = "; ".join(render_sql(statement, ctx.db.engine.dialect) for statement in statements)
    return sql + f"  -- in batches of {BATCH} ids"


def _apply(ctx: RunContext, dlq: DeadLetterQueue, where: ColumnElement[bool],
           statements_for: Callable[[ColumnElement[bool]], list]) -> tuple[int, str | None]:
    """Keyset batches of ids: select the next BATCH matching ids, write them, commit."""
    c = dlq.table.c
    last_id, total = 0, 0
    while True:
        reason = ctx.why_stop()
        if reason:
            return total, reason

        def work(conn: Connection, after: int = last_id) -> tuple[list[int], int]:
            batch = conn.execute(select(c.id).where(where, c.id > after).order_by(c.id)
                                 .limit(BATCH)).scalars().all()
            if not batch:
                return [], 0
            # `where` again: a row that changed since the select (no longer failed) is skipped.
            for statement in statements_for(and_(where, c.id.in_(batch))):
                changed = conn.execute(statement).rowcount
            return batch, changed

        batch, changed = ctx.db.run(work, what=f"dead letters {dlq.name}")
        if not batch:
            return total, None
        total += changed
        last_id = batch[-1]
