"""Queue health: queue depth and latency, and every scheduled tool's freshness.

One read-only check, Nagios style: it builds one HealthReport (figures.py, freshness.py), judges it
against the thresholds (settings `health_*`), and every output is drawn from that report: the pager
line and perfdata, the JSON, the node_exporter textfile, the status page and the alert.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
from typing import Iterator

from sqlalchemy import Connection, event
from sqlalchemy.exc import DBAPIError

from ...db import mysql_error_code
from ...errors import OpsError
from ...files import write_atomically
from ...queue import QUEUES
from ...result import JobResult
from ...runtime import RunContext
from ...schedule import SCHEDULE
from ...settings import SETTINGS, per_item
from ...timeutil import utcnow
from . import freshness, outputs
from .figures import queue_figures
from .model import CRITICAL, NOT_JUDGED, OK, STATE_NAMES, WARNING, HealthReport, QueueHealth

log = logging.getLogger("ops")
RECENT_FAILURES = 10
# MariaDB's "Query execution was interrupted (max_statement_time exceeded)", MySQL's "maximum
# statement execution time exceeded".
STATEMENT_TIMEOUTS = (1969, 3024)


class CheckTimedOut(OpsError):
    """The check's own --timeout passed before it could finish (exit 3, UNKNOWN)."""


def thresholds(settings, queue: str) -> dict[str, int | None]:
    """The depth and latency thresholds of one queue: its own value, else the setting's `*`,
    else the default's `*` (naming one queue keeps the others at the default)."""
    def value(name: str) -> int | None:
        return per_item(getattr(settings, name), queue, SETTINGS[name].default.get("*"))

    return {
        "depth_warning": value("health_queue_depth_warning"),
        "depth_critical": value("health_queue_depth_critical"),
        "latency_warning": value("health_queue_latency_warning_seconds"),
        "latency_critical": value("health_queue_latency_critical_seconds"),
    }


def judge_queue(queue: QueueHealth, limits: dict[str, int | None]) -> None:
    """Depth and latency against their thresholds; expired claims and rows dead-lettered in the
    last hour are a WARNING (a worker died; something fails for good); older dead rows are the
    dead-letter tool's business, not an alarm."""
    found: list[tuple[int, str]] = []

    def over(value: float | None, warning: int | None, critical: int | None) -> int:
        if value is None:
            return OK
        if critical is not None and value >= critical:
            return CRITICAL
        if warning is not None and value >= warning:
            return WARNING
        return OK

    depth = over(queue.due, limits["depth_warning"], limits["depth_critical"])
    if depth:
        found.append((depth, f"{queue.name} {outputs.figure(queue.due, 'due' in queue.capped)} "
                             "due"))
    latency = over(queue.latency_seconds, limits["latency_warning"], limits["latency_critical"])
    if latency:
        found.append((latency, f"{queue.name} latency {outputs.latency_words(queue)}"))
    if queue.expired:
        found.append((WARNING, f"{queue.name} {queue.expired:,} expired claims"))
    if queue.failed_last_hour:
        found.append((WARNING, f"{queue.name} {queue.failed_last_hour:,} failed in the last hour"))
    if queue.invalid:
        found.append((WARNING, f"{queue.name} {queue.invalid:,} invalid jobs"))
    if queue.overdue:
        found.append((WARNING, f"{queue.name} {queue.overdue:,} recurring jobs not run for "
                               "3 intervals"))
    found.sort(key=lambda pair: -pair[0])
    queue.state = max((state for state, _ in found), default=OK)
    queue.reasons = [reason for _, reason in found]


@contextlib.contextmanager
def deadline(conn: Connection, timeout: float | None) -> Iterator[None]:
    """Every statement on `conn` must end before `timeout` seconds from now: on MariaDB each
    carries `SET STATEMENT max_statement_time` (the server stops it, a lock wait too), on MySQL
    the `MAX_EXECUTION_TIME` hint; on SQLite a lock wait ends with the busy timeout and a
    watchdog interrupts a running statement."""
    if timeout is None:
        yield
        return
    ends = time.monotonic() + timeout
    dialect = conn.dialect
    is_sqlite = dialect.name == "sqlite"
    is_mariadb = getattr(dialect, "is_mariadb", False)

    def bounded(_conn, _cursor, statement, parameters, _context, _many):
        left = ends - time.monotonic()
        if left <= 0:
            raise CheckTimedOut(f"timed out: the check took longer than --timeout {timeout:g} s")
        if is_mariadb:
            statement = f"SET STATEMENT max_statement_time={left:.3f} FOR {statement}"
        elif not is_sqlite and statement.lstrip().upper().startswith("SELECT"):
            statement = statement.replace(
                "SELECT", f"SELECT /*+ MAX_EXECUTION_TIME({max(1, int(left * 1000))}) */", 1)
        return statement, parameters

    event.listen(conn, "before_cursor_execute", bounded, retval=True)
    raw = conn.connection.dbapi_connection
    watchdog, busy_timeout = None, None
    if is_sqlite:
        busy_timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
        conn.exec_driver_sql(f"PRAGMA busy_timeout={max(1, int(timeout * 1000))}")
        watchdog = threading.Timer(timeout, raw.interrupt)
        watchdog.daemon = True
        watchdog.start()
    try:
        yield
    except DBAPIError as exc:
        if time.monotonic() >= ends or mysql_error_code(exc) in STATEMENT_TIMEOUTS:
            raise CheckTimedOut(f"timed out: the check took longer than --timeout {timeout:g} s "
                                "(a query was still waiting or running)") from exc
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()
        event.remove(conn, "before_cursor_execute", bounded)
        if busy_timeout is not None:
            with contextlib.suppress(Exception):
                raw.execute(f"PRAGMA busy_timeout={int(busy_timeout)}")


