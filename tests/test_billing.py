"""The billing sweep (tools/run_billing_jobs.py) on SQLite and MariaDB."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import Counter

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ops_lib.db import is_duplicate_key
from ops_lib.jobs import billing
from ops_lib.ledger import new_run_id
from ops_lib.money import format_minor
from ops_lib.runtime import Budget, RunContext, StopSignal
from ops_lib.schema import (
    audit_logs,
    guardian_students,
    guardians,
    institutions,
    invoice_reminders,
    invoices,
    notifications,
    ops_job_runs,
    payments,
    plans,
    students,
)
from ops_lib.settings import load_settings
from tests.conftest import run_cli, snapshot, start_cli, tool_env
from tests.fakes.smtp_server import FakeSmtpServer

A, B = 1, 2  # institution A pays late; B is billing-exempt and never pays
S1, S2, S3 = 11, 12, 13  # S1 (in A, fee, two guardians), S2 (in A, no fee), S3 (in B, fee)
PLAN_FEE = 250_000
S1_FEE = 150_000
S3_FEE = 99_999
DAY = dt.date


def seed(db, plan_fee: int = PLAN_FEE) -> None:
    with db.engine.begin() as conn:
        conn.execute(insert(plans).values(id=1, name="Basic", monthly_fee_minor=plan_fee,
                                          currency="BDT"))
        conn.execute(insert(institutions), [
            {"id": A, "name": "School A", "code": "A", "plan_id": 1,
             "billing_email": "billing@a.example", "billing_exempt": False},
            {"id": B, "name": "School B", "code": "B", "plan_id": 1,
             "billing_email": "billing@b.example", "billing_exempt": True},
        ])
        conn.execute(insert(students), [
            {"id": S1, "institution_id": A, "name": "Rahim", "monthly_fee_minor": S1_FEE},
            {"id": S2, "institution_id": A, "name": "Karim", "monthly_fee_minor": None},
            {"id": S3, "institution_id": B, "name": "Nadia", "monthly_fee_minor": S3_FEE},
        ])
        conn.execute(insert(guardians), [{"id": 101, "name": "G1"}, {"id": 102, "name": "G2"}])
        conn.execute(insert(guardian_students), [{"guardian_id": 101, "student_id": S1},
                                                 {"guardian_id": 102, "student_id": S1}])


def context(db, tmp_path, smtp=None, dry_run=False, **env) -> RunContext:
    values = {"OPS_OUTBOX_DIR": str(tmp_path / "outbox"), "OPS_LOCK_DIR": str(tmp_path / "locks"),
              "OPS_INVOICE_DUE_DAYS": "10", "OPS_BILLING_GRACE_DAYS": "7",
              "OPS_REMINDER_OFFSETS_DAYS": "-3,0,3"}
    if smtp is not None:
        values.update(OPS_SMTP_HOST=smtp.host, OPS_SMTP_PORT=str(smtp.port))
    values.update(env)
    settings = load_settings({"database_url": db.url}, env=values)
    return RunContext(db=db, settings=settings, run_id=new_run_id(), tool="run_billing_jobs",
                      dry_run=dry_run, budget=Budget(None), stop=StopSignal())


def sweep(db, tmp_path, day, smtp=None, dry_run=False, **env):
    result = billing.run(context(db, tmp_path, smtp, dry_run, **env), as_of=day)
    assert result.status == "ok", result.error
    return result


def invoice(db, kind: str, subject: int, period: str):
    with db.engine.connect() as conn:
        return conn.execute(select(invoices).where(
            invoices.c.issue_key == f"{kind}:{subject}:{period}")).one()


def pay(db, invoice_id: int, amount: int, status: str = "settled", on: DAY | None = None):
    with db.engine.begin() as conn:
        conn.execute(insert(payments).values(
            invoice_id=invoice_id, amount_minor=amount, status=status, method="bkash",
            paid_at=dt.datetime.combine(on, dt.time(12)) if on else None))


def access(db) -> dict[int, str]:
    with db.engine.connect() as conn:
        rows = conn.execute(select(institutions.c.id, institutions.c.access_state)).all()
        rows += conn.execute(select(students.c.id, students.c.access_state)).all()
    return dict(rows)


def audit(db, entity_type: str) -> list[tuple]:
    with db.engine.connect() as conn:
        return conn.execute(select(audit_logs.c.entity_id, audit_logs.c.action,
                                   audit_logs.c.details)
                            .where(audit_logs.c.entity_type == entity_type)
                            .order_by(audit_logs.c.id)).all()


def reminder_steps(db) -> Counter:
    with db.engine.connect() as conn:
        rows = conn.execute(select(invoices.c.issue_key, invoice_reminders.c.step)
                            .join(invoices, invoices.c.id == invoice_reminders.c.invoice_id)).all()
    return Counter((key, step) for key, step in rows)


def days(start: DAY, end: DAY):
    while start <= end:
        yield start
        start += dt.timedelta(days=1)


STEPS = ("due-3", "due+0", "due+3", "blocked")


def test_two_months_day_by_day_issue_remind_restrict_and_restore_exactly_once(db, tmp_path):
    seed(db)
    seen: dict[DAY, dict[int, str]] = {}
    statuses: dict[DAY, str] = {}
    with FakeSmtpServer() as smtp:
        for day in days(DAY(2026, 1, 1), DAY(2026, 2, 28)):
            if day == DAY(2026, 1, 22):  # A pays its January platform invoice in full
                pay(db, invoice(db, "platform", A, "2026-01").id, PLAN_FEE, on=day)
            if day == DAY(2026, 2, 5):  # S1's guardian pays half; the rest is still pending
                jan = invoice(db, "attendee", S1, "2026-01").id
                pay(db, jan, S1_FEE // 2, on=day)
                pay(db, jan, S1_FEE - S1_FEE // 2, status="pending")
            if day == DAY(2026, 2, 10):  # ... and the rest settles
                with db.engine.begin() as conn:
                    conn.execute(update(payments).where(payments.c.status == "pending")
                                 .values(status="settled", paid_at=dt.datetime(2026, 2, 10, 9)))
            sweep(db, tmp_path, day, smtp)
            seen[day] = access(db)
            statuses[day] = invoice(db, "platform", A, "2026-01").status
        messages = smtp.messages

    # Invoices: one per subject and month, numbered and dated by the rules.
    with db.engine.connect() as conn:
        rows = conn.execute(select(invoices).order_by(invoices.c.invoice_no)).all()
    assert sorted(r.invoice_no for r in rows) == sorted(
        f"{p}-{m}-{s}" for m in ("202601", "202602") for p, s in
        (("P", A), ("P", B), ("A", S1), ("A", S3)))
    jan = invoice(db, "platform", A, "2026-01")
    assert (jan.period_start, jan.period_end, jan.due_date) == (
        DAY(2026, 1, 1), DAY(2026, 1, 31), DAY(2026, 1, 11))
    assert jan.paid_at == dt.datetime(2026, 1, 22, 12)
    assert {r.issue_key: r.status for r in rows} == {
        "platform:1:2026-01": "paid", "platform:2:2026-01": "blocked",
        "attendee:11:2026-01": "paid", "attendee:13:2026-01": "blocked",
        "platform:1:2026-02": "blocked", "platform:2:2026-02": "blocked",
        "attendee:11:2026-02": "blocked", "attendee:13:2026-02": "blocked",
    }
    # Status of A's January invoice: due up to the due date, overdue for the grace days, blocked.
    assert statuses[DAY(2026, 1, 11)] == "due"
    assert statuses[DAY(2026, 1, 12)] == statuses[DAY(2026, 1, 18)] == "overdue"
    assert statuses[DAY(2026, 1, 19)] == statuses[DAY(2026, 1, 21)] == "blocked"
    assert statuses[DAY(2026, 1, 22)] == "paid"

    # Reminders: every step of every invoice, recorded once and sent.
    assert reminder_steps(db) == Counter({(r.issue_key, s): 1 for r in rows for s in STEPS})
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(invoice_reminders)
                            .where(invoice_reminders.c.sent_at.is_(None))).scalar_one() == 0
        channels = set(conn.execute(
            select(invoices.c.student_id, invoice_reminders.c.channel).distinct()
            .join(invoices, invoices.c.id == invoice_reminders.c.invoice_id)).all())
    # S1 has guardians (push and email); S3 has none (email to the institution only).
    assert channels == {(None, "email"), (S1, "email+push"), (S3, "email")}
    # One email per institution per reminder day (4 steps x 2 months), listing its invoices.
    assert Counter(m["To"] for m in messages) == {"billing@a.example": 8, "billing@b.example": 8}
    first = [m for m in messages if m["To"] == "billing@a.example"][0]
    assert first["Subject"] == "Billing reminders: 2 invoices of School A"
    body = first.get_content()
    assert ("P-202601-1 (platform fee, January 2026): 2,500.00 BDT, due 2026-01-11: "
            "due in 3 days") in body
    assert "A-202601-11 (attendee fee, Rahim, January 2026): 1,500.00 BDT" in body
    # Guardians of S1: a notification per reminder step and guardian, once.
    with db.engine.connect() as conn:
        keys = conn.execute(select(notifications.c.dedupe_key)).scalars().all()
    assert len(keys) == len(set(keys)) == 2 * len(STEPS) * 2

    # Restriction after the grace period, restore after payment; B is exempt; S3 is not.
    assert seen[DAY(2026, 1, 18)][A] == "active" and seen[DAY(2026, 1, 19)][A] == "restricted"
    assert seen[DAY(2026, 1, 22)][A] == "active"
    assert seen[DAY(2026, 2, 18)][A] == "active" and seen[DAY(2026, 2, 19)][A] == "restricted"
    assert {d: s[B] for d, s in seen.items() if s[B] != "active"} == {}
    assert seen[DAY(2026, 1, 19)][S1] == "restricted"
    assert seen[DAY(2026, 2, 9)][S1] == "restricted"  # half paid is not paid
    assert seen[DAY(2026, 2, 10)][S1] == "active"
    assert seen[DAY(2026, 2, 19)][S1] == "restricted"
    assert seen[DAY(2026, 1, 19)][S3] == "restricted" and seen[DAY(2026, 2, 28)][S2] == "active"
    assert [a for _, a, _ in audit(db, "institution")] == [
        "institution.restricted", "institution.restored", "institution.restricted"]
    assert [(e, a) for e, a, _ in audit(db, "student")] == [
        ("11", "student.restricted"), ("13", "student.restricted"),
        ("11", "student.restored"), ("11", "student.restricted")]
    # Every invoice transition is in the audit log, with where it came from.
    transitions = [(json.loads(d) if isinstance(d, str) else d) for e, a, d in audit(db, "invoice")
                   if e == str(jan.id)]
    assert [(t.get("from"), t.get("to")) for t in transitions] == [
        (None, None), ("due", "overdue"), ("overdue", "blocked"), ("blocked", "paid")]


def test_after_downtime_only_the_latest_due_step_is_sent(db, tmp_path):
    seed(db)
    with FakeSmtpServer() as smtp:
        sweep(db, tmp_path, DAY(2026, 1, 1), smtp)
        result = sweep(db, tmp_path, DAY(2026, 1, 20), smtp)  # nine days of downtime
        assert len(smtp.messages) == 2  # one per institution, not a backlog of four
    assert set(step for _, step in reminder_steps(db)) == {"blocked"}
    assert result.counts["reminders_blocked"] == 4 and result.counts["reminders_due_plus_3"] == 0


def test_running_the_sweep_twice_on_the_same_day_changes_nothing_the_second_time(db, tmp_path):
    seed(db)
    with FakeSmtpServer() as smtp:
        sweep(db, tmp_path, DAY(2026, 1, 1), smtp)
        sweep(db, tmp_path, DAY(2026, 1, 19), smtp)
        before, sent = snapshot(db), len(smtp.messages)
        again = sweep(db, tmp_path, DAY(2026, 1, 19), smtp)
        assert snapshot(db) == before
        assert len(smtp.messages) == sent == 2
    assert sum(again.counts.values()) == 0


def test_a_voided_invoice_is_reissued_under_a_new_number_and_kept(db, tmp_path):
    seed(db)
    sweep(db, tmp_path, DAY(2026, 1, 1))
    with db.engine.begin() as conn:  # a person voids A's invoice
        conn.execute(update(invoices).where(invoices.c.issue_key == "platform:1:2026-01")
                     .values(status="void"))
    result = sweep(db, tmp_path, DAY(2026, 1, 2))
    assert result.counts["void_keys_released"] == 1
    assert result.counts["platform_invoices_issued"] == 1
    again = sweep(db, tmp_path, DAY(2026, 1, 3))
    assert again.counts["platform_invoices_issued"] == 0
    with db.engine.connect() as conn:
        rows = conn.execute(select(invoices.c.invoice_no, invoices.c.status, invoices.c.issue_key)
                            .where(invoices.c.institution_id == A, invoices.c.kind == "platform")
                            .order_by(invoices.c.id)).all()
    assert [tuple(r) for r in rows] == [("P-202601-1", "void", None),
                                        ("P-202601-1-R1", "due", "platform:1:2026-01")]


def test_money_stays_exact_integers_where_floats_round_wrong(db, tmp_path):
    huge = 2**53 + 1  # a float cannot hold it: float(huge) == 2**53
    assert float(huge) == float(huge - 1)
    seed(db, plan_fee=huge)
    plan = sweep(db, tmp_path, DAY(2026, 1, 1), dry_run=True)
    row = {r["what"]: r for r in plan.sections[0].rows}["platform invoices for 2026-01"]
    assert row["amount"] == format_minor(2 * huge, "BDT") == "180,143,985,094,819.86 BDT"
    sweep(db, tmp_path, DAY(2026, 1, 1))
    jan = invoice(db, "platform", A, "2026-01")
    assert jan.amount_minor == huge and isinstance(jan.amount_minor, int)
    pay(db, jan.id, 2**53)  # one minor unit short: a float comparison would call it paid
    result = sweep(db, tmp_path, DAY(2026, 1, 19))
    assert invoice(db, "platform", A, "2026-01").status == "blocked"
    restricted = {r["what"]: r for r in result.sections[0].rows}["institutions -> restricted"]
    assert restricted["amount"] == "90,071,992,547,409.93 BDT"  # a SUM() from the database
    pay(db, jan.id, 1)
    sweep(db, tmp_path, DAY(2026, 1, 20))
    assert invoice(db, "platform", A, "2026-01").status == "paid"
    assert access(db)[A] == "active"


def everything_but_run(db, run_id: str | None) -> dict:
    """Every row of every table, the run ledger included but for the row of `run_id`."""
    rows = snapshot(db, exclude=())
    with db.engine.connect() as conn:
        rows["ops_job_runs"] = sorted(
            (tuple(r) for r in conn.execute(select(ops_job_runs)
                                            .where(ops_job_runs.c.run_id != run_id)
                                            if run_id else select(ops_job_runs))), key=repr)
    return rows


def test_dry_run_leaves_every_table_as_it_was_and_plans_what_execute_does(db, db_url, tmp_path):
    seed(db)
    with FakeSmtpServer() as smtp:
        sweep(db, tmp_path, DAY(2026, 1, 1), smtp)
        pay(db, invoice(db, "attendee", S1, "2026-01").id, S1_FEE)
        with db.engine.begin() as conn:  # a void to free, and a restricted student to restore
            conn.execute(update(invoices).where(invoices.c.issue_key == "attendee:13:2026-01")
                         .values(status="void"))
            conn.execute(update(students).where(students.c.id == S1)
                         .values(access_state="restricted"))
        env = tool_env(db_url, tmp_path, OPS_SMTP_HOST=smtp.host, OPS_SMTP_PORT=str(smtp.port))
        before, mails = everything_but_run(db, None), len(smtp.messages)
        dry = run_cli("run_billing_jobs", "--as-of", "2026-02-19", "--json", env=env)
        assert dry.returncode == 0, dry.stderr
        plan = json.loads(dry.stdout)
        # Every table, the run ledger included less the dry run's own row, is as it was.
        assert everything_but_run(db, plan["run_id"]) == before and len(smtp.messages) == mails
        assert plan["stop_reason"] == "dry run: nothing changed"
        assert plan["dry_run"] is True
        steps = {r["what"]: r for r in plan["sections"]["Billing steps"]}
        assert steps["platform invoices for 2026-02"] == {
            "step": "generate", "what": "platform invoices for 2026-02", "count": 2,
            "amount": "5,000.00 BDT"}
        assert steps["invoices -> blocked"]["count"] == 2
        assert steps["invoices -> paid"]["count"] == 1
        assert steps["institutions -> restricted"]["amount"] == "2,500.00 BDT"

        done = run_cli("run_billing_jobs", "--as-of", "2026-02-19", "--json", "--execute", env=env)
        assert done.returncode == 0, done.stderr
        executed = json.loads(done.stdout)
    for key, count in plan["counts"].items():
        assert executed["counts"][key] == count, key
    assert plan["counts"]["void_keys_released"] == 1
    assert plan["counts"]["attendee_invoices_issued"] == 2  # S1 and S3 for February
    assert plan["counts"]["students_restored"] == 1


def test_bad_as_of_is_refused_with_exit_2(db_url, tmp_path):
    done = run_cli("run_billing_jobs", "--as-of", "2026-13-01", env=tool_env(db_url, tmp_path))
    assert done.returncode == 2 and "as-of" in done.stderr.lower()


def seed_many(db, schools: int = 30, per_school: int = 20) -> int:
    with db.engine.begin() as conn:
        conn.execute(insert(plans).values(id=1, name="Basic", monthly_fee_minor=PLAN_FEE))
        conn.execute(insert(institutions), [
            {"id": i, "name": f"School {i}", "code": f"S{i}", "plan_id": 1,
             "billing_email": f"billing{i}@x.example"} for i in range(1, schools + 1)])
        conn.execute(insert(students), [
            {"id": i * 1000 + n, "institution_id": i, "name": f"S{n}", "monthly_fee_minor": 5_000}
            for i in range(1, schools + 1) for n in range(per_school)])
    return schools * (per_school + 1)


def assert_no_duplicates(db, expected_invoices: int) -> None:
    with db.engine.connect() as conn:
        keys = conn.execute(select(invoices.c.issue_key)).scalars().all()
        reminders = conn.execute(select(invoice_reminders.c.invoice_id,
                                        invoice_reminders.c.step)).all()
        issued = conn.execute(select(func.count()).select_from(audit_logs)
                              .where(audit_logs.c.action == "invoice.issued")).scalar_one()
    assert len(keys) == len(set(keys)) == expected_invoices == issued
    # Every invoice got its "due-3" step exactly once (the primary key) ...
    assert Counter(step for _, step in reminders) == {"due-3": expected_invoices}


def invoice_numbers(db) -> list[str]:
    with db.engine.connect() as conn:
        return conn.execute(select(invoices.c.invoice_no)).scalars().all()


def emailed_invoices(messages) -> Counter:
    """How many times each invoice number was listed in the reminder emails."""
    found = Counter()
    for message in messages:
        for line in message.get_content().splitlines():
            if line.startswith("- "):
                found[line[2:].split(" ")[0]] += 1
    return found


@pytest.mark.mariadb
def test_two_sweep_processes_started_together_create_no_duplicates(mariadb_url, tmp_path):
    from ops_lib.db import connect

    db = connect(mariadb_url)
    try:
        expected = seed_many(db)
        with FakeSmtpServer() as smtp:
            env = tool_env(mariadb_url, tmp_path, OPS_SMTP_HOST=smtp.host,
                           OPS_SMTP_PORT=str(smtp.port), OPS_INVOICE_DUE_DAYS="3")
            procs = [start_cli("run_billing_jobs", "--execute", "--as-of", "2026-03-01", env=env)
                     for _ in range(2)]
            outputs = [p.communicate(timeout=120) for p in procs]
            assert [p.returncode for p in procs] == [0, 0], outputs
            assert_no_duplicates(db, expected)
            # ... and every invoice's reminder is in exactly one email: nobody sent it twice.
            assert emailed_invoices(smtp.messages) == Counter(invoice_numbers(db))
    finally:
        db.engine.dispose()


@pytest.mark.mariadb
def test_two_sweeps_without_the_lock_still_create_no_duplicates(mariadb_url, tmp_path):
    """The run lock is bypassed: only the unique keys stand between two sweeps."""
    from ops_lib.db import connect

    db = connect(mariadb_url)
    try:
        expected = seed_many(db)
        with FakeSmtpServer() as smtp:

            def two_sweeps_at_once(day: DAY) -> list:
                start = threading.Barrier(2)
                results, errors = [], []

                def one_sweep():
                    ctx = context(db, tmp_path, smtp, OPS_INVOICE_DUE_DAYS="3",
                                  OPS_BILLING_BATCH_SIZE="50")
                    start.wait()
                    try:
                        results.append(billing.run(ctx, as_of=day))
                    except Exception as exc:  # surfaced below
                        errors.append(exc)

                threads = [threading.Thread(target=one_sweep) for _ in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(120)
                assert not errors and [r.status for r in results] == ["ok", "ok"]
                return results

            results = two_sweeps_at_once(DAY(2026, 3, 1))
            assert_no_duplicates(db, expected)
            assert emailed_invoices(smtp.messages) == Counter(invoice_numbers(db))
            issued = sum(r.counts["attendee_invoices_issued"] + r.counts["platform_invoices_issued"]
                         for r in results)
            assert issued == expected  # each invoice counted by exactly one of the two
            assert sum(r.counts["reminders_due_minus_3"] for r in results) == expected

            # Past the grace period: every invoice blocks, every school and student is
            # restricted, and each transition is made and audited once.
            results = two_sweeps_at_once(DAY(2026, 3, 20))
            with db.engine.connect() as conn:
                actions = Counter(conn.execute(
                    select(audit_logs.c.action, audit_logs.c.entity_id)).all())
            assert {n for n in actions.values()} == {1}
            assert Counter(a for a, _ in actions) == {
                "invoice.issued": expected, "invoice.blocked": expected,
                "institution.restricted": 30, "student.restricted": expected - 30}
            assert sum(r.counts["invoices_now_blocked"] for r in results) == expected
            assert emailed_invoices(smtp.messages) == Counter(invoice_numbers(db) * 2)
    finally:
        db.engine.dispose()


def reminder_rows(db) -> set[tuple]:
    with db.engine.connect() as conn:
        rows = conn.execute(select(invoices.c.issue_key, invoice_reminders.c.channel,
                                   invoice_reminders.c.sent_at)
                            .join(invoices, invoices.c.id == invoice_reminders.c.invoice_id)).all()
    return {(k, c, s is not None) for k, c, s in rows}


def test_reminders_whose_email_never_reached_smtp_go_out_with_the_next_sweep(db, tmp_path):
    """Regression: with SMTP unreachable (connection refused) the reminders were marked
    email-failed and lost for good, and the run said `stopped: no more work`."""
    from tests.fakes.smtp_server import free_port

    seed(db)
    sweep(db, tmp_path, DAY(2026, 1, 1))
    nobody = {"OPS_SMTP_HOST": "127.0.0.1", "OPS_SMTP_PORT": str(free_port())}
    result = billing.run(context(db, tmp_path, **nobody), as_of=DAY(2026, 1, 8))
    assert result.status == "failed"
    assert result.stop_reason.startswith("reminder email failed: billing@a.example: "
                                         "SmtpUnreachable: cannot reach SMTP")
    assert "Connection refused" in result.stop_reason
    assert result.counts["reminder_emails_to_retry"] == 2
    assert result.counts["reminder_emails_failed"] == 0
    assert "2 never reached an SMTP server and go out with the next sweep" in result.error
    assert reminder_rows(db) == set()  # given back: nothing was handed to a server
    with db.engine.connect() as conn:  # the guardians were notified all the same
        assert conn.execute(select(func.count()).select_from(notifications)).scalar_one() == 2
    with FakeSmtpServer() as smtp:  # SMTP is back: the next sweep sends them, once
        again = sweep(db, tmp_path, DAY(2026, 1, 8), smtp)
        assert sorted(m["To"] for m in smtp.messages) == ["billing@a.example",
                                                          "billing@b.example"]
        assert again.counts["reminders_due_minus_3"] == 4
        assert again.counts["guardian_notifications"] == 0  # not notified twice
        sweep(db, tmp_path, DAY(2026, 1, 8), smtp)
        assert len(smtp.messages) == 2
    assert reminder_rows(db) == {
        ("platform:1:2026-01", "email", True), ("platform:2:2026-01", "email", True),
        ("attendee:13:2026-01", "email", True), ("attendee:11:2026-01", "email+push", True)}


def test_a_temporary_refusal_before_data_is_retried_and_a_permanent_one_is_not(db, tmp_path):
    """A 4xx reply to RCPT TO never handed the message over: the next sweep retries it. A 5xx
    is recorded as failed and not retried."""
    seed(db)
    sweep(db, tmp_path, DAY(2026, 1, 1))
    with FakeSmtpServer() as smtp:
        smtp.refuse("billing@a.example", "450 4.2.1 Mailbox busy, try later")
        smtp.refuse("billing@b.example", "550 5.1.1 No such user")
        result = billing.run(context(db, tmp_path, smtp), as_of=DAY(2026, 1, 8))
        assert result.status == "failed" and smtp.messages == []
        assert "450 4.2.1 Mailbox busy" in result.stop_reason
        assert (result.counts["reminder_emails_to_retry"],
                result.counts["reminder_emails_failed"]) == (1, 1)
        assert reminder_rows(db) == {("platform:2:2026-01", "email-failed", False),
                                     ("attendee:13:2026-01", "email-failed", False)}
    with FakeSmtpServer() as smtp:  # A's mailbox takes mail again
        sweep(db, tmp_path, DAY(2026, 1, 8), smtp)
        assert [m["To"] for m in smtp.messages] == ["billing@a.example"]


def test_an_email_that_failed_after_data_is_never_sent_twice(db, tmp_path):
    """The server took DATA but answered too late: the message may have been delivered, so the
    reminder stays recorded as failed: at most once."""
    seed(db)
    sweep(db, tmp_path, DAY(2026, 1, 1))
    with FakeSmtpServer() as smtp:
        smtp.data_delay = 3  # the server accepts each message 3 s after DATA; we wait 1 s
        result = billing.run(context(db, tmp_path, smtp, OPS_SMTP_TIMEOUT_SECONDS="1"),
                             as_of=DAY(2026, 1, 8))
        assert result.status == "failed"
        assert result.counts["reminder_emails_failed"] == 2
        assert result.counts["reminder_emails_to_retry"] == 0
        smtp.data_delay = 0
        smtp.clear()
        sweep(db, tmp_path, DAY(2026, 1, 8), smtp)
        sweep(db, tmp_path, DAY(2026, 1, 9), smtp)
        assert smtp.messages == []  # never sent a second time
    assert ("platform:1:2026-01", "email-failed", False) in reminder_rows(db)


def test_a_stopped_sweep_ends_between_batches_and_the_next_run_carries_on(db, tmp_path):
    seed(db)
    ctx = context(db, tmp_path, OPS_BILLING_BATCH_SIZE="1")
    ctx.stop.set("SIGTERM")  # as if SIGTERM arrived before the first batch
    before = snapshot(db)
    result = billing.run(ctx, as_of=DAY(2026, 1, 1))
    assert result.stop_reason == "interrupted by SIGTERM"
    assert "stopped early (interrupted by SIGTERM); the next run carries on" in result.notes
    assert result.counts["platform_invoices_issued"] == 0
    assert snapshot(db) == before  # it stopped before its first batch: nothing written
    done = sweep(db, tmp_path, DAY(2026, 1, 1))
    assert done.counts["platform_invoices_issued"] == 2
    assert done.counts["attendee_invoices_issued"] == 2


def test_a_billing_email_with_a_line_break_fails_only_its_own_reminders(db, tmp_path):
    """Regression: the message header's ValueError escaped and stopped every later email."""
    seed(db)
    with db.engine.begin() as conn:
        conn.execute(update(institutions).where(institutions.c.id == A)
                     .values(billing_email="billing@a.example\nboss@a.example"))
    sweep(db, tmp_path, DAY(2026, 1, 1))
    with FakeSmtpServer() as smtp:
        result = billing.run(context(db, tmp_path, smtp), as_of=DAY(2026, 1, 8))
        assert result.status == "failed" and "1 reminder emails could not be sent" in result.error
        assert [m["To"] for m in smtp.messages] == ["billing@b.example"]
    with db.engine.connect() as conn:
        channels = dict(conn.execute(select(invoices.c.issue_key, invoice_reminders.c.channel)
                                     .join(invoices,
                                           invoices.c.id == invoice_reminders.c.invoice_id)).all())
    assert channels["platform:1:2026-01"] == "email-failed"
    assert channels["platform:2:2026-01"] == "email"


