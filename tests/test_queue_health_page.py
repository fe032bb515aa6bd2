"""The status page (--html), rendered by a real browser: Debian's chromium, headless, from disk.

The test reads the DOM chromium rendered (after its parser and the page's own script) and checks
what a person would see; a screenshot is written for people to look at (the test's tmp folder,
and var/screenshots/queue_health.png, which git ignores).
"""

from __future__ import annotations

import datetime as dt
import html
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ops_lib.jobs.queue_health.model import (
    CRITICAL,
    DOWN,
    FRESH,
    LATE,
    NEVER_RUN,
    NOT_JUDGED,
    OK,
    WARNING,
    HealthReport,
    QueueHealth,
    Run,
    ToolHealth,
)
from ops_lib.jobs.queue_health.page import write_status_page
from ops_lib.timeutil import utcnow
from tests.conftest import IN_CI, REPO, run_cli, tool_env

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
SCREENSHOTS = REPO / "var" / "screenshots"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed (apt-get install -y chromium; .ci/run does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def browser(page: Path, *args: str) -> subprocess.CompletedProcess:
    """chromium headless on the file; as root it needs --no-sandbox."""
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", f"--user-data-dir={page.parent / 'chromium-profile'}", *args,
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def rendered_dom(page: Path) -> str:
    done = browser(page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<html" in done.stdout, done.stderr[-2000:]
    return done.stdout


def screenshot(page: Path, name: str, *args: str) -> Path:
    shot = page.parent / name
    done = browser(page, f"--screenshot={shot}", "--window-size=1280,2000", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENSHOTS / name)
    return shot


class Seen(HTMLParser):
    """What a reader sees in a DOM: the table rows as cell texts, every text, and what the DOM
    holds that could fetch or run something (src/href attributes, scripts)."""

    def __init__(self, dom: str):
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.texts: list[str] = []
        self.fetching: list[tuple[str, str, str]] = []
        self.scripts: list[str] = []
        self.hidden_ids: set[str] = set()
        self.ids: set[str] = set()
        self.title = ""
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in: list[str] = []
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href", "srcset", "action", "data", "poster"):
            if name in attrs:
                self.fetching.append((tag, name, attrs[name] or ""))
        if "id" in attrs:
            self.ids.add(attrs["id"])
            if "hidden" in attrs:
                self.hidden_ids.add(attrs["id"])
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        if tag not in ("br", "img", "meta", "link", "input", "hr"):
            self._in.append(tag)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join(" ".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        if tag in self._in:
            while self._in and self._in.pop() != tag:
                pass

    def handle_data(self, data):
        current = self._in[-1] if self._in else ""
        if current == "script":
            self.scripts.append(data)
            return
        if current == "style":
            return
        if current == "title":
            self.title += data
        if self._cell is not None:
            self._cell.append(data)
        if data.strip():
            self.texts.append(" ".join(data.split()))

    def row(self, first_cell_start: str) -> list[str]:
        [found] = [r for r in self.rows if r and r[0].startswith(first_cell_start)]
        return found

    @property
    def text(self) -> str:
        return " ".join(self.texts)


def sample_report(now: dt.datetime) -> HealthReport:
    def ago(**kwargs) -> dt.datetime:
        return now - dt.timedelta(**kwargs)

    def run(status: str, started: dt.datetime, seconds: int = 40, error: str | None = None):
        return Run(f"{status}{started:%H%M}".ljust(32, "0"), started,
                   started + dt.timedelta(seconds=seconds), status, error=error,
                   stop_reason="error" if status == "failed" else "no more work")

    failed_billing = run("failed", ago(hours=3, minutes=1), 12, error=HOSTILE + "\nsecond line")
    workers_runs = [run(s, ago(minutes=i + 1)) for i, s in enumerate(
        ["ok", "ok", "skipped", "ok", "failed", "interrupted", "abandoned", "ok"])]
    queues = [
        QueueHealth("scans", "attendance_scan_queue", True, due=4321, delayed=7, claimed=500,
                    expired=3, dead=2, failed_last_hour=41, done_last_15_minutes=12000,
                    latency_seconds=1260.0, state=CRITICAL, reasons=["latency 21 min > 10 min"]),
        QueueHealth("push deliveries", "push_deliveries", True, due=0, delayed=0,
                    latency_seconds=None),
        QueueHealth("roll-up markers", "attendance_rollup_markers", False, due=5, delayed=None,
                    dead=None, failed_last_hour=None, done_last_15_minutes=None,
                    latency_seconds=30.0),
    ]
    tools = [
        ToolHealth("run_background_workers", "* * * * *", "every minute", False, FRESH,
                   last_success=workers_runs[0], next_expected_at=now + dt.timedelta(minutes=1),
                   grace_seconds=300, recent_runs=workers_runs),
        ToolHealth("run_billing_jobs", "10 1 * * *", "daily at 01:10 UTC", False, LATE,
                   last_success=run("ok", ago(hours=27, minutes=5), 95),
                   last_failure=failed_billing, next_expected_at=ago(hours=3, minutes=35),
                   grace_seconds=7200, recent_runs=[failed_billing], state=WARNING,
                   reasons=["late: last success 27 hours ago"]),
        ToolHealth("archive_hot_path_data", "30 2 * * *", "daily at 02:30 UTC", False, DOWN,
                   last_success=run("ok", ago(days=3), 600), next_expected_at=ago(days=2),
                   grace_seconds=7200, state=CRITICAL, reasons=["down: no success for 3 days"]),
        ToolHealth("cleanup_stale_devices", "15 3 1 * *", "monthly on day 1 at 03:15 UTC",
                   False, NEVER_RUN, grace_seconds=86400, state=WARNING, reasons=["never run"]),
        ToolHealth("shadow_reporting_validation", "0 5 2 * *", "monthly on day 2 at 05:00 UTC",
                   True, NOT_JUDGED),
    ]
    return HealthReport(now, "mysql+pymysql://ops:***@db.internal:3306/ops", queues, tools,
                        failures=[("run_billing_jobs", failed_billing)], state=CRITICAL,
                        worst="scans latency")


READINESS = [
    {"Area": "notifications", "Retention": "90 days", "Eligible": 123456, "Status": "ready",
     "Notes": "created_at < 2026-08-30 (notifications_retention_days=90, default)"},
    {"Area": "audit_logs", "Retention": "365 days", "Eligible": 0,
     "Status": "blocked: table audit_logs_archive missing", "Notes": HOSTILE},
]


@pytest.fixture
def page(tmp_path) -> Path:
    path = tmp_path / "status" / "queue_health.html"
    path.parent.mkdir()
    write_status_page(path, sample_report(utcnow().replace(microsecond=0)), READINESS)
    return path


def test_the_page_shows_a_person_the_state_queues_tools_and_failures(page):
    seen = Seen(rendered_dom(page))
    screenshot(page, "queue_health.png")

    assert seen.title == "Queue health: CRITICAL (scans latency)"
    assert "Queue health: CRITICAL" in seen.texts
    # The counters: pending (due + delayed), the oldest latency, dead, failed in the last hour.
    text = seen.text
    for counter in ("PENDING", "OLDEST LATENCY", "DEAD", "FAILED LAST HOUR"):
        assert counter.lower() in text.lower()
    assert "4,333 CRITICAL · 4,326 due now" in text  # 4321 + 7 + 5 pending; due 4321 + 5
    assert "21m CRITICAL · in scans" in text
    assert "2 INFO · see manage_dead_letters.py" in text  # dead rows are not an alarm
    assert "41 CRITICAL · failed attempts" in text
    assert "1/4 CRITICAL · run_billing_jobs late, archive_hot_path_data down …" in text

    # Every queue: depth, latency and state in words.
    assert seen.row("scans")[:4] == ["scans attendance_scan_queue",
                                     "CRITICAL latency 21 min > 10 min", "4,328", "21m"]
    assert seen.row("scans")[4:] == ["4,321", "7", "500", "3", "2", "41", "12,000"]
    assert seen.row("push deliveries")[1:4] == ["OK", "0", "\u2014"]
    assert seen.row("roll-up markers")[2:] == ["5", "30s", "5", "\u2014", "0", "0", "\u2014",
                                               "\u2014", "\u2014"]

    # Every tool: a late tool shows as late, with how overdue it is.
    billing = seen.row("run_billing_jobs")
    assert billing[1] == "late late: last success 27 hours ago"
    assert billing[2] == "daily at 01:10 UTC 10 1 * * * grace 2h"
    assert billing[3] == "27 hours ago"
    assert billing[4] == "1m 35s"
    assert billing[5].startswith("3h 35m overdue")
    assert seen.row("archive_hot_path_data")[1] == "down down: no success for 3 days"
    assert seen.row("cleanup_stale_devices")[1:4] == ["never run never run",
                                                      "monthly on day 1 at 03:15 UTC 15 3 1 * * "
                                                      "grace 1d", "never"]
    assert not [r for r in seen.rows if r[0].startswith("shadow_reporting_validation")]
    assert "Optional, not enabled on this host ( optional_jobs ) and never run: " \
           "shadow_reporting_validation ." in text
    workers = seen.row("run_background_workers")
    assert workers[1] == "ok"
    assert workers[3] == "less than a minute ago"
    assert workers[5].startswith("in 1m")
    # The strip: oldest first, one mark per run, its status in a glyph (and its tooltip).
    assert workers[6] == "\u2713 ? ! \u2717 \u2713 \u2013 \u2713 \u2713"

    # The failure with its error lines, the archive readiness, where the figures came from.
    assert "failed 3 hours ago" in text
    assert HOSTILE in seen.texts  # shown as text ...
    assert "second line" in text
    assert seen.row("notifications")[:4] == ["notifications", "90 days", "123,456", "ready"]
    assert seen.row("audit_logs")[3:] == ["blocked: table audit_logs_archive missing", HOSTILE]
    assert "mysql+pymysql://ops:***@db.internal:3306/ops" in seen.texts


def test_hostile_values_are_text_and_the_page_fetches_nothing(page):
    raw = page.read_text()
    seen = Seen(rendered_dom(page))
    # ... never markup: the only script is the page's own stale check, nothing has a src/href.
    assert len(seen.scripts) == 1 and "data-stale-at" in seen.scripts[0]
    assert seen.fetching == []
    assert "pwned" not in seen.title
    # The error's first line is in the strip's tooltip (title and aria-label), the error in
    # the failures, the note in the archive table: 4 times, escaped.
    assert raw.count(html.escape(HOSTILE)) == 4
    for fetch in ("http://", "https://", "url(", "@import", "src=", "href="):
        assert fetch not in raw.replace(html.escape(HOSTILE), "")


def test_a_page_read_long_after_it_was_written_says_it_is_stale(tmp_path):
    fresh, old = tmp_path / "fresh" / "page.html", tmp_path / "old" / "page.html"
    fresh.parent.mkdir()
    old.parent.mkdir()
    now = utcnow().replace(microsecond=0)
    write_status_page(fresh, sample_report(now), READINESS)
    # queue health runs every 15 minutes with 10 minutes' grace: two hours old is stale.
    write_status_page(old, sample_report(now - dt.timedelta(hours=2)), READINESS)
    assert "stale" in Seen(rendered_dom(fresh)).hidden_ids
    seen = Seen(rendered_dom(old))
    assert "stale" in seen.ids and "stale" not in seen.hidden_ids
    assert any(t.startswith("This page is stale") for t in seen.texts)


def test_an_all_clear_page_in_dark_mode(tmp_path):
    now = utcnow().replace(microsecond=0)
    report = HealthReport(now, "sqlite:///ops.db", [
        QueueHealth("scans", "attendance_scan_queue", True, due=0, latency_seconds=None)], [],
        state=OK)
    path = tmp_path / "ok.html"
    write_status_page(path, report, [])
    seen = Seen(rendered_dom(path))
    assert "Queue health: OK" in seen.texts
    assert "Everything is within its thresholds." in seen.texts
    assert "No scheduled tools." in seen.texts and "No failed runs recorded." in seen.texts
    assert "No archive figures." in seen.texts
    screenshot(path, "queue_health_ok_dark.png", "--force-dark-mode",
               "--blink-settings=preferredColorScheme=0")


def test_the_tool_writes_a_page_on_which_a_late_tool_shows_as_late(db_url, tmp_path):
    from tests.test_queue_health import NOW_ARG, Rows, ago

    rows = Rows(db_url)
    try:
        rows.all_fresh("archive_hot_path_data")
        rows.run("archive_hot_path_data", dt.datetime(2026, 11, 27, 2, 30), seconds=95)
        rows.run("archive_hot_path_data", dt.datetime(2026, 11, 28, 2, 30), status="failed",
                 seconds=12, error=HOSTILE)
        rows.scans(3, created_at=ago(hours=2, minutes=3))
    finally:
        rows.engine.dispose()
    page = tmp_path / "www" / "status.html"
    page.parent.mkdir()
    done = run_cli("queue_health_summary", *NOW_ARG, "--html", str(page),
                   env=tool_env(db_url, tmp_path))
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines()[0].startswith("QUEUES CRITICAL: scans latency 2h 3m")
    assert f"status page written: {page}" in done.stdout

    seen = Seen(rendered_dom(page))
    screenshot(page, "queue_health_cli.png")
    assert "Queue health: CRITICAL" in seen.texts
    assert seen.row("scans")[1:4] == ["CRITICAL scans latency 2h 3m", "3", "2h 3m"]
    archive = seen.row("archive_hot_path_data")
    assert archive[1] == "late archive_hot_path_data late by 9h 30m"
    assert archive[2:6] == ["daily at 02:30 UTC 30 2 * * * grace 2h", "33 hours ago", "1m 35s",
                            "9h 30m overdue 2026-11-28 02:30 UTC"]
    assert archive[6] == "\u2713 \u2717"  # its runs, oldest first: the success, the failure
    assert HOSTILE in seen.texts and seen.fetching == []
    assert [r[0] for r in seen.rows if r and r[0] in (
        "notifications", "audit_logs", "payments", "attendance_records")] == [
        "notifications", "audit_logs", "payments", "attendance_records"]
    assert seen.row("notifications")[2:4] == ["0", "nothing to do"]
    assert "Generated 2026-11-28 12:00 UTC" in seen.text
