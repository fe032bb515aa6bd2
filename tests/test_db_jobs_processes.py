"""MariaDB, real worker processes: overlapping workers run each due slot once; a worker killed
with SIGKILL inside a handler leaves the slot to run again, once.

The workers are tests/fakes/db_jobs_worker.py: the real run_background_workers.py with the
test job types (tests/fakes/db_job_handlers.py) in the registry.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, insert, text

from ops_lib.schema import cron_jobs
from ops_lib.timeutil import utcnow
from tests.conftest import REPO, tool_env
from tests.worker_checks import runs_held_at_start

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

WORKER = REPO / "tests" / "fakes" / "db_jobs_worker.py"
JOBS = 120


def start_worker(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), "1000", "--execute", "--json",
                             "--quiet"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"worker exited {proc.returncode}: {err[-2000:]}"
    return next(row for row in json.loads(out)["sections"]["Stages"]
                if row["stage"] == "dbjobs")


def query(url: str, sql: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).all()
    finally:
        engine.dispose()


@pytest.mark.timeout(180)
def test_four_overlapping_workers_run_each_due_slot_exactly_once(mariadb_url, tmp_path):
    now = utcnow()
    # Recurring hourly jobs, each half an hour past its latest slot, some after downtime (a
    # gap to record), and one-off jobs: every one due once now.
    rows = [{"name": f"hourly {i}", "job_type": "record_effect", "user_id": None,
             "run_at": None, "interval_minutes": 60,
             "created_at": now - dt.timedelta(minutes=30 + 60 * (i % 4))}
            for i in range(JOBS)]
    rows += [{"name": f"once {i}", "job_type": "record_effect", "user_id": None,
              "run_at": now - dt.timedelta(minutes=i + 1), "interval_minutes": None,
              "created_at": now} for i in range(JOBS // 4)]
    engine = create_engine(mariadb_url)
    with engine.begin() as conn:
        conn.execute(insert(cron_jobs), rows)
    engine.dispose()
    env = tool_env(mariadb_url, tmp_path)

    # The four runs are let go together from their ledger insert, so they overlap.
    with runs_held_at_start(mariadb_url, 4):
        procs = [start_worker(env) for _ in range(4)]
    stages = [finish(proc) for proc in procs]

    total = len(rows)
    assert sum(s["done"] for s in stages) == total
    assert sum(s["claimed"] for s in stages) >= total
    # The runs table: exactly one done row per job, for its latest slot.
    assert query(mariadb_url, "SELECT COUNT(*), COUNT(DISTINCT cron_job_id) FROM cron_job_runs "
                              "WHERE status = 'done'") == [(total, total)]
    # The handler's effect applied once per slot, and only for the slot recorded.
    assert query(mariadb_url, "SELECT COUNT(*), COUNT(DISTINCT entity_id) FROM audit_logs") \
        == [(total, total)]
    assert query(mariadb_url, """
        SELECT COUNT(*) FROM audit_logs a JOIN cron_job_runs r
          ON r.cron_job_id = a.entity_id AND r.status = 'done'
         AND DATE_FORMAT(r.slot_at, '%Y-%m-%dT%H:%i:%s') = JSON_VALUE(a.details, '$.slot')
    """) == [(total,)]
    # Every gap one skipped row: the jobs one, two and three slots behind.
    assert query(mariadb_url, "SELECT COUNT(*) FROM cron_job_runs WHERE status = 'skipped'") \
        == [(JOBS - JOBS // 4,)]
    assert query(mariadb_url, "SELECT COUNT(*) FROM cron_jobs WHERE interval_minutes IS NULL") \
        == [(0,)]  # one-off rows deleted after success
    # Did they overlap? At least two of the four ran jobs.
    assert sum(1 for s in stages if s["done"]) >= 2, stages
    # A fifth run finds nothing due.
    assert finish(start_worker(env))["claimed"] == 0


@pytest.mark.timeout(120)
def test_a_worker_killed_inside_a_handler_leaves_the_slot_to_run_again_once(mariadb_url,
                                                                             tmp_path):
    now = utcnow()
    slot_created = now - dt.timedelta(minutes=30)
    engine = create_engine(mariadb_url)
    with engine.begin() as conn:
        job = conn.execute(insert(cron_jobs).values(
            name="hourly", job_type="record_effect", interval_minutes=60,
            created_at=slot_created)).inserted_primary_key[0]
    engine.dispose()
    ready, release = tmp_path / "handler.ready", tmp_path / "handler.release"
    env = tool_env(mariadb_url, tmp_path, OPS_TEST_DBJOB_READY=str(ready),
                   OPS_TEST_DBJOB_RELEASE=str(release))

    victim = start_worker(env)
    deadline = time.monotonic() + 60
    while not ready.exists():  # the handler has written its row and waits, transaction open
        assert victim.poll() is None, victim.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the handler never started"
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    victim.communicate()
    # The server rolls the dead connection's transaction back once it sees the socket close:
    # wait for that (its connections gone), so the next worker does not find the job locked.
    deadline = time.monotonic() + 60
    while query(mariadb_url, "SELECT COUNT(*) FROM information_schema.processlist "
                             "WHERE db = DATABASE() AND id <> CONNECTION_ID()")[0][0]:
        assert time.monotonic() < deadline, "the killed worker's transaction never ended"
        time.sleep(0.05)

    assert query(mariadb_url, "SELECT COUNT(*) FROM cron_job_runs") == [(0,)]
    assert query(mariadb_url, "SELECT COUNT(*) FROM audit_logs") == [(0,)]  # rolled back

    release.write_text("go", encoding="utf-8")
    rerun = finish(start_worker(env))

    assert rerun["done"] == 1
    assert query(mariadb_url, "SELECT cron_job_id, slot_at, status FROM cron_job_runs") == [
        (job, slot_created, "done")]
    assert query(mariadb_url, "SELECT COUNT(*) FROM audit_logs") == [(1,)]
    # Once: a third run has nothing to do.
    assert finish(start_worker(env))["claimed"] == 0
    assert query(mariadb_url, "SELECT COUNT(*) FROM audit_logs") == [(1,)]
