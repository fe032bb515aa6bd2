"""The daily billing sweep: invoices, derived statuses, restriction and restore, reminders.

Every step is planned by a read-only query (the dry run shows it: counts, money, samples) and,
with --execute, applied in short set-based transactions over windows of `billing_batch_size`
primary keys that re-check the step's condition (steps.py: one skeleton for every step).
Uniqueness comes from the database, not from Python:
- `invoices.issue_key` ("kind:subject:YYYY-MM", NULL once void) is UNIQUE: a second live invoice
  for the same subject and month cannot exist, whichever sweep (or process) tries to insert it;
  an invoice of the subject, kind and period that another writer made (no issue_key) counts too;
- `invoice_reminders` has PRIMARY KEY (invoice_id, step), and the row is written (with this run's
  id) and committed before anything is sent: only the run whose insert won sends that step.
A run that loses such a race gets a duplicate-key error, rolls its batch back and re-plans it.
The rules are documented in docs/billing.md. Modules: rules (dates and conditions), steps (the
skeleton, invoices, statuses, access), reminders (recording and delivery).
"""

from __future__ import annotations

import datetime as dt

from ...mail import Mailer
from ...result import JobResult
from ...runtime import RunContext
from ...timeutil import utcnow
from . import reminders
from .rules import TARGETS, BillingDay, Step, issue_key, reminder_steps
from .steps import Line, Sweep

__all__ = ["BillingDay", "Line", "Step", "Sweep", "issue_key", "reminder_steps", "run"]


def run(ctx: RunContext, as_of: dt.date | None = None) -> JobResult:
    now = utcnow()
    day = BillingDay.build(as_of or now.date(), ctx.settings, now)
    sweep = Sweep(ctx, day)

    def steps() -> bool:
        if not sweep.timed("reissue", sweep.release_void_keys):
            return False
        for kind in ("platform", "attendee"):
            if not sweep.timed(f"generate_{kind}", lambda kind=kind: sweep.issue(kind)):
                return False
        for target in TARGETS:
            if not sweep.timed("status", lambda target=target: sweep.derive(target)):
                return False
        for entity in ("institution", "student"):
            for action in ("restrict", "restore"):
                if not sweep.timed("access", lambda e=entity, a=action: sweep.access(e, a)):
                    return False
        if sweep.stopped():
            return False
        recorded = sweep.timed("remind_record", lambda: reminders.record(sweep))
        # What was recorded is sent even when the run stopped while recording: a recorded
        # reminder that is not sent now would never be.
        if ctx.dry_run:
            sweep.timed("remind_send", lambda: reminders.plan_delivery(sweep) or True)
        else:
            with Mailer(ctx.settings) as mailer:
                sweep.timed("remind_send", lambda: reminders.deliver(sweep, mailer) or True)
        return recorded

    steps()
    return sweep.report()
