"""A dry run of the worker over a full queue changes nothing and says what each stage would do."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, insert, select, update

from ops_lib.jobs.synthetic_load import LoadSize
from ops_lib.schema import (
    attendance_rollup_queue,
    attendance_scan_queue,
    guardian_snapshot_queue,
    notifications,
    ops_job_runs,
    push_deliveries,
    report_email_queue,
)
from ops_lib.timeutil import utcnow

from tests.conftest import EVERY_BACKEND, run_cli, snapshot, tool_env
from tests.test_worker_concurrency import load

LIMIT = 100


def fill_every_queue(db, db_url: str, env: dict) -> None:
    """Scans, notifications waiting for fan-out, pending deliveries, roll-up and snapshot
    markers, report emails, and one scan held by a run that died (expired lease)."""
    load(db_url, LoadSize(institutions=1, students_per_institution=80, guardians_per_student=2,
                          devices_per_guardian=2, scans=600, days=2, seed=9))
    # A small --execute run leaves every stage part-way: more deliveries than it pushes, more
    # guardians marked than it snapshots. Arrivals are fanned out with their scans, so the
    # notifications waiting for fan-out are the web app's (fanout_status defaults to pending).
    done = run_cli("run_background_workers", "60", "--execute", env=env)
    assert done.returncode == 0, done.stderr
    now = utcnow()
    with db.begin() as conn:
        guardians = conn.execute(select(notifications.c.guardian_id).distinct()
                                 .limit(5)).scalars().all()
        conn.execute(insert(notifications), [
            {"guardian_id": g, "kind": "announcement", "title": "School closed on Friday",
             "body": "The school is closed on Friday.", "dedupe_key": f"announcement:{g}",
             "created_at": now} for g in guardians])
        conn.execute(insert(attendance_rollup_queue),
                     [{"institution_id": 1, "attendance_date": now.date(), "marked_at": now,
                       "claimed_by": None, "lease_expires_at": None}])
        conn.execute(insert(report_email_queue), [
            {"institution_id": 1, "recipient": f"head{i}@school.example",
             "report_type": "attendance", "status": "pending", "attempts": 0,
             "params": {"from": str(now.date() - dt.timedelta(days=7)), "to": str(now.date())},
             "created_at": now} for i in range(3)])
        dead = conn.execute(select(func.max(attendance_scan_queue.c.id))).scalar_one()
        conn.execute(update(attendance_scan_queue).where(attendance_scan_queue.c.id == dead)
                     .values(claimed_by="a-run-that-died", attempts=1,
                             lease_expires_at=now - dt.timedelta(minutes=5)))


def ledger_rows(db, but: str | None = None) -> list[tuple]:
    with db.begin(write=False) as conn:
        return sorted(tuple(r) for r in conn.execute(
            select(ops_job_runs).where(ops_job_runs.c.run_id != (but or ""))))


def ready_counts(db) -> dict[str, int]:
    now = utcnow()
    ready = lambda table, *where: select(func.count()).select_from(table).where(  # noqa: E731
        table.c.claimed_by.is_(None), *where)
    with db.begin(write=False) as conn:
        return {name: conn.execute(query).scalar_one() for name, query in {
            "scans": ready(attendance_scan_queue, attendance_scan_queue.c.status == "pending"),
            "fanout": ready(notifications, notifications.c.fanout_status == "pending"),
            "push": ready(push_deliveries, push_deliveries.c.status == "pending",
                          (push_deliveries.c.available_at.is_(None))
                          | (push_deliveries.c.available_at <= now)),
            "rollups": ready(attendance_rollup_queue),
            "snapshots": ready(guardian_snapshot_queue),
            "emails": ready(report_email_queue, report_email_queue.c.status == "pending"),
        }.items()}


@pytest.mark.parametrize("db_url", EVERY_BACKEND, indirect=True)
def test_dry_run_over_a_full_queue_leaves_every_table_as_it_was(db_url, db, tmp_path):
    env = tool_env(db_url, tmp_path)
    fill_every_queue(db, db_url, env)
    ready = ready_counts(db)
    assert all(ready.values()), f"every queue should have work waiting: {ready}"
    before = snapshot(db), ledger_rows(db)

    done = run_cli("run_background_workers", str(LIMIT), "--json", env=env)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # Every row as it was, the run ledger's too, but for the dry run's own row.
    assert (snapshot(db), ledger_rows(db, but=result["run_id"])) == before
    assert ledger_rows(db) != before[1]  # (its own row is there)
    stages = {row["stage"]: row for row in result["sections"]["Stages"]}
    assert list(stages) == ["scans", "fanout", "push", "rollups", "snapshots", "emails",
                            "dbjobs"]
    assert stages.pop("dbjobs")["ready"] == 0  # no DB jobs here (tests/test_db_jobs.py has them)
    for name, row in stages.items():
        assert row["ready"] == ready[name], name
        assert row["would_take"] == min(LIMIT, ready[name]), name
    # Each figure once: per stage in the table, the run's total in the counts.
    assert result["counts"] == {"would_take": sum(min(LIMIT, n) for n in ready.values())}
    # The same words as every tool's dry run, with what LIMIT would leave for a later run.
    left = sum(max(0, n - LIMIT) for n in ready.values())
    assert left > 0
    assert (result["dry_run"], result["stop_reason"]) == (
        True, f"dry run: nothing changed; limit reached, {left} left")
    assert stages["scans"]["expired"] == 1  # recovery is an --execute thing
    assert "records_created" in stages["scans"]["details"]
    assert "deliveries_to_create" in stages["fanout"]["details"]


def test_dry_run_over_an_empty_database_reports_nothing_to_do(db_url, tmp_path):
    done = run_cli("run_background_workers", "--json", env=tool_env(db_url, tmp_path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert all(row["would_take"] == 0 for row in result["sections"]["Stages"])
    assert result["stop_reason"] == "dry run: nothing changed"


def test_the_samples_show_scan_ids_as_plain_digits_on_a_terminal(db_url, tmp_path):
    """Regression: the Samples column `scan` holds ids, and a terminal drew 1211 as 1,211."""
    from io import StringIO

    from rich.console import Console

    from ops_lib.jobs import workers
    from ops_lib.render import render_terminal
    from tests.conftest import job_context
    from tests.worker_rows import add_institution, engine_for

    engine = engine_for(db_url)
    institution = add_institution(engine)
    with engine.begin() as conn:
        conn.execute(insert(attendance_scan_queue).values(
            id=1211, institution_id=institution, card_uid="NO-SUCH-CARD", device_serial="D1",
            scanned_at=utcnow() - dt.timedelta(minutes=1), status="pending", attempts=0))
    engine.dispose()
    ctx = job_context(db_url, tmp_path, dry_run=True)
    try:
        result = workers.run(ctx, limit=LIMIT)
    finally:
        ctx.db.engine.dispose()
    buffer = StringIO()
    render_terminal(result, Console(file=buffer, width=200, force_terminal=False))
    samples = buffer.getvalue().split("Samples", 1)[1]
    assert "1211" in samples and "1,211" not in samples
