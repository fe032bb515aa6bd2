"""Stage 6: queued report emails, rendered and sent over SMTP (or written to the outbox).

Report types (docs/workers.md):
- `attendance`: params {"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"} (at most 366 days): the
  institution's attendance records in that range as a CSV attachment, with a summary in the body.
A bad request (unknown type, bad params, no such institution) or a recipient the server refuses
for good (5xx) fails the row at once; a connection problem or a 4xx retries later with backoff,
until `worker_max_attempts`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import smtplib
from dataclasses import dataclass
from typing import Any, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, select, update

from ...mail import Mailer, SmtpLoginRefused, SmtpUnreachable
from ...queue import QUEUES, backoff_seconds, extend_lease, release, still_owned
from ...runtime import RunContext
from ...schema import attendance_records, institutions, report_email_queue, students
from ...timeutil import utcnow
from .base import Stage, StagePlan, StageStats, warn_once

log = logging.getLogger(__name__)
rq = report_email_queue
MAX_REPORT_DAYS = 366


class BadReport(Exception):
    """The request cannot be rendered, whatever we retry."""


@dataclass
class Report:
    subject: str
    body: str
    filename: str
    csv_text: str


def _params(raw: Any) -> dict:
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, (str, bytes)):
        raise BadReport(f"params must be a JSON object, not {type(raw).__name__}")
    try:
        value = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise BadReport(f"params are not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadReport("params must be a JSON object")
    return value


def _date(params: dict, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(params[name]))
    except KeyError:
        raise BadReport(f"params.{name} is missing (YYYY-MM-DD)") from None
    except ValueError:
        raise BadReport(f"params.{name} is not a date (YYYY-MM-DD): {params[name]!r}") from None


def attendance_range(params: dict) -> tuple[dt.date, dt.date]:
    """The (from, to) dates of an attendance report request, checked."""
    start, end = _date(params, "from"), _date(params, "to")
    if end < start:
        raise BadReport(f"params.to ({end}) is before params.from ({start})")
    if (end - start).days + 1 > MAX_REPORT_DAYS:
        raise BadReport(f"the range is longer than {MAX_REPORT_DAYS} days")
    return start, end


def render_attendance_report(conn: Connection, institution_id: int, params: dict) -> Report:
    start, end = attendance_range(params)
    institution = conn.execute(select(institutions.c.name, institutions.c.timezone)
                               .where(institutions.c.id == institution_id)).first()
    if institution is None:
        raise BadReport(f"institution {institution_id} does not exist")
    try:
        zone = ZoneInfo(institution.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = dt.timezone.utc
    r, s = attendance_records, students
    rows = conn.execution_options(stream_results=True, yield_per=2000).execute(
        select(r.c.attendance_date, r.c.student_id, s.c.name, s.c.class_name, r.c.status,
               r.c.first_scan_at, r.c.last_scan_at, r.c.scan_count)
        .select_from(r.join(s, s.c.id == r.c.student_id))
        .where(r.c.institution_id == institution_id,
               r.c.attendance_date.between(start, end))
        .order_by(r.c.attendance_date, s.c.class_name, s.c.name, r.c.student_id))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["date", "student_id", "student", "class", "status", "first_scan_local",
                     "last_scan_local", "scan_count"])
    totals = {"present": 0, "late": 0}
    days: set[dt.date] = set()

    def local(value: dt.datetime) -> str:
        return value.replace(tzinfo=dt.timezone.utc).astimezone(zone).strftime("%H:%M:%S")

    for row in rows:
        writer.writerow([row.attendance_date.isoformat(), row.student_id, row.name,
                         row.class_name, row.status, local(row.first_scan_at),
                         local(row.last_scan_at), row.scan_count])
        totals[row.status] = totals.get(row.status, 0) + 1
        days.add(row.attendance_date)
    records = sum(totals.values())
    body = (
        f"Attendance report for {institution.name}\n"
        f"Period: {start.isoformat()} to {end.isoformat()} ({institution.timezone})\n\n"
        f"Days with attendance: {len(days)}\n"
        f"Attendance records: {records}\n"
        f"Present (on time): {totals.get('present', 0)}\n"
        f"Late: {totals.get('late', 0)}\n\n"
        "The attached CSV has one line per student per day attended.\n"
    )
    return Report(
        subject=f"Attendance report: {institution.name}, {start.isoformat()} to {end.isoformat()}",
        body=body,
        filename=f"attendance-{institution_id}-{start.isoformat()}-{end.isoformat()}.csv",
        csv_text=buffer.getvalue(),
    )


RENDERERS = {"attendance": render_attendance_report}
CHECKS = {"attendance": attendance_range}  # what can be checked without rendering (dry run)


def request_problem(row, institution_ids: set[int]) -> str | None:
    """Why a queued request would fail at once, or None (the dry run's check)."""
    try:
        check = CHECKS.get(row.report_type)
        if check is None:
            raise BadReport(f"unknown report type {row.report_type!r}")
        check(_params(row.params))
        if row.institution_id not in institution_ids:
            raise BadReport(f"institution {row.institution_id} does not exist")
    except BadReport as exc:
        return str(exc)
    return None


def _permanent_smtp_error(exc: Exception) -> bool:
    """True when sending this message again cannot succeed: a 5xx reply, or a message smtplib
    refuses to send (an address needing SMTPUTF8 the server does not offer, no recipient)."""
    if isinstance(exc, (smtplib.SMTPNotSupportedError, ValueError)):
        return True
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _msg in exc.recipients.values())
    code = getattr(exc, "smtp_code", None)
    return isinstance(code, int) and code >= 500