def test_a_reissue_after_a_person_unvoids_an_invoice_gets_a_number_never_used(db, tmp_path):
    """Regression: numbering re-issues by the count of voids computed P-…-R1 twice, and the
    unique invoice number then stopped every later sweep."""
    seed(db)
    sweep(db, tmp_path, DAY(2026, 1, 1))
    first = invoices.c.invoice_no == "P-202601-1"
    with db.engine.begin() as conn:
        conn.execute(update(invoices).where(first).values(status="void"))
    sweep(db, tmp_path, DAY(2026, 1, 2))  # issues P-202601-1-R1
    with db.engine.begin() as conn:  # a person un-voids the original, then voids the re-issue
        conn.execute(update(invoices).where(first).values(status="due"))
        conn.execute(update(invoices).where(invoices.c.invoice_no == "P-202601-1-R1")
                     .values(status="void"))
    again = sweep(db, tmp_path, DAY(2026, 1, 3))
    assert again.counts["platform_invoices_issued"] == 0  # the un-voided original is live
    with db.engine.begin() as conn:  # ... until it is voided once more
        conn.execute(update(invoices).where(first).values(status="void"))
    sweep(db, tmp_path, DAY(2026, 1, 4))
    with db.engine.connect() as conn:
        numbers = conn.execute(select(invoices.c.invoice_no)
                               .where(invoices.c.institution_id == A, invoices.c.kind == "platform")
                               .order_by(invoices.c.id)).scalars().all()
    assert numbers == ["P-202601-1", "P-202601-1-R1", "P-202601-1-R2"]


