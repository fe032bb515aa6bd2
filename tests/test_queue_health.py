"""queue_health_summary.py: queues and run ledgers in known states, checked figure by figure.

Every row is written with explicit times and the check runs with --now, so nothing depends on the
clock or on the machine's speed.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import create_engine, insert

from ops_lib.schedule import BY_TOOL, SCHEDULE
from ops_lib.schema import (
    attendance_rollup_queue,
    attendance_scan_queue,
    guardian_snapshot_queue,
    notifications,
    ops_job_runs,
    report_email_queue,
)
from tests.conftest import run_cli, tool_env

NOW = dt.datetime(2026, 11, 28, 12, 0, 0)
NOW_ARG = ("--now", "2026-11-28T12:00:00")
REQUIRED = [job.tool for job in SCHEDULE if not job.optional]


def ago(**span) -> dt.datetime:
    return NOW - dt.timedelta(**span)


class Rows:
    """Queue rows and ledger rows, inserted with explicit times."""

    def __init__(self, url: str):
        self.engine = create_engine(url)

    def insert(self, table, *rows: dict) -> None:
        with self.engine.begin() as conn:
            for row in rows:  # one by one: an executemany takes the first row's columns only
                conn.execute(insert(table).values(**row))

    def scans(self, count: int = 1, **values) -> None:
        values.setdefault("created_at", ago(seconds=30))
        self.insert(attendance_scan_queue, *[
            {"institution_id": 1, "card_uid": f"card-{uuid.uuid4().hex[:8]}",
             "scanned_at": values["created_at"], "status": "pending", **values}
            for _ in range(count)])

    def run(self, tool: str, started: dt.datetime, status: str = "ok", seconds: int = 30,
            dry_run: bool = False, error: str | None = None,
            heartbeat: dt.datetime | None = None) -> None:
        finished = None if status == "running" else started + dt.timedelta(seconds=seconds)
        self.insert(ops_job_runs, {
            "run_id": uuid.uuid4().hex, "tool": tool, "host": "test", "pid": 1, "args": "{}",
            "dry_run": dry_run, "started_at": started,
            "heartbeat_at": heartbeat or finished or started, "finished_at": finished,
            "status": status, "error": error})

    def all_fresh(self, *except_tools: str, now: dt.datetime = NOW) -> None:
        """A successful run of every required tool at its last slot before `now`."""
        for tool in REQUIRED:
            if tool not in except_tools:
                self.run(tool, BY_TOOL[tool].previous_slot(now - dt.timedelta(seconds=1)))


@pytest.fixture
def rows(db_url) -> Rows:
    made = Rows(db_url)
    yield made
    made.engine.dispose()


def check(db_url, tmp_path, *args, **env):
    done = run_cli("queue_health_summary", *NOW_ARG, *args, env=tool_env(db_url, tmp_path, **env))
    return done


def check_json(db_url, tmp_path, *args, **env) -> tuple[int, dict]:
    done = check(db_url, tmp_path, "--json", *args, **env)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def queue_row(result: dict, name: str) -> dict:
    return next(r for r in result["sections"]["Queues"] if r["queue"] == name)


def tool_row(result: dict, name: str) -> dict:
    return next(r for r in result["sections"]["Tools"] if r["tool"] == name)


EMPTY = {"due": 0, "delayed": 0, "claimed": 0, "expired": 0, "dead": 0, "failed_1h": 0,
         "done_15m": 0, "latency": "-", "latency_seconds": None, "state": "OK", "capped": None,
         "invalid": None, "overdue": None}  # (the last two are the DB jobs' own)
MARKER_EMPTY = {**EMPTY, "dead": None, "failed_1h": None, "done_15m": None}


def test_empty_queues_and_fresh_tools_are_ok(db_url, tmp_path, rows):
    rows.all_fresh()
    done = check(db_url, tmp_path, "--perfdata")
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    pager, perf = first.split(" | ")
    assert pager == "QUEUES OK: 0 due; 5 of 5 tools on time"
    assert "'scans due'=0;9999;99999;0; 'scans latency'=0s;299;899;0;" in perf
    assert "'rollups expired'=0;0;;0;" in perf and "'rollups failed 1h'" not in perf
    assert perf.endswith("'tools not fresh'=0;0;;0; 'tools down'=0;;0;0;")

    code, result = check_json(db_url, tmp_path)
    assert code == 0 and result["exit_code"] == 0 and result["status"] == "ok"
    assert result["headline"] == pager
    assert result["counts"] == {"state": 0, "problems": 0, "due": 0, "expired": 0,
                                "failed_last_hour": 0, "tools_not_fresh": 0}
    for name in ("scans", "deliveries", "emails"):
        assert {k: v for k, v in queue_row(result, name).items() if k != "queue"} == EMPTY
    for name in ("rollups", "snapshots"):
        assert {k: v for k, v in queue_row(result, name).items() if k != "queue"} == MARKER_EMPTY
    assert queue_row(result, "fanout")["dead"] is None  # fan-out dead-letters nothing
    assert {k: v for k, v in queue_row(result, "dbjobs").items() if k != "queue"} == {
        **EMPTY, "invalid": 0, "overdue": 0}
    assert "'dbjobs due'=0;9999;99999;0;" in perf and "'dbjobs invalid'=0;0;;0;" in perf
    billing = tool_row(result, "run_billing_jobs")
    assert billing == {"tool": "run_billing_jobs", "schedule": "daily at 01:10 UTC",
                       "freshness": "ok", "last_success": "2026-11-28 01:10:00",
                       "last_failure": "-", "running_for": "-", "next_expected": "2026-11-29 01:10:00",
                       "state": "OK"}
    assert tool_row(result, "check_schema_drift")["freshness"] == "optional, not enabled"


def test_a_deep_but_moving_queue_warns_on_depth_only(db_url, tmp_path, rows):
    rows.all_fresh()
    rows.scans(20, created_at=ago(seconds=40))
    rows.scans(50, created_at=ago(minutes=6), status="done", processed_at=ago(minutes=5))
    rows.scans(7, created_at=ago(minutes=30), status="done", processed_at=ago(minutes=20))
    code, result = check_json(db_url, tmp_path, OPS_HEALTH_QUEUE_DEPTH_WARNING="scans=10,*=500")
    assert code == 1
    assert result["headline"] == "QUEUES WARNING: scans 20 due"
    assert queue_row(result, "scans") == {**EMPTY, "queue": "scans", "due": 20,
                                          "done_15m": 50, "latency": "40s",
                                          "latency_seconds": 40, "state": "WARNING"}


def test_old_pending_rows_are_critical_by_latency_from_when_they_became_available(
        db_url, tmp_path, rows):
    rows.all_fresh()
    rows.scans(2, created_at=ago(hours=2, minutes=3))  # due since they were created
    rows.scans(1, created_at=ago(hours=5), available_at=ago(minutes=10), attempts=1)  # a retry
    done = check(db_url, tmp_path, "--perfdata")
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines()[0].startswith(
        "QUEUES CRITICAL: scans latency 2h 3m | 'scans due'=3;9999;99999;0; "
        "'scans latency'=7380s;299;899;0;")
    code, result = check_json(db_url, tmp_path)
    assert code == 2 and result["counts"]["state"] == 2 and result["counts"]["due"] == 3
    assert (queue_row(result, "scans")["latency"],
            queue_row(result, "scans")["latency_seconds"]) == ("2h 3m", 7380)


def test_delayed_retries_only_raise_no_latency_alarm(db_url, tmp_path, rows):
    rows.all_fresh()
    rows.scans(4, created_at=ago(hours=6), available_at=NOW + dt.timedelta(minutes=10),
               attempts=2)
    code, result = check_json(db_url, tmp_path)
    assert code == 0, result
    assert queue_row(result, "scans") == {**EMPTY, "queue": "scans", "delayed": 4}


def test_expired_claims_and_rows_failed_in_the_last_hour_warn(db_url, tmp_path, rows):
    rows.all_fresh()
    rows.scans(1, created_at=ago(minutes=2), claimed_by="deadrun", lease_expires_at=ago(seconds=1))
    rows.scans(2, created_at=ago(minutes=1), claimed_by="liverun",
               lease_expires_at=NOW + dt.timedelta(minutes=5))
    rows.scans(1, created_at=ago(hours=2), status="failed", processed_at=ago(minutes=30))
    rows.scans(1, created_at=ago(days=3), status="failed", processed_at=ago(days=2))
    done = check(db_url, tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[0] == "QUEUES WARNING: scans 1 expired claims; 1 more problem"
    code, result = check_json(db_url, tmp_path)
    assert queue_row(result, "scans") == {**EMPTY, "queue": "scans", "claimed": 2,
                                          "expired": 1, "dead": 2, "failed_1h": 1,
                                          "state": "WARNING"}
    assert result["counts"]["expired"] == 1 and result["counts"]["failed_last_hour"] == 1


def test_marker_queues_report_depth_latency_and_claims(db_url, tmp_path, rows):
    rows.all_fresh()
    rows.insert(attendance_rollup_queue,
                {"institution_id": 1, "attendance_date": dt.date(2026, 11, 28),
                 "marked_at": ago(minutes=6)},
                {"institution_id": 2, "attendance_date": dt.date(2026, 11, 28),
                 "marked_at": ago(hours=3), "available_at": NOW + dt.timedelta(minutes=1)})
    rows.insert(guardian_snapshot_queue, {"guardian_id": 5, "marked_at": ago(minutes=1),
                                          "claimed_by": "run", "lease_expires_at": ago(minutes=1)})
    code, result = check_json(db_url, tmp_path)
    assert code == 1
    assert queue_row(result, "rollups") == {**MARKER_EMPTY, "queue": "rollups", "due": 1,
                                            "delayed": 1, "latency": "6m",
                                            "latency_seconds": 360, "state": "WARNING"}
    assert queue_row(result, "snapshots") == {**MARKER_EMPTY, "queue": "snapshots",
                                              "expired": 1, "state": "WARNING"}
    assert result["headline"] == "QUEUES WARNING: rollups latency 6m; 1 more problem"


def test_notifications_and_emails_are_counted_by_their_own_status_columns(db_url, tmp_path, rows):
    rows.all_fresh()
    rows.insert(notifications, {"guardian_id": 1, "kind": "arrival", "title": "t",
                                "dedupe_key": "k1", "created_at": ago(minutes=1)},
                {"guardian_id": 1, "kind": "arrival", "title": "t", "dedupe_key": "k2",
                 "created_at": ago(minutes=9), "fanout_status": "done",
                 "fanned_out_at": ago(minutes=8)})
    rows.insert(report_email_queue, {"institution_id": 1, "recipient": "a@b.test",
                                     "report_type": "daily", "status": "sent",
                                     "created_at": ago(hours=1), "finished_at": ago(minutes=59)})
    code, result = check_json(db_url, tmp_path)
    assert code == 0, result
    assert queue_row(result, "fanout") == {**EMPTY, "queue": "fanout", "due": 1, "dead": None,
                                           "failed_1h": None, "done_15m": 1, "latency": "1m",
                                           "latency_seconds": 60}
    assert queue_row(result, "emails") == {**EMPTY, "queue": "emails"}


def test_a_tool_not_run_for_three_intervals_is_down_and_one_interval_late(
        db_url, tmp_path, rows):
    rows.all_fresh("run_billing_jobs", "archive_hot_path_data")
    rows.run("run_billing_jobs", dt.datetime(2026, 11, 25, 1, 10))  # three days ago: down
    rows.run("run_billing_jobs", dt.datetime(2026, 11, 27, 1, 10), status="skipped")
    rows.run("archive_hot_path_data", dt.datetime(2026, 11, 27, 2, 30))  # missed today's: late
    rows.run("archive_hot_path_data", dt.datetime(2026, 11, 28, 2, 30), dry_run=True)
    done = check(db_url, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines()[0] == \
        "QUEUES CRITICAL: run_billing_jobs down: no success for 3d 10h; 1 more problem"
    code, result = check_json(db_url, tmp_path)
    assert tool_row(result, "run_billing_jobs") == {
        "tool": "run_billing_jobs", "schedule": "daily at 01:10 UTC", "freshness": "down",
        "last_success": "2026-11-25 01:10:00", "last_failure": "-", "running_for": "-",
        "next_expected": "2026-11-26 01:10:00", "state": "CRITICAL"}
    archive = tool_row(result, "archive_hot_path_data")
    assert (archive["freshness"], archive["state"], archive["last_success"]) == \
        ("late", "WARNING", "2026-11-27 02:30:00")
    assert result["counts"]["tools_not_fresh"] == 2


def test_a_run_going_longer_than_its_budget_is_running_too_long(db_url, tmp_path, rows):
    rows.all_fresh()
    rows.run("archive_hot_path_data", ago(hours=3, minutes=1), status="running",
             heartbeat=ago(seconds=10))
    # A run that stopped heartbeating long ago died: it is not "going now".
    rows.run("run_billing_jobs", ago(hours=9), status="running", heartbeat=ago(hours=8))
    code, result = check_json(db_url, tmp_path)
    assert code == 1
    assert result["headline"] == "QUEUES WARNING: archive_hot_path_data running for 3h 1m"
    archive = tool_row(result, "archive_hot_path_data")
    assert (archive["freshness"], archive["running_for"], archive["state"]) == \
        ("running too long", "3h 1m", "WARNING")
    assert tool_row(result, "run_billing_jobs")["running_for"] == "-"


def test_a_tool_never_run_is_judged_from_the_first_ledger_row(db_url, tmp_path, rows):
    # The install's first run two days ago; the worker never ran since (a missing cron line),
    # the monthly stale-device clean-up has not had its first slot yet.
    rows.run("manage_schema", ago(days=2))
    rows.all_fresh("run_background_workers", "cleanup_stale_devices")
    rows.run("run_background_workers", ago(minutes=1), dry_run=True)  # a person's dry run
    code, result = check_json(db_url, tmp_path)
    assert code == 1
    assert result["headline"] == "QUEUES WARNING: run_background_workers never run"
    worker = tool_row(result, "run_background_workers")
    assert (worker["freshness"], worker["state"], worker["last_success"]) == \
        ("never run", "WARNING", "-")
    devices = tool_row(result, "cleanup_stale_devices")
    assert (devices["freshness"], devices["state"], devices["next_expected"]) == \
        ("never run", "OK", "2026-12-01 03:15:00")


def check_at(db_url, tmp_path, now: dt.datetime, *args):
    done = run_cli("queue_health_summary", "--now", now.isoformat(), *args,
                   env=tool_env(db_url, tmp_path))
    return done


def test_a_tool_that_runs_but_never_succeeds_goes_down_not_never_run(db_url, tmp_path, rows):
    # The ledger began on 1 November; the billing run failed on the 25th, 26th and 27th and
    # never succeeded: its cron line works, the tool does not.
    now = dt.datetime(2026, 11, 28, 5, 30)
    rows.run("manage_schema", dt.datetime(2026, 11, 1))
    rows.all_fresh("run_billing_jobs", now=now)
    for day in (25, 26, 27):
        rows.run("run_billing_jobs", dt.datetime(2026, 11, day, 1, 10), status="failed",
                 error="database error: deadlock")
    done = check_at(db_url, tmp_path, now)
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines()[0] == \
        "QUEUES CRITICAL: run_billing_jobs down: no success yet, 3 failures"
    perf = check_at(db_url, tmp_path, now, "--perfdata").stdout.splitlines()[0].split(" | ")[1]
    assert perf.endswith("'tools not fresh'=1;0;;0; 'tools down'=1;;0;0;")
    assert max(nagios_state(perf).values()) == 2  # Nagios reads CRITICAL, as the check said
    done = check_at(db_url, tmp_path, now, "--json")
    result = json.loads(done.stdout)
    assert done.returncode == 2 and result["counts"]["tools_not_fresh"] == 1
    assert tool_row(result, "run_billing_jobs") == {
        "tool": "run_billing_jobs", "schedule": "daily at 01:10 UTC", "freshness": "down",
        "last_success": "-", "last_failure": "2026-11-27 01:10:30", "running_for": "-",
        "next_expected": "2026-11-01 01:10:00", "state": "CRITICAL"}


def test_a_tool_that_runs_but_never_succeeds_is_late_after_its_first_slot(db_url, tmp_path, rows):
    # Installed on 27 November at 02:00, after that day's billing slot; a person's --execute run
    # failed at noon. The first slot is 28 November 01:10: late from 04:10 (budget 1 h, grace
    # 2 h), down a day later.
    rows.run("manage_schema", dt.datetime(2026, 11, 27, 2, 0))
    rows.all_fresh("run_billing_jobs", now=dt.datetime(2026, 11, 28, 5, 30))
    rows.run("run_billing_jobs", dt.datetime(2026, 11, 27, 12, 0), status="failed",
             error="database error: deadlock")

    before = json.loads(check_at(db_url, tmp_path, dt.datetime(2026, 11, 28, 4, 10),
                                 "--json").stdout)
    billing = tool_row(before, "run_billing_jobs")
    assert (billing["freshness"], billing["state"], billing["next_expected"]) == \
        ("ok", "OK", "2026-11-28 01:10:00")

    done = check_at(db_url, tmp_path, dt.datetime(2026, 11, 28, 5, 30))
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[0] == \
        "QUEUES WARNING: run_billing_jobs late: no success yet, 1 failure"


def nagios_state(perf: str) -> dict[str, int]:
    """Each perfdata figure's state as Nagios reads its ranges: a plain `N` alerts on value > N."""
    import re

    states = {}
    for label, value, warn, crit in re.findall(r"'([^']+)'=(\d+)s?;(\d*);(\d*);0;", perf):
        states[label] = (2 if crit and int(value) > int(crit) else
                         1 if warn and int(value) > int(warn) else 0)
    return states


