"""The status page (`queue_health_summary.py --html FILE`): one self-contained HTML file.

Styles inline, marks and bars drawn with CSS, no script needed and nothing fetched, so it works
opened from disk or served by any web server. Every value is escaped. A state is always said in
words as well as colour (and each run mark carries a glyph), for colour-blind readers and paper.
One tiny inline script only marks the page stale when it is read long after it was written.
"""

from __future__ import annotations

import datetime as dt
import os
from html import escape
from typing import Any, Iterable

from ...files import write_atomically
from .freshness import duration_in_words
from .model import (
    CRITICAL,
    NOT_JUDGED,
    OK,
    STATE_NAMES,
    UNKNOWN,
    WARNING,
    HealthReport,
    QueueHealth,
    Run,
    ToolHealth,
)
from .outputs import figure

STATE_CLASS = {OK: "ok", WARNING: "warning", CRITICAL: "critical", UNKNOWN: "unknown"}
# A run's mark in the strip: glyph and words, so the strip reads without its colours.
RUN_MARKS = {
    "ok": ("\u2713", "ok"),
    "failed": ("\u2717", "failed"),
    "skipped": ("\u2013", "skipped (another run held the lock)"),
    "interrupted": ("!", "interrupted"),
    "abandoned": ("?", "abandoned (the process died)"),
    "running": ("\u2026", "running"),
}
STRIP_LENGTH = 20
QUEUE_FIGURES = [  # (attribute, column heading, what it counts)
    ("due", "Due", "pending rows available now"),
    ("delayed", "Delayed", "pending rows not available yet (retries backing off)"),
    ("claimed", "Claimed", "held by a run whose lease is live"),
    ("expired", "Expired claims", "held by a run whose lease ran out"),
    ("dead", "Dead", "dead-lettered"),
    ("failed_last_hour", "Failed 1 h", "failed in the last hour"),
    ("done_last_15_minutes", "Done 15 min", "finished in the last 15 minutes"),
]


def write_status_page(path: str | os.PathLike, report: HealthReport,
                      readiness: list[dict[str, Any]]) -> None:
    """Write the status page atomically: a reader sees the old page or the new one."""
    write_atomically(path, render_status_page(report, readiness))


def render_status_page(report: HealthReport, readiness: list[dict[str, Any]]) -> str:
    """The status page's HTML."""
    title = f"Queue health: {report.state_name}"
    if report.worst and report.state != OK:
        title += f" ({report.worst})"
    stale_at = _stale_at(report.checked_at)
    body = "\n".join([
        _header(report, stale_at),
        _counters(report),
        _queues(report),
        _tools(report),
        _failures(report),
        _readiness(readiness),
        _footer(report, stale_at),
    ])
    return _DOCUMENT.format(title=escape(title), css=_CSS, body=body,
                            state=STATE_CLASS[report.state])


# ---------------------------------------------------------------------------------------------
# Sections


def _header(report: HealthReport, stale_at: dt.datetime | None) -> str:
    state = report.state
    summary = "Everything is within its thresholds." if state == OK else \
        f"Worst: {report.worst}." if report.worst else ""
    stale = ""
    if stale_at is not None:
        stale = (f'<p class="stale-note" id="stale" data-stale-at="{escape(_iso(stale_at))}" '
                 f'hidden>This page is stale: it should have been rewritten by '
                 f'{escape(_utc(stale_at))}. Is queue health still running?</p>')
    return (
        f'<header class="top">'
        f'<div><h1>Queue health: {escape(STATE_NAMES[state])}</h1>'
        f'<p class="lead">{escape(summary)}</p>'
        f'<p class="sub">Checked {escape(_utc(report.checked_at))} on '
        f'{escape(report.database)}</p></div>'
        f'<div class="overall">{_badge(state, STATE_NAMES[state], big=True)}</div>'
        f'</header>{stale}'
    )


