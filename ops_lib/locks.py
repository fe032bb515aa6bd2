"""The run lock: at most one copy of a tool at a time, released when its process dies.

MySQL/MariaDB: `GET_LOCK` on a dedicated connection (the server frees it when the session ends,
including when the process is killed). SQLite: an OS file lock (flock / LockFileEx) through
`filelock`, which the kernel frees with the process.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import filelock
from sqlalchemy import Connection, text

from .db import Database, sqlite_file


class RunLock(Protocol):
    name: str

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


GET_LOCK_MAX = 64  # characters in a GET_LOCK name (MySQL and MariaDB)


def server_lock_name(database: str, tool: str) -> str:
    """The GET_LOCK name of a tool's run lock on a database: unique to the pair, at most 64 chars.

    Names are server-wide, so they are scoped to the database; cutting `ops:<db>:<tool>` at 64
    made two tools share a lock on a long database name. The hash of both decides; the readable
    part (tool, start of the database name) is for SHOW PROCESSLIST and performance_schema.
    """
    digest = hashlib.sha1(f"{database}\0{tool}".encode()).hexdigest()[:16]
    readable = f"ops:{tool[:30]}:"
    room = GET_LOCK_MAX - len(readable) - len(digest) - 1
    return f"{readable}{database[:room]}:{digest}"


class MySqlRunLock:
    def __init__(self, db: Database, name: str):
        self.name = server_lock_name(db.engine.url.database or "", name)
        self._db = db
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        conn = self._db.engine.connect()
        got = conn.execute(text("SELECT GET_LOCK(:name, 0)"), {"name": self.name}).scalar()
        conn.commit()
        if got == 1:
            self._conn = conn
            return True
        conn.close()
        return False

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": self.name})
            self._conn.commit()
        finally:
            self._conn.close()
            self._conn = None


FILE_NAME_MAX = 255  # bytes in one file name on ext4, NTFS, APFS


def file_lock_name(database_file: str, tool: str) -> str:
    """`<database file>.<tool>.lock`, or with a hash of both when that name would be too long."""
    name = f"{database_file}.{tool}.lock"
    if len(name.encode()) <= FILE_NAME_MAX:
        return name
    digest = hashlib.sha1(f"{database_file}\0{tool}".encode()).hexdigest()[:16]
    return f"{database_file[:100]}.{digest}.{tool[:64]}.lock"


class FileRunLock:
    def __init__(self, lock_dir: str | Path, db: Database, name: str):
        # Beside the database file, so every copy using that file finds the same lock whatever
        # its settings; an in-memory database has no file, and uses lock_dir.
        self.name = name
        file = sqlite_file(db.engine.url)
        if file is not None:
            file = file.resolve()
            self.path = file.with_name(file_lock_name(file.name, name))
        else:
            scope = hashlib.sha1(db.url.encode()).hexdigest()[:10]
            self.path = Path(lock_dir) / f"{name}-{scope}.lock"
        self._lock: filelock.BaseFileLock | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.path), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            return False
        self._lock = lock
        return True

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def run_lock(db: Database, name: str, lock_dir: str | Path) -> RunLock:
    """The right lock for this database: a server lock on MySQL, a file lock otherwise."""
    if db.caps.named_locks:
        return MySqlRunLock(db, name)
    return FileRunLock(lock_dir, db, name)
