"""The schedule: which tools run when, said once.

Queue health judges every tool's freshness by it; `crontab.example`, the Task Scheduler XML and the
systemd units are generated from it (ops_lib/schedule_files.py, tools/manage_schedule.py), and the
scheduler service runs it. The cadence is SPEC.md's (the platform's maintenance page): the workers
every minute with overlapping runs, billing daily off-peak, the archive nightly, queue health every
15 minutes, stale devices monthly; the monthly checks and the nightly export are optional, enabled
per host with the `optional_jobs` setting; a few support tools are never scheduled at all
(`MANUAL_ONLY`).

Cron expressions are in UTC, five fields, and parsed by croniter (a well-kept parser, the one
Airflow and Celery's users lean on), never by hand.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

MINUTE = 60
HOUR = 3600
DAY = 86400


@dataclass(frozen=True)
class ScheduledJob:
    """One tool on the schedule."""

    tool: str  # tools/<tool>.py
    cron: str  # five fields, UTC
    args: tuple[str, ...]  # what the runner passes (--execute included where the tool writes)
    budget_seconds: int  # how long one run may take (its --max-runtime where it has one)
    overlap: bool  # may a copy start while the last one still runs (rows are claimed)
    catch_up: bool  # after downtime, run once for the slots missed (systemd Persistent=)
    grace_seconds: int  # late once this much past the run expected after the last success
    what: str  # the job in a few words, for the status page and the generated files
    optional: bool = False  # runs only where `optional_jobs` names it
    why_optional: str = ""
    max_copies: int = 1  # copies that may run at once (more than 1 only where overlap is True)
    # Heavy jobs start up to this late at random (systemd RandomizedDelaySec), so hosts sharing
    # one database server do not all start them in the same second.
    randomized_delay_seconds: int = 0

    @property
    def time_limit_seconds(self) -> int:
        """How long a run may last before its runner stops it: its budget plus its grace."""
        return self.budget_seconds + self.grace_seconds

    @property
    def script(self) -> str:
        return f"tools/{self.tool}.py"

    def command(self) -> list[str]:
        return [self.script, *self.args]

    def next_slot(self, after: dt.datetime) -> dt.datetime:
        """The first slot strictly after `after` (naive UTC)."""
        return _cron(self.cron, after).get_next(dt.datetime)

    def previous_slot(self, at_or_before: dt.datetime) -> dt.datetime:
        """The last slot at or before `at_or_before` (naive UTC)."""
        nudged = at_or_before + dt.timedelta(seconds=1)
        return _cron(self.cron, nudged).get_prev(dt.datetime)

    def interval_seconds(self, around: dt.datetime) -> float:
        """The gap between the two slots that follow `around` (cron gaps can vary: months)."""
        first = self.next_slot(around)
        return (self.next_slot(first) - first).total_seconds()

    def in_words(self) -> str:
        return describe_cron(self.cron)


def _cron(expression: str, start: dt.datetime):
    from croniter import croniter  # here: a tool's --help never loads it

    return croniter(expression, start)


def is_valid_cron(expression: str) -> bool:
    from croniter import croniter

    return len(expression.split()) == 5 and croniter.is_valid(expression)


def describe_cron(expression: str) -> str:
    """A cron expression in words, for the shapes the schedule uses; the expression otherwise."""
    minute, hour, day, month, weekday = expression.split()
    at = f"{int(hour):02d}:{int(minute):02d} UTC" if hour.isdigit() and minute.isdigit() else None
    if expression == "* * * * *":
        return "every minute"
    if minute.startswith("*/") and (hour, day, month, weekday) == ("*", "*", "*", "*"):
        return f"every {minute[2:]} minutes"
    if at and (day, month, weekday) == ("*", "*", "*"):
        return f"daily at {at}"
    if at and day == "*" and month == "*" and weekday.isdigit():
        names = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
        return f"weekly on {names[int(weekday) % 7]} at {at}"
    if at and day.isdigit() and (month, weekday) == ("*", "*"):
        return f"monthly on day {int(day)} at {at}"
    return f"cron {expression} (UTC)"


SCHEDULE: tuple[ScheduledJob, ...] = (
    ScheduledJob(
        "run_background_workers", "* * * * *", ("500", "--execute", "--max-runtime", "240",
                                                "--quiet"),
        budget_seconds=240, overlap=True, catch_up=False, grace_seconds=5 * MINUTE,
        max_copies=5,  # a run lasts up to its 4-minute budget: five minutes' runs at once
        what="drain the queues: scans, fan-out, push, roll-ups, snapshots, report emails"),
    ScheduledJob(
        "queue_health_summary", "*/15 * * * *", ("--alert", "--quiet"),
        budget_seconds=60, overlap=False, catch_up=False, grace_seconds=10 * MINUTE,
        what="queue depth and latency, and every scheduled tool's freshness"),
    ScheduledJob(
        "run_billing_jobs", "10 1 * * *", ("--execute", "--quiet"),
        budget_seconds=HOUR, overlap=False, catch_up=True, grace_seconds=2 * HOUR,
        randomized_delay_seconds=10 * MINUTE,
        what="invoices, reminders, grace-period restriction and restore"),
    ScheduledJob(
        "archive_hot_path_data", "30 2 * * *", ("1000", "--execute", "--max-runtime", "3600",
                                                "--quiet"),
        budget_seconds=HOUR, overlap=False, catch_up=True, grace_seconds=2 * HOUR,
        randomized_delay_seconds=10 * MINUTE,
        what="move old notifications, audit logs and payments to their archive tables"),
    ScheduledJob(
        "cleanup_stale_devices", "15 3 1 * *", ("5000", "--execute", "--quiet"),
        budget_seconds=30 * MINUTE, overlap=False, catch_up=True, grace_seconds=DAY,
        what="deactivate device tokens not seen for stale_device_days"),
    ScheduledJob(
        "export_operational_warehouse_batch", "0 4 * * *",
        ("attendance_records", "--execute", "--quiet"),
        budget_seconds=HOUR, overlap=False, catch_up=True, grace_seconds=3 * HOUR,
        randomized_delay_seconds=10 * MINUTE,
        what="export the next batch of attendance records to Parquet for analytics",
        optional=True, why_optional="only where a warehouse or analytics engine reads the files"),
    ScheduledJob(
        "shadow_reporting_validation", "0 5 2 * *", ("--quiet",),
        budget_seconds=HOUR, overlap=False, catch_up=False, grace_seconds=DAY,
        what="compare reporting figures between the primary and the replica",
        optional=True, why_optional="only where reports read a replica or a warehouse copy"),
    ScheduledJob(
        "check_schema_drift", "0 6 1 * *", ("--quiet",),
        budget_seconds=30 * MINUTE, overlap=False, catch_up=False, grace_seconds=DAY,
        what="compare the live schema with schema.sql (after the monthly backup)",
        optional=True, why_optional="its report is read by a person; it changes nothing"),
    ScheduledJob(
        "generate_missing_index_sql", "30 6 1 * *", ("--quiet",),
        budget_seconds=30 * MINUTE, overlap=False, catch_up=False, grace_seconds=DAY,
        what="print the index DDL the live database lacks, for review (never applied)",
        optional=True, why_optional="its SQL is reviewed by a person and never auto-applied"),
)

# Support tools that are never scheduled, and why.
MANUAL_ONLY: dict[str, str] = {
    "import_ipemis_locations": "the upstream source can be unreliable: run by hand, dry run first",
    "manage_schema": "creates or resets a schema: a person decides",
    "manage_db_users": "creates database users and grants: the server's administrator decides",
    "generate_synthetic_load": "fills a test database with made-up data",
    "manage_dead_letters": "a person decides which failed rows to retry or forget",
    "manage_db_jobs": "a person pauses, resumes or runs the web app's jobs (the worker runs them)",
    "manage_schedule": "writes this schedule's files and installs the crontab: a person does it",
}

BY_TOOL: dict[str, ScheduledJob] = {job.tool: job for job in SCHEDULE}


def active_jobs(optional_jobs: Iterable[str] = ()) -> list[ScheduledJob]:
    """The jobs this host runs: every required one, and the optional ones it enables."""
    enabled = set(optional_jobs)
    return [job for job in SCHEDULE if not job.optional or job.tool in enabled]
