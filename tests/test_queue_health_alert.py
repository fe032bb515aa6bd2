"""queue_health_summary.py --alert: once on a worsening, once on recovery, never in between.

A real SMTP server (aiosmtpd) takes the emails and a local HTTP server records the pings
(healthchecks.io style: the base URL for success, /fail for a failure). The previous state comes
from the run ledger, written here with explicit times.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from sqlalchemy import insert

from ops_lib import alerts
from ops_lib.jobs.queue_health.alerting import alert_due, alert_on_change, previous_alert_state
from ops_lib.jobs.queue_health.model import (
    CRITICAL,
    LATE,
    OK,
    UNKNOWN,
    WARNING,
    HealthReport,
    QueueHealth,
    ToolHealth,
)
from ops_lib.ledger import new_run_id
from ops_lib.result import JobResult
from ops_lib.runtime import StopSignal
from ops_lib.schema import ops_job_runs
from tests.conftest import job_context

TOOL = "queue_health_summary"
START = dt.datetime(2026, 11, 2, 8, 0, 0)
RECIPIENT = "oncall@school.test"


@pytest.fixture
def ctx(db_url, tmp_path, smtp, pings):
    context = job_context(db_url, tmp_path, dry_run=True, OPS_ALERT_EMAIL=RECIPIENT,
                          OPS_SMTP_HOST=smtp.host, OPS_SMTP_PORT=str(smtp.port),
                          OPS_ALERT_PING_URL=pings.url, OPS_ALERT_TIMEOUT_SECONDS="5")
    context = dataclasses.replace(context, tool=TOOL)
    yield context
    context.db.engine.dispose()


def report(state: int, at: dt.datetime) -> HealthReport:
    """A report whose state comes from the scans queue (CRITICAL, WARNING) or is OK."""
    scans = QueueHealth("scans", "attendance_scan_queue", True, due=5000, latency_seconds=1260.0,
                        state=state if state != UNKNOWN else OK,
                        reasons=["latency 21 min > 10 min"] if state in (WARNING, CRITICAL)
                        else [])
    billing = ToolHealth("run_billing_jobs", "10 1 * * *", "daily at 01:10 UTC", False,
                         LATE if state == CRITICAL else "ok",
                         state=WARNING if state == CRITICAL else OK,
                         reasons=["late: last success 27 hours ago"] if state == CRITICAL else [])
    return HealthReport(checked_at=at, database="sqlite:///ops.db", queues=[scans],
                        tools=[billing], state=state,
                        worst="scans latency" if state in (WARNING, CRITICAL) else "")


class Ledger:
    """Writes queue health's runs as run_tool would, each at an explicit time."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.at = START

    def record(self, state: int | None, alert: bool, status: str = "ok",
               run_id: str | None = None) -> None:
        args = {"alert": True, "quiet": True} if alert else {"json_output": True}
        counts = {"state": state, "queues": 1} if state is not None else {}
        row = dict(run_id=run_id or new_run_id(), tool=TOOL, host="test", pid=1,
                   args=json.dumps(args),
                   dry_run=True, started_at=self.at, heartbeat_at=self.at,
                   finished_at=self.at + dt.timedelta(seconds=2), status=status,
                   stop_reason="no more work" if status == "ok" else "error",
                   counts=json.dumps(counts))
        self.ctx.db.run(lambda conn: conn.execute(insert(ops_job_runs).values(**row)))
        self.at += dt.timedelta(minutes=15)

    def previous(self) -> int | None:
        """The previous state as the next run (a new run id) would find it."""
        return previous_alert_state(dataclasses.replace(self.ctx, run_id=new_run_id()))

    def check(self, state: int, alert: bool = True) -> str | None:
        """One run of queue health finding `state`: --alert decides, then the row is closed."""
        self.ctx = dataclasses.replace(self.ctx, run_id=new_run_id())
        note = alert_on_change(self.ctx, report(state, self.at)) if alert else None
        self.record(state, alert, status="failed" if state == UNKNOWN else "ok",
                    run_id=self.ctx.run_id)
        return note


def sent(smtp, pings) -> list[tuple[str, str]]:
    """(email subject, ping path) per alert so far, paired in order."""
    subjects = [m["Subject"] for m in smtp.messages]
    paths = pings.paths()
    assert len(subjects) == len(paths), (subjects, paths)
    return list(zip(subjects, paths))


