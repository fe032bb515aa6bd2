"""Running the jobs of `cron_jobs`: validation, the due list, one slot's run, failure bookkeeping.

One run per slot across any number of workers, the way Solid Queue and good_job do it: a slot is
recorded by inserting its `cron_job_runs` row (unique (cron_job_id, slot_at)) in the transaction
that also holds the handler's (last) batch and moves `last_run_at` (or deletes a one-off row). A
worker that dies before the commit leaves nothing recorded, so the slot runs again, once; a
duplicate key means another worker recorded the slot first: roll back, count it, move on. The
job's row is locked first (`FOR UPDATE SKIP LOCKED` where the server has it), so a second worker
skips a job being run rather than waiting for it.

A failed run is rolled back, then its bookkeeping is one transaction of its own: attempts + 1,
the error, a retry time by the worker's backoff; at `worker_max_attempts` the slot is
dead-lettered (a `failed` row in `cron_job_runs`) and the series goes on (`last_run_at` = that
slot; a one-off row stays, for the dead-letter tool to retry).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import Connection, and_, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from ...db import Database, is_duplicate_key, privilege_problem
from ...queue import Queue, backoff_seconds
from ...schema import cron_job_runs, cron_jobs, users
from . import slots
from .handlers import HANDLERS, JobCall
from .slots import Due, Job

log = logging.getLogger(__name__)

BATCH_ROWS = 1000  # rows a handler statement touches at most (one transaction each)
DONE, TAKEN, RETRY, DEAD, INTERRUPTED = "done", "taken", "retry", "dead", "interrupted"


# The dead letters of the DB jobs for manage_dead_letters (not a claimable queue: no claim
# columns; the worker never reads these rows back).
DEAD_LETTERS = Queue("dbjobs", cron_job_runs, done=("done", "skipped"), failed="failed",
                     finished_at="finished_at")


class SlotTaken(Exception):
    """Another worker holds the job (row locked) or recorded the slot first."""


@dataclass
class Checked:
    """Every `cron_jobs` row as of one read, each with its current validity."""

    jobs: list[Job]
    newly_invalid: dict[int, str] = field(default_factory=dict)  # id -> reason, not marked yet
    now_valid: list[int] = field(default_factory=list)  # marked invalid, valid now

    def due(self, now: dt.datetime) -> list[tuple[Job, Due]]:
        """Runnable jobs with a due slot, oldest slot first."""
        found = [(job, d) for job in self.jobs if slots.runnable(job, now)
                 for d in [slots.due(job, now)] if d is not None]
        return sorted(found, key=lambda pair: (pair[1].slot, pair[0].id))

    def backing_off(self, now: dt.datetime) -> list[Job]:
        return [job for job in self.jobs
                if job.is_active and job.invalid_reason is None and slots.backing_off(job, now)]

    @property
    def invalid(self) -> list[Job]:
        return [job for job in self.jobs if job.invalid_reason is not None]


def job_call(job: Job, due: Due, now: dt.datetime, batch_rows: int = BATCH_ROWS) -> JobCall:
    """What `job`'s handler is told for the slot `due`."""
    return JobCall(job.id, job.name, job.job_type, job.user_id, due.slot, now, batch_rows)


def check(conn: Connection, where=None, read_users: bool | None = None) -> Checked:
    """Read the jobs (all, or those `where` picks) and judge each row's validity now.

    `cron_jobs` is the web app's short list of jobs (tens to thousands of rows): one read, the
    slot arithmetic in Python. The users named are looked up in one query (`read_users` True:
    they must be, before anything runs). Where that is not wanted (False: queue health) or, for
    None, not allowed (a dry run under the monitor, which never reads the web app's
    credentials), a job's user is judged as the worker last stored it.
    """
    query = select(cron_jobs).order_by(cron_jobs.c.id)
    if where is not None:
        query = query.where(where)
    jobs = [Job.from_row(row) for row in conn.execute(query)]
    named = sorted({job.user_id for job in jobs if job.user_id is not None})
    existing = None
    if read_users is not False and named:
        try:
            existing = set(conn.execute(select(users.c.id).where(users.c.id.in_(named)))
                           .scalars())
        except DBAPIError as exc:  # a dry run under the monitor, which never reads users
            if read_users or privilege_problem(exc) is None:
                raise
    if existing is None:
        existing = {job.user_id for job in jobs
                    if slots.MISSING_USER not in (job.invalid_reason or "")}
    checked = Checked([])
    for job in jobs:
        reason = slots.problems(job, HANDLERS.__contains__, existing.__contains__)
        if reason != job.invalid_reason:
            if reason is None:
                checked.now_valid.append(job.id)
            else:
                checked.newly_invalid[job.id] = reason
            job = dataclasses.replace(job, invalid_reason=reason)
        checked.jobs.append(job)
    return checked


