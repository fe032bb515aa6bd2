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
from operator import itemgetter
from typing import Any, NamedTuple, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Integer,
    String,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    literal_column,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.sql import ColumnElement, Subquery
from sqlalchemy.exc import IntegrityError

from ...db import mysql_error_code
from ...queue import QUEUES, locked_ready
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


class Accepted(NamedTuple):
    scan_id: int
    student_id: int
    institution_id: int
    scanned_at: dt.datetime
    local: dt.datetime  # naive, the institution's wall time
    status: str  # present | late


@dataclass
class Classified:
    accepted: list[Accepted] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # scan id -> reason


class LocalClock:
    """A timezone's wall time of naive UTC datetimes, by the UTC offset of each UTC hour.

    astimezone() cost a microsecond a scan. An hour's offset is kept only when the hour starts
    and ends with it (no change of offset inside it); an hour with a change (a zone whose
    clocks change at :30 UTC, Lord Howe) converts each of its scans exactly."""

    MAX_HOURS = 100_000  # about eleven years of hours: then it starts afresh

    def __init__(self, zone: ZoneInfo):
        self.zone = zone
        self.offsets: dict[int, dt.timedelta | None] = {}  # None: the offset changes inside

    def local(self, moment: dt.datetime) -> dt.datetime:
        hour = moment.toordinal() * 24 + moment.hour
        try:
            offset = self.offsets[hour]
        except KeyError:
            offset = self._hour_offset(moment, hour)
        if offset is None:
            return self._exact(moment)
        return moment + offset

    def _hour_offset(self, moment: dt.datetime, hour: int) -> dt.timedelta | None:
        start = moment.replace(minute=0, second=0, microsecond=0)
        first = self._exact(start) - start
        last = start + dt.timedelta(hours=1, microseconds=-1)
        offset = first if self._exact(last) - last == first else None
        if len(self.offsets) >= self.MAX_HOURS:
            self.offsets.clear()
        self.offsets[hour] = offset
        return offset

    def _exact(self, moment: dt.datetime) -> dt.datetime:
        return moment.replace(tzinfo=dt.timezone.utc).astimezone(self.zone).replace(tzinfo=None)


@functools.lru_cache(maxsize=256)
def _local_clock(name: str) -> LocalClock | None:
    """The clock of a timezone (one per process: its hours are worth keeping), None if unknown."""
    try:
        return LocalClock(ZoneInfo(name))
    except (ZoneInfoNotFoundError, ValueError):
        return None


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


def batch_query(dialect: str, where=None, locked: Subquery | None = None):
    """The scans `where` picks, each with its student (by institution and card) and, when a
    processed scan has the same key, that scan's id: one read, joined in the server.

    Given `locked` (queue.locked_ready) instead, the scans whose ids it holds, locked by this
    read, in no particular order (classify sorts them); else in id order."""
    done = q.alias("done")
    s = students.c
    scans = q if locked is None else locked.join(q, q.c.id == locked.c.id)
    query = (
        select(q.c.id, q.c.institution_id, q.c.card_uid, q.c.scanned_at,
               s.id.label("student_id"), s.is_active, done.c.id.label("done_id"))
        .select_from(
            scans.outerjoin(students, and_(s.institution_id == q.c.institution_id,
                                           s.card_uid == q.c.card_uid))
            .outerjoin(done, done.c.scan_key == scan_key_sql(dialect))))
    if locked is not None:
        return query
    return query.where(where).order_by(q.c.id)


