"""One worker process runs its lanes (threads) at once: while one waits (on FCM) another drains
the rest; a lane that dies fails the run with one error; LIMIT holds over the lanes."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import create_engine, func, select, text

from ops_lib.jobs.synthetic_load import LoadSize
from ops_lib.jobs.workers.scans import ScanStage
from ops_lib.schema import push_deliveries

from tests.conftest import EVERY_BACKEND, run_cli, start_cli, tool_env
from tests.fakes.fcm_server import FakeFcmServer
from tests.test_cli_errors import assert_one_error_line
from tests.test_worker_concurrency import load
from tests.worker_rows import add_delivery, add_guardian, engine_for
from tests.worker_checks import (
    assert_processed_exactly_once,
    claimed_rows,
    run_worker_until_drained,
    stage_total,
)


def scans_done(conn, where: str = "1 = 1", **params) -> int:
    return conn.execute(text(f"SELECT COUNT(*) FROM attendance_scan_queue WHERE status = 'done' "
                             f"AND {where}"), params).scalar_one()


@pytest.fixture
def fcm():
    with FakeFcmServer() as server:
        yield server


@pytest.mark.timeout(180)
@pytest.mark.parametrize("db_url", EVERY_BACKEND, indirect=True)
def test_while_fcm_holds_one_lanes_send_the_other_lane_of_the_process_sends_the_rest(
        db_url, tmp_path, fcm):
    """No timing: FCM keeps back its answer to the first lane's first call until the test lets
    go; meanwhile the other lane of the same process claims and sends every other delivery. With
    one lane the run would wait there, and nothing else would be sent."""
    engine = engine_for(db_url)
    try:
        guardian, devices = add_guardian(engine, [f"tok-{n}" for n in range(12)])
        deliveries = [add_delivery(engine, guardian, device, title=f"n{device}")
                      for device in devices]
        held = fcm.hold("tok-0")  # the lowest id: the first lane's first claim takes it
        # One message a send_each call: a lane claims four deliveries a turn.
        env = tool_env(db_url, tmp_path, OPS_FIREBASE_CREDENTIALS="anonymous",
                       OPS_FIREBASE_PROJECT_ID="test-project", OPS_FCM_ENDPOINT=fcm.url_template,
                       OPS_PUSH_BATCH_SIZE="1")
        proc = start_cli("run_background_workers", "--execute", "--json", "--threads", "2",
                         env=env)
        try:
            assert held.arrived.wait(60), "the worker never sent the first call"
            first_claim = deliveries[:4]
            others = deliveries[4:]
            deadline = time.monotonic() + 120
            while sent(engine, others) < len(others):
                assert proc.poll() is None, f"the worker ended: {proc.stderr.read()}"
                assert time.monotonic() < deadline, (
                    "no other lane sent the rest while the first waited for FCM")
                time.sleep(0.05)
            assert sent(engine, first_claim) == 0  # its lane still waits for that answer
        finally:
            held.release()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        result = json.loads(out)
        assert result["counts"]["threads"] == 2
        assert stage_total([result], "push", "done") == len(deliveries)
        assert sent(engine, deliveries) == len(deliveries)
        assert sorted(r.token for r in fcm.requests) == sorted(f"tok-{n}" for n in range(12))
    finally:
        engine.dispose()


def sent(engine, ids: list[int]) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(push_deliveries).where(
            push_deliveries.c.id.in_(ids), push_deliveries.c.status == "sent")).scalar_one()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_lane_that_dies_stops_the_run_with_one_error_line_and_leaves_nothing_claimed(
        db_url, tmp_path):
    """The email queue lost its available_at column (schema drift): the email stage's claim
    fails in each lane that gets there, outside any batch (recovery reads no such column); the
    run fails with that error, once."""
    load(db_url, LoadSize(institutions=2, students_per_institution=50, scans=500, days=2,
                          seed=9))
    engine = create_engine(db_url)
    rename = "ALTER TABLE report_email_queue RENAME COLUMN {} TO {}"
    with engine.begin() as conn:
        conn.execute(text(rename.format("available_at", "available_later")))
    try:
        done = run_cli("run_background_workers", "100000", "--execute", "--threads", "2",
                       "--quiet", "--json", env=tool_env(db_url, tmp_path))
        with engine.connect() as conn:
            status, error = conn.execute(text(
                "SELECT status, error FROM ops_job_runs WHERE run_id = :run"),
                {"run": json.loads(done.stdout)["run_id"]}).one()
    finally:  # the MariaDB scratch database outlives this test
        with engine.begin() as conn:
            conn.execute(text(rename.format("available_later", "available_at")))
        engine.dispose()

    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: ") and "available_at" in errors[0]
    assert not any(claimed_rows(db_url).values())
    assert status == "failed"
    assert "available_at" in error


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_limit_per_stage_holds_over_two_lanes(db_url, tmp_path):
    batch = ScanStage.batch_size
    limit = batch + batch // 4  # one lane takes a whole batch, the other the rest of LIMIT
    load(db_url, LoadSize(institutions=2, students_per_institution=100, scans=2 * batch,
                          days=2, seed=13))
    env = tool_env(db_url, tmp_path)

    done = run_cli("run_background_workers", str(limit), "--execute", "--json", "--threads", "2",
                   env=env)

    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["counts"]["threads"] == 2
    assert stage_total([result], "scans", "claimed") == limit
    assert stage_total([result], "scans", "done") == limit
    assert result["stop_reason"].startswith("limit reached")
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert scans_done(conn) == limit
    finally:
        engine.dispose()
    # What is left drains in later runs, still each scan once.
    run_worker_until_drained(env, limit=limit)
    assert_processed_exactly_once(db_url, tmp_path / "outbox")


def test_threads_out_of_range_is_bad_input_reported_before_connecting(tmp_path):
    nowhere = "mysql+pymysql://nobody@127.0.0.1:1/none"  # connecting would fail otherwise
    done = run_cli("run_background_workers", "--execute", "--threads", "9",
                   env=tool_env(nowhere, tmp_path))
    assert done.returncode == 2
    assert assert_one_error_line(done.stderr) == "error: flag worker_threads: expected 1 to 8, got 9"
    from_env = run_cli("run_background_workers", env=tool_env(nowhere, tmp_path,
                                                               OPS_WORKER_THREADS="0"))
    assert from_env.returncode == 2
    assert "OPS_WORKER_THREADS worker_threads: expected 1 to 8, got 0" in from_env.stderr
