"""MariaDB: a worker killed with SIGKILL mid-batch loses and doubles nothing once a later run
has recovered its rows (expired leases are recovered at the start of every run)."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from ops_lib.jobs.synthetic_load import LoadSize

from tests.conftest import start_cli, tool_env
from tests.test_worker_concurrency import load
from tests.worker_checks import (
    assert_processed_exactly_once,
    claimed_rows,
    run_worker_until_drained,
    stage_total,
)

LEASE = 1  # seconds: so that the next run may recover the killed run's rows almost at once


def kill_mid_batch(url: str, env: dict, delay: float) -> dict[str, int]:
    """Start a worker, wait until it holds a claim, SIGKILL it `delay` seconds later; returns
    what it left claimed, per queue table."""
    proc = start_cli("run_background_workers", "100000", "--execute", "--json", env=env)
    try:
        deadline = time.monotonic() + 20
        while not any(claimed_rows(url).values()):
            assert proc.poll() is None, f"worker ended before claiming: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "worker never claimed a row"
            time.sleep(0.01)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return claimed_rows(url)


@pytest.mark.timeout(120)
def test_worker_killed_mid_batch_loses_and_doubles_nothing_after_recovery(mariadb_url, tmp_path):
    load(mariadb_url, LoadSize(institutions=2, students_per_institution=150, scans=5_000,
                               days=3, seed=11))
    env = tool_env(mariadb_url, tmp_path, OPS_WORKER_LEASE_SECONDS=str(LEASE))
    rng = random.Random(3)

    left_claimed = []
    # The first kill lands as soon as a claim is seen (a batch of 5,000 scans is still being
    # worked on then, however fast the machine); the others at random points a moment later.
    for delay in (0.0, rng.uniform(0.0, 0.6), rng.uniform(0.0, 0.6)):
        left_claimed.append(kill_mid_batch(mariadb_url, env, delay))
        time.sleep(LEASE + 1.1)  # past the lease (DATETIME has whole seconds)
    assert any(sum(left.values()) for left in left_claimed), \
        "no kill landed while rows were claimed: the test proved nothing"

    results = run_worker_until_drained(env)

    recovered_first = sum(row["details"].get("recovered", 0)
                          for row in results[0]["sections"]["Stages"])
    assert recovered_first == sum(left_claimed[-1].values())
    assert stage_total(results, "scans", "lost") == 0
    # A push written to the outbox just before the kill is sent again by the recovering run
    # (at least once is all a provider call allows); the database still holds one delivery.
    totals = assert_processed_exactly_once(mariadb_url, tmp_path / "outbox", push_sent_once=False)
    assert totals["scans"] == 5_000
