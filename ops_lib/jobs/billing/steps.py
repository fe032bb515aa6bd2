"""The sweep's writing steps and their one skeleton.

Every step walks a table's primary key in windows of `billing_batch_size` ids (`id > after AND
id <= after + window`), so a batch reads and locks only its own rows whatever plan the optimizer
picks, no batch rereads what earlier ones did, and nothing grows with the table but the number
of windows. Each window is one short transaction, after a stop check. A dry run plans each step
with one aggregate query (count and money per currency), so memory stays flat too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, TypeVar

from sqlalchemy import (
    Connection,
    Date,
    DateTime,
    Select,
    String,
    Table,
    and_,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    true,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from ...db import is_duplicate_key
from ...money import add_totals, format_minor, format_totals
from ...result import DONE, DRY_RUN, JobResult
from ...runtime import RunContext
from ...schema import audit_logs, institutions, invoices, payments, plans, students
from ...timeutil import utcnow
from .rules import ACTOR, PREFIX, BillingDay, becomes, blocked, concat, details

log = logging.getLogger("ops.billing")

RACE_RETRIES = 5
SAMPLES = 5
T = TypeVar("T")


# --------------------------------------------------------------------------- the plan

@dataclass
class Line:
    """One line of the plan (and of the report): what a step would do, with its money."""

    step: str
    what: str
    key: str  # the name of its count in the result and the run ledger
    planned: int = 0
    totals: dict[str, int] = field(default_factory=dict)
    done: int = 0
    done_totals: dict[str, int] = field(default_factory=dict)

    def plan(self, money: Iterable[tuple[str, int, Any]]) -> None:
        """Add (currency, count, amount) rows to what the step would do."""
        for currency, count, amount in money:
            self.planned += count
            add_totals(self.totals, [(currency, amount)])

    def record(self, money: Iterable[tuple[str, int, Any]]) -> None:
        """Add (currency, count, amount) rows to what the step did."""
        for currency, count, amount in money:
            self.done += count
            add_totals(self.done_totals, [(currency, amount)])

    def row(self, dry_run: bool) -> dict[str, Any]:
        count, totals = (self.planned, self.totals) if dry_run else (self.done, self.done_totals)
        return {"step": self.step, "what": self.what, "count": count,
                "amount": format_totals(totals)}


def invoice_money(which: ColumnElement) -> Select:
    """(currency, count, amount) of the invoices `which` selects."""
    return (select(invoices.c.currency, func.count(), func.sum(invoices.c.amount_minor))
            .where(which).group_by(invoices.c.currency))


@dataclass(frozen=True)
class Audit:
    """The audit row each changed row gets: `details` may use the table's columns."""

    action: str
    entity_type: str
    details: ColumnElement


@dataclass(frozen=True)
class Change:
    """A step that updates the rows of `table` matching `condition`, audited row by row.

    `money(which)` is a SELECT of (currency, count, amount) behind the rows `which` selects;
    the count is the line's own when `counts_rows` (invoices), else the rows' own count is used.
    """

    line: Line
    table: Table
    condition: ColumnElement
    values: dict[str, Any]
    audit: Audit | None = None
    money: Callable[[ColumnElement], Select] | None = None
    counts_rows: bool = True


@dataclass(frozen=True)
class Window:
    """Primary keys after < id <= upto: one batch."""

    after: int
    upto: int

    def of(self, column) -> ColumnElement:
        return and_(column > self.after, column <= self.upto)


