"""Per-queue figures, each from a query one of the queue's indexes covers.

The queue registry's invariant makes them cheap: a claimed row has `claimed_by` and
`lease_expires_at` both set (a released one neither), and a delayed row (`available_at` in the
future) is never claimed. So the rows due now are all waiting rows minus the delayed, the claimed
and the expired ones: two covering range scans of the `(status, ...)` and `(status, available_at,
...)` indexes, and two ranges of the `(lease_expires_at)` index, which holds only the leased rows
(their status read on the row: a few hundred lookups, not a scan of the queue). Counts stop at `cap`
(MariaDB: `LIMIT ROWS EXAMINED`; elsewhere, and past the cap, a COUNT over a LIMITed subquery): a
figure beyond it is marked capped and shown as "1,000,000+".

The background worker's dry run reads the same figures (one implementation).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, func, literal, select

from ...queue import Queue
from .model import QueueHealth

CAP = 1_000_000


def _count(conn: Connection, queue: Queue, *where: Any, cap: int | None) -> tuple[int, bool]:
    """(rows matching `where`, up to `cap` (None: all); whether there were more)."""
    table = queue.table
    if cap is None:
        exact = conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
        return exact, False
    if getattr(conn.dialect, "is_mariadb", False):
        # MariaDB stops a statement once it examined `cap + 1` rows, and then returns no row:
        # under the cap that is an exact count at a plain COUNT's speed (no derived table to
        # fill). Over it, the derived count below says how many of the examined rows matched.
        probe = conn.execute(select(func.count()).select_from(table).where(*where)
                             .suffix_with(f"LIMIT ROWS EXAMINED {cap + 1}")).first()
        if probe is not None:
            return min(probe[0], cap), probe[0] > cap
    limited = select(literal(1).label("one")).select_from(table).where(*where).limit(cap + 1)
    found = conn.execute(select(func.count()).select_from(limited.subquery())).scalar_one()
    return min(found, cap), found > cap


def _oldest(conn: Connection, column: Any, *where: Any) -> dt.datetime | None:
    return conn.execute(select(column).where(*where).order_by(column).limit(1)).scalar()


class _Counter:
    """Capped counts of one queue, remembering which figures reached the cap."""

    def __init__(self, conn: Connection, queue: Queue, cap: int | None):
        self.conn, self.queue, self.cap = conn, queue, cap
        self.capped: set[str] = set()

    def __call__(self, figure: str, *where: Any) -> int:
        number, more = _count(self.conn, self.queue, *where, cap=self.cap)
        if more:
            self.capped.add(figure)
        return number

    def claims(self, now: dt.datetime) -> dict[str, int]:
        """Waiting rows: due now, delayed, claimed with a live lease, claimed but expired."""
        c, waiting = self.queue.table.c, self.queue.is_waiting()
        total = self("waiting", waiting)  # (status, id), or any index of a marker table
        figures = {
            "delayed": self("delayed", waiting, c.available_at > now),  # the due index
            "claimed": self("claimed", waiting, c.lease_expires_at >= now),  # the lease index
            "expired": self("expired", waiting, c.lease_expires_at < now),
        }
        figures["due"] = max(0, total - sum(figures.values()))
        if "waiting" in self.capped:
            self.capped.add("due")  # at least this many
        self.capped.discard("waiting")
        return figures


def due_count(conn: Connection, queue: Queue, now: dt.datetime, cap: int | None = CAP) -> int:
    """Rows a run could claim now (waiting, available, not claimed)."""
    return _Counter(conn, queue, cap).claims(now)["due"]


def queue_figures(conn: Connection, queue: Queue, now: dt.datetime,
                  cap: int | None = CAP) -> QueueHealth:
    """Every figure of one queue as of `now` (naive UTC); None where the queue cannot tell."""
    c = queue.table.c
    waiting = queue.is_waiting()
    count = _Counter(conn, queue, cap)
    figures = QueueHealth(queue.name, queue.table.name, queue.has_status, **count.claims(now))

    if queue.has_status:
        status = c[queue.status_column]
        figures.dead = count("dead", status == queue.failed) if queue.failed else None
        if queue.failed and queue.finished_at:
            figures.failed_last_hour = count(
                "failed_last_hour", status == queue.failed,
                c[queue.finished_at] >= now - dt.timedelta(hours=1), c[queue.finished_at] <= now)
        else:
            figures.failed_last_hour = None
        if queue.finished_at and queue.done:
            figures.done_last_15_minutes = count(
                "done_last_15_minutes", status.in_(queue.done),
                c[queue.finished_at] >= now - dt.timedelta(minutes=15),
                c[queue.finished_at] <= now)
        else:
            figures.done_last_15_minutes = None
    else:
        # A marker row is deleted when done: nothing finished or dead-lettered is left to count.
        figures.dead = figures.failed_last_hour = figures.done_last_15_minutes = None

    # Latency: the oldest due row by when it became available (a delayed retry's available_at,
    # not its created_at), each half an ORDER BY ... LIMIT 1 along the due index.
    unclaimed = c.claimed_by.is_(None)
    oldest = [t for t in (
        _oldest(conn, c.available_at, waiting, c.available_at <= now, unclaimed),
        _oldest(conn, c[queue.became_available], waiting, c.available_at.is_(None), unclaimed),
    ) if t is not None]
    figures.latency_seconds = max(0.0, (now - min(oldest)).total_seconds()) if oldest else None
    figures.capped = count.capped
    return figures
