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

from sqlalchemy import Connection, delete, func, select, true

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
from ...sqlutil import in_keys, upsert
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
    gs, s, i = guardian_students.c, students.c, institutions.c
    # The guardians' keys as ranges (a batch is mostly one run of ids), not one bound parameter
    # each; inactive children left out by the query (they are in no payload).
    children = conn.execute(
        select(gs.guardian_id, s.id, s.name, s.class_name, s.institution_id, i.name, i.timezone)
        .select_from(guardian_students.join(students, s.id == gs.student_id)
                     .join(institutions, i.id == s.institution_id))
        .where(in_keys(gs.guardian_id, guardian_ids), s.is_active == true())
        .order_by(gs.guardian_id, s.id)
        # From the guardians, always: on a freshly loaded table MariaDB's stale statistics made
        # it scan every student of every institution for each batch instead.
        .prefix_with("STRAIGHT_JOIN", dialect="mysql")
    ).all()
    # Per time zone, not per child: an institution's children share theirs.
    local_days = {zone: _local_today(zone, now) for zone in {row[6] for row in children}}
    records = {}
    if children:
        # Each child's record of its local day: the children's ids by ranges or a list, and the
        # few local days, rather than a (student, day) pair of bound parameters per child. A
        # record of another zone's day is read too, and passed over below.
        records = {
            (row[0], row[1]): row
            for row in conn.execute(
                select(ar.student_id, ar.attendance_date, ar.status, ar.first_scan_at,
                       ar.last_scan_at, ar.scan_count)
                .where(in_keys(ar.student_id, [row[1] for row in children]),
                       ar.attendance_date.in_(sorted(set(local_days.values())))))
        }
    unread = dict(conn.execute(
        select(notifications.c.guardian_id, func.count())
        .where(in_keys(notifications.c.guardian_id, guardian_ids),
               notifications.c.read_at.is_(None))
        .group_by(notifications.c.guardian_id)).all())
    generated_at = _iso(now)
    payloads = {g: {"guardian_id": g, "generated_at": generated_at,
                    "unread_notifications": int(unread.get(g, 0)), "children": []}
                for g in guardian_ids}
    for guardian_id, student_id, name, class_name, institution_id, institution_name, zone in (
            children):
        day = local_days[zone]
        record = records.get((student_id, day))
        if record is None:
            today = {"date": day.isoformat(), "status": "absent", "first_scan_at": None,
                     "last_scan_at": None, "scan_count": 0}
        else:
            today = {"date": day.isoformat(), "status": record[2],
                     "first_scan_at": _iso(record[3]), "last_scan_at": _iso(record[4]),
                     "scan_count": record[5]}
        payloads[guardian_id]["children"].append({
            "student_id": student_id, "name": name, "class_name": class_name,
            "institution_id": institution_id, "institution_name": institution_name,
            "today": today,
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
