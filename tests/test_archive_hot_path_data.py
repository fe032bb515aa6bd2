"""archive_hot_path_data: retention boundaries, protected payments, attendance, crash safety."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import signal
import threading
import time

import pytest
from conftest import run_cli, snapshot, start_cli, tool_env
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import DBAPIError

from ops_lib.cli import read_table_settings
from ops_lib.db import connect, describe_db_error
from ops_lib.jobs import archive_hot_path
from ops_lib.render import render_plain
from ops_lib.runtime import Budget, RunContext, StopSignal
from ops_lib.schema import (
    attendance_records,
    audit_logs,
    audit_logs_archive,
    institutions,
    invoices,
    notifications,
    notifications_archive,
    ops_job_runs,
    payments,
    payments_archive,
    students,
    system_settings,
)
from ops_lib.settings import load_settings
from ops_lib.timeutil import utcnow

NOW = dt.datetime(2026, 6, 1, 12, 0, 0)
DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)


def job_context(db, dry_run: bool) -> RunContext:
    settings = load_settings(env={}).with_table(read_table_settings(db))
    return RunContext(db=db, settings=settings, run_id="test", tool="archive_hot_path_data",
                      dry_run=dry_run, budget=Budget(None), stop=StopSignal())


def archive(db, dry_run=False, batch=1000, now=NOW):
    return archive_hot_path.run(job_context(db, dry_run), batch=batch, now=now)


def rows(db, table, order="id"):
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(table.c[order])).mappings()]


def ids(db, table):
    return [r["id"] for r in rows(db, table)]


def notification(id_, created_at, **extra):
    row = {"id": id_, "guardian_id": 7, "student_id": 3, "kind": "attendance",
           "title": f"Title {id_}", "body": f"body {id_} \u09ac\u09be\u0982\u09b2\u09be",
           "data": {"n": id_, "tags": ["a", "b"]}, "dedupe_key": f"n-{id_}",
           "created_at": created_at, "read_at": None}
    row.update(extra)
    return row


def audit(id_, created_at):
    return {"id": id_, "actor": "support", "action": "update", "entity_type": "invoice",
            "entity_id": str(id_), "details": {"field": "status"}, "created_at": created_at}


def seed(db):
    """Rows on both sides of every area's cut-off (default retention), and one exactly on it."""
    n_cut = NOW - 90 * DAY
    a_cut = NOW - 365 * DAY
    p_cut = NOW - 730 * DAY
    d_cut = (NOW - 400 * DAY).date()
    with db.begin() as conn:
        conn.execute(insert(notifications), [
            notification(1, n_cut - 10 * DAY),
            notification(2, n_cut - SECOND, read_at=n_cut),
            notification(3, n_cut),  # exactly at the cut-off: stays
            notification(4, n_cut + SECOND),
            notification(5, NOW - DAY),
            notification(6, n_cut - 100 * DAY, data=None, body=None, student_id=None),
        ])
        conn.execute(insert(audit_logs), [
            audit(1, a_cut - SECOND), audit(2, a_cut), audit(3, NOW), audit(4, a_cut - 50 * DAY),
        ])
        conn.execute(insert(institutions), [{"id": 1, "name": "School", "code": "S1",
                                             "created_at": NOW - 900 * DAY}])
        conn.execute(insert(students), [{"id": 1, "institution_id": 1, "name": "Student",
                                         "card_uid": "C1"}])
        conn.execute(insert(invoices), [
            {"id": i, "invoice_no": f"INV-{i}", "kind": "platform", "institution_id": 1,
             "period_start": dt.date(2024, 1, 1), "period_end": dt.date(2024, 1, 31),
             "amount_minor": 250_000, "status": status}
            for i, status in [(1, "paid"), (2, "void"), (3, "due"), (4, "overdue"),
                              (5, "blocked"), (6, "generated")]
        ])
        conn.execute(insert(payments), [
            {"method": None, "reference": None, "paid_at": None, **p} for p in [
            {"id": 1, "invoice_id": 1, "amount_minor": 250_000, "status": "settled",
             "created_at": p_cut - SECOND, "paid_at": p_cut - SECOND, "method": "bkash",
             "reference": "R1"},
            {"id": 2, "invoice_id": 2, "amount_minor": 99_999, "status": "refunded",
             "created_at": p_cut - 30 * DAY},
            {"id": 3, "invoice_id": 3, "amount_minor": 100, "status": "pending",
             "created_at": p_cut - 30 * DAY},  # unpaid invoice: stays
            {"id": 4, "invoice_id": 4, "amount_minor": 100, "status": "failed",
             "created_at": p_cut - 30 * DAY},  # overdue invoice: stays
            {"id": 5, "invoice_id": 5, "amount_minor": 100, "status": "failed",
             "created_at": p_cut - 30 * DAY},  # blocked invoice: stays
            {"id": 6, "invoice_id": 1, "amount_minor": 5, "status": "settled",
             "created_at": p_cut},  # exactly at the cut-off: stays
            {"id": 7, "invoice_id": 6, "amount_minor": 5, "status": "pending",
             "created_at": NOW},
        ]])
        conn.execute(insert(attendance_records), [
            {"id": i, "institution_id": 1, "student_id": 1, "attendance_date": day,
             "first_scan_at": NOW, "last_scan_at": NOW, "updated_at": NOW - 500 * DAY}
            for i, day in [(1, d_cut - dt.timedelta(days=30)), (2, d_cut - dt.timedelta(days=1)),
                           (3, d_cut), (4, d_cut + dt.timedelta(days=1)), (5, NOW.date())]
        ])


