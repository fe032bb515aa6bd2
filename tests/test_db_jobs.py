"""DB jobs (issue 16): what the worker's dbjobs stage does with each kind of cron_jobs row,
checked in the database, on SQLite and MariaDB.

Times are real (the stage reads the clock) and every row is placed well inside its interval
(half an interval from any slot boundary), so no test depends on when in the minute it runs.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, insert, select, update

from ops_lib.jobs import workers
from ops_lib.jobs.db_jobs import runner, slots
from ops_lib.jobs.db_jobs.figures import figures
from ops_lib.jobs.db_jobs.handlers import HANDLERS
from ops_lib.jobs.queue_health import build_report
from ops_lib.schema import (
    audit_logs,
    cron_job_runs,
    cron_jobs,
    password_reset_codes,
    pending_registrations,
    user_sessions,
    users,
)
from ops_lib.timeutil import utcnow
from tests.conftest import job_context, run_cli, snapshot, tool_env
from tests.fakes.db_job_handlers import TEST_HANDLERS

HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture(autouse=True)
def test_handlers(monkeypatch):
    for name, handler in TEST_HANDLERS.items():
        monkeypatch.setitem(HANDLERS, name, handler)


def add_job(db, **values) -> int:
    row = {"name": "job", "job_type": "record_effect", "user_id": None, "run_at": None,
           "interval_minutes": None, "is_active": True}
    row.update(values)
    with db.begin() as conn:
        return conn.execute(insert(cron_jobs).values(**row)).inserted_primary_key[0]


def add_user(db, user_id: int = 1) -> int:
    with db.begin() as conn:
        conn.execute(insert(users).values(id=user_id, name="Admin", mobile=f"0170000{user_id}",
                                          role="admin"))
    return user_id


def run_worker(db, tmp_path, **env) -> dict:
    """One --execute run of the worker in-process; returns the dbjobs row of its Stages table."""
    ctx = job_context(db.url, tmp_path, **env)
    try:
        result = workers.run(ctx, limit=100)
    finally:
        ctx.db.engine.dispose()
    [row] = [r for r in result.sections[0].rows if r["stage"] == "dbjobs"]
    return row


def job_row(db, job_id: int):
    with db.begin(write=False) as conn:
        return conn.execute(select(cron_jobs).where(cron_jobs.c.id == job_id)).first()


def runs(db, job_id: int | None = None) -> list:
    query = select(cron_job_runs).order_by(cron_job_runs.c.slot_at)
    if job_id is not None:
        query = query.where(cron_job_runs.c.cron_job_id == job_id)
    with db.begin(write=False) as conn:
        return conn.execute(query).all()


def effects(db, job_id: int) -> list[str]:
    """The slots the test handler's committed audit rows name."""
    with db.begin(write=False) as conn:
        details = conn.execute(select(audit_logs.c.details).where(
            audit_logs.c.entity_id == str(job_id))).scalars().all()
    return sorted(d["slot"] if isinstance(d, dict) else json.loads(d)["slot"] for d in details)


def test_a_due_one_off_job_runs_once_and_its_row_is_deleted(db, tmp_path):
    run_at = utcnow() - 30 * MINUTE
    job = add_job(db, name="welcome", run_at=run_at)
    later = add_job(db, name="tomorrow", run_at=utcnow() + 24 * HOUR)

    stage = run_worker(db, tmp_path)

    assert (stage["claimed"], stage["done"]) == (1, 1)
    assert job_row(db, job) is None
    [done] = runs(db, job)
    assert (done.status, done.slot_at, done.last_slot_at, done.attempts) == (
        "done", run_at, None, 1)
    assert effects(db, job) == [run_at.isoformat()]
    assert job_row(db, later).last_run_at is None and runs(db, later) == []
    # Nothing is due any more: a second run does nothing.
    assert run_worker(db, tmp_path)["claimed"] == 0
    assert effects(db, job) == [run_at.isoformat()]


def test_a_recurring_job_runs_for_its_anchored_slot_not_for_the_clock(db, tmp_path):
    created = utcnow() - 90 * MINUTE  # slots: created, created + 60 min; next one in 30 min
    job = add_job(db, interval_minutes=60, created_at=created)

    stage = run_worker(db, tmp_path)

    assert stage["done"] == 1
    latest = created + HOUR
    assert job_row(db, job).last_run_at == latest  # the slot, never the time it finished
    [skipped, done] = runs(db, job)
    assert (done.status, done.slot_at) == ("done", latest)
    assert (skipped.status, skipped.slot_at, skipped.last_slot_at) == ("skipped", created,
                                                                        created)
    assert effects(db, job) == [latest.isoformat()]
    assert run_worker(db, tmp_path)["claimed"] == 0  # the next slot is half an hour away


