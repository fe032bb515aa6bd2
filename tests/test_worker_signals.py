"""SIGTERM and --max-runtime: the worker finishes its batch, gives back what it holds, says why."""

from __future__ import annotations

import json
import signal
import time

from sqlalchemy import create_engine, text

from ops_lib.jobs.synthetic_load import LoadSize

try:
    from tests.conftest import start_cli, tool_env
    from tests.test_worker_concurrency import load
    from tests.worker_checks import claimed_rows
except ImportError:  # tests/ is not a package and only tests/ is on sys.path
    from conftest import start_cli, tool_env  # type: ignore[no-redef]
    from test_worker_concurrency import load  # type: ignore[no-redef]
    from worker_checks import claimed_rows  # type: ignore[no-redef]

SCANS = 8_000


def scan_state(url: str) -> dict:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            one = lambda sql: conn.execute(text(sql)).scalar_one()  # noqa: E731
            return {
                "done": one("SELECT COUNT(*) FROM attendance_scan_queue WHERE status = 'done'"),
                "done_counted": one("SELECT COUNT(*) FROM attendance_scan_queue "
                                    "WHERE status = 'done' AND error IS NULL"),
                "pending": one("SELECT COUNT(*) FROM attendance_scan_queue "
                               "WHERE status = 'pending'"),
                "scan_count": one("SELECT COALESCE(SUM(scan_count), 0) FROM attendance_records"),
            }
    finally:
        engine.dispose()


def ledger_row(url: str, run_id: str):
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT status, stop_reason, finished_at FROM ops_job_runs "
                                     "WHERE run_id = :r"), {"r": run_id}).one()
    finally:
        engine.dispose()


def test_sigterm_finishes_the_batch_releases_its_claims_and_records_the_run_interrupted(
        db_url, tmp_path):
    load(db_url, LoadSize(institutions=2, students_per_institution=200, scans=SCANS, days=3,
                          seed=5))
    proc = start_cli("run_background_workers", "100000", "--execute", "--json",
                     env=tool_env(db_url, tmp_path))
    deadline = time.monotonic() + 30
    while not claimed_rows(db_url)["attendance_scan_queue"]:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the worker never claimed a scan"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, err
    result = json.loads(out)
    assert (result["status"], result["stop_reason"]) == ("interrupted", "interrupted by SIGTERM")
    assert "SIGTERM received: finishing the current batch" in err
    state = scan_state(db_url)
    assert 0 < state["done"] < SCANS and state["pending"] == SCANS - state["done"]
    # The batch in hand was finished whole: every scan marked done is in the records.
    assert state["scan_count"] == state["done_counted"]
    assert not any(claimed_rows(db_url, result["run_id"]).values())
    assert not any(claimed_rows(db_url).values())
    row = ledger_row(db_url, result["run_id"])
    assert (row.status, row.stop_reason) == ("interrupted", "interrupted by SIGTERM")
    assert row.finished_at is not None


def test_max_runtime_stops_claiming_near_the_budget_and_says_so(db_url, tmp_path):
    load(db_url, LoadSize(institutions=2, students_per_institution=200, scans=SCANS, days=3,
                          seed=6))
    budget = 6.0  # the worker keeps a 5 s margin for one batch: it claims for about 1 s
    started = time.monotonic()
    proc = start_cli("run_background_workers", "100000", "--execute", "--json",
                     "--max-runtime", str(budget), env=tool_env(db_url, tmp_path))
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - started

    assert proc.returncode == 0, err
    result = json.loads(out)
    assert (result["status"], result["stop_reason"]) == ("ok", "max runtime reached")
    state = scan_state(db_url)
    assert 0 < state["done"] < SCANS and state["scan_count"] == state["done_counted"]
    assert not any(claimed_rows(db_url).values())
    assert elapsed < budget + 4  # the budget counts from the job's start, not the interpreter's
    row = ledger_row(db_url, result["run_id"])
    assert (row.status, row.stop_reason) == ("ok", "max runtime reached")
