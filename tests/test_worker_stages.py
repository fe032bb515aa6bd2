"""The background worker's stage rules, checked in the database afterwards (SQLite and MariaDB)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, select, update

from ops_lib.jobs import workers
from ops_lib.schema import (
    attendance_records,
    attendance_rollups,
    attendance_scan_queue,
    guardian_snapshot_queue,
    guardian_snapshots,
    guardian_students,
    guardians,
    institutions,
    notification_devices,
    notifications,
    push_deliveries,
    students,
)
from tests.conftest import EVERY_BACKEND, job_context

DHAKA = dt.timezone(dt.timedelta(hours=6))


def local(day: int, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    """A Dhaka wall-clock time in November 2026, as the naive UTC the database stores."""
    moment = dt.datetime(2026, 11, day, hour, minute, second, tzinfo=DHAKA)
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


@pytest.fixture
def school(db):
    """One Dhaka school: Asha (2 guardians: one with 2 devices, one inactive device) and Babu
    (a guardian with no device) in class One, Chitra in class Two, and Dipu who has left."""
    with db.engine.begin() as conn:
        conn.execute(insert(institutions), [{"id": 1, "name": "Green School", "code": "GS",
                                             "timezone": "Asia/Dhaka"}])
        conn.execute(insert(students), [
            {"id": 1, "institution_id": 1, "name": "Asha", "class_name": "One", "card_uid": "A1",
             "is_active": True},
            {"id": 2, "institution_id": 1, "name": "Babu", "class_name": "One", "card_uid": "B2",
             "is_active": True},
            {"id": 3, "institution_id": 1, "name": "Chitra", "class_name": "Two",
             "card_uid": "C3", "is_active": True},
            {"id": 4, "institution_id": 1, "name": "Dipu", "class_name": "Two", "card_uid": "D4",
             "is_active": False},
        ])
        conn.execute(insert(guardians), [{"id": g, "name": f"Guardian {g}"} for g in (10, 11, 12)])
        conn.execute(insert(guardian_students), [
            {"guardian_id": 10, "student_id": 1}, {"guardian_id": 11, "student_id": 1},
            {"guardian_id": 12, "student_id": 2}, {"guardian_id": 10, "student_id": 3},
        ])
        conn.execute(insert(notification_devices), [
            {"id": 100, "guardian_id": 10, "token": "tok-10-a", "is_active": True},
            {"id": 101, "guardian_id": 10, "token": "tok-10-b", "is_active": True},
            {"id": 102, "guardian_id": 11, "token": "tok-11-old", "is_active": False},
        ])
    return db


def queue_scans(db, *scans: tuple[str, dt.datetime]) -> None:
    with db.engine.begin() as conn:
        conn.execute(insert(attendance_scan_queue), [
            {"institution_id": 1, "card_uid": card, "device_serial": "GATE-1", "scanned_at": at}
            for card, at in scans
        ])


def drain(db, tmp_path, limit: int = 1000, **env):
    ctx = job_context(db.url, tmp_path, **env)
    try:
        result = workers.run(ctx, limit=limit)
    finally:
        ctx.db.engine.dispose()
    assert result.status == "ok", result.error
    return result


def stage_row(result, stage: str) -> dict:
    return next(row for row in result.sections[0].rows if row["stage"] == stage)


def stage_details(result, stage: str) -> dict[str, int]:
    """The figures of a stage's own (its row's details)."""
    return dict(stage_row(result, stage)["details"])


def rows(db, table, *order):
    with db.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(select(table).order_by(*order))]


def test_first_scan_creates_a_present_record_and_one_arrival_per_guardian(school, tmp_path):
    queue_scans(school, ("A1", local(20, 8, 15)))
    result = drain(school, tmp_path)

    assert stage_details(result, "scans") == {"notifications_created": 2, "records_created": 1}
    [record] = rows(school, attendance_records, attendance_records.c.id)
    assert (record["student_id"], record["attendance_date"], record["status"]) == (
        1, dt.date(2026, 11, 20), "present")
    assert record["first_scan_at"] == record["last_scan_at"] == local(20, 8, 15)
    assert record["scan_count"] == 1
    arrivals = rows(school, notifications, notifications.c.guardian_id)
    assert [(n["guardian_id"], n["kind"], n["dedupe_key"]) for n in arrivals] == [
        (10, "arrival", "arrival:1:2026-11-20:10"), (11, "arrival", "arrival:1:2026-11-20:11")]
    assert arrivals[0]["title"] == "Asha arrived"
    [scan] = rows(school, attendance_scan_queue, attendance_scan_queue.c.id)
    assert (scan["status"], scan["claimed_by"], scan["error"]) == ("done", None, None)
    assert scan["processed_at"] is not None


@pytest.mark.parametrize("db_url", EVERY_BACKEND, indirect=True)
def test_an_arrival_says_who_arrived_when_and_how_in_its_title_body_and_data(school, tmp_path):
    # A name that needs quoting, a late and a present first scan, a month name the server's
    # lc_time_names must not spell; SQLite keeps the scan's microseconds, MariaDB drops them.
    with school.engine.begin() as conn:
        conn.execute(update(students).where(students.c.id == 1).values(name="Ásha O'Neil \\"))
    queue_scans(school, ("A1", local(3, 8, 5, 7).replace(microsecond=250000)),
                ("A1", local(3, 8, 40)), ("C3", local(20, 9, 1)))
    drain(school, tmp_path)

    first_at = {r["student_id"]: r["first_scan_at"] for r in rows(school, attendance_records)}
    arrivals = [(n["title"], n["body"], n["data"]) for n in rows(
        school, notifications, notifications.c.student_id, notifications.c.guardian_id)
        if n["guardian_id"] == 10]
    assert arrivals == [
        ("Ásha O'Neil \\ arrived", "Ásha O'Neil \\ arrived at 08:05 on 03 Nov 2026 (present).",
         {"type": "arrival", "student_id": 1, "attendance_date": "2026-11-03",
          "status": "present", "first_scan_at": first_at[1].isoformat() + "Z"}),
        ("Chitra arrived", "Chitra arrived at 09:01 on 20 Nov 2026 (late).",
         {"type": "arrival", "student_id": 3, "attendance_date": "2026-11-20",
          "status": "late", "first_scan_at": "2026-11-20T03:01:00Z"}),
    ]


def test_a_first_scan_after_the_late_threshold_is_late(school, tmp_path):
    with school.engine.begin() as conn:
        conn.execute(update(institutions).values(late_after="08:30"))
    queue_scans(school, ("A1", local(20, 8, 30)), ("C3", local(20, 8, 31)))
    drain(school, tmp_path)
    statuses = {r["student_id"]: r["status"] for r in rows(school, attendance_records)}
    assert statuses == {1: "present", 3: "late"}


def test_the_late_threshold_setting_applies_when_the_institution_has_none(school, tmp_path):
    queue_scans(school, ("A1", local(20, 9, 0)), ("C3", local(20, 9, 0, 1)))
    drain(school, tmp_path, OPS_SCAN_LATE_AFTER="09:00")
    statuses = {r["student_id"]: r["status"] for r in rows(school, attendance_records)}
    assert statuses == {1: "present", 3: "late"}


def test_the_attendance_date_is_the_institutions_local_date(school, tmp_path):
    # 23:30 UTC on the 20th is 05:30 on the 21st in Dhaka.
    queue_scans(school, ("A1", dt.datetime(2026, 11, 20, 23, 30)))
    drain(school, tmp_path)
    [record] = rows(school, attendance_records)
    assert record["attendance_date"] == dt.date(2026, 11, 21)


@pytest.mark.parametrize("zone, scans, expected", [
    # Lord Howe's clocks go from 02:00 (+10:30) to 02:30 (+11:00) at 15:30 UTC on 3 Oct 2026:
    # inside a UTC hour, whose scans then each need their own offset.
    ("Australia/Lord_Howe",
     [("A1", dt.datetime(2026, 10, 3, 15, 20)), ("C3", dt.datetime(2026, 10, 3, 15, 40))],
     {1: (dt.date(2026, 10, 4), "present", "at 01:50 on 04 Oct 2026"),
      3: (dt.date(2026, 10, 4), "late", "at 02:40 on 04 Oct 2026")}),
    # Kathmandu is 5:45 ahead of UTC: 18:14 UTC is 23:59 on the 20th, 18:15 midnight.
    ("Asia/Kathmandu",
     [("A1", dt.datetime(2026, 11, 20, 18, 14)), ("C3", dt.datetime(2026, 11, 20, 18, 15))],
     {1: (dt.date(2026, 11, 20), "late", "at 23:59 on 20 Nov 2026"),
      3: (dt.date(2026, 11, 21), "present", "at 00:00 on 21 Nov 2026")}),
])
def test_local_dates_and_times_follow_the_zones_offset_at_each_scan(school, tmp_path, zone,
                                                                     scans, expected):
    with school.engine.begin() as conn:
        conn.execute(update(institutions).values(timezone=zone, late_after="02:30"))
    queue_scans(school, *scans)
    drain(school, tmp_path)
    bodies = {n["student_id"]: n["body"] for n in rows(school, notifications)}
    found = {r["student_id"]: (r["attendance_date"], r["status"])
             for r in rows(school, attendance_records)}
    assert found == {student: (day, status) for student, (day, status, _) in expected.items()}
    assert all(when in bodies[student] for student, (_, _, when) in expected.items()), bodies


def test_later_scans_move_last_scan_and_count_without_a_second_arrival(school, tmp_path):
    queue_scans(school, ("A1", local(20, 8, 0)))
    drain(school, tmp_path)
    queue_scans(school, ("A1", local(20, 12, 0)), ("A1", local(20, 15, 45)))
    drain(school, tmp_path)
    [record] = rows(school, attendance_records)
    assert record["first_scan_at"] == local(20, 8, 0)
    assert record["last_scan_at"] == local(20, 15, 45)
    assert record["scan_count"] == 3
    assert len(rows(school, notifications)) == 2  # still one per guardian


def test_scans_out_of_order_or_twice_give_the_same_record(school, tmp_path, db_url):
    day = [local(20, 8, 50), local(20, 9, 20), local(20, 13, 0)]
    # Late scan first, then the earlier ones, each in its own run, and each delivered twice.
    for at in (day[2], day[0], day[1]):
        queue_scans(school, ("A1", at), ("A1", at))
        drain(school, tmp_path)
    queue_scans(school, ("A1", day[0]))  # a third copy, much later
    drain(school, tmp_path)

    [record] = rows(school, attendance_records)
    assert (record["first_scan_at"], record["last_scan_at"], record["scan_count"]) == (
        day[0], day[2], 3)
    assert record["status"] == "present"  # from the earliest scan, not the first processed
    scans = rows(school, attendance_scan_queue, attendance_scan_queue.c.id)
    assert [s["status"] for s in scans] == ["done"] * 7
    assert sum(s["error"] is not None for s in scans) == 4  # the duplicates, noted as such
    assert len(rows(school, notifications)) == 2


def test_an_unknown_card_fails_for_good_with_a_clear_error(school, tmp_path):
    queue_scans(school, ("NOPE", local(20, 8, 0)))
    drain(school, tmp_path)
    drain(school, tmp_path)  # not retried
    [scan] = rows(school, attendance_scan_queue)
    assert scan["status"] == "failed"
    assert scan["error"] == "unknown card 'NOPE' at institution 1"
    assert scan["attempts"] == 1
    assert rows(school, attendance_records) == []


def test_a_scan_of_an_inactive_student_fails(school, tmp_path):
    queue_scans(school, ("D4", local(20, 8, 0)))
    drain(school, tmp_path)
    [scan] = rows(school, attendance_scan_queue)
    assert scan["status"] == "failed"
    assert "inactive" in scan["error"]
    assert rows(school, attendance_records) == []


def test_fan_out_makes_one_delivery_per_active_device(school, tmp_path):
    queue_scans(school, ("A1", local(20, 8, 0)), ("B2", local(20, 8, 1)))
    drain(school, tmp_path)
    deliveries = rows(school, push_deliveries, push_deliveries.c.device_id)
    # Guardian 10's two devices; guardian 11's device is inactive; guardian 12 has none.
    assert [d["device_id"] for d in deliveries] == [100, 101]
    assert {d["status"] for d in deliveries} == {"sent"}  # the outbox, no Firebase configured
    fanned = {n["guardian_id"]: n["fanout_status"] for n in rows(school, notifications)}
    assert fanned == {10: "done", 11: "done", 12: "done"}


def test_fan_out_repeated_adds_no_second_delivery(school, tmp_path):
    queue_scans(school, ("A1", local(20, 8, 0)))
    drain(school, tmp_path)
    with school.engine.begin() as conn:  # as if a crash lost the fan-out's completion mark
        conn.execute(update(notifications).values(fanout_status="pending"))
    drain(school, tmp_path)
    assert len(rows(school, push_deliveries)) == 2


def test_a_scan_batch_fans_out_the_arrivals_it_wrote_and_leaves_waiting_notifications_alone(
        school, tmp_path):
    with school.engine.begin() as conn:  # the app's notification, newest of all, still waiting
        conn.execute(insert(notifications), [{
            "guardian_id": 10, "kind": "billing", "title": "Fee due", "dedupe_key": "fee:10",
            "fanout_status": "pending"}])
    queue_scans(school, ("C3", local(20, 8, 0)))
    ctx = job_context(school.url, tmp_path)
    try:
        take_scans(ctx)
    finally:
        ctx.db.engine.dispose()
    n, d = notifications, push_deliveries
    with school.engine.connect() as conn:
        fanned = conn.execute(select(n.c.kind, n.c.fanout_status, d.c.device_id)
                              .select_from(n.outerjoin(d, d.c.notification_id == n.c.id))
                              .order_by(n.c.id, d.c.device_id)).all()
    # Chitra's arrival reaches both of guardian 10's devices; the fee is the fan-out stage's.
    assert [tuple(row) for row in fanned] == [
        ("billing", "pending", None), ("arrival", "done", 100), ("arrival", "done", 101)]


def test_rollups_count_present_late_and_absent_per_class(school, tmp_path):
    queue_scans(school, ("A1", local(20, 8, 0)), ("B2", local(20, 9, 30)),
                ("A1", local(21, 8, 0)), ("D4", local(20, 8, 0)))
    drain(school, tmp_path)
    got = {(r["attendance_date"].day, r["class_name"]):
           (r["present_count"], r["late_count"], r["absent_count"], r["enrolled_count"])
           for r in rows(school, attendance_rollups)}
    assert got == {
        (20, "One"): (1, 1, 0, 2), (20, "Two"): (0, 0, 1, 1),
        (21, "One"): (1, 0, 1, 2), (21, "Two"): (0, 0, 1, 1),
    }


def test_the_guardian_snapshot_has_children_todays_status_and_unread_count(school, tmp_path):
    # "today" is the real one, so the scan is now, and on time or late by the clock of Dhaka.
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    on_time = now.replace(tzinfo=dt.timezone.utc).astimezone(DHAKA).time() <= dt.time(9, 0)
    queue_scans(school, ("A1", now))
    drain(school, tmp_path)
    snapshots = {s["guardian_id"]: s["payload"] for s in rows(school, guardian_snapshots)}
    assert set(snapshots) == {10, 11}
    payload = snapshots[10]
    assert payload["unread_notifications"] == 1
    children = {c["name"]: c["today"]["status"] for c in payload["children"]}
    assert children == {"Asha": "present" if on_time else "late", "Chitra": "absent"}
    with school.engine.begin() as conn:  # the app marks the arrival read
        conn.execute(update(notifications).values(read_at=now))
        conn.execute(insert(attendance_scan_queue).values(
            institution_id=1, card_uid="C3", scanned_at=now))
    drain(school, tmp_path)
    payload = {s["guardian_id"]: s["payload"] for s in rows(school, guardian_snapshots)}[10]
    assert payload["unread_notifications"] == 1  # Chitra's new arrival; Asha's was read
    assert {c["name"]: c["today"]["status"] for c in payload["children"]}["Chitra"] == (
        "present" if on_time else "late")


def test_limit_caps_each_stage_and_the_rest_waits_for_the_next_run(school, tmp_path):
    queue_scans(school, *[("A1", local(20, 8, 0, s)) for s in range(5)])
    result = drain(school, tmp_path, limit=3)
    assert stage_row(result, "scans")["claimed"] == 3
    pending = [s for s in rows(school, attendance_scan_queue) if s["status"] == "pending"]
    assert len(pending) == 2
    assert result.stop_reason == "limit reached, 2 left"  # the words every tool uses
    result = drain(school, tmp_path, limit=3)
    assert {s["status"] for s in rows(school, attendance_scan_queue)} == {"done"}
    assert result.stop_reason == "no more work"  # the last 2 fit: nothing is left


def test_each_figure_is_shown_once_per_stage_in_the_table_and_the_counts_are_run_totals(
        school, tmp_path):
    """Regression: on a terminal the Stages table was followed by a Counts table repeating its
    figures (scans_claimed, push_done ...)."""
    from io import StringIO

    from rich.console import Console

    from ops_lib.render import render_terminal

    queue_scans(school, ("A1", local(20, 8, 0)), ("B2", local(20, 8, 1)), ("NOPE", local(20, 9)))
    result = drain(school, tmp_path)
    table = result.sections[0].rows
    # The run's totals, and the one fact of the run that is not a stage's: its lanes.
    assert result.counts == {
        **{figure: sum(row[figure] for row in table)
           for figure in ("claimed", "done", "failed") if sum(row[figure] for row in table)},
        "threads": 2 if school.engine.dialect.name == "mysql" else 1}
    shown = StringIO()
    render_terminal(result, Console(file=shown, width=200, force_terminal=False))
    text = shown.getvalue()
    for stage in ("scans", "fanout", "push", "rollups", "snapshots"):
        assert f"{stage}_" not in text, text  # no per-stage figure repeated in the counts


def test_an_institution_with_a_malformed_late_threshold_fails_its_scans_not_the_stage(
        school, tmp_path):
    with school.engine.begin() as conn:
        conn.execute(update(institutions).values(late_after="9am"))
    queue_scans(school, ("A1", local(20, 8, 0)))
    drain(school, tmp_path)
    [scan] = rows(school, attendance_scan_queue)
    assert scan["status"] == "failed"
    assert "invalid late_after '9am'" in scan["error"]


def test_a_stage_that_breaks_spends_the_attempt_and_dead_letters_a_row_it_always_breaks(
        school, tmp_path):
    """Regression: a failing stage used to give its batch back unspent, blocking it forever."""
    queue_scans(school, ("A1", local(20, 8, 0)))
    with school.engine.begin() as conn:  # the scan stage cannot write its records
        conn.exec_driver_sql("ALTER TABLE attendance_records RENAME TO attendance_records_away")
    try:
        ctx = job_context(school.url, tmp_path, OPS_WORKER_MAX_ATTEMPTS="2")
        first = workers.run(ctx, limit=10)
        assert first.status == "failed" and "scans" in first.error
        [scan] = rows(school, attendance_scan_queue)
        assert (scan["status"], scan["attempts"], scan["claimed_by"]) == ("pending", 1, None)
        assert scan["available_at"] > dt.datetime.utcnow()  # waits before its next try
        assert scan["error"].startswith("scans: ")
        with school.engine.begin() as conn:
            conn.execute(update(attendance_scan_queue).values(available_at=None))
        workers.run(ctx, limit=10)
        [scan] = rows(school, attendance_scan_queue)
        assert (scan["status"], scan["attempts"]) == ("failed", 2)
        ctx.db.engine.dispose()
    finally:
        with school.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE attendance_records_away RENAME TO attendance_records")


def test_missing_firebase_credentials_are_reported_before_connecting(tmp_path):
    from tests.conftest import run_cli, tool_env

    env = tool_env("mysql+pymysql://nobody@127.0.0.1:1/none", tmp_path,
                   OPS_FIREBASE_CREDENTIALS=str(tmp_path / "missing.json"))
    run = run_cli("run_background_workers", "--execute", env=env)
    assert run.returncode == 2
    assert "firebase_credentials: no such file" in run.stderr
    assert "cannot use the database" not in run.stderr  # it never tried to connect


def test_markers_a_broken_stage_gives_back_wait_so_the_rows_after_them_get_a_turn(
        school, tmp_path):
    queue_scans(school, ("A1", local(20, 8, 0)))
    with school.engine.begin() as conn:  # the snapshot stage cannot write
        conn.exec_driver_sql("ALTER TABLE guardian_snapshots RENAME TO guardian_snapshots_away")
    try:
        ctx = job_context(school.url, tmp_path)
        result = workers.run(ctx, limit=10)
        ctx.db.engine.dispose()
        assert result.status == "failed" and "snapshots" in result.error
        markers = rows(school, guardian_snapshot_queue)
        assert {m["guardian_id"] for m in markers} == {10, 11}
        assert all(m["claimed_by"] is None for m in markers)
        assert all(m["available_at"] > dt.datetime.utcnow() for m in markers)
    finally:
        with school.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE guardian_snapshots_away RENAME TO guardian_snapshots")


def take_scans(ctx, size: int = 100) -> workers.StageStats:
    stats = workers.StageStats()
    workers.ScanStage().take(ctx, size, stats)
    return stats


@pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)
def test_scans_another_transaction_holds_are_passed_over_not_waited_for(school, tmp_path):
    queue_scans(school, ("A1", local(20, 8, 0)), ("B2", local(20, 8, 1)))
    q = attendance_scan_queue
    ctx = job_context(school.url, tmp_path)
    try:
        with school.engine.begin() as other:  # another run is working on Asha's scan
            other.execute(select(q.c.id).where(q.c.card_uid == "A1").with_for_update())
            stats = take_scans(ctx)
            # What that run does with it is its business: our batch never counted it.
            assert (stats.claimed, stats.done) == (1, 1)
    finally:
        ctx.db.engine.dispose()
    scans = rows(school, q, q.c.id)
    assert [(s["status"], s["claimed_by"], s["attempts"]) for s in scans] == [
        ("pending", None, 0), ("done", None, 1)]
    assert [r["student_id"] for r in rows(school, attendance_records)] == [2]


def test_a_batch_that_fails_at_its_last_write_leaves_nothing_and_counts_its_attempt(
        school, tmp_path):
    """The scans are worked inside the transaction that holds them: a failure as their status
    is written rolls back the records, notifications and deliveries written before it."""
    from sqlalchemy import event

    queue_scans(school, ("A1", local(20, 8, 0)), ("B2", local(20, 8, 1)))
    ctx = job_context(school.url, tmp_path)

    failed = []

    def fail_the_status_write(conn, cursor, statement, *_):
        if not failed and statement.startswith("UPDATE attendance_scan_queue SET"):
            failed.append(statement)  # once: the failure bookkeeping's own UPDATE goes through
            raise RuntimeError("the server went away at the worst moment")

    try:
        event.listen(ctx.db.engine, "before_cursor_execute", fail_the_status_write)
        stats = take_scans(ctx)
        event.remove(ctx.db.engine, "before_cursor_execute", fail_the_status_write)
    finally:
        ctx.db.engine.dispose()
    assert (stats.claimed, stats.done, stats.released) == (2, 0, 2)
    assert stats.stopped == "RuntimeError: the server went away at the worst moment"
    scans = rows(school, attendance_scan_queue, attendance_scan_queue.c.id)
    assert {(s["status"], s["claimed_by"], s["attempts"]) for s in scans} == {
        ("pending", None, 1)}
    assert all(s["error"] == "scans: RuntimeError: the server went away at the worst moment"
               and s["available_at"] > dt.datetime.utcnow() for s in scans)
    for table in (attendance_records, notifications, push_deliveries, guardian_snapshot_queue):
        assert rows(school, table) == [], table.name


@pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)
def test_copies_of_a_scan_whose_card_differs_only_in_case_are_one_scan(school, tmp_path):
    # MariaDB compares cards as the column's collation does ("a1" is "A1 "); so must the
    # duplicate check inside a batch, or the two copies collide on scan_key's unique index.
    queue_scans(school, ("A1", local(20, 8, 0)), ("a1 ", local(20, 8, 0)))
    drain(school, tmp_path)
    [record] = rows(school, attendance_records)
    assert record["scan_count"] == 1
    scans = rows(school, attendance_scan_queue, attendance_scan_queue.c.id)
    assert [(s["status"], s["error"]) for s in scans] == [
        ("done", None), ("done", "duplicate of a scan already processed")]


def test_re_marking_leaves_a_waiting_marker_alone_and_takes_back_a_claimed_one(school):
    from ops_lib.jobs.workers.base import mark_snapshots

    before, later = dt.datetime(2026, 11, 20, 8, 0), dt.datetime(2026, 11, 20, 9, 0)
    with school.engine.begin() as conn:
        conn.execute(insert(guardian_snapshot_queue), [
            {"guardian_id": 10, "marked_at": before, "claimed_by": None, "lease_expires_at": None},
            {"guardian_id": 11, "marked_at": before, "claimed_by": "computing-run",
             "lease_expires_at": later}])
        mark_snapshots(conn, [10, 11, 12], later)
    markers = {m["guardian_id"]: (m["marked_at"], m["claimed_by"], m["lease_expires_at"])
               for m in rows(school, guardian_snapshot_queue)}
    assert markers == {10: (before, None, None),  # waiting already: unchanged
                       11: (later, None, None),  # being computed: it must run again
                       12: (later, None, None)}  # new


def test_marking_the_guardians_of_a_batchs_students_marks_each_once_and_keeps_waiting_ones(
        school):
    from sqlalchemy import Column

    from ops_lib.jobs.workers.base import mark_snapshots_of_students
    from ops_lib.sqlutil import temporary_table

    before, later = dt.datetime(2026, 11, 20, 8, 0), dt.datetime(2026, 11, 20, 9, 0)
    # Asha on two days, and Chitra: guardian 10 has both children, 11 has Asha; Babu's 12 none.
    days = [{"student_id": 1, "attendance_date": dt.date(2026, 11, 19)},
            {"student_id": 1, "attendance_date": dt.date(2026, 11, 20)},
            {"student_id": 3, "attendance_date": dt.date(2026, 11, 20)}]
    columns = [Column("student_id", students.c.id.type, primary_key=True),
               Column("attendance_date", attendance_records.c.attendance_date.type,
                      primary_key=True)]
    with school.engine.begin() as conn:
        conn.execute(insert(guardian_snapshot_queue), [
            {"guardian_id": 11, "marked_at": before, "claimed_by": "computing-run",
             "lease_expires_at": later}])
        with temporary_table(conn, "scan_days", columns, days) as batch:
            mark_snapshots_of_students(conn, select(batch.c.student_id), before)
            mark_snapshots_of_students(conn, select(batch.c.student_id), later)
    markers = {m["guardian_id"]: (m["marked_at"], m["claimed_by"], m["lease_expires_at"])
               for m in rows(school, guardian_snapshot_queue)}
    assert markers == {10: (before, None, None),  # new, then waiting already: unchanged
                       11: (before, None, None)}  # being computed: it must run again