def _counters(report: HealthReport) -> str:
    queues = report.queues
    pending = _sum(queues, "due", "delayed")
    due = _sum(queues, "due")
    dead = _sum(queues, "dead")
    with_latency = [q for q in queues if q.latency_seconds is not None]
    oldest = max(with_latency, key=lambda q: q.latency_seconds, default=None)
    cards = [
        _card("Pending", _figure(pending), _state_of(queues, "due", "delayed"),
              f"{_figure(due)} due now" if due[0] != pending[0] else "all due now"),
        _card("Oldest latency", _duration(oldest.latency_seconds) if oldest else "none",
              oldest.state if oldest else OK,
              f"in {oldest.name}" if oldest else "no row waiting"),
        # Dead rows are the dead-letter tool's business, not an alarm: shown, not judged.
        _card("Dead", _figure(dead), OK if not dead[0] else None,
              "dead-lettered rows" if not dead[0] else "see manage_dead_letters.py"),
        _card("Failed last hour", _figure(_sum(queues, "failed_last_hour")),
              _state_of(queues, "failed_last_hour"), "failed attempts"),
    ]
    judged = [t for t in report.tools if t.freshness != NOT_JUDGED]
    tools_state = max((t.state for t in judged), default=OK)
    not_ok = [t for t in judged if t.state != OK]
    cards.append(_card("Scheduled tools", f"{len(judged) - len(not_ok)}/{len(judged)}",
                       tools_state, "on time" if not not_ok else
                       ", ".join(f"{t.tool} {t.freshness}" for t in not_ok[:2])
                       + (" \u2026" if len(not_ok) > 2 else "")))
    return f'<section class="counters" aria-label="Summary">{"".join(cards)}</section>'


def _queues(report: HealthReport) -> str:
    if not report.queues:
        return _section("Queues", '<p class="empty">No queues.</p>')
    deepest = max((_depth(q) for q in report.queues), default=0) or 1
    slowest = max((q.latency_seconds or 0 for q in report.queues), default=0) or 1
    heads = "".join(f'<th scope="col" class="num" title="{escape(what)}">{escape(head)}</th>'
                    for _, head, what in QUEUE_FIGURES)
    rows = []
    for q in report.queues:
        figures = "".join(f'<td class="num">{escape(_queue_figure(q, name))}</td>'
                          for name, _, _ in QUEUE_FIGURES)
        latency = "\u2014" if q.latency_seconds is None else _duration(q.latency_seconds)
        depth = figure(_depth(q), bool(q.capped & {"due", "delayed"}))
        rows.append(
            f'<tr class="state-{STATE_CLASS[q.state]}">'
            f'<th scope="row"><span class="name">{escape(q.name)}</span>'
            f'<span class="sub">{escape(q.table)}</span></th>'
            f'<td>{_badge(q.state, STATE_NAMES[q.state])}{_reasons(q.reasons)}</td>'
            f'<td class="num depth">{escape(depth)}'
            f'{_bar(_depth(q) / deepest, q.state)}</td>'
            f'<td class="num latency">{escape(latency)}'
            f'{_bar((q.latency_seconds or 0) / slowest, q.state)}</td>'
            f'{figures}</tr>')
    table = (f'<table class="queues"><thead><tr><th scope="col">Queue</th>'
             f'<th scope="col">State</th><th scope="col" class="num" title="due + delayed">'
             f'Depth</th><th scope="col" class="num" title="now minus when the oldest due row '
             f'became available">Latency</th>{heads}</tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>')
    note = ('<p class="note">Latency: now minus when the oldest <em>due</em> row became '
            'available (a retry backing off does not count). \u2014: the queue keeps no such '
            'rows (marker queues delete a row once it is done).</p>')
    return _section("Queues", f'<div class="scroll">{table}</div>{note}')