# --------------------------------------------------------------------------- the sweep

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

    # -- the skeleton

    def read(self, work: Callable[[Connection], T], what: str) -> T:
        return self.ctx.db.run(work, write=False, what=what)

    def write(self, work: Callable[[Connection], T], what: str) -> T:
        """One transaction; a lost race on a unique key (only that) rolls it back, runs it again."""
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

    def windows(self, table: Table, what: str) -> Iterator[Window]:
        """The table's primary key, up to its last id now, in windows of `billing_batch_size`
        rows: each window's end is found by a walk of the primary key alone (however sparse the
        ids are), so every batch is bounded whatever the step's condition."""
        high = self.read(lambda c: c.execute(select(func.max(table.c.id))).scalar(), what)
        if high is None:
            return
        after = None
        while True:
            start = table.c.id > after if after is not None else true()
            upto = self.read(lambda c, start=start: c.execute(
                select(table.c.id).where(start).order_by(table.c.id)
                .offset(self.batch - 1).limit(1)).scalar(), what)
            if upto is None or upto >= high:
                yield Window(after if after is not None else -1, high)
                return
            yield Window(after if after is not None else -1, upto)
            after = upto

    def in_batches(self, table: Table, what: str, work: Callable[[Connection, Window], T],
                   done: Callable[[T], None],
                   probe: Callable[[Window], Select] | None = None) -> bool:
        """Run `work` in one transaction per window of `table`, after a stop check; hand each
        result to `done`. A window whose `probe` (a read) finds nothing opens no transaction.
        False when the run was asked to stop."""
        for window in self.windows(table, what):
            if self.stopped():
                return False
            if probe is not None and not self.read(
                    lambda c, window=window: c.execute(
                        select(probe(window).exists())).scalar(), what):
                continue
            done(self.write(lambda conn, window=window: work(conn, window), what))
        return True

    def apply(self, change: Change) -> bool:
        """Plan (dry run) or apply a Change: lock a window's rows that match, audit them, update."""
        line, table, condition = change.line, change.table, change.condition
        self.lines.append(line)
        if self.dry_run:
            self.read(lambda c: self._plan(c, change), f"plan {line.what}")
            return True

        def work(conn: Connection, window: Window) -> tuple[int, list]:
            # FOR UPDATE: a second sweep waits here, then no longer sees these rows. The
            # condition is read once: the audit and the update name exactly these ids, so a
            # payment committed in between cannot leave an audit row without its change.
            ids = conn.execute(select(table.c.id).where(window.of(table.c.id), condition)
                               .with_for_update()).scalars().all()
            if not ids:
                return 0, []
            # The window bounds the IN list: MariaDB turns a list of 1,000 or more into a
            # derived table, and the primary-key range keeps the plan to this window anyway.
            mine = and_(window.of(table.c.id), table.c.id.in_(ids))
            money = conn.execute(change.money(mine)).all() if change.money else []
            if change.audit:
                conn.execute(insert(audit_logs).from_select(
                    ["actor", "action", "entity_type", "entity_id", "details", "created_at"],
                    select(literal(ACTOR, String), literal(change.audit.action, String),
                           literal(change.audit.entity_type, String), cast(table.c.id, String),
                           change.audit.details, literal(self.now, DateTime)).where(mine)))
            conn.execute(update(table).where(mine).values(**change.values))
            return len(ids), money

        def done(result: tuple[int, list]) -> None:
            count, money = result
            if change.counts_rows:
                line.record(money)
            else:
                line.done += count
                line.record((currency, 0, amount) for currency, _, amount in money)

        return self.in_batches(table, line.what, work, done, probe=lambda window: select(
            table.c.id).where(window.of(table.c.id), condition))

    def _plan(self, conn: Connection, change: Change) -> None:
        line = change.line
        if change.money and change.counts_rows:
            line.plan(conn.execute(change.money(change.condition)).all())
            return
        line.planned = conn.execute(select(func.count()).select_from(change.table)
                                    .where(change.condition)).scalar_one()
        if change.money:
            add_totals(line.totals, ((currency, amount) for currency, _, amount
                                     in conn.execute(change.money(change.condition)).all()))

    def stopped(self) -> bool:
        reason = self.ctx.why_stop()
        if reason:
            self.result.stop_reason = reason
            self.result.notes.append(f"stopped early ({reason}); the next run carries on")
            return True
        return False

    def timed(self, name: str, work: Callable[[], bool]) -> bool:
        started = time.perf_counter()
        try:
            return work()
        finally:
            self.result.timings[name] = (self.result.timings.get(name, 0.0)
                                         + time.perf_counter() - started)

    # -- step 1: a voided invoice frees its subject and month for a new invoice

    def release_void_keys(self) -> bool:
        return self.apply(Change(
            Line("reissue", "void invoices freed for re-issue", "void_keys_released"),
            invoices, and_(invoices.c.status == "void", invoices.c.issue_key.is_not(None)),
            values={"issue_key": None, "updated_at": self.now}, money=invoice_money))

    # -- step 2: issue this month's missing invoices

    INVOICE_COLUMNS = ["invoice_no", "kind", "institution_id", "student_id", "period_start",
                       "period_end", "amount_minor", "currency", "status", "issued_at",
                       "due_date", "issue_key", "issued_by_run"]

    def candidates(self, kind: str, window: Window | None = None) -> Select:
        """SELECT of the invoices to insert: `INVOICE_COLUMNS` in order, then subject_id."""
        day = self.day
        existing = invoices.alias("existing")
        # One table in FROM (the subjects), everything else a correlated subquery: the window
        # on its primary key then drives the plan. With a join, MariaDB started from the
        # institutions and read every student of every window's institutions each batch.
        if kind == "platform":
            subject = source = institutions
            plan = select(plans).where(plans.c.id == institutions.c.plan_id)
            amount = plan.with_only_columns(plans.c.monthly_fee_minor).scalar_subquery()
            currency = plan.with_only_columns(plans.c.currency).scalar_subquery()
            student = null()
            conditions = [institutions.c.is_active == True, amount > 0]  # noqa: E712
            existing_subject = existing.c.institution_id
        else:
            source = students
            amount = students.c.monthly_fee_minor
            currency, student = literal(day.attendee_currency, String), students.c.id
            conditions = [students.c.is_active == True, students.c.monthly_fee_minor > 0,  # noqa: E712
                          # a scalar subquery, not EXISTS: MariaDB turns EXISTS into a
                          # semi-join that starts from the institutions again
                          select(institutions.c.is_active)
                          .where(institutions.c.id == students.c.institution_id)
                          .scalar_subquery() == True]  # noqa: E712
            existing_subject = existing.c.student_id
        subject = source.c.id
        of_subject = and_(existing_subject == subject, existing.c.kind == kind,
                          existing.c.period_start == day.period_start)
        # Re-issues after a void get "-R<n>", n = the invoices the subject already has for the
        # period, whatever their status: invoices are never deleted, so n only grows and a
        # number is never computed twice. One indexed count per subject (its few invoices).
        earlier = select(func.count()).select_from(existing).where(of_subject).scalar_subquery()
        key = concat(f"{kind}:", subject, f":{day.period}")
        number = concat(f"{PREFIX[kind]}-{day.as_of:%Y%m}-", subject,
                        case((earlier == 0, literal("", String)), else_=concat("-R", earlier)))
        # Issued means any invoice of this subject, kind and period that is not void, whoever
        # wrote it: the web app writes only SPEC.md's columns (no issue_key).
        conditions.append(~exists().where(of_subject, existing.c.status != "void"))
        if window is not None:
            conditions.append(window.of(subject))
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
            .select_from(source)
            .where(and_(*conditions))
        )

    def issue(self, kind: str) -> bool:
        day = self.day
        line = Line("generate", f"{kind} invoices for {day.period}", f"{kind}_invoices_issued")
        self.lines.append(line)
        if self.dry_run:
            planned = self.candidates(kind).subquery()

            def plan(conn: Connection) -> list:
                line.plan(conn.execute(
                    select(planned.c.currency, func.count(), func.sum(planned.c.amount_minor))
                    .group_by(planned.c.currency)).all())
                return conn.execute(select(planned).order_by(planned.c.subject_id)
                                    .limit(SAMPLES)).all()

            self.add_samples(kind, self.read(plan, f"plan {kind} invoices"))
            return True
        subject_table = institutions if kind == "platform" else students
        subject = invoices.c.institution_id if kind == "platform" else invoices.c.student_id

        def work(conn: Connection, window: Window) -> list:
            candidates = self.candidates(kind, window)
            columns = [candidates.selected_columns[n] for n in self.INVOICE_COLUMNS]
            if not conn.execute(insert(invoices).from_select(
                    self.INVOICE_COLUMNS, candidates.with_only_columns(*columns))).rowcount:
                return []
            mine = and_(window.of(subject), invoices.c.kind == kind,
                        invoices.c.period_start == day.period_start,
                        invoices.c.issued_by_run == self.ctx.run_id)
            conn.execute(insert(audit_logs).from_select(
                ["actor", "action", "entity_type", "entity_id", "details", "created_at"],
                select(literal(ACTOR, String), literal("invoice.issued", String),
                       literal("invoice", String), cast(invoices.c.id, String),
                       details(invoice_no=invoices.c.invoice_no, kind=kind,
                               amount_minor=cast(invoices.c.amount_minor, String),
                               currency=invoices.c.currency, due_date=str(day.due_date),
                               as_of=str(day.as_of), run_id=self.ctx.run_id),
                       literal(self.now, DateTime)).where(mine)))
            if len(self.samples) < SAMPLES:
                self.add_samples(kind, conn.execute(
                    select(invoices).where(mine).order_by(invoices.c.id)
                    .limit(SAMPLES - len(self.samples))).all())
            return conn.execute(invoice_money(mine)).all()

        return self.in_batches(subject_table, f"issue {kind} invoices", work, line.record,
                               probe=lambda window: self.candidates(kind, window))

    def add_samples(self, kind: str, rows: Iterable) -> None:
        for r in rows:
            self.samples.append({"invoice_no": r.invoice_no, "kind": kind,
                                 "institution": r.institution_id, "student": r.student_id,
                                 "amount": format_minor(r.amount_minor, r.currency),
                                 "due": str(self.day.due_date)})

    # -- step 3: derive every live invoice's status

    def derive(self, target: str) -> bool:
        values: dict[str, Any] = {"status": target, "updated_at": self.now}
        if target == "paid":
            values["paid_at"] = func.coalesce(
                select(func.max(payments.c.paid_at))
                .where(payments.c.invoice_id == invoices.c.id, payments.c.status == "settled")
                .scalar_subquery(), literal(self.now, DateTime))
        return self.apply(Change(
            Line("status", f"invoices -> {target}", f"invoices_now_{target}"),
            invoices, becomes(invoices, target, self.day), values,
            Audit(f"invoice.{target}", "invoice",
                  details(invoice_no=invoices.c.invoice_no, **{"from": invoices.c.status},
                          to=target, as_of=str(self.day.as_of), run_id=self.ctx.run_id)),
            money=invoice_money))

    # -- step 4: restriction and restore

    def access(self, entity: str, action: str) -> bool:
        table = institutions if entity == "institution" else students
        kind = "platform" if entity == "institution" else "attendee"
        inv = invoices.alias("blocking")
        subject = inv.c.institution_id if entity == "institution" else inv.c.student_id
        has_blocked = exists().where(inv.c.kind == kind, subject == table.c.id,
                                     blocked(inv, self.day))
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
        reason = "blocked invoice" if action == "restrict" else "no blocked invoice"

        def money(which: ColumnElement) -> Select:
            """The money behind a restriction: the blocked invoices of those subjects."""
            # A join from the subjects (`which` picks them by primary key) to their invoices
            # by index; an IN (subquery) let the optimizer scan every blocked invoice instead.
            owed = invoices.alias("owed")  # not `inv`: `which` may hold has_blocked's EXISTS
            owner = owed.c.institution_id if entity == "institution" else owed.c.student_id
            return (select(owed.c.currency, func.count(), func.sum(owed.c.amount_minor))
                    .select_from(table.join(owed, owner == table.c.id))
                    .where(which, owed.c.kind == kind, blocked(owed, self.day))
                    .group_by(owed.c.currency))

        return self.apply(Change(
            Line(action, f"{entity}s -> {target}", f"{entity}s_{past}"),
            table, condition, {"access_state": target},
            Audit(f"{entity}.{past}", entity,
                  details(**{"from": table.c.access_state}, to=target, reason=reason,
                          as_of=str(self.day.as_of), run_id=self.ctx.run_id)),
            money=money if action == "restrict" else None, counts_rows=False))

    # -- the report

    def report(self) -> JobResult:
        result = self.result
        result.section("Billing steps", [line.row(self.dry_run) for line in self.lines],
                       columns=["step", "what", "count", "amount"])
        if self.samples:
            result.section("Sample invoices to issue" if self.dry_run else "Sample invoices issued",
                           self.samples)
        for line in self.lines:
            result.add(line.key, line.planned if self.dry_run else line.done)
        result.notes.insert(0, f"as of {self.day.as_of} (period {self.day.period}, "
                               f"due {self.day.due_date} for invoices issued today, "
                               f"blocked when due before {self.day.blocked_before})")
        if self.dry_run:
            if result.stop_reason == DONE:
                result.stop_reason = DRY_RUN
            result.notes.append("dry run: nothing was written; --execute applies the plan above")
        return result