def wait_for(condition, proc, timeout: float = 60.0):
    """Poll until `condition()` holds (whatever the machine's speed), or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def without_archived_at(row):
    return {k: v for k, v in row.items() if k != "archived_at"}


def test_archive_moves_only_rows_older_than_retention_and_keeps_the_row_at_the_cutoff(db):
    seed(db)
    before_n, before_a = rows(db, notifications), rows(db, audit_logs)
    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    result = archive(db, batch=2)
    finished = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert result.status == "ok", result.error
    assert result.stop_reason == "no more work"

    assert ids(db, notifications) == [3, 4, 5]
    assert ids(db, notifications_archive) == [1, 2, 6]
    moved = [without_archived_at(r) for r in rows(db, notifications_archive)]
    assert moved == [r for r in before_n if r["id"] in (1, 2, 6)]
    # archived_at is when the batch copied the row (the real clock, not the run's `now`).
    assert all(started <= r["archived_at"] <= finished for r in rows(db, notifications_archive))
    assert rows(db, notifications) == [r for r in before_n if r["id"] in (3, 4, 5)]

    assert ids(db, audit_logs) == [2, 3]
    assert [without_archived_at(r) for r in rows(db, audit_logs_archive)] == \
        [r for r in before_a if r["id"] in (1, 4)]
    assert result.counts["notifications_moved"] == 3
    assert result.counts["audit_logs_moved"] == 2


def test_payments_an_unpaid_invoice_depends_on_stay_in_the_hot_table(db):
    seed(db)
    before = rows(db, payments)
    plan = {r["Area"]: r for r in archive(db, dry_run=True).sections[0].rows}
    assert plan["payments"]["Eligible"] == 2
    assert "3 kept: their invoice is not paid or void" in plan["payments"]["Notes"]

    archive(db)
    assert ids(db, payments) == [3, 4, 5, 6, 7]
    assert [without_archived_at(r) for r in rows(db, payments_archive)] == \
        [r for r in before if r["id"] in (1, 2)]
    assert rows(db, payments_archive)[0]["amount_minor"] == 250_000


def test_attendance_records_are_marked_archived_and_kept_in_place(db):
    seed(db)
    before = rows(db, attendance_records)
    started = utcnow()
    result = archive(db)
    finished = utcnow()
    after = rows(db, attendance_records)
    assert [r["id"] for r in after] == [1, 2, 3, 4, 5]
    assert [r["is_archived"] for r in after] == [True, True, False, False, False]
    # The mark moves updated_at to the moment it was written (the warehouse export's watermark
    # must see the change); nothing else about the record changes.
    assert all(started <= r["updated_at"] <= finished for r in after[:2])
    unchanged = {"is_archived": False, "updated_at": NOW - 500 * DAY}
    assert [dict(r, **unchanged) for r in after] == before
    assert after[2:] == before[2:]
    assert result.counts["attendance_records_marked"] == 2
    assert archive(db).counts["attendance_records_marked"] == 0


def test_readiness_table_counts_eligible_rows_exactly_and_lists_the_batch_statements(db):
    seed(db)
    result = archive(db, dry_run=True)
    table = {r["Area"]: (r["Retention"], r["Eligible"], r["Status"])
             for r in result.sections[0].rows}
    assert table == {
        "notifications": ("90 days", 3, "ready"),
        "audit_logs": ("365 days", 2, "ready"),
        "payments": ("730 days", 2, "ready"),
        "attendance_records": ("400 days", 2, "ready"),
    }
    joined = "\n".join(result.statements)
    assert "INSERT INTO notifications_archive" in joined
    assert "DELETE FROM payments" in joined
    assert "UPDATE attendance_records SET is_archived" in joined
    if db.caps.is_mysql:
        assert "FOR UPDATE" in joined


def test_retention_comes_from_the_system_settings_table(db):
    seed(db)
    with db.begin() as conn:
        conn.execute(insert(system_settings), [{"name": "notifications_retention_days",
                                                "value": "1"}])
    archive(db)
    assert ids(db, notifications) == [5]  # created a day before NOW: exactly at a 1-day cut-off


def every_row(db, but_run: str | None = None) -> dict:
    """Every row of every table, the run ledger included less one run's own row."""
    everything = snapshot(db)
    with db.engine.connect() as conn:
        everything["ops_job_runs"] = sorted(
            (tuple(r) for r in conn.execute(
                select(ops_job_runs).where(ops_job_runs.c.run_id != (but_run or "")))),
            key=repr)
    return everything


