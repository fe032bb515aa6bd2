"""Test-only job types for the DB jobs registry (never in ops_lib: `register()` adds them).

- `record_effect`: writes one audit_logs row per run of a slot (the effect tests count). With
  OPS_TEST_DBJOB_READY set it writes that file once its row is written, then waits inside the
  handler (the transaction open) until the file OPS_TEST_DBJOB_RELEASE exists: the test decides
  when, or kills the process there.
- `always_fail`: writes an audit_logs row, then raises (the row must roll back with the slot).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import insert

from ops_lib.jobs.db_jobs.handlers import HANDLERS
from ops_lib.schema import audit_logs

ACTOR = "db-job-test"


def _effect(conn, call, action: str) -> None:
    conn.execute(insert(audit_logs).values(
        actor=ACTOR, action=action, entity_type="cron_job", entity_id=str(call.job_id),
        details={"slot": call.slot_at.isoformat()}))


def record_effect(conn, call) -> int:
    """Writes one audit row; may wait inside the transaction for the test's release file."""
    _effect(conn, call, "ran")
    ready, release = os.environ.get("OPS_TEST_DBJOB_READY"), os.environ.get(
        "OPS_TEST_DBJOB_RELEASE")
    if ready:
        Path(ready).write_text(str(os.getpid()), encoding="utf-8")
        while release and not Path(release).exists():
            time.sleep(0.01)  # polling a file the test controls, not a timing guess
    return 1


def always_fail(conn, call) -> int:
    """Writes an audit row, then fails."""
    _effect(conn, call, "failed")
    raise RuntimeError("the test handler always fails")


TEST_HANDLERS = {"record_effect": record_effect, "always_fail": always_fail}


def register() -> None:
    HANDLERS.update(TEST_HANDLERS)
