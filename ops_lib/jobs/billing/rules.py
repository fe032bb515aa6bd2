"""The billing rules as dates and SQL conditions: periods, due dates, statuses, reminder steps."""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import String, and_, cast, exists, func, literal, or_, select
from sqlalchemy.sql.elements import ColumnElement

from ...schema import invoice_reminders, payments
from ...settings import Settings

ACTOR = "billing-sweep"
UNPAID = ("generated", "due", "overdue", "blocked")
TARGETS = ("paid", "due", "overdue", "blocked")
PREFIX = {"platform": "P", "attendee": "A"}


@dataclass(frozen=True)
class Step:
    """A reminder step: `offset` days after the due date (negative: before it)."""

    name: str
    offset: int

    @property
    def count_key(self) -> str:
        """Its count's name in the result: 'reminders_due_minus_3'."""
        return "reminders_" + self.name.replace("-", "_minus_").replace("+", "_plus_")


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

def text(value: Any) -> ColumnElement:
    return cast(value, String) if isinstance(value, ColumnElement) else literal(str(value), String)


def concat(*parts: Any) -> ColumnElement:
    """String concatenation on every dialect (|| on SQLite, concat() on MySQL)."""
    expr = text(parts[0])
    for part in parts[1:]:
        expr = expr + text(part)
    return expr


def details(**fields: Any) -> ColumnElement:
    """A JSON object built by the database (JSON_OBJECT / json_object), so any value (an
    invoice number with a quote or a backslash) is escaped by the server, never by hand."""
    arguments: list[Any] = []
    for key, value in fields.items():
        arguments += [literal(key, String), text(value)]
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


def step_condition(inv, day: BillingDay, index: int) -> ColumnElement:
    """Invoices for which step `index` is the latest due step and no step from it on is sent."""
    steps = day.steps
    step = steps[index]
    conditions = [unpaid(inv), inv.c.due_date <= day.step_day_limit(step.offset)]
    if index + 1 < len(steps):  # the next step is not due yet: never a backlog
        conditions.append(inv.c.due_date > day.step_day_limit(steps[index + 1].offset))
    later = [s.name for s in steps[index:]]
    conditions.append(~exists().where(invoice_reminders.c.invoice_id == inv.c.id,
                                      invoice_reminders.c.step.in_(later)))
    return and_(*conditions)


# --------------------------------------------------------------------------- reminder wording

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
