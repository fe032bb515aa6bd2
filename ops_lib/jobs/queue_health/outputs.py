"""The check's outputs drawn from one HealthReport: the pager line, Nagios perfdata and the
node_exporter textfile (the JSON and the status page draw from the same report)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from ...render import more_count
from .freshness import duration_in_words
from .model import FRESH, NEVER_RUN, NOT_JUDGED, HealthReport, QueueHealth

PAGER_WIDTH = 79  # a pager shows the first line, under 80 characters before any perfdata


def figure(value: int | None, capped: bool = False) -> str:
    """A count as people read it: 1,234; '1,000,000+' at the cap; '-' where it cannot be told."""
    if value is None:
        return "-"
    return f"{value:,}+" if capped else f"{value:,}"


def latency_words(queue: QueueHealth) -> str:
    if queue.latency_seconds is None:
        return "-"
    return duration_in_words(dt.timedelta(seconds=queue.latency_seconds))


def problems(report: HealthReport) -> list[tuple[int, str]]:
    """(state, reason) of every problem, worst first (queues before tools on a tie)."""
    found = [(item.state, reason) for item in [*report.queues, *report.tools]
             for reason in item.reasons]
    return sorted(found, key=lambda pair: -pair[0])


def pager_line(report: HealthReport) -> str:
    """'QUEUES CRITICAL: scans latency 2h 3m; 2 more problems' (the worst item named)."""
    prefix = f"QUEUES {report.state_name}: "
    found = problems(report)
    if not found:
        due = sum(q.due or 0 for q in report.queues)
        oldest = max((q.latency_seconds for q in report.queues
                      if q.latency_seconds is not None), default=None)
        judged = [t for t in report.tools if t.freshness != NOT_JUDGED]
        fresh = sum(t.freshness in (FRESH, NEVER_RUN) for t in judged)
        waiting = f"{due:,} due" + (
            f", oldest {duration_in_words(dt.timedelta(seconds=oldest))}" if oldest is not None
            else "")
        text = f"{waiting}; {fresh} of {len(judged)} tools on time"
        return _fit(prefix, text, "")
    more = len(found) - 1
    rest = f"; {more_count(more, 'problem')}" if more else ""
    return _fit(prefix, found[0][1], rest)


def _fit(prefix: str, text: str, rest: str) -> str:
    room = PAGER_WIDTH - len(prefix) - len(rest)
    if len(text) > room:
        text = text[:room - 3].rstrip() + "..."
    return prefix + text + rest


def _label(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def whole_seconds(queue: QueueHealth) -> int | None:
    """The latency in whole seconds, rounded down: `latency >= threshold` holds exactly when
    the whole seconds do (thresholds are whole), so every output agrees with the state."""
    if queue.latency_seconds is None:
        return None
    return math.floor(queue.latency_seconds)


def _nagios_warn(threshold: int | None) -> str:
    """A Nagios range `N` alerts on value > N; the check alerts at value >= its threshold (a
    whole number, as are the figures), so the range is one below it."""
    return "" if threshold is None else str(threshold - 1)


def perfdata(report: HealthReport, thresholds: dict[str, dict[str, int | None]]) -> str:
    """Nagios perfdata: 'label'=value[UOM];warn;crit;min;max per queue figure, latency in s;
    each range alerts exactly where the check's state does."""
    parts = []
    for queue in report.queues:
        limits = thresholds.get(queue.name, {})
        parts.append(f"{_label(queue.name + ' due')}={queue.due or 0};"
                     f"{_nagios_warn(limits.get('depth_warning'))};"
                     f"{_nagios_warn(limits.get('depth_critical'))};0;")
        parts.append(f"{_label(queue.name + ' latency')}={whole_seconds(queue) or 0}s;"
                     f"{_nagios_warn(limits.get('latency_warning'))};"
                     f"{_nagios_warn(limits.get('latency_critical'))};0;")
        # Any expired claim, any row failed in the last hour, any tool not fresh: WARNING.
        parts.append(f"{_label(queue.name + ' expired')}={queue.expired};0;;0;")
        if queue.failed_last_hour is not None:
            parts.append(f"{_label(queue.name + ' failed 1h')}={queue.failed_last_hour};0;;0;")
        for figure_name in ("invalid", "overdue"):  # DB jobs: any is a WARNING
            if getattr(queue, figure_name) is not None:
                parts.append(f"{_label(queue.name + ' ' + figure_name)}="
                             f"{getattr(queue, figure_name)};0;;0;")
    late = sum(1 for tool in report.tools if tool.state != 0)
    down = sum(1 for tool in report.tools if tool.state >= 2)  # down: CRITICAL
    parts.append(f"{_label('tools not fresh')}={late};0;;0;")
    parts.append(f"{_label('tools down')}={down};;0;0;")
    return " ".join(parts)


