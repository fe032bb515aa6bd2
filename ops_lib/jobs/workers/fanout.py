"""Stage 2: each notification gets one push delivery per active device of its guardian.

The unique (notification_id, device_id) key makes a second delivery for the same device
impossible, so a fan-out repeated after a crash adds nothing. A guardian with no active device gets
no delivery; the notification is still marked fanned out.
"""

from __future__ import annotations

from typing import Sequence

from sqlalchemy import Connection, func, literal, select, true, update

from ...queue import QUEUES
from ...runtime import RunContext
from ...schema import notification_devices, notifications, push_deliveries
from ...sqlutil import insert_ignore_from_select
from ...timeutil import utcnow
from .base import LockedBatchStage, StagePlan, StageStats, mark_snapshots

n = notifications
d = notification_devices


def fan_out(conn: Connection, now, which) -> None:
    """One pending delivery per active device of the guardian of each notification `which`
    picks."""
    devices = (
        select(n.c.id, d.c.id, literal("pending"), literal(0), literal(now))
        .select_from(n.join(d, d.c.guardian_id == n.c.guardian_id))
        .where(which, d.c.is_active == true())
        # In the order written (the chosen notifications, then their devices): with the tables'
        # statistics stale while a load grows them, MariaDB began an arrival batch's join from
        # all notifications instead, and held its batch's locks for a minute while it ran.
        .prefix_with("STRAIGHT_JOIN", dialect="mysql")
    )
    insert_ignore_from_select(
        conn, push_deliveries,
        ["notification_id", "device_id", "status", "attempts", "created_at"],
        devices, ["notification_id", "device_id"])


class FanoutStage(LockedBatchStage):
    name = "fanout"
    queue = QUEUES["fanout"]
    batch_size = 2000

    def work_locked(self, conn: Connection, ctx: RunContext, keys: Sequence[int],
                    batch: StageStats) -> None:
        now = utcnow()
        which = self.queue.key_in(keys)
        fan_out(conn, now, which=which)
        deliveries = conn.execute(select(func.count()).select_from(push_deliveries).where(
            push_deliveries.c.notification_id.in_(select(n.c.id).where(which)))).scalar_one()
        conn.execute(update(n).where(which).values(**self.queue.finished_values("done", now)))
        mark_snapshots(conn, conn.execute(select(n.c.guardian_id).where(which)).scalars(), now)
        batch.done += len(keys)
        batch.add("deliveries", deliveries)

    def plan(self, conn: Connection, ctx: RunContext, limit: int) -> StagePlan:
        ids = select(n.c.id).where(self.queue.ready(utcnow())).order_by(n.c.id).limit(limit)
        ids = ids.subquery()
        deliveries = conn.execute(
            select(func.count()).select_from(
                n.join(d, d.c.guardian_id == n.c.guardian_id)
                .join(ids, ids.c.id == n.c.id))
            .where(d.c.is_active == true())
        ).scalar_one()
        return StagePlan({"deliveries_to_create": deliveries})