def test_archive_dry_run_leaves_every_table_as_it_was(db, db_url, tmp_path):
    seed(db)
    env = tool_env(db_url, tmp_path)
    assert run_cli("archive_hot_path_data", env=env).returncode == 0  # an earlier run's ledger row
    before = every_row(db)
    result = archive(db, dry_run=True)
    assert result.counts["notifications_eligible"] == 3
    assert result.stop_reason == "dry run: nothing changed"
    assert every_row(db) == before
    proc = run_cli("archive_hot_path_data", "2", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    output = json.loads(proc.stdout)
    assert output["dry_run"] is True
    assert output["stop_reason"] == "dry run: nothing changed"
    assert output["counts"]["notifications_eligible"] == 6  # by the real clock
    assert every_row(db, but_run=output["run_id"]) == before
    assert len(before["ops_job_runs"]) == 1


def test_a_row_already_in_the_archive_is_not_copied_twice_and_leaves_the_hot_table(db):
    seed(db)
    copy = dict(rows(db, notifications)[0], archived_at=NOW - DAY)  # a manual partial copy
    with db.begin() as conn:
        conn.execute(insert(notifications_archive), [copy])
    result = archive(db, batch=10)
    assert result.status == "ok", result.error
    assert ids(db, notifications_archive) == [1, 2, 6]
    assert rows(db, notifications_archive)[0]["archived_at"] == NOW - DAY
    assert ids(db, notifications) == [3, 4, 5]
    assert result.sections[1].rows[0]["Pre-archived"] == 1
    statistics = {r["Action"]: r["Count"] for r in result.sections[2].rows}
    assert statistics["duplicate fallback"] == 1  # the primary key refused, the batch was redone


def test_a_different_row_in_the_archive_with_the_same_id_stops_the_run_and_rolls_back(db):
    seed(db)
    copy = dict(rows(db, notifications)[1], title="changed by hand", archived_at=NOW)
    with db.begin() as conn:
        conn.execute(insert(notifications_archive), [copy])
    before = snapshot(db)
    result = archive(db, batch=10)
    assert result.status == "failed"
    assert "different contents" in result.error
    assert result.final_exit_code() == 1
    assert snapshot(db) == before  # the notifications batch rolled back; the run stopped there


def test_non_contiguous_keys_are_moved_exactly(db):
    # Eligible and young rows interleaved: batches select scattered ids (the IN-list path).
    with db.begin() as conn:
        conn.execute(insert(notifications), [
            notification(i, NOW - (200 * DAY if i % 3 else DAY)) for i in range(1, 61)
        ])
    result = archive(db, batch=7)
    assert ids(db, notifications) == [i for i in range(1, 61) if i % 3 == 0]
    assert ids(db, notifications_archive) == [i for i in range(1, 61) if i % 3]
    statistics = {r["Action"]: r["Count"] for r in result.sections[2].rows}
    # Seven rows out of a window wider than 7 ids: the batch read where its copy ended.
    assert statistics["last_copied"] >= 1
    assert "duplicate fallback" not in statistics


def test_an_id_the_archive_holds_past_a_full_batch_in_its_window_redoes_it_with_the_look_up(db):
    # Id 20 is in the archive only (restored there by hand, say). After the young ids 6..13 the
    # window (10, 20] is wider than a batch of 5: the copy takes 14..18 and does not meet 20,
    # but the archive's count for the window (6) is not the copy's (5), so the batch is redone
    # with the look-up; so is the next, (18, 26].
    with db.begin() as conn:
        conn.execute(insert(notifications), [
            notification(i, NOW - (DAY if 6 <= i <= 13 else 200 * DAY))
            for i in range(1, 41) if i != 20])
        conn.execute(insert(notifications_archive), [
            dict(notification(20, NOW - 200 * DAY), archived_at=NOW - DAY)])
    result = archive(db, batch=5)
    assert result.status == "ok", result.error
    assert ids(db, notifications) == list(range(6, 14))
    assert ids(db, notifications_archive) == list(range(1, 6)) + list(range(14, 41))
    statistics = {r["Action"]: r["Count"] for r in result.sections[2].rows}
    assert statistics["duplicate fallback"] == 2
    assert result.counts["notifications_moved"] == 31


def sqlite_db(tmp_path):
    from conftest import sqlite_database

    return connect(sqlite_database(tmp_path))


def test_a_row_that_turns_old_between_the_copy_and_the_delete_makes_the_batch_redone_by_ids(
        tmp_path):
    # The delete takes the window's old rows up to the last copied id: one more than the copy
    # took shows in the count, and the batch rolls back and is redone by its selected ids
    # (SQLite: a trigger changes the row between the two statements, in both attempts; on
    # MySQL the copy's locks leave only rows it did not take to change).
    db = sqlite_db(tmp_path)
    with db.begin() as conn:
        conn.execute(insert(notifications), [
            notification(i, NOW - (DAY if i == 3 else 200 * DAY)) for i in range(1, 6)])
        conn.exec_driver_sql(
            "CREATE TRIGGER turns_old AFTER INSERT ON notifications_archive WHEN NEW.id = 5 "
            "BEGIN UPDATE notifications SET created_at = '2020-01-01 00:00:00' WHERE id = 3; END")
    before = {r["id"]: r for r in rows(db, notifications)}
    result = archive(db, batch=10)
    assert result.status == "ok", result.error
    assert [without_archived_at(r) for r in rows(db, notifications_archive)] == \
        [before[i] for i in (1, 2, 4, 5)]
    assert ids(db, notifications) == [3]  # old now: the next run takes it
    statistics = {r["Action"]: r["Count"] for r in result.sections[2].rows}
    assert statistics["changed range fallback"] == 1
    assert statistics["select"] == 1  # the redo selected the ids 1, 2, 4, 5 and moved those


def test_a_payment_whose_invoice_is_paid_during_the_batch_is_not_deleted_uncopied(tmp_path):
    # A payment's eligibility reads its invoice, which the copy does not lock: payment 2 becomes
    # eligible, and payment 1 protected, between the copy and the delete. The delete takes only
    # rows the archive holds: 1 and 3 leave (both copied), 2 stays for the next run.
    db = sqlite_db(tmp_path)
    seed(db)
    with db.begin() as conn:
        conn.execute(update(payments).where(payments.c.id == 2).values(invoice_id=3))  # due
        conn.exec_driver_sql(
            "CREATE TRIGGER invoices_change AFTER INSERT ON payments_archive WHEN NEW.id = 3 "
            "BEGIN UPDATE invoices SET status = 'paid' WHERE id = 3; "
            "UPDATE invoices SET status = 'due' WHERE id = 1; END")
        conn.execute(insert(payments), [{
            "id": 8, "invoice_id": 2, "amount_minor": 7, "status": "settled",
            "created_at": NOW - 800 * DAY, "method": None, "reference": None, "paid_at": None}])
        conn.execute(update(payments).where(payments.c.id == 3).values(invoice_id=2))  # void
    before = {r["id"]: r for r in rows(db, payments)}
    result = archive(db, batch=10)
    assert result.status == "ok", result.error
    assert ids(db, payments_archive) == [1, 3, 8]
    assert [without_archived_at(r) for r in rows(db, payments_archive)] == \
        [before[1], before[3], before[8]]
    assert ids(db, payments) == [2, 4, 5, 6, 7]


def test_max_replica_lag_without_a_replica_says_it_has_no_effect(db):
    seed(db)
    result = archive_hot_path.run(job_context(db, False), batch=100, max_replica_lag=5, now=NOW)
    assert result.status == "ok"
    expected = "has no effect" if db.caps.is_mysql else "ignored: SQLite has no replicas"
    assert any(expected in note for note in result.notes), result.notes


def test_max_runtime_stops_between_batches_and_says_why(db_url, db, tmp_path):
    """Regression: `--max-runtime 0.5 --sleep 0.3` assumed the run reached its first batch
    within half a second, and failed on a slow machine. The budget's clock now moves 100 s per
    committed batch, whatever the machine's speed: the fourth batch is never started."""
    with db.begin() as conn:
        conn.execute(insert(notifications), [
            notification(i, dt.datetime(2020, 1, 1)) for i in range(1, 201)])
    ctx = job_context(db, False)
    elapsed = [0.0]
    ctx.budget = Budget(250, clock=lambda: elapsed[0])

    def every_batch_takes_100_seconds(_area, _keys) -> None:
        elapsed[0] += 100

    result = archive_hot_path.run(ctx, batch=10, before_commit=every_batch_takes_100_seconds)
    assert (result.status, result.stop_reason) == ("ok", "max runtime reached")
    assert len(ids(db, notifications_archive)) == 30
    assert len(ids(db, notifications)) == 170
    assert "statistics: Action=copy" in render_plain(result)


@pytest.mark.mariadb
@pytest.mark.slow
def test_archive_killed_at_random_moments_leaves_every_row_in_exactly_one_table(mariadb_url,
                                                                              tmp_path):
    database = connect(mariadb_url)
    old = dt.datetime(2020, 1, 1)
    with database.begin() as conn:
        conn.execute(insert(notifications), [
            notification(i, old + i * SECOND, title=f"kill test {i}") for i in range(1, 20001)])
        conn.execute(insert(audit_logs), [audit(i, old) for i in range(1, 5001)])
    original_n = rows(database, notifications)
    original_a = rows(database, audit_logs)
    env = tool_env(mariadb_url, tmp_path)
    rng = random.Random(5)
    kills = 0
    for _ in range(12):
        proc = start_cli("archive_hot_path_data", "50", "--execute", "--sleep", "0.02", env=env)
        time.sleep(rng.uniform(0.4, 1.6))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=30)
    assert kills >= 10
    final = run_cli("archive_hot_path_data", "500", "--execute", env=env)
    assert final.returncode == 0, final.stderr

    for table, archive_table, original in ((notifications, notifications_archive, original_n),
                                           (audit_logs, audit_logs_archive, original_a)):
        hot, cold = rows(database, table), rows(database, archive_table)
        assert hot == []
        assert len(cold) == len(original)  # none twice (the archive's key would refuse it anyway)
        assert [without_archived_at(r) for r in cold] == original
    with database.engine.connect() as conn:
        dupes = conn.execute(select(func.count()).select_from(notifications_archive)
                             .where(notifications_archive.c.id.in_(
                                 select(notifications.c.id)))).scalar_one()
    assert dupes == 0
    database.engine.dispose()