def test_a_recurring_job_with_run_at_is_anchored_at_run_at(db, tmp_path):
    run_at = utcnow() - 150 * MINUTE
    job = add_job(db, interval_minutes=60, run_at=run_at, created_at=utcnow())
    run_worker(db, tmp_path)
    assert job_row(db, job).last_run_at == run_at + 2 * HOUR
    assert effects(db, job) == [(run_at + 2 * HOUR).isoformat()]


def test_a_recurring_job_down_for_ten_intervals_runs_once_for_the_latest_slot(db, tmp_path):
    now = utcnow()
    anchor = now - 10 * HOUR - 30 * MINUTE
    # It last ran for the anchor's slot; the worker was down for the ten slots since.
    job = add_job(db, interval_minutes=60, created_at=anchor - HOUR, run_at=anchor,
                  last_run_at=anchor)

    stage = run_worker(db, tmp_path)

    latest = anchor + 10 * HOUR
    assert (stage["done"], stage["details"]["skipped_slots"]) == (1, 9)
    assert effects(db, job) == [latest.isoformat()]  # once, for the latest slot
    [gap, done] = runs(db, job)
    # The nine slots between are ONE row, not nine.
    assert (gap.status, gap.slot_at, gap.last_slot_at) == (
        "skipped", anchor + HOUR, anchor + 9 * HOUR)
    assert (done.status, done.slot_at) == ("done", latest)
    assert job_row(db, job).last_run_at == latest


def test_an_inactive_job_never_runs_and_runs_once_when_resumed(db, tmp_path):
    job = add_job(db, interval_minutes=60, created_at=utcnow() - 5 * HOUR - 30 * MINUTE,
                  is_active=False)
    assert run_worker(db, tmp_path)["claimed"] == 0
    assert runs(db, job) == [] and effects(db, job) == []

    with db.begin() as conn:
        conn.execute(update(cron_jobs).values(is_active=True))
    assert run_worker(db, tmp_path)["done"] == 1
    assert len(effects(db, job)) == 1  # once for the latest slot, not once per paused slot


def test_invalid_jobs_are_marked_with_their_reason_and_never_run(db, tmp_path):
    add_user(db, 7)
    now = utcnow()
    unknown = add_job(db, job_type="send_rockets", run_at=now - HOUR)
    unscheduled = add_job(db)
    too_often = add_job(db, interval_minutes=0)
    nobody = add_job(db, user_id=99, run_at=now - HOUR)
    valid = add_job(db, user_id=7, run_at=now - HOUR)

    stage = run_worker(db, tmp_path)

    assert (stage["done"], stage["details"]["marked_invalid"]) == (1, 4)
    assert job_row(db, unknown).invalid_reason == "unknown job_type 'send_rockets'"
    assert job_row(db, unscheduled).invalid_reason == "neither run_at nor interval_minutes is set"
    assert job_row(db, too_often).invalid_reason == "interval_minutes 0 is under 1 minute"
    assert job_row(db, nobody).invalid_reason == "user_id 99 does not exist in users"
    assert job_row(db, valid) is None  # ran, and deleted
    assert [r.cron_job_id for r in runs(db)] == [valid]
    with db.begin(write=False) as conn:
        assert figures(conn, utcnow()).invalid == 4

    # The web app fixes a row: the next run finds it valid and runs it.
    add_user(db, 99)
    stage = run_worker(db, tmp_path)
    assert (stage["done"], stage["details"]["valid_again"]) == (1, 1)
    assert job_row(db, nobody) is None


