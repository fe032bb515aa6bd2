"""Compare the reporting figures of the primary with a read replica or a warehouse copy.

Rules (docs/tools/shadow_reporting_validation.md):
- Three areas, each one grouped query run unchanged on both sides: attendance records per
  (attendance_date, institution_id); attendance roll-ups per (attendance_date, institution_id);
  invoices per (period_start, period_end, institution_id, status).
- The window is days: `start` inclusive, `end` exclusive. Attendance is compared for the days in
  it; invoices for every billing period that overlaps it (a period is the operator's "the
  billing of those days": a 7-day window inside a month still checks that month's invoices).
- The target's replication lag is read before and after the comparison, the larger counts.
  Its writes from `now - lag` on may still be on their way, so a mismatching group whose last
  day is on or after the horizon's day is "inconclusive", not a failure. Replication stopped
  (lag unknown) makes the whole window inconclusive; a target that is no replica has no lag.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ..db import Database, connect, describe_db_error, sqlite_file
from ..errors import BadInput, DatabaseUnavailable, PreconditionFailed
from ..replica import NOT_A_REPLICA, Lag, describe_lag, read_lag
from ..result import JobResult
from ..runtime import RunContext
from ..schema import attendance_records, attendance_rollups, invoices
from ..settings import Settings
from ..timeutil import utcnow

DEFAULT_DAYS = 7
MISMATCH = "mismatch"
INCONCLUSIVE = "inconclusive"
ERROR_ROWS_NAMED = 3  # mismatching rows named in the one-line error; all are in the sections
# The horizon of a replica whose replication is stopped: every write may be missing.
STOPPED = dt.datetime.min

NO_TARGET = ("no target database to compare with: give --target-url URL, or set "
             "OPS_VALIDATION_TARGET_URL (or OPS_REPLICA_DATABASE_URL, the read replica)")


@dataclass(frozen=True)
class Window:
    """The days compared: `start` inclusive, `end` exclusive."""

    start: dt.date
    end: dt.date

    def __str__(self) -> str:
        return f"{self.start} to {self.end} (exclusive)"


def lag_horizon(now: dt.datetime, *lags: Lag) -> dt.datetime | None:
    """From when on the target may still miss the primary's writes: `now` minus the largest lag;
    STOPPED when replication is stopped (lag unknown); None for a target that is no replica."""
    known = [lag for lag in lags if lag != NOT_A_REPLICA]
    if not known:
        return None
    if any(lag is None for lag in known):
        return STOPPED
    return now - dt.timedelta(seconds=max(known))


def default_window(now: dt.datetime, lag: Lag, days: int = DEFAULT_DAYS) -> Window:
    """The last `days` days, ending before the day the replica's lag reaches into (today for a
    target with no lag: today's figures are still being written)."""
    horizon = lag_horizon(now, lag)
    end = horizon.date() if horizon not in (None, STOPPED) else now.date()
    return Window(end - dt.timedelta(days=days), end)


def choose_window(date_from: dt.date | None, date_to: dt.date | None, now: dt.datetime,
                  lag: Lag) -> Window:
    """The operator's window; a missing end is the default end, a missing start 7 days back."""
    end = date_to or default_window(now, lag).end
    start = date_from or end - dt.timedelta(days=DEFAULT_DAYS)
    problem = window_problem(start, end)
    if problem:
        raise BadInput(problem)
    return Window(start, end)


def window_problem(start: dt.date, end: dt.date) -> str | None:
    if start < end:
        return None
    return f"--from {start} must be before --to {end} (--to is the first day not compared)"


def first_day_in_lag(window: Window, horizon: dt.datetime | None) -> dt.date | None:
    """The first day of the window whose figures the lag may still change; None: no such day.

    A day is settled when it ended (midnight UTC after it) at or before the horizon."""
    if horizon is None:
        return None
    first = max(window.start, horizon.date())
    return first if first < window.end else None


@dataclass(frozen=True)
class Area:
    """One reporting figure set: a grouped query and which of its columns are the key."""

    name: str
    keys: tuple[str, ...]
    figures: tuple[str, ...]
    last_day: str  # the key column holding the group's last day (for the lag)
    statement: Select


