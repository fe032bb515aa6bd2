"""Report-email stage of run_background_workers: the real worker process sending to a real local
SMTP server (aiosmtpd), on SQLite and MariaDB.

Rules under test: docs/workers-push-email.md.
"""

from __future__ import annotations

import csv
import datetime as dt
import time
import email
import email.policy
import io

import pytest
from sqlalchemy import insert, select

from conftest import run_cli, snapshot, start_cli, tool_env
from ops_lib.db import connect
from ops_lib.schema import attendance_records, report_email_queue, students
from ops_lib.timeutil import utcnow
from worker_rows import (
    add_institution, add_report_request, engine_for, make_due, result_json, row, stage_row,
)

from tests.fakes.smtp_server import FakeSmtpServer, free_port

MARCH = {"from": "2026-03-01", "to": "2026-03-02"}
CSV_HEADER = ["date", "student_id", "student", "class", "status", "first_scan_local",
              "last_scan_local", "scan_count"]


@pytest.fixture
def engine(db_url):
    eng = engine_for(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def smtp():
    with FakeSmtpServer() as server:
        yield server


def run_worker(db_url, tmp_path, smtp_port=None, *args, **env):
    """`run_background_workers.py --execute --json` with SMTP at 127.0.0.1:smtp_port (or none)."""
    extra = {"OPS_SMTP_FROM": "reports@ops.test"}
    if smtp_port is not None:
        extra.update(OPS_SMTP_HOST="127.0.0.1", OPS_SMTP_PORT=str(smtp_port),
                     OPS_SMTP_TIMEOUT_SECONDS="5")
    extra.update(env)
    return run_cli("run_background_workers", *args, "--execute", "--json",
                   env=tool_env(db_url, tmp_path, **extra))


def add_attendance(engine, institution_id: int) -> dict[str, int]:
    """Three students; records on 1 and 2 March (in the range) and on 28 Feb and 3 March (not)."""
    with engine.begin() as conn:
        ids = {}
        for name, class_name in [("Ann", "5A"), ("Bob", "5A"), ("Cid", "6B")]:
            ids[name] = conn.execute(insert(students).values(
                institution_id=institution_id, name=name, class_name=class_name,
                card_uid=f"card-{name}-{institution_id}")).inserted_primary_key[0]

        def record(name, day, first_utc, last_utc, count, status):
            date = dt.date.fromisoformat(day)
            return {"institution_id": institution_id, "student_id": ids[name],
                    "attendance_date": date,
                    "first_scan_at": dt.datetime.combine(date, dt.time.fromisoformat(first_utc)),
                    "last_scan_at": dt.datetime.combine(date, dt.time.fromisoformat(last_utc)),
                    "scan_count": count, "status": status}

        conn.execute(insert(attendance_records), [
            # Asia/Dhaka is UTC+6: 02:05 UTC is 08:05 local.
            record("Ann", "2026-03-01", "02:05:00", "10:30:00", 2, "present"),
            record("Bob", "2026-03-01", "03:20:00", "03:20:00", 1, "late"),
            record("Cid", "2026-03-01", "02:00:00", "02:00:00", 1, "present"),
            record("Ann", "2026-03-02", "02:10:00", "02:10:00", 1, "present"),
            record("Cid", "2026-03-02", "03:45:00", "09:00:00", 3, "late"),
            record("Ann", "2026-02-28", "02:00:00", "02:00:00", 1, "present"),  # before the range
            record("Bob", "2026-03-03", "02:00:00", "02:00:00", 1, "present"),  # after it
        ])
    return ids


def read_csv(message) -> tuple[str, list[list[str]]]:
    [attachment] = list(message.iter_attachments())
    content = attachment.get_content()
    text = content.decode("utf-8") if isinstance(content, bytes) else content
    return attachment.get_filename(), list(csv.reader(io.StringIO(text)))


def test_attendance_report_reaches_the_smtp_server_with_its_summary_and_csv(
        db_url, engine, tmp_path, smtp):
    school = add_institution(engine)
    other = add_institution(engine, name="Other School", code="OTH")
    ids = add_attendance(engine, school)
    add_attendance(engine, other)  # same dates, another institution: not in the report
    request = add_report_request(engine, school, recipient="head@gvs.test", params=MARCH)

    done = run_worker(db_url, tmp_path, smtp.port)

    assert done.returncode == 0, done.stderr
    [envelope] = smtp.envelopes
    assert envelope.rcpt_tos == ["head@gvs.test"]
    assert envelope.mail_from == "reports@ops.test"
    message = envelope.message
    assert message["Subject"] == \
        "Attendance report: Green Valley School, 2026-03-01 to 2026-03-02"
    assert message["To"] == "head@gvs.test"
    body = message.get_body(("plain",)).get_content()
    for line in ["Period: 2026-03-01 to 2026-03-02 (Asia/Dhaka)", "Days with attendance: 2",
                 "Attendance records: 5", "Present (on time): 3", "Late: 2"]:
        assert line in body
    filename, table = read_csv(message)
    assert filename == f"attendance-{school}-2026-03-01-2026-03-02.csv"
    assert table == [
        CSV_HEADER,
        ["2026-03-01", str(ids["Ann"]), "Ann", "5A", "present", "08:05:00", "16:30:00", "2"],
        ["2026-03-01", str(ids["Bob"]), "Bob", "5A", "late", "09:20:00", "09:20:00", "1"],
        ["2026-03-01", str(ids["Cid"]), "Cid", "6B", "present", "08:00:00", "08:00:00", "1"],
        ["2026-03-02", str(ids["Ann"]), "Ann", "5A", "present", "08:10:00", "08:10:00", "1"],
        ["2026-03-02", str(ids["Cid"]), "Cid", "6B", "late", "09:45:00", "15:00:00", "3"],
    ]
    sent = row(engine, report_email_queue, request)
    assert (sent.status, sent.attempts, sent.error, sent.claimed_by) == ("sent", 1, None, None)
    assert sent.sent_at is not None and abs(sent.sent_at - utcnow()) < dt.timedelta(minutes=1)
    assert stage_row(result_json(done), "emails")["done"] == 1


def test_bad_report_requests_fail_at_once_with_a_clear_error(db_url, engine, tmp_path, smtp):
    school = add_institution(engine)
    bad = {
        add_report_request(engine, school, report_type="invoices", params=MARCH):
            "unknown report type 'invoices'",
        add_report_request(engine, school, params={"from": "2026-03-01"}):
            "params.to is missing (YYYY-MM-DD)",
        add_report_request(engine, school, params={"from": "2026-03-05", "to": "2026-03-01"}):
            "params.to (2026-03-01) is before params.from (2026-03-05)",
        add_report_request(engine, school, params={"from": "March", "to": "2026-03-01"}):
            "params.from is not a date (YYYY-MM-DD): 'March'",
        add_report_request(engine, school, params="{not json"):
            "params are not JSON",
        add_report_request(engine, school, params=["2026-03-01", "2026-03-02"]):
            "params must be a JSON object, not list",
        add_report_request(engine, school, params={"from": "2025-01-01", "to": "2026-03-01"}):
            "the range is longer than 366 days",
        add_report_request(engine, 999999, params=MARCH):
            "institution 999999 does not exist",
        add_report_request(engine, school, recipient="head@gvs.test\nBcc: all@gvs.test",
                           params=MARCH):
            "cannot build the message for",
    }
    good = add_report_request(engine, school, params=MARCH)

    done = run_worker(db_url, tmp_path, smtp.port)

    assert done.returncode == 0, done.stderr
    for request, error in bad.items():
        failed = row(engine, report_email_queue, request)
        assert (failed.status, failed.attempts, failed.sent_at, failed.available_at,
                failed.claimed_by) == ("failed", 1, None, None, None), error
        assert error in failed.error
    assert row(engine, report_email_queue, good).status == "sent"
    assert len(smtp.messages) == 1
    emails = stage_row(result_json(done), "emails")
    assert (emails["failed"], emails["done"], emails["retried"]) == (len(bad), 1, 0)


def test_smtp_down_leaves_the_reports_pending_and_a_later_run_sends_them(
        db_url, engine, tmp_path):
    school = add_institution(engine)
    first_request, *others = [add_report_request(engine, school, params=MARCH)
                              for _ in range(3)]
    port = free_port()  # nothing listens there yet

    before = utcnow()
    first = run_worker(db_url, tmp_path, port)

    assert first.returncode == 0, first.stderr
    waiting = row(engine, report_email_queue, first_request)
    assert (waiting.status, waiting.attempts, waiting.claimed_by, waiting.sent_at) == \
        ("pending", 1, None, None)
    assert f"cannot reach SMTP 127.0.0.1:{port}" in waiting.error
    assert "Connection refused" in waiting.error
    # First retry: worker_backoff_seconds (30) with jitter between half and all of it.
    assert before + dt.timedelta(seconds=14) <= waiting.available_at <= \
        utcnow() + dt.timedelta(seconds=31)
    # Once the server is known to be unreachable, the rest are not tried (each would wait for
    # its own connection timeout): deferred, attempts not spent.
    for request in others:
        deferred = row(engine, report_email_queue, request)
        assert (deferred.status, deferred.attempts, deferred.claimed_by, deferred.error) == \
            ("pending", 0, None, None)
        assert before + dt.timedelta(seconds=14) <= deferred.available_at
    emails = stage_row(result_json(first), "emails")
    assert (emails["retried"], emails["released"]) == (1, 2)
    assert emails["details"] == {"deferred_smtp_unreachable": 2}

    make_due(engine, report_email_queue)
    with FakeSmtpServer(port=port) as smtp:
        later = run_worker(db_url, tmp_path, port)

        assert later.returncode == 0, later.stderr
        assert len(smtp.messages) == 3
    assert smtp.messages[0]["Subject"].startswith("Attendance report: Green Valley School")
    sent = row(engine, report_email_queue, first_request)
    assert (sent.status, sent.attempts, sent.error) == ("sent", 2, None)
    assert [row(engine, report_email_queue, r).attempts for r in others] == [1, 1]


def test_report_out_of_attempts_is_dead_lettered_with_the_last_error(db_url, engine, tmp_path):
    school = add_institution(engine)
    request = add_report_request(engine, school, params=MARCH)

    done = run_worker(db_url, tmp_path, free_port(), OPS_WORKER_MAX_ATTEMPTS="1")

    assert done.returncode == 0, done.stderr
    dead = row(engine, report_email_queue, request)
    assert (dead.status, dead.attempts, dead.claimed_by, dead.sent_at) == \
        ("failed", 1, None, None)
    assert dead.error.startswith("SmtpUnreachable: cannot reach SMTP")


def test_recipient_refused_for_good_fails_the_report_and_a_temporary_refusal_retries(
        db_url, engine, tmp_path, smtp):
    smtp.refuse("gone@gvs.test", "550 5.1.1 No such user here")
    smtp.refuse("full@gvs.test", "452 4.2.2 Mailbox full, try later")
    school = add_institution(engine)
    gone = add_report_request(engine, school, recipient="gone@gvs.test", params=MARCH)
    full = add_report_request(engine, school, recipient="full@gvs.test", params=MARCH)
    fine = add_report_request(engine, school, recipient="head@gvs.test", params=MARCH)

    done = run_worker(db_url, tmp_path, smtp.port)

    assert done.returncode == 0, done.stderr
    refused = row(engine, report_email_queue, gone)
    assert (refused.status, refused.attempts, refused.available_at) == ("failed", 1, None)
    assert "550" in refused.error and "No such user here" in refused.error
    later = row(engine, report_email_queue, full)
    assert (later.status, later.attempts) == ("pending", 1)
    assert later.available_at > utcnow() and "452" in later.error
    assert row(engine, report_email_queue, fine).status == "sent"
    assert [e.rcpt_tos for e in smtp.envelopes] == [["head@gvs.test"]]


def test_without_smtp_the_report_is_written_to_the_outbox_as_an_eml_file(
        db_url, engine, tmp_path):
    school = add_institution(engine)
    add_attendance(engine, school)
    request = add_report_request(engine, school, params=MARCH)

    done = run_worker(db_url, tmp_path, None)

    assert done.returncode == 0, done.stderr
    [eml] = list((tmp_path / "outbox" / "email").glob("*.eml"))
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"] == "head@school.test"
    assert message["Subject"] == \
        "Attendance report: Green Valley School, 2026-03-01 to 2026-03-02"
    assert "Attendance records: 5" in message.get_body(("plain",)).get_content()
    _, table = read_csv(message)
    assert table[0] == CSV_HEADER and len(table) == 6
    sent = row(engine, report_email_queue, request)
    assert (sent.status, sent.error) == ("sent", None)
    assert stage_row(result_json(done), "emails")["details"] == {"to_outbox": 1}
    [warning] = [line for line in done.stderr.splitlines() if " WARNING " in line]
    assert f"emails: no SMTP configured; messages go to the outbox {tmp_path / 'outbox' / 'email'}" \
        in warning


def test_smtp_login_refused_stops_the_email_stage_and_gives_the_reports_back(
        db_url, engine, tmp_path, smtp):
    school = add_institution(engine)
    requests = [add_report_request(engine, school, params=MARCH) for _ in range(3)]

    # The fake offers no AUTH: a configured login cannot succeed, for any report.
    done = run_worker(db_url, tmp_path, smtp.port, OPS_SMTP_USER="ops",
                      OPS_SMTP_PASSWORD="s3cret-pw")

    assert done.returncode == 1
    result = result_json(done)
    assert result["error"].startswith(
        f"emails: SMTP 127.0.0.1:{smtp.port} refused our login (smtp_user=ops): ")
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert f"emails stage stopped: SMTP 127.0.0.1:{smtp.port} refused our login" in done.stderr
    for request in requests:
        back = row(engine, report_email_queue, request)
        assert (back.status, back.attempts, back.claimed_by, back.error) == \
            ("pending", 0, None, None)
    assert smtp.messages == []
    assert stage_row(result, "emails")["released"] == 3


def test_dry_run_over_queued_reports_changes_nothing_and_sends_nothing(
        db_url, engine, tmp_path, smtp):
    school = add_institution(engine)
    add_attendance(engine, school)
    add_report_request(engine, school, params=MARCH)
    add_report_request(engine, school, report_type="invoices")
    database = connect(db_url)
    before = snapshot(database)

    done = run_cli("run_background_workers", "--json", env=tool_env(
        db_url, tmp_path, OPS_SMTP_HOST="127.0.0.1", OPS_SMTP_PORT=str(smtp.port)))

    assert done.returncode == 0, done.stderr
    assert snapshot(database) == before
    assert smtp.messages == []
    result = result_json(done)
    emails = stage_row(result, "emails")
    assert (emails["would_take"], emails["details"]) == (2, {"would_fail_bad_request": 1})
    assert f"emails: would send through SMTP 127.0.0.1:{smtp.port}" in result["notes"]
    database.engine.dispose()


def test_a_slow_smtp_server_cannot_let_a_second_run_send_the_same_reports_again(
        db_url, engine, tmp_path, smtp):
    """The rows still to send get a full lease again before each message, so no other run can
    recover them while a slow server takes its time. Checked on the lease itself, not by racing
    a short lease against the server's delay (that depended on the machine's speed)."""
    school = add_institution(engine)
    add_attendance(engine, school)
    recipients = [f"head{i}@gvs.test" for i in range(4)]
    requests = [add_report_request(engine, school, recipient=r, params=MARCH) for r in recipients]
    smtp.data_delay = 1.2  # at least 1.2 s between two sends: a later lease is a later second
    env = tool_env(db_url, tmp_path, OPS_SMTP_FROM="reports@ops.test", OPS_SMTP_HOST="127.0.0.1",
                   OPS_SMTP_PORT=str(smtp.port), OPS_SMTP_TIMEOUT_SECONDS="10")

    def leases() -> dict[int, dt.datetime]:
        with engine.connect() as conn:
            return dict(conn.execute(select(report_email_queue.c.id,
                                            report_email_queue.c.lease_expires_at)
                                     .where(report_email_queue.c.claimed_by.isnot(None))).all())

    first = start_cli("run_background_workers", "--execute", "--json", env=env)
    deadline = time.monotonic() + 60
    while not leases():
        assert first.poll() is None and time.monotonic() < deadline, "nothing was claimed"
        time.sleep(0.01)
    claimed_until = max(leases().values())  # the lease given at the claim (or the first send)
    while len(smtp.envelopes) < 2:
        assert first.poll() is None and time.monotonic() < deadline, "no second email"
        time.sleep(0.01)
    renewed = leases()  # the rows still to send, renewed before the second send at the latest
    second = run_cli("run_background_workers", "--execute", "--json", env=env)
    _out, err = first.communicate(timeout=120)

    assert renewed and min(renewed.values()) > claimed_until
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    assert stage_row(result_json(second), "emails")["claimed"] == 0
    assert sorted(to for e in smtp.envelopes for to in e.rcpt_tos) == recipients
    assert [row(engine, report_email_queue, r).status for r in requests] == ["sent"] * 4
