"""The demo's history: a little work for every tool besides the worker's queued scans.

Built on top of the rows of `synthetic_load.build_rows` (its institutions, students, guardians
and devices), relative to "now" and to the settings that judge each row, so that each tool's dry
run on a fresh demo shows what it would do:
- archive: attendance records, notifications and audit logs a few weeks past their retention,
  and settled payments of paid invoices past the payments retention;
- billing: last month's invoices of a few students and institutions, one at each reminder step
  (due in a few days, due today, overdue, at blocking) and one blocked but paid since, whose
  subject is restricted (restore after payment); this month's invoices are left to the sweep;
- worker: queued attendance report emails over the scans' days;
- dead letters: failed scans, deliveries and report emails, some older than their retention.
Deterministic for a given seed, "now" and starting ids; it draws from its own random stream.
"""

from __future__ import annotations

import calendar
import datetime as dt
import random
from dataclasses import dataclass, fields
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, func, select

from ..schema import (
    attendance_records,
    attendance_scan_queue,
    audit_logs,
    invoices,
    notifications,
    payments,
    push_deliveries,
    report_email_queue,
)
from ..settings import SETTINGS

Rows = dict[str, list[dict]]
PAST_RETENTION_DAYS = (1, 60)  # how far past its retention an old row is (days, inclusive)
REPORT_DAYS = 7  # a queued report covers the last week
AUDIT_ACTIONS = [
    ("web-app", "student.updated", "student", {"changed": ["class_name"]}),
    ("web-app", "guardian.linked", "guardian", {"relation": "parent"}),
    ("admin", "institution.settings_changed", "institution", {"changed": ["late_after"]}),
    ("billing-sweep", "invoice.paid", "invoice", {"from": "due", "to": "paid"}),
]
PAYMENT_METHODS = ["bkash", "nagad", "card", "bank"]