@pytest.mark.parametrize("bad", ["0", "20000", "abc"])
def test_a_bad_batch_size_is_refused_with_exit_2_before_connecting(bad, tmp_path):
    env = tool_env("mysql+pymysql://nobody@127.0.0.1:1/none", tmp_path)
    proc = run_cli("archive_hot_path_data", bad, env=env)
    assert proc.returncode == 2
    assert "BATCH" in proc.stderr


def test_sigterm_finishes_the_current_batch_and_records_the_run_as_interrupted(db_url, db,
                                                                               tmp_path):
    with db.begin() as conn:
        conn.execute(insert(notifications), [
            notification(i, dt.datetime(2020, 1, 1)) for i in range(1, 201)])
    # A long pause between batches: the signal lands in one, however fast the machine.
    proc = start_cli("archive_hot_path_data", "10", "--execute", "--sleep", "5",
                     env=tool_env(db_url, tmp_path))
    wait_for(lambda: ids(db, notifications_archive), proc)  # the first batch is committed
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "status=interrupted" in stdout
    assert "stopped: interrupted by SIGTERM" in stdout
    cold = ids(db, notifications_archive)
    assert 0 < len(cold) < 200 and len(cold) % 10 == 0  # whole batches only
    assert sorted(ids(db, notifications) + cold) == list(range(1, 201))


