"""Reminders: recorded before they are sent, then delivered as guardian notifications and one
email per institution.

A reminder row (PRIMARY KEY invoice_id, step) is inserted with this run's id and committed before
anything is sent: only the run whose insert won sends that step. An email that provably never
reached an SMTP server (see mail.never_reached_server) gives its reminder rows back, so the next
sweep sends them; one that may have been delivered is recorded as failed and never sent again.
"""

from __future__ import annotations

import logging
import smtplib
from typing import Any, Iterator

from sqlalchemy import Connection, DateTime, String, case, delete, exists, func, insert, literal
from sqlalchemy import and_, or_, select, update

from ...mail import Mailer, SmtpLoginRefused, never_reached_server, smtp_error_text
from ...money import as_minor, format_minor
from ...schema import guardian_students, institutions, invoice_reminders, invoices, notifications
from ...schema import students
from .rules import step_condition, step_sentence, step_title
from .steps import Line, Sweep, Window, invoice_money

log = logging.getLogger("ops.billing")

MAX_CONSECUTIVE_MAIL_FAILURES = 5
IN_LIST_MAX = 500
INSTITUTIONS_PER_READ = 20  # one read of reminders to email holds this many institutions'


def record(sweep: Sweep) -> bool:
    """Plan every step; with --execute, insert the rows this run wins, window by window."""
    reminders = invoice_reminders
    for index, step in enumerate(sweep.day.steps):
        condition = step_condition(invoices, sweep.day, index)
        line = Line("remind", f"reminders {step.name}", step.count_key)
        sweep.lines.append(line)
        if sweep.dry_run:
            line.plan(sweep.read(lambda c: c.execute(invoice_money(condition)).all(),
                                 f"plan reminders {step.name}"))
            continue

        def work(conn: Connection, window: Window, step=step, condition=condition) -> list:
            conn.execute(insert(reminders).from_select(
                ["invoice_id", "step", "created_at", "run_id"],
                select(invoices.c.id, literal(step.name, String),
                       literal(sweep.now, DateTime), literal(sweep.ctx.run_id, String))
                .where(window.of(invoices.c.id), condition)))
            # What this run won (a racing sweep may have recorded some of the window).
            return conn.execute(invoice_money(exists().where(
                reminders.c.invoice_id == invoices.c.id, reminders.c.step == step.name,
                reminders.c.run_id == sweep.ctx.run_id) & window.of(invoices.c.id))).all()

        probe = (lambda window, condition=condition:
                 select(invoices.c.id).where(window.of(invoices.c.id), condition))
        if not sweep.in_batches(invoices, f"record reminders {step.name}", work, line.record,
                                probe):
            return False
    return True


def plan_delivery(sweep: Sweep) -> None:
    """Dry run: how many emails and guardian notifications the planned reminders make."""
    planned = or_(*(step_condition(invoices, sweep.day, i) for i in range(len(sweep.day.steps))))

    def work(conn: Connection) -> tuple[int, int]:
        emails = conn.execute(
            select(func.count(invoices.c.institution_id.distinct()))
            .select_from(invoices.join(institutions,
                                       institutions.c.id == invoices.c.institution_id))
            .where(planned, institutions.c.billing_email.is_not(None),
                   institutions.c.billing_email != "")).scalar_one()
        notes = conn.execute(
            select(func.count()).select_from(invoices.join(
                guardian_students, guardian_students.c.student_id == invoices.c.student_id))
            .where(invoices.c.kind == "attendee", planned)).scalar_one()
        return emails, notes

    emails, notes = sweep.read(work, "plan delivery")
    sweep.lines.append(Line("send", "reminder emails (one per billing email)",
                            "reminder_emails", planned=emails))
    sweep.lines.append(Line("send", "guardian notifications", "guardian_notifications",
                            planned=notes))


def deliver(sweep: Sweep, mailer: Mailer) -> None:
    """Send what this run recorded: notifications to guardians, one email per institution."""
    run_id = sweep.ctx.run_id
    notified = _notify_guardians(sweep)
    outcome = _email_institutions(sweep, mailer)
    sweep.write(lambda c: c.execute(
        update(invoice_reminders)
        .where(invoice_reminders.c.run_id == run_id, invoice_reminders.c.channel.is_(None))
        .values(channel="none")), "reminders without a channel")
    sweep.lines.append(Line("send", "reminder emails (one per billing email)",
                            "reminder_emails", done=outcome.emailed))
    sweep.lines.append(Line("send", "guardian notifications", "guardian_notifications",
                            done=notified))
    result = sweep.result
    if outcome.failures:
        result.add("reminder_emails_failed", outcome.failed)
        result.add("reminder_emails_to_retry", outcome.to_retry)
        result.status = "failed"
        result.stop_reason = f"reminder email failed: {outcome.failures[0]}"
        result.error = (f"{outcome.failed + outcome.to_retry} reminder emails could not be sent: "
                        f"{outcome.to_retry} never reached an SMTP server and go out with the "
                        f"next sweep, {outcome.failed} are recorded as failed and not retried "
                        f"(at most once); first: {outcome.failures[0]}")
    if mailer.uses_outbox and outcome.emailed:
        result.notes.append(f"no SMTP host configured: {outcome.emailed} reminder emails "
                            f"written to {mailer.outbox}")


