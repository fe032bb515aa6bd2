"""Archive hot-path data: move old notifications, audit logs and payments into their `*_archive`
tables, and mark old attendance records archived (they stay where they are).

Rules (docs/archiving.md):
- A row is old when its `created_at` is strictly before now minus the area's retention days
  (attendance: `attendance_date` strictly before that day). A row exactly at the cut-off stays.
- A payment stays while its invoice is neither `paid` nor `void` (an unpaid invoice depends on it).
- `--execute` walks each table by primary key, from the lowest eligible id up to the highest
  eligible id seen at the start (rows that become eligible later wait for the next run), in
  windows of ids (`id > after AND id <= window end`): a batch reads and locks only rows of its
  own window, whatever plan the optimizer would pick for the retention condition.
- One batch is one transaction on one connection. A move copies the window's first BATCH
  eligible rows into the archive, and that copy locks them (FOR UPDATE on MySQL); it deletes the
  same rows by id range, checks copied = deleted, commits. Attendance selects its batch's ids
  (locked), marks exactly those, checks marked = selected. A killed run rolls its open batch
  back; a row the archive already holds is never copied twice, and leaves the hot table only
  when the archive's copy is identical.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Integer,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    inspect,
    literal_column,
    not_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from ..db import describe_db_error, is_duplicate_key, retry_transient
from ..replica import ReplicaLag
from ..result import DONE, JobResult, dry_run_reason
from ..runtime import RunContext
from ..schema import (
    attendance_records,
    audit_logs,
    audit_logs_archive,
    invoices,
    notifications,
    notifications_archive,
    payments,
    payments_archive,
)
from ..sqlutil import force_index, render_sql
from ..timeutil import utcnow

log = logging.getLogger("ops")

SETTLED_INVOICE = ("paid", "void")
# A window of ids grows while it finds fewer than BATCH eligible rows, up to this many batches
# wide: long stretches of young or protected rows are crossed in few cheap empty windows.
MAX_WINDOW_BATCHES = 64


@dataclass(frozen=True)
class Area:
    name: str
    hot: Table
    archive: Table | None  # None: mark in place (attendance)
    setting: str

    @property
    def moves(self) -> bool:
        return self.archive is not None

    def cutoff(self, now: dt.datetime, days: int) -> dt.datetime | dt.date:
        moment = now - dt.timedelta(days=days)
        return moment if self.moves else moment.date()

    def old(self, cutoff) -> ColumnElement:
        """Older than the retention (protection aside)."""
        if self.moves:
            return self.hot.c.created_at < cutoff
        return and_(self.hot.c.attendance_date < cutoff,
                    self.hot.c.is_archived == False)  # noqa: E712

    def protected(self) -> ColumnElement | None:
        """Old rows that must stay anyway, or None when the area has no such rule."""
        return not_(_invoice_settled()) if self.hot is payments else None

    def eligible(self, cutoff) -> ColumnElement:
        if self.hot is payments:
            return and_(self.old(cutoff), _invoice_settled())
        return self.old(cutoff)

    def copied(self, cutoff) -> ColumnElement:
        """Of a batch's id range, the rows its DELETE removes: those old by their own columns
        (the copy locked the rows it copied, so they stay old) and, where eligibility also
        reads another table (a payment's invoice, not locked, may change meanwhile), only
        those the archive holds. Any row beyond the copied ones shows in the count."""
        if self.hot is payments:
            return and_(self.old(cutoff), exists(select(literal_column("1")).where(
                payments_archive.c.id == payments.c.id)))
        return self.old(cutoff)

    @property
    def steps(self) -> tuple[str, ...]:
        """The statements of a usual batch (batch_statements), in order."""
        return ("copy", "last_copied", "delete") if self.moves else ("select", "mark")


def _invoice_settled() -> ColumnElement:
    return exists(
        select(literal_column("1")).where(
            invoices.c.id == payments.c.invoice_id, invoices.c.status.in_(SETTLED_INVOICE)
        )
    )


AREAS = [
    Area("notifications", notifications, notifications_archive, "notifications_retention_days"),
    Area("audit_logs", audit_logs, audit_logs_archive, "audit_logs_retention_days"),
    Area("payments", payments, payments_archive, "payments_retention_days"),
    Area("attendance_records", attendance_records, None, "attendance_retention_days"),
]


@dataclass
class AreaPlan:
    area: Area
    days: int
    source: str
    cutoff: Any
    eligible: int = 0
    protected: int = 0
    in_archive: int = 0
    lowest: int | None = None
    highest: int | None = None
    blocked: str | None = None

    @property
    def status(self) -> str:
        if self.blocked:
            return f"blocked: {self.blocked}"
        return "ready" if self.eligible else "nothing to do"

    def notes(self) -> str:
        area = self.area
        column = "created_at" if area.moves else "attendance_date"
        parts = [f"{column} < {self.cutoff} ({area.setting}={self.days}, {self.source})"]
        if self.protected:
            parts.append(f"{self.protected} kept: their invoice is not paid or void")
        if self.in_archive:
            parts.append(f"{self.in_archive} already in {area.archive.name}: checked, "
                         "not copied again")
        if area.moves:
            parts.append(f"moved to {area.archive.name}")
        else:
            parts.append("marked is_archived=1, kept in place")
        return "; ".join(parts)


class BatchMismatch(Exception):
    """A batch's counts disagree: the transaction is rolled back and the run stops."""


class RangeChanged(Exception):
    """A move's DELETE by range did not remove exactly the rows its copy took (a row of the
    range changed in between): rolled back, and redone by the selected ids."""


@dataclass
class Stats:
    """pt-archiver style statistics: per action, how many times and how long."""

    calls: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, action: str, seconds: float, calls: int = 1) -> None:
        self.calls[action] = self.calls.get(action, 0) + calls
        self.seconds[action] = self.seconds.get(action, 0.0) + seconds

    def timed(self, action: str):
        stats = self

        class _Timer:
            def __enter__(self):
                self.started = time.perf_counter()

            def __exit__(self, *_exc):
                stats.add(action, time.perf_counter() - self.started)

        return _Timer()


