"""Failure mail and healthchecks-style pings, end to end: real tool processes, a real SMTP
server (aiosmtpd) and a real HTTP server on 127.0.0.1 (ops_lib/alerts.py).

A failing run sends one mail and pings /start, then /fail with its exit code; a successful run
pings /start and the success URL; a monitor that hangs does not hold the run beyond the time
box; one that refuses does not fail the run and is logged once.
"""

from __future__ import annotations

import sys
import threading


from tests.conftest import REPO, run_cli, sqlite_database, tool_env
from tests.fakes.smtp_server import free_port

RECIPIENT = "oncall@school.test"
BASE = "/ping/health-check"


def _env(tmp_path, smtp, ping_url: str, **extra: str) -> dict:
    return tool_env(sqlite_database(tmp_path), tmp_path, OPS_ALERT_EMAIL=RECIPIENT,
                    OPS_SMTP_HOST=smtp.host, OPS_SMTP_PORT=str(smtp.port),
                    OPS_ALERT_PING_URL=ping_url, **extra)


def _failing_run(tmp_path, env: dict):
    """The test-only waiting tool, told to fail inside its job (JobFailed: exit 1)."""
    import subprocess

    return subprocess.run(
        [sys.executable, str(REPO / "tests" / "fakes" / "waiting_tool.py"), "--ready-file",
         str(tmp_path / "ready"), "--fail", "--execute", "--json"],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _ping_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "monitoring ping" in line]


def test_a_failing_run_sends_one_mail_and_pings_start_then_fail_with_its_exit_code(
        tmp_path, smtp, pings):
    import json

    done = _failing_run(tmp_path, _env(tmp_path, smtp, pings.url))
    assert done.returncode == 1, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    assert pings.paths() == [f"{BASE}/start", f"{BASE}/fail"]
    fail_body = pings.requests[1][1]
    assert fail_body.splitlines()[0] == "exit code 1"
    assert "the waiting tool was asked to fail" in fail_body
    [message] = smtp.messages
    assert message["To"] == RECIPIENT
    assert message["Subject"].startswith("[ops] waiting_tool failed on ")
    body = message.get_content()
    assert f"Run: {run_id}" in body and "Exit code: 1" in body
    assert "Error: the waiting tool was asked to fail" in body


def test_a_successful_run_pings_start_and_the_success_url_and_sends_no_mail(
        tmp_path, smtp, pings):
    done = run_cli("cleanup_stale_devices", env=_env(tmp_path, smtp, pings.url))
    assert done.returncode == 0, done.stderr
    assert pings.paths() == [f"{BASE}/start", BASE]
    assert pings.requests[1][1] == "dry run: nothing changed"  # why it stopped
    assert smtp.messages == []
    assert _ping_warnings(done.stderr) == []


def test_a_monitor_that_hangs_does_not_hold_the_run(tmp_path, smtp, pings):
    """The server takes each ping and answers only when the test releases it, after the run:
    the run ends on its own, with the server still blocked, and says so."""
    release = threading.Event()
    arrived: list[str] = []
    both_arrived = threading.Condition()
    answering = pings.server.RequestHandlerClass

    class Hanging(answering):
        def do_POST(self):  # noqa: N802 - http.server's hook
            with both_arrived:
                arrived.append(self.path)
                both_arrived.notify_all()
            release.wait()
            super().do_POST()

    pings.server.RequestHandlerClass = Hanging
    try:
        done = _failing_run(tmp_path, _env(tmp_path, smtp, pings.url,
                                          OPS_ALERT_TIMEOUT_SECONDS="1"))
        assert not release.is_set()  # the run ended while the monitor was still blocked
        assert done.returncode == 1, done.stderr  # the job's own exit code, not the alert's
        with both_arrived:  # the server reads them in its own time: wait for it, not a clock
            both_arrived.wait_for(lambda: len(arrived) == 2, timeout=60)
        assert sorted(arrived) == [f"{BASE}/fail", f"{BASE}/start"]  # order: the test above
        assert len(smtp.messages) == 1  # the mail went out although the pings hung
        [warning] = _ping_warnings(done.stderr)
        assert "monitoring ping start failed" in warning and "1 s" in warning
    finally:
        release.set()


def test_a_monitor_that_refuses_does_not_fail_the_run_and_is_logged_once(tmp_path, smtp):
    closed = f"http://127.0.0.1:{free_port()}/ping/health-check"
    done = run_cli("cleanup_stale_devices", env=_env(tmp_path, smtp, closed))
    assert done.returncode == 0, done.stderr
    [warning] = _ping_warnings(done.stderr)
    assert " WARNING " in warning and "Connection refused" in warning
    failed = _failing_run(tmp_path, _env(tmp_path, smtp, closed))
    assert failed.returncode == 1
    assert len(_ping_warnings(failed.stderr)) == 1
    assert len(smtp.messages) == 1  # the failure mail still went out
