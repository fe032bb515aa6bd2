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
