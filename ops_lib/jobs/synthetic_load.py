"""Synthetic load: institutions, plans, students with cards, guardians, devices, queued scans,
and (the demo's history) a little work for every other tool.

Deterministic for a given --seed, "now" and starting ids; rows are inserted in large multi-row
batches with explicit ids, so 100,000 scans take seconds, not minutes.

The history (`History`, on by default in the tool, off in `LoadSize`, so the worker's tests and
benchmarks load exactly what they always did) is placed relative to "now" and to the settings
that judge it: rows just past each retention for the archive, previous-month invoices at each
reminder step, at blocking and paid after blocking for billing, queued report emails for the
worker, failed rows for the dead-letter tool. It draws from its own random stream, so turning it
on or off leaves every other row as it was.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, insert

from ..result import JobResult, dry_run_reason
from ..runtime import RunContext
from ..schema import (
    attendance_scan_queue,
    guardian_students,
    guardians,
    institutions,
    notification_devices,
    plans,
    students,
)
from ..timeutil import utcnow
from .synthetic_history import (  # noqa: F401 (History and its presets are this module's API too)
    DEMO_HISTORY,
    NO_HISTORY,
    PART_TABLES,
    Ages,
    History,
    build_history,
    next_id,
)

CHUNK = 5000
CLASSES = ["One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten"]
TIMEZONES = ["Asia/Dhaka", "Asia/Dhaka", "Asia/Dhaka", "Asia/Kolkata", "UTC"]


@dataclass(frozen=True)
class LoadSize:
    institutions: int = 5
    students_per_institution: int = 200
    guardians_per_student: int = 2
    devices_per_guardian: int = 1
    scans: int = 10_000
    days: int = 5
    unknown_card_ratio: float = 0.0
    seed: int = 1
    history: History = field(default=NO_HISTORY)


def _insert(conn: Connection, table: Table, rows: list[dict], advance) -> None:
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        conn.execute(insert(table), chunk)
        advance(len(chunk))


def build_rows(conn: Connection, size: LoadSize, now: dt.datetime,
               settings: Any = None) -> dict[str, list[dict]]:
    """Every row to insert, keyed by part (a table's name, or a history part of PART_TABLES),
    in insert order. `settings` place the history (their defaults when None)."""
    rng = random.Random(size.seed)
    ids = {t.name: next_id(conn, t) for t in (plans, institutions, students, guardians,
                                               notification_devices, attendance_scan_queue)}
    plan_rows = [
        {"id": ids["plans"] + i, "name": name, "monthly_fee_minor": fee, "currency": "BDT",
         "created_at": now}
        for i, (name, fee) in enumerate([("Basic", 250_000), ("Standard", 499_900),
                                          ("Premium", 1_000_050)])
    ]
    inst_rows, student_rows, guardian_rows, link_rows, device_rows = [], [], [], [], []
    tag = f"s{size.seed}i{ids['institutions']}"
    for i in range(size.institutions):
        inst_id = ids["institutions"] + i
        inst_rows.append({
            "id": inst_id, "name": f"Synthetic School {inst_id}", "code": f"SYN-{tag}-{i}",
            "timezone": TIMEZONES[i % len(TIMEZONES)],
            "plan_id": plan_rows[i % len(plan_rows)]["id"],
            "billing_email": f"billing{inst_id}@school.example", "created_at": now,
        })
    student_id = ids["students"]
    guardian_id = ids["guardians"]
    device_id = ids["notification_devices"]
    for inst in inst_rows:
        for n in range(size.students_per_institution):
            student_rows.append({
                "id": student_id, "institution_id": inst["id"], "name": f"Student {student_id}",
                "class_name": CLASSES[n % len(CLASSES)], "card_uid": f"CARD-{student_id:08d}",
                "monthly_fee_minor": rng.choice([None, 150_000, 99_999]),
                "access_state": "active", "is_active": True, "created_at": now,
            })
            for _ in range(size.guardians_per_student):
                guardian_rows.append({
                    "id": guardian_id, "name": f"Guardian {guardian_id}",
                    "phone": f"+8801{guardian_id:09d}",
                    "email": f"guardian{guardian_id}@mail.example", "created_at": now,
                })
                link_rows.append({"guardian_id": guardian_id, "student_id": student_id})
                for _ in range(size.devices_per_guardian):
                    seen = now - dt.timedelta(days=rng.randint(0, 400))
                    device_rows.append({
                        "id": device_id, "guardian_id": guardian_id,
                        "token": f"synthetic-token-{tag}-{device_id}",
                        "platform": rng.choice(["android", "ios"]), "is_active": True,
                        "last_seen_at": seen, "created_at": seen - dt.timedelta(days=30),
                    })
                    device_id += 1
                guardian_id += 1
            student_id += 1

    scan_rows = []
    zones = {inst["id"]: ZoneInfo(inst["timezone"]) for inst in inst_rows}
    today = now.date()
    for k in range(size.scans):
        student = rng.choice(student_rows) if student_rows else None
        if student is None:
            break
        day = today - dt.timedelta(days=rng.randrange(size.days))
        local = dt.datetime.combine(day, dt.time(7, 0), zones[student["institution_id"]])
        local += dt.timedelta(seconds=rng.randrange(4 * 3600))
        card = student["card_uid"]
        if rng.random() < size.unknown_card_ratio:
            card = f"UNKNOWN-{rng.randrange(10**6):06d}"
        scanned = local.astimezone(dt.timezone.utc).replace(tzinfo=None)
        scan_rows.append({
            "id": ids["attendance_scan_queue"] + k, "institution_id": student["institution_id"],
            "card_uid": card, "device_serial": f"DEV-{student['institution_id']}-{k % 3}",
            "scanned_at": scanned, "status": "pending", "attempts": 0, "created_at": now,
        })
    rows = {
        "plans": plan_rows, "institutions": inst_rows, "students": student_rows,
        "guardians": guardian_rows, "guardian_students": link_rows,
        "notification_devices": device_rows, "attendance_scan_queue": scan_rows,
    }
    if size.history.any():
        rows.update(build_history(conn, size.history, size.seed, now, Ages.of(settings), rows))
    return rows


# Every part of build_rows' answer -> the table its rows go to.
TABLES: dict[str, Table] = {
    **{t.name: t for t in (plans, institutions, students, guardians, guardian_students,
                           notification_devices, attendance_scan_queue)},
    **PART_TABLES,
}
# What each part is for (the dry run's table).
PURPOSE = {
    "plans": "plans with a monthly fee",
    "institutions": "institutions",
    "students": "students with cards, some paying a monthly fee",
    "guardians": "guardians",
    "guardian_students": "guardian-student links",
    "notification_devices": "push devices, some not seen for months (stale devices)",
    "attendance_scan_queue": "queued scans (worker)",
    "old_attendance_records": "attendance past its retention (archive)",
    "old_notifications": "notifications past their retention (archive)",
    "old_audit_logs": "audit logs past their retention (archive)",
    "invoices": "old paid invoices; last month's at each reminder step (billing)",
    "payments": "settled: old ones (archive), paid after blocking (billing's restore)",
    "report_email_queue": "queued attendance reports (worker)",
    "failed_scans": "failed scans (dead letters)",
    "failed_deliveries": "failed push deliveries (dead letters)",
    "failed_report_emails": "failed report emails (dead letters)",
}


def load(conn: Connection, size: LoadSize, now: dt.datetime | None = None) -> dict[str, list[dict]]:
    """Build the rows of `size` and insert them in the caller's transaction; returns them."""
    rows = build_rows(conn, size, now or utcnow())
    for name, batch in rows.items():
        _insert(conn, TABLES[name], batch, lambda _n: None)
    return rows


def run(ctx: RunContext, size: LoadSize, now: dt.datetime | None = None) -> JobResult:
    result = JobResult(ctx.tool, ctx.dry_run)
    now = now or utcnow()
    started = time.perf_counter()
    with ctx.db.begin(write=False) as conn:
        rows = build_rows(conn, size, now, ctx.settings)
    result.timings["build"] = time.perf_counter() - started
    result.section("Rows to insert", [{"table": TABLES[name].name, "rows": len(batch),
                                       "what": PURPOSE[name]} for name, batch in rows.items()])
    if size.history.any():
        result.notes.append(f"history placed relative to {now:%Y-%m-%d %H:%M:%S} UTC and the "
                            "retention, billing and dead-letter settings (--no-history: none)")
    if ctx.dry_run:
        result.notes.append("--execute would insert these rows (seed %d)" % size.seed)
        result.stop_reason = dry_run_reason()
        return result
    started = time.perf_counter()
    total = sum(len(batch) for batch in rows.values())
    with ctx.progress("inserting synthetic rows", total) as advance:
        with ctx.db.begin() as conn:
            for name, batch in rows.items():
                table_started = time.perf_counter()
                _insert(conn, TABLES[name], batch, advance)
                result.counts[f"{name}_inserted"] = len(batch)
                result.timings[f"insert_{name}"] = time.perf_counter() - table_started
    result.timings["insert"] = time.perf_counter() - started
    scans = len(rows["attendance_scan_queue"])
    if scans:
        result.notes.append(
            f"{scans} scans queued in {result.timings['insert']:.2f}s "
            f"({total / max(result.timings['insert'], 1e-9):,.0f} rows/s over all {total} rows)"
        )
    return result