# ---------------------------------------------------------------------------------------------
# Planning (read-only)


def plan(ctx: RunContext, now: dt.datetime) -> list[AreaPlan]:
    plans = []
    with ctx.db.begin(write=False) as conn:
        present = set(inspect(conn).get_table_names())
        for area in AREAS:
            days = getattr(ctx.settings, area.setting)
            item = AreaPlan(area, days, ctx.settings.source(area.setting), area.cutoff(now, days))
            plans.append(item)
            missing = [t.name for t in (area.hot, area.archive) if t is not None
                       and t.name not in present]
            if missing:
                item.blocked = f"table {', '.join(missing)} missing"
                continue
            hot = area.hot
            count, lowest, highest = conn.execute(
                select(func.count(), func.min(hot.c.id), func.max(hot.c.id))
                .where(area.eligible(item.cutoff))
            ).one()
            item.eligible, item.lowest, item.highest = count, lowest, highest
            if area.protected() is not None:
                item.protected = conn.execute(
                    select(func.count()).select_from(hot)
                    .where(area.old(item.cutoff), area.protected())
                ).scalar_one()
            if area.moves and count and ctx.dry_run:  # --execute checks batch by batch
                archive = area.archive
                item.in_archive = conn.execute(
                    select(func.count()).select_from(hot.join(archive, archive.c.id == hot.c.id))
                    .where(area.eligible(item.cutoff))
                ).scalar_one()
    return plans


READINESS_COLUMNS = ["Area", "Retention", "Eligible", "Status", "Notes"]


def readiness_rows(ctx: RunContext, now: dt.datetime) -> list[dict[str, Any]]:
    """The archive-readiness table (READINESS_COLUMNS) from the read-only plan, as the archive's
    own run shows it (queue health's status page shows it too)."""
    return _readiness(plan(ctx, now))


def _readiness(plans: list[AreaPlan]) -> list[dict[str, Any]]:
    return [{"Area": p.area.name, "Retention": f"{p.days} days", "Eligible": p.eligible,
             "Status": p.status, "Notes": p.notes()} for p in plans]


