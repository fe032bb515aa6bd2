"""Stage 3: push deliveries go out through Firebase (or the outbox), in batches of at most 500.

Outcomes (docs/workers.md): sent rows keep the provider's message id; a dead token
(UNREGISTERED, SENDER_ID_MISMATCH, an invalid token) deactivates the device and fails the delivery;
quota, unavailable and internal errors retry on a later run with capped backoff and jitter, until
`worker_max_attempts`, then the row is dead-lettered with its last error; an authentication error
stops the stage and gives the batch back. A delivery whose device went inactive, or whose
notification is gone, is `cancelled` without being sent.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from typing import Any, Sequence

from sqlalchemy import (
    Connection,
    String,
    Text,
    cast,
    func,
    literal,
    select,
    true,
    type_coerce,
    update,
)

from ... import push as pushing
from ...queue import QUEUES, backoff_seconds, extend_lease, release, still_owned
from ...runtime import RunContext
from ...schema import notification_devices, notifications, push_deliveries
from ...sqlutil import in_keys, update_each
from ...timeutil import utcnow
from .base import Stage, StagePlan, StageStats, warn_once

log = logging.getLogger(__name__)
p = push_deliveries
dev = notification_devices
n = notifications


class PushStage(Stage):
    name = "push"
    queue = QUEUES["deliveries"]

    def __init__(self) -> None:
        self._pusher = None

    def batch_limit(self, ctx: RunContext) -> int:
        # Claimed four send_each calls at a time: fewer claim statements per row; the rows are
        # sent in calls of at most push_batch_size (<= 500), the lease renewed before each.
        return 4 * min(pushing.MAX_CALL_SIZE, ctx.settings.push_batch_size)

    def pusher(self, ctx: RunContext):
        if self._pusher is None:
            self._pusher = pushing.make_pusher(ctx.settings)
            if self._pusher.uses_outbox:
                warn_once(ctx, "push outbox",
                          "push: no Firebase credentials configured; messages go to the %s",
                          self._pusher.describe())
        return self._pusher

    def close(self) -> None:
        if self._pusher is not None and hasattr(self._pusher, "close"):
            self._pusher.close()

    def process(self, ctx: RunContext, keys: Sequence[int], stats: StageStats,
                leased_at: dt.datetime) -> None:
        # Only the rows this run still owns: this read is the first call's ownership check.
        rows = ctx.db.run(lambda conn: conn.execute(
            select(p.c.id, dev.c.token, dev.c.is_active, n.c.id.label("notification"),
                   n.c.title, n.c.body,
                   # The text, parsed below once per notification (its devices share it).
                   type_coerce(n.c.data, Text).label("data"))
            .select_from(p.join(dev, dev.c.id == p.c.device_id)
                         .outerjoin(n, n.c.id == p.c.notification_id))
            .where(self.queue.owned_by(ctx.run_id, keys)).order_by(p.c.id)
        ).all(), write=False, what="push read")
        stats.lost += len(keys) - len(rows)
        cancelled: dict[int, str] = {}
        messages: list[pushing.PushMessage] = []
        # Parsed once per text: a notification's devices share it, and so do the notifications
        # of one arrival to each of the student's guardians.
        data: dict[Any, dict] = {}
        for delivery_id, token, is_active, notification, title, body, text in rows:
            if not is_active:
                cancelled[delivery_id] = "DEVICE_INACTIVE"
            elif notification is None:
                cancelled[delivery_id] = "NOTIFICATION_GONE"
            else:
                parsed = data.get(text)
                if parsed is None:
                    parsed = data[text] = _data(text)
                messages.append(pushing.PushMessage(delivery_id, token, title, body or "", parsed))
        write_back = functools.partial(self._write_back, ctx=ctx)
        if cancelled:
            stats.merge(ctx.db.run(lambda conn: write_back(conn, cancelled=cancelled),
                                   what="push write-back"))
        pusher = self.pusher(ctx) if messages else None
        lease_seconds = ctx.settings.worker_lease_seconds
        for start in range(0, len(messages), pusher.batch_size if pusher else 1):
            rest = [m.delivery_id for m in messages[start:]]
            if start and (ctx.why_stop() or stats.stopped):
                stats.released += ctx.db.run(
                    lambda conn: release(conn, self.queue, ctx.run_id, rest), what="release")
                break
            batch = messages[start:start + pusher.batch_size]
            now = utcnow()
            if now - leased_at > dt.timedelta(seconds=lease_seconds / 4):
                # A call may take minutes (timeouts, the SDK's retries): once a quarter of the
                # lease is spent, every row still waiting gets a full lease again.
                held = extend_lease(ctx.db, self.queue, ctx.run_id, rest, lease_seconds, now)
                leased_at = now
            elif start:
                # Three quarters of the lease are left, more than one call can take (half the
                # lease: pushing.call_limits): only the check that no run took this call's
                # rows over meanwhile (one whose clock ran ahead, an operator's reset).
                held = ctx.db.run(lambda conn: still_owned(
                    conn, self.queue, ctx.run_id, [m.delivery_id for m in batch]),
                    write=False, what="push ownership")
            else:
                held = None  # the first call's rows were read just now as this run's
            if held is None or held.lost == 0:
                call = batch
            else:
                mine = set(held.keys)
                call = [m for m in batch if m.delivery_id in mine]
                stats.lost += len(batch) - len(call)
            outcomes = pusher.send(call) if call else []
            stats.merge(ctx.db.run(lambda conn: write_back(conn, outcomes=outcomes),
                                   what="push write-back"))
        if stats.stopped:
            # Said in the log too: cron mails stderr, and the stage's later batches wait for it.
            log.error("push stage stopped: %s (%d deliveries given back unsent)",
                      stats.stopped.rstrip("."), stats.released)

    def _write_back(self, conn: Connection, *, ctx: RunContext, outcomes=(),
                    cancelled=None) -> StageStats:
        """Record a call's outcomes (or the cancelled rows) on the rows still this run's: every
        UPDATE here matches only those (`claimed_by`, the ownership check), and the rows none
        matched, which another run took over meanwhile, are counted lost, whatever this run
        did with them."""
        batch = StageStats()
        now = utcnow()
        cancelled = cancelled or {}
        s = ctx.settings
        owner = p.c.claimed_by == ctx.run_id
        free = {"claimed_by": None, "lease_expires_at": None}
        by_action: dict[str, list[pushing.PushOutcome]] = {}
        for outcome in outcomes:
            by_action.setdefault(outcome.action, []).append(outcome)
        matched = 0

        sent = by_action.get(pushing.SENT, [])
        if sent:
            sent_values = dict(**self.queue.finished_values("sent", now), sent_at=now,
                               error_code=None, error=None, **free)
            prefix = pushing.message_id_prefix(sent)
            if prefix is not None:
                # One plain UPDATE: no temporary table of ids, no join.
                done = conn.execute(
                    update(p).where(in_keys(p.c.id, [o.delivery_id for o in sent]), owner)
                    .values(**sent_values,
                            provider_message_id=literal(prefix) + cast(p.c.id, String))
                ).rowcount
            else:
                done = update_each(conn, p, p.c.id,
                                   {o.delivery_id: {"provider_message_id": o.message_id}
                                    for o in sent}, common=sent_values, where=[owner])
            batch.done += done
            matched += done

        failing = [o.delivery_id for o in outcomes if o.action != pushing.SENT]
        # Read for the outcomes that are not a send only (their attempts, their device): the
        # rows almost all go out, and the stage's read of every row left these columns out.
        read = {r.id: r for r in conn.execute(
            select(p.c.id, p.c.attempts, p.c.device_id).where(in_keys(p.c.id, failing)))
        } if failing else {}

        # A dead token is dead whoever owns the delivery now: its device is deactivated anyway.
        dead_tokens = [o for o in by_action.get(pushing.DEACTIVATE, []) if o.delivery_id in read]
        if dead_tokens:
            update_each(conn, dev, dev.c.id,
                        {read[o.delivery_id].device_id: {
                            "deactivation_reason": f"fcm: {o.error_code}"}
                         for o in dead_tokens},
                        common=dict(is_active=False, deactivated_at=now),
                        where=[dev.c.is_active == true()])
            batch.add("devices_deactivated",
                      len({read[o.delivery_id].device_id for o in dead_tokens}))

        retry_later = []
        give_up = by_action.get(pushing.DEACTIVATE, []) + by_action.get(pushing.FAILED, [])
        for outcome in by_action.get(pushing.RETRY, []):
            if outcome.delivery_id not in read:
                continue  # the row is gone (pruned after another run finished it): lost
            if read[outcome.delivery_id].attempts >= s.worker_max_attempts:
                give_up.append(outcome)
            else:
                retry_later.append(outcome)
        failed = update_each(
            conn, p, p.c.id, {o.delivery_id: {"error_code": o.error_code, "error": o.error}
                              for o in give_up},
            common=dict(**self.queue.finished_values("failed", now), **free), where=[owner])
        batch.failed += failed
        retried = update_each(conn, p, p.c.id, {
            o.delivery_id: {
                "error_code": o.error_code, "error": o.error,
                "available_at": now + dt.timedelta(seconds=backoff_seconds(
                    read[o.delivery_id].attempts, s.worker_backoff_seconds,
                    s.worker_backoff_cap_seconds)),
            } for o in retry_later}, common=free, where=[owner])
        batch.retried += retried
        matched += failed + retried

        if cancelled:
            gone = update_each(conn, p, p.c.id,
                               {i: {"error_code": code} for i, code in cancelled.items()},
                               common=dict(**self.queue.finished_values("cancelled", now),
                                           **free),
                               where=[owner])
            batch.add("cancelled", gone)
            matched += gone

        stopped = by_action.get(pushing.STOP, [])
        if stopped:
            batch.released += release(conn, self.queue, ctx.run_id,
                                      [o.delivery_id for o in stopped])
            matched += batch.released
            batch.stopped = (f"Firebase refused our credentials ({stopped[0].error_code}): "
                             f"{stopped[0].error}")
        batch.lost += len(outcomes) + len(cancelled) - matched
        return batch

    def plan(self, conn: Connection, ctx: RunContext, limit: int) -> StagePlan:
        due = select(p.c.device_id).where(self.queue.ready(utcnow())).order_by(p.c.id)
        due = due.limit(limit).subquery()
        inactive = conn.execute(
            select(func.count()).select_from(due.join(dev, dev.c.id == due.c.device_id))
            .where(dev.c.is_active != true())
        ).scalar_one()
        target = ("outbox (no Firebase credentials configured)"
                  if not ctx.settings.firebase_credentials else "Firebase")
        return StagePlan({"would_cancel": inactive}, note=f"push: would send through {target}")


def _data(text: str | bytes | None) -> dict:
    """The notification's data object from its JSON text; an object another client wrote as a
    JSON string is parsed from that string, and anything else that is not an object is {}."""
    value: Any = text
    for _ in range(2):
        if not isinstance(value, (str, bytes)):
            break
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}
