"""Stage 1: attendance scans become attendance records (and arrival notifications).

Rules (docs/workers.md):
- The student is found by (institution_id, card_uid). An unknown card or an inactive student fails
  the scan for good (status failed, with the reason); it is not retried.
- The attendance date is the scan's local date in the institution's timezone. The first scan of a
  day creates the record: `present`, or `late` when its local time is after the institution's
  `late_after` (else the `scan_late_after` setting). Later scans move last_scan_at and scan_count;
  an earlier scan arriving late moves first_scan_at and the status with it.
- A scan identical to one already processed (same institution, card and time) is a duplicate: it is
  marked done with the note "duplicate" and changes nothing, so scans arriving twice or out of order
  give the same record. A processed scan's `scan_key` is unique: if two workers count copies of one
  scan at the same moment, the second's write-back fails on that key and its batch is redone,
  seeing the first as done. No lock is held on students, so workers do not queue behind each other.
- A batch is worked inside the transaction that locks its scans (`LockedBatchStage`): their
  records, notifications, deliveries, markers and their own status commit together, or not at all.
- The first scan of a student's day creates one arrival notification per guardian; its dedupe_key
  (`arrival:<student>:<date>:<guardian>`) makes a second one impossible.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Any, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from ...db import mysql_error_code
from ...queue import QUEUES
from ...runtime import RunContext
from ...schema import (
    attendance_records,
    attendance_scan_queue,
    guardian_students,
    institutions,
    notifications,
    students,
)
from ...sqlutil import (
    in_keys,
    insert_ignore_from_select,
    temporary_table,
    update_each,
    update_from,
    upsert_from_select,
)
from ...timeutil import utcnow
from .base import (
    LockedBatchStage,
    StagePlan,
    StageStats,
    mark_rollups,
    mark_snapshots_of_students,
)
from .fanout import fan_out

DUPLICATE_NOTE = "duplicate of a scan already processed"
SCAN_KEY_INDEX = "uq_scan_queue_scan_key"  # another worker processed a copy of the scan first
q = attendance_scan_queue


@dataclass
class Accepted:
    scan_id: int
    student_id: int
    institution_id: int
    scanned_at: dt.datetime
    local_date: dt.date
    status: str  # present | late


@dataclass
class Classified:
    accepted: list[Accepted] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # scan id -> reason
    student_names: dict[int, str] = field(default_factory=dict)
    local_times: dict[int, dt.datetime] = field(default_factory=dict)  # scan id -> local time


def _zone(name: str, cache: dict[str, ZoneInfo | None]) -> ZoneInfo | None:
    if name not in cache:
        try:
            cache[name] = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            cache[name] = None
    return cache[name]


@functools.lru_cache(maxsize=256)
def _clock(text: str) -> dt.time:
    return dt.datetime.strptime(text, "%H:%M").time()


def scan_key_sql(dialect: str):
    """A scan's key, `<institution>|<card>|<YYYY-MM-DD HH:MM:SS>`, computed by the server: a
    batch's keys are set by one plain UPDATE, and processed copies found by a join on them."""
    if dialect == "mysql":
        when = func.date_format(q.c.scanned_at, literal_column("'%Y-%m-%d %H:%i:%s'"))
    else:
        when = func.strftime(literal_column("'%Y-%m-%d %H:%M:%S'"), q.c.scanned_at)
    separator = literal("|", String)
    return cast(q.c.institution_id, String) + separator + q.c.card_uid + separator + when


def batch_query(where, dialect: str):
    """The scans `where` picks, each with its student (by institution and card) and, when a
    processed scan has the same key, that scan's id: one read, joined in the server."""
    done = q.alias("done")
    s = students.c
    return (
        select(q.c.id, q.c.institution_id, q.c.card_uid, q.c.scanned_at,
               s.id.label("student_id"), s.is_active, s.name.label("student_name"),
               done.c.id.label("done_id"))
        .select_from(
            q.outerjoin(students, and_(s.institution_id == q.c.institution_id,
                                       s.card_uid == q.c.card_uid))
            .outerjoin(done, done.c.scan_key == scan_key_sql(dialect)))
        .where(where)
        .order_by(q.c.id))