def mark_validity(db: Database, checked: Checked) -> None:
    """Write what `check` found: the reason on rows now invalid, cleared on rows fixed since."""
    if not checked.newly_invalid and not checked.now_valid:
        return

    def work(conn: Connection) -> None:
        by_reason: dict[str, list[int]] = {}
        for job_id, reason in checked.newly_invalid.items():
            by_reason.setdefault(reason, []).append(job_id)
        for reason, ids in sorted(by_reason.items()):
            conn.execute(update(cron_jobs).where(cron_jobs.c.id.in_(ids))
                         .values(invalid_reason=reason[:255]))
        if checked.now_valid:
            conn.execute(update(cron_jobs).where(cron_jobs.c.id.in_(checked.now_valid))
                         .values(invalid_reason=None))

    db.run(work, what="validate cron_jobs")


@dataclass
class Outcome:
    kind: str  # DONE, TAKEN, RETRY, DEAD, INTERRUPTED
    rows: int = 0  # rows the handler affected (every batch)
    batches: int = 0
    skipped_slots: int = 0
    error: str | None = None


def _runs_rows(job: Job, due: Due, status: str, attempts: int, rows: int, run_id: str,
               now: dt.datetime, error: str | None = None) -> list[dict]:
    """The slot's row, and the gap before it as ONE skipped row (first and last slot)."""
    base = {"cron_job_id": job.id, "job_type": job.job_type, "run_id": run_id,
            "finished_at": now}
    found = [{**base, "slot_at": due.slot, "last_slot_at": None, "status": status,
              "attempts": attempts, "rows_affected": rows,
              "error": None if error is None else error[:500]}]
    if due.gap_slots:
        found.append({**base, "slot_at": due.gap_first, "last_slot_at": due.gap_last,
                      "status": "skipped", "attempts": 0, "rows_affected": 0,
                      "error": f"{due.gap_slots} slots missed: only the latest ran"})
    return found


def _record(conn: Connection, rows: list[dict]) -> None:
    try:
        conn.execute(insert(cron_job_runs), rows)
    except IntegrityError as exc:
        if is_duplicate_key(exc):
            raise SlotTaken("the slot was recorded by another run") from exc
        raise


def _lock(conn: Connection, db: Database, job: Job, skip_locked: bool) -> Job:
    """The job's row, locked for this transaction, if it is still as it was read (the same
    last_run_at: no run recorded a slot since). SlotTaken otherwise."""
    query = select(cron_jobs).where(cron_jobs.c.id == job.id)
    query = query.with_for_update(skip_locked=skip_locked and db.caps.skip_locked)
    row = conn.execute(query).first()
    if row is None:
        raise SlotTaken("the job is being run by another worker, or was deleted")
    current = Job.from_row(row)
    if current.last_run_at != job.last_run_at:
        raise SlotTaken("another run recorded a slot of this job meanwhile")
    return current


