"""Stage 5: the guardian bootstrap snapshot, what the mobile app reads on start-up in one go.

payload = {guardian_id, generated_at, unread_notifications, children: [{student_id, name,
class_name, institution_id, institution_name, today: {date, status, first_scan_at, last_scan_at,
scan_count}}]}, where "today" is the child's institution-local date and status is present, late,
or absent (no record yet).
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, delete, func, select, tuple_

from ...queue import QUEUES
from ...runtime import RunContext
from ...schema import (
    attendance_records,
    guardian_snapshot_queue,
    guardian_snapshots,
    guardian_students,
    institutions,
    notifications,
    students,
)
from ...sqlutil import upsert
from ...timeutil import utcnow
from .base import LockedBatchStage, StageStats

gsq = guardian_snapshot_queue
ar = attendance_records.c


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def _local_today(zone_name: str, now: dt.datetime) -> dt.date:
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = dt.timezone.utc
    return now.replace(tzinfo=dt.timezone.utc).astimezone(zone).date()


def build_payloads(conn: Connection, guardian_ids: Sequence[int], now: dt.datetime) -> dict:
    """guardian id -> snapshot payload, from three set-based queries."""
    children = conn.execute(
        select(guardian_students.c.guardian_id, students.c.id, students.c.name,
               students.c.class_name, students.c.institution_id, students.c.is_active,
               institutions.c.name.label("institution_name"), institutions.c.timezone)
        .select_from(guardian_students.join(students,
                                            students.c.id == guardian_students.c.student_id)
                     .join(institutions, institutions.c.id == students.c.institution_id))
        .where(guardian_students.c.guardian_id.in_(guardian_ids))
        .order_by(guardian_students.c.guardian_id, students.c.id)
        # From the guardians, always: on a freshly loaded table MariaDB's stale statistics made
        # it scan every student of every institution for each batch instead.
        .prefix_with("STRAIGHT_JOIN", dialect="mysql")
    ).all()
    # Per time zone, not per child: an institution's children share theirs.
    local_days = {zone: _local_today(zone, now) for zone in {row.timezone for row in children}}
    today = {row.id: local_days[row.timezone] for row in children}
    wanted = sorted({(sid, day) for sid, day in today.items()})
    records = {}
    if wanted:
        records = {
            (row.student_id, row.attendance_date): row
            for row in conn.execute(
                select(ar.student_id, ar.attendance_date, ar.status, ar.first_scan_at,
                       ar.last_scan_at, ar.scan_count)
                .where(tuple_(ar.student_id, ar.attendance_date).in_(wanted)))
        }
    unread = dict(conn.execute(
        select(notifications.c.guardian_id, func.count())
        .where(notifications.c.guardian_id.in_(guardian_ids), notifications.c.read_at.is_(None))
        .group_by(notifications.c.guardian_id)).all())
    generated_at = _iso(now)
    payloads = {g: {"guardian_id": g, "generated_at": generated_at,
                    "unread_notifications": int(unread.get(g, 0)), "children": []}
                for g in guardian_ids}
    for row in children:
        if not row.is_active:
            continue
        day = today[row.id]
        record = records.get((row.id, day))
        payloads[row.guardian_id]["children"].append({
            "student_id": row.id, "name": row.name, "class_name": row.class_name,
            "institution_id": row.institution_id, "institution_name": row.institution_name,
            "today": {
                "date": day.isoformat(),
                "status": record.status if record is not None else "absent",
                "first_scan_at": _iso(record.first_scan_at) if record is not None else None,
                "last_scan_at": _iso(record.last_scan_at) if record is not None else None,
                "scan_count": record.scan_count if record is not None else 0,
            },
        })
    return payloads


class SnapshotStage(LockedBatchStage):
    name = "snapshots"
    queue = QUEUES["snapshots"]
    batch_size = 500
    waits_for = ("scans", "fanout")

    def work_locked(self, conn: Connection, ctx: RunContext, keys: Sequence[int],
                    batch: StageStats) -> None:
        now = utcnow()
        payloads = build_payloads(conn, keys, now)
        upsert(conn, guardian_snapshots,
               [{"guardian_id": g, "payload": payloads[g], "generated_at": now} for g in keys],
               ["guardian_id"],
               lambda t, new: {"payload": new.payload, "generated_at": new.generated_at})
        conn.execute(delete(gsq).where(self.queue.key_in(keys)))
        batch.done += len(keys)