def classify(conn: Connection, scans: Sequence[Any], default_late_after: str) -> Classified:
    """Sort scans (rows of batch_query) into accepted, duplicates and failures (reads only)."""
    out = Classified()
    inst_ids = sorted({s.institution_id for s in scans})
    settings_of = {
        r.id: r for r in conn.execute(
            select(institutions.c.id, institutions.c.timezone, institutions.c.late_after)
            .where(institutions.c.id.in_(inst_ids)))
    }
    zones: dict[str, ZoneInfo | None] = {}
    seen: set[tuple] = set()
    for scan in sorted(scans, key=lambda s: (s.scanned_at, s.id)):
        if scan.student_id is None:
            out.failed[scan.id] = (f"unknown card {scan.card_uid!r} "
                                   f"at institution {scan.institution_id}")
            continue
        if not scan.is_active:
            out.failed[scan.id] = f"student {scan.student_id} (card {scan.card_uid!r}) is inactive"
            continue
        # The student, not the card text: the server matched the card under the column's
        # collation (MySQL: "a1" is "A1 "), and scan_key's unique index compares the same way.
        key = (scan.student_id, scan.scanned_at.replace(microsecond=0))
        if scan.done_id is not None or key in seen:
            out.duplicates.append(scan.id)
            continue
        seen.add(key)
        institution = settings_of[scan.institution_id]
        zone = _zone(institution.timezone, zones)
        if zone is None:
            out.failed[scan.id] = (f"institution {scan.institution_id} has an unknown timezone "
                                   f"{institution.timezone!r}")
            continue
        try:
            late_after = _clock(institution.late_after or default_late_after)
        except ValueError:
            out.failed[scan.id] = (f"institution {scan.institution_id} has an invalid late_after "
                                   f"{institution.late_after!r} (expected HH:MM)")
            continue
        local = scan.scanned_at.replace(tzinfo=dt.timezone.utc).astimezone(zone)
        status = "late" if local.time().replace(tzinfo=None) > late_after else "present"
        out.accepted.append(Accepted(scan.id, scan.student_id, scan.institution_id,
                                     scan.scanned_at, local.date(), status))
        out.student_names[scan.student_id] = scan.student_name
        out.local_times[scan.id] = local
    return out


@dataclass
class DayGroup:
    institution_id: int
    first: Accepted
    last_scan_at: dt.datetime
    count: int


def group_by_day(accepted: list[Accepted]) -> dict[tuple[int, dt.date], DayGroup]:
    groups: dict[tuple[int, dt.date], DayGroup] = {}
    for scan in accepted:  # already in time order
        key = (scan.student_id, scan.local_date)
        group = groups.get(key)
        if group is None:
            groups[key] = DayGroup(scan.institution_id, scan, scan.scanned_at, 1)
        else:
            group.last_scan_at = max(group.last_scan_at, scan.scanned_at)
            group.count += 1
    return groups


def _day_columns() -> list[Column]:
    """One row per student-day of a batch, for the set-based statements of the records."""
    r = attendance_records.c
    return [Column("student_id", r.student_id.type, primary_key=True),
            Column("attendance_date", r.attendance_date.type, primary_key=True),
            Column("institution_id", r.institution_id.type),
            Column("first_scan_at", r.first_scan_at.type),
            Column("last_scan_at", r.last_scan_at.type),
            Column("scan_count", r.scan_count.type),
            Column("status", r.status.type)]


def _day_rows(groups: dict[tuple[int, dt.date], DayGroup]) -> list[dict]:
    return [{"student_id": student_id, "attendance_date": day,
             "institution_id": g.institution_id, "first_scan_at": g.first.scanned_at,
             "last_scan_at": g.last_scan_at, "scan_count": g.count, "status": g.first.status}
            for (student_id, day), g in sorted(groups.items())]


def _merge_record(table, new, updated_at) -> list[tuple[str, Any]]:
    """SET pairs merging a batch's student-day (`new`) into its record, in this order: status
    first, so that it reads first_scan_at before that moves (MySQL assigns left to right)."""
    return [
        ("status", case((new.first_scan_at < table.c.first_scan_at, new.status),
                        else_=table.c.status)),
        ("first_scan_at", case((new.first_scan_at < table.c.first_scan_at, new.first_scan_at),
                               else_=table.c.first_scan_at)),
        ("last_scan_at", case((new.last_scan_at > table.c.last_scan_at, new.last_scan_at),
                              else_=table.c.last_scan_at)),
        ("scan_count", table.c.scan_count + new.scan_count),
        ("updated_at", updated_at),
    ]


