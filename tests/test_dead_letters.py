"""The dead-letter support tool: list, retry, forget and prune failed queue rows, and nothing else."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import insert, select

from ops_lib.jobs import dead_letters
from ops_lib.jobs.synthetic_load import LoadSize, load
from ops_lib.runtime import Budget, RunContext, StopSignal
from ops_lib.schema import (
    attendance_records,
    attendance_scan_queue,
    notifications,
    push_deliveries,
    report_email_queue,
    students,
    system_settings,
)
from ops_lib.settings import load_settings
from ops_lib.timeutil import utcnow

from tests.conftest import run_cli, snapshot, tool_env

NOW = utcnow()
DAY = dt.timedelta(days=1)


def seed(db) -> dict:
    """Failed, done and pending rows in all three queues; returns a few ids."""
    with db.begin() as conn:
        rows = load(conn, LoadSize(institutions=1, students_per_institution=3,
                                   guardians_per_student=1, scans=0, days=1), NOW)
        inst = rows["institutions"][0]["id"]
        card = rows["students"][0]["card_uid"]
        guardian = rows["guardians"][0]["id"]
        device = rows["notification_devices"][0]["id"]
        scan = lambda i, card_uid, status, age, error=None: {  # noqa: E731
            "id": i, "institution_id": inst, "card_uid": card_uid, "status": status,
            "scanned_at": NOW - dt.timedelta(hours=i), "attempts": 1, "error": error,
            "created_at": NOW - age, "processed_at": None if status == "pending" else NOW - age}
        conn.execute(insert(attendance_scan_queue), [
            scan(1, "LOST-1", "failed", 40 * DAY, f"unknown card 'LOST-1' at institution {inst}"),
            scan(2, "LOST-2", "failed", 2 * DAY, f"unknown card 'LOST-2' at institution {inst}"),
            scan(3, card, "done", 50 * DAY),
            scan(4, card, "pending", dt.timedelta(0)),
        ])
        conn.execute(insert(notifications), [
            {"id": i, "guardian_id": guardian, "kind": "arrival", "title": "t", "body": "b",
             "dedupe_key": f"k{i}", "created_at": NOW, "fanout_status": "done"}
            for i in (1, 2)])
        conn.execute(insert(push_deliveries), [
            {"id": 1, "notification_id": 1, "device_id": device, "status": "failed",
             "attempts": 5, "error_code": "UNAVAILABLE", "error": "UNAVAILABLE: try later",
             "created_at": NOW - 40 * DAY},
            {"id": 2, "notification_id": 2, "device_id": device, "status": "sent",
             "attempts": 1, "error_code": None, "error": None,
             "created_at": NOW - 40 * DAY},
        ])
        conn.execute(insert(report_email_queue), [
            {"id": 1, "institution_id": inst, "recipient": "x@school.example",
             "report_type": "attendance", "status": "failed", "attempts": 1,
             "error": "550 no such mailbox", "created_at": NOW - 3 * DAY},
            {"id": 2, "institution_id": inst, "recipient": "y@school.example",
             "report_type": "attendance", "status": "pending", "attempts": 0,
             "error": None, "created_at": NOW},
        ])
    return {"institution": inst, "card": card}


def run_job(db, action: str, execute: bool = False, **args):
    settings = load_settings({"database_url": db.url}, env={})
    with db.begin(write=False) as conn:
        table = dict(conn.execute(select(system_settings.c.name, system_settings.c.value)).all())
    ctx = RunContext(db=db, settings=settings.with_table(table), run_id="test",
                     tool="manage_dead_letters", dry_run=not execute, budget=Budget(None),
                     stop=StopSignal())
    return dead_letters.run(ctx, action, **args)


def statuses(db, table) -> dict[int, tuple]:
    with db.begin(write=False) as conn:
        return {r.id: (r.status, r.attempts, r.error)
                for r in conn.execute(select(table.c.id, table.c.status, table.c.attempts,
                                             table.c.error))}


def test_list_shows_failed_rows_of_each_queue_with_error_attempts_and_age(db):
    seed(db)
    result = run_job(db, "list")
    overview = {row["queue"]: row for row in result.sections[0].rows}
    assert {q: (r["failed"], r["oldest_age_days"]) for q, r in overview.items()} == {
        "scans": (2, 40), "deliveries": (1, 40), "emails": (1, 3),
        "dbjobs": (0, None)}  # (tests/test_db_jobs.py has DB jobs' dead slots)
    sample = {(r["queue"], r["id"]): r for r in result.sections[1].rows}
    assert set(sample) == {("scans", 1), ("scans", 2), ("deliveries", 1), ("emails", 1)}
    assert sample[("deliveries", 1)]["attempts"] == 5
    assert sample[("deliveries", 1)]["error"] == "UNAVAILABLE: try later"
    assert sample[("scans", 2)]["age_days"] == 2
    assert "LOST-1" in sample[("scans", 1)]["what"]


def test_every_action_in_a_dry_run_leaves_every_table_as_it_was(db_url, db, tmp_path):
    seed(db)
    before = snapshot(db)
    done = run_cli("manage_dead_letters", "retry", "--json", env=tool_env(db_url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dry_run"] is True
    assert json.loads(done.stdout)["stop_reason"] == "dry run: nothing changed"
    assert json.loads(done.stdout)["counts"]["scans_selected"] == 2
    for action, args in (("retry", {"queue": "scans", "ids": [1]}),
                         ("forget", {"queue": "deliveries", "ids": [1]}),
                         ("prune", {}), ("prune", {"older_than_days": 0}), ("list", {})):
        run_job(db, action, **args)
    assert snapshot(db) == before


def test_dry_run_of_retry_shows_which_rows_would_go_back(db):
    seed(db)
    result = run_job(db, "retry", queue="scans", ids=[1, 3, 99])
    assert [(r["queue"], r["id"]) for r in result.sections[1].rows] == [("scans", 1)]
    assert result.counts["scans_selected"] == 1
    assert "scans 3: status done, not failed: left alone" in result.notes
    assert "scans 99: no such row" in result.notes
    assert any("UPDATE attendance_scan_queue" in s for s in result.statements)


def test_retry_puts_chosen_failed_rows_back_to_pending_and_leaves_the_others(db):
    seed(db)
    result = run_job(db, "retry", execute=True, queue="scans", ids=[1, 3, 4])
    assert result.counts["scans_retried"] == 1
    rows = statuses(db, attendance_scan_queue)
    assert rows[1] == ("pending", 0, None)
    assert rows[2][0] == "failed"  # not chosen
    assert rows[3][:2] == ("done", 1) and rows[4][:2] == ("pending", 1)
    with db.begin(write=False) as conn:
        processed = conn.execute(select(attendance_scan_queue.c.processed_at)
                                 .where(attendance_scan_queue.c.id == 1)).scalar_one()
    assert processed is None


def test_retry_without_ids_puts_back_every_failed_row_of_every_queue(db):
    seed(db)
    result = run_job(db, "retry", execute=True)
    assert (result.counts["scans_retried"], result.counts["deliveries_retried"],
            result.counts["emails_retried"]) == (2, 1, 1)
    assert statuses(db, push_deliveries) == {1: ("pending", 0, None), 2: ("sent", 1, None)}
    with db.begin(write=False) as conn:
        assert conn.execute(select(push_deliveries.c.error_code)
                            .where(push_deliveries.c.id == 1)).scalar_one() is None
    assert statuses(db, report_email_queue)[1] == ("pending", 0, None)


def test_forget_deletes_the_chosen_failed_rows_and_never_a_row_that_is_not_failed(db):
    seed(db)
    result = run_job(db, "forget", execute=True, queue="deliveries", ids=[1, 2])
    assert result.counts["deliveries_forgotten"] == 1
    assert "deliveries 2: status sent, not failed: left alone" in result.notes
    assert statuses(db, push_deliveries) == {2: ("sent", 1, None)}
    run_job(db, "forget", execute=True, queue="scans", ids=[3, 4])
    assert set(statuses(db, attendance_scan_queue)) == {1, 2, 3, 4}


def test_prune_deletes_failed_rows_older_than_the_retention_setting(db):
    seed(db)
    with db.begin() as conn:  # the business setting comes from the settings table
        conn.execute(insert(system_settings), [{"name": "dead_letter_retention_days",
                                                "value": "30", "updated_at": NOW}])
    result = run_job(db, "prune", execute=True)
    assert (result.counts["scans_pruned"], result.counts["deliveries_pruned"],
            result.counts["emails_pruned"]) == (1, 1, 0)
    assert set(statuses(db, attendance_scan_queue)) == {2, 3, 4}  # done row 3 is older: kept
    assert set(statuses(db, push_deliveries)) == {2}
    assert set(statuses(db, report_email_queue)) == {1, 2}

    result = run_job(db, "prune", execute=True, older_than_days=1)
    assert result.counts["scans_pruned"] == 1 and result.counts["emails_pruned"] == 1
    assert set(statuses(db, attendance_scan_queue)) == {3, 4}
    assert set(statuses(db, report_email_queue)) == {2}


def test_prune_counts_age_from_when_a_row_failed_not_when_it_was_queued(db):
    with db.begin() as conn:  # queued 40 days ago, dead-lettered yesterday: kept for 30 days
        conn.execute(insert(report_email_queue), [
            {"id": 1, "institution_id": 1, "recipient": "a@example.org", "report_type": "daily",
             "status": "failed", "attempts": 5, "created_at": NOW - 40 * DAY,
             "finished_at": NOW - DAY},
            {"id": 2, "institution_id": 1, "recipient": "b@example.org", "report_type": "daily",
             "status": "failed", "attempts": 5, "created_at": NOW - 40 * DAY,
             "finished_at": NOW - 31 * DAY}])
    result = run_job(db, "prune", execute=True, queue="emails", older_than_days=30)
    assert result.counts["emails_pruned"] == 1
    assert set(statuses(db, report_email_queue)) == {1}


def test_bad_arguments_are_refused_before_connecting(tmp_path):
    env = tool_env("mysql+pymysql://nobody@127.0.0.1:1/none", tmp_path)
    done = run_cli("manage_dead_letters", "forget", "--id", "3", env=env)
    assert done.returncode == 2
    assert "--id needs one --queue" in done.stderr and "forget needs" not in done.stderr
    assert dead_letters.validate("forget", "scans", [], None) == [
        "forget needs --id (the failed rows to delete); prune deletes failed rows by age"]
    assert dead_letters.validate("list", "all", [], 3) == [
        "--older-than-days only applies to prune"]
    assert dead_letters.validate("prune", "scans", [4], None) == [
        "prune deletes by age, not by id: use forget --id"]


def test_a_retried_scan_is_then_processed_by_the_worker(db_url, db, tmp_path):
    ids = seed(db)
    with db.begin() as conn:  # support fixed the card: the student now carries LOST-1
        conn.execute(students.update().where(students.c.card_uid == ids["card"])
                     .values(card_uid="LOST-1"))
    env = tool_env(db_url, tmp_path)
    done = run_cli("manage_dead_letters", "retry", "--queue", "scans", "--id", "1",
                   "--execute", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["scans_retried"] == 1

    worked = run_cli("run_background_workers", "--execute", "--json", env=env)
    assert worked.returncode == 0, worked.stderr
    rows = statuses(db, attendance_scan_queue)
    assert rows[1] == ("done", 1, None)
    assert rows[2][0] == "failed"  # never retried: still a dead letter
    with db.begin(write=False) as conn:
        record = conn.execute(select(attendance_records)).one()
    assert record.first_scan_at == NOW - dt.timedelta(hours=1)
