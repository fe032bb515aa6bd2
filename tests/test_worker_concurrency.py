"""Four worker processes started together drain 20,000 scans, each exactly once (SQLite, and
MariaDB through each driver)."""

from __future__ import annotations

import pytest

from ops_lib.db import connect
from ops_lib.jobs import synthetic_load
from ops_lib.jobs.synthetic_load import LoadSize

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


@pytest.mark.timeout(180)
@pytest.mark.parametrize("db_url", EVERY_BACKEND, indirect=True)
def test_four_workers_started_together_process_every_scan_exactly_once(db_url, tmp_path):
    # Several scans per student-day (20,000 scans over 600 students and 3 days), so the
    # workers keep merging into the same records at the same time.
    size = LoadSize(institutions=2, students_per_institution=300, guardians_per_student=2,
                    devices_per_guardian=1, scans=20_000, days=3, seed=7)
    counts = load(db_url, size)
    assert counts["attendance_scan_queue"] == 20_000
    env = tool_env(db_url, tmp_path)

    # The four runs are let go together from their ledger insert, so they overlap on any machine.
    results = run_worker_until_drained(env, workers=4, start_together=True)

    first_round = results[:4]
    busy = [r for r in first_round if stage_total([r], "scans", "claimed") > 0]
    assert len(busy) >= 2, "the four runs should share the scans, not run one after another"
    assert stage_total(results, "scans", "done") == 20_000
    assert stage_total(results, "scans", "lost") == 0
    totals = assert_processed_exactly_once(db_url, tmp_path / "outbox")
    assert totals["records"] == 600 * 3
    assert totals["notifications"] == 600 * 3 * 2
    assert totals["deliveries"] == 600 * 3 * 2
    assert all(r["status"] == "ok" for r in results)