@pytest.mark.parametrize("due, latency, state, perf", [
    (2, 299, 0, "'scans due'=2;2;4;0; 'scans latency'=299s;299;899;0;"),
    (3, 299, 1, "'scans due'=3;2;4;0; 'scans latency'=299s;299;899;0;"),
    (5, 299, 2, "'scans due'=5;2;4;0; 'scans latency'=299s;299;899;0;"),
    (1, 300, 1, "'scans due'=1;2;4;0; 'scans latency'=300s;299;899;0;"),
])
def test_perfdata_ranges_alert_exactly_where_the_check_does(
        db_url, tmp_path, rows, due, latency, state, perf):
    # Depth warning 3, critical 5, latency warning 300 s: the check alerts at the threshold,
    # a Nagios range `N` above N, so the ranges say 2, 4 and 299.
    rows.all_fresh()
    rows.scans(1, created_at=ago(seconds=latency))
    rows.scans(due - 1, created_at=ago(seconds=10))
    done = check(db_url, tmp_path, "--perfdata", OPS_HEALTH_QUEUE_DEPTH_WARNING="scans=3",
                 OPS_HEALTH_QUEUE_DEPTH_CRITICAL="scans=5")
    assert done.returncode == state, done.stderr
    pager, found = done.stdout.splitlines()[0].split(" | ")
    assert found.startswith(perf)
    seen = nagios_state(found)
    assert max(seen.values()) == state
    assert (seen["scans due"], seen["scans latency"]) == \
        ({2: 0, 3: 1, 5: 2}.get(due, 0), 1 if latency >= 300 else 0)
    result = json.loads(check(db_url, tmp_path, "--json", OPS_HEALTH_QUEUE_DEPTH_WARNING="scans=3",
                              OPS_HEALTH_QUEUE_DEPTH_CRITICAL="scans=5").stdout)
    assert (queue_row(result, "scans")["due"], queue_row(result, "scans")["latency_seconds"],
            result["exit_code"]) == (due, latency, state)


