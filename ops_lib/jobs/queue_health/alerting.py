"""`queue_health_summary.py --alert`: alert when the overall state changes, not every 15 minutes.

The previous state is the one this tool's last `--alert` run recorded in the run ledger
(`ops_job_runs`: its `args` say `alert`, its `counts` hold `state`); no table of its own.

- worse than the previous state (or, on the first run ever, anything but OK): the email and the
  ping `/fail`;
- back to OK from anything else: the email and the success ping, once;
- the same state, or better but not OK (CRITICAL -> WARNING): nothing; the ledger row records the
  new state, so WARNING -> CRITICAL later alerts again;
- UNKNOWN (the check could not check): nothing here, the run is a failed run and run_tool's
  failure alert already fires for it. Such a run records no usable state and is skipped when the
  next run looks for the previous one.
"""

from __future__ import annotations

import json
import logging
import socket

from sqlalchemy import and_, or_, select

from ... import alerts
from ...runtime import RunContext
from ...schema import ops_job_runs
from .model import OK, STATE_NAMES, UNKNOWN, HealthReport

log = logging.getLogger("ops")
PAGE = 100  # ledger rows read at a time while looking for the last --alert run
# How the ledger's JSON writer (json.dumps) spells the flag in `args`: the server skips the runs
# without it; each candidate is then read back with json.loads, which has the last word.
ALERT_ARG = json.dumps({"alert": True})[1:-1]


def alert_on_change(ctx: RunContext, report: HealthReport) -> str | None:
    """Send the alert the change from the last --alert run calls for; a note for the result
    when one was due ("alert sent: OK -> CRITICAL (scans latency)"), None otherwise."""
    current = report.state
    if current == UNKNOWN:
        return None
    if ctx.stop.is_set():  # its ledger row says interrupted: the next --alert run decides
        log.warning("interrupted: no alert from this run; the next --alert run compares")
        return None
    previous = previous_alert_state(ctx)
    if not alert_due(previous, current):
        if previous is not None and previous != current:
            log.info("queue health %s -> %s: better but not OK, no alert",
                     STATE_NAMES[previous], STATE_NAMES[current])
        return None
    change = f"{STATE_NAMES[previous] if previous is not None else 'first check'} -> " \
             f"{STATE_NAMES[current]}"
    worse = current != OK
    subject = _subject(report, previous, worse)
    sent = alerts.state_changed(ctx.settings, subject, _body(ctx, report, previous), worse)
    what = f"{change} ({report.worst})" if worse and report.worst else change
    if not sent:
        return f"alert due but not sent (no alert_email or alert_ping_url took it): {what}"
    return f"alert sent ({' and '.join(sent)}): {what}"


def alert_due(previous: int | None, current: int) -> bool:
    """Whether going from `previous` (None: no earlier --alert run) to `current` alerts."""
    if current == UNKNOWN:
        return False
    if previous is None:
        return current != OK
    return current > previous or (current == OK and previous != OK)


def previous_alert_state(ctx: RunContext) -> int | None:
    """The state this tool's last finished --alert run found (OK, WARNING or CRITICAL), or None.

    Runs with status `ok` count, and `interrupted` ones that recorded a state (a signal after
    the alert went out must not send it again); a run that could not check (UNKNOWN, failed)
    compared nothing. A read-only tool's runs are all recorded as dry runs, so dry_run is not a filter.
    Newest first along ix_ops_job_runs_freshness (tool, status, finished_at), the server passing
    over runs without --alert; a page at a time in case a row only looks like one.
    """
    r = ops_job_runs
    newest_first = (r.c.finished_at.desc(), r.c.id.desc())
    base = select(r.c.id, r.c.finished_at, r.c.args, r.c.counts).where(
        r.c.tool == ctx.tool, r.c.status.in_(("ok", "interrupted")), r.c.finished_at.is_not(None),
        r.c.run_id != ctx.run_id, r.c.args.contains(ALERT_ARG, autoescape=True))
    after = None
    while True:
        query = base
        if after is not None:
            finished_at, row_id = after
            query = query.where(or_(r.c.finished_at < finished_at,
                                    and_(r.c.finished_at == finished_at, r.c.id < row_id)))
        rows = ctx.db.run(lambda conn: conn.execute(
            query.order_by(*newest_first).limit(PAGE)).all(), write=False, what="ledger")
        for row in rows:
            state = _alert_run_state(row.args, row.counts)
            if state is not None:
                return state
        if len(rows) < PAGE:
            return None
        after = (rows[-1].finished_at, rows[-1].id)


def _alert_run_state(args: str | None, counts: str | None) -> int | None:
    """The state an --alert run recorded; None for a run without --alert or without a state."""
    try:
        if not (json.loads(args or "{}") or {}).get("alert"):
            return None
        state = (json.loads(counts or "{}") or {}).get("state")
    except (ValueError, AttributeError):  # a row some other version wrote: not ours to judge
        return None
    return state if state in STATE_NAMES and state != UNKNOWN else None


def _subject(report: HealthReport, previous: int | None, worse: bool) -> str:
    host = socket.gethostname()
    if worse:
        worst = f": {report.worst}" if report.worst else ""
        return f"[ops] queue health {report.state_name} on {host}{worst}"
    return f"[ops] queue health OK again on {host} (was {STATE_NAMES[previous]})"


def _body(ctx: RunContext, report: HealthReport, previous: int | None) -> str:
    was = f"was {STATE_NAMES[previous]} at the previous check" if previous is not None \
        else "the first check with --alert"
    lines = [
        f"Queue health is {report.state_name} ({was}).",
        *([f"Worst: {report.worst}"] if report.worst and report.state != OK else []),
        f"Checked: {report.checked_at:%Y-%m-%d %H:%M:%S} UTC",
        f"Database: {report.database}",
        f"Run: {ctx.run_id}",
        "",
    ]
    problems = [(q.state, f"queue {q.name}", q.reasons) for q in report.queues if q.state != OK]
    problems += [(t.state, f"tool {t.tool} ({t.freshness})", t.reasons)
                 for t in report.tools if t.state != OK]
    if problems:
        lines.append("Not OK:")
        for state, item, reasons in sorted(problems, key=lambda p: -p[0]):
            lines.append(f"  {STATE_NAMES[state]:<8}  {item}: {'; '.join(reasons) or '-'}")
    else:
        lines.append("Every queue and scheduled tool is within its thresholds.")
    lines += [
        "",
        "Sent once when the state gets worse and once when it is OK again; the checks in",
        "between stay quiet. Details: tools/queue_health_summary.py (or its --html page).",
    ]
    return "\n".join(lines) + "\n"
