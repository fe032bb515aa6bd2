"""The daily billing sweep: invoices, derived statuses, restriction and restore, reminders.

Every step is planned by a read-only query (the dry run shows it: counts, money, samples) and,
with --execute, applied in short set-based transactions of at most `billing_batch_size` rows that
re-check the step's condition. Uniqueness comes from the database, not from Python:
- `invoices.issue_key` ("kind:subject:YYYY-MM", NULL once void) is UNIQUE: a second live invoice
  for the same subject and month cannot exist, whichever sweep (or process) tries to insert it;
- `invoice_reminders` has PRIMARY KEY (invoice_id, step), and the row is written (with this run's
  id) and committed before anything is sent: only the run whose insert won sends that step.
A run that loses such a race gets a duplicate-key error, rolls its batch back and re-plans it.
The rules are documented in docs/billing.md.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import smtplib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import (
    Connection,
    Date,
    DateTime,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from ..db import is_duplicate_key
from ..mail import Mailer, SmtpLoginRefused
from ..money import add_totals, as_minor, format_minor, format_totals
from ..result import JobResult
from ..runtime import RunContext
from ..schema import (
    audit_logs,
    guardian_students,
    institutions,
    invoice_reminders,
    invoices,
    notifications,
    payments,
    plans,
    students,
)
from ..settings import Settings
from ..timeutil import utcnow

log = logging.getLogger("ops.billing")

ACTOR = "billing-sweep"
UNPAID = ("generated", "due", "overdue", "blocked")
TARGETS = ("paid", "due", "overdue", "blocked")
PREFIX = {"platform": "P", "attendee": "A"}
RACE_RETRIES = 5
SAMPLES = 5
MAX_CONSECUTIVE_MAIL_FAILURES = 5


# --------------------------------------------------------------------------- the day and its rules

@dataclass(frozen=True)
class Step:
    """A reminder step: `offset` days after the due date (negative: before it)."""

    name: str
    offset: int


def reminder_steps(offsets: Iterable[int], grace_days: int) -> list[Step]:
    """The configured offsets plus the blocking step (due date + grace + 1), in day order."""
    blocked_at = grace_days + 1
    steps = {o: Step(f"due{o:+d}", o) for o in set(offsets) if o != blocked_at}
    steps[blocked_at] = Step("blocked", blocked_at)
    return sorted(steps.values(), key=lambda s: s.offset)


@dataclass(frozen=True)
class BillingDay:
    as_of: dt.date
    due_days: int
    grace_days: int
    issued_at: dt.datetime
    attendee_currency: str
    steps: tuple[Step, ...]

    @classmethod
    def build(cls, as_of: dt.date, settings: Settings, now: dt.datetime) -> "BillingDay":
        # Issued "now" when the sweep runs for today; at midnight of --as-of for another day.
        issued_at = now if as_of == now.date() else dt.datetime.combine(as_of, dt.time())
        return cls(
            as_of=as_of,
            due_days=settings.invoice_due_days,
            grace_days=settings.billing_grace_days,
            issued_at=issued_at,
            attendee_currency=settings.billing_currency,
            steps=tuple(reminder_steps(settings.reminder_offsets_days,
                                       settings.billing_grace_days)),
        )

    @property
    def period_start(self) -> dt.date:
        return self.as_of.replace(day=1)

    @property
    def period_end(self) -> dt.date:
        return self.as_of.replace(day=calendar.monthrange(self.as_of.year, self.as_of.month)[1])

    @property
    def period(self) -> str:
        return f"{self.as_of:%Y-%m}"

    @property
    def due_date(self) -> dt.date:
        return self.as_of + dt.timedelta(days=self.due_days)

    @property
    def blocked_before(self) -> dt.date:
        """An unpaid invoice whose due date is before this day is blocked."""
        return self.as_of - dt.timedelta(days=self.grace_days)

    def step_day_limit(self, offset: int) -> dt.date:
        """A step with this offset is due for invoices whose due date is on or before this day."""
        return self.as_of - dt.timedelta(days=offset)


def issue_key(kind: str, subject_id: int, period: str) -> str:
    return f"{kind}:{subject_id}:{period}"


# --------------------------------------------------------------------------- SQL building blocks

def _text(value: Any) -> ColumnElement:
    return cast(value, String) if isinstance(value, ColumnElement) else literal(str(value), String)


def _concat(*parts: Any) -> ColumnElement:
    """String concatenation on every dialect (|| on SQLite, concat() on MySQL)."""
    expr = _text(parts[0])
    for part in parts[1:]:
        expr = expr + _text(part)
    return expr


def _details(**fields: Any) -> ColumnElement:
    """A JSON object built by the database (JSON_OBJECT / json_object), so any value (an
    invoice number with a quote or a backslash) is escaped by the server, never by hand."""
    arguments: list[Any] = []
    for key, value in fields.items():
        arguments += [literal(key, String), _text(value)]
    return func.json_object(*arguments)


def settled_minor(inv) -> ColumnElement:
    """The sum of an invoice's settled payments, in minor units (0 when none)."""
    return func.coalesce(
        select(func.sum(payments.c.amount_minor))
        .where(payments.c.invoice_id == inv.c.id, payments.c.status == "settled")
        .scalar_subquery(),
        0,
    )