def areas(window: Window) -> list[Area]:
    """The three grouped statements, built once and run unchanged on both sides."""
    records, rollups = attendance_records, attendance_rollups
    return [
        Area("attendance_records", ("attendance_date", "institution_id"),
             ("records", "present", "late"), "attendance_date",
             select(records.c.attendance_date, records.c.institution_id,
                    func.count().label("records"),
                    func.sum(case((records.c.status == "present", 1), else_=0)).label("present"),
                    func.sum(case((records.c.status == "late", 1), else_=0)).label("late"))
             # Both flag values: the archive's index (is_archived, attendance_date) is the
             # only one that reads just the window's days (without it, the whole table).
             .where(records.c.is_archived.in_([False, True]),
                    records.c.attendance_date >= window.start,
                    records.c.attendance_date < window.end)
             .group_by(records.c.attendance_date, records.c.institution_id)),
        Area("attendance_rollups", ("attendance_date", "institution_id"),
             ("classes", "present", "late", "absent", "enrolled"), "attendance_date",
             select(rollups.c.attendance_date, rollups.c.institution_id,
                    func.count().label("classes"),
                    func.sum(rollups.c.present_count).label("present"),
                    func.sum(rollups.c.late_count).label("late"),
                    func.sum(rollups.c.absent_count).label("absent"),
                    func.sum(rollups.c.enrolled_count).label("enrolled"))
             .where(rollups.c.attendance_date >= window.start,
                    rollups.c.attendance_date < window.end)
             .group_by(rollups.c.attendance_date, rollups.c.institution_id)),
        # A period overlaps the window: it starts before the window ends and ends (its last
        # day, inclusive) on or after the window's first day.
        Area("invoices", ("period_start", "period_end", "institution_id", "status"),
             ("invoices", "amount_minor"), "period_end",
             select(invoices.c.period_start, invoices.c.period_end, invoices.c.institution_id,
                    invoices.c.status, func.count().label("invoices"),
                    func.sum(invoices.c.amount_minor).label("amount_minor"))
             .where(invoices.c.period_start < window.end,
                    invoices.c.period_end >= window.start)
             .group_by(invoices.c.period_start, invoices.c.period_end,
                       invoices.c.institution_id, invoices.c.status)),
    ]


Figures = dict[tuple, tuple[int, ...]]


def compare(area: Area, primary: Figures, target: Figures,
            first_lag_day: dt.date | None) -> list[dict[str, Any]]:
    """The mismatching groups of one area (a full outer join by key), sorted by key, with the
    figures that differ on each side (None: the group is missing on that side)."""
    last_day = area.keys.index(area.last_day)
    rows = []
    for key in sorted(primary.keys() | target.keys()):
        ours, theirs = primary.get(key), target.get(key)
        if ours == theirs:
            continue
        differ = [index for index, name in enumerate(area.figures)
                  if ours is None or theirs is None or ours[index] != theirs[index]]
        inside = first_lag_day is not None and key[last_day] >= first_lag_day
        rows.append({
            **dict(zip(area.keys, key)),
            "primary": None if ours is None else {area.figures[i]: ours[i] for i in differ},
            "target": None if theirs is None else {area.figures[i]: theirs[i] for i in differ},
            "verdict": INCONCLUSIVE if inside else MISMATCH,
        })
    return rows


def target_url(settings: Settings) -> tuple[str | None, str]:
    """The target's URL and the setting it came from (validation_target_url, else the replica)."""
    if settings.validation_target_url:
        return settings.validation_target_url, "validation_target_url"
    return settings.replica_database_url, "replica_database_url"


def problems(settings: Settings, date_from: dt.date | None, date_to: dt.date | None) -> list[str]:
    """Everything wrong with the input, found before connecting."""
    found = [window_problem(date_from, date_to)] if date_from and date_to else []
    if target_url(settings)[0] is None:
        found.append(NO_TARGET)
    return [problem for problem in found if problem]


def open_target(url: str) -> Database:
    file = sqlite_file(url) if make_url(url).get_backend_name() == "sqlite" else None
    if file is not None and not file.is_file():  # never create it, and never suggest creating it
        raise BadInput(f"target: no SQLite database at {file}")
    try:
        return connect(url)
    except DatabaseUnavailable as exc:
        raise DatabaseUnavailable(f"target: {exc}") from exc


def read_figures(side: str, database: Database, checked: list[Area]) -> list[Figures]:
    """Each area's figures on one side, in one read-only transaction."""
    def read(conn) -> list[Figures]:
        found = []
        for area in checked:
            width = len(area.keys)
            found.append({tuple(row[:width]): tuple(int(value) for value in row[width:])
                          for row in conn.execute(area.statement)})
        return found

    try:
        return database.run(read, write=False, what=f"{side} figures")
    except DBAPIError as exc:
        raise PreconditionFailed(
            f"{side} {database.display_url}: cannot read the figures: {describe_db_error(exc)}"
        ) from exc


def _read_lag(target: Database) -> Lag:
    try:
        return read_lag(target)
    except PreconditionFailed as exc:
        raise PreconditionFailed(f"target {target.display_url}: {exc}") from exc


def _sql(database: Database, statement: Select) -> str:
    compiled = statement.compile(dialect=database.engine.dialect,
                                 compile_kwargs={"literal_binds": True})
    return " ".join(str(compiled).split()) + ";"