def _tools(report: HealthReport) -> str:
    if not report.tools:
        return _section("Scheduled tools", '<p class="empty">No scheduled tools.</p>')
    now = report.checked_at
    # Optional tools this host does not run, and never ran: one line, not a row each.
    idle = [t for t in report.tools if t.freshness == NOT_JUDGED and not t.recent_runs]
    rows = []
    for t in report.tools:
        if t in idle:
            continue
        success = t.last_success
        last = (f'<span title="{escape(_utc(success.started_at))}">'
                f'{escape(_ago(now, success.finished_at or success.started_at))}</span>'
                if success else '<span class="muted">never</span>')
        duration = _duration(success.seconds) if success and success.seconds is not None \
            else "\u2014"
        running = ""
        if t.running_since is not None:
            running = (f'<span class="running">running for '
                       f'{escape(_duration((now - t.running_since).total_seconds()))}</span>')
        grace = f'<span class="sub">grace {escape(_duration(t.grace_seconds))}</span>' \
            if t.grace_seconds else ""
        rows.append(
            f'<tr class="state-{STATE_CLASS[t.state]}">'
            f'<th scope="row"><span class="name">{escape(t.tool)}</span>'
            f'{_what(t.tool)}</th>'
            f'<td>{_badge(t.state, t.freshness, judged=t.freshness != NOT_JUDGED)}{running}'
            f'{_reasons(t.reasons)}</td>'
            f'<td>{escape(t.schedule_in_words)}<code class="cron">{escape(t.cron)}</code>'
            f'{grace}</td>'
            f'<td>{last}</td><td class="num">{escape(duration)}</td>'
            f'<td>{_next(now, t)}</td>'
            f'<td>{_strip(t.recent_runs)}</td></tr>')
    legend = "".join(f'<span class="legend-item"><span class="mark run-{status}" '
                     f'aria-hidden="true">{glyph}</span> {escape(words.split(" (")[0])}</span>'
                     for status, (glyph, words) in RUN_MARKS.items())
    table = ('<table class="tools"><thead><tr><th scope="col">Tool</th><th scope="col">State'
             '</th><th scope="col">Schedule (UTC)</th><th scope="col">Last success</th>'
             '<th scope="col" class="num">Took</th><th scope="col">Next expected</th>'
             f'<th scope="col" title="oldest on the left">Last runs</th>'
             f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    not_enabled = ""
    if idle:
        names = ", ".join(f'<span class="name-inline" title="{escape(t.cron)} UTC">'
                          f'{escape(t.tool)}</span>' for t in idle)
        not_enabled = (f'<p class="note">Optional, not enabled on this host '
                       f'(<code>optional_jobs</code>) and never run: {names}.</p>')
    return _section("Scheduled tools",
                    f'<div class="scroll">{table}</div><p class="legend">Last runs, oldest '
                    f'on the left: {legend}</p>{not_enabled}')


def _failures(report: HealthReport) -> str:
    if not report.failures:
        return _section("Last failures", '<p class="empty">No failed runs recorded.</p>')
    items = []
    for tool, run in report.failures:
        error = run.error or run.stop_reason or "no error recorded"
        items.append(
            f'<li><div class="failure-head"><span class="name">{escape(tool)}</span> '
            f'<span class="mark run-{escape(_run_class(run.status))}" aria-hidden="true">'
            f'{escape(RUN_MARKS.get(run.status, ("?", ""))[0])}</span> '
            f'{escape(run.status)} <span title="{escape(_utc(run.started_at))}">'
            f'{escape(_ago(report.checked_at, run.finished_at or run.started_at))}</span>'
            f'<span class="sub">run {escape(run.run_id)}'
            f'{", " + escape(run.stop_reason) if run.stop_reason else ""}</span></div>'
            f'<pre class="error">{escape(error)}</pre></li>')
    return _section("Last failures", f'<ol class="failures">{"".join(items)}</ol>')


def _readiness(rows: list[dict[str, Any]]) -> str:
    from ..archive_hot_path import READINESS_COLUMNS as columns

    if not rows:
        return _section("Archive readiness", '<p class="empty">No archive figures.</p>')
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            if column == "Eligible" and isinstance(value, int):
                cells.append(f'<td class="num">{value:,}</td>')
            elif column == "Status":
                kind = "blocked" if str(value).startswith("blocked") else \
                    "ready" if value == "ready" else "idle"
                cells.append(f'<td><span class="tag tag-{kind}">{escape(str(value))}</span></td>')
            elif column == "Area":
                cells.append(f'<th scope="row"><span class="name">{escape(str(value))}</span></th>')
            else:
                cells.append(f'<td class="{"why" if column == "Notes" else ""}">'
                             f'{escape(str(value))}</td>')
        body.append(f'<tr>{"".join(cells)}</tr>')
    heads = "".join(f'<th scope="col"{" class=num" if c == "Eligible" else ""}>{c}</th>'
                    for c in columns)
    table = (f'<table class="readiness"><thead><tr>{heads}</tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table>')
    note = ('<p class="note">From the archive\'s own read-only plan '
            '(<code>archive_hot_path_data.py</code> without <code>--execute</code> shows the '
            'same table).</p>')
    return _section("Archive readiness", f'<div class="scroll">{table}</div>{note}')


def _footer(report: HealthReport, stale_at: dt.datetime | None) -> str:
    stale = f"; expected to be rewritten by {escape(_utc(stale_at))}" if stale_at else ""
    return (f'<footer><p>Generated <time datetime="{escape(_iso(report.checked_at))}">'
            f'{escape(_utc(report.checked_at))}</time> by '
            f'<code>queue_health_summary.py</code> from <code class="database">'
            f'{escape(report.database)}</code>{stale}.</p></footer>')


# ---------------------------------------------------------------------------------------------
# Pieces


def _section(title: str, content: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return (f'<section class="panel" aria-labelledby="{anchor}"><h2 id="{anchor}">'
            f'{escape(title)}</h2>{content}</section>')


def _badge(state: int, words: str, big: bool = False, judged: bool = True) -> str:
    size = " badge-big" if big else ""
    kind = STATE_CLASS[state] if judged else "idle"
    return (f'<span class="badge badge-{kind}{size}">'
            f'<span class="dot" aria-hidden="true"></span>{escape(words)}</span>')


def _reasons(reasons: list[str]) -> str:
    return f'<span class="why">{escape("; ".join(reasons))}</span>' if reasons else ""


def _card(label: str, value: str, state: int | None, detail: str) -> str:
    """A counter; `state` None: a figure shown for information, judged by no threshold."""
    kind, word = ("idle", "INFO") if state is None else (STATE_CLASS[state], STATE_NAMES[state])
    return (f'<div class="card card-{kind}"><div class="card-label">'
            f'{escape(label)}</div><div class="card-value">{escape(value)}</div>'
            f'<div class="card-detail"><span class="state-word">{word}</span> '
            f'\u00b7 {escape(detail)}</div></div>')


def _bar(fraction: float, state: int) -> str:
    width = max(0.0, min(1.0, fraction)) * 100
    if not width:
        return ""
    return (f'<span class="bar" aria-hidden="true"><span class="fill fill-{STATE_CLASS[state]}" '
            f'style="width:{width:.1f}%"></span></span>')


def _strip(runs: list[Run]) -> str:
    if not runs:
        return '<span class="muted">no runs</span>'
    marks = []
    for run in reversed(runs[:STRIP_LENGTH]):  # newest first in the model; oldest left here
        glyph, words = RUN_MARKS.get(run.status, ("?", run.status))
        took = f", took {_duration(run.seconds)}" if run.seconds is not None else ""
        detail = f": {run.error.splitlines()[0]}" if run.error else \
            f": {run.stop_reason}" if run.stop_reason and run.status != "ok" else ""
        tip = f"{_utc(run.started_at)} \u00b7 {words}{took}{detail}"
        marks.append(f'<span class="mark run-{escape(_run_class(run.status))}" '
                     f'title="{escape(tip)}" role="img" aria-label="{escape(tip)}">'
                     f'{escape(glyph)}</span>')
    return f'<span class="strip">{"".join(marks)}</span>'


def _next(now: dt.datetime, tool: ToolHealth) -> str:
    if tool.next_expected_at is None:
        return '<span class="muted">\u2014</span>'
    when = tool.next_expected_at
    seconds = (when - now).total_seconds()
    words = f"in {_duration(seconds)}" if seconds >= 0 else \
        f"{_duration(-seconds)} overdue"
    css = "" if seconds >= 0 else ' class="overdue"'
    return (f'<span{css} title="{escape(_utc(when))}">{escape(words)}</span>'
            f'<span class="sub">{escape(_utc(when))}</span>')


def _what(tool: str) -> str:
    from ...schedule import BY_TOOL

    job = BY_TOOL.get(tool)
    return f'<span class="sub">{escape(job.what)}</span>' if job else ""


def _run_class(status: str) -> str:
    return status if status in RUN_MARKS else "other"


def _stale_at(checked_at: dt.datetime) -> dt.datetime | None:
    """When the next page is overdue: queue health's next slot plus its grace."""
    from ...schedule import BY_TOOL

    job = BY_TOOL.get("queue_health_summary")
    if job is None:
        return None
    return job.next_slot(checked_at) + dt.timedelta(seconds=job.grace_seconds)


def _sum(queues: Iterable[QueueHealth], *names: str) -> tuple[int, bool]:
    """(total, capped): None figures count as 0; capped when any counted figure was capped."""
    total, capped = 0, False
    for q in queues:
        for name in names:
            total += getattr(q, name) or 0
            capped = capped or name in q.capped
    return total, capped


def _state_of(queues: Iterable[QueueHealth], *names: str) -> int:
    """The worst state of the queues where one of these figures is not zero."""
    return max((q.state for q in queues if any(getattr(q, n) for n in names)), default=OK)


def _depth(q: QueueHealth) -> int:
    return (q.due or 0) + (q.delayed or 0)


def _queue_figure(q: QueueHealth, name: str) -> str:
    value = getattr(q, name)
    return "\u2014" if value is None else figure(value, name in q.capped)


def _figure(total: tuple[int, bool]) -> str:
    return figure(*total)


def _duration(seconds: float | None) -> str:
    """A span as the pager line and the terminal say it: 2d 3h, 2h 3m, 4m 10s, 12s."""
    if seconds is None:
        return "\u2014"
    return duration_in_words(dt.timedelta(seconds=seconds))


def _ago(now: dt.datetime, then: dt.datetime) -> str:
    """'N minutes ago', relative to when the page was generated."""
    seconds = (now - then).total_seconds()
    if seconds < 0:
        return f"in {_duration(-seconds)}"
    if seconds < 60:
        return "less than a minute ago"
    units = [(86400 * 2, 86400, "day"), (3600 * 2, 3600, "hour"), (60, 60, "minute")]
    for threshold, size, unit in units:
        if seconds >= threshold:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "less than a minute ago"


def _utc(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _iso(moment: dt.datetime) -> str:
    return moment.replace(microsecond=0).isoformat() + "Z"


_DOCUMENT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>{css}</style>
</head>
<body class="overall-{state}">
<main>
{body}
</main>
<script>
(function () {{
  var note = document.getElementById("stale");
  if (note && Date.now() > Date.parse(note.getAttribute("data-stale-at"))) {{
    note.hidden = false;
  }}
}})();
</script>
</body>
</html>
"""

_CSS = """
:root {
  --bg: #f5f6f8; --panel: #ffffff; --text: #1d2430; --muted: #5f6b7a; --line: #e2e6eb;
  --ok: #2f9e44; --ok-bg: #e6f5e9; --warning: #c25e00; --warning-bg: #fff1e0;
  --critical: #c92a2a; --critical-bg: #fdeaea; --unknown: #6b5fb5; --unknown-bg: #efedf9;
  --idle: #8a94a3; --code: #eef1f4; --shadow: 0 1px 2px rgba(16,24,40,.06), 0 1px 3px rgba(16,24,40,.08);
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #12161c; --panel: #1b2129; --text: #e4e8ee; --muted: #9aa5b4; --line: #2c343f;
    --ok: #51cf66; --ok-bg: #17301f; --warning: #ffa94d; --warning-bg: #3a2812;
    --critical: #ff6b6b; --critical-bg: #3d1a1c; --unknown: #b1a7f0; --unknown-bg: #27233f;
    --idle: #6c7787; --code: #252c36; --shadow: none;
  }
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--text);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1400px; margin: 0 auto; padding: 24px; }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -.01em; }
h2 { font-size: 17px; margin: 0 0 12px; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
code { background: var(--code); border-radius: 4px; padding: 1px 5px; margin-left: 6px; }
.top { display: flex; justify-content: space-between; align-items: center; gap: 16px;
  padding: 20px 24px; border-radius: 12px; background: var(--panel); box-shadow: var(--shadow);
  border-left: 8px solid var(--ok); }
.overall-warning .top { border-left-color: var(--warning); }
.overall-critical .top { border-left-color: var(--critical); }
.overall-unknown .top { border-left-color: var(--unknown); }
.lead { margin: 0; color: var(--muted); }
.stale-note { margin: 12px 0 0; padding: 10px 16px; border-radius: 8px; font-weight: 600;
  background: var(--critical-bg); color: var(--critical); }
.counters { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 14px;
  margin: 18px 0; }
.card { background: var(--panel); border-radius: 12px; padding: 14px 18px; box-shadow: var(--shadow);
  border-top: 5px solid var(--ok); }
.card-warning { border-top-color: var(--warning); background: linear-gradient(var(--warning-bg), var(--panel) 70%); }
.card-critical { border-top-color: var(--critical); background: linear-gradient(var(--critical-bg), var(--panel) 70%); }
.card-unknown { border-top-color: var(--unknown); }
.card-idle { border-top-color: var(--idle); }
.card-label { color: var(--muted); font-size: 13px; text-transform: uppercase; letter-spacing: .05em; }
.card-value { font-size: 30px; font-weight: 700; font-variant-numeric: tabular-nums; margin: 2px 0; }
.card-detail { color: var(--muted); font-size: 13px; }
.card-ok .state-word { color: var(--ok); font-weight: 600; }
.card-warning .state-word { color: var(--warning); font-weight: 600; }
.card-critical .state-word { color: var(--critical); font-weight: 600; }
.card-unknown .state-word { color: var(--unknown); font-weight: 600; }
.card-idle .state-word { color: var(--muted); font-weight: 600; }
.panel { background: var(--panel); border-radius: 12px; padding: 18px 20px; margin: 0 0 18px;
  box-shadow: var(--shadow); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 8px 10px; border-bottom: 1px solid var(--line); }
thead th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
  font-weight: 600; white-space: nowrap; }
