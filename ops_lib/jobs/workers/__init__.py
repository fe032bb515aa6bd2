"""The background worker: drains every queue in a fair rotation, safely, several copies at once.

Each run processes up to LIMIT rows per stage. Stages take turns one batch at a time (scans,
fan-out, push, roll-ups, snapshots, emails, then round again), so a deep queue never starves the
others and work made by an early stage (an arrival notification) flows on in the same run.
Rows are claimed (`ops_lib.queue`), so any number of workers may run together.
"""

from __future__ import annotations

import logging

from ... import push as pushing
from ...result import DONE, JobResult, dry_run_reason, limit_reached
from ...runtime import RunContext
from ...timeutil import utcnow
from .base import BUDGET_MARGIN_SECONDS, Stage, StagePlan, StageStats
from .dbjobs import DbJobsStage
from .emails import EmailStage
from .fanout import FanoutStage
from .lanes import Drain, lane_pipelines, run_lanes
from .push import PushStage
from .rollups import RollupStage
from .scans import ScanStage
from .snapshots import SnapshotStage

log = logging.getLogger(__name__)


def stages() -> list[Stage]:
    return [ScanStage(), FanoutStage(), PushStage(), RollupStage(), SnapshotStage(), EmailStage(),
            DbJobsStage()]


def validate(settings, max_runtime: float | None = None) -> list[str]:
    """Option and setting problems to report before connecting (all at once, exit 2)."""
    problems = pushing.check_settings(settings)
    if max_runtime is not None and max_runtime <= BUDGET_MARGIN_SECONDS:
        # Claiming stops once less than the margin is left: such a budget would claim nothing.
        problems.append(f"--max-runtime must be more than {BUDGET_MARGIN_SECONDS:g} seconds "
                        f"(claiming stops {BUDGET_MARGIN_SECONDS:g} s before the budget ends), "
                        f"got {max_runtime:g}")
    return problems


def run(ctx: RunContext, limit: int = 100) -> JobResult:
    result = JobResult(ctx.tool, ctx.dry_run)
    if ctx.dry_run:
        pipeline = stages()
        try:
            return plan(ctx, pipeline, limit, result)
        finally:
            for stage in pipeline:
                stage.close()
    return execute(ctx, limit, result, lane_count(ctx))


def lane_count(ctx: RunContext) -> int:
    """The `worker_threads` setting; by default 2 on MySQL/MariaDB, 1 on SQLite, whose one
    writer at a time leaves a second lane nothing to do but wait."""
    return ctx.settings.worker_threads or (2 if ctx.db.caps.is_mysql else 1)


def plan(ctx: RunContext, pipeline: list[Stage], limit: int, result: JobResult) -> JobResult:
    """Read-only: per stage, what --execute would take now and what it would do with it."""
    now = utcnow()
    rows, samples, sections = [], [], {}
    with ctx.db.begin(write=False) as conn:
        for stage in pipeline:
            # Queue health's figures, exact: the plan's "left beyond LIMIT" needs every row.
            figures = stage.figures(conn, now)
            stage_plan = stage.plan(conn, ctx, limit) if figures.due else StagePlan()
            samples.extend(dict(sample, stage=stage.name) for sample in stage_plan.samples)
            sections.update(stage_plan.sections)
            if stage_plan.note:
                result.notes.append(stage_plan.note)
            rows.append({
                "stage": stage.name, "ready": figures.due,
                "would_take": min(limit, figures.due),
                "claimed": figures.claimed, "expired": figures.expired,
                "dead": figures.dead or 0,
                "details": dict(stage_plan.figures),
            })
    result.section("Stages", rows)
    if samples:
        result.section("Samples", samples, ["stage", "scan", "would fail"], id_columns=("scan",))
    for title, section_rows in sections.items():
        result.section(title, section_rows)
    # Each figure once: per stage in the table; the counts (ledger, JSON) hold the run's total.
    result.counts["would_take"] = sum(r["would_take"] for r in rows)
    result.notes.append(
        f"--execute would take up to {limit} rows per stage, stages taking turns; what earlier "
        "stages create in that run (arrivals, deliveries, roll-ups) flows on to the later ones. "
        "claimed = held by a running worker, expired = its lease ran out (recovered first), "
        "dead = failed for good"
    )
    result.stop_reason = dry_run_reason(sum(max(0, r["ready"] - limit) for r in rows))
    return result