def test_a_failing_one_off_job_backs_off_then_is_dead_lettered_and_kept(db, tmp_path):
    job = add_job(db, job_type="always_fail", run_at=utcnow() - HOUR)
    env = {"OPS_WORKER_MAX_ATTEMPTS": "2", "OPS_WORKER_BACKOFF_SECONDS": "600"}

    started = utcnow()
    stage = run_worker(db, tmp_path, **env)

    row = job_row(db, job)
    assert (stage["retried"], stage["failed"]) == (1, 0)
    assert row.attempts == 1 and "the test handler always fails" in row.last_error
    assert started + dt.timedelta(seconds=300) <= row.retry_at <= utcnow() + dt.timedelta(
        seconds=600)  # the worker's backoff: between half and all of the first delay
    assert runs(db, job) == [] and effects(db, job) == []  # its writes rolled back
    assert run_worker(db, tmp_path, **env)["claimed"] == 0  # backing off
    with db.begin(write=False) as conn:
        assert figures(conn, utcnow()).delayed == 1

    with db.begin() as conn:  # the backoff has passed
        conn.execute(update(cron_jobs).values(retry_at=utcnow() - MINUTE))
    stage = run_worker(db, tmp_path, **env)

    assert stage["failed"] == 1
    row = job_row(db, job)
    assert row is not None and row.last_run_at == row.run_at and row.attempts == 0
    [dead] = runs(db, job)
    assert (dead.status, dead.slot_at, dead.attempts) == ("failed", row.run_at, 2)
    assert "always fails" in dead.error
    assert run_worker(db, tmp_path, **env)["claimed"] == 0  # dead: never run again by itself
    with db.begin(write=False) as conn:
        health = figures(conn, utcnow())
    assert (health.dead, health.failed_last_hour, health.due) == (1, 1, 0)


def test_a_recurring_jobs_dead_slot_does_not_stop_the_series(db, tmp_path):
    created = utcnow() - 30 * MINUTE
    job = add_job(db, job_type="always_fail", interval_minutes=60, created_at=created)
    stage = run_worker(db, tmp_path, OPS_WORKER_MAX_ATTEMPTS="1")
    assert stage["failed"] == 1
    row = job_row(db, job)
    assert (row.last_run_at, row.attempts, row.retry_at) == (created, 0, None)
    [dead] = runs(db, job)
    assert (dead.status, dead.slot_at) == ("failed", created)
    assert slots.next_slot(slots.Job.from_row(row), utcnow()) == created + HOUR


def test_a_slot_another_run_recorded_first_is_rolled_back_and_counted(db, tmp_path):
    """The unique (job, slot) is the claim: a worker that finds the slot's row there (another
    worker committed it first) rolls its batch back."""
    add_user(db)
    with db.begin() as conn:
        conn.execute(insert(user_sessions).values(user_id=1, token_hash="old",
                                                  expires_at=utcnow() - HOUR))
    run_at = utcnow() - HOUR
    job = add_job(db, job_type="purge_expired_sessions", run_at=run_at)
    with db.begin(write=False) as conn:
        [(read, due)] = runner.check(conn).due(utcnow())
    with db.begin() as conn:  # another worker's committed slot
        conn.execute(insert(cron_job_runs).values(cron_job_id=job, job_type="x", slot_at=run_at,
                                                  status="done"))

    outcome = runner.run_slot(db, read, due, "run-b", utcnow(), 5, (30, 3600))

    assert outcome.kind == runner.TAKEN
    with db.begin(write=False) as conn:  # the purge was rolled back with the slot
        assert conn.execute(select(func.count()).select_from(user_sessions)).scalar_one() == 1
    assert job_row(db, job) is not None


def test_a_handler_of_several_batches_records_its_slot_with_the_last_one(db, tmp_path):
    add_user(db)
    now = utcnow()
    with db.begin() as conn:
        conn.execute(insert(password_reset_codes), [
            {"user_id": 1, "code_hash": f"h{i}", "expires_at": now - MINUTE * (i + 1)}
            for i in range(5)])
    job = add_job(db, job_type="expire_password_reset_codes", interval_minutes=60,
                  created_at=now - 30 * MINUTE)
    with db.begin(write=False) as conn:
        [(read, due)] = runner.check(conn).due(now)
    outcome = runner.run_slot(db, read, due, "run-a", now, 5, (30, 3600), batch_rows=2)
    assert (outcome.kind, outcome.rows, outcome.batches) == (runner.DONE, 5, 3)
    [done] = runs(db, job)
    assert (done.rows_affected, done.slot_at) == (5, due.slot)


# Built-in handlers on real rows: expired and not yet expired, one statement per batch.

