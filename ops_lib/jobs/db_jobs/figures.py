"""Queue health's figures of the DB jobs (`dbjobs`): the worker's dry run and queue health share them.

due = jobs whose slot is due and not run (latency: since the oldest such slot); delayed = due but
backing off after a failure; dead, failed in the last hour, done in the last 15 minutes = their
`cron_job_runs` rows (the `(status, finished_at)` index); invalid = rows that cannot run (judged
now, as the worker would); overdue = recurring jobs not run for three intervals. A job being run
is not told apart from a due one (no claim column: the lock on its row is the claim).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, func, select

from ...schema import cron_job_runs
from ..queue_health.model import QueueHealth
from . import slots
from .runner import Checked, check

NAME = "dbjobs"


def figures(conn: Connection, now: dt.datetime, checked: Checked | None = None) -> QueueHealth:
    checked = checked or check(conn, read_users=False)
    due = checked.due(now)
    runs = cron_job_runs.c

    def count(*where) -> int:
        return conn.execute(select(func.count()).select_from(cron_job_runs)
                            .where(*where)).scalar_one()

    oldest = min((d.slot for _job, d in due), default=None)
    return QueueHealth(
        NAME, cron_job_runs.name, True,
        due=len(due), delayed=len(checked.backing_off(now)), claimed=0, expired=0,
        dead=count(runs.status == "failed"),
        failed_last_hour=count(runs.status == "failed",
                               runs.finished_at >= now - dt.timedelta(hours=1),
                               runs.finished_at <= now),
        done_last_15_minutes=count(runs.status == "done",
                                   runs.finished_at >= now - dt.timedelta(minutes=15),
                                   runs.finished_at <= now),
        latency_seconds=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        invalid=len(checked.invalid),
        overdue=sum(1 for job in checked.jobs if slots.overdue(job, now)),
    )