def batch_statements(area: Area, cutoff, batch: int, display: bool = False) -> dict[str, Any]:
    """One area's batch statements, built once per run; each batch binds its own window.

    A batch looks at the window `:after_id < id <= :window_end` and takes its first BATCH
    eligible rows in id order. The window bounds what a batch reads and locks to its own ids
    even when the optimizer would rather walk the retention index and sort every eligible row
    (it did, for attendance: each batch locked all of them); MySQL is also told to walk the
    primary key, as pt-archiver does.

    A move is "copy", "delete" and, between them only when a full batch came out of a window
    wider than BATCH ids, "last_copied":
    - "copy" inserts those rows into the archive, and locks them (FOR UPDATE) in that same
      statement: no separate select of the keys;
    - "last_copied": how many ids of the window the archive holds, and the highest, which is
      where the batch ends when that count is the number copied;
    - "delete" removes the rows of `:after_id < id <= :last_id` that Area.copied describes.
    Attendance is "select" (the count, lowest and highest of those ids, locked; "select_ids"
    lists them when they are not contiguous) and "mark" by `id BETWEEN :first_id AND :last_id`.
    A move whose window meets ids the archive already holds is redone with "select" and an
    archive look-up (AreaWalk.batch).
    `display` names the parameters in the SQL text instead, for the dry run to print.
    """
    def param(name: str, type_):
        return literal_column(f":{name}") if display else bindparam(name, type_=type_)

    hot = area.hot

    def first_eligible(*columns) -> Select:
        query = (select(*columns)
                 .where(hot.c.id > param("after_id", Integer),
                        hot.c.id <= param("window_end", Integer), area.eligible(cutoff))
                 .order_by(hot.c.id)
                 .limit(batch)
                 .with_for_update())
        return force_index(query, hot, "PRIMARY")

    select_ids = first_eligible(hot.c.id)
    locked = select_ids.subquery("batch")
    statements = {
        "select": select(func.count(), func.min(locked.c.id), func.max(locked.c.id)),
        "select_ids": select_ids,
    }
    archived_at = param("archived_at", DateTime)
    if not area.moves:
        in_range = hot.c.id.between(param("first_id", Integer), param("last_id", Integer))
        statements.update(write_statements(area, in_range, archived_at))
        return statements
    archive = area.archive
    statements["copy"] = insert(archive).from_select(
        [c.name for c in hot.columns] + ["archived_at"],
        first_eligible(*hot.columns, archived_at.label("archived_at")))
    statements["last_copied"] = select(func.count(), func.max(archive.c.id)).where(
        archive.c.id > param("after_id", Integer), archive.c.id <= param("window_end", Integer))
    statements["delete"] = delete(hot).where(
        hot.c.id > param("after_id", Integer), hot.c.id <= param("last_id", Integer),
        area.copied(cutoff))
    return statements


def write_statements(area: Area, keys: ColumnElement, archived_at) -> dict[str, Any]:
    """Copy and delete (or mark) exactly the rows `keys` names."""
    hot = area.hot
    if not area.moves:
        # updated_at moves with the mark: the warehouse export's watermark sees the change.
        return {"mark": update(hot).where(keys, hot.c.is_archived == False).values(  # noqa: E712
            is_archived=True, updated_at=archived_at)}
    names = [c.name for c in hot.columns]
    copy = insert(area.archive).from_select(
        names + ["archived_at"], select(*hot.columns, archived_at.label("archived_at")).where(keys))
    return {"copy": copy, "delete": delete(hot).where(keys)}


# ---------------------------------------------------------------------------------------------
# Applying


@dataclass
class AreaProgress:
    moved: int = 0
    batches: int = 0
    verified_in_archive: int = 0


@dataclass(frozen=True)
class Keys:
    """A batch's rows: how many, the ids they lie within (first..last), and the ids themselves
    when a select listed them (scattered). A selected batch's first and last are its lowest and
    highest id; a copied one's are its window's first id and the last id it copied."""

    count: int
    first: int
    last: int
    ids: list[int] | None = None  # None: every row of first..last that the batch's rule takes

    def clause(self, table: Table) -> ColumnElement:
        """Exactly the selected ids: a range when they are contiguous (faster), else an IN list."""
        if self.ids is None:
            return table.c.id.between(self.first, self.last)
        return table.c.id.in_(self.ids)

    def __str__(self) -> str:
        return f"ids {self.first}..{self.last}"


NO_KEYS = Keys(0, 0, 0)


@dataclass
class Window:
    """Where an area's walk of the primary key is: ids up to `after` are done; the next batch
    looks at `after < id <= after + width`, never past `end` (the highest eligible id at the
    start)."""

    after: int
    end: int
    batch: int
    width: int = 0

    def __post_init__(self) -> None:
        self.width = self.width or self.batch

    @property
    def done(self) -> bool:
        return self.after >= self.end

    def params(self) -> dict[str, int]:
        return {"after_id": self.after, "window_end": min(self.after + self.width, self.end)}

    def advance(self, keys: Keys) -> None:
        """Past a batch: after its last row when it was full (the rest of the window waits for
        the next batch), else past the whole window, which then grows (its rows were sparse)."""
        if keys.count >= self.batch:
            self.width = max(self.batch, keys.last - self.after)  # the span BATCH rows took
            self.after = keys.last
            return
        self.after = min(self.after + self.width, self.end)
        self.width = min(self.width * 2, self.batch * MAX_WINDOW_BATCHES)