class ScanStage(LockedBatchStage):
    name = "scans"
    queue = QUEUES["scans"]
    # The scans stay locked while their batch is worked: a batch of this size takes a few tenths
    # of a second (benchmarks/bench_workers.py), and fewer larger batches barely go faster.
    batch_size = 2000

    def work_locked(self, conn: Connection, ctx: RunContext, keys: Sequence[int],
                    batch: StageStats) -> None:
        now = utcnow()
        scans = conn.execute(batch_query(self.queue.key_in(keys), conn.dialect.name)).all()
        result = classify(conn, scans, ctx.settings.scan_late_after)
        groups = group_by_day(result.accepted)
        if groups:
            with temporary_table(conn, "scan_days", _day_columns(), _day_rows(groups)) as days:
                arrivals = self._write_records(conn, days, groups, now)
                batch.add("records_created", len(arrivals))
                batch.add("records_updated", len(groups) - len(arrivals))
                batch.add("notifications_created",
                          self._notify_arrivals(conn, arrivals, groups, result, now))
                mark_rollups(conn, [(g.institution_id, d) for (_s, d), g in groups.items()], now)
                mark_snapshots_of_students(conn, select(days.c.student_id), now)
        self._write_back(conn, result, now)
        batch.done += len(result.accepted) + len(result.duplicates)
        batch.failed += len(result.failed)
        batch.add("duplicates", len(result.duplicates))

    def run_locked(self, ctx: RunContext, work) -> StageStats:
        copies_met = 0
        while True:
            try:
                batch = ctx.db.run(work, what="scans")
                batch.add("batches_redone", copies_met)
                return batch
            except IntegrityError as exc:
                copies_met += 1
                # Another worker committed a copy of one of our scans first: redo the batch.
                # The redo sees that copy as processed (ours becomes a duplicate), so each redo
                # settles at least one scan: a bounded number, however busy the workers are.
                if (mysql_error_code(exc) != 1062 or SCAN_KEY_INDEX not in str(exc.orig)
                        or copies_met > self.batch_size):
                    raise

    def _write_records(self, conn: Connection, days, groups: dict, now: dt.datetime) -> list:
        """Create or merge one record per student-day (`days`); returns the new student-days.

        The records that exist are merged by an UPDATE, not by the upsert: on a duplicate key
        InnoDB inserts the row, rolls it back, then updates (twice the server's time, and an
        id spent). They are locked first, so each is merged once, by the UPDATE; the upsert
        takes the others, and merges a record another worker created meanwhile.
        """
        r = attendance_records.c
        on_day = and_(r.student_id == days.c.student_id,
                      r.attendance_date == days.c.attendance_date)
        found = conn.execute(
            select(r.id, r.student_id, r.attendance_date)
            .select_from(days.join(attendance_records, on_day))
            .order_by(days.c.student_id, days.c.attendance_date)  # one lock order
            .with_for_update()).all()
        stamp = literal(now, DateTime)
        merged = [row.id for row in found]
        if merged:
            update_from(conn, attendance_records, days, on_day,
                        lambda new: _merge_record(attendance_records, new, stamp),
                        [in_keys(r.id, merged)])
        others = select(*days.c, stamp, stamp).order_by(
            days.c.student_id, days.c.attendance_date)  # one lock order
        if merged:  # (aliased: the upsert's SET names the table's own columns)
            known = attendance_records.alias("known")
            others = others.select_from(days.outerjoin(known, and_(
                known.c.student_id == days.c.student_id,
                known.c.attendance_date == days.c.attendance_date))).where(
                or_(known.c.id.is_(None), not_(in_keys(known.c.id, merged))))
        upsert_from_select(
            conn, attendance_records, [c.name for c in days.c] + ["created_at", "updated_at"],
            others.where(true()),  # SQLite: no ON read as the upsert's
            ["student_id", "attendance_date"],
            lambda table, new: dict(_merge_record(table, new, new.updated_at)))
        existing = {(row.student_id, row.attendance_date) for row in found}
        return [day for day in sorted(groups) if day not in existing]

    def _notify_arrivals(self, conn: Connection, arrivals: list[tuple], groups: dict,
                         result: Classified, now: dt.datetime) -> int:
        """One notification per guardian of each new student-day, and its deliveries.

        The worker sends one row per arrival; the server pairs it with the student's guardians
        (guardian_students) and their active devices, so guardian ids never travel.
        """
        rows = []
        spelled = {day: (day.isoformat(), f"{day:%d %b %Y}") for _s, day in arrivals}
        for student_id, day in arrivals:
            first = groups[(student_id, day)].first
            name = result.student_names[student_id]
            local = result.local_times[first.scan_id]
            iso_day, long_day = spelled[day]
            rows.append({
                "dedupe_prefix": f"arrival:{student_id}:{iso_day}:",
                "student_id": student_id,
                "title": f"{name} arrived",
                "body": f"{name} arrived at {local.hour:02}:{local.minute:02} on {long_day} "
                        f"({first.status}).",
                "data": {"type": "arrival", "student_id": student_id,
                         "attendance_date": iso_day, "status": first.status,
                         "first_scan_at": first.scanned_at.isoformat() + "Z"},
            })
        if not rows:
            return 0
        n, gs = notifications.c, guardian_students.c
        columns = [Column("dedupe_prefix", String(191), primary_key=True),
                   Column("student_id", n.student_id.type), Column("title", n.title.type),
                   Column("body", n.body.type), Column("data", n.data.type)]
        with temporary_table(conn, "arrivals", columns, rows) as new:
            dedupe_key = new.c.dedupe_prefix + cast(gs.guardian_id, String)
            pairs = new.join(guardian_students, gs.student_id == new.c.student_id)
            insert_ignore_from_select(
                conn, notifications,
                ["guardian_id", "student_id", "kind", "title", "body", "data", "dedupe_key",
                 "created_at", "fanout_status", "fanned_out_at"],
                select(gs.guardian_id, new.c.student_id, literal("arrival"), new.c.title,
                       new.c.body, new.c.data, dedupe_key, literal(now, DateTime),
                       literal("done"), literal(now, DateTime))
                .select_from(pairs)
                # By arrival only, read in that order from the arrivals' key, each student's
                # guardians in order from guardian_students' student index: ordering by the
                # guardian too had MariaDB copy the joined rows, body and data with them, into
                # an on-disk temporary table to sort them, for every batch.
                .order_by(new.c.dedupe_prefix)
                .prefix_with("STRAIGHT_JOIN", dialect="mysql"),
                ["dedupe_key"])
            # Fanned out here, in the same transaction, rather than claimed again by the fan-out
            # stage: the unique (notification, device) key keeps it idempotent either way.
            fan_out(conn, now,
                    notifications_from=pairs.join(notifications, n.dedupe_key == dedupe_key))
            # Offered, as insert_ignore counts: the same figure on every database.
            return conn.execute(select(func.count()).select_from(pairs)).scalar_one()

    def _write_back(self, conn: Connection, result: Classified, now: dt.datetime) -> None:
        # The try is counted as it ends: no claim counted it before (attempts = tries made).
        tried = {"attempts": q.c.attempts + 1}
        failed, done = ({**self.queue.finished_values(status, now), **tried}
                        for status in ("failed", "done"))
        update_each(conn, q, q.c.id, {i: {"error": r[:500]} for i, r in result.failed.items()},
                    common=failed)
        if result.duplicates:
            conn.execute(update(q).where(in_keys(q.c.id, result.duplicates))
                         .values(error=DUPLICATE_NOTE, **done))
        if result.accepted:
            conn.execute(update(q).where(in_keys(q.c.id, [a.scan_id for a in result.accepted]))
                         .values(error=None, scan_key=scan_key_sql(conn.dialect.name), **done))

    def plan(self, conn: Connection, ctx: RunContext, limit: int) -> StagePlan:
        scans = conn.execute(
            batch_query(self.queue.ready(utcnow()), conn.dialect.name).limit(limit)).all()
        if not scans:
            return StagePlan()
        result = classify(conn, scans, ctx.settings.scan_late_after)
        groups = group_by_day(result.accepted)
        existing = 0
        if groups:
            existing = conn.execute(
                select(func.count()).select_from(attendance_records)
                .where(tuple_(attendance_records.c.student_id,
                              attendance_records.c.attendance_date).in_(sorted(groups)))
            ).scalar_one()
        return StagePlan(
            figures={"records_created": len(groups) - existing, "records_updated": existing,
                     "duplicates": len(result.duplicates), "would_fail": len(result.failed)},
            samples=[{"scan": i, "would fail": r} for i, r in list(result.failed.items())[:5]])