@pytest.mark.parametrize("latency, state, shown", [(299.9, 0, "299s"), (300.0, 1, "300s")])
def test_a_fractional_latency_is_shown_rounded_down_so_its_range_agrees(latency, state, shown):
    from ops_lib.jobs.queue_health import judge_queue
    from ops_lib.jobs.queue_health.model import HealthReport, QueueHealth
    from ops_lib.jobs.queue_health.outputs import perfdata, whole_seconds

    queue = QueueHealth("scans", "attendance_scan_queue", True, due=1, latency_seconds=latency)
    limits = {"depth_warning": 10000, "depth_critical": 100000, "latency_warning": 300,
              "latency_critical": 900}
    judge_queue(queue, limits)
    found = perfdata(HealthReport(NOW, "sqlite://", [queue], []), {"scans": limits})
    assert queue.state == state
    assert f"'scans latency'={shown};299;899;0;" in found
    assert nagios_state(found)["scans latency"] == state
    assert whole_seconds(queue) == int(shown[:-1])


def test_perfdata_any_expired_claim_failure_or_late_tool_is_a_warning_range(
        db_url, tmp_path, rows):
    rows.all_fresh("run_billing_jobs")
    rows.run("run_billing_jobs", dt.datetime(2026, 11, 27, 1, 10))  # today's 01:10 missed: late
    rows.scans(1, created_at=ago(minutes=2), claimed_by="deadrun", lease_expires_at=ago(seconds=1))
    rows.scans(1, created_at=ago(hours=2), status="failed", processed_at=ago(minutes=30))
    done = check(db_url, tmp_path, "--perfdata")
    assert done.returncode == 1, done.stderr
    found = done.stdout.splitlines()[0].split(" | ")[1]
    assert "'scans expired'=1;0;;0; 'scans failed 1h'=1;0;;0;" in found
    assert found.endswith("'tools not fresh'=1;0;;0; 'tools down'=0;;0;0;")
    seen = nagios_state(found)
    assert {label: s for label, s in seen.items() if s} == \
        {"scans expired": 1, "scans failed 1h": 1, "tools not fresh": 1}