tbody th { font-weight: 400; }
tbody tr:last-child > * { border-bottom: 0; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.name { font-weight: 600; display: block; }
.sub { display: block; color: var(--muted); font-size: 12px; }
td code { margin: 0 0 0 6px; }
.why { color: var(--muted); font-size: 12px; display: block; margin-top: 4px; max-width: 22em; }
td.why { display: table-cell; font-size: 13px; max-width: 28em; }
code.cron { display: inline-block; white-space: nowrap; margin: 2px 0 0; }
.muted { color: var(--muted); }
.note, .legend { color: var(--muted); font-size: 13px; margin: 10px 0 0; }
.empty { color: var(--muted); margin: 0; }
tr.state-warning > th:first-child { box-shadow: inset 4px 0 var(--warning); }
tr.state-critical > th:first-child { box-shadow: inset 4px 0 var(--critical); }
tr.state-unknown > th:first-child { box-shadow: inset 4px 0 var(--unknown); }
.badge { display: inline-flex; align-items: center; gap: 6px; padding: 2px 10px; border-radius: 999px;
  font-size: 13px; font-weight: 600; white-space: nowrap; }
.badge .dot { width: 8px; height: 8px; border-radius: 50%; background: currentColor; }
.badge-big { font-size: 18px; padding: 6px 16px; }
.badge-big .dot { width: 12px; height: 12px; }
.badge-ok { color: var(--ok); background: var(--ok-bg); }
.badge-warning { color: var(--warning); background: var(--warning-bg); }
.badge-critical { color: var(--critical); background: var(--critical-bg); }
.badge-unknown { color: var(--unknown); background: var(--unknown-bg); }
.badge-idle { color: var(--muted); background: var(--code); }
.running { display: block; font-size: 12px; color: var(--muted); margin-top: 4px; }
.overdue { color: var(--critical); font-weight: 600; }
.bar { display: block; height: 4px; border-radius: 2px; background: var(--line); margin-top: 4px;
  min-width: 60px; }
.bar .fill { display: block; height: 100%; border-radius: 2px; background: var(--ok); }
.fill-warning { background: var(--warning) !important; }
.fill-critical { background: var(--critical) !important; }
.fill-unknown { background: var(--unknown) !important; }
.strip { display: inline-flex; gap: 3px; flex-wrap: nowrap; }
.mark { display: inline-flex; align-items: center; justify-content: center; width: 16px; height: 20px;
  border-radius: 3px; color: #fff; font-size: 11px; font-weight: 700; line-height: 1; cursor: default; }
.run-ok { background: var(--ok); }
.run-failed { background: var(--critical); }
.run-skipped { background: var(--idle); }
.run-interrupted { background: var(--warning); }
.run-abandoned { background: var(--unknown); }
.run-running { background: #1c7ed6; }
.run-other { background: var(--idle); }
.legend-item { margin-left: 12px; white-space: nowrap; }
.name-inline { font-weight: 600; color: var(--text); }
.legend .mark { width: 14px; height: 16px; vertical-align: -3px; }
.tag { display: inline-block; padding: 1px 8px; border-radius: 4px; font-size: 13px; white-space: nowrap; }
.tag-ready { background: var(--ok-bg); color: var(--ok); font-weight: 600; }
.tag-idle { background: var(--code); color: var(--muted); }
.tag-blocked { background: var(--warning-bg); color: var(--warning); font-weight: 600; }
.failures { list-style: none; margin: 0; padding: 0; }
.failures li { padding: 10px 0; border-bottom: 1px solid var(--line); }
.failures li:last-child { border-bottom: 0; }
.failure-head { display: flex; flex-wrap: wrap; align-items: baseline; gap: 8px; }
.failure-head .name { display: inline; }
.failure-head .sub { display: inline; }
pre.error { margin: 6px 0 0; padding: 8px 12px; background: var(--critical-bg); color: var(--text);
  border-radius: 6px; white-space: pre-wrap; word-break: break-word; max-height: 12em; overflow: auto; }
footer { color: var(--muted); font-size: 13px; padding: 4px 4px 24px; }
footer code { margin: 0; }
@media print {
  :root { --bg: #fff; --panel: #fff; --shadow: none; }
  body { font-size: 11pt; }
  main { max-width: none; padding: 0; }
  .panel, .card, .top { box-shadow: none; border: 1px solid #ccc; break-inside: avoid; }
  .scroll { overflow: visible; }
  .mark, .badge, .fill, .card { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .stale-note { display: none; }
  pre.error { max-height: none; }
}
"""
