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


def ping(settings: Settings, event: str, body: str = "") -> None:
    """healthchecks.io convention: URL/start at start, URL on success, URL/fail on failure."""
    base = settings.alert_ping_url
    if not base:
        return
    url = base.rstrip("/") + {"start": "/start", "success": "", "fail": "/fail"}[event]
    try:
        request = urllib.request.Request(url, data=body.encode()[:10000], method="POST")
        with urllib.request.urlopen(request, timeout=settings.alert_timeout_seconds) as response:
            response.read()
    except (OSError, ValueError) as exc:
        log.warning("monitoring ping %s failed: %s", event, exc)


def email_failure(settings: Settings, result: JobResult) -> None:
    if not settings.alert_email:
        return
    subject = f"[ops] {result.tool} {result.status} on {socket.gethostname()}"
    body = (
        f"Tool: {result.tool}\nRun: {result.run_id}\nStatus: {result.status}\n"
        f"Stopped: {result.stop_reason}\nError: {result.error or '-'}\n"
    )
    try:
        with Mailer(settings) as mailer:
            mailer.send(mailer.new_message(settings.alert_email, subject, body))
    except Exception as exc:  # an alert must never fail the run
        log.warning("failure email not sent: %s", exc)


def finished(settings: Settings, result: JobResult) -> None:
    if result.status == "failed":
        ping(settings, "fail", result.error or result.stop_reason)
        email_failure(settings, result)
    else:
        ping(settings, "success", result.stop_reason)