def _run_invoice_pages(sweep: Sweep) -> Iterator[Window]:
    """This run's reminded invoices, a batch at a time: keyset windows on (run_id, invoice_id).
    A range, not an IN list (MariaDB turns a long one into a derived table and scans the run)."""
    after = 0
    while True:
        page = (select(invoice_reminders.c.invoice_id)
                .where(invoice_reminders.c.run_id == sweep.ctx.run_id,
                       invoice_reminders.c.invoice_id > after)
                .order_by(invoice_reminders.c.invoice_id).limit(sweep.batch).subquery())
        upto = sweep.read(lambda c, page=page: c.execute(
            select(func.max(page.c.invoice_id))).scalar(), "read reminders")
        if upto is None:
            return
        yield Window(after, upto)
        after = upto


def _notify_guardians(sweep: Sweep) -> int:
    run_id = sweep.ctx.run_id
    created = 0
    for page in _run_invoice_pages(sweep):
        mine = and_(invoice_reminders.c.run_id == run_id, page.of(invoice_reminders.c.invoice_id))
        rows = sweep.read(lambda c, mine=mine: c.execute(
            select(invoice_reminders.c.invoice_id, invoice_reminders.c.step,
                   invoices.c.invoice_no, invoices.c.amount_minor, invoices.c.currency,
                   invoices.c.due_date, invoices.c.student_id, students.c.name.label("student"),
                   guardian_students.c.guardian_id)
            .select_from(invoice_reminders
                         .join(invoices, invoices.c.id == invoice_reminders.c.invoice_id)
                         .join(students, students.c.id == invoices.c.student_id)
                         .join(guardian_students,
                               guardian_students.c.student_id == invoices.c.student_id))
            .where(mine, invoices.c.kind == "attendee")
            .order_by(invoice_reminders.c.invoice_id, guardian_students.c.guardian_id)).all(),
            "read guardian reminders")
        if not rows:
            continue
        new = [{
            "guardian_id": r.guardian_id, "student_id": r.student_id,
            "kind": "invoice_reminder",
            "title": f"Invoice {r.invoice_no}: {step_title(r.step)}"[:255],
            "body": (f"{r.student}: {format_minor(r.amount_minor, r.currency)} "
                     f"due on {r.due_date}. {step_sentence(r.step, 'attendee')}"),
            "data": {"type": "invoice_reminder", "invoice_id": r.invoice_id,
                     "invoice_no": r.invoice_no, "step": r.step,
                     "amount_minor": as_minor(r.amount_minor), "currency": r.currency,
                     "due_date": str(r.due_date)},
            "dedupe_key": f"invoice-reminder:{r.invoice_id}:{r.step}:{r.guardian_id}",
        } for r in rows]
        notified = sorted({r.invoice_id for r in rows})

        def work(conn: Connection, new=new, notified=notified, mine=mine) -> int:
            have: set[str] = set()
            for keys in _chunks([n["dedupe_key"] for n in new]):
                have.update(conn.execute(select(notifications.c.dedupe_key)
                                         .where(notifications.c.dedupe_key.in_(keys))).scalars())
            fresh = [n for n in new if n["dedupe_key"] not in have]
            if fresh:
                conn.execute(insert(notifications), fresh)
            for chunk in _chunks(notified):
                conn.execute(update(invoice_reminders)
                             .where(mine, invoice_reminders.c.invoice_id.in_(chunk))
                             .values(channel="push", sent_at=sweep.now))
            return len(fresh)

        created += sweep.write(work, "guardian notifications")
    return created


class EmailOutcome:
    def __init__(self) -> None:
        self.emailed = 0  # emails sent
        self.failed = 0  # emails that may have been delivered, or never can be: not retried
        self.to_retry = 0  # emails that never reached a server: their reminders given back
        self.failures: list[str] = []
        self.consecutive = 0


def _email_institutions(sweep: Sweep, mailer: Mailer) -> EmailOutcome:
    outcome = EmailOutcome()
    for group in _email_groups(sweep):
        ids = [r.invoice_id for r in group]
        address = group[0].billing_email
        if outcome.consecutive >= MAX_CONSECUTIVE_MAIL_FAILURES:
            # Not tried: nothing was handed to a server, so the next sweep sends them.
            _give_back(sweep, ids)
            outcome.to_retry += 1
            continue
        try:
            mailer.send(reminder_email(mailer, group))
        except (smtplib.SMTPException, OSError, SmtpLoginRefused, ValueError,
                TypeError) as exc:
            # ValueError/TypeError: an address the message cannot carry (a line break in
            # billing_email). Every failure is recorded; none may stop the other emails.
            mailer.close()
            outcome.consecutive += 1
            outcome.failures.append(f"{address}: {smtp_error_text(exc)}"[:300])
            log.warning("reminder email to %s failed: %s", address, exc)
            if never_reached_server(exc):
                _give_back(sweep, ids)
                outcome.to_retry += 1
            else:
                _mark(sweep, ids, "email-failed", sent=False)
                outcome.failed += 1
            continue
        outcome.consecutive = 0
        outcome.emailed += 1
        _mark(sweep, ids, case((invoice_reminders.c.channel == "push", "email+push"),
                               else_="email"), sent=True)
    return outcome