def test_alert_sends_once_on_worsening_and_once_on_recovery_whatever_runs_in_between(
        ctx, smtp, pings):
    ledger = Ledger(ctx)
    base = "/ping/health-check"

    assert ledger.check(OK) is None
    assert sent(smtp, pings) == []

    note = ledger.check(CRITICAL)
    assert note == "alert sent (email and ping): OK -> CRITICAL (scans latency)"
    [(subject, path)] = sent(smtp, pings)
    assert subject.startswith("[ops] queue health CRITICAL on ")
    assert subject.endswith(": scans latency")
    assert path == f"{base}/fail"

    assert ledger.check(CRITICAL) is None  # the same problem: quiet
    assert ledger.check(WARNING) is None  # better but not recovered: quiet, recorded
    assert ledger.check(OK, alert=False) is None  # a run without --alert ...
    assert ledger.check(WARNING) is None  # ... is not what the next --alert run compares with
    assert len(sent(smtp, pings)) == 1

    note = ledger.check(OK)
    assert note == "alert sent (email and ping): WARNING -> OK"
    (_, _), (subject, path) = sent(smtp, pings)
    assert subject.startswith("[ops] queue health OK again on ")
    assert subject.endswith(" (was WARNING)")
    assert path == base  # the success URL
    assert pings.requests[1][1] == subject

    assert ledger.check(OK) is None
    assert len(sent(smtp, pings)) == 2
    assert [m["To"] for m in smtp.messages] == [RECIPIENT, RECIPIENT]


def test_worse_again_after_an_improvement_alerts_again(ctx, smtp, pings):
    ledger = Ledger(ctx)
    assert ledger.check(WARNING) == "alert sent (email and ping): first check -> WARNING " \
                                    "(scans latency)"
    assert ledger.check(CRITICAL) == "alert sent (email and ping): WARNING -> CRITICAL " \
                                     "(scans latency)"
    assert ledger.check(WARNING) is None
    assert ledger.check(CRITICAL) == "alert sent (email and ping): WARNING -> CRITICAL " \
                                     "(scans latency)"
    assert [path for _, path in sent(smtp, pings)] == ["/ping/health-check/fail"] * 3


def test_first_check_ever_alerts_only_when_not_ok(ctx, smtp, pings):
    ledger = Ledger(ctx)
    assert ledger.check(OK) is None
    assert sent(smtp, pings) == []
    assert ledger.previous() == OK


def test_unknown_is_left_to_the_failure_alert_and_skipped_as_a_previous_state(ctx, smtp, pings):
    ledger = Ledger(ctx)
    ledger.check(CRITICAL)
    assert len(sent(smtp, pings)) == 1
    assert ledger.check(UNKNOWN) is None  # run_tool's failure alert covers a run that failed
    ledger.record(None, alert=True, status="failed")  # died before it counted anything
    assert ledger.previous() == CRITICAL
    assert ledger.check(CRITICAL) is None  # still the same problem: no second alert
    assert len(sent(smtp, pings)) == 1
    assert ledger.check(OK) == "alert sent (email and ping): CRITICAL -> OK"


def test_a_run_interrupted_after_its_alert_is_not_alerted_again(ctx, smtp, pings):
    ledger = Ledger(ctx)
    ledger.check(OK)
    # The alert went out, then a SIGTERM: run_tool closes the row as interrupted, with the state.
    ledger.ctx = dataclasses.replace(ctx, run_id=new_run_id())
    assert alert_on_change(ledger.ctx, report(CRITICAL, ledger.at)).startswith("alert sent")
    ledger.record(CRITICAL, alert=True, status="interrupted", run_id=ledger.ctx.run_id)
    assert ledger.previous() == CRITICAL
    assert ledger.check(CRITICAL) is None
    assert len(sent(smtp, pings)) == 1


def test_a_run_stopped_by_a_signal_leaves_the_alert_to_the_next_run(ctx, smtp, pings):
    ledger = Ledger(ctx)
    ledger.check(OK)
    stopped = dataclasses.replace(ctx, run_id=new_run_id(), stop=StopSignal())
    stopped.stop.set("SIGTERM")
    assert alert_on_change(stopped, report(CRITICAL, ledger.at)) is None
    assert sent(smtp, pings) == []
    assert ledger.check(CRITICAL).startswith("alert sent")


def test_the_alert_email_lists_what_is_not_ok(ctx, smtp, pings):
    Ledger(ctx).check(CRITICAL)
    [message] = smtp.messages
    body = message.get_content()
    lines = body.splitlines()
    assert lines[0] == "Queue health is CRITICAL (the first check with --alert)."
    assert lines[1] == "Worst: scans latency"
    assert lines[2] == "Checked: 2026-11-02 08:00:00 UTC"
    assert lines[3] == "Database: sqlite:///ops.db"
    assert lines[6:9] == [
        "Not OK:",
        "  CRITICAL  queue scans: latency 21 min > 10 min",
        "  WARNING   tool run_billing_jobs (late): late: last success 27 hours ago",
    ]


def test_an_alert_nobody_takes_says_so(db_url, tmp_path):
    ctx = dataclasses.replace(job_context(db_url, tmp_path, dry_run=True), tool=TOOL)
    try:
        assert alert_on_change(ctx, report(CRITICAL, START)) == (
            "alert due but not sent (no alert_email or alert_ping_url took it): "
            "first check -> CRITICAL (scans latency)")
    finally:
        ctx.db.engine.dispose()


