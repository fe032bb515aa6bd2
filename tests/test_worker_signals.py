"""SIGTERM and --max-runtime: the worker finishes its batch, gives back what it holds, says why."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import signal
import time

from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, insert, text

from ops_lib.jobs import workers
from ops_lib.jobs.synthetic_load import LoadSize
from ops_lib.jobs.workers.scans import ScanStage
from ops_lib.result import BUDGET
from ops_lib.runtime import Budget
from ops_lib.schema import report_email_queue
from ops_lib.timeutil import utcnow

from tests.conftest import job_context, start_cli, tool_env
from tests.test_worker_concurrency import load
from tests.fakes.smtp_server import free_port
from tests.worker_checks import arrivals_held, claimed_rows, rows_in_work

# More than the batches the signal lets finish (on MariaDB the three the lanes hold open).
SCANS = 5 * ScanStage.batch_size + 500


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
    # MariaDB: the second and third batches wait, their scans locked, until the signal is sent,
    # however fast the machine (a batch waiting in its arrivals' INSERT ... SELECT holds the
    # notifications' AUTO-INC lock, so the other lane's batch waits behind it). SQLite has no
    # such hold: there the watch catches its one lane with a batch done and the next one open
    # (its writer lock alone does not say whose transaction holds it).
    with arrivals_held(db_url, [1, 2], ScanStage.batch_size) as held:
        proc = start_cli("run_background_workers", "100000", "--execute", "--json",
                         env=tool_env(db_url, tmp_path))
        deadline = time.monotonic() + 30
        while not (held.waiting() if held
                   else scan_state(db_url)["done"] and rows_in_work(db_url)):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the worker never worked on a batch"
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
    """Regression: this assumed the worker could not drain 20,000 scans in half a second, and
    failed on a fast machine. A fake clock now says how much time has passed: one second per
    look at it, so the third look (before the third stage's turn) is within the 5 s margin of an
    8 s budget, whatever the machine's speed."""
    load(db_url, LoadSize(institutions=2, students_per_institution=200, scans=SCANS, days=3,
                          seed=6))
    ctx = job_context(db_url, tmp_path, OPS_WORKER_THREADS="1")  # the clock counts one lane's looks
    ctx.budget = Budget(8, clock=itertools.count().__next__)
    try:
        result = workers.run(ctx, limit=100_000)
    finally:
        ctx.db.engine.dispose()

    assert (result.status, result.stop_reason) == ("ok", BUDGET)
    # Looks 1 and 2 let the scans and the fan-out take a turn; look 3 stopped the run: exactly
    # one batch of scans was claimed, and it was finished whole.
    scans = next(row for row in result.sections[0].rows if row["stage"] == "scans")
    assert (scans["claimed"], scans["done"]) == (ScanStage.batch_size, ScanStage.batch_size)
    state = scan_state(db_url)
    assert state["done"] == ScanStage.batch_size and state["pending"] == SCANS - state["done"]
    assert state["scan_count"] == state["done_counted"]
    assert not any(claimed_rows(db_url).values())


class SlowSmtp:
    """A local SMTP server that takes 0.3 s to accept each message: a batch of report emails
    lasts long enough for a signal to land in its middle."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
        await asyncio.sleep(0.3)
        self.received += 1
        return "250 accepted"


def email_state(url: str) -> dict:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {(r.status, r.attempts, r.claimed_by is None): r.n for r in conn.execute(text(
                "SELECT status, attempts, claimed_by, COUNT(*) AS n FROM report_email_queue "
                "GROUP BY status, attempts, claimed_by"))}
    finally:
        engine.dispose()


def test_sigterm_mid_email_batch_gives_back_the_unsent_rows_without_spending_an_attempt(
        db_url, db, tmp_path):
    load(db_url, LoadSize(institutions=1, students_per_institution=5, scans=0, seed=8))
    today = utcnow().date()
    with db.begin() as conn:
        conn.execute(insert(report_email_queue), [
            {"institution_id": 1, "recipient": f"head{i}@school.example",
             "report_type": "attendance", "status": "pending", "attempts": 0,
             "params": {"from": str(today - dt.timedelta(days=7)), "to": str(today)},
             "created_at": utcnow()} for i in range(40)])
    handler, port = SlowSmtp(), free_port()
    smtp = Controller(handler, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        proc = start_cli("run_background_workers", "100000", "--execute", "--json",
                         env=tool_env(db_url, tmp_path, OPS_SMTP_HOST="127.0.0.1",
                                      OPS_SMTP_PORT=str(port)))
        deadline = time.monotonic() + 30
        while not handler.received:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no email arrived"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        smtp.stop()

    assert proc.returncode == 0, err
    result = json.loads(out)
    assert (result["status"], result["stop_reason"]) == ("interrupted", "interrupted by SIGTERM")
    state = email_state(db_url)
    sent = state.get(("sent", 1, True), 0)
    # The email each lane was sending when the signal came was finished; the rest of its batch
    # of 20 was given back: pending, unclaimed, its attempt not spent. No lane claimed a second
    # batch (MariaDB runs two lanes, so one batch or two were in hand).
    assert sent == handler.received
    assert state == {("sent", 1, True): sent, ("pending", 0, True): 40 - sent}
    emails = next(r for r in result["sections"]["Stages"] if r["stage"] == "emails")
    assert emails["claimed"] in (20, 20 * result["counts"]["threads"])
    assert 1 <= sent < emails["claimed"] and emails["released"] == emails["claimed"] - sent