def run_slot(db: Database, job: Job, due: Due, run_id: str, now: dt.datetime,
             max_attempts: int, backoff: tuple[int, int],
             why_stop: Callable[[], str | None] = lambda: None, manual: bool = False,
             batch_rows: int = BATCH_ROWS) -> Outcome:
    """Run one slot of one job: its handler batch by batch, the slot recorded with the last.

    `manual` (the support tool's run now) runs a paused or backing-off job too, and a slot
    ahead of time; the stage runs only what is runnable and due.
    """
    handler = HANDLERS[job.job_type]
    call = job_call(job, due, now, batch_rows)
    outcome = Outcome(DONE, skipped_slots=due.gap_slots)

    def batch(conn: Connection) -> tuple[int, bool]:
        current = _lock(conn, db, job, skip_locked=True)
        if not manual and not slots.runnable(current, now):
            raise SlotTaken("paused, invalid or backing off since it was read")
        affected = handler(conn, call)
        if affected >= batch_rows:
            return affected, False  # more to do: this batch commits on its own
        _record(conn, _runs_rows(job, due, "done", current.attempts + 1,
                                 outcome.rows + affected, run_id, now))
        if job.is_one_off:
            conn.execute(delete(cron_jobs).where(cron_jobs.c.id == job.id))
        else:
            conn.execute(update(cron_jobs).where(cron_jobs.c.id == job.id).values(
                last_run_at=due.slot, attempts=0, retry_at=None, last_error=None))
        return affected, True

    while True:
        try:
            affected, last = db.run(batch, what=f"db job {job.id}")
        except SlotTaken as taken:
            log.info("db job %s (%s) slot %s: %s", job.id, job.name, due.slot, taken)
            outcome.kind = TAKEN
            return outcome
        except Exception as exc:  # the handler (or its statement) failed: rolled back
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.warning("db job %s (%s) slot %s failed: %s", job.id, job.name, due.slot,
                        message)
            outcome.error = message
            outcome.kind = record_failure(db, job, due, message, run_id, now, max_attempts,
                                          backoff)
            return outcome
        outcome.rows += affected
        outcome.batches += 1
        if last:
            return outcome
        reason = why_stop()
        if reason:  # the batches so far are committed (idempotent); the slot runs next time
            outcome.kind = INTERRUPTED
            outcome.error = reason
            return outcome


def record_failure(db: Database, job: Job, due: Due, error: str, run_id: str,
                   now: dt.datetime, max_attempts: int, backoff: tuple[int, int]) -> str:
    """After the rollback: attempts + 1 and a retry time, or the dead letter at the last attempt."""

    def work(conn: Connection) -> str:
        current = _lock(conn, db, job, skip_locked=False)
        attempts = current.attempts + 1
        if attempts < max_attempts:
            retry_at = now + dt.timedelta(seconds=backoff_seconds(attempts, *backoff))
            conn.execute(update(cron_jobs).where(cron_jobs.c.id == job.id).values(
                attempts=attempts, retry_at=retry_at, last_error=error[:500]))
            return RETRY
        _record(conn, _runs_rows(job, due, "failed", attempts, 0, run_id, now, error))
        conn.execute(update(cron_jobs).where(cron_jobs.c.id == job.id).values(
            last_run_at=due.slot, attempts=0, retry_at=None, last_error=error[:500]))
        return DEAD

    try:
        return db.run(work, what=f"db job {job.id} failure")
    except SlotTaken:
        return TAKEN


def retry_selection():
    """Dead-lettered slots a retry can put back: those of one-off jobs whose row is still there
    (a recurring job's series went on past its dead slot)."""
    one_offs = select(cron_jobs.c.id).where(cron_jobs.c.interval_minutes.is_(None))
    return cron_job_runs.c.cron_job_id.in_(one_offs)


def retry_statements(where) -> list:
    """Put dead-lettered one-off slots back: the job due again as new, its failed row removed
    (the unique slot would refuse the next run's row otherwise)."""
    # (MySQL refuses a subquery on the table an UPDATE writes: the one-off test is direct.)
    jobs = select(cron_job_runs.c.cron_job_id).where(where)
    return [
        update(cron_jobs).where(cron_jobs.c.id.in_(jobs), cron_jobs.c.interval_minutes.is_(None))
        .values(last_run_at=None, attempts=0, retry_at=None, last_error=None),
        delete(cron_job_runs).where(and_(where, retry_selection())),
    ]