def _email_groups(sweep: Sweep) -> Iterator[list]:
    """This run's reminders with a billing email, one list per institution, a few institutions
    read at a time (keyset on institutions)."""
    run_id = sweep.ctx.run_id
    has_email = (institutions.c.billing_email.is_not(None)
                 & (institutions.c.billing_email != ""))
    reminded = exists().where(invoices.c.institution_id == institutions.c.id,
                              invoice_reminders.c.invoice_id == invoices.c.id,
                              invoice_reminders.c.run_id == run_id)
    after = 0
    while True:
        page = sweep.read(lambda c: c.execute(
            select(institutions.c.id).where(institutions.c.id > after, has_email, reminded)
            .order_by(institutions.c.id).limit(INSTITUTIONS_PER_READ)).scalars().all(),
            "read institutions to email")
        if not page:
            return
        after = page[-1]
        rows = sweep.read(lambda c, page=page: c.execute(
            select(invoice_reminders.c.invoice_id, invoice_reminders.c.step, invoices.c.kind,
                   invoices.c.invoice_no, invoices.c.amount_minor, invoices.c.currency,
                   invoices.c.due_date, invoices.c.period_start,
                   institutions.c.id.label("institution_id"),
                   institutions.c.name.label("institution"), institutions.c.billing_email,
                   students.c.name.label("student"))
            .select_from(invoices
                         .join(invoice_reminders, invoice_reminders.c.invoice_id == invoices.c.id)
                         .join(institutions, institutions.c.id == invoices.c.institution_id)
                         .outerjoin(students, students.c.id == invoices.c.student_id))
            .where(invoices.c.institution_id.in_(page), invoice_reminders.c.run_id == run_id,
                   has_email)
            .order_by(institutions.c.id, invoices.c.kind.desc(), invoices.c.id)).all(),
            "read email reminders")
        groups: dict[int, list] = {}
        for r in rows:
            if r.billing_email.strip():
                groups.setdefault(r.institution_id, []).append(r)
        yield from groups.values()


def _chunks(values: list) -> Iterator[list]:
    """IN lists of at most IN_LIST_MAX values: MariaDB turns longer ones (1,000 and more by
    default) into a derived table, whose plan can scan the whole run instead of the list."""
    for start in range(0, len(values), IN_LIST_MAX):
        yield values[start:start + IN_LIST_MAX]


def _mark(sweep: Sweep, ids: list[int], channel: Any, sent: bool) -> None:
    values: dict[str, Any] = {"channel": channel}
    if sent:
        values["sent_at"] = sweep.now
    for chunk in _chunks(ids):
        mine = [invoice_reminders.c.run_id == sweep.ctx.run_id,
                invoice_reminders.c.invoice_id.in_(chunk)]
        if not sent:  # a failed email leaves the guardians' "push" as it is
            mine.append(invoice_reminders.c.channel.is_(None))
        sweep.write(lambda c, mine=mine: c.execute(
            update(invoice_reminders).where(*mine).values(**values)), "reminders emailed")


def _give_back(sweep: Sweep, ids: list[int]) -> None:
    """Delete this run's reminder rows for these invoices: the next sweep records and sends them
    again (guardian notifications are not repeated: their dedupe_key exists)."""
    for chunk in _chunks(ids):
        sweep.write(lambda c, chunk=chunk: c.execute(
            delete(invoice_reminders).where(invoice_reminders.c.run_id == sweep.ctx.run_id,
                                            invoice_reminders.c.invoice_id.in_(chunk))),
            "reminders given back")


def reminder_email(mailer: Mailer, group: list) -> Any:
    first = group[0]
    lines = [f"Billing reminders for {first.institution}:", ""]
    for r in group:
        subject = "platform fee" if r.kind == "platform" else f"attendee fee, {r.student}"
        lines.append(f"- {r.invoice_no} ({subject}, {r.period_start:%B %Y}): "
                     f"{format_minor(r.amount_minor, r.currency)}, due {r.due_date}: "
                     f"{step_title(r.step)}. {step_sentence(r.step, r.kind)}")
    lines += ["", "This message was sent by the billing sweep; paid invoices need no action."]
    if len(group) == 1:
        subject = f"Invoice {first.invoice_no}: {step_title(first.step)}"
    else:
        subject = f"Billing reminders: {len(group)} invoices of {first.institution}"
    return mailer.new_message(first.billing_email, subject[:200], "\n".join(lines))
