"""A worker killed with SIGKILL mid-batch loses and doubles nothing (SQLite, and MariaDB through
each driver). A batch of scans, fan-out, roll-ups or snapshots is worked inside the transaction
that locks it: the kill rolls it back. Push and email claim first: their rows come back when the
lease expires (recovered at the start of every run)."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from ops_lib.jobs.synthetic_load import LoadSize
from ops_lib.jobs.workers.scans import ScanStage

from tests.conftest import EVERY_BACKEND, start_cli, tool_env
from tests.test_worker_concurrency import load
from tests.worker_checks import (
    arrivals_held,
    assert_processed_exactly_once,
    claimed_rows,
    rows_in_work,
    run_worker_until_drained,
    stage_total,
)

LEASE = 1  # seconds: so that the next run may recover the killed run's claims almost at once


def kill_mid_batch(url: str, env: dict, delay: float) -> tuple[dict[str, int], bool]:
    """Start a worker, wait until it works on rows (a transaction holding them, or a claim),
    SIGKILL it `delay` seconds later; returns what it left claimed, per queue table, and whether
    it was inside such a transaction or held a claim the moment before the kill."""
    # MariaDB: the first batch waits, its scans locked, until the kill, however fast the
    # machine; on SQLite the watch below catches the worker at work.
    with arrivals_held(url, [0], ScanStage.batch_size) as held:
        def working() -> bool:
            return bool((held and held.waiting()) or rows_in_work(url)
                        or any(claimed_rows(url).values()))

        proc = start_cli("run_background_workers", "100000", "--execute", "--json", env=env)
        try:
            deadline = time.monotonic() + 30
            while not working():
                assert proc.poll() is None, f"worker ended before working: {proc.stderr.read()}"
                assert time.monotonic() < deadline, "worker never worked on a row"
                time.sleep(0.005)
            time.sleep(delay)
            was_working = working()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
            if held:
                held.end_dead_worker_sessions()
    assert proc.returncode == -signal.SIGKILL
    return claimed_rows(url), was_working


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("db_url", EVERY_BACKEND, indirect=True)
def test_worker_killed_mid_batch_loses_and_doubles_nothing_after_recovery(db_url, tmp_path):
    load(db_url, LoadSize(institutions=2, students_per_institution=150, scans=5_000,
                          days=3, seed=11))
    env = tool_env(db_url, tmp_path, OPS_WORKER_LEASE_SECONDS=str(LEASE))
    rng = random.Random(3)

    left_claimed, working = [], []
    # The first kill lands as soon as the worker is seen working (a batch of scans is then in
    # its transaction, however fast the machine); the second at a random point a moment later.
    for delay in (0.0, rng.uniform(0.0, 0.6)):
        left, was_working = kill_mid_batch(db_url, env, delay)
        left_claimed.append(left)
        working.append(was_working)
        if any(left.values()):  # a kill in a locked batch leaves nothing to wait for
            time.sleep(LEASE + 1.1)  # past the lease (DATETIME has whole seconds)
    assert any(working), "no kill landed while the worker was working: the test proved nothing"

    results = run_worker_until_drained(env)

    recovered_first = sum(row["details"].get("recovered", 0)
                          for row in results[0]["sections"]["Stages"])
    assert recovered_first == sum(left_claimed[-1].values())
    assert stage_total(results, "scans", "lost") == 0
    # A push written to the outbox just before the kill is sent again by the recovering run
    # (at least once is all a provider call allows); the database still holds one delivery.
    totals = assert_processed_exactly_once(db_url, tmp_path / "outbox", push_sent_once=False)
    assert totals["scans"] == 5_000
