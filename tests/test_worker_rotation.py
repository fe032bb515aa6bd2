"""Regression: a stage whose queue ran dry went on being skipped for the rest of the run, so an
arrival made by a later scan batch waited for the next cron run instead of flowing on."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import insert, select

from ops_lib.jobs.synthetic_load import LoadSize, load
from ops_lib.schema import attendance_scan_queue, notifications, push_deliveries
from ops_lib.timeutil import utcnow

from tests.conftest import run_cli, tool_env


def test_arrivals_made_after_fanout_ran_dry_are_fanned_out_and_pushed_in_the_same_run(
        db_url, db, tmp_path):
    now = utcnow()
    with db.begin() as conn:
        rows = load(conn, LoadSize(institutions=1, students_per_institution=2,
                                   guardians_per_student=1, scans=0, days=1), now)
        first, second = rows["students"]
        inst = first["institution_id"]
        morning = dt.datetime.combine(now.date(), dt.time(1, 0))
        scan = lambda i, card, at: {  # noqa: E731
            "id": i, "institution_id": inst, "card_uid": card, "scanned_at": at,
            "status": "pending", "attempts": 0, "created_at": now}
        # Scan batches are 1000 long: batch 1 makes the first student's arrival, batch 2 only
        # repeats that student (no new work for fan-out), batch 3 makes the second's arrival.
        conn.execute(insert(attendance_scan_queue),
                     [scan(i, first["card_uid"], morning + dt.timedelta(seconds=i))
                      for i in range(1, 2001)]
                     + [scan(2001, second["card_uid"], morning)])

    done = run_cli("run_background_workers", "100000", "--execute", "--json",
                   env=tool_env(db_url, tmp_path))

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stop_reason"] == "no more work"
    with db.begin(write=False) as conn:
        fanned = dict(conn.execute(select(notifications.c.student_id,
                                          notifications.c.fanout_status)).all())
        pushed = conn.execute(select(push_deliveries.c.status)).scalars().all()
    assert fanned == {first["id"]: "done", second["id"]: "done"}
    assert pushed == ["sent", "sent"]
