"""Stage 2: each notification gets one push delivery per active device of its guardian.

The unique (notification_id, device_id) key makes a second delivery for the same device
impossible, so a fan-out repeated after a crash adds nothing. A guardian with no active device gets
no delivery; the notification is still marked fanned out.
"""

from __future__ import annotations

from typing import Sequence

from sqlalchemy import Connection, func, literal, select, true, update

from ...queue import QUEUES, still_owned
from ...runtime import RunContext
from ...schema import notification_devices, notifications, push_deliveries
from ...sqlutil import insert_ignore_from_select
from ...timeutil import utcnow
from .base import Stage, StagePlan, StageStats, mark_snapshots

n = notifications
d = notification_devices


def fan_out(conn: Connection, now, which=true(), notifications_from=n) -> None:
    """One pending delivery per active device of each chosen notification's guardian.

    The notifications are those `which` picks, or those `notifications_from` joins to.
    """
    devices = (
        select(n.c.id, d.c.id, literal("pending"), literal(0), literal(now))
        .select_from(notifications_from.join(d, d.c.guardian_id == n.c.guardian_id))
        .where(which, d.c.is_active == true())
    )
    insert_ignore_from_select(
        conn, push_deliveries,
        ["notification_id", "device_id", "status", "attempts", "created_at"],
        devices, ["notification_id", "device_id"])


class FanoutStage(Stage):
    name = "fanout"
    queue = QUEUES["fanout"]
    batch_size = 2000

    def process(self, ctx: RunContext, keys: Sequence[int], stats: StageStats) -> None:
        def work(conn: Connection) -> StageStats:
            batch = StageStats()
            now = utcnow()
            held = still_owned(conn, self.queue, ctx.run_id, keys)
            batch.lost += held.lost
            if not held.keys:
                return batch
            ids = held.keys
            fan_out(conn, now, which=n.c.id.in_(ids))
            deliveries = conn.execute(select(func.count()).select_from(push_deliveries).where(
                push_deliveries.c.notification_id.in_(ids))).scalar_one()
            conn.execute(update(n).where(n.c.id.in_(ids), n.c.claimed_by == ctx.run_id).values(
                **self.queue.finished_values("done", now), claimed_by=None,
                lease_expires_at=None))
            mark_snapshots(conn, conn.execute(select(n.c.guardian_id).where(n.c.id.in_(ids))
                                              ).scalars(), now)
            batch.done += len(ids)
            batch.add("deliveries", deliveries)
            return batch

        stats.merge(ctx.db.run(work, what="fanout"))

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
