"""What one queue-health check found: the one structure every output is drawn from (the pager
line and perfdata, the JSON, the Prometheus textfile, the status page, the alert)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

# Nagios plugin convention; also the exit code.
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

# Freshness of a scheduled tool.
FRESH = "ok"
LATE = "late"
DOWN = "down"
RUNNING_TOO_LONG = "running too long"
NEVER_RUN = "never run"
NOT_JUDGED = "optional, not enabled"


@dataclass
class QueueHealth:
    """One queue's figures. None: the queue cannot tell (marker queues keep no finished rows)."""

    name: str
    table: str
    has_status: bool
    due: int | None = 0  # pending, available now, not claimed
    delayed: int | None = 0  # pending, not available yet (a retry backing off)
    claimed: int = 0  # held by a run whose lease is live
    expired: int = 0  # held by a run whose lease ran out (that run died)
    dead: int | None = 0  # dead-lettered
    failed_last_hour: int | None = 0
    done_last_15_minutes: int | None = 0
    latency_seconds: float | None = None  # now - when the oldest due row became available
    invalid: int | None = None  # DB jobs only: rows that cannot run (unknown type, ...)
    overdue: int | None = None  # DB jobs only: recurring jobs not run for three intervals
    capped: set[str] = field(default_factory=set)  # figures counted only up to the cap ("N+")
    state: int = OK
    reasons: list[str] = field(default_factory=list)  # why not OK, one short phrase each


@dataclass
class Run:
    """One run of a tool, from the run ledger (for the status page's strip and the failures)."""

    run_id: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    status: str  # ok | failed | skipped | interrupted | abandoned | running
    error: str | None = None
    stop_reason: str | None = None

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass
class ToolHealth:
    """One scheduled tool's freshness, judged by its schedule and its --execute runs."""

    tool: str
    cron: str
    schedule_in_words: str
    optional: bool
    freshness: str  # FRESH, LATE, DOWN, RUNNING_TOO_LONG, NEVER_RUN, NOT_JUDGED
    last_success: Run | None = None
    last_failure: Run | None = None
    running_since: dt.datetime | None = None  # the oldest run going now
    next_expected_at: dt.datetime | None = None  # when the next success is due, grace excluded
    grace_seconds: int = 0
    recent_runs: list[Run] = field(default_factory=list)  # newest first
    state: int = OK
    reasons: list[str] = field(default_factory=list)


@dataclass
class HealthReport:
    checked_at: dt.datetime  # naive UTC
    database: str  # the URL with its password hidden
    queues: list[QueueHealth]
    tools: list[ToolHealth]
    failures: list[tuple[str, Run]] = field(default_factory=list)  # (tool, run), newest first
    state: int = OK
    worst: str = ""  # the item that decided the state, named on the pager line

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]