def _identical_in_archive(conn: Connection, area: Area, ids: list[int]) -> int:
    hot, archive = area.hot, area.archive
    same = [archive.c[c.name].is_not_distinct_from(c) for c in hot.columns if c.name != "id"]
    return conn.execute(
        select(func.count()).select_from(hot.join(archive, archive.c.id == hot.c.id))
        .where(hot.c.id.in_(ids), *same)
    ).scalar_one()


def _select_keys(conn: Connection, statements: dict, window: dict[str, int]) -> Keys:
    count, first, last = conn.execute(statements["select"], window).one()
    if not count:
        return NO_KEYS
    if last - first + 1 == count:
        return Keys(count, first, last)
    ids = list(conn.execute(statements["select_ids"], window).scalars())  # locked
    return Keys(len(ids), ids[0], ids[-1], ids)


BeforeCommit = Callable[[str, Keys], None]


class ArchiveHoldsWindowIds(Exception):
    """The archive already holds ids of a batch's window that its copy did not write: the
    batch is rolled back and redone with the archive look-up."""


@dataclass
class AreaWalk:
    """One area's --execute: its plan, its statements (built once) and where its walk is."""

    item: AreaPlan
    statements: dict[str, Any]
    window: Window
    stats: Stats
    before_commit: BeforeCommit | None = None

    def batch(self, ctx: RunContext) -> tuple[Keys, int]:
        """The next batch, and how many of its rows the archive already held (identical).

        A move is first tried as copy-then-delete by range, without looking the ids up in the
        archive (its primary key refuses a second copy); when the key refuses, the archive
        holds other ids of the window, or the DELETE's count is not the copy's, it is rolled
        back and redone by the selected ids, with the look-up. Any other integrity error is
        not "already archived": it propagates."""
        area = self.item.area
        if area.moves:
            try:
                return self._copy_window(ctx), 0
            except IntegrityError as exc:
                if not is_duplicate_key(exc):
                    raise
            except ArchiveHoldsWindowIds:
                pass
            except RangeChanged as exc:
                self.stats.add("changed range fallback", 0.0)
                log.warning("%s: redoing the batch by its selected ids", exc)
                return self._transaction(ctx)
            self.stats.add("duplicate fallback", 0.0)
            log.info("%s: an id after %s is already in %s: checking this batch row by row",
                     area.name, self.window.after, area.archive.name)
        return self._transaction(ctx)

    def _copy_window(self, ctx: RunContext) -> Keys:
        """A move's usual batch, one transaction: copy the window's first BATCH eligible rows
        (the copy locks them), find where they end when that is not the window's end, delete
        them by id range, check deleted = copied, commit."""
        area, stats, statements = self.item.area, self.stats, self.statements
        window = self.window.params()
        after = window["after_id"]
        with self._batch_transaction(ctx) as (conn, writes_done):
            with stats.timed("copy"):
                copied = conn.execute(statements["copy"],
                                      {**window, "archived_at": utcnow()}).rowcount
            if not copied:
                return NO_KEYS
            last = window["window_end"]
            # Fewer than BATCH rows: the copy took every eligible row of the window. BATCH rows
            # from a window of BATCH ids: every id of it. Else they end somewhere inside.
            if copied == self.window.batch and last - after > copied:
                with stats.timed("last_copied"):
                    held, last = conn.execute(statements["last_copied"], window).one()
                if held != copied:
                    raise ArchiveHoldsWindowIds()
            keys = Keys(copied, after + 1, last)
            with stats.timed("delete"):
                deleted = conn.execute(statements["delete"],
                                       {"after_id": after, "last_id": last}).rowcount
            if deleted != copied:
                raise RangeChanged(f"{area.name}: copied {copied}, deleted {deleted} ({keys}); "
                                   "rolled back")
            writes_done(keys)
        return keys

    def _transaction(self, ctx: RunContext) -> tuple[Keys, int]:
        """A batch that selects its keys first (locked), then marks them, or copies those the
        archive lacks and compares those it holds, and deletes them; checks; commits. Used by
        attendance, and by a move redone with the archive look-up. Returns the keys, and how
        many of them the archive already held (identical copies)."""
        area, hot, stats = self.item.area, self.item.area.hot, self.stats
        with self._batch_transaction(ctx) as (conn, writes_done):
            with stats.timed("select"):
                keys = _select_keys(conn, self.statements, self.window.params())
            if not keys.count:
                return keys, 0
            params = {"first_id": keys.first, "last_id": keys.last, "archived_at": utcnow()}
            if area.moves:
                identical = self._move_looked_up(conn, keys, params)
            else:
                identical = 0
                mark = self.statements["mark"]
                if keys.ids is not None:  # scattered ids: listed
                    mark = write_statements(area, keys.clause(hot),
                                            bindparam("archived_at", type_=DateTime))["mark"]
                with stats.timed("mark"):
                    marked = conn.execute(mark, params).rowcount
                if marked != keys.count:
                    raise BatchMismatch(f"{area.name}: marked {marked} of {keys.count} selected "
                                        f"rows ({keys}); rolled back")
            writes_done(keys)
        return keys, identical

    @contextmanager
    def _batch_transaction(self, ctx: RunContext):
        """A batch's transaction, and `writes_done(keys)` to call once its writes are checked:
        it runs the before_commit hook, and the commit that follows is timed."""
        writes_ended: list[float] = []

        def writes_done(keys: Keys) -> None:
            if self.before_commit is not None:
                self.before_commit(self.item.area.name, keys)
            writes_ended.append(time.perf_counter())

        with ctx.db.begin() as conn:
            yield conn, writes_done
        if writes_ended:
            self.stats.add("commit", time.perf_counter() - writes_ended[0])

    def _move_looked_up(self, conn: Connection, keys: Keys, params: dict) -> int:
        """Copy the batch's rows the archive lacks, check the others, delete them all; returns
        how many the archive already held, identical."""
        area, hot, archive, stats = self.item.area, self.item.area.hot, self.item.area.archive, \
            self.stats
        archived_at = bindparam("archived_at", type_=DateTime)
        with stats.timed("copy"):
            present = list(conn.execute(
                select(archive.c.id).where(keys.clause(archive))).scalars())
            lacking = and_(keys.clause(hot), hot.c.id.not_in(present)) if present \
                else keys.clause(hot)
            copied = conn.execute(write_statements(area, lacking, archived_at)["copy"],
                                  params).rowcount
            identical = _identical_in_archive(conn, area, present) if present else 0
        if identical != len(present):
            raise BatchMismatch(
                f"{area.name}: {len(present) - identical} of {keys} are already in "
                f"{archive.name} with different contents; rolled back, nothing deleted "
                "(compare the two rows and remove the wrong one)")
        with stats.timed("delete"):
            deleted = conn.execute(
                write_statements(area, keys.clause(hot), archived_at)["delete"]).rowcount
        if not copied + identical == deleted == keys.count:
            raise BatchMismatch(
                f"{area.name}: selected {keys.count}, copied {copied} (+{identical} already "
                f"archived), deleted {deleted} ({keys}); rolled back")
        return identical