def test_failures_show_the_error_line_and_optional_jobs_are_judged_when_enabled(
        db_url, tmp_path, rows):
    rows.run("manage_schema", dt.datetime(2026, 10, 1))  # the ledger began in October
    rows.all_fresh()
    rows.run("run_billing_jobs", ago(hours=1), status="failed",
             error="database error: lost connection\nsecond line")
    code, result = check_json(db_url, tmp_path, OPS_OPTIONAL_JOBS="check_schema_drift")
    assert code == 1  # the enabled optional check missed its 1 November slot
    assert result["sections"]["Failures"] == [{
        "tool": "run_billing_jobs", "finished": "2026-11-28 11:00:30", "status": "failed",
        "error": "database error: lost connection"}]
    drift = tool_row(result, "check_schema_drift")
    assert (drift["freshness"], drift["state"]) == ("never run", "WARNING")


def test_the_prometheus_textfile_parses_back(db_url, tmp_path, rows):
    from prometheus_client.parser import text_string_to_metric_families

    rows.all_fresh()
    rows.scans(3, created_at=ago(minutes=2))
    textfile = tmp_path / "metrics" / "ops.prom"
    textfile.parent.mkdir()
    done = check(db_url, tmp_path, "--prometheus", str(textfile))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "QUEUES OK: 3 due, oldest 2m; 5 of 5 tools on time"
    text = textfile.read_text()
    assert "# HELP ops_queue_latency_seconds" in text and "# TYPE ops_queue_due_rows gauge" in text
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge"
        for sample in family.samples:
            assert sample.timestamp is None
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert samples[("ops_queue_due_rows", (("queue", "scans"),))] == 3
    assert samples[("ops_queue_latency_seconds", (("queue", "scans"),))] == 120
    assert samples[("ops_queue_dead_rows", (("queue", "scans"),))] == 0
    assert ("ops_queue_dead_rows", (("queue", "rollups"),)) not in samples  # cannot tell
    assert samples[("ops_queue_health_check_timestamp_seconds", ())] == \
        NOW.replace(tzinfo=dt.timezone.utc).timestamp()
    assert samples[("ops_queue_health_state", ())] == 0
    billing = dt.datetime(2026, 11, 28, 1, 10, tzinfo=dt.timezone.utc).timestamp()
    assert samples[("ops_tool_last_success_timestamp_seconds",
                    (("tool", "run_billing_jobs"),))] == billing
    assert samples[("ops_tool_state", (("tool", "run_billing_jobs"),))] == 0
    assert ("ops_tool_state", (("tool", "check_schema_drift"),)) not in samples
    assert [p.name for p in textfile.parent.iterdir()] == ["ops.prom"]  # no temporary left