@pytest.mark.parametrize("previous, current, due", [
    (None, OK, False), (None, WARNING, True), (None, CRITICAL, True), (None, UNKNOWN, False),
    (OK, OK, False), (OK, WARNING, True), (OK, CRITICAL, True), (OK, UNKNOWN, False),
    (WARNING, WARNING, False), (WARNING, CRITICAL, True), (WARNING, OK, True),
    (CRITICAL, CRITICAL, False), (CRITICAL, WARNING, False), (CRITICAL, OK, True),
    (CRITICAL, UNKNOWN, False),
])
def test_which_changes_alert(previous, current, due):
    assert alert_due(previous, current) is due


def test_a_check_that_found_a_problem_sends_no_success_ping_that_would_undo_its_alert(
        tmp_path, pings):
    from ops_lib.settings import load_settings

    settings = load_settings(env={"OPS_ALERT_PING_URL": pings.url})
    for exit_code in (1, 2):
        alerts.finished(settings, JobResult(TOOL, True, exit_code=exit_code))
    assert pings.paths() == []
    alerts.finished(settings, JobResult(TOOL, True, exit_code=0))
    alerts.finished(settings, JobResult("run_billing_jobs", False))
    assert pings.paths() == ["/ping/health-check", "/ping/health-check"]


def test_the_previous_alert_run_is_found_behind_many_runs_without_alert(ctx, smtp, pings):
    ledger = Ledger(ctx)
    ledger.check(CRITICAL)
    rows = [dict(run_id=new_run_id(), tool=TOOL, host="test", pid=1,
                 args=json.dumps({"json_output": True}), dry_run=True,
                 started_at=ledger.at + dt.timedelta(minutes=i),
                 heartbeat_at=ledger.at + dt.timedelta(minutes=i),
                 finished_at=ledger.at + dt.timedelta(minutes=i, seconds=1), status="ok",
                 counts=json.dumps({"state": OK})) for i in range(250)]
    ctx.db.run(lambda conn: conn.execute(insert(ops_job_runs), rows))
    ledger.at += dt.timedelta(minutes=300)
    assert ledger.previous() == CRITICAL
    assert ledger.check(CRITICAL) is None
    assert len(sent(smtp, pings)) == 1


def test_the_tool_alerts_once_on_worsening_and_once_on_recovery(db_url, tmp_path, smtp, pings):
    """Through queue_health_summary.py --alert, with the generic pings of every run (start, and
    success when all is well) around the alert's own."""
    from sqlalchemy import delete

    from ops_lib.schema import attendance_scan_queue
    from tests.conftest import run_cli, tool_env
    from tests.test_queue_health import NOW_ARG, Rows, ago

    env = tool_env(db_url, tmp_path, OPS_ALERT_EMAIL=RECIPIENT, OPS_SMTP_HOST=smtp.host,
                   OPS_SMTP_PORT=str(smtp.port), OPS_ALERT_PING_URL=pings.url)
    rows = Rows(db_url)
    rows.all_fresh()  # queue health's own success among them, without --alert
    printed: list[str] = []

    def check(pending_for: dt.timedelta | None, *args: str) -> tuple[int, list[str]]:
        with rows.engine.begin() as conn:
            conn.execute(delete(attendance_scan_queue))
        if pending_for is not None:
            rows.scans(1, created_at=ago(seconds=pending_for.total_seconds()))
        before = len(pings.requests)
        done = run_cli("queue_health_summary", *NOW_ARG, *args, env=env)
        assert done.returncode in (0, 1, 2), done.stderr
        printed.append(done.stdout)
        return done.returncode, pings.paths()[before:]

    base, ok, warning, critical = "/ping/health-check", None, dt.timedelta(minutes=6), \
        dt.timedelta(hours=2)
    try:
        assert check(ok, "--alert") == (0, [f"{base}/start", base])
        assert check(critical, "--alert") == (2, [f"{base}/start", f"{base}/fail"])
        assert [m["Subject"].split(" on ")[0] for m in smtp.messages] == \
            ["[ops] queue health CRITICAL"]
        assert smtp.messages[0]["Subject"].endswith(": scans latency 2h")
        assert "alert sent (email and ping): OK -> CRITICAL (scans latency 2h)" in printed[-1]
        assert check(critical, "--alert") == (2, [f"{base}/start"])
        assert "alert" not in printed[-1]
        assert check(warning, "--alert") == (1, [f"{base}/start"])
        assert check(ok) == (0, [f"{base}/start", base])  # without --alert: not compared with
        assert check(warning, "--alert") == (1, [f"{base}/start"])
        assert len(smtp.messages) == 1
        code, paths = check(ok, "--alert")
        assert (code, paths) == (0, [f"{base}/start", base, base])  # the recovery, the run's
        recovery = smtp.messages[1]["Subject"]
        assert recovery.startswith("[ops] queue health OK again on ")
        assert recovery.endswith(" (was WARNING)")
        assert pings.requests[-2][1] == recovery and pings.requests[-1][1] == "checked: OK"
        assert check(ok, "--alert") == (0, [f"{base}/start", base])
        assert len(smtp.messages) == 2
    finally:
        rows.engine.dispose()
