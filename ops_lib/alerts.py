"""Failure alerts: an optional email and an optional healthchecks-style ping, both time-boxed.

Neither ever changes the exit code: an alert that fails is logged and forgotten.
"""

from __future__ import annotations

import logging
import socket
import urllib.request

from .mail import Mailer
from .result import JobResult
from .settings import Settings

log = logging.getLogger(__name__)


# A check's exit codes for a problem it found (Nagios WARNING, CRITICAL): the check did its job.
CHECK_FOUND_A_PROBLEM = (1, 2)


def ping(settings: Settings, event: str, body: str = "") -> bool:
    """healthchecks.io convention: URL/start at start, URL on success, URL/fail on failure.
    True when the monitor took it."""
    base = settings.alert_ping_url
    if not base:
        return False
    url = base.rstrip("/") + {"start": "/start", "success": "", "fail": "/fail"}[event]
    try:
        request = urllib.request.Request(url, data=body.encode()[:10000], method="POST")
        with urllib.request.urlopen(request, timeout=settings.alert_timeout_seconds) as response:
            response.read()
    except (OSError, ValueError) as exc:
        log.warning("monitoring ping %s failed: %s", event, exc)
        return False
    return True


def email(settings: Settings, subject: str, body: str, what: str = "alert") -> bool:
    """Send an alert email to `alert_email`; True when it left (SMTP or the outbox)."""
    if not settings.alert_email:
        return False
    try:
        with Mailer(settings) as mailer:
            mailer.send(mailer.new_message(settings.alert_email, subject, body))
    except Exception as exc:  # an alert must never fail the run
        log.warning("%s email not sent: %s", what, exc)
        return False
    return True


def email_failure(settings: Settings, result: JobResult) -> None:
    subject = f"[ops] {result.tool} {result.status} on {socket.gethostname()}"
    body = (
        f"Tool: {result.tool}\nRun: {result.run_id}\nStatus: {result.status}\n"
        f"Stopped: {result.stop_reason}\nError: {result.error or '-'}\n"
    )
    email(settings, subject, body, what="failure")


def state_changed(settings: Settings, subject: str, body: str, worse: bool) -> list[str]:
    """A check's finding changed (a run that worked, not a failed one): the email, and the ping,
    `/fail` when it got worse, the success URL when it recovered. Returns what took the alert
    ("email", "ping"); empty when neither is configured or both failed."""
    sent = []
    if email(settings, subject, body, what="state alert"):
        sent.append("email")
    if ping(settings, "fail" if worse else "success", subject):
        sent.append("ping")
    return sent


def finished(settings: Settings, result: JobResult) -> None:
    if result.status == "failed":
        ping(settings, "fail", result.error or result.stop_reason)
        email_failure(settings, result)
    elif result.exit_code in CHECK_FOUND_A_PROBLEM:
        # Not a failed run (no failure alert), and not a success either: a success ping would
        # tell the monitor all is well and undo the `/fail` the check's own --alert sent.
        return
    else:
        ping(settings, "success", result.stop_reason)
