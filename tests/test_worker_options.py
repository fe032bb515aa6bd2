"""The worker's options, checked before it connects: the real tool as a subprocess."""

from __future__ import annotations

import json

import pytest

from ops_lib.jobs.workers import BUDGET_MARGIN_SECONDS
from tests.conftest import run_cli, tool_env
from tests.test_cli_errors import assert_one_error_line

NOWHERE = "mysql+pymysql://nobody@127.0.0.1:1/none"  # any attempt to connect would fail with 1


@pytest.mark.parametrize("budget", ["5", "0.5"])
def test_a_max_runtime_within_the_claiming_margin_is_bad_input_reported_before_connecting(
        tmp_path, budget):
    """Regression: `--max-runtime 5` claimed nothing and exited 0 with "max runtime reached", so
    a cron line with a short budget never drained the queue."""
    done = run_cli("run_background_workers", "--execute", "--max-runtime", budget,
                   env=tool_env(NOWHERE, tmp_path))

    assert done.returncode == 2
    assert assert_one_error_line(done.stderr) == (
        "error: --max-runtime must be more than 5 seconds (claiming stops 5 s before the budget "
        f"ends), got {budget}")
    assert done.stdout == ""


def test_with_json_a_max_runtime_within_the_margin_is_one_failed_result(tmp_path):
    done = run_cli("run_background_workers", "--max-runtime", "3", "--json",
                   env=tool_env(NOWHERE, tmp_path))
    assert done.returncode == 2
    result = json.loads(done.stdout)
    assert (result["status"], result["exit_code"]) == ("failed", 2)
    assert result["error"].startswith("--max-runtime must be more than 5 seconds")


def test_a_max_runtime_above_the_margin_runs(db_url, tmp_path):
    done = run_cli("run_background_workers", "--execute", "--json", "--max-runtime",
                   str(BUDGET_MARGIN_SECONDS + 1), env=tool_env(db_url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stop_reason"] == "no more work"


def test_the_workers_help_states_the_claiming_margin(tmp_path):
    done = run_cli("run_background_workers", "--help", env=tool_env(NOWHERE, tmp_path))
    assert done.returncode == 0
    assert (f"--max-runtime must be more than {BUDGET_MARGIN_SECONDS:g} seconds"
            in " ".join(done.stdout.split()))