def unpaid(inv) -> ColumnElement:
    return and_(inv.c.status.in_(UNPAID), settled_minor(inv) < inv.c.amount_minor)


def blocked(inv, day: BillingDay) -> ColumnElement:
    """Blocked as this run derives it (equal to status = 'blocked' once statuses are applied)."""
    return and_(unpaid(inv), inv.c.due_date < day.blocked_before)


def becomes(inv, target: str, day: BillingDay) -> ColumnElement:
    """Invoices whose derived status is `target` and whose stored status is not yet."""
    if target == "paid":
        return and_(inv.c.status.in_(UNPAID), settled_minor(inv) >= inv.c.amount_minor)
    others = [s for s in UNPAID if s != target]
    base = and_(inv.c.status.in_(others), settled_minor(inv) < inv.c.amount_minor)
    if target == "due":
        return and_(base, or_(inv.c.due_date.is_(None), inv.c.due_date >= day.as_of))
    if target == "overdue":
        return and_(base, inv.c.due_date < day.as_of, inv.c.due_date >= day.blocked_before)
    return and_(base, inv.c.due_date < day.blocked_before)


def _audit_insert(select_stmt) -> Any:
    columns = ["actor", "action", "entity_type", "entity_id", "details", "created_at"]
    return insert(audit_logs).from_select(columns, select_stmt)


# --------------------------------------------------------------------------- the plan

@dataclass
class Line:
    """One line of the plan (and of the report): what a step would do, with its money."""

    step: str
    what: str
    key: str  # the name of its count in the result and the run ledger
    ids: list[int] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    done: int = 0
    done_totals: dict[str, int] = field(default_factory=dict)

    def row(self, dry_run: bool) -> dict[str, Any]:
        count, totals = (len(self.ids), self.totals) if dry_run else (self.done, self.done_totals)
        return {"step": self.step, "what": self.what, "count": count,
                "amount": format_totals(totals)}