def execute(ctx: RunContext, limit: int, result: JobResult, lanes: int = 1) -> JobResult:
    """Recover what dead runs left, then drain the queues in `lanes` lanes (threads) at once."""
    pipelines = lane_pipelines(stages, lanes)
    pipeline = pipelines[0]
    stats = {stage.name: StageStats() for stage in pipeline}
    for stage in pipeline:
        recovered = stage.recover(ctx)
        if recovered["recovered"] or recovered["dead_lettered"]:
            log.warning("%s: recovered %d rows from runs that died (%d dead-lettered)",
                        stage.name, recovered["recovered"], recovered["dead_lettered"])
        stats[stage.name].add("recovered", recovered["recovered"])
        stats[stage.name].add("dead_lettered_on_recovery", recovered["dead_lettered"])

    # The bar's total is the work there now (ready rows, up to LIMIT a stage); it grows as
    # earlier stages make work for later ones, and shrinks when a stage runs dry early.
    expected = {stage.name: limit for stage in pipeline}
    if ctx.show_progress:  # (counted only for a bar someone sees: six COUNTs over the queues)
        with ctx.db.begin(write=False) as conn:
            expected = {stage.name: min(limit, stage.ready(conn, utcnow()))
                        for stage in pipeline}
    with ctx.progress("draining queues", sum(expected.values())) as bar:
        drain = Drain(pipelines, limit, expected, bar)
        for lane_stats in run_lanes(ctx, drain, pipelines):
            for name, figures in lane_stats.items():
                stats[name].merge(figures)
    summarise(ctx, pipeline, result, stats, limit, drain.stop_reason)
    result.counts["threads"] = lanes
    return result


FIGURES = ("claimed", "done", "failed", "retried", "released", "lost")


def summarise(ctx: RunContext, pipeline: list[Stage], result: JobResult,
              stats: dict[str, StageStats], limit: int, stop_reason: str) -> JobResult:
    rows, capped = [], []
    for name, st in stats.items():
        rows.append({
            "stage": name, **{key: getattr(st, key) for key in FIGURES},
            "seconds": round(st.seconds, 3),
            "details": dict(sorted(st.details.items())),
        })
        if st.stopped:
            result.notes.append(f"{name} stage stopped: {st.stopped}")
        elif st.claimed >= limit:
            capped.append(name)
    result.section("Stages", rows)
    # Each figure once: per stage in the table above; the counts (the ledger's, JSON's, and the
    # terminal's Counts table) hold the run's totals.
    for key in FIGURES:
        total = sum(getattr(st, key) for st in stats.values())
        if total:
            result.add(key, total)
    stopped = [name for name, st in stats.items() if st.stopped]
    if stopped:
        result.status = "failed"
        result.error = "; ".join(f"{name}: {stats[name].stopped}" for name in stopped)
    if stop_reason == DONE and capped:
        left = left_beyond_limit(ctx, [stage for stage in pipeline if stage.name in capped])
        if left:
            stop_reason = limit_reached(left)
    result.stop_reason = stop_reason
    return result


def left_beyond_limit(ctx: RunContext, stages: list[Stage]) -> int | None:
    """Rows still ready in the stages that stopped at LIMIT (None: could not count them)."""
    try:
        with ctx.db.begin(write=False) as conn:
            return sum(stage.ready(conn, utcnow()) for stage in stages)
    except Exception as exc:  # the run's work is done and committed; the figure is a courtesy
        log.warning("could not count the rows left beyond LIMIT: %s", exc)
        return None
