"""A check that could not check still gives the pager its one line on stdout (Nagios and Icinga
read stdout only), exits 3, and is never OK: an unreachable database, a usage error, a bad
setting, or an --alert run skipped because another check holds the lock."""

from __future__ import annotations

import json

from ops_lib.db import connect
from ops_lib.locks import run_lock
from tests.conftest import run_cli, sqlite_database, tool_env

TOOL = "queue_health_summary"


def first_line(done) -> str:
    return done.stdout.splitlines()[0]


def test_an_unreachable_database_prints_the_unknown_pager_line(tmp_path):
    done = run_cli(TOOL, env=tool_env("mysql+pymysql://root@127.0.0.1:1/nothing", tmp_path))
    assert done.returncode == 3
    assert first_line(done).startswith("QUEUES UNKNOWN: cannot use the database")
    assert len(first_line(done)) < 80 and len(done.stdout.splitlines()) == 1
    assert "error:" in done.stderr  # the whole message, for the log


def test_a_usage_error_and_a_bad_setting_print_the_unknown_pager_line(tmp_path):
    env = tool_env(sqlite_database(tmp_path), tmp_path)
    done = run_cli(TOOL, "--no-such-option", env=env)
    assert done.returncode == 3 and len(done.stdout.splitlines()) == 1
    assert first_line(done).startswith("QUEUES UNKNOWN: No such option '--no-such-option'")
    as_json = json.loads(run_cli(TOOL, "--no-such-option", "--json", env=env).stdout)
    assert as_json["exit_code"] == 3 and as_json["headline"].startswith("QUEUES UNKNOWN: ")

    done = run_cli(TOOL, env={**env, "OPS_HEALTH_GRACE_SECONDS": "no_such_tool=60"})
    assert done.returncode == 3
    assert first_line(done).startswith("QUEUES UNKNOWN: ")


def test_an_alert_run_skipped_on_the_lock_is_unknown_not_ok(tmp_path):
    url = sqlite_database(tmp_path)
    env = tool_env(url, tmp_path)
    db = connect(url)
    held = run_lock(db, TOOL, tmp_path / "locks")
    assert held.acquire()
    try:
        done = run_cli(TOOL, "--alert", env=env)
        without_alert = run_cli(TOOL, env=env)  # takes no lock: checks as usual
    finally:
        held.release()
        db.engine.dispose()
    assert done.returncode == 3
    assert first_line(done) == "QUEUES UNKNOWN: skipped: another run holds the lock"
    assert without_alert.returncode == 0 and first_line(without_alert).startswith("QUEUES OK")


def test_an_output_folder_that_does_not_exist_is_refused_before_connecting(tmp_path):
    env = tool_env("mysql+pymysql://root@127.0.0.1:1/nothing", tmp_path)  # never reached
    done = run_cli(TOOL, "--html", str(tmp_path / "no" / "page.html"),
                   "--prometheus", str(tmp_path / "nor" / "ops.prom"), env=env)
    assert done.returncode == 3
    assert "--html" in done.stderr and "--prometheus" in done.stderr
    assert "does not exist" in done.stderr and "cannot use the database" not in done.stderr
    assert first_line(done).startswith("QUEUES UNKNOWN: ")
    assert not (tmp_path / "no").exists() and not (tmp_path / "nor").exists()


def test_a_file_that_cannot_be_written_keeps_the_checks_own_state(tmp_path):
    env = tool_env(sqlite_database(tmp_path), tmp_path)
    in_the_way = tmp_path / ("p" * 300 + ".html")  # longer than a file name may be: not written
    done = run_cli(TOOL, "--html", str(in_the_way), "--json", env=env)
    result = json.loads(done.stdout)
    assert done.returncode == 0 and result["headline"].startswith("QUEUES OK")
    assert result["counts"]["outputs_not_written"] == 1
    assert any(note.startswith(f"status page NOT written to {in_the_way}")
               for note in result["notes"])
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
