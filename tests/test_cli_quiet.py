"""--quiet keeps warnings, errors and the why-it-stopped line, in the log file too."""

from tests.conftest import run_cli, tool_env


def test_quiet_still_logs_why_the_run_stopped_to_the_log_file(db_url, tmp_path):
    log_file = tmp_path / "toolkit.log"
    run = run_cli("manage_schema", "create", "--quiet", "--log-file", str(log_file),
                  env=tool_env(db_url, tmp_path))
    assert run.returncode == 0, run.stderr
    logged = log_file.read_text(encoding="utf-8")
    assert "stopped: dry run: nothing changed" in logged
    assert " INFO " in logged and "dry run on" not in logged  # only the summary line at INFO
