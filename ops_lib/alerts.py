"""Failure alerts: an optional email and an optional healthchecks-style ping, both time-boxed.

Neither ever changes the exit code: an alert that fails is logged and forgotten. The time box
(`alert_timeout_seconds`) bounds the whole alert, not only each socket read: it is sent from a
thread the run stops waiting for, so a monitor that accepts and never answers, a slow DNS or an
SMTP server that drips its replies cannot hold a run (tests/test_alerts_end_to_end.py).
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING, Callable

# urllib.request and the mailer are imported where an alert is sent: every run imports this
# module, few send anything.
if TYPE_CHECKING:
    from .result import JobResult
    from .settings import Settings

log = logging.getLogger(__name__)


# A check's exit codes for a problem it found (Nagios WARNING, CRITICAL): the check did its job.
CHECK_FOUND_A_PROBLEM = (1, 2)
# A monitor that is down fails every ping of a run (start, then success or fail): one WARNING
# line says so, the later failures of the run are debug lines. A run's pings begin with "start"
# (a long-running process warns again for its next run).
_ping_failure_logged = False


def _time_boxed(seconds: float, send: Callable[[], None]) -> str | None:
    """Run `send` for at most `seconds`: None when it finished, else why not. A send still
    going is left to its daemon thread (it ends with its own socket timeout, or the process)."""
    failure: list[str] = []

    def attempt() -> None:
        try:
            send()
        except Exception as exc:  # an alert must never fail the run
            failure.append(str(exc) or type(exc).__name__)

    thread = threading.Thread(target=attempt, name="ops-alert", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return f"no answer within {seconds:g} s"
    return failure[0] if failure else None


def ping(settings: Settings, event: str, body: str = "") -> bool:
    """healthchecks.io convention: URL/start at start, URL on success, URL/fail on failure.
    True when the monitor took it."""
    global _ping_failure_logged
    base = settings.alert_ping_url
    if not base:
        return False
    url = base.rstrip("/") + {"start": "/start", "success": "", "fail": "/fail"}[event]
    timeout = settings.alert_timeout_seconds

    def send() -> None:
        import urllib.request

        request = urllib.request.Request(url, data=body.encode()[:10000], method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()

    if event == "start":
        _ping_failure_logged = False
    why = _time_boxed(timeout, send)
    if why is None:
        return True
    if _ping_failure_logged:
        log.debug("monitoring ping %s failed too: %s", event, why)
    else:
        _ping_failure_logged = True
        log.warning("monitoring ping %s failed (time box %g s): %s; the run goes on, later "
                    "pings are still sent", event, timeout, why)
    return False


def email(settings: Settings, subject: str, body: str, what: str = "alert") -> bool:
    """Send an alert email to `alert_email`; True when it left (SMTP or the outbox)."""
    if not settings.alert_email:
        return False

    def send() -> None:
        from .mail import Mailer

        with Mailer(settings) as mailer:
            mailer.send(mailer.new_message(settings.alert_email, subject, body))

    why = _time_boxed(settings.alert_timeout_seconds, send)
    if why is not None:
        log.warning("%s email not sent: %s", what, why)
        return False
    return True


def email_failure(settings: Settings, result: JobResult) -> None:
    subject = f"[ops] {result.tool} {result.status} on {socket.gethostname()}"
    body = (
        f"Tool: {result.tool}\nRun: {result.run_id}\nStatus: {result.status}\n"
        f"Exit code: {result.final_exit_code()}\n"
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
    """The run's last ping (a failure's exit code on its body's first line) and, if it failed,
    the mail."""
    if result.status == "failed":
        ping(settings, "fail", f"exit code {result.final_exit_code()}\n"
                               f"{result.error or result.stop_reason}")
        email_failure(settings, result)
    elif result.exit_code in CHECK_FOUND_A_PROBLEM:
        # Not a failed run (no failure alert), and not a success either: a success ping would
        # tell the monitor all is well and undo the `/fail` the check's own --alert sent.
        return
    else:
        ping(settings, "success", result.stop_reason)
