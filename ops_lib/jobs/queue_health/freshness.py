"""Every scheduled tool's freshness, judged by its schedule and its runs in `ops_job_runs`.

The model is healthchecks.io's: a tool is expected to start at the first slot of its cron
expression after its last successful run started (`next_expected_at`), and to have finished within
its budget. It is

- `late` (WARNING) once `next_expected_at + budget + grace` has passed without a newer success;
- `down` (CRITICAL) once it is late by one more full interval of its schedule (a daily job missed
  two days running, the worker two minutes);
- `running too long` (WARNING) while a run has been going for longer than budget + grace;
- `never run`: no counted run at all (of any status). On a fresh install every tool is new, so a
  tool that never ran is judged from the first row of the run ledger (the install's first run) as
  if that had been its last success: OK until its first slot (plus budget and grace) has passed,
  then WARNING (a missing cron line; never CRITICAL, nothing it did has stopped).
- a tool that runs but has never succeeded is judged `late` / `down` by the same rules, from the
  first row of the run ledger instead of a last success ("no success yet, 3 failures"): its cron
  line works, the tool does not.

Only runs that did the work count: for a tool scheduled with `--execute`, its `--execute` runs
(`dry_run = 0`; a person's dry run is no success); a read-only check's every run. Skipped runs
(another copy held the lock) are not successes. A run is "going now" while its row says running
and its heartbeat is recent (the ledger calls a run with no heartbeat for an hour abandoned).

The scheduler service (tools/run_scheduler.py) is judged apart, by its heartbeat, never by how
long its row has been running (one run that lasts for weeks is what a service is): `down`
(CRITICAL) when its live row's heartbeat is older than SERVICE_DOWN_AFTER_SECONDS or its last
run died (failed, abandoned); `ok` while it beats; `stopped` (OK: the jobs' own freshness tells
what is missing) when it was stopped cleanly. A host that never ran it does not show it.

One query per tool: the latest runs of each status, each part an ORDER BY ... LIMIT along the
`(tool, status, finished_at)` index, never a scan of the ledger.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable

from sqlalchemy import Connection, select, union_all

from ...ledger import ABANDONED_AFTER_SECONDS
from ...schedule import ScheduledJob
from ...schema import ops_job_runs
from .model import (
    CRITICAL,
    DOWN,
    FRESH,
    LATE,
    NEVER_RUN,
    NOT_JUDGED,
    OK,
    RUNNING_TOO_LONG,
    WARNING,
    Run,
    ToolHealth,
)

RECENT_RUNS = 20  # the status page's strip
SERVICE_TOOL = "run_scheduler"
# The service beats its heartbeat every 15 s (ledger.HEARTBEAT_EVERY_SECONDS): five minutes
# without one is twenty beats missed, not a slow tick.
SERVICE_DOWN_AFTER_SECONDS = 300
SERVICE_STOPPED = "stopped"
FINISHED = ("ok", "failed", "skipped", "interrupted", "abandoned")
FAILURES = ("failed", "abandoned")  # the run ended in an error, or its process died


def _runs(conn: Connection, job: ScheduledJob, now: dt.datetime,
          own_run_id: str | None) -> tuple[list[Run], dict[str, dt.datetime]]:
    """The latest RECENT_RUNS runs of each status (running ones too), newest first, and the
    heartbeat of each."""
    r = ops_job_runs
    columns = (r.c.run_id, r.c.started_at, r.c.finished_at, r.c.status, r.c.error,
               r.c.stop_reason, r.c.heartbeat_at)
    counted = [r.c.tool == job.tool]
    if "--execute" in job.args:
        counted.append(r.c.dry_run.is_(False))
    parts = [
        select(*columns).where(*counted, r.c.status == status, r.c.finished_at <= now)
        .order_by(r.c.finished_at.desc()).limit(RECENT_RUNS).subquery()
        for status in FINISHED
    ]
    parts.append(select(*columns).where(
        *counted, r.c.status == "running", r.c.started_at <= now,
        r.c.run_id != (own_run_id or ""))
        .order_by(r.c.started_at.desc()).limit(RECENT_RUNS).subquery())
    rows = conn.execute(union_all(*(select(*part.c) for part in parts))).all()
    runs = [(Run(row.run_id, row.started_at, row.finished_at, row.status, row.error,
                 row.stop_reason), row.heartbeat_at) for row in rows]
    runs.sort(key=lambda pair: pair[0].started_at, reverse=True)
    return [run for run, _ in runs], {run.run_id: beat for run, beat in runs}


def first_ledger_start(conn: Connection) -> dt.datetime | None:
    """When the install's run ledger began (its first row, by primary key)."""
    r = ops_job_runs
    return conn.execute(select(r.c.started_at).order_by(r.c.id).limit(1)).scalar()


def judge(conn: Connection, jobs: Iterable[ScheduledJob], enabled: Iterable[str],
          grace: dict[str, int], now: dt.datetime, own_run_id: str | None = None) -> list[ToolHealth]:
    """Every job's freshness as of `now`; `grace` per tool (`*`: the others) over the schedule's."""
    enabled = set(enabled)
    installed = first_ledger_start(conn)
    tools = []
    for job in jobs:
        grace_seconds = grace.get(job.tool, grace.get("*", job.grace_seconds))
        runs, heartbeats = _runs(conn, job, now, own_run_id)
        health = ToolHealth(job.tool, job.cron, job.in_words(), job.optional, FRESH,
                            grace_seconds=grace_seconds, recent_runs=runs[:RECENT_RUNS])
        health.last_success = next((run for run in runs if run.status == "ok"), None)
        health.last_failure = next((run for run in runs if run.status in FAILURES), None)
        alive = now - dt.timedelta(seconds=ABANDONED_AFTER_SECONDS)
        going = [run for run in runs if run.status == "running" and heartbeats[run.run_id] >= alive]
        health.running_since = min((run.started_at for run in going), default=None)
        if job.optional and job.tool not in enabled:
            health.freshness = NOT_JUDGED
            tools.append(health)
            continue
        _judge_one(health, job, now, installed, runs)
        tools.append(health)
    service = judge_service(conn, now, own_run_id)
    if service is not None:
        tools.append(service)
    return tools