def fill_attendance(database, archived: int, eligible: int, recent: int, students: int = 50):
    """Records in id order as the web app writes them: a history already archived, `eligible`
    records older than the retention at NOW, then recent ones (MariaDB's SEQUENCE engine)."""
    old, total = archived + eligible, archived + eligible + recent
    with database.begin() as conn:
        conn.execute(insert(institutions), [{"id": 1, "name": "School", "code": "S1"}])
        conn.exec_driver_sql(
            "INSERT INTO students (id, institution_id, name, card_uid) "
            f"SELECT seq, 1, CONCAT('Student ', seq), CONCAT('C', seq) FROM seq_1_to_{students}")
        conn.exec_driver_sql(
            "INSERT INTO attendance_records (id, institution_id, student_id, attendance_date, "
            "first_scan_at, last_scan_at, is_archived) "
            f"SELECT seq, 1, 1 + MOD(seq - 1, {students}), IF(seq <= {old}, "
            f"DATE'2020-01-01' + INTERVAL ((seq - 1) DIV {students}) DAY, "
            f"DATE'2026-05-01' + INTERVAL ((seq - {old} - 1) DIV {students}) DAY), "
            f"'2026-05-01 07:00:00', '2026-05-01 07:00:00', seq <= {archived} "
            f"FROM seq_1_to_{total}")