def test_counts_stop_at_the_cap_and_say_so(db_url, rows):
    from ops_lib.db import connect
    from ops_lib.jobs.queue_health.figures import queue_figures
    from ops_lib.jobs.queue_health.outputs import figure
    from ops_lib.queue import QUEUES

    rows.scans(5, created_at=ago(minutes=1))
    rows.scans(4, created_at=ago(minutes=1), status="failed", processed_at=ago(minutes=1))
    database = connect(db_url)
    with database.begin(write=False) as conn:
        capped = queue_figures(conn, QUEUES["scans"], NOW, cap=3)
        exact = queue_figures(conn, QUEUES["scans"], NOW, cap=None)
    database.engine.dispose()
    assert (capped.due, capped.dead, capped.failed_last_hour) == (3, 3, 3)
    assert capped.capped == {"due", "dead", "failed_last_hour", "done_last_15_minutes"} - \
        {"done_last_15_minutes"}
    assert figure(capped.due, "due" in capped.capped) == "3+"
    assert (exact.due, exact.dead, exact.capped) == (5, 4, set())


def test_bad_threshold_names_are_one_line_each_and_unknown(db_url, tmp_path):
    done = check(db_url, tmp_path, OPS_HEALTH_QUEUE_DEPTH_WARNING="scan=10",
                 OPS_HEALTH_GRACE_SECONDS="run_biling_jobs=60")
    assert done.returncode == 3 and done.stdout.startswith("QUEUES UNKNOWN: ")
    assert done.stderr.count("error:") == 2  # one line per problem, all of them
    assert "unknown queue 'scan'; did you mean scans?" in done.stderr
    assert "unknown tool 'run_biling_jobs'; did you mean run_billing_jobs?" in done.stderr