def apply(ctx: RunContext, plans: list[AreaPlan], batch: int, sleep: float,
          lag: ReplicaLag, result: JobResult, stats: Stats,
          before_commit: BeforeCommit | None = None) -> dict[str, AreaProgress]:
    done: dict[str, AreaProgress] = {}
    margin = 0.0
    for item in plans:
        progress = done.setdefault(item.area.name, AreaProgress())
        if item.blocked or not item.eligible:
            continue
        walk = AreaWalk(item, batch_statements(item.area, item.cutoff, batch),
                        Window(after=item.lowest - 1, end=item.highest, batch=batch), stats,
                        before_commit)
        description = f"{'archiving' if item.area.moves else 'marking'} {item.area.name}"
        with ctx.progress(description, item.eligible) as advance:
            while not walk.window.done:
                reason = ctx.why_stop(margin) or lag.wait_while_lagging(ctx, stats)
                if reason:
                    result.stop_reason = reason
                    return done
                started = time.perf_counter()
                try:
                    keys, identical = retry_transient(lambda: walk.batch(ctx),
                                                      what=f"{item.area.name} batch")
                except BatchMismatch as exc:
                    result.status = "failed"
                    result.error = str(exc)
                    result.stop_reason = "error: batch counts disagree"
                    return done
                except IntegrityError as exc:  # not a duplicate key: see AreaWalk.batch
                    result.status = "failed"
                    result.error = (f"{item.area.name}: the batch after id {walk.window.after} "
                                    f"was refused: {describe_db_error(exc)}; rolled back")
                    result.stop_reason = "error: database refused a batch"
                    return done
                margin = time.perf_counter() - started
                walk.window.advance(keys)
                if keys.count:
                    progress.moved += keys.count
                    progress.batches += 1
                    progress.verified_in_archive += identical
                    advance(keys.count)
                else:
                    stats.add("empty window", 0.0)
                if sleep and keys.count and not walk.window.done:
                    with stats.timed("sleep"):
                        ctx.stop.wait(sleep)
    return done


