"""Synthetic load: institutions, plans, students with cards, guardians, devices, queued scans.

Deterministic for a given --seed and starting ids; rows are inserted in large multi-row batches
with explicit ids, so 100,000 scans take seconds, not minutes.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, func, insert, select

from ..result import JobResult
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


def _next_id(conn: Connection, table: Table) -> int:
    return (conn.execute(select(func.max(table.c.id))).scalar() or 0) + 1


def _insert(conn: Connection, table: Table, rows: list[dict], advance) -> None:
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        conn.execute(insert(table), chunk)
        advance(len(chunk))


def build_rows(conn: Connection, size: LoadSize, now: dt.datetime) -> dict[str, list[dict]]:
    """Every row to insert, keyed by table name (in insert order)."""
    rng = random.Random(size.seed)
    ids = {t.name: _next_id(conn, t) for t in (plans, institutions, students, guardians,
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
    return {
        "plans": plan_rows, "institutions": inst_rows, "students": student_rows,
        "guardians": guardian_rows, "guardian_students": link_rows,
        "notification_devices": device_rows, "attendance_scan_queue": scan_rows,
    }


TABLES = {t.name: t for t in (plans, institutions, students, guardians, guardian_students,
                              notification_devices, attendance_scan_queue)}


def load(conn: Connection, size: LoadSize, now: dt.datetime | None = None) -> dict[str, list[dict]]:
    """Build the rows of `size` and insert them in the caller's transaction; returns them."""
    rows = build_rows(conn, size, now or utcnow())
    for name, batch in rows.items():
        _insert(conn, TABLES[name], batch, lambda _n: None)
    return rows


def run(ctx: RunContext, size: LoadSize) -> JobResult:
    result = JobResult(ctx.tool, ctx.dry_run)
    started = time.perf_counter()
    with ctx.db.begin(write=False) as conn:
        rows = build_rows(conn, size, utcnow())
    result.timings["build"] = time.perf_counter() - started
    result.section("Rows to insert", [{"table": name, "rows": len(batch)}
                                      for name, batch in rows.items()])
    if ctx.dry_run:
        result.notes.append("--execute would insert these rows (seed %d)" % size.seed)
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