def test_usage_errors_are_unknown(tmp_path):
    done = run_cli("queue_health_summary", "--timeout", "0", "--now", "yesterday",
                   env=tool_env("sqlite://", tmp_path))
    assert done.returncode == 3
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "--timeout" in done.stderr and "--now" in done.stderr


def test_an_unreachable_database_is_unknown_with_one_line(tmp_path):
    done = run_cli("queue_health_summary", "--database-url",
                   "mysql+pymysql://root@127.0.0.1:1/platform",
                   env=tool_env("sqlite://", tmp_path))
    assert done.returncode == 3
    assert done.stdout.startswith("QUEUES UNKNOWN: cannot use the database")
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")


def test_the_grace_setting_moves_when_a_tool_is_late(db_url, tmp_path, rows):
    rows.all_fresh("run_billing_jobs")
    rows.run("run_billing_jobs", dt.datetime(2026, 11, 27, 1, 10))  # today's 01:10 missed
    code, result = check_json(db_url, tmp_path)
    assert tool_row(result, "run_billing_jobs")["freshness"] == "late" and code == 1
    code, result = check_json(db_url, tmp_path, OPS_HEALTH_GRACE_SECONDS="run_billing_jobs=86400")
    assert tool_row(result, "run_billing_jobs")["freshness"] == "ok" and code == 0


