"""What every worker stage shares: its queue, its figures, and marking downstream work."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from sqlalchemy import Connection, DateTime, Select, case, literal, null, select

from ...queue import Queue
from ...runtime import RunContext
from ...schema import attendance_rollup_queue, guardian_snapshot_queue, guardian_students
from ...sqlutil import upsert, upsert_from_select


@dataclass
class StageStats:
    claimed: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    lost: int = 0  # claimed rows another run took over after our lease ran out
    seconds: float = 0.0
    details: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None  # why this stage stopped early (auth error, ...)

    def add(self, name: str, amount: int = 1) -> None:
        if amount:
            self.details[name] = self.details.get(name, 0) + amount

    def merge(self, other: "StageStats") -> None:
        """Add the figures of one committed transaction (a retried one counts once)."""
        for name in ("claimed", "done", "failed", "retried", "released", "lost"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, amount in other.details.items():
            self.add(name, amount)
        self.stopped = self.stopped or other.stopped


@dataclass
class StagePlan:
    """What a dry run says --execute would do with a stage's next rows."""

    figures: dict[str, int] = field(default_factory=dict)  # the Stages table's details column
    samples: list[dict[str, Any]] = field(default_factory=list)  # rows that would fail, and why
    note: str | None = None  # one line, e.g. where the output would go


class Stage:
    """A queue-draining step of the background worker."""

    name: str
    queue: Queue
    batch_size: int = 500
    # Stages whose output this one summarises: within a run it waits until they are idle, so a
    # roll-up is computed once after the scans rather than again after every scan batch.
    waits_for: tuple[str, ...] = ()

    def batch_limit(self, ctx: RunContext) -> int:
        return self.batch_size

    def process(self, ctx: RunContext, keys: Sequence[Any], stats: StageStats) -> None:
        raise NotImplementedError

    def plan(self, conn: Connection, ctx: RunContext, limit: int) -> StagePlan:
        """Read-only: what --execute would do with the next `limit` rows."""
        return StagePlan()

    def close(self) -> None:
        """Release what the stage opened (SMTP connection, Firebase app)."""


def mark_rollups(conn: Connection, pairs: Iterable[tuple[int, dt.date]], now: dt.datetime) -> None:
    """(institution, date) roll-ups are stale. Re-marking clears a claim so the row runs again."""
    rows = [{"institution_id": i, "attendance_date": d, "marked_at": now} for i, d in set(pairs)]
    _mark(conn, attendance_rollup_queue, rows, ["institution_id", "attendance_date"])


def mark_snapshots(conn: Connection, guardian_ids: Iterable[int], now: dt.datetime) -> None:
    rows = [{"guardian_id": g, "marked_at": now} for g in set(guardian_ids)]
    _mark(conn, guardian_snapshot_queue, rows, ["guardian_id"])


def mark_snapshots_of_students(conn: Connection, student_ids: Select, now: dt.datetime) -> None:
    """The snapshots of the guardians of these students (a query of their ids) are stale: one
    INSERT ... SELECT, so the guardian ids never travel to the worker and back."""
    gs = guardian_students.c
    query = (select(gs.guardian_id, literal(now, DateTime))
             .where(gs.student_id.in_(student_ids))
             .group_by(gs.guardian_id)
             .order_by(gs.guardian_id))  # one lock order for concurrent workers, as in _mark
    upsert_from_select(conn, guardian_snapshot_queue, ["guardian_id", "marked_at"], query,
                       ["guardian_id"], _remark)


def _mark(conn: Connection, table, rows: list[dict], keys: list[str]) -> None:
    # Sorted, so that concurrent workers take the marker rows' locks in one order.
    rows.sort(key=lambda r: tuple(r[k] for k in keys))
    upsert(conn, table, rows, keys, _remark)


def _remark(table, new) -> dict:
    """A marker waiting unclaimed stays as it is (no row write: the values do not change); one a
    run is computing loses its claim, so it runs again. MySQL applies these left to right."""
    return {"marked_at": case((table.c.claimed_by.is_(None), table.c.marked_at),
                              else_=new.marked_at),
            # null(), not None: PyMySQL's executemany cannot take parameters after VALUES (...).
            "claimed_by": null(), "lease_expires_at": null()}