# ---------------------------------------------------------------------------------------------


def run(ctx: RunContext, batch: int = 1000, sleep: float = 0.0,
        max_replica_lag: float | None = None, now: dt.datetime | None = None,
        before_commit: BeforeCommit | None = None) -> JobResult:
    """Plan every area; with --execute, walk each. `before_commit(area, keys)` is called in
    each batch's transaction once its writes are done, before the commit (tests hold a batch
    open with it to see what it locks)."""
    result = JobResult(ctx.tool, ctx.dry_run)
    now = now or utcnow()
    plans = plan(ctx, now)
    result.section("Archive readiness", _readiness(plans), columns=READINESS_COLUMNS)
    dialect = ctx.db.engine.dialect
    for p in plans:
        if p.blocked or not p.eligible:
            continue
        statements = batch_statements(p.area, p.cutoff, batch, display=True)
        for step in p.area.steps:
            result.statements.append(render_sql(statements[step], dialect) + ";")
    for p in plans:
        result.counts[f"{p.area.name}_eligible"] = p.eligible
    if ctx.dry_run:
        total = sum(p.eligible for p in plans)
        result.notes.append(
            f"--execute would move or mark {total} rows in batches of {batch} "
            "(one transaction each; statements below, one batch shown per area; each batch "
            "looks at a window of ids, after_id < id <= window_end, starting "
            f"{batch} ids wide, growing while it finds fewer than {batch} rows, and never past "
            "the highest eligible id counted above; a move's INSERT copies and locks the "
            "batch's rows, the SELECT after it runs only when a full batch came from a window "
            f"wider than {batch} ids, and the DELETE must remove as many rows as were copied; "
            "attendance ids are addressed as BETWEEN first AND last when contiguous, else "
            "listed as IN (...); a move whose window holds ids the archive already has is "
            "redone with a locking select of its ids, an archive look-up and a comparison of "
            "the rows)")
        result.stop_reason = dry_run_reason()
        return result

    stats = Stats()
    lag = ReplicaLag(ctx, max_replica_lag)
    if lag.note:
        result.notes.append(lag.note)
    started = time.perf_counter()
    try:
        done = apply(ctx, plans, batch, sleep, lag, result, stats, before_commit)
    finally:
        lag.close()
    elapsed = time.perf_counter() - started
    result.statements.clear()
    rows = []
    for p in plans:
        progress = done.get(p.area.name, AreaProgress())
        verb = "moved" if p.area.moves else "marked"
        result.counts[f"{p.area.name}_{verb}"] = progress.moved
        rows.append({"Area": p.area.name, "Eligible": p.eligible, "Done": progress.moved,
                     "Action": verb, "Batches": progress.batches,
                     "Pre-archived": progress.verified_in_archive})
    result.section("Archived", rows,
                   columns=["Area", "Eligible", "Done", "Action", "Batches", "Pre-archived"])
    result.section("Statistics", [
        {"Action": action, "Count": stats.calls[action], "Time": round(seconds, 3),
         "Pct": f"{100 * seconds / elapsed:.1f}%" if elapsed else "-"}
        for action, seconds in stats.seconds.items()
    ], columns=["Action", "Count", "Time", "Pct"])
    moved = sum(r["Done"] for r in rows)
    result.counts["rows"] = moved
    left = sum(r["Eligible"] - r["Done"] for r in rows)
    if result.stop_reason != DONE and left > 0:
        result.notes.append(f"{left} eligible rows left for the next run")
    result.timings.update({action: seconds for action, seconds in stats.seconds.items()})
    result.timings["total"] = elapsed
    if elapsed and moved:
        result.notes.append(f"{moved} rows in {elapsed:.2f}s ({moved / elapsed:,.0f} rows/s)")
    return result