def try_update(database, table, record_id: int, **values) -> str:
    """Update one row from another connection, waiting at most 1 s for its lock: "updated", or
    the error that refused it."""
    with database.engine.connect() as conn:
        try:
            with conn.begin():
                conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
                conn.execute(update(table).where(table.c.id == record_id).values(**values))
            return "updated"
        except DBAPIError as exc:
            return describe_db_error(exc)


def while_first_batch_is_open(database, area: str, batch: int, look):
    """Run the archive in a thread, hold the first batch of `area` open just before its commit,
    and call `look(keys)` meanwhile; returns (keys, what look returned, the run's result)."""
    batch_open, release = threading.Event(), threading.Event()
    held: list = []

    def hold_the_first_batch(name, keys):
        if name == area and not held:
            held.append(keys)
            batch_open.set()
            assert release.wait(60), "the test never released the batch"

    outcome: dict = {}

    def archive_in_background():
        try:
            outcome["result"] = archive_hot_path.run(job_context(database, False), batch=batch,
                                                     now=NOW, before_commit=hold_the_first_batch)
        except BaseException as exc:  # shown by the assertion below
            outcome["error"] = exc
        finally:
            batch_open.set()  # or it never opened one: the assertions below say so

    worker = threading.Thread(target=archive_in_background)
    worker.start()
    try:
        assert batch_open.wait(60), f"the archive never opened a batch of {area}"
        assert held, outcome.get("error") or outcome["result"].counts
        seen = look(held[0])
    finally:
        release.set()
        worker.join(60)
    assert "result" in outcome, outcome.get("error")
    return held[0], seen, outcome["result"]