def classify(conn: Connection, scans: Sequence[Any], default_late_after: str) -> Classified:
    """Sort scans (rows of batch_query) into accepted, duplicates and failures (reads only)."""
    out = Classified()
    rules = _institution_rules(conn, set(map(itemgetter(1), scans)), default_late_after)
    seen: set[tuple] = set()
    accept = out.accepted.append
    # Unpacked, not read by name: this loop runs once per scan.
    for scan_id, institution_id, card_uid, scanned_at, student_id, is_active, done_id in sorted(
            scans, key=itemgetter(3, 0)):  # by scanned_at, then id
        if student_id is None:
            out.failed[scan_id] = f"unknown card {card_uid!r} at institution {institution_id}"
            continue
        if not is_active:
            out.failed[scan_id] = f"student {student_id} (card {card_uid!r}) is inactive"
            continue
        # The student, not the card text: the server matched the card under the column's
        # collation (MySQL: "a1" is "A1 "), and scan_key's unique index compares the same way.
        # (MySQL's DATETIME has no microseconds: replace() is the costlier call.)
        key = (student_id,
               scanned_at.replace(microsecond=0) if scanned_at.microsecond else scanned_at)
        if done_id is not None or key in seen:
            out.duplicates.append(scan_id)
            continue
        seen.add(key)
        rule = rules[institution_id]
        if type(rule) is str:
            out.failed[scan_id] = rule
            continue
        clock, late_after = rule
        local = clock.local(scanned_at)
        accept(Accepted(scan_id, student_id, institution_id, scanned_at, local,
                        "late" if local.time() > late_after else "present"))
    return out


def _institution_rules(conn: Connection, institution_ids: set[int],
                       default_late_after: str) -> dict[int, tuple[LocalClock, dt.time] | str]:
    """Each institution's clock and late threshold, or why its scans fail."""
    rules: dict[int, tuple[LocalClock, dt.time] | str] = {}
    for row in conn.execute(
            select(institutions.c.id, institutions.c.timezone, institutions.c.late_after)
            .where(institutions.c.id.in_(sorted(institution_ids)))):
        clock = _local_clock(row.timezone)
        if clock is None:
            rules[row.id] = f"institution {row.id} has an unknown timezone {row.timezone!r}"
            continue
        try:
            rules[row.id] = (clock, _clock(row.late_after or default_late_after))
        except ValueError:
            rules[row.id] = (f"institution {row.id} has an invalid late_after "
                             f"{row.late_after!r} (expected HH:MM)")
    return rules


@dataclass
class DayGroup:
    institution_id: int
    first: Accepted
    last_scan_at: dt.datetime
    count: int


def group_by_day(accepted: list[Accepted]) -> dict[tuple[int, dt.date], DayGroup]:
    groups: dict[tuple[int, dt.date], DayGroup] = {}
    for scan in accepted:  # already in time order
        _scan_id, student_id, institution_id, scanned_at, local, _status = scan
        key = (student_id, local.date())
        group = groups.get(key)
        if group is None:
            groups[key] = DayGroup(institution_id, scan, scanned_at, 1)
        else:
            group.last_scan_at = max(group.last_scan_at, scanned_at)
            group.count += 1
    return groups


# The columns of scan_days that a record takes.
RECORD_COLUMNS = ["student_id", "attendance_date", "institution_id", "first_scan_at",
                  "last_scan_at", "scan_count", "status"]


def _day_columns() -> list[Column]:
    """One row per student-day of a batch, for the set-based statements of the records and
    arrivals: a record's columns, the first scan's local time ("HH:MM", which only the worker
    can compute: the server may not know the timezones), and whether the day is new (no record
    when the batch merged its records: its first scan is an arrival)."""
    r = attendance_records.c
    return [*(Column(name, r[name].type, primary_key=name in ("student_id", "attendance_date"))
              for name in RECORD_COLUMNS),
            Column("first_clock", String(5)),
            Column("is_new", Boolean)]


# "HH:MM" of each minute of a day, by hour * 60 + minute: a batch formats thousands.
CLOCK_TEXTS = tuple(f"{hour:02d}:{minute:02d}" for hour in range(24) for minute in range(60))


def _day_rows(groups: dict[tuple[int, dt.date], DayGroup]) -> list[tuple]:
    rows = []
    # The keys sorted alone, not the items: a list of (int, date) tuples sorts several times
    # faster than one of ((int, date), DayGroup).
    for key in sorted(groups):
        group = groups[key]
        first = group.first
        local = first.local
        rows.append((*key, group.institution_id, first.scanned_at, group.last_scan_at,
                     group.count, first.status, CLOCK_TEXTS[local.hour * 60 + local.minute],
                     True))
    return rows