def test_an_invoice_number_with_a_quote_and_a_backslash_leaves_valid_audit_json(db, tmp_path):
    """Regression: the audit JSON was concatenated by hand, so `"` or `\\` in an invoice number
    made invalid JSON, MariaDB's JSON check refused the insert and every later sweep failed."""
    seed(db)
    sweep(db, tmp_path, DAY(2026, 1, 1))
    odd = 'P-2026"01\\1'
    with db.engine.begin() as conn:  # a person (or the web app) renumbers A's invoice
        conn.execute(update(invoices).where(invoices.c.issue_key == "platform:1:2026-01")
                     .values(invoice_no=odd))
    sweep(db, tmp_path, DAY(2026, 1, 12))  # A's invoice turns overdue: an audit row names it
    jan = invoice(db, "platform", A, "2026-01")
    details = [json.loads(d) if isinstance(d, str) else d
               for e, a, d in audit(db, "invoice") if e == str(jan.id)]
    assert [(d["invoice_no"], d.get("from"), d.get("to")) for d in details] == [
        ("P-202601-1", None, None), (odd, "due", "overdue")]


def test_an_invoice_written_by_the_web_app_without_issue_key_is_not_issued_again(db, tmp_path):
    """Regression: the "already issued" check looked only at issue_key, so an invoice the web
    app wrote (SPEC.md's fixed columns only) got a second one, P-…-R1, and both were due."""
    seed(db)
    with db.engine.begin() as conn:  # the web app bills A's January by hand
        conn.execute(insert(invoices).values(
            invoice_no="WEB-0001", kind="platform", institution_id=A, student_id=None,
            period_start=DAY(2026, 1, 1), period_end=DAY(2026, 1, 31), amount_minor=PLAN_FEE,
            currency="BDT", status="due", issued_at=dt.datetime(2026, 1, 1, 8),
            due_date=DAY(2026, 1, 11)))
    result = sweep(db, tmp_path, DAY(2026, 1, 1))
    assert result.counts["platform_invoices_issued"] == 1  # B's only
    with db.engine.connect() as conn:
        live = conn.execute(select(invoices.c.invoice_no).where(
            invoices.c.institution_id == A, invoices.c.kind == "platform",
            invoices.c.period_start == DAY(2026, 1, 1), invoices.c.status != "void")).scalars()
        assert list(live) == ["WEB-0001"]
    with db.engine.begin() as conn:  # voided by a person: the sweep issues a replacement
        conn.execute(update(invoices).where(invoices.c.invoice_no == "WEB-0001")
                     .values(status="void"))
    sweep(db, tmp_path, DAY(2026, 1, 2))
    with db.engine.connect() as conn:
        rows = conn.execute(select(invoices.c.invoice_no, invoices.c.status)
                            .where(invoices.c.institution_id == A, invoices.c.kind == "platform")
                            .order_by(invoices.c.id)).all()
    assert [tuple(r) for r in rows] == [("WEB-0001", "void"), ("P-202601-1-R1", "due")]


