"""A run that dies without closing its ledger row is marked abandoned by the next run."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time

import pytest
from sqlalchemy import insert, select

from ops_lib.db import connect
from ops_lib.jobs.synthetic_load import LoadSize, load
from ops_lib.schema import ops_job_runs
from ops_lib.timeutil import utcnow
from tests.conftest import assert_unchanged, run_cli, snapshot, start_cli, tool_env


def _ledger(url):
    database = connect(url)
    with database.engine.connect() as conn:
        rows = conn.execute(select(ops_job_runs).order_by(ops_job_runs.c.id)).all()
    database.engine.dispose()
    return rows


def test_a_killed_runs_ledger_row_is_marked_abandoned_by_the_next_run(db_url, tmp_path):
    database = connect(db_url)
    with database.engine.begin() as conn:
        load(conn, LoadSize(institutions=2, students_per_institution=200, scans=20_000))
    database.engine.dispose()
    env = tool_env(db_url, tmp_path)

    victim = start_cli("run_background_workers", "100000", "--execute", env=env)
    deadline = time.monotonic() + 30
    while not _ledger(db_url) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    [killed] = _ledger(db_url)
    assert killed.status == "running" and killed.finished_at is None

    follower = run_cli("run_background_workers", "1", "--execute", env=env)
    assert follower.returncode == 0, follower.stderr
    rows = {row.run_id: row for row in _ledger(db_url)}
    assert rows[killed.run_id].status == "abandoned"
    assert rows[killed.run_id].finished_at is not None
    assert "process died" in rows[killed.run_id].stop_reason


def _dead_run(db, tool: str) -> None:
    """A `running` row of `tool` whose heartbeat stopped two hours ago on another host."""
    long_ago = utcnow().replace(microsecond=0) - dt.timedelta(hours=2)
    with db.begin() as conn:
        conn.execute(insert(ops_job_runs).values(
            run_id="d" * 32, tool=tool, host="another-host", pid=1, args="{}", dry_run=False,
            started_at=long_ago, heartbeat_at=long_ago, status="running"))


@pytest.mark.parametrize("tool, args", [
    ("cleanup_stale_devices", ()),
    ("run_background_workers", ("10",)),
    ("manage_schema", ("create",)),
])
def test_a_dry_run_leaves_a_dead_runs_ledger_row_as_it_was(db, tmp_path, tool, args):
    _dead_run(db, tool)
    before = snapshot(db)
    done = run_cli(tool, *args, env=tool_env(db.url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert_unchanged(before, snapshot(db), runs=1)
    assert "the next --execute run marks them abandoned" in done.stderr


def test_an_execute_run_marks_a_dead_runs_ledger_row_abandoned(db, tmp_path):
    _dead_run(db, "cleanup_stale_devices")
    done = run_cli("cleanup_stale_devices", "--execute", env=tool_env(db.url, tmp_path))
    assert done.returncode == 0, done.stderr
    [dead] = [row for row in _ledger(db.url) if row.run_id == "d" * 32]
    assert dead.status == "abandoned" and dead.finished_at is not None