def test_timeout_on_sqlite_interrupts_a_statement_that_would_run_for_hours(tmp_path):
    """A WAL reader never waits for a lock, so SQLite's --timeout stops slow statements: a
    recursive count to a trillion stands for a check on a huge table."""
    from ops_lib.db import connect
    from ops_lib.jobs.queue_health import CheckTimedOut, deadline
    from tests.conftest import sqlite_database

    database = connect(sqlite_database(tmp_path))
    endless = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
               "WHERE i < 1000000000000) SELECT count(*) FROM n")
    try:
        with database.begin(write=False) as conn:
            with pytest.raises(CheckTimedOut, match="--timeout 0.5 s"):
                with deadline(conn, 0.5):
                    conn.exec_driver_sql(endless)
            # The connection is usable again, with its usual busy timeout.
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        database.engine.dispose()


def test_a_check_past_its_timeout_runs_no_further_statement(tmp_path):
    from ops_lib.jobs import queue_health
    from tests.conftest import job_context, sqlite_database

    ctx = job_context(sqlite_database(tmp_path), tmp_path, dry_run=True)
    try:
        with pytest.raises(queue_health.CheckTimedOut, match="--timeout 1e-09 s"):
            queue_health.run(ctx, timeout=1e-9, now=NOW)
    finally:
        ctx.db.engine.dispose()


