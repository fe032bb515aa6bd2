"""The run ledger: every run, dry or not, is a row in `ops_job_runs`."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid

from sqlalchemy import insert, select, update
from sqlalchemy.exc import DBAPIError

from .db import Database, create_schema_command, describe_db_error, privilege_problem
from .errors import PreconditionFailed
from .result import JobResult
from .schema_base import ops_job_runs
from .timeutil import utcnow

log = logging.getLogger("ops")
HEARTBEAT_EVERY_SECONDS = 15.0
ABANDONED_AFTER_SECONDS = 3600


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # no cheap probe without extra packages: leave it to the hour rule
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def new_run_id() -> str:
    return uuid.uuid4().hex


class RunLedger:
    """Writes this run's row: inserted at start, heartbeats while it works, closed at the end."""

    def __init__(self, db: Database, tool: str, run_id: str, args: dict, dry_run: bool):
        self.db = db
        self.tool = tool
        self.run_id = run_id
        self.args = args
        self.dry_run = dry_run
        self._last_beat = 0.0
        self._beat_lock = threading.Lock()  # the worker's lanes beat from their own threads

    def start(self) -> None:
        now = utcnow()
        row = {
            "run_id": self.run_id,
            "tool": self.tool,
            "host": socket.gethostname()[:255],
            "pid": os.getpid(),
            "args": json.dumps(self.args, default=str, sort_keys=True),
            "dry_run": self.dry_run,
            "started_at": now,
            "heartbeat_at": now,
            "status": "running",
        }
        try:
            self.db.run(lambda conn: conn.execute(insert(ops_job_runs).values(**row)), what="ledger")
        except DBAPIError as exc:
            # A login without the grant has a schema already: only a missing table needs one.
            hint = "" if privilege_problem(exc) else \
                f"; create the schema first: {create_schema_command(self.db.url)}"
            raise PreconditionFailed(
                f"cannot write the run ledger (ops_job_runs): {describe_db_error(exc)}{hint}"
            ) from exc
        self._last_beat = time.monotonic()
        if self.dry_run:
            # SPEC.md: a dry run writes only its own row; the next --execute run closes them.
            dead = self.dead_runs(now)
            if dead:
                log.info("%d earlier %s runs died without closing their ledger row; the next "
                         "--execute run marks them abandoned", len(dead), self.tool)
        else:
            self.close_abandoned(now)

    def dead_runs(self, now) -> list[str]:
        """Run ids of this tool's runs that died without closing their row (SIGKILL, reboot).

        Dead means: on this host, its process is gone; anywhere, no heartbeat for an hour.
        """
        r = ops_job_runs
        running = self.db.run(lambda conn: conn.execute(
            select(r.c.run_id, r.c.host, r.c.pid, r.c.heartbeat_at).where(
                r.c.tool == self.tool, r.c.status == "running", r.c.run_id != self.run_id)
        ).all(), write=False, what="ledger")
        host = socket.gethostname()[:255]
        return [row.run_id for row in running
                if (row.host == host and not _process_alive(row.pid))
                or row.heartbeat_at < now - dt.timedelta(seconds=ABANDONED_AFTER_SECONDS)]

    def close_abandoned(self, now) -> int:
        """Mark this tool's dead runs (see `dead_runs`) abandoned; never in a dry run."""
        r = ops_job_runs
        dead = self.dead_runs(now)
        if not dead:
            return 0
        statement = update(r).where(r.c.run_id.in_(dead), r.c.status == "running").values(
            status="abandoned", finished_at=now,
            stop_reason="no heartbeat: the process died (killed, crashed or rebooted)")
        return self.db.run(lambda conn: conn.execute(statement).rowcount, what="ledger")

    def heartbeat(self, force: bool = False) -> None:
        with self._beat_lock:  # one lane of several writes each beat
            if not force and time.monotonic() - self._last_beat < HEARTBEAT_EVERY_SECONDS:
                return
            self._last_beat = time.monotonic()
        self._update(heartbeat_at=utcnow())

    def finish(self, result: JobResult) -> None:
        now = utcnow()
        values = dict(
            heartbeat_at=now,
            finished_at=now,
            status=result.status,
            stop_reason=result.stop_reason[:255],
            counts=json.dumps(result.counts, sort_keys=True),
            error=result.error,
        )
        if self._update(**values) == 0:
            # The row is gone (a schema reset dropped the table under this very run): write it again.
            self.start()
            self._update(**values)

    def _update(self, **values) -> int:
        statement = update(ops_job_runs).where(ops_job_runs.c.run_id == self.run_id).values(**values)
        return self.db.run(lambda conn: conn.execute(statement).rowcount, what="ledger")


def close_killed_run(db: Database, tool: str, pid: int, reason: str) -> int:
    """Close the running row of `tool`'s process `pid` on this host as abandoned: a run killed
    by SIGKILL (the scheduler service's timeout or stop) cannot close its own row."""
    r = ops_job_runs
    statement = update(r).where(
        r.c.tool == tool, r.c.pid == pid, r.c.host == socket.gethostname()[:255],
        r.c.status == "running").values(status="abandoned", finished_at=utcnow(),
                                          stop_reason=reason[:255])
    return db.run(lambda conn: conn.execute(statement).rowcount, what="ledger")
