"""The run ledger (ops_job_runs) records every run as it ended: ok, failed, skipped, interrupted."""

from __future__ import annotations

import json
import os
import re
import signal
import socket

import pytest
from sqlalchemy import select

from ops_lib.result import DONE, LOCK_HELD
from ops_lib.schema import ops_job_runs
from tests.conftest import run_cli, tool_env
from tests.processes import run_waiting_tool, start_waiting_tool

pytestmark = pytest.mark.slow


def ledger_rows(db, tool: str) -> list[dict]:
    with db.begin(write=False) as conn:
        rows = conn.execute(select(ops_job_runs).where(ops_job_runs.c.tool == tool)
                            .order_by(ops_job_runs.c.id)).mappings().all()
    return [dict(r) for r in rows]


def test_an_executed_run_is_recorded_ok_with_its_counts(db, tmp_path):
    done = run_cli("generate_synthetic_load", "--institutions", "2",
                   "--students-per-institution", "3", "--scans", "20", "--execute", "--json",
                   env=tool_env(db.url, tmp_path))
    assert done.returncode == 0, done.stderr
    [row] = ledger_rows(db, "generate_synthetic_load")
    assert row["status"] == "ok"
    assert row["stop_reason"] == DONE
    assert row["dry_run"] is False
    assert row["error"] is None
    assert row["finished_at"] is not None and row["finished_at"] >= row["started_at"]
    assert row["heartbeat_at"] == row["finished_at"]
    assert row["run_id"] == json.loads(done.stdout)["run_id"]
    assert row["host"] == socket.gethostname()
    counts = json.loads(row["counts"])
    assert counts["attendance_scan_queue_inserted"] == 20
    assert counts["students_inserted"] == 6
    args = json.loads(row["args"])
    assert args["execute"] is True and args["json_output"] is True


def test_a_dry_run_is_recorded_as_a_dry_run(db, tmp_path):
    done = run_cli("generate_synthetic_load", "--scans", "5", env=tool_env(db.url, tmp_path))
    assert done.returncode == 0, done.stderr
    [row] = ledger_rows(db, "generate_synthetic_load")
    assert (row["status"], row["dry_run"], json.loads(row["counts"])) == ("ok", True, {})


def test_a_failed_run_is_recorded_failed_with_its_error(db, tmp_path):
    # A job that fails after connecting. (A bad option, such as reset --execute without
    # --confirm, is refused before connecting and leaves no row: tests/test_cli_errors.py.)
    failed = run_waiting_tool(tool_env(db.url, tmp_path), "--ready-file",
                              str(tmp_path / "ready"), "--fail", "--execute")
    assert failed.returncode == 1
    [row] = ledger_rows(db, "waiting_tool")
    assert row["status"] == "failed"
    assert row["stop_reason"] == "error"
    assert row["error"] == "the waiting tool was asked to fail"
    assert row["finished_at"] is not None
    assert row["dry_run"] is False


def test_a_job_that_raises_is_recorded_failed_and_exits_1(db, tmp_path):
    env = tool_env(db.url, tmp_path)
    ready = tmp_path / "ready"
    failed = run_waiting_tool(env, "--ready-file", str(ready), "--fail")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == \
        "error: the waiting tool was asked to fail"
    [row] = ledger_rows(db, "waiting_tool")
    assert (row["status"], row["stop_reason"]) == ("failed", "error")
    assert row["error"] == "the waiting tool was asked to fail"


def test_a_skipped_run_is_recorded_skipped_with_the_lock_reason(db, tmp_path):
    env = tool_env(db.url, tmp_path)
    holder, _, release = start_waiting_tool(env, tmp_path, "--tool", "manage_schema")
    try:
        skipped = run_cli("manage_schema", "create", env=env)
        assert skipped.returncode == 0
    finally:
        release.touch()
        holder.communicate(timeout=30)
    rows = ledger_rows(db, "manage_schema")
    assert [(r["pid"] == holder.pid, r["status"]) for r in rows] == \
        [(True, "ok"), (False, "skipped")]
    skipped_row = rows[1]
    assert skipped_row["stop_reason"] == LOCK_HELD
    assert skipped_row["finished_at"] is not None
    assert skipped_row["error"] is None


def test_a_run_stopped_by_sigterm_is_recorded_interrupted(db, tmp_path):
    env = tool_env(db.url, tmp_path)
    worker, _, _ = start_waiting_tool(env, tmp_path, "--execute")
    os.kill(worker.pid, signal.SIGTERM)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "SIGTERM received" in err
    assert "status=interrupted" in out
    assert "stopped: interrupted by SIGTERM" in out
    [row] = ledger_rows(db, "waiting_tool")
    assert row["status"] == "interrupted"
    assert row["stop_reason"] == "interrupted by SIGTERM"
    assert row["finished_at"] is not None
    assert row["dry_run"] is False
    # The counts the interrupted run reported are the ones the ledger keeps (polls may be 0: the
    # signal can arrive before the first poll, so the figure itself says nothing).
    [printed] = re.findall(r"^counts: polls=(\d+)$", out, re.MULTILINE)
    assert json.loads(row["counts"]) == {"polls": int(printed)}


def test_a_running_job_beats_its_heartbeat(db):
    """The heartbeat is throttled; forcing it moves heartbeat_at while the row stays running."""
    import datetime as dt

    from ops_lib.ledger import RunLedger

    ledger = RunLedger(db, "heartbeat_check", "hb" * 16, {"a": 1}, dry_run=True)
    ledger.start()
    [before] = ledger_rows(db, "heartbeat_check")
    with db.begin() as conn:
        conn.execute(ops_job_runs.update().where(ops_job_runs.c.run_id == ledger.run_id)
                     .values(heartbeat_at=before["heartbeat_at"] - dt.timedelta(minutes=5)))
    ledger.heartbeat()  # throttled: just started
    [throttled] = ledger_rows(db, "heartbeat_check")
    ledger.heartbeat(force=True)
    [after] = ledger_rows(db, "heartbeat_check")
    assert throttled["heartbeat_at"] == before["heartbeat_at"] - dt.timedelta(minutes=5)
    assert after["heartbeat_at"] >= before["heartbeat_at"]
    assert after["status"] == "running" and after["finished_at"] is None


def test_a_run_that_reaches_its_max_runtime_is_recorded_ok_with_the_budget_reason(db, tmp_path):
    done = run_waiting_tool(tool_env(db.url, tmp_path), "--ready-file", str(tmp_path / "r"),
                            "--max-runtime", "0.5")
    assert done.returncode == 0, done.stderr
    assert "stopped: max runtime reached" in done.stdout
    [row] = ledger_rows(db, "waiting_tool")
    assert (row["status"], row["stop_reason"]) == ("ok", "max runtime reached")
    # The ledger keeps the counts the run reported. On a busy machine start-up can spend the
    # whole budget before the first poll, so the figure may be 0 and says nothing itself.
    [printed] = re.findall(r"^counts: polls=(\d+)$", done.stdout, re.MULTILINE)
    assert json.loads(row["counts"]) == {"polls": int(printed)}
