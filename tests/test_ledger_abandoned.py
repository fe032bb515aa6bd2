"""A run that dies without closing its ledger row is marked abandoned by the next run."""

from __future__ import annotations

import os
import signal
import time

from sqlalchemy import select

from ops_lib.db import connect
from ops_lib.jobs.synthetic_load import LoadSize, load
from ops_lib.schema import ops_job_runs
from tests.conftest import run_cli, start_cli, tool_env


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

    follower = run_cli("run_background_workers", "1", env=env)
    assert follower.returncode == 0, follower.stderr
    rows = {row.run_id: row for row in _ledger(db_url)}
    assert rows[killed.run_id].status == "abandoned"
    assert rows[killed.run_id].finished_at is not None
    assert "process died" in rows[killed.run_id].stop_reason