class Sweep:
    def __init__(self, ctx: RunContext, day: BillingDay):
        self.ctx = ctx
        self.day = day
        self.dry_run = ctx.dry_run
        self.batch = ctx.settings.billing_batch_size
        self.now = utcnow()
        self.result = JobResult(ctx.tool, ctx.dry_run)
        self.lines: list[Line] = []
        self.samples: list[dict[str, Any]] = []

    # -- helpers

    def read(self, work: Callable[[Connection], Any], what: str) -> Any:
        return self.ctx.db.run(work, write=False, what=what)

    def write(self, work: Callable[[Connection], Any], what: str) -> Any:
        """One transaction; a lost race on a unique key (only that) rolls it back and runs it again."""
        for attempt in range(1, RACE_RETRIES + 1):
            try:
                return self.ctx.db.run(work, what=what)
            except IntegrityError as exc:
                # Only a duplicate key is the race meant here; a foreign-key or NOT NULL
                # violation is a real error and fails at once with its own message.
                if not is_duplicate_key(exc) or attempt == RACE_RETRIES:
                    raise
                log.info("%s: another sweep wrote the same rows first; re-checking the batch", what)
        raise AssertionError("unreachable")  # pragma: no cover

    def chunks(self, ids: Sequence[int]) -> Iterable[list[int]]:
        for start in range(0, len(ids), self.batch):
            yield list(ids[start:start + self.batch])

    def stopped(self) -> bool:
        reason = self.ctx.why_stop()
        if reason:
            self.result.stop_reason = reason
            self.result.notes.append(f"stopped early ({reason}); the next run carries on")
            return True
        return False

    def timed(self, name: str, work: Callable[[], None]) -> None:
        started = time.perf_counter()
        work()
        self.result.timings[name] = time.perf_counter() - started

    # -- step 1: a voided invoice frees its subject and month for a new invoice

    def release_void_keys(self) -> None:
        line = Line("reissue", "void invoices freed for re-issue", "void_keys_released")
        condition = and_(invoices.c.status == "void", invoices.c.issue_key.is_not(None))
        rows = self.read(lambda c: c.execute(
            select(invoices.c.id, invoices.c.currency, invoices.c.amount_minor).where(condition)
        ).all(), "plan reissue")
        line.ids = [r.id for r in rows]
        add_totals(line.totals, ((r.currency, r.amount_minor) for r in rows))
        self.lines.append(line)
        if self.dry_run or not rows:
            return
        for chunk in self.chunks(line.ids):
            statement = (update(invoices)
                         .where(invoices.c.id.in_(chunk), condition)
                         .values(issue_key=None, updated_at=self.now))
            line.done += self.write(lambda c: c.execute(statement).rowcount, "reissue")
        line.done_totals = dict(line.totals)

    # -- step 2: issue this month's missing invoices

    def candidates(self, kind: str, subject_ids: list[int] | None = None):
        """SELECT of the invoices to insert (columns in `INVOICE_COLUMNS` order)."""
        day = self.day
        existing = invoices.alias("existing")
        if kind == "platform":
            subject = institutions.c.id
            source = institutions.join(plans, plans.c.id == institutions.c.plan_id)
            amount, currency, student = plans.c.monthly_fee_minor, plans.c.currency, null()
            conditions = [institutions.c.is_active == True, plans.c.monthly_fee_minor > 0]  # noqa: E712
        else:
            subject = students.c.id
            source = students.join(institutions, institutions.c.id == students.c.institution_id)
            amount = students.c.monthly_fee_minor
            currency, student = literal(day.attendee_currency, String), students.c.id
            conditions = [students.c.is_active == True, institutions.c.is_active == True,  # noqa: E712
                          students.c.monthly_fee_minor > 0]
        # Re-issues after a void get "-R<n>", n = the invoices the subject already has for the
        # period, whatever their status: invoices are never deleted, so n only grows and a
        # number is never computed twice (counting only voids could repeat one after a person
        # un-voids an invoice).
        subject_column = invoices.c.institution_id if kind == "platform" else invoices.c.student_id
        earlier = (select(subject_column.label("subject_id"), func.count().label("n"))
                   .where(invoices.c.kind == kind, invoices.c.period_start == day.period_start)
                   .group_by(subject_column).subquery("earlier"))
        key = _concat(f"{kind}:", subject, f":{day.period}")
        number = _concat(
            f"{PREFIX[kind]}-{day.as_of:%Y%m}-", subject,
            case((earlier.c.n.is_(None), literal("", String)), else_=_concat("-R", earlier.c.n)),
        )
        # Issued means any invoice of this subject, kind and period that is not void, whoever
        # wrote it: the web app writes only SPEC.md's columns (no issue_key).
        existing_subject = (existing.c.institution_id if kind == "platform"
                            else existing.c.student_id)
        conditions.append(~exists().where(existing_subject == subject,
                                          existing.c.kind == kind,
                                          existing.c.period_start == day.period_start,
                                          existing.c.status != "void"))
        if subject_ids is not None:
            conditions.append(subject.in_(subject_ids))
        return (
            select(
                number.label("invoice_no"),
                literal(kind, String).label("kind"),
                (institutions.c.id if kind == "platform" else students.c.institution_id)
                .label("institution_id"),
                student.label("student_id"),
                literal(day.period_start, Date).label("period_start"),
                literal(day.period_end, Date).label("period_end"),
                amount.label("amount_minor"),
                currency.label("currency"),
                literal("due", String).label("status"),
                literal(day.issued_at, DateTime).label("issued_at"),
                literal(day.due_date, Date).label("due_date"),
                key.label("issue_key"),
                literal(self.ctx.run_id, String).label("issued_by_run"),
                subject.label("subject_id"),
            )
            .select_from(source.outerjoin(earlier, earlier.c.subject_id == subject))
            .where(and_(*conditions))
            .order_by(subject)
        )

    INVOICE_COLUMNS = ["invoice_no", "kind", "institution_id", "student_id", "period_start",
                       "period_end", "amount_minor", "currency", "status", "issued_at",
                       "due_date", "issue_key", "issued_by_run"]

    def issue(self, kind: str) -> bool:
        line = Line("generate", f"{kind} invoices for {self.day.period}", f"{kind}_invoices_issued")
        rows = self.read(lambda c: c.execute(self.candidates(kind)).all(), f"plan {kind} invoices")
        line.ids = [r.subject_id for r in rows]
        add_totals(line.totals, ((r.currency, r.amount_minor) for r in rows))
        self.lines.append(line)
        for r in rows[:SAMPLES]:
            self.samples.append({"invoice_no": r.invoice_no, "kind": kind,
                                 "institution": r.institution_id, "student": r.student_id,
                                 "amount": format_minor(r.amount_minor, r.currency),
                                 "due": str(self.day.due_date)})
        if self.dry_run:
            return True
        for chunk in self.chunks(line.ids):
            if self.stopped():
                return False
            keys = [issue_key(kind, subject_id, self.day.period) for subject_id in chunk]

            def work(conn: Connection, chunk=chunk, keys=keys) -> list:
                candidates = self.candidates(kind, chunk)
                columns = [candidates.selected_columns[n] for n in self.INVOICE_COLUMNS]
                conn.execute(insert(invoices).from_select(
                    self.INVOICE_COLUMNS, candidates.with_only_columns(*columns)))
                mine = and_(invoices.c.issue_key.in_(keys),
                            invoices.c.issued_by_run == self.ctx.run_id)
                conn.execute(_audit_insert(select(
                    literal(ACTOR, String), literal("invoice.issued", String),
                    literal("invoice", String), cast(invoices.c.id, String),
                    _details(invoice_no=invoices.c.invoice_no, kind=kind,
                             amount_minor=cast(invoices.c.amount_minor, String),
                             currency=invoices.c.currency, due_date=str(self.day.due_date),
                             as_of=str(self.day.as_of), run_id=self.ctx.run_id),
                    literal(self.now, DateTime),
                ).where(mine)))
                return conn.execute(
                    select(invoices.c.currency, func.count(), func.sum(invoices.c.amount_minor))
                    .where(mine).group_by(invoices.c.currency)).all()

            for currency, count, amount in self.write(work, f"issue {kind} invoices"):
                line.done += count
                add_totals(line.done_totals, [(currency, amount)])
        return True

    # -- step 3: derive every live invoice's status

    def derive(self, target: str) -> bool:
        line = Line("status", f"invoices -> {target}", f"invoices_now_{target}")
        condition = becomes(invoices, target, self.day)
        rows = self.read(lambda c: c.execute(
            select(invoices.c.id, invoices.c.currency, invoices.c.amount_minor)
            .where(condition).order_by(invoices.c.id)).all(), f"plan {target}")
        line.ids = [r.id for r in rows]
        add_totals(line.totals, ((r.currency, r.amount_minor) for r in rows))
        self.lines.append(line)
        if self.dry_run:
            return True
        values: dict[str, Any] = {"status": target, "updated_at": self.now}
        if target == "paid":
            values["paid_at"] = func.coalesce(
                select(func.max(payments.c.paid_at))
                .where(payments.c.invoice_id == invoices.c.id, payments.c.status == "settled")
                .scalar_subquery(), literal(self.now, DateTime))
        for chunk in self.chunks(line.ids):
            if self.stopped():
                return False

            def work(conn: Connection, chunk=chunk) -> list:
                # FOR UPDATE: a second sweep waits here, then no longer sees these rows. The
                # condition is read once: the audit and the update name exactly these ids, so
                # a payment committed in between cannot leave an audit row without its change.
                changed = conn.execute(
                    select(invoices.c.id, invoices.c.currency, invoices.c.amount_minor)
                    .where(invoices.c.id.in_(chunk), condition).with_for_update()).all()
                if not changed:
                    return []
                mine = invoices.c.id.in_([r.id for r in changed])
                conn.execute(_audit_insert(select(
                    literal(ACTOR, String), literal(f"invoice.{target}", String),
                    literal("invoice", String), cast(invoices.c.id, String),
                    _details(invoice_no=invoices.c.invoice_no, **{"from": invoices.c.status},
                             to=target, as_of=str(self.day.as_of), run_id=self.ctx.run_id),
                    literal(self.now, DateTime),
                ).where(mine)))
                conn.execute(update(invoices).where(mine).values(**values))
                return [(r.currency, r.amount_minor) for r in changed]

            changed = self.write(work, f"status {target}")
            line.done += len(changed)
            add_totals(line.done_totals, changed)
        return True

    # -- step 4: restriction and restore

    def access(self, entity: str, action: str) -> bool:
        table = institutions if entity == "institution" else students
        inv = invoices.alias("blocking")
        owner = (and_(inv.c.kind == "platform", inv.c.institution_id == table.c.id)
                 if entity == "institution"
                 else and_(inv.c.kind == "attendee", inv.c.student_id == table.c.id))
        has_blocked = exists().where(owner, blocked(inv, self.day))
        if action == "restrict":
            target = "restricted"
            condition = and_(table.c.access_state.in_(("active", "grace")), has_blocked)
            if entity == "institution":
                condition = and_(condition, table.c.billing_exempt == False)  # noqa: E712
        else:
            target = "active"
            free = ~has_blocked
            if entity == "institution":
                free = or_(free, table.c.billing_exempt == True)  # noqa: E712
            condition = and_(table.c.access_state == "restricted", free)
        past = "restricted" if action == "restrict" else "restored"
        line = Line(action, f"{entity}s -> {target}", f"{entity}s_{past}")
        ids = self.read(lambda c: c.execute(
            select(table.c.id).where(condition).order_by(table.c.id)).scalars().all(),
            f"plan {action} {entity}s")
        line.ids = list(ids)
        if action == "restrict" and ids:
            # The money behind the restriction: the blocked invoices of those subjects.
            subject = inv.c.institution_id if entity == "institution" else inv.c.student_id
            for chunk in self.chunks(line.ids):
                sums = self.read(lambda c, chunk=chunk: c.execute(
                    select(inv.c.currency, func.sum(inv.c.amount_minor))
                    .where(subject.in_(chunk), inv.c.kind == ("platform" if entity == "institution"
                                                               else "attendee"),
                           blocked(inv, self.day))
                    .group_by(inv.c.currency)).all(), "plan restrict money")
                add_totals(line.totals, sums)
        self.lines.append(line)
        if self.dry_run:
            return True
        for chunk in self.chunks(line.ids):
            if self.stopped():
                return False

            def work(conn: Connection, chunk=chunk) -> int:
                # Read once under FOR UPDATE; the audit and the update name exactly these ids.
                ids = conn.execute(select(table.c.id).where(table.c.id.in_(chunk), condition)
                                   .with_for_update()).scalars().all()
                if not ids:
                    return 0
                mine = table.c.id.in_(ids)
                reason = "blocked invoice" if action == "restrict" else "no blocked invoice"
                conn.execute(_audit_insert(select(
                    literal(ACTOR, String), literal(f"{entity}.{past}", String),
                    literal(entity, String), cast(table.c.id, String),
                    _details(**{"from": table.c.access_state}, to=target, reason=reason,
                             as_of=str(self.day.as_of), run_id=self.ctx.run_id),
                    literal(self.now, DateTime),
                ).where(mine)))
                return conn.execute(update(table).where(mine).values(access_state=target)).rowcount

            line.done += self.write(work, f"{action} {entity}s")
        line.done_totals = dict(line.totals) if line.done == len(line.ids) else {}
        return True

    # -- step 5: reminders, recorded before they are sent

    def step_condition(self, index: int) -> ColumnElement:
        """Invoices for which step `index` is the latest due step and no step from it on is sent."""
        steps = self.day.steps
        step = steps[index]
        conditions = [unpaid(invoices),
                      invoices.c.due_date <= self.day.step_day_limit(step.offset)]
        if index + 1 < len(steps):  # the next step is not due yet: never a backlog
            next_limit = self.day.step_day_limit(steps[index + 1].offset)
            conditions.append(invoices.c.due_date > next_limit)
        later = [s.name for s in steps[index:]]
        conditions.append(~exists().where(invoice_reminders.c.invoice_id == invoices.c.id,
                                          invoice_reminders.c.step.in_(later)))
        return and_(*conditions)

    def record_reminders(self) -> list[tuple[int, str]]:
        """Plan every step; with --execute, insert the rows this run wins. Returns the plan."""
        planned: list[tuple[int, str]] = []
        for index, step in enumerate(self.day.steps):
            condition = self.step_condition(index)
            rows = self.read(lambda c: c.execute(
                select(invoices.c.id, invoices.c.currency, invoices.c.amount_minor)
                .where(condition).order_by(invoices.c.id)).all(), f"plan reminders {step.name}")
            key = step.name.replace("-", "_minus_").replace("+", "_plus_")
            line = Line("remind", f"reminders {step.name}", f"reminders_{key}")
            line.ids = [r.id for r in rows]
            add_totals(line.totals, ((r.currency, r.amount_minor) for r in rows))
            self.lines.append(line)
            planned.extend((r.id, step.name) for r in rows)
            if self.dry_run:
                continue
            for chunk in self.chunks(line.ids):

                def work(conn: Connection, chunk=chunk, step=step) -> list:
                    mine = and_(invoices.c.id.in_(chunk), condition)
                    conn.execute(insert(invoice_reminders).from_select(
                        ["invoice_id", "step", "created_at", "run_id"],
                        select(invoices.c.id, literal(step.name, String),
                               literal(self.now, DateTime), literal(self.ctx.run_id, String))
                        .where(mine)))
                    # What this run won (a racing sweep may have recorded some of the chunk).
                    return conn.execute(
                        select(invoices.c.currency, invoices.c.amount_minor)
                        .join(invoice_reminders, invoice_reminders.c.invoice_id == invoices.c.id)
                        .where(invoice_reminders.c.invoice_id.in_(chunk),
                               invoice_reminders.c.step == step.name,
                               invoice_reminders.c.run_id == self.ctx.run_id)).all()

                won = self.write(work, f"record reminders {step.name}")
                line.done += len(won)
                add_totals(line.done_totals, won)
        return planned

    def plan_delivery(self, planned: list[tuple[int, str]]) -> None:
        """Dry run: how many emails and guardian notifications the planned reminders make."""
        invoice_ids = sorted({invoice_id for invoice_id, _ in planned})
        emails: set[int] = set()
        notes = 0
        for chunk in self.chunks(invoice_ids):
            def work(conn: Connection, chunk=chunk) -> tuple[list, int]:
                inst = conn.execute(
                    select(institutions.c.id).distinct()
                    .select_from(invoices.join(institutions,
                                               institutions.c.id == invoices.c.institution_id))
                    .where(invoices.c.id.in_(chunk), institutions.c.billing_email.is_not(None),
                           institutions.c.billing_email != "")).scalars().all()
                links = conn.execute(
                    select(func.count()).select_from(invoices.join(
                        guardian_students, guardian_students.c.student_id == invoices.c.student_id))
                    .where(invoices.c.id.in_(chunk), invoices.c.kind == "attendee")).scalar_one()
                return inst, links
            inst, links = self.read(work, "plan delivery")
            emails.update(inst)
            notes += links
        self.lines.append(Line("send", "reminder emails (one per billing email)",
                               "reminder_emails", ids=sorted(emails)))
        self.lines.append(Line("send", "guardian notifications", "guardian_notifications",
                               ids=list(range(notes))))

    def deliver(self, mailer: Mailer) -> None:
        """Send what this run recorded: notifications to guardians, one email per institution."""
        run_id = self.ctx.run_id
        notified = self._notify_guardians(run_id)
        emailed, failed = self._email_institutions(run_id, mailer)
        self.write(lambda c: c.execute(
            update(invoice_reminders)
            .where(invoice_reminders.c.run_id == run_id, invoice_reminders.c.channel.is_(None))
            .values(channel="none")), "reminders without a channel")
        self.lines.append(Line("send", "reminder emails (one per billing email)",
                               "reminder_emails", done=emailed))
        self.lines.append(Line("send", "guardian notifications", "guardian_notifications",
                               done=notified))
        if failed:
            self.result.add("reminder_emails_failed", len(failed))
            self.result.status = "failed"
            self.result.error = (f"{len(failed)} reminder emails could not be sent (recorded, "
                                 f"not retried: at most once); first: {failed[0]}")
        if mailer.uses_outbox and emailed:
            self.result.notes.append(f"no SMTP host configured: {emailed} reminder emails "
                                     f"written to {mailer.outbox}")

    def _notify_guardians(self, run_id: str) -> int:
        rows = self.read(lambda c: c.execute(
            select(invoice_reminders.c.invoice_id, invoice_reminders.c.step,
                   invoices.c.invoice_no, invoices.c.amount_minor, invoices.c.currency,
                   invoices.c.due_date, invoices.c.student_id, students.c.name.label("student"),
                   guardian_students.c.guardian_id)
            .select_from(invoice_reminders
                         .join(invoices, invoices.c.id == invoice_reminders.c.invoice_id)
                         .join(students, students.c.id == invoices.c.student_id)
                         .join(guardian_students,
                               guardian_students.c.student_id == invoices.c.student_id))
            .where(invoice_reminders.c.run_id == run_id, invoices.c.kind == "attendee")
            .order_by(invoice_reminders.c.invoice_id, guardian_students.c.guardian_id)).all(),
            "read guardian reminders")
        created = 0
        for start in range(0, len(rows), self.batch):
            batch = rows[start:start + self.batch]
            new = [{
                "guardian_id": r.guardian_id, "student_id": r.student_id,
                "kind": "invoice_reminder",
                "title": f"Invoice {r.invoice_no}: {step_title(r.step)}"[:255],
                "body": (f"{r.student}: {format_minor(r.amount_minor, r.currency)} "
                         f"due on {r.due_date}. {step_sentence(r.step, 'attendee')}"),
                "data": {"type": "invoice_reminder", "invoice_id": r.invoice_id, "invoice_no": r.invoice_no, "step": r.step,
                         "amount_minor": as_minor(r.amount_minor), "currency": r.currency,
                         "due_date": str(r.due_date)},
                "dedupe_key": f"invoice-reminder:{r.invoice_id}:{r.step}:{r.guardian_id}",
            } for r in batch]
            invoice_ids = sorted({r.invoice_id for r in batch})

            def work(conn: Connection, new=new, invoice_ids=invoice_ids) -> int:
                keys = [n["dedupe_key"] for n in new]
                have = set(conn.execute(select(notifications.c.dedupe_key)
                                        .where(notifications.c.dedupe_key.in_(keys))).scalars())
                fresh = [n for n in new if n["dedupe_key"] not in have]
                if fresh:
                    conn.execute(insert(notifications), fresh)
                conn.execute(update(invoice_reminders)
                             .where(invoice_reminders.c.run_id == run_id,
                                    invoice_reminders.c.invoice_id.in_(invoice_ids))
                             .values(channel="push", sent_at=self.now))
                return len(fresh)

            created += self.write(work, "guardian notifications")
        return created

    def _email_institutions(self, run_id: str, mailer: Mailer) -> tuple[int, list[str]]:
        rows = self.read(lambda c: c.execute(
            select(invoice_reminders.c.invoice_id, invoice_reminders.c.step, invoices.c.kind,
                   invoices.c.invoice_no, invoices.c.amount_minor, invoices.c.currency,
                   invoices.c.due_date, invoices.c.period_start,
                   institutions.c.id.label("institution_id"),
                   institutions.c.name.label("institution"), institutions.c.billing_email,
                   students.c.name.label("student"))
            .select_from(invoice_reminders
                         .join(invoices, invoices.c.id == invoice_reminders.c.invoice_id)
                         .join(institutions, institutions.c.id == invoices.c.institution_id)
                         .outerjoin(students, students.c.id == invoices.c.student_id))
            .where(invoice_reminders.c.run_id == run_id)
            .order_by(institutions.c.id, invoices.c.kind.desc(), invoices.c.id)).all(),
            "read email reminders")
        groups: dict[int, list] = {}
        for r in rows:
            if r.billing_email and r.billing_email.strip():
                groups.setdefault(r.institution_id, []).append(r)
        sent_ids: list[int] = []
        failed_ids: list[int] = []
        failures: list[str] = []
        emailed = 0
        consecutive = 0
        for group in groups.values():
            ids = [r.invoice_id for r in group]
            if consecutive >= MAX_CONSECUTIVE_MAIL_FAILURES:
                failed_ids.extend(ids)
                failures.append(f"{group[0].billing_email}: not tried after "
                                f"{MAX_CONSECUTIVE_MAIL_FAILURES} failures in a row")
                continue
            try:
                mailer.send(reminder_email(mailer, group))
                sent_ids.extend(ids)
                emailed += 1
                consecutive = 0
            except (smtplib.SMTPException, OSError, SmtpLoginRefused, ValueError,
                    TypeError) as exc:
                # ValueError/TypeError: an address the message cannot carry (a line break in
                # billing_email). Every failure is recorded; none may stop the other emails.
                mailer.close()
                consecutive += 1
                failed_ids.extend(ids)
                failures.append(f"{group[0].billing_email}: {type(exc).__name__}: {exc}"[:300])
                log.warning("reminder email to %s failed: %s", group[0].billing_email, exc)
            if len(sent_ids) >= self.batch:
                self._mark_emailed(run_id, sent_ids)
                sent_ids = []
        self._mark_emailed(run_id, sent_ids)
        for chunk in self.chunks(failed_ids):
            self.write(lambda c, chunk=chunk: c.execute(
                update(invoice_reminders)
                .where(invoice_reminders.c.run_id == run_id,
                       invoice_reminders.c.invoice_id.in_(chunk),
                       invoice_reminders.c.channel.is_(None))
                .values(channel="email-failed")), "reminders failed")
        return emailed, failures

    def _mark_emailed(self, run_id: str, invoice_ids: list[int]) -> None:
        for chunk in self.chunks(invoice_ids):
            channel = case((invoice_reminders.c.channel == "push", "email+push"), else_="email")
            self.write(lambda c, chunk=chunk: c.execute(
                update(invoice_reminders)
                .where(invoice_reminders.c.run_id == run_id,
                       invoice_reminders.c.invoice_id.in_(chunk))
                .values(channel=channel, sent_at=self.now)), "reminders sent")

    # -- the report

    def report(self) -> JobResult:
        result = self.result
        result.section("Billing steps", [line.row(self.dry_run) for line in self.lines],
                       columns=["step", "what", "count", "amount"])
        if self.samples:
            result.section("Sample invoices to issue" if self.dry_run else "Sample invoices issued",
                           self.samples)
        for line in self.lines:
            result.add(line.key, len(line.ids) if self.dry_run else line.done)
        result.notes.insert(0, f"as of {self.day.as_of} (period {self.day.period}, "
                               f"due {self.day.due_date} for invoices issued today, "
                               f"blocked when due before {self.day.blocked_before})")
        if self.dry_run:
            result.notes.append("dry run: nothing was written; --execute applies the plan above")
        return result


