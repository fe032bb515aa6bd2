"""The schedule (ops_lib/schedule.py): valid cron, slots computed in UTC, every job a real tool."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ops_lib.schedule import BY_TOOL, MANUAL_ONLY, SCHEDULE, active_jobs, describe_cron, is_valid_cron
from ops_lib.settings import load_settings

REPO = Path(__file__).resolve().parent.parent


def test_every_cron_expression_is_valid_and_said_in_words():
    for job in SCHEDULE:
        assert is_valid_cron(job.cron), job.tool
        assert not job.in_words().startswith("cron "), (job.tool, job.cron)


def test_every_required_job_is_a_tool_and_no_manual_tool_is_scheduled():
    for job in SCHEDULE:
        if not job.optional:
            assert (REPO / job.script).exists(), job.script
        assert job.optional == bool(job.why_optional), job.tool
    assert not set(MANUAL_ONLY) & set(BY_TOOL)
    assert BY_TOOL["queue_health_summary"].cron == "*/15 * * * *"
    assert BY_TOOL["run_background_workers"].overlap


def test_slots_are_computed_from_the_cron_expression():
    billing = BY_TOOL["run_billing_jobs"]  # 10 1 * * *
    at = dt.datetime(2026, 11, 28, 4, 30)
    assert billing.previous_slot(at) == dt.datetime(2026, 11, 28, 1, 10)
    assert billing.previous_slot(dt.datetime(2026, 11, 28, 1, 10)) == dt.datetime(2026, 11, 28, 1, 10)
    assert billing.next_slot(dt.datetime(2026, 11, 28, 1, 10)) == dt.datetime(2026, 11, 29, 1, 10)
    assert billing.interval_seconds(at) == 86400
    devices = BY_TOOL["cleanup_stale_devices"]  # monthly
    assert devices.next_slot(at) == dt.datetime(2026, 12, 1, 3, 15)


@pytest.mark.parametrize("expression, words", [
    ("* * * * *", "every minute"),
    ("*/15 * * * *", "every 15 minutes"),
    ("10 1 * * *", "daily at 01:10 UTC"),
    ("0 2 * * 0", "weekly on Sunday at 02:00 UTC"),
    ("15 3 1 * *", "monthly on day 1 at 03:15 UTC"),
    ("0 2 * * 1-5", "cron 0 2 * * 1-5 (UTC)"),
])
def test_cron_in_words(expression, words):
    assert describe_cron(expression) == words


def test_optional_jobs_run_only_where_the_setting_names_them():
    assert "check_schema_drift" not in {job.tool for job in active_jobs()}
    chosen = load_settings(env={"OPS_OPTIONAL_JOBS": "check_schema_drift"}).optional_jobs
    assert "check_schema_drift" in {job.tool for job in active_jobs(chosen)}
    with pytest.raises(Exception, match="not an optional job"):
        load_settings(env={"OPS_OPTIONAL_JOBS": "run_billing_jobs"})
