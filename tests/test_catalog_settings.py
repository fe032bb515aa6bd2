"""Each tool refuses only over the settings it uses (ops_lib/catalog.py); any other bad value, and
an `OPS_*` name that is no setting, is a WARNING line and the tool goes on."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, insert, select

from ops_lib.catalog import EVERY_TOOL, TOOLS
from ops_lib.db import connect
from ops_lib.jobs.synthetic_load import LoadSize, load
from ops_lib.schema import attendance_scan_queue, system_settings
from ops_lib.errors import ConfigError
from ops_lib.settings import SETTINGS, load_settings
from tests.conftest import REPO, run_cli, tool_env

pytestmark = pytest.mark.slow


def _pending_scans(url: str) -> int:
    database = connect(url)
    with database.engine.connect() as conn:
        pending = conn.execute(select(func.count()).select_from(attendance_scan_queue).where(
            attendance_scan_queue.c.status == "pending")).scalar_one()
    database.engine.dispose()
    return pending


def _with_scans_and_a_bad_grace_days(db) -> None:
    with db.begin() as conn:
        load(conn, LoadSize(institutions=1, students_per_institution=20, scans=50))
        conn.execute(insert(system_settings).values(name="billing_grace_days", value="7 days"))


def _warnings(stderr: str, about: str = "") -> list[str]:
    return [line for line in stderr.splitlines() if " WARNING " in line and about in line]


def test_a_bad_billing_setting_in_the_table_only_warns_the_worker_which_drains_its_queue(
        db, tmp_path):
    # It made the background worker exit 2 and leave its whole queue untouched.
    _with_scans_and_a_bad_grace_days(db)
    assert _pending_scans(db.url) == 50
    done = run_cli("run_background_workers", "1000", "--execute", "--json",
                   env=tool_env(db.url, tmp_path))
    assert done.returncode == 0, done.stderr
    [warning] = _warnings(done.stderr, "billing_grace_days")
    assert ("system_settings.billing_grace_days: expected a whole number, got '7 days' "
            "(not used by this tool: ignored)") in warning
    assert _pending_scans(db.url) == 0


def test_billing_refuses_a_bad_billing_setting_in_the_table_with_exit_2(db, tmp_path):
    _with_scans_and_a_bad_grace_days(db)
    done = run_cli("run_billing_jobs", env=tool_env(db.url, tmp_path))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line == ("error: system_settings.billing_grace_days: expected a whole number, "
                    "got '7 days'")


def test_a_bad_billing_setting_in_the_environment_warns_the_worker_and_stops_billing(
        db, tmp_path):
    env = tool_env(db.url, tmp_path, OPS_BILLING_GRACE_DAYS="7 days")
    worker = run_cli("run_background_workers", "10", env=env)
    assert worker.returncode == 0, worker.stderr
    [warning] = _warnings(worker.stderr, "billing_grace_days")
    assert "OPS_BILLING_GRACE_DAYS billing_grace_days: expected a whole number" in warning
    billing = run_cli("run_billing_jobs", env=env)
    assert billing.returncode == 2
    assert billing.stderr.strip().splitlines() == [
        "error: OPS_BILLING_GRACE_DAYS billing_grace_days: expected a whole number, "
        "got '7 days'"]


def test_a_mistyped_environment_name_warns_with_the_closest_setting(db, tmp_path):
    done = run_cli("cleanup_stale_devices",
                   env=tool_env(db.url, tmp_path, OPS_STALE_DEVICES_DAYS="5"))
    assert done.returncode == 0, done.stderr
    [warning] = _warnings(done.stderr)
    assert ("environment OPS_STALE_DEVICES_DAYS is not a setting of the toolkit and is "
            "ignored; did you mean OPS_STALE_DEVICE_DAYS?") in warning


def test_the_toolkits_own_non_setting_variables_give_no_warning(db, tmp_path):
    config = tmp_path / "ops.toml"
    config.write_text("stale_device_days = 300\n", encoding="utf-8")
    env = tool_env(db.url, tmp_path, OPS_CONFIG=str(config), OPS_HOME=str(tmp_path),
                   OPS_TEST_MYSQL_URL="mysql+pymysql://root@127.0.0.1:3306",
                   OPS_BENCH_MYSQL_URL="mysql+pymysql://root@127.0.0.1:3306")
    done = run_cli("cleanup_stale_devices", env=env)
    assert done.returncode == 0, done.stderr
    assert _warnings(done.stderr) == []
    assert "stale_device_days=300" in done.stdout  # the config file was read


# Which modules' code each tool runs, to check its declaration against what the code reads.
TOOL_MODULES = {
    "archive_hot_path_data": ["jobs/archive_hot_path.py"],
    "check_schema_drift": ["jobs/schema_drift.py", "schema_catalog.py", "scratch_schema.py"],
    "cleanup_stale_devices": ["jobs/stale_devices.py"],
    "export_operational_warehouse_batch": ["jobs/warehouse_export/*.py"],
    "generate_synthetic_load": ["jobs/synthetic_load.py", "jobs/synthetic_history.py"],
    "generate_missing_index_sql": ["jobs/index_preview.py", "scratch_schema.py",
                                   "schema_catalog.py"],
    "import_ipemis_locations": ["jobs/locations/*.py"],
    "manage_db_jobs": ["jobs/db_jobs/*.py"],
    "manage_db_users": ["jobs/db_users.py", "grants.py"],
    "manage_dead_letters": ["jobs/dead_letters.py", "jobs/db_jobs/runner.py"],
    "manage_schema": ["jobs/schema_admin.py"],
    "manage_schedule": ["jobs/schedule_admin.py", "schedule_files.py"],
    "queue_health_summary": ["jobs/queue_health/*.py", "queue.py", "schedule.py",
                             "jobs/db_jobs/figures.py", "jobs/db_jobs/runner.py",
                             "jobs/db_jobs/slots.py", "jobs/db_jobs/handlers.py"],
    "run_background_workers": ["jobs/workers/*.py", "push.py", "queue.py", "jobs/db_jobs/*.py"],
    "run_billing_jobs": ["jobs/billing*.py", "jobs/billing/*.py"],
    "run_scheduler": ["scheduler/*.py", "schedule.py", "schedule_files.py"],
    "shadow_reporting_validation": ["jobs/reporting_validation.py"],
}
EVERY_TOOL_MODULES = ["cli.py", "alerts.py", "mail.py", "locks.py", "ledger.py", "db.py"]


def _settings_read_by(patterns: list[str]) -> set[str]:
    text = "".join(path.read_text(encoding="utf-8") for pattern in patterns
                   for path in sorted((REPO / "ops_lib").glob(pattern)))
    names = set(re.findall(r"\b(?:settings|s)\.([a-z_]+)", text))
    names |= set(re.findall(r"\"([a-z_]+)\"", text))  # getattr(settings, area.setting) names
    names |= set(re.findall(r"^    ([a-z_]+): ", text, re.M))  # dataclass fields read by name
    return {name for name in names if name in SETTINGS}


def test_every_tool_declares_the_settings_its_code_reads():
    assert sorted(TOOLS) == sorted(path.stem for path in (REPO / "tools").glob("*.py"))
    assert set(TOOL_MODULES) == set(TOOLS)
    assert _settings_read_by(EVERY_TOOL_MODULES) <= EVERY_TOOL | {"database_url"}
    for tool, patterns in TOOL_MODULES.items():
        undeclared = _settings_read_by(patterns) - TOOLS[tool].all_settings()
        assert undeclared == set(), f"{tool} reads {undeclared} but does not declare them"
    declared = set().union(*(use.all_settings() for use in TOOLS.values()))
    assert declared <= set(SETTINGS)


def test_a_tool_without_a_declaration_refuses_over_any_bad_setting():
    from ops_lib.catalog import settings_used

    assert settings_used("some_test_tool") is None
    assert settings_used("run_background_workers") >= {"database_url", "worker_lease_seconds"}
    assert "billing_grace_days" not in settings_used("run_background_workers")


def test_a_bad_value_in_the_config_file_follows_the_same_rule(tmp_path):
    from ops_lib.catalog import settings_used
    from ops_lib.errors import ConfigError
    from ops_lib.settings import load_settings

    config = tmp_path / "ops.toml"
    config.write_text('billing_grace_days = "7 days"\n', encoding="utf-8")
    env = {"OPS_CONFIG": str(config)}
    worker = load_settings(env=env, uses=settings_used("run_background_workers"))
    assert worker.billing_grace_days == SETTINGS["billing_grace_days"].default
    assert worker.source("billing_grace_days") == "default"
    assert worker.warnings == (
        f"config file {config} billing_grace_days: expected a whole number, got '7 days' "
        "(not used by this tool: ignored)",)
    with pytest.raises(ConfigError) as raised:
        load_settings(env=env, uses=settings_used("run_billing_jobs"))
    assert str(raised.value) == (
        f"config file {config} billing_grace_days: expected a whole number, got '7 days'")


def test_a_config_file_typo_stops_only_the_tools_that_use_the_setting_it_misspells(tmp_path):
    """Regression: `billing_grace_day = 7` in the config file stopped the worker (exit 2)."""
    config = tmp_path / "ops.toml"
    config.write_text("billing_grace_day = 7\nzzz_qqq = 1\n", encoding="utf-8")
    env = {"OPS_CONFIG": str(config)}

    worker = load_settings(env=env, uses=TOOLS["run_background_workers"].all_settings())
    assert [w for w in worker.warnings if "billing_grace_day'" in w] == [
        f"config file {config}: unknown setting 'billing_grace_day'; did you mean "
        "billing_grace_days? (not used by this tool: ignored)"]
    assert any("'zzz_qqq'" in w for w in worker.warnings)
    with pytest.raises(ConfigError, match="did you mean billing_grace_days"):
        load_settings(env=env, uses=TOOLS["run_billing_jobs"].all_settings())