def test_expire_password_reset_codes_deletes_expired_codes_of_the_named_user_or_of_all(
        db, tmp_path):
    add_user(db, 1), add_user(db, 2)
    now = utcnow()
    with db.begin() as conn:
        conn.execute(insert(password_reset_codes), [
            {"id": 1, "user_id": 1, "code_hash": "a", "expires_at": now - HOUR},
            {"id": 2, "user_id": 1, "code_hash": "b", "expires_at": now - HOUR, "used_at": now},
            {"id": 3, "user_id": 1, "code_hash": "c", "expires_at": now + HOUR},
            {"id": 4, "user_id": 2, "code_hash": "d", "expires_at": now - HOUR}])

    def codes_left() -> list[int]:
        with db.begin(write=False) as conn:
            return conn.execute(select(password_reset_codes.c.id)
                                .order_by(password_reset_codes.c.id)).scalars().all()

    add_job(db, job_type="expire_password_reset_codes", run_at=now - MINUTE, user_id=2)
    assert run_worker(db, tmp_path)["details"]["rows_affected"] == 1
    assert codes_left() == [1, 2, 3]  # a job naming a user: that user's codes only
    add_job(db, job_type="expire_password_reset_codes", run_at=now - MINUTE)
    # Regression: the first job's row was deleted and SQLite gave the next one its id again,
    # so its slot (same id, same run_at) collided with the deleted job's runs row for ever.
    assert run_worker(db, tmp_path)["details"]["rows_affected"] == 2
    assert codes_left() == [3]  # expired ones, used or not; the live one stays


def test_expire_pending_registrations_marks_only_expired_pending_ones(db, tmp_path):
    now = utcnow()
    rows = [("pending", now - HOUR), ("pending", now + HOUR), ("completed", now - HOUR),
            ("expired", now - 2 * HOUR)]
    with db.begin() as conn:
        conn.execute(insert(pending_registrations), [
            {"id": i, "mobile": f"0180000000{i}", "name": "N", "otp_hash": "x", "status": status,
             "expires_at": expires} for i, (status, expires) in enumerate(rows, 1)])
    add_job(db, job_type="expire_pending_registrations", interval_minutes=60,
            created_at=now - 30 * MINUTE)
    assert run_worker(db, tmp_path)["details"]["rows_affected"] == 1
    with db.begin(write=False) as conn:
        statuses = conn.execute(select(pending_registrations.c.status)
                                .order_by(pending_registrations.c.id)).scalars().all()
    assert statuses == ["expired", "pending", "completed", "expired"]


def test_purge_expired_sessions_deletes_only_expired_sessions(db, tmp_path):
    add_user(db)
    now = utcnow()
    with db.begin() as conn:
        conn.execute(insert(user_sessions), [
            {"id": 1, "user_id": 1, "token_hash": "a", "expires_at": now - HOUR},
            {"id": 2, "user_id": 1, "token_hash": "b", "expires_at": now + HOUR},
            {"id": 3, "user_id": 1, "token_hash": "c", "expires_at": now + HOUR,
             "revoked_at": now}])
    add_job(db, job_type="purge_expired_sessions", run_at=now - MINUTE)
    assert run_worker(db, tmp_path)["details"]["rows_affected"] == 1
    with db.begin(write=False) as conn:
        assert conn.execute(select(user_sessions.c.id).order_by(user_sessions.c.id)
                            ).scalars().all() == [2, 3]


def test_noop_runs_and_records_its_slot(db, tmp_path):
    job = add_job(db, job_type="noop", interval_minutes=60, created_at=utcnow() - 30 * MINUTE)
    assert run_worker(db, tmp_path)["done"] == 1
    [done] = runs(db, job)
    assert (done.status, done.rows_affected) == ("done", 0)


def test_queue_health_counts_due_invalid_and_overdue_jobs(db, tmp_path):
    now = utcnow()
    add_job(db, job_type="noop", run_at=now - 10 * MINUTE)  # due, not run
    add_job(db, job_type="nope", run_at=now - 10 * MINUTE)  # invalid
    # Recurring, last ran three and a half intervals ago: overdue (and due).
    add_job(db, job_type="noop", interval_minutes=60, created_at=now - 5 * HOUR - 30 * MINUTE,
            last_run_at=now - 3 * HOUR - 30 * MINUTE)
    add_job(db, job_type="noop", interval_minutes=60, created_at=now - 30 * MINUTE,
            is_active=False)  # paused: neither
    ctx = job_context(db.url, tmp_path)
    try:
        with ctx.db.begin(write=False) as conn:
            report = build_report(conn, ctx, now)
    finally:
        ctx.db.engine.dispose()
    [jobs] = [q for q in report.queues if q.name == "dbjobs"]
    assert (jobs.due, jobs.invalid, jobs.overdue) == (2, 1, 1)
    assert jobs.latency_seconds == 30 * 60  # the recurring job's slot, half an hour ago
    assert jobs.reasons == ["dbjobs latency 30m", "dbjobs 1 invalid jobs",
                            "dbjobs 1 recurring jobs not run for 3 intervals"]