@pytest.mark.parametrize("broken, message", [
    ("foreign key", ("FOREIGN KEY constraint failed", "foreign key constraint fails")),
    ("not null", ("NOT NULL constraint failed", "cannot be null")),
])
def test_a_foreign_key_or_not_null_failure_fails_at_once_and_is_not_called_a_race(
        db, tmp_path, caplog, broken, message):
    """Regression: write() retried any IntegrityError five times and logged "another sweep wrote
    the same rows first"; only a duplicate key is that race."""
    seed(db)
    # A trigger of another writer that breaks a constraint whenever an invoice is inserted.
    values = "NEW.id + 1000000, 1" if broken == "foreign key" else "NEW.id, NULL"
    body = f"INSERT INTO payments (invoice_id, amount_minor, status) VALUES ({values}, 'pending')"
    with db.engine.begin() as conn:
        if db.caps.is_mysql:
            conn.exec_driver_sql(f"CREATE TRIGGER other_writer AFTER INSERT ON invoices "
                                 f"FOR EACH ROW {body}")
        else:
            conn.exec_driver_sql(f"CREATE TRIGGER other_writer AFTER INSERT ON invoices "
                                 f"BEGIN {body}; END")
    try:
        caplog.set_level("INFO", logger="ops.billing")
        with pytest.raises(IntegrityError) as raised:
            billing.run(context(db, tmp_path), as_of=DAY(2026, 1, 1))
        assert any(m.lower() in str(raised.value.orig).lower() for m in message)
        assert not is_duplicate_key(raised.value)
        assert "another sweep" not in caplog.text
        assert [r for r in caplog.records if "re-checking" in r.getMessage()] == []
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER other_writer")
    with db.engine.connect() as conn:  # nothing of the failed batch was kept
        assert conn.execute(select(func.count()).select_from(invoices)).scalar_one() == 0


def test_a_duplicate_key_is_told_apart_from_other_integrity_errors(db):
    with db.engine.begin() as conn:
        conn.execute(insert(plans).values(id=1, name="Basic", monthly_fee_minor=1))
    with pytest.raises(IntegrityError) as duplicate, db.engine.begin() as conn:
        conn.execute(insert(plans).values(id=1, name="Again", monthly_fee_minor=1))
    with pytest.raises(IntegrityError) as missing, db.engine.begin() as conn:
        conn.execute(insert(students).values(id=1, institution_id=404, name="Orphan"))
    assert is_duplicate_key(duplicate.value) and not is_duplicate_key(missing.value)