@pytest.mark.mariadb
def test_an_open_attendance_batch_locks_only_its_own_records_not_every_old_one(mariadb_url):
    # The shape where MariaDB would rather read the retention index and sort every eligible
    # record (each batch then locked all of them, and the web app's updates timed out).
    database = connect(mariadb_url)
    fill_attendance(database, archived=2000, eligible=2000, recent=1000)
    keys, (inside, outside), result = while_first_batch_is_open(
        database, "attendance_records", 100, lambda _keys: (
            try_update(database, attendance_records, 2050, status="late"),
            try_update(database, attendance_records, 3999, status="late")))
    assert (keys.first, keys.last) == (2001, 2100)
    assert "1205" in inside  # the batch does hold its own rows
    assert outside == "updated"  # a record of a later batch is free while this one is open
    assert result.status == "ok", result.error
    assert result.counts["attendance_records_marked"] == 2000
    with database.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(attendance_records)
                            .where(attendance_records.c.is_archived == True)  # noqa: E712
                            ).scalar_one() == 4000
    database.engine.dispose()


@pytest.mark.mariadb
def test_an_open_move_batch_holds_the_rows_its_copy_took_and_only_those(mariadb_url):
    # No select of keys before the copy: the INSERT ... SELECT ... FOR UPDATE itself locks.
    database = connect(mariadb_url)
    with database.begin() as conn:
        conn.execute(insert(notifications), [
            notification(i, NOW - (200 * DAY if i <= 250 else DAY)) for i in range(1, 301)])
    keys, (copied, outside, young), result = while_first_batch_is_open(
        database, "notifications", 100, lambda _keys: (
            try_update(database, notifications, 60, title="read by the app"),
            try_update(database, notifications, 160, title="read by the app"),
            try_update(database, notifications, 280, title="read by the app")))
    assert (keys.count, keys.first, keys.last) == (100, 1, 100)
    assert "1205" in copied  # copied, not yet deleted: nobody may change it meanwhile
    assert outside == young == "updated"  # rows of a later batch, and rows that stay, are free
    assert result.status == "ok", result.error
    assert ids(database, notifications) == list(range(251, 301))
    archived = rows(database, notifications_archive)
    assert [r["id"] for r in archived] == list(range(1, 251))
    assert archived[159]["title"] == "read by the app"  # changed before its batch copied it
    database.engine.dispose()


def make_student_id_required_in_the_archive(db):
    """A DBA's change: notifications_archive.student_id NOT NULL (some notifications have none)."""
    with db.begin() as conn:
        if db.caps.is_mysql:
            conn.exec_driver_sql(
                "ALTER TABLE notifications_archive MODIFY student_id BIGINT NOT NULL")
            return
        ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = "
                                   "'notifications_archive'").scalar_one()
        required = re.sub(r"student_id (\w+),", r"student_id \1 NOT NULL,", ddl, count=1)
        assert required != ddl
        conn.exec_driver_sql("DROP TABLE notifications_archive")
        conn.exec_driver_sql(required)


def test_a_copy_refused_for_another_reason_than_a_duplicate_key_fails_at_once_with_its_message(
        db, db_url, tmp_path):
    seed(db)  # notification 6 has no student
    make_student_id_required_in_the_archive(db)
    before = snapshot(db)
    proc = run_cli("archive_hot_path_data", "10", "--execute", "--json",
                   env=tool_env(db_url, tmp_path))
    assert proc.returncode == 1, proc.stderr
    output = json.loads(proc.stdout)
    assert output["status"] == "failed"
    assert "student_id" in output["error"]
    assert re.search(r"cannot be null|NOT NULL constraint failed", output["error"])
    assert "already in" not in proc.stderr  # not mistaken for an archived row
    assert "duplicate fallback" not in proc.stdout + proc.stderr
    assert snapshot(db) == before  # the notifications batch rolled back; the run stopped there


def test_a_long_stretch_of_young_rows_is_crossed_in_a_few_growing_windows(db):
    old, young = NOW - 200 * DAY, NOW - DAY
    with db.begin() as conn:
        conn.execute(insert(notifications), [
            notification(i, old if i <= 5 or i > 4000 else young) for i in range(1, 4006)])
    result = archive(db, batch=5)
    assert result.status == "ok", result.error
    assert ids(db, notifications_archive) == [1, 2, 3, 4, 5, 4001, 4002, 4003, 4004, 4005]
    assert ids(db, notifications) == list(range(6, 4001))
    statistics = {r["Action"]: r["Count"] for r in result.sections[2].rows}
    # Windows of 5 ids would take 799 empty ones; doubling (up to 64 batches) takes a few.
    assert statistics["empty window"] <= 20
    assert statistics["copy"] == statistics["empty window"] + 2