def step_title(step: str) -> str:
    if step == "blocked":
        return "overdue, access restricted"
    offset = int(step[3:])
    if offset < 0:
        return f"due in {-offset} day{'s' if offset != -1 else ''}"
    if offset == 0:
        return "due today"
    return f"{offset} day{'s' if offset != 1 else ''} overdue"


def step_sentence(step: str, kind: str) -> str:
    if step == "blocked":
        who = "The institution's" if kind == "platform" else "The student's"
        return f"{who} access is restricted until it is paid."
    if int(step[3:]) <= 0:
        return "Please pay by the due date."
    return "Please pay as soon as possible."


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


def run(ctx: RunContext, as_of: dt.date | None = None) -> JobResult:
    now = utcnow()
    day = BillingDay.build(as_of or now.date(), ctx.settings, now)
    sweep = Sweep(ctx, day)

    def steps() -> bool:
        sweep.timed("reissue", sweep.release_void_keys)
        for kind in ("platform", "attendee"):
            started = time.perf_counter()
            ok = sweep.issue(kind)
            sweep.result.timings[f"generate_{kind}"] = time.perf_counter() - started
            if not ok:
                return False
        started = time.perf_counter()
        for target in TARGETS:
            if not sweep.derive(target):
                return False
        sweep.result.timings["status"] = time.perf_counter() - started
        started = time.perf_counter()
        for entity in ("institution", "student"):
            for action in ("restrict", "restore"):
                if not sweep.access(entity, action):
                    return False
        sweep.result.timings["access"] = time.perf_counter() - started
        if sweep.stopped():
            return False
        started = time.perf_counter()
        planned = sweep.record_reminders()
        sweep.result.timings["remind_record"] = time.perf_counter() - started
        started = time.perf_counter()
        if ctx.dry_run:
            sweep.plan_delivery(planned)
        else:
            with Mailer(ctx.settings) as mailer:
                sweep.deliver(mailer)
        sweep.result.timings["remind_send"] = time.perf_counter() - started
        return True

    steps()
    return sweep.report()