class EmailStage(Stage):
    name = "emails"
    queue = QUEUES["emails"]
    batch_size = 20

    def __init__(self) -> None:
        self._mailer: Mailer | None = None
        # Set when the SMTP server could not be reached in this run's lane: when to try again.
        # The rows not tried yet are deferred to then instead of each waiting for its own
        # timeout (20 rows x smtp_timeout_seconds could outlast the lease). Each lane learns it
        # once: N lanes spend N timeouts on a server that is down, not one per row.
        self._unreachable_until: dt.datetime | None = None

    def close(self) -> None:
        if self._mailer is not None:
            self._mailer.close()

    def process(self, ctx: RunContext, keys: Sequence[int], stats: StageStats,
                leased_at: dt.datetime) -> None:
        if self._mailer is None:
            self._mailer = Mailer(ctx.settings)
            if self._mailer.uses_outbox:
                warn_once(ctx, "email outbox",
                          "emails: no SMTP configured; messages go to the outbox %s",
                          self._mailer.outbox)
        rows = ctx.db.run(lambda conn: conn.execute(
            select(rq).where(self.queue.owned_by(ctx.run_id, keys)).order_by(rq.c.id)).all(),
            write=False, what="emails read")
        stats.lost += len(keys) - len(rows)
        for index, row in enumerate(rows):
            if self._unreachable_until is not None:
                self._defer(ctx, [r.id for r in rows[index:]], self._unreachable_until, stats)
                return
            rest = [r.id for r in rows[index:]]
            if index and ctx.why_stop():
                stats.released += ctx.db.run(
                    lambda conn: release(conn, self.queue, ctx.run_id, rest), what="release")
                return
            # A slow SMTP server must not let the lease run out under rows still to send:
            # another run would recover and send them too. One taken over already is not sent.
            held = extend_lease(ctx.db, self.queue, ctx.run_id, rest,
                                ctx.settings.worker_lease_seconds, utcnow())
            if row.id not in held.keys:
                stats.lost += 1
                continue
            try:
                self._send_one(ctx, row, stats)
            except SmtpLoginRefused as exc:
                # Every report would fail the same way: the orchestrator gives the batch back
                # (attempts not spent) and stops this stage; say so where cron mails it.
                log.error("emails stage stopped: %s", exc)
                raise

    def _send_one(self, ctx: RunContext, row, stats: StageStats) -> None:
        now = utcnow()
        s = ctx.settings
        try:
            renderer = RENDERERS.get(row.report_type)
            if renderer is None:
                raise BadReport(f"unknown report type {row.report_type!r}")
            report = ctx.db.run(lambda conn: renderer(conn, row.institution_id,
                                                      _params(row.params)),
                                write=False, what="report")
            try:
                message = self._mailer.new_message(row.recipient, report.subject, report.body)
                message.add_attachment(report.csv_text.encode("utf-8"), maintype="text",
                                       subtype="csv", filename=report.filename)
            except (ValueError, TypeError) as exc:  # a recipient with a line break, ...
                raise BadReport(f"cannot build the message for {row.recipient!r}: {exc}") from exc
            self._mailer.send(message)
        except BadReport as exc:
            self._finish(ctx, row.id, stats, "failed", **self.queue.finished_values("failed", now),
                         error=str(exc)[:500])
            return
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            # (SmtpLoginRefused is neither: it stops the stage and gives the batch back.)
            self._mailer.close()  # a broken connection is not reused
            error = f"{type(exc).__name__}: {exc}"[:500]
            if _permanent_smtp_error(exc) or row.attempts >= s.worker_max_attempts:
                self._finish(ctx, row.id, stats, "failed",
                             **self.queue.finished_values("failed", now), error=error)
            else:
                due = now + dt.timedelta(seconds=backoff_seconds(
                    row.attempts, s.worker_backoff_seconds, s.worker_backoff_cap_seconds))
                self._finish(ctx, row.id, stats, "retried", error=error, available_at=due)
            if isinstance(exc, SmtpUnreachable):
                self._unreachable_until = now + dt.timedelta(seconds=backoff_seconds(
                    1, s.worker_backoff_seconds, s.worker_backoff_cap_seconds))
            return
        if self._finish(ctx, row.id, stats, "done", **self.queue.finished_values("sent", now),
                        sent_at=now, error=None) \
                and self._mailer.uses_outbox:
            stats.add("to_outbox")

    def plan(self, conn: Connection, ctx: RunContext, limit: int) -> StagePlan:
        queued = conn.execute(
            select(rq.c.id, rq.c.institution_id, rq.c.report_type, rq.c.params)
            .where(self.queue.ready(utcnow())).order_by(rq.c.id).limit(limit)).all()
        known = set(conn.execute(select(institutions.c.id).where(
            institutions.c.id.in_(sorted({r.institution_id for r in queued})))).scalars())
        would_fail = sum(1 for r in queued if request_problem(r, known))
        s = ctx.settings
        target = (f"SMTP {s.smtp_host}:{s.smtp_port}" if s.smtp_host
                  else f"the outbox {Mailer(s).outbox} (no SMTP configured)")
        return StagePlan({"would_fail_bad_request": would_fail},
                         note=f"emails: would send through {target}")

    def _defer(self, ctx: RunContext, ids: list[int], due: dt.datetime,
               stats: StageStats) -> None:
        """Give rows back untried (attempts not spent), not to be claimed before `due`."""

        def work(conn: Connection) -> int:
            conn.execute(update(rq).where(self.queue.owned_by(ctx.run_id, ids))
                         .values(available_at=due))
            return release(conn, self.queue, ctx.run_id, ids)

        deferred = ctx.db.run(work, what="emails defer")
        stats.released += deferred
        stats.add("deferred_smtp_unreachable", deferred)

    def _finish(self, ctx: RunContext, row_id: int, stats: StageStats, figure: str,
                **values: Any) -> bool:
        """Write a report's outcome if the row is still this run's, counted as `figure`
        (done, failed, retried); one another run took over is counted lost. True if written."""

        def work(conn: Connection) -> bool:
            if not still_owned(conn, self.queue, ctx.run_id, [row_id]).keys:
                return False
            conn.execute(update(rq).where(rq.c.id == row_id)
                         .values(claimed_by=None, lease_expires_at=None, **values))
            return True

        written = ctx.db.run(work, what="emails write-back")
        figure = figure if written else "lost"
        setattr(stats, figure, getattr(stats, figure) + 1)
        return written