def _named(area: Area, row: dict[str, Any]) -> str:
    key = " ".join(f"{name}={row[name]}" for name in area.keys)
    if row["primary"] is None or row["target"] is None:
        return f"{area.name} {key} (missing on {'primary' if row['primary'] is None else 'target'})"
    figures = ", ".join(f"{name} {value} vs {row['target'][name]}"
                        for name, value in row["primary"].items())
    return f"{area.name} {key} ({figures})"


def _one_line(found: list[tuple[Area, dict[str, Any]]]) -> str:
    named = [_named(area, row) for area, row in found[:ERROR_ROWS_NAMED]]
    more = f"; {len(found) - len(named)} more" if len(found) > len(named) else ""
    return f"{len(found)} mismatching rows (primary vs target): " + "; ".join(named) + more


def judge(result: JobResult, checked: list[Area], primary: list[Figures],
          target: list[Figures], first_lag_day: dt.date | None) -> None:
    """Sections, counts and verdict: a mismatch outside the lag fails the run (exit 1, alert);
    mismatches only inside it are inconclusive (exit 1, status ok); none: equal (exit 0)."""
    found: list[tuple[Area, dict[str, Any]]] = []
    groups = 0
    for area, ours, theirs in zip(checked, primary, target):
        rows = compare(area, ours, theirs, first_lag_day)
        groups += len(ours.keys() | theirs.keys())
        found.extend((area, row) for row in rows)
        result.section(area.name, rows,
                       columns=[*area.keys, "primary", "target", "verdict"])
    failures = [(area, row) for area, row in found if row["verdict"] == MISMATCH]
    inconclusive = len(found) - len(failures)
    result.counts.update(areas_checked=len(checked), groups_compared=groups,
                         mismatches=len(failures), inconclusive=inconclusive)
    if failures:
        result.status = "failed"
        result.error = _one_line(failures)
        result.stop_reason = f"{len(failures)} mismatching rows" + (
            f", {inconclusive} inconclusive (inside the replica lag)" if inconclusive else "")
        result.exit_code = 1
    elif inconclusive:
        result.stop_reason = (f"inconclusive: {inconclusive} mismatching rows inside the replica "
                              "lag; run again once the replica has caught up")
        result.exit_code = 1
    else:
        result.stop_reason = f"equal: {groups} groups in {len(checked)} areas"
        result.exit_code = 0


def run(ctx: RunContext, date_from: dt.date | None = None,
        date_to: dt.date | None = None) -> JobResult:
    result = JobResult(ctx.tool, ctx.dry_run)
    url, source = target_url(ctx.settings)
    if url is None:
        raise BadInput(NO_TARGET)
    target = open_target(url)
    try:
        return _compare(ctx, result, target, source, date_from, date_to)
    finally:
        target.engine.dispose()


def _compare(ctx: RunContext, result: JobResult, target: Database, source: str,
             date_from: dt.date | None, date_to: dt.date | None) -> JobResult:
    started = utcnow()
    lag_before = _read_lag(target)
    window = choose_window(date_from, date_to, started, lag_before)
    checked = areas(window)
    clock = time.perf_counter()
    primary = read_figures("primary", ctx.db, checked)
    result.timings["primary"] = time.perf_counter() - clock
    clock = time.perf_counter()
    copy = read_figures("target", target, checked)
    result.timings["target"] = time.perf_counter() - clock
    lag_after = _read_lag(target)
    horizon = lag_horizon(started, lag_before, lag_after)
    first_lag_day = first_day_in_lag(window, horizon)

    judge(result, checked, primary, copy, first_lag_day)
    same = make_url(target.url) == make_url(ctx.db.url)
    result.notes.append(f"target {target.display_url} ({source}, {ctx.settings.source(source)})"
                        + (": the primary itself, nothing to compare" if same else ""))
    if lag_before == NOT_A_REPLICA and lag_after == NOT_A_REPLICA:
        result.notes.append("target lag: not a replica (a copy): every mismatch is a failure")
    else:
        result.notes.append(f"target lag: {describe_lag(lag_before)} before the comparison, "
                            f"{describe_lag(lag_after)} after")
    result.notes.append(f"window: attendance_date {window}; invoices of every period "
                        "overlapping it")
    if first_lag_day is not None:
        since = ("replication stopped" if horizon is STOPPED
                 else f"writes since {horizon:%Y-%m-%d %H:%M:%S} UTC may not have arrived")
        result.notes.append(f"inside the lag, a mismatch is inconclusive: the days from "
                            f"{first_lag_day} on ({since})")
    result.statements.extend(_sql(ctx.db, area.statement) for area in checked)
    return result
