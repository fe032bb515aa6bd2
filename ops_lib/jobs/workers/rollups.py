"""Stage 4: per-class attendance roll-ups for every (institution, date) touched since the last one.

present and late count the day's records of the class's active students; enrolled counts the class's
active students now (the roster of today: the toolkit keeps no enrolment history); absent is
enrolled - present - late. The (institution, date) rows are rewritten whole, so a class that
no longer exists loses its row.
"""

from __future__ import annotations

from typing import Sequence

from sqlalchemy import Connection, and_, case, delete, func, select, true, tuple_

from ...queue import QUEUES
from ...runtime import RunContext
from ...schema import attendance_records, attendance_rollup_queue, attendance_rollups, students
from ...timeutil import utcnow
from .base import LockedBatchStage, StageStats

r = attendance_records
s = students


class RollupStage(LockedBatchStage):
    name = "rollups"
    queue = QUEUES["rollups"]
    batch_size = 200
    waits_for = ("scans",)

    def work_locked(self, conn: Connection, ctx: RunContext, keys: Sequence[tuple],
                    batch: StageStats) -> None:
        now = utcnow()
        rows = rollup_rows(conn, keys)
        conn.execute(delete(attendance_rollups).where(tuple_(
            attendance_rollups.c.institution_id, attendance_rollups.c.attendance_date
        ).in_(keys)))
        if rows:
            conn.execute(attendance_rollups.insert(), [dict(row, updated_at=now) for row in rows])
        conn.execute(delete(attendance_rollup_queue).where(self.queue.key_in(keys)))
        batch.done += len(keys)
        batch.add("class_rows", len(rows))


def rollup_rows(conn: Connection, pairs: Sequence[tuple]) -> list[dict]:
    """The roll-up rows of these (institution, date) pairs: two set-based queries in all."""
    institution_ids = sorted({i for i, _d in pairs})
    dates = sorted({d for _i, d in pairs})
    enrolled = {
        (row.institution_id, row.class_name): row.enrolled
        for row in conn.execute(
            select(s.c.institution_id, s.c.class_name, func.count().label("enrolled"))
            .where(s.c.institution_id.in_(institution_ids), s.c.is_active == true())
            .group_by(s.c.institution_id, s.c.class_name))
    }
    counts = {
        (row.institution_id, row.attendance_date, row.class_name): (row.present, row.late)
        for row in conn.execute(
            select(r.c.institution_id, r.c.attendance_date, s.c.class_name,
                   func.sum(case((r.c.status == "present", 1), else_=0)).label("present"),
                   func.sum(case((r.c.status == "late", 1), else_=0)).label("late"))
            .select_from(r.join(s, and_(s.c.id == r.c.student_id, s.c.is_active == true())))
            .where(r.c.institution_id.in_(institution_ids), r.c.attendance_date.in_(dates))
            .group_by(r.c.institution_id, r.c.attendance_date, s.c.class_name))
    }
    rows = []
    for institution_id, day in sorted(pairs):
        classes = {c for (i, c) in enrolled if i == institution_id}
        for class_name in sorted(classes):
            present, late = counts.get((institution_id, day, class_name), (0, 0))
            total = enrolled[(institution_id, class_name)]
            rows.append({
                "institution_id": institution_id, "attendance_date": day,
                "class_name": class_name, "present_count": int(present), "late_count": int(late),
                "absent_count": max(0, total - int(present) - int(late)),
                "enrolled_count": total,
            })
    return rows