def build_report(conn: Connection, ctx: RunContext, now: dt.datetime) -> HealthReport:
    s = ctx.settings
    queues = []
    for queue in QUEUES.values():
        figures = queue_figures(conn, queue, now)
        judge_queue(figures, thresholds(s, queue.name))
        queues.append(figures)
    from ..db_jobs.figures import figures as db_jobs_figures  # (it imports this package's model)

    jobs = db_jobs_figures(conn, now)  # the jobs the web app defines (not a claimable queue)
    judge_queue(jobs, thresholds(s, jobs.name))
    queues.append(jobs)
    tools = freshness.judge(conn, SCHEDULE, s.optional_jobs, s.health_grace_seconds, now,
                            own_run_id=ctx.run_id)
    failures = sorted(((tool.tool, run) for tool in tools for run in tool.recent_runs
                       if run.status in freshness.FAILURES),
                      key=lambda pair: pair[1].finished_at or pair[1].started_at, reverse=True)
    report = HealthReport(now, ctx.db.display_url, queues, tools, failures[:RECENT_FAILURES])
    report.state = max((item.state for item in [*queues, *tools]), default=OK)
    found = outputs.problems(report)
    report.worst = found[0][1] if found else ""
    return report


def _when(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _sections(result: JobResult, report: HealthReport) -> None:
    # Numbers stay numbers (JSON, and the renderer's own formatting); `capped` names the figures
    # that stopped at the cap ("at least").
    result.section("Queues", [{
        "queue": q.name, "due": q.due, "delayed": q.delayed, "claimed": q.claimed,
        "expired": q.expired, "dead": q.dead, "failed_1h": q.failed_last_hour,
        "done_15m": q.done_last_15_minutes, "invalid": q.invalid, "overdue": q.overdue,
        "latency": outputs.latency_words(q),
        "latency_seconds": outputs.whole_seconds(q),  # rounded down, as the perfdata
        "state": STATE_NAMES[q.state], "capped": ", ".join(sorted(q.capped)) or None,
    } for q in report.queues])
    now = report.checked_at
    result.section("Tools", [{
        "tool": t.tool,
        "schedule": t.schedule_in_words,
        "freshness": t.freshness,
        "last_success": _when(t.last_success.started_at if t.last_success else None),
        "last_failure": _when(t.last_failure.finished_at if t.last_failure else None),
        "running_for": (freshness.duration_in_words(now - t.running_since)
                        if t.running_since else "-"),
        "next_expected": _when(t.next_expected_at),
        "state": STATE_NAMES[t.state] if t.freshness != NOT_JUDGED else "-",
    } for t in report.tools])
    if report.failures:
        result.section("Failures", [{
            "tool": tool, "finished": _when(run.finished_at), "status": run.status,
            "error": (run.error or run.stop_reason or "-").splitlines()[0][:200],
        } for tool, run in report.failures])


def run(ctx: RunContext, perfdata: bool = False, prometheus: str | None = None,
        html: str | None = None, alert: bool = False, timeout: float | None = None,
        now: dt.datetime | None = None) -> JobResult:
    """Check every queue and every scheduled tool as of `now` (default: the clock)."""
    now = now or utcnow()
    result = JobResult(ctx.tool, ctx.dry_run)
    started = time.monotonic()
    with ctx.db.begin(write=False) as conn, deadline(conn, timeout):
        report = build_report(conn, ctx, now)
    result.timings["check"] = time.monotonic() - started

    _sections(result, report)
    result.counts = {
        "state": report.state,
        "problems": len(outputs.problems(report)),
        "due": sum(q.due or 0 for q in report.queues),
        "expired": sum(q.expired for q in report.queues),
        "failed_last_hour": sum(q.failed_last_hour or 0 for q in report.queues),
        "tools_not_fresh": sum(1 for t in report.tools if t.state != OK),
    }
    line = outputs.pager_line(report)
    if perfdata:
        line += " | " + outputs.perfdata(
            report, {q.name: thresholds(ctx.settings, q.name) for q in report.queues})
    result.headline = line
    result.exit_code = report.state
    result.stop_reason = f"checked: {report.state_name}"
    # The alert first: a file that cannot be written must not keep a real problem from it.
    if alert:
        from .alerting import alert_on_change

        note = alert_on_change(ctx, report)
        if note:
            result.notes.append(note)
    if prometheus:
        _write_output(result, "Prometheus textfile", prometheus,
                      lambda: write_atomically(prometheus, outputs.prometheus_text(report)))
    if html:
        from ..archive_hot_path import readiness_rows
        from .page import write_status_page

        _write_output(result, "status page", html,
                      lambda: write_status_page(html, report, readiness_rows(ctx, now)))
    return result


def _write_output(result: JobResult, what: str, path: str, write) -> None:
    """Write one output file; a failure is an error line and a note, and the check's own state
    stands (the pager still learns what the check found)."""
    try:
        write()
    except OSError as exc:
        log.error("%s not written to %s: %s", what, path, exc.strerror or exc)
        result.notes.append(f"{what} NOT written to {path}: {exc.strerror or exc}")
        result.add("outputs_not_written")
    else:
        result.notes.append(f"{what} written: {path}")


def check_outputs(prometheus: str | None, html: str | None) -> list[str]:
    """Output files whose folder does not exist or is not writable (before connecting)."""
    problems = []
    for option, path in (("--prometheus", prometheus), ("--html", html)):
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            problems.append(f"{option} {path}: folder {folder} does not exist")
        elif not os.access(folder, os.W_OK):
            problems.append(f"{option} {path}: folder {folder} is not writable")
    return problems