def judge_service(conn: Connection, now: dt.datetime,
                  own_run_id: str | None = None) -> ToolHealth | None:
    """The scheduler service's health by its heartbeat (None: this install never ran it)."""
    r = ops_job_runs
    rows = conn.execute(
        select(r.c.run_id, r.c.started_at, r.c.finished_at, r.c.status, r.c.error,
               r.c.stop_reason, r.c.heartbeat_at)
        .where(r.c.tool == SERVICE_TOOL, r.c.dry_run.is_(False), r.c.started_at <= now,
               r.c.run_id != (own_run_id or ""))
        .order_by(r.c.started_at.desc()).limit(RECENT_RUNS)).all()
    if not rows:
        return None
    runs = [Run(row.run_id, row.started_at, row.finished_at, row.status, row.error,
                row.stop_reason) for row in rows]
    health = ToolHealth(SERVICE_TOOL, "-", "service: heartbeat every 15 s", False, FRESH,
                        grace_seconds=SERVICE_DOWN_AFTER_SECONDS, recent_runs=runs)
    health.last_success = next((run for run in runs if run.status == "ok"), None)
    health.last_failure = next((run for run in runs if run.status in FAILURES), None)
    # A run skipped because another copy held the PID file did nothing: it is no sign of life,
    # nor of death.
    judged = [row for row in rows if row.status != "skipped"] or rows
    down_after = dt.timedelta(seconds=SERVICE_DOWN_AFTER_SECONDS)
    latest = next((row for row in judged if row.status == "running"
                   and now - row.heartbeat_at <= down_after), judged[0])
    silent = now - latest.heartbeat_at
    if latest.status == "running":
        health.running_since = latest.started_at
        if silent > down_after:
            health.freshness, health.state = DOWN, CRITICAL
            health.reasons.append(f"{SERVICE_TOOL} down: no heartbeat for "
                                  f"{duration_in_words(silent)}")
    elif latest.status in FAILURES:
        health.freshness, health.state = DOWN, CRITICAL
        health.reasons.append(f"{SERVICE_TOOL} down: its run {latest.status} "
                              f"{duration_in_words(silent)} ago")
    elif silent > down_after:
        health.freshness = SERVICE_STOPPED  # stopped on purpose (or a --once run, long ago)
    return health


def _judge_one(health: ToolHealth, job: ScheduledJob, now: dt.datetime,
               installed: dt.datetime | None, runs: list[Run]) -> None:
    # Without a success the install's start stands in for it: a tool that never ran at all is
    # only ever WARNING (a missing cron line), one that runs but never succeeds goes late and
    # down like a tool whose successes stopped.
    since = health.last_success.started_at if health.last_success else installed
    if since is None:
        health.freshness = NEVER_RUN
    else:
        health.next_expected_at = job.next_slot(since)
        late_at = health.next_expected_at + dt.timedelta(
            seconds=job.budget_seconds + health.grace_seconds)
        down_at = late_at + dt.timedelta(seconds=job.interval_seconds(health.next_expected_at))
        if not runs:
            health.freshness = NEVER_RUN
            if now > late_at:
                health.state = WARNING
                health.reasons.append(f"{job.tool} never run")
        elif now > down_at:
            health.freshness, health.state = DOWN, CRITICAL
            health.reasons.append(f"{job.tool} down: {_since_success(health, runs, now)}")
        elif now > late_at:
            health.freshness, health.state = LATE, WARNING
            health.reasons.append(
                f"{job.tool} late by {duration_in_words(now - health.next_expected_at)}"
                if health.last_success else f"{job.tool} late: {_since_success(health, runs, now)}")
    if health.running_since is not None:
        going_for = now - health.running_since
        if going_for.total_seconds() > job.budget_seconds + health.grace_seconds:
            if health.state == OK:
                health.freshness = RUNNING_TOO_LONG
            health.state = max(health.state, WARNING)
            health.reasons.append(f"{job.tool} running for {duration_in_words(going_for)}")


def _since_success(health: ToolHealth, runs: list[Run], now: dt.datetime) -> str:
    """'no success for 3d 10h', or for a tool that runs but never succeeded 'no success yet,
    3 failures' ('20+' where the latest RECENT_RUNS of a status were all read)."""
    if health.last_success is not None:
        return f"no success for {duration_in_words(now - health.last_success.started_at)}"
    failures = [run for run in runs if run.status in FAILURES]
    counted, noun = (failures, "failure") if failures else (runs, "run")
    full = any(sum(run.status == status for run in counted) >= RECENT_RUNS
               for status in {run.status for run in counted})
    plural = "s" if len(counted) != 1 else ""
    return f"no success yet, {len(counted)}{'+' if full else ''} {noun}{plural}"


def duration_in_words(span: dt.timedelta) -> str:
    """A duration the way a pager shows it: 2d 3h, 2h 3m, 4m 10s, 12s."""
    seconds = max(0, int(span.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {seconds}s" if seconds else f"{minutes}m"
    return f"{seconds}s"

