"""Four worker processes started together drain four batches of scans, each scan exactly once
(SQLite, and MariaDB through each driver)."""

from __future__ import annotations

import pytest

from ops_lib.db import connect
from ops_lib.jobs import synthetic_load
from ops_lib.jobs.synthetic_load import LoadSize
from ops_lib.jobs.workers.scans import ScanStage

from tests.conftest import EVERY_BACKEND, tool_env
from tests.worker_checks import (
    assert_processed_exactly_once,
    run_worker_until_drained,
    stage_total,
)


def load(url: str, size: LoadSize) -> dict[str, int]:
    """Insert the synthetic rows in one transaction; returns rows per table."""
    database = connect(url)
    try:
        with database.begin() as conn:
            rows = synthetic_load.load(conn, size)
        return {name: len(batch) for name, batch in rows.items()}
    finally:
        database.engine.dispose()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("db_url", EVERY_BACKEND, indirect=True)
def test_four_workers_started_together_process_every_scan_exactly_once(db_url, tmp_path):
    # A batch of scans for each of the four runs, and about 11 scans per student-day (8,000
    # scans over 240 students and 3 days, every student-day scanned), so the workers keep
    # merging into the same records at the same time.
    batch = ScanStage.batch_size
    scans, students, days = 4 * batch, 240, 3
    size = LoadSize(institutions=2, students_per_institution=students // 2,
                    guardians_per_student=2, devices_per_guardian=1, scans=scans, days=days,
                    seed=7)
    counts = load(db_url, size)
    assert counts["attendance_scan_queue"] == scans
    env = tool_env(db_url, tmp_path)

    # The four runs are let go together from their ledger insert, so they overlap on any machine,
    # and each may take one batch (LIMIT): on SQLite, whose writer lock lets one run take batch
    # after batch, too, the four share the scans.
    results = run_worker_until_drained(env, workers=4, limit=batch, start_together=True)

    first_round = results[:4]
    busy = [r for r in first_round if stage_total([r], "scans", "claimed") > 0]
    assert len(busy) == 4, "each of the four runs should work a batch of the scans"
    assert stage_total(results, "scans", "done") == scans
    assert stage_total(results, "scans", "lost") == 0
    totals = assert_processed_exactly_once(db_url, tmp_path / "outbox")
    assert totals["records"] == students * days
    assert totals["notifications"] == students * days * 2
    assert totals["deliveries"] == students * days * 2
    assert all(r["status"] == "ok" for r in results)