@dataclass(frozen=True)
class History:
    """The demo's history: how many rows of each kind (0: none of that kind)."""

    old_notifications: int = 0  # older than notifications_retention_days (archive)
    old_audit_logs: int = 0  # older than audit_logs_retention_days (archive)
    old_payments: int = 0  # settled, of paid invoices older than payments_retention_days
    old_attendance: int = 0  # attendance records older than attendance_retention_days
    billing_cases: int = 0  # fee-paying students in each billing case (and one institution)
    report_emails: int = 0  # queued attendance reports (worker)
    dead_letters: int = 0  # failed rows in each worker queue (dead-letter tool)

    def any(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


NO_HISTORY = History()
DEMO_HISTORY = History(old_notifications=200, old_audit_logs=200, old_payments=40,
                       old_attendance=200, billing_cases=3, report_emails=5, dead_letters=2)


@dataclass(frozen=True)
class Ages:
    """The settings that judge the history (each tool reads the same ones)."""

    notifications_retention_days: int
    audit_logs_retention_days: int
    payments_retention_days: int
    attendance_retention_days: int
    dead_letter_retention_days: int
    invoice_due_days: int
    billing_grace_days: int
    reminder_offsets_days: tuple[int, ...]
    billing_currency: str
    worker_max_attempts: int

    @classmethod
    def of(cls, settings: Any = None) -> "Ages":
        """From resolved settings; their defaults where none are given."""
        values = {}
        for f in fields(cls):
            default = SETTINGS[f.name].default
            values[f.name] = default if settings is None else getattr(settings, f.name, default)
        return cls(**values)


def next_id(conn: Connection, table: Table) -> int:
    return (conn.execute(select(func.max(table.c.id))).scalar() or 0) + 1


def _first_free_id(conn: Connection, table: Table, *planned: list[dict]) -> int:
    """The first id after the table's rows and the rows already planned for it."""
    return max([next_id(conn, table)] + [r["id"] + 1 for rows in planned for r in rows])


def _month(day: dt.date) -> tuple[dt.date, dt.date]:
    start = day.replace(day=1)
    return start, start.replace(day=calendar.monthrange(start.year, start.month)[1])


def _utc(day: dt.date, seconds: int, zone: ZoneInfo) -> dt.datetime:
    """A local time of `day` (seconds after midnight in `zone`) as naive UTC."""
    local = dt.datetime.combine(day, dt.time(), zone) + dt.timedelta(seconds=seconds)
    return local.astimezone(dt.timezone.utc).replace(tzinfo=None)


class HistoryBuilder:
    def __init__(self, conn: Connection, history: History, seed: int, now: dt.datetime, ages: Ages,
                 bare: Rows):
        self.conn = conn
        self.history = history
        self.rng = random.Random(f"history-{seed}")
        self.now = now
        self.today = now.date()
        self.ages = ages
        self.bare = bare
        self.zones = {i["id"]: ZoneInfo(i["timezone"]) for i in bare["institutions"]}
        self.students = bare["students"]
        self.fee_students = [s for s in self.students if s["monthly_fee_minor"]]
        self.links = bare["guardian_students"]
        self.devices: dict[int, list[int]] = {}
        for device in bare["notification_devices"]:
            self.devices.setdefault(device["guardian_id"], []).append(device["id"])

    def ago(self, days: int) -> dt.datetime:
        """A random second of the UTC day `days` before today: older than `days` - 1 days, so a
        row `days` > retention days ago is past its retention whatever the time of day."""
        return (dt.datetime.combine(self.today - dt.timedelta(days=days), dt.time())
                + dt.timedelta(seconds=self.rng.randrange(86_400)))

    def past(self, retention: int) -> int:
        """Days ago for a row a little past `retention`."""
        return retention + self.rng.randint(*PAST_RETENTION_DAYS)

    def unique(self, count: int, make) -> list:
        """`count` distinct values of `make()` (fewer when it runs out of distinct ones)."""
        seen: dict[Any, None] = {}
        for _ in range(count * 20):
            if len(seen) == count:
                break
            seen.setdefault(make(), None)
        return list(seen)

    # -- archive

    def old_attendance(self) -> list[dict]:
        if not self.students:
            return []
        retention = self.ages.attendance_retention_days
        keys = self.unique(self.history.old_attendance, lambda: (
            self.rng.randrange(len(self.students)),
            self.today - dt.timedelta(days=self.past(retention))))
        first_id = next_id(self.conn, attendance_records)
        rows = []
        for k, (index, day) in enumerate(keys):
            student = self.students[index]
            zone = self.zones[student["institution_id"]]
            first = self.rng.randrange(7 * 3600, 10 * 3600)
            scans = self.rng.randint(1, 3)
            last = first + (self.rng.randrange(60, 6 * 3600) if scans > 1 else 0)
            rows.append({
                "id": first_id + k, "institution_id": student["institution_id"],
                "student_id": student["id"], "attendance_date": day,
                "first_scan_at": _utc(day, first, zone), "last_scan_at": _utc(day, last, zone),
                "scan_count": scans, "status": "late" if first >= 9 * 3600 else "present",
                "is_archived": False, "created_at": _utc(day, first, zone),
                "updated_at": _utc(day, last, zone),
            })
        return rows

    def old_notifications(self) -> list[dict]:
        if not self.links:
            return []
        names = {s["id"]: s["name"] for s in self.students}
        retention = self.ages.notifications_retention_days
        picks = self.unique(self.history.old_notifications, lambda: (
            self.rng.randrange(len(self.links)), self.past(retention)))
        first_id = next_id(self.conn, notifications)
        rows = []
        for k, (index, days) in enumerate(picks):
            link = self.links[index]
            created = self.ago(days)
            name, day = names[link["student_id"]], created.date()
            rows.append({
                "id": first_id + k, "guardian_id": link["guardian_id"],
                "student_id": link["student_id"], "kind": "arrival",
                "title": f"{name} arrived",
                "body": f"{name} arrived at {created:%H:%M} on {day:%d %b %Y} (present).",
                "data": {"type": "arrival", "student_id": link["student_id"],
                         "attendance_date": day.isoformat(), "status": "present",
                         "first_scan_at": created.isoformat() + "Z"},
                "dedupe_key": f"arrival:{link['student_id']}:{day.isoformat()}:"
                              f"{link['guardian_id']}",
                "created_at": created,
                "read_at": created + dt.timedelta(hours=2) if self.rng.random() < 0.6 else None,
                "fanout_status": "done", "fanned_out_at": created,
            })
        return rows

    def old_audit_logs(self) -> list[dict]:
        count = self.history.old_audit_logs
        subjects = {"student": [s["id"] for s in self.students],
                    "guardian": [g["id"] for g in self.bare["guardians"]],
                    "institution": [i["id"] for i in self.bare["institutions"]]}
        first_id = next_id(self.conn, audit_logs)
        rows = []
        for k in range(count):
            actor, action, entity, details = self.rng.choice(AUDIT_ACTIONS)
            ids = subjects.get(entity) or [self.rng.randint(1, 9999)]
            rows.append({
                "id": first_id + k, "actor": actor, "action": action, "entity_type": entity,
                "entity_id": str(self.rng.choice(ids)), "details": details,
                "created_at": self.ago(self.past(self.ages.audit_logs_retention_days)),
            })
        return rows

    def old_paid_invoices(self, first_id: int) -> tuple[list[dict], list[dict]]:
        """Paid attendee invoices, each with one settled payment older than its retention."""
        if not self.fee_students:
            return [], []
        retention = self.ages.payments_retention_days
        picks = self.unique(self.history.old_payments, lambda: (
            self.rng.randrange(len(self.fee_students)),
            _month(self.today - dt.timedelta(days=retention + self.rng.randint(40, 160)))[0]))
        bills, paid = [], []
        for k, (index, period_start) in enumerate(picks):
            student = self.fee_students[index]
            issued = dt.datetime.combine(period_start, dt.time(8))
            paid_at = issued + dt.timedelta(days=self.rng.randint(1, 9), hours=3)
            bills.append(self.invoice(
                first_id + k, "attendee", student["institution_id"], student["id"],
                period_start, student["monthly_fee_minor"], self.ages.billing_currency,
                "paid", issued, period_start + dt.timedelta(days=self.ages.invoice_due_days),
                paid_at))
            paid.append({"invoice_id": first_id + k, "amount_minor": student["monthly_fee_minor"],
                         "method": self.rng.choice(PAYMENT_METHODS), "paid_at": paid_at})
        return bills, paid

    # -- billing

    def invoice(self, row_id: int, kind: str, institution_id: int, student_id: int | None,
                period_start: dt.date, amount: int, currency: str, status: str,
                issued_at: dt.datetime, due_date: dt.date,
                paid_at: dt.datetime | None = None) -> dict:
        subject = institution_id if kind == "platform" else student_id
        return {
            "id": row_id, "invoice_no": f"{'P' if kind == 'platform' else 'A'}-"
                                        f"{period_start:%Y%m}-{subject}",
            "kind": kind, "institution_id": institution_id, "student_id": student_id,
            "period_start": period_start, "period_end": _month(period_start)[1],
            "amount_minor": amount, "currency": currency, "status": status,
            "issued_at": issued_at, "due_date": due_date, "paid_at": paid_at,
            "issue_key": f"{kind}:{subject}:{period_start:%Y-%m}", "created_at": issued_at,
        }

    def billing_cases(self) -> list[tuple[str, dt.date, bool]]:
        """(stored status, due date, paid since) of last month's invoices: one at each reminder
        step (the blocking step, due date + grace + 1, among them), then one blocked and paid."""
        grace = self.ages.billing_grace_days
        offsets = sorted(set(self.ages.reminder_offsets_days) | {grace + 1})
        cases = [("overdue" if offset > grace else "due", self.today - dt.timedelta(days=offset),
                  False) for offset in offsets]
        cases.append(("blocked", self.today - dt.timedelta(days=grace + 15), True))
        return cases

    def last_month_invoices(self, first_id: int) -> tuple[list[dict], list[dict]]:
        """An institution takes each case, as far as they go; `billing_cases` fee-paying students
        take each case. The subject of the paid case is restricted (the sweep restores it)."""
        period_start = _month(self.today.replace(day=1) - dt.timedelta(days=1))[0]
        cases = self.billing_cases()
        per_case = self.history.billing_cases
        chosen = self.rng.sample(self.fee_students,
                                 min(len(self.fee_students), per_case * len(cases)))
        for inst in self.bare["institutions"]:  # one row restricted: every row names the column
            inst.setdefault("access_state", "active")
        plan_fees = {p["id"]: (p["monthly_fee_minor"], p["currency"]) for p in self.bare["plans"]}
        # Institutions take the blocked and the paid case first: a demo of one or two
        # institutions still shows a restriction and a restore.
        subjects: list[tuple[str, dict, tuple[str, dt.date, bool]]] = [
            ("platform", inst, case)
            for inst, case in zip(self.bare["institutions"], cases[-2:] + cases[:-2])]
        subjects += [("attendee", student, cases[n // per_case])
                     for n, student in enumerate(chosen)]
        bills, paid = [], []
        for k, (kind, subject, (status, due, paid_since)) in enumerate(subjects):
            if kind == "platform":
                amount, currency = plan_fees[subject["plan_id"]]
                inst_id, student_id = subject["id"], None
            else:
                amount, currency = subject["monthly_fee_minor"], self.ages.billing_currency
                inst_id, student_id = subject["institution_id"], subject["id"]
            issued = dt.datetime.combine(due - dt.timedelta(days=self.ages.invoice_due_days),
                                         dt.time(8))
            bills.append(self.invoice(first_id + k, kind, inst_id, student_id, period_start,
                                      amount, currency, status, issued, due))
            if paid_since:
                subject["access_state"] = "restricted"
                paid.append({"invoice_id": first_id + k, "amount_minor": amount,
                             "method": self.rng.choice(PAYMENT_METHODS),
                             "paid_at": self.now - dt.timedelta(days=1)})
        return bills, paid

    # -- worker and dead letters

    def report_emails(self, count: int, first_id: int, failed: bool = False) -> list[dict]:
        insts = self.bare["institutions"]
        if not insts:
            return []
        rows = []
        for k in range(count):
            inst = insts[k % len(insts)]
            created = self.dead_letter_time(k) if failed else (
                self.now - dt.timedelta(minutes=5 * (count - k)))
            params = {"from": (self.today - dt.timedelta(days=REPORT_DAYS - 1)).isoformat(),
                      "to": self.today.isoformat()}
            row = {"id": first_id + k, "institution_id": inst["id"],
                   "recipient": f"principal{inst['id']}@school.example",
                   "report_type": "attendance", "params": params, "status": "pending",
                   "attempts": 0, "created_at": created, "error": None, "finished_at": None}
            if failed:  # a request the worker cannot render: failed at once, never retried
                row.update(report_type="weekly_summary", status="failed", attempts=1,
                           error="unknown report type 'weekly_summary'",
                           finished_at=created + dt.timedelta(minutes=1))
            rows.append(row)
        return rows

    def dead_letter_time(self, k: int) -> dt.datetime:
        """Every other dead letter is older than its retention (the prune has work too)."""
        if k % 2 == 0:
            return self.ago(self.ages.dead_letter_retention_days + 3 + k)
        return self.ago(1 + k)

    def failed_scans(self, first_id: int) -> list[dict]:
        insts = self.bare["institutions"]
        rows = []
        for k in range(self.history.dead_letters if insts else 0):
            inst = insts[k % len(insts)]["id"]
            card = f"UNKNOWN-{self.rng.randrange(10**6):06d}"
            created = self.dead_letter_time(k)
            rows.append({
                "id": first_id + k, "institution_id": inst, "card_uid": card,
                "device_serial": f"DEV-{inst}-0", "scanned_at": created - dt.timedelta(seconds=5),
                "status": "failed", "attempts": 1, "created_at": created,
                "processed_at": created + dt.timedelta(minutes=1),
                "error": f"unknown card {card!r} at institution {inst}",
            })
        return rows

    def failed_deliveries(self, old_notifications: list[dict]) -> list[dict]:
        """Pushes of old notifications that Firebase kept refusing (given up after the last
        attempt)."""
        sent = [(n, self.devices[n["guardian_id"]][0]) for n in old_notifications
                if self.devices.get(n["guardian_id"])]
        first_id = next_id(self.conn, push_deliveries)
        attempts = self.ages.worker_max_attempts
        return [{
            "id": first_id + k, "notification_id": n["id"], "device_id": device,
            "status": "failed", "attempts": attempts, "error_code": "UNAVAILABLE",
            "error": f"The service is currently unavailable (after {attempts} attempts)",
            "sent_at": None, "created_at": n["created_at"] + dt.timedelta(seconds=1),
            "finished_at": n["created_at"] + dt.timedelta(hours=2),
        } for k, (n, device) in enumerate(sent[:self.history.dead_letters])]

    def build(self) -> Rows:
        h = self.history
        first_invoice = next_id(self.conn, invoices)
        old_bills, old_paid = self.old_paid_invoices(first_invoice)
        recent_bills, recent_paid = ([], []) if not h.billing_cases else (
            self.last_month_invoices(first_invoice + len(old_bills)))
        first_payment = next_id(self.conn, payments)
        payment_rows = [
            {"id": first_payment + k, **p, "reference": f"DEMO-{first_payment + k}",
             "status": "settled", "created_at": p["paid_at"]}
            for k, p in enumerate(old_paid + recent_paid)]
        notes = self.old_notifications()
        emails = self.report_emails(h.report_emails, next_id(self.conn, report_email_queue))
        bare_scans = self.bare["attendance_scan_queue"]
        return {
            "old_attendance_records": self.old_attendance(),
            "old_notifications": notes,
            "old_audit_logs": self.old_audit_logs(),
            "invoices": old_bills + recent_bills,
            "payments": payment_rows,
            "report_email_queue": emails,
            "failed_scans": self.failed_scans(
                _first_free_id(self.conn, attendance_scan_queue, bare_scans)),
            "failed_deliveries": self.failed_deliveries(notes),
            "failed_report_emails": self.report_emails(
                h.dead_letters, _first_free_id(self.conn, report_email_queue, emails), failed=True),
        }


PART_TABLES = {
    "old_attendance_records": attendance_records, "old_notifications": notifications,
    "old_audit_logs": audit_logs, "invoices": invoices, "payments": payments,
    "report_email_queue": report_email_queue, "failed_scans": attendance_scan_queue,
    "failed_deliveries": push_deliveries, "failed_report_emails": report_email_queue,
}


def build_history(conn: Connection, history: History, seed: int, now: dt.datetime, ages: Ages,
                  bare: Rows) -> Rows:
    """The history's rows, keyed by part (see PART_TABLES), in insert order; empty parts left
    out. May mark some of `bare`'s students and institutions restricted (billing's restore)."""
    parts = HistoryBuilder(conn, history, seed, now, ages, bare).build()
    return {name: rows for name, rows in parts.items() if rows}
