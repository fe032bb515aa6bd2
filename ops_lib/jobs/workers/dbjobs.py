"""Stage 7: the jobs the web app defines in `cron_jobs` (ops_lib/jobs/db_jobs), one slot each.

Not a claimable queue: at its first turn the stage validates every row (marking the invalid ones)
and lists the due jobs; each turn then runs up to a batch of them, each slot in its own
transaction with its `cron_job_runs` row (ops_lib/jobs/db_jobs/runner.py). Jobs that become due
during the run wait for the next run (cron starts one a minute).
"""

from __future__ import annotations

import datetime as dt
from collections import deque

from sqlalchemy import Connection

from ...runtime import RunContext
from ...timeutil import utcnow
from ..db_jobs import figures as db_figures
from ..db_jobs import handlers, runner
from ..db_jobs.slots import Due, Job
from ..queue_health.model import QueueHealth
from .base import BUDGET_MARGIN_SECONDS, Stage, StagePlan, StageStats

# What each outcome adds to the Stages table: (figure, detail).
OUTCOME_FIGURES = {
    runner.DONE: ("done", None), runner.RETRY: ("retried", None),
    runner.DEAD: ("failed", None), runner.TAKEN: (None, "taken_by_another_run"),
    runner.INTERRUPTED: (None, "interrupted"),
}


class DbJobsStage(Stage):
    name = db_figures.NAME
    batch_size = 20  # jobs a turn: the other stages get theirs between
    # Each lane would list the same due jobs, mark the same invalid ones and find every slot
    # the other ran taken: one lane runs them (a few a minute; the other queues are the load).
    first_lane_only = True

    def __init__(self) -> None:
        self._due: deque[tuple[Job, Due]] | None = None
        self._figures_checked: runner.Checked | None = None  # the dry run's plan reuses it

    def recover(self, ctx: RunContext) -> dict[str, int]:
        # Nothing to recover: a run that died recorded nothing, its slot is simply still due.
        return {"recovered": 0, "dead_lettered": 0}

    def figures(self, conn: Connection, now: dt.datetime) -> QueueHealth:
        # Users judged as the plan judges them, so the dry run reads cron_jobs once, not twice.
        self._figures_checked = runner.check(conn)
        return db_figures.figures(conn, now, self._figures_checked)

    def ready(self, conn: Connection, now: dt.datetime) -> int:
        return len(runner.check(conn).due(now))

    def take(self, ctx: RunContext, size: int, stats: StageStats) -> int:
        if self._due is None:
            self._due = deque(self._validate_and_list(ctx, stats))
        taken = 0
        s = ctx.settings
        while self._due and taken < size:
            job, due = self._due.popleft()
            taken += 1
            stats.claimed += 1
            outcome = runner.run_slot(
                ctx.db, job, due, ctx.run_id, utcnow(), s.worker_max_attempts,
                (s.worker_backoff_seconds, s.worker_backoff_cap_seconds),
                why_stop=lambda: ctx.why_stop(BUDGET_MARGIN_SECONDS))
            figure, detail = OUTCOME_FIGURES[outcome.kind]
            if figure:
                setattr(stats, figure, getattr(stats, figure) + 1)
            if detail:
                stats.add(detail)
            stats.add("rows_affected", outcome.rows)
            if outcome.kind == runner.DONE:
                stats.add("skipped_slots", outcome.skipped_slots)
            if outcome.kind == runner.INTERRUPTED:
                self._due.clear()  # the run is stopping: leave the rest for the next one
        return taken

    def _validate_and_list(self, ctx: RunContext, stats: StageStats) -> list[tuple[Job, Due]]:
        with ctx.db.begin(write=False) as conn:
            checked = runner.check(conn, read_users=True)
        runner.mark_validity(ctx.db, checked)
        stats.add("marked_invalid", len(checked.newly_invalid))
        stats.add("valid_again", len(checked.now_valid))
        return checked.due(utcnow())

    def plan(self, conn: Connection, ctx: RunContext, limit: int) -> StagePlan:
        now = utcnow()
        checked, self._figures_checked = self._figures_checked or runner.check(conn), None
        taken = checked.due(now)[:limit]
        rows = [{
            "id": job.id, "name": job.name, "job_type": job.job_type, "kind": job.kind,
            "slot": slot.slot, "skipped_slots": slot.gap_slots,
            "attempts": job.attempts,
            "would_affect": handlers.preview(conn, job.job_type, runner.job_call(job, slot, now)),
            "then": "row deleted" if job.is_one_off else "last_run_at = slot",
        } for job, slot in taken]
        plan = StagePlan({"invalid": len(checked.invalid),
                          "would_mark_invalid": len(checked.newly_invalid),
                          "skipped_slots": sum(slot.gap_slots for _job, slot in taken)})
        plan.sections["DB jobs to run"] = rows
        invalid = [{"id": job.id, "name": job.name, "job_type": job.job_type,
                    "reason": job.invalid_reason} for job in checked.invalid]
        if invalid:
            plan.sections["Invalid DB jobs"] = invalid
        return plan