def test_timeout_on_mariadb_is_unknown_while_a_table_lock_holds_the_check(mariadb_url, tmp_path):
    engine = create_engine(mariadb_url)
    with engine.connect() as holder:
        holder.exec_driver_sql("LOCK TABLES attendance_scan_queue WRITE")
        try:
            done = check(mariadb_url, tmp_path, "--timeout", "1", "--quiet")
        finally:
            holder.exec_driver_sql("UNLOCK TABLES")
    engine.dispose()
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith("QUEUES UNKNOWN: timed out: the check took longer than")
    assert len(done.stdout) < 81 and done.stdout.count("\n") == 1
    assert done.stderr.strip().splitlines() == [
        "error: timed out: the check took longer than --timeout 1 s (a query was still "
        "waiting or running)"]


def test_a_critical_finding_sends_no_failure_mail_but_a_check_that_could_not_check_does(
        db_url, tmp_path, rows):
    rows.all_fresh()
    rows.scans(1, created_at=ago(hours=1))
    outbox = tmp_path / "outbox" / "email"
    done = check(db_url, tmp_path, OPS_ALERT_EMAIL="ops@school.test")
    assert done.returncode == 2, done.stderr
    assert not outbox.exists() or list(outbox.glob("*.eml")) == []  # the check did its job

    failed = run_cli("queue_health_summary", "--json", "--database-url",
                     "mysql+pymysql://root@127.0.0.1:1/platform",
                     env=tool_env(db_url, tmp_path, OPS_ALERT_EMAIL="ops@school.test"))
    assert failed.returncode == 3
    result = json.loads(failed.stdout)
    assert (result["status"], result["exit_code"]) == ("failed", 3)
    mails = list(outbox.glob("*.eml"))
    assert len(mails) == 1 and "queue_health_summary failed" in mails[0].read_text()
    assert "Status: failed" in mails[0].read_text()


def test_the_pager_line_stays_under_80_characters_and_names_the_worst_problem():
    from ops_lib.jobs.queue_health.model import CRITICAL, WARNING, HealthReport, QueueHealth
    from ops_lib.jobs.queue_health.outputs import pager_line

    warned = QueueHealth("scans", "attendance_scan_queue", True, state=WARNING,
                         reasons=["scans 3 expired claims"])
    critical = QueueHealth("deliveries", "push_deliveries", True, state=CRITICAL,
                           reasons=["deliveries " + "very " * 30 + "late", "deliveries 1 more"])
    report = HealthReport(NOW, "sqlite://", [warned, critical], [], state=CRITICAL)
    line = pager_line(report)
    assert len(line) < 80
    assert line.startswith("QUEUES CRITICAL: deliveries very very")
    assert line.endswith("...; 2 more problems")