def test_the_worker_dry_run_lists_the_db_jobs_it_would_run_and_changes_nothing(db, tmp_path):
    add_user(db)
    now = utcnow()
    with db.begin() as conn:
        conn.execute(insert(user_sessions), [
            {"user_id": 1, "token_hash": f"t{i}", "expires_at": now - HOUR} for i in range(3)])
    add_job(db, name="sessions", job_type="purge_expired_sessions", interval_minutes=60,
            created_at=now - 3 * HOUR - 30 * MINUTE)
    add_job(db, name="broken", job_type="nope", run_at=now - HOUR)
    add_job(db, name="once", job_type="noop", run_at=now - HOUR)
    before = snapshot(db)

    done = run_cli("run_background_workers", "--json", env=tool_env(db.url, tmp_path))

    assert done.returncode == 0, done.stderr
    assert snapshot(db) == before  # the invalid row not marked, no slot recorded
    result = json.loads(done.stdout)
    [stage] = [r for r in result["sections"]["Stages"] if r["stage"] == "dbjobs"]
    assert (stage["ready"], stage["would_take"]) == (2, 2)
    assert stage["details"] == {"invalid": 1, "would_mark_invalid": 1, "skipped_slots": 3}
    would_run = result["sections"]["DB jobs to run"]
    assert [(r["name"], r["skipped_slots"], r["would_affect"]) for r in would_run] == [
        ("once", 0, None), ("sessions", 3, 3)]
    assert [r["reason"] for r in result["sections"]["Invalid DB jobs"]] == [
        "unknown job_type 'nope'"]


def test_dead_lettered_slots_are_listed_retried_and_pruned_by_the_dead_letter_tool(db, tmp_path):
    from ops_lib.jobs import dead_letters

    once = add_job(db, name="once", job_type="always_fail", run_at=utcnow() - HOUR)
    hourly = add_job(db, name="hourly", job_type="always_fail", interval_minutes=60,
                     created_at=utcnow() - 30 * MINUTE)
    run_worker(db, tmp_path, OPS_WORKER_MAX_ATTEMPTS="1")
    assert [r.status for r in runs(db)] == ["failed", "failed"]

    def tool(action: str, dry_run: bool = False, **options):
        ctx = job_context(db.url, tmp_path, dry_run=dry_run)
        try:
            return dead_letters.run(ctx, action, queue="dbjobs", **options)
        finally:
            ctx.db.engine.dispose()

    listed = tool("list")
    assert listed.counts["dbjobs_failed"] == 2
    sample = listed.sections[1].rows
    assert {r["what"].split(",")[0] for r in sample} == {
        f"always_fail job {once}", f"always_fail job {hourly}"}

    before = snapshot(db)
    planned = tool("retry", dry_run=True)
    assert snapshot(db) == before
    assert planned.counts["dbjobs_selected"] == 1  # the one-off's; the hourly series went on

    done = tool("retry")
    assert done.counts["dbjobs_retried"] == 1
    assert [r.cron_job_id for r in runs(db)] == [hourly]
    row = job_row(db, once)
    assert (row.last_run_at, row.attempts, row.last_error) == (None, 0, None)
    with db.begin(write=False) as conn:
        assert [job.id for job, _ in runner.check(conn).due(utcnow())] == [once]

    with db.begin() as conn:  # dead-lettered long ago
        conn.execute(update(cron_job_runs).values(finished_at=utcnow() - 40 * 24 * HOUR))
    assert tool("prune").counts["dbjobs_pruned"] == 1
    assert runs(db) == []


def test_dbjobs_takes_its_own_queue_health_thresholds():
    from ops_lib.jobs.queue_health import thresholds
    from ops_lib.settings import load_settings

    settings = load_settings(env={"OPS_HEALTH_QUEUE_LATENCY_WARNING_SECONDS": "dbjobs=120,*=300"})
    assert thresholds(settings, "dbjobs")["latency_warning"] == 120
    assert thresholds(settings, "scans")["latency_warning"] == 300
