"""Helpers to run the test-only waiting tool (tests/fakes/waiting_tool.py) as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

WAITING_TOOL = REPO / "tests" / "fakes" / "waiting_tool.py"


def start_waiting_tool(env: dict, tmp_path: Path, *args: str, name: str = "holder"):
    """Start the waiting tool; return (process, ready file, release file) once its job runs."""
    ready, release = tmp_path / f"{name}.ready", tmp_path / f"{name}.release"
    process = subprocess.Popen(
        [sys.executable, str(WAITING_TOOL), "--ready-file", str(ready),
         "--release-file", str(release), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"waiting tool exited {process.returncode} before running: {err}{out}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("waiting tool did not start within 30 s")
        time.sleep(0.02)
    return process, ready, release


def run_waiting_tool(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WAITING_TOOL), *args], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def kill_hard(process: subprocess.Popen) -> None:
    """SIGKILL: no handler runs, nothing is released by the process itself."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    process.stdout.close()
    process.stderr.close()
