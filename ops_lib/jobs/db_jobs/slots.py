"""What a `cron_jobs` row means, and its slots: pure functions of the row and the time.

- `run_at` alone: a one-off job, its one slot `run_at`.
- `interval_minutes` alone: recurring, anchored at the row's `created_at`.
- both: recurring, anchored at `run_at` (its first slot).

A recurring job's slots are anchor + k x interval, whatever time the runs happen: `last_run_at`
holds the slot a job last ran for (or was dead-lettered at), never a clock time, so a late run
does not shift the series. After downtime only the latest slot runs; the slots missed before it
are one skipped gap.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

OVERDUE_INTERVALS = 3  # queue health: a recurring job not run for this many intervals


@dataclass(frozen=True)
class Job:
    """One `cron_jobs` row."""

    id: int
    name: str
    job_type: str
    user_id: int | None
    run_at: dt.datetime | None
    interval_minutes: int | None
    is_active: bool
    last_run_at: dt.datetime | None
    created_at: dt.datetime
    invalid_reason: str | None = None
    attempts: int = 0
    retry_at: dt.datetime | None = None
    last_error: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> "Job":
        m = row._mapping
        return cls(**{name: m[name] for name in cls.__dataclass_fields__})

    @property
    def is_one_off(self) -> bool:
        return self.interval_minutes is None

    @property
    def anchor(self) -> dt.datetime:
        return self.run_at if self.run_at is not None else self.created_at

    @property
    def step(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.interval_minutes or 0)

    @property
    def kind(self) -> str:
        return "one-off" if self.is_one_off else f"every {self.interval_minutes} min"


@dataclass(frozen=True)
class Due:
    """The slot a run is for, and the slots skipped before it (first and last), if any."""

    slot: dt.datetime
    gap_first: dt.datetime | None = None
    gap_last: dt.datetime | None = None
    gap_slots: int = 0


MISSING_USER = "does not exist in users"


def problems(job: Job, known_type: Callable[[str], bool],
             user_exists: Callable[[int], bool]) -> str | None:
    """Why a row cannot run (all reasons, '; '-joined), or None when it is valid."""
    found = []
    if not known_type(job.job_type):
        found.append(f"unknown job_type {job.job_type!r}")
    if job.run_at is None and job.interval_minutes is None:
        found.append("neither run_at nor interval_minutes is set")
    if job.interval_minutes is not None and job.interval_minutes < 1:
        found.append(f"interval_minutes {job.interval_minutes} is under 1 minute")
    if job.user_id is not None and not user_exists(job.user_id):
        found.append(f"user_id {job.user_id} does not exist in users")
    return "; ".join(found) or None


def latest_slot(job: Job, now: dt.datetime) -> dt.datetime | None:
    """The newest slot at or before `now` (None: the first is still ahead)."""
    if job.is_one_off:
        return job.run_at if job.run_at <= now else None
    if now < job.anchor:
        return None
    return job.anchor + ((now - job.anchor) // job.step) * job.step


def first_open_slot(job: Job) -> dt.datetime:
    """The first slot after the one the job last ran for (the anchor if it never ran)."""
    if job.is_one_off or job.last_run_at is None or job.last_run_at < job.anchor:
        return job.anchor
    return job.anchor + ((job.last_run_at - job.anchor) // job.step + 1) * job.step


def due(job: Job, now: dt.datetime) -> Due | None:
    """The slot to run now (the latest one not run yet), with the gap before it; None when the
    job has nothing due. Validity, pausing and backoff are the caller's (`runnable`)."""
    latest = latest_slot(job, now)
    if latest is None or (job.last_run_at is not None and latest <= job.last_run_at):
        return None
    return _with_gap(job, latest)


def upcoming(job: Job, now: dt.datetime) -> Due:
    """The slot due now, else the next one ahead (what `manage_db_jobs.py run` runs early)."""
    now_due = due(job, now)
    if now_due is not None:
        return now_due
    if job.is_one_off:
        return Due(job.run_at)
    latest = latest_slot(job, now)
    return _with_gap(job, job.anchor if latest is None else latest + job.step)


def _with_gap(job: Job, slot: dt.datetime) -> Due:
    if job.is_one_off:
        return Due(slot)
    first = first_open_slot(job)
    if first >= slot:
        return Due(slot)
    last = slot - job.step
    return Due(slot, first, last, (last - first) // job.step + 1)


def runnable(job: Job, now: dt.datetime) -> bool:
    """Active, valid, and not backing off after a failure."""
    return (bool(job.is_active) and job.invalid_reason is None
            and (job.retry_at is None or job.retry_at <= now))


def backing_off(job: Job, now: dt.datetime) -> bool:
    """A slot is due, and a failure's backoff holds it until `retry_at`."""
    return job.retry_at is not None and job.retry_at > now and due(job, now) is not None


def overdue(job: Job, now: dt.datetime) -> bool:
    """A recurring, active, valid job whose last run (or anchor) is three intervals or more ago."""
    if job.is_one_off or not job.is_active or job.invalid_reason is not None:
        return False
    since = job.last_run_at if job.last_run_at is not None else job.anchor
    return now - since >= OVERDUE_INTERVALS * job.step


def next_slot(job: Job, now: dt.datetime) -> dt.datetime | None:
    """The slot the job runs for next (due now, or ahead); None for a one-off that already ran."""
    if job.is_one_off and job.last_run_at is not None and job.last_run_at >= job.run_at:
        return None
    return upcoming(job, now).slot
