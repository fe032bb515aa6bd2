"""Deactivate notification device tokens not seen for more than `stale_device_days`.

Rules (docs/tools/cleanup_stale_devices.md):
- Stale: active, and `last_seen_at` strictly before now minus the setting's days; a device never
  seen (`last_seen_at` null) is judged by `created_at` the same way. A device exactly at the
  cut-off stays active.
- At most LIMIT devices a run, stalest first (never-seen devices, then oldest `last_seen_at`).
- Deactivation sets `is_active = 0`, `deactivated_at = now` and a reason naming the rule; the row
  is kept (push delivery rows point at it).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update

from ..result import JobResult, dry_run_reason, limit_reached
from ..runtime import RunContext
from ..schema import notification_devices as devices
from ..sqlutil import render_sql
from ..timeutil import utcnow

CHUNK = 1000  # devices per transaction
SAMPLE = 10


def stale(cutoff: dt.datetime) -> ColumnElement:
    return and_(
        devices.c.is_active == True,  # noqa: E712
        or_(devices.c.last_seen_at < cutoff,
            and_(devices.c.last_seen_at.is_(None), devices.c.created_at < cutoff)),
    )


def reason(days: int) -> ColumnElement:
    return case(
        (devices.c.last_seen_at.is_(None), f"stale: never seen, created more than {days} days ago"),
        else_=f"stale: not seen for more than {days} days",
    )


def _stalest_first(cutoff: dt.datetime, limit: int):
    return (select(devices.c.id).where(stale(cutoff))
            .order_by(devices.c.last_seen_at, devices.c.id).limit(limit))


def run(ctx: RunContext, limit: int = 1000, now: dt.datetime | None = None) -> JobResult:
    result = JobResult(ctx.tool, ctx.dry_run)
    now = now or utcnow()
    days = ctx.settings.stale_device_days
    cutoff = now - dt.timedelta(days=days)
    with ctx.db.begin(write=False) as conn:
        total = conn.execute(select(func.count()).where(stale(cutoff))).scalar_one()
        sample = conn.execute(
            select(devices.c.id, devices.c.guardian_id, devices.c.platform,
                   devices.c.last_seen_at, devices.c.created_at)
            .where(stale(cutoff)).order_by(devices.c.last_seen_at, devices.c.id).limit(SAMPLE)
        ).mappings().all()
    result.counts["stale"] = total
    result.counts["sample"] = len(sample)
    result.counts["limit"] = limit
    result.notes.append(
        f"stale: active and last seen (or, never seen, created) before {cutoff} "
        f"(stale_device_days={days}, {ctx.settings.source('stale_device_days')})")
    title = "Stalest devices" if ctx.dry_run else "Stalest devices at the start"
    result.section(title, [
        {"id": r["id"], "guardian_id": r["guardian_id"], "platform": r["platform"],
         "last_seen_at": r["last_seen_at"], "created_at": r["created_at"],
         "judged_by": "last_seen_at" if r["last_seen_at"] else "created_at (never seen)"}
        for r in sample
    ], columns=["id", "guardian_id", "platform", "last_seen_at", "created_at", "judged_by"])
    if ctx.dry_run:
        result.notes.append(f"--execute would deactivate {min(total, limit)} of {total} stale "
                            f"devices (LIMIT {limit})")
        statement = (update(devices).where(devices.c.id.op("IN")(_placeholder()), stale(cutoff))
                     .values(is_active=False, deactivated_at=now, deactivation_reason=reason(days)))
        result.statements.append(render_sql(statement, ctx.db.engine.dialect) + ";")
        result.stop_reason = dry_run_reason(max(0, total - limit))
        return result

    done = 0
    with ctx.progress("deactivating stale devices", min(total, limit)) as advance:
        while done < limit:
            stop = ctx.why_stop()
            if stop:
                result.stop_reason = stop
                break
            take = min(CHUNK, limit - done)

            def deactivate(conn):
                ids = list(conn.execute(_stalest_first(cutoff, take).with_for_update()).scalars())
                if not ids:
                    return 0
                return conn.execute(
                    update(devices).where(devices.c.id.in_(ids), stale(cutoff))
                    .values(is_active=False, deactivated_at=now, deactivation_reason=reason(days))
                ).rowcount

            changed = ctx.db.run(deactivate, what="deactivate devices")
            done += changed
            advance(changed)
            if changed < take:
                break
    result.counts["deactivated"] = done
    if done < total and done >= limit:
        result.stop_reason = limit_reached(total - done)
    return result


def _placeholder():
    from sqlalchemy import literal_column

    return literal_column("(:stalest_ids)")
