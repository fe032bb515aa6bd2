"""The service's PID file, which a dead process cannot hold.

The pid is written to the file; the lock that says "running" is an OS file lock (flock /
LockFileEx, through filelock as the run locks use) on `<pid file>.lock`, which the kernel frees
with the process. So a pid file left by a crash (or a reboot) is stale and never blocks a start,
and `stop` signals the pid in the file only while its lock is held.
"""

from __future__ import annotations

import os
from pathlib import Path

import filelock


class PidFile:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock: filelock.BaseFileLock | None = None

    def acquire(self) -> bool:
        """Take the lock and write our pid; False when a live service holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.lock_path), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            return False
        self._lock = lock
        self.path.write_text(f"{os.getpid()}\n", encoding="utf-8")
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
        """The pid of the live service holding the lock (0 when its pid is unreadable), or None
        when no process holds it (a pid in the file is then stale)."""
        if not self.lock_path.exists():
            return None
        probe = filelock.FileLock(str(self.lock_path), timeout=0)
        try:
            probe.acquire()
        except filelock.Timeout:
            return self.read_pid() or 0
        probe.release()
        return None
