"""The operators' view of the DB jobs (tools/manage_db_jobs.py): list, pause, resume, run now.

- list: every `cron_jobs` row with its state, last slot and next slot (read-only).
- pause / resume: `is_active` off / on for the chosen ids. A job resumed after a long pause runs
  once, for its latest slot (the paused slots are one skipped gap), never once per slot.
- run: one job's next slot now (the due one, else the one ahead), through the stage's own code
  path (`runner.run_slot`): the same unique slot, the same bookkeeping on failure.

Every writing action is a dry run unless --execute; the dry run says what would change.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

from sqlalchemy import Connection, update

from ...errors import BadInput
from ...result import DRY_RUN, JobResult
from ...runtime import RunContext
from ...schema import cron_jobs
from ...sqlutil import render_sql
from ...timeutil import utcnow
from . import handlers, runner, slots
from .slots import Job


def validate(action: str, ids: Sequence[int]) -> list[str]:
    """Argument problems, all at once, before anything connects."""
    problems = []
    if action in ("pause", "resume", "run") and not ids:
        problems.append(f"{action} needs --id (the cron_jobs row)")
    if action == "run" and len(ids) > 1:
        problems.append("run takes one --id (one job's slot at a time)")
    return problems


def state(job: Job, now: dt.datetime) -> str:
    """One word for the list: invalid, paused, dead, retrying, overdue, due or scheduled."""
    if job.invalid_reason is not None:
        return "invalid"
    if not job.is_active:
        return "paused"
    if slots.next_slot(job, now) is None:
        return "dead"  # a one-off whose slot was dead-lettered (the row is kept)
    if slots.backing_off(job, now):
        return "retrying"
    if slots.overdue(job, now):
        return "overdue"
    return "due" if slots.due(job, now) is not None else "scheduled"


def _row(job: Job, now: dt.datetime) -> dict:
    valid = job.invalid_reason is None
    note = job.invalid_reason or job.last_error
    if valid and job.retry_at is not None and job.retry_at > now:
        note = f"retry at {job.retry_at:%Y-%m-%d %H:%M:%S}: {job.last_error}"
    return {
        "id": job.id, "name": job.name, "job_type": job.job_type,
        "kind": job.kind,
        "user_id": job.user_id, "state": state(job, now), "last_slot": job.last_run_at,
        "next_slot": slots.next_slot(job, now) if valid else None,
        "attempts": job.attempts, "note": (note or "-")[:160],
    }


def run(ctx: RunContext, action: str, ids: Sequence[int] = ()) -> JobResult:
    result = JobResult(ctx.tool, ctx.dry_run)
    now = utcnow()
    where = cron_jobs.c.id.in_(sorted(set(ids))) if ids else None
    with ctx.db.begin(write=False) as conn:
        checked = runner.check(conn, where, read_users=None if ctx.dry_run else True)
    missing = sorted(set(ids) - {job.id for job in checked.jobs})
    if missing and action == "run":
        raise BadInput(f"no cron_jobs row with id {', '.join(map(str, missing))}")
    result.notes.extend(f"cron_jobs {job_id}: no such row" for job_id in missing)
    result.section("DB jobs", [_row(job, now) for job in checked.jobs])
    for state_name in ("due", "overdue", "retrying", "invalid", "paused", "dead"):
        found = sum(1 for row in result.sections[0].rows if row["state"] == state_name)
        if found:
            result.counts[state_name] = found
    result.counts["jobs"] = len(checked.jobs)
    if action == "list":
        result.stop_reason = "listed"
        return result
    if action in ("pause", "resume"):
        return _set_active(ctx, result, checked.jobs, action == "resume")
    return _run_now(ctx, result, checked.jobs[0], now)


def _set_active(ctx: RunContext, result: JobResult, jobs: list[Job], active: bool) -> JobResult:
    verb = "resume" if active else "pause"
    changing = [job.id for job in jobs if bool(job.is_active) != active]
    statement = update(cron_jobs).where(cron_jobs.c.id.in_(changing or [0]),
                                        cron_jobs.c.is_active == (not active)
                                        ).values(is_active=active)
    result.statements.append(render_sql(statement, ctx.db.engine.dialect) + ";")
    if len(changing) < len(jobs):
        result.notes.append(f"{len(jobs) - len(changing)} already "
                            f"{'active' if active else 'paused'}: left as they are")
    if ctx.dry_run:
        result.notes.append(f"--execute would {verb} {len(changing)} jobs")
        result.stop_reason = DRY_RUN
        return result

    def work(conn: Connection) -> int:
        return conn.execute(statement).rowcount

    result.counts[f"{verb}d"] = ctx.db.run(work, what=f"{verb} cron_jobs") if changing else 0
    return result


def _run_now(ctx: RunContext, result: JobResult, job: Job, now: dt.datetime) -> JobResult:
    if job.invalid_reason is not None:
        raise BadInput(f"cron_jobs {job.id} is invalid and never runs: {job.invalid_reason}")
    if slots.next_slot(job, now) is None:
        raise BadInput(f"cron_jobs {job.id}: its one slot was dead-lettered; retry it with "
                       f"python tools/manage_dead_letters.py retry --queue dbjobs")
    due = slots.upcoming(job, now)
    with ctx.db.begin(write=False) as conn:
        would_affect = handlers.preview(conn, job.job_type, runner.job_call(job, due, now))
    result.section("Run now", [{
        "id": job.id, "name": job.name, "job_type": job.job_type, "slot": due.slot,
        "early": due.slot > now, "skipped_slots": due.gap_slots, "would_affect": would_affect,
        "then": "row deleted" if job.is_one_off else "last_run_at = slot",
    }])
    if not job.is_active:
        result.notes.append("the job is paused: run runs it once all the same, and it stays "
                            "paused")
    if ctx.dry_run:
        result.notes.append(f"--execute would run {job.job_type} for slot {due.slot} now "
                            f"({handlers.describe(job.job_type)})")
        result.stop_reason = DRY_RUN
        return result
    s = ctx.settings
    outcome = runner.run_slot(ctx.db, job, due, ctx.run_id, now, s.worker_max_attempts,
                              (s.worker_backoff_seconds, s.worker_backoff_cap_seconds),
                              why_stop=ctx.why_stop, manual=True)
    result.counts.update({"rows_affected": outcome.rows, "batches": outcome.batches,
                          "skipped_slots": outcome.skipped_slots if outcome.kind == "done"
                          else 0})
    result.counts[outcome.kind] = 1
    if outcome.kind in (runner.RETRY, runner.DEAD):
        result.status = "failed"
        result.error = (f"{job.job_type} failed: {outcome.error} "
                        + ("(dead-lettered)" if outcome.kind == runner.DEAD
                           else "(the worker retries it after its backoff)"))
    elif outcome.kind == runner.TAKEN:
        result.stop_reason = "another run holds or recorded this slot: nothing done"
    elif outcome.kind == runner.INTERRUPTED:
        result.stop_reason = outcome.error or "interrupted"
    return result