def _timestamp(moment: dt.datetime) -> float:
    return moment.replace(tzinfo=dt.timezone.utc).timestamp()


QUEUE_GAUGES = (
    # (metric, help, attribute)
    ("ops_queue_due_rows", "Rows waiting and available now, not claimed.", "due"),
    ("ops_queue_delayed_rows", "Rows waiting for a later available_at (retries backing off).",
     "delayed"),
    ("ops_queue_claimed_rows", "Rows held by a run whose lease is live.", "claimed"),
    ("ops_queue_expired_claims", "Rows held by a run whose lease ran out (that run died).",
     "expired"),
    ("ops_queue_dead_rows", "Dead-lettered rows.", "dead"),
    ("ops_queue_failed_last_hour_rows", "Rows dead-lettered in the last hour.",
     "failed_last_hour"),
    ("ops_queue_done_last_15_minutes_rows", "Rows finished in the last 15 minutes.",
     "done_last_15_minutes"),
    ("ops_queue_latency_seconds", "Now minus when the oldest due row became available.",
     "latency_seconds"),
    ("ops_queue_invalid_jobs", "DB jobs that cannot run (unknown job_type, no schedule, ...).",
     "invalid"),
    ("ops_queue_overdue_jobs", "Recurring DB jobs not run for three intervals.", "overdue"),
    ("ops_queue_state", "Queue state: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.", "state"),
)


def prometheus_text(report: HealthReport) -> str:
    """The node_exporter textfile: HELP and TYPE lines, gauges, no sample timestamps."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()

    def gauge(name: str, help_text: str, labels: tuple[str, ...] = ()) -> Any:
        return Gauge(name, help_text, labels, registry=registry)

    for name, help_text, attribute in QUEUE_GAUGES:
        metric = gauge(name, help_text, ("queue",))
        for queue in report.queues:
            value = getattr(queue, attribute)
            if value is not None:  # a marker queue cannot tell: no sample rather than a 0
                metric.labels(queue=queue.name).set(value)
    capped = gauge("ops_queue_count_capped", "1 where a count stopped at the cap (at least).",
                   ("queue", "figure"))
    for queue in report.queues:
        for name in sorted(queue.capped):
            capped.labels(queue=queue.name, figure=name).set(1)

    last_success = gauge("ops_tool_last_success_timestamp_seconds",
                         "Start of the scheduled tool's last successful run (Unix time).",
                         ("tool",))
    running = gauge("ops_tool_running_seconds",
                    "How long the oldest run going now has been going (0: none).", ("tool",))
    judged = gauge("ops_tool_state", "Tool freshness state: 0 OK, 1 WARNING, 2 CRITICAL "
                   "(late, down, running too long, never run).", ("tool",))
    next_expected = gauge("ops_tool_next_expected_timestamp_seconds",
                          "Slot the next run is expected at (Unix time).", ("tool",))
    for tool in report.tools:
        if tool.freshness == NOT_JUDGED:
            continue
        if tool.last_success is not None:
            last_success.labels(tool=tool.tool).set(_timestamp(tool.last_success.started_at))
        if tool.next_expected_at is not None:
            next_expected.labels(tool=tool.tool).set(_timestamp(tool.next_expected_at))
        running.labels(tool=tool.tool).set(
            (report.checked_at - tool.running_since).total_seconds()
            if tool.running_since is not None else 0)
        judged.labels(tool=tool.tool).set(tool.state)

    gauge("ops_queue_health_state", "Overall state: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.") \
        .set(report.state)
    gauge("ops_queue_health_check_timestamp_seconds",
          "When this check ran (Unix time): an old value means the check stopped running.") \
        .set(_timestamp(report.checked_at))
    return generate_latest(registry).decode("utf-8")

