"""The service's PID file, which a dead process cannot hold.

The pid is written to the file; the lock that says "running" is an OS file lock (flock /
LockFileEx, through filelock as the run locks use) on `<pid file>.lock`, which the kernel frees
with the process. So a pid file left by a crash (or a reboot) is stale and never blocks a start,
and `stop` signals the pid in the file only while its lock is held and the pid is a live
run_scheduler process (the pid is written just after the lock is taken, and removed just before
it is let go).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import filelock


# holder() probes by taking the lock for an instant, so a start racing a probe (`status`, or
# `start` polling for its child) must wait a little instead of reading "already running".
ACQUIRE_WAIT_SECONDS = 5.0
# The lock is taken before the pid is written: how long holder() re-reads a pid that is
# missing or not (yet) the service's before it gives up.
PID_SETTLE_SECONDS = 2.0


def _is_service(pid: int) -> bool:
    """The pid is alive and, where /proc shows it, runs run_scheduler (never an unrelated
    process that got a crashed service's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return b"run_scheduler" in command


class PidFile:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock: filelock.BaseFileLock | None = None

    def acquire(self) -> bool:
        """Take the lock and write our pid; False when a live service holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.lock_path), timeout=ACQUIRE_WAIT_SECONDS)
        try:
            lock.acquire()
        except filelock.Timeout:
            return False
        self._lock = lock
        from ..files import write_atomically

        write_atomically(self.path, f"{os.getpid()}\n")
        return True

    def release(self) -> None:
        if self._lock is None:
            return
        try:
            if self.read_pid() == os.getpid():
                self.path.unlink()
        except OSError:
            pass
        self._lock.release()
        self._lock = None

    def read_pid(self) -> int | None:
        try:
            return int(self.path.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None

    def holder(self) -> int | None:
        """The pid of the live service holding the lock (0 when no pid of a live service shows
        within PID_SETTLE_SECONDS), or None when no process holds it (a pid in the file is then
        stale)."""
        ends = time.monotonic() + PID_SETTLE_SECONDS
        while True:
            if not self.lock_path.exists():
                return None
            probe = filelock.FileLock(str(self.lock_path), timeout=0)
            try:
                probe.acquire()
            except filelock.Timeout:
                pid = self.read_pid()
            else:
                probe.release()
                return None
            # A starting service holds the lock before its pid is written, a stopping one
            # deletes its pid before it lets the lock go: re-read until it settles.
            if pid and _is_service(pid):
                return pid
            if time.monotonic() >= ends:
                return 0
            time.sleep(0.05)