def _text(dialect: str, *parts) -> ColumnElement:
    """`parts` (columns, or str) run together as text by the server. MySQL's CONCAT converts
    numbers and dates itself: a CAST would give the text the connection's collation, which
    may not be compared with a column's (the notifications' dedupe_key)."""
    parts = tuple(p if isinstance(p, ColumnElement) else literal(p, String) for p in parts)
    if dialect == "mysql":
        return func.concat(*parts)
    return functools.reduce(lambda left, right: left.op("||", return_type=String)(right), parts)


MONTHS = "JanFebMarAprMayJunJulAugSepOctNovDec"


def _spelled_date(dialect: str, day) -> ColumnElement:
    """`day` as "%d %b %Y" ("05 Mar 2026"), months in English whatever the server's
    lc_time_names."""
    if dialect == "mysql":
        number, month = func.date_format(day, literal_column("'%d'")), func.month(day)
        year = func.date_format(day, literal_column("'%Y'"))
    else:
        number, year = func.strftime("%d", day), func.strftime("%Y", day)
        month = cast(func.strftime("%m", day), Integer)
    return _text(dialect, number, " ", func.substr(MONTHS, month * 3 - 2, 3), " ", year)


def _iso_utc(dialect: str, moment) -> ColumnElement:
    """A UTC DATETIME column as Python's `isoformat() + "Z"` writes it (microseconds only
    when there are any: SQLite keeps them, MySQL's DATETIME does not)."""
    if dialect == "mysql":
        return func.date_format(moment, literal_column("'%Y-%m-%dT%H:%i:%sZ'"))
    fraction = func.substr(moment, 20)  # SQLAlchemy writes ".ffffff"
    return _text(dialect, func.replace(func.substr(moment, 1, 19), " ", "T"),
                 case((fraction.in_(["", ".000000"]), ""), else_=fraction), "Z")


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

    def lock_batch(self, conn: Connection, ctx: RunContext,
                   size: int) -> tuple[list[int], Sequence[Any]]:
        """The batch's scans (rows of batch_query), read by the statement that locks them."""
        locked = locked_ready(conn, self.queue, size, utcnow(), ctx.db.caps.skip_locked)
        scans = conn.execute(batch_query(conn.dialect.name, locked=locked)).all()
        return list(map(itemgetter(0), scans)), scans

    def work_locked(self, conn: Connection, ctx: RunContext, scans: Sequence[Any],
                    batch: StageStats) -> None:
        now = utcnow()
        result = classify(conn, scans, ctx.settings.scan_late_after)
        groups = group_by_day(result.accepted)
        if groups:
            with temporary_table(conn, "scan_days", _day_columns(), _day_rows(groups)) as days:
                existing = self._write_records(conn, days, now)
                batch.add("records_created", len(groups) - existing)
                batch.add("records_updated", existing)
                batch.add("notifications_created", self._notify_arrivals(conn, days, now))
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

    def _write_records(self, conn: Connection, days, now: dt.datetime) -> int:
        """Create or merge one record per student-day (`days`); returns how many existed.

        The records that exist are merged by an UPDATE, not by the upsert: on a duplicate key
        InnoDB inserts the row, rolls it back, then updates (twice the server's time, and an
        id spent). That UPDATE also writes into `days` which days had a record (`is_new`
        false), so no ids travel back and forth. On MySQL it is one statement, which locks,
        merges and flags each record at once: a record another worker creates meanwhile is
        merged by the upsert that follows, never by both. SQLite flags, then merges (its writer
        lock keeps every other writer out meanwhile).
        """
        r = attendance_records.c
        on_day = and_(r.student_id == days.c.student_id,
                      r.attendance_date == days.c.attendance_date)
        stamp = literal(now, DateTime)
        if conn.dialect.name == "mysql":
            # `+ 0`: a record is found from its day by the unique (student, date) key, but a day
            # cannot be found from its record, so the server reads the days first and locks
            # their records in (student, date) order, as every other worker's statements do.
            # Reading the records first (MariaDB's choice while the table holds fewer rows than
            # the batch) would lock every record, in id order.
            from_day = and_(r.student_id == days.c.student_id + 0,
                            r.attendance_date == days.c.attendance_date)
            conn.execute(update(attendance_records).where(from_day).ordered_values(
                *_merge_record(attendance_records, days.c, stamp), (days.c.is_new, False)))
        else:
            update_from(conn, days, attendance_records, on_day, lambda _new: [("is_new", False)])
            update_from(conn, attendance_records, days, and_(on_day, days.c.is_new == false()),
                        lambda new: _merge_record(attendance_records, new, stamp))
        upsert_from_select(
            conn, attendance_records, [*RECORD_COLUMNS, "created_at", "updated_at"],
            select(*(days.c[name] for name in RECORD_COLUMNS), stamp, stamp)
            .where(days.c.is_new == true())  # (SQLite: a WHERE, or the ON reads as a join's)
            .order_by(days.c.student_id, days.c.attendance_date),  # one lock order
            ["student_id", "attendance_date"],
            lambda table, new: dict(_merge_record(table, new, new.updated_at)))
        return conn.execute(
            select(func.count()).select_from(days).where(days.c.is_new == false())).scalar_one()

    def _notify_arrivals(self, conn: Connection, days, now: dt.datetime) -> int:
        """One notification per guardian of each new student-day, and its deliveries.

        Written by the server from the student-days, the students and guardian_students: the
        worker sends only what the server cannot compute (the local time of the first scan).
        """
        dialect = conn.dialect.name
        day, name = days.c, students.c.name
        n, gs = notifications.c, guardian_students.c
        new_days = day.is_new == true()
        stamp = literal(now, DateTime)
        dedupe_key = _text(dialect, "arrival:", day.student_id, ":", day.attendance_date, ":",
                           gs.guardian_id)
        body = _text(dialect, name, " arrived at ", day.first_clock, " on ",
                     _spelled_date(dialect, day.attendance_date), " (", day.status, ").")
        data = func.json_object(
            "type", "arrival", "student_id", day.student_id,
            "attendance_date", _text(dialect, day.attendance_date), "status", day.status,
            "first_scan_at", _iso_utc(dialect, day.first_scan_at))
        # The notifications written next get ids above every one this transaction sees now
        # (auto-increment values and SQLite's rowids only grow): the fan-out reads them by
        # primary key, not each by its dedupe_key, a string built and compared per row.
        seen_up_to = conn.execute(select(func.coalesce(func.max(n.id), 0))).scalar_one()
        insert_ignore_from_select(
            conn, notifications,
            ["guardian_id", "student_id", "kind", "title", "body", "data", "dedupe_key",
             "created_at", "fanout_status", "fanned_out_at"],
            select(gs.guardian_id, day.student_id, literal("arrival"),
                   _text(dialect, name, " arrived"), body, data, dedupe_key,
                   stamp, literal("done"), stamp)
            .select_from(days.join(students, students.c.id == day.student_id)
                         .join(guardian_students, gs.student_id == day.student_id))
            .where(new_days)
            # By day only, read in that order from scan_days' key, each student's guardians in
            # order from guardian_students' student index: ordering by the guardian too had
            # MariaDB copy the joined rows into an on-disk temporary table to sort them.
            .order_by(day.student_id, day.attendance_date)
            .prefix_with("STRAIGHT_JOIN", dialect="mysql"),
            ["dedupe_key"])
        # Fanned out here, in the same transaction, rather than claimed again by the fan-out
        # stage. Only what this batch wrote: one that was there already is fanned out by its
        # writer (another batch, or the fan-out stage). Arrivals another batch committed
        # meanwhile, in the same second, would pass these conditions too: the unique
        # (notification, device) key makes fanning them out again add nothing.
        fan_out(conn, now,
                which=and_(n.id > seen_up_to, n.kind == "arrival", n.created_at == stamp))
        # Offered, as insert_ignore counts: the same figure on every database.
        pairs = days.join(guardian_students, gs.student_id == day.student_id)
        return conn.execute(select(func.count()).select_from(pairs).where(new_days)).scalar_one()

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
            batch_query(conn.dialect.name, self.queue.ready(utcnow())).limit(limit)).all()
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
