"""Replication lag, read one way for every tool: the archive pauses on it, the reporting
validation calls a mismatch inside it inconclusive.

MySQL: `SHOW REPLICA STATUS` (8.0.22+), falling back to `SHOW SLAVE STATUS`; a row per channel.
MariaDB: `SHOW ALL REPLICAS STATUS` (10.5.2+), falling back to `SHOW ALL SLAVES STATUS`: its
`SHOW REPLICA STATUS` shows the default connection only, so a replica replicating over a named
connection (multi-source) looked like no replica at all. Columns are read by name, since the
servers order them differently.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Union

from sqlalchemy.exc import DBAPIError

from .db import (
    MYSQL_PRIVILEGE_MISSING,
    Database,
    connect,
    describe_db_error,
    mysql_error_code,
)
from .errors import PreconditionFailed

if TYPE_CHECKING:
    from .runtime import RunContext

log = logging.getLogger(__name__)

REPLICA_CHECK_EVERY = 1.0  # seconds between two replica-lag readings
REPLICA_WAIT_STEP = 1.0  # seconds between two readings while the replica lags

NOT_A_REPLICA = "not a replica"

# Seconds behind the primary; None when unknown (replication stopped); NOT_A_REPLICA.
Lag = Union[float, None, str]


def read_lag(database: Database) -> Lag:
    """The server's replication lag in seconds (the largest over its channels or connections)."""
    if not database.caps.is_mysql:
        return NOT_A_REPLICA
    rows = None
    last_error: DBAPIError | None = None
    statements = (("SHOW ALL REPLICAS STATUS", "SHOW ALL SLAVES STATUS") if database.caps.is_mariadb
                  else ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"))
    for statement in statements:
        try:
            with database.engine.connect() as conn:
                rows = conn.exec_driver_sql(statement).mappings().all()
            break
        except DBAPIError as exc:
            last_error = exc
    if rows is None:
        # The privilege hint only where it applies: not on a replica that went away mid-run.
        hint = (" (the user needs REPLICATION CLIENT / SLAVE MONITOR)"
                if mysql_error_code(last_error) == MYSQL_PRIVILEGE_MISSING else "")
        raise PreconditionFailed(
            f"cannot read replication lag: {describe_db_error(last_error)}{hint}")
    if not rows:
        return NOT_A_REPLICA
    lags = [row.get("Seconds_Behind_Master", row.get("Seconds_Behind_Source")) for row in rows]
    if any(lag is None for lag in lags):
        return None
    return float(max(lags))


def describe_lag(lag: Lag) -> str:
    if lag == NOT_A_REPLICA:
        return NOT_A_REPLICA
    return "unknown (replication stopped)" if lag is None else f"{lag:g}s"


class ReplicaLag:
    """Reads replication lag (seconds) from the replica URL setting, or the server itself."""

    def __init__(self, ctx: "RunContext", max_lag: float | None):
        self.max_lag = max_lag
        self.enabled = max_lag is not None
        self.database: Database | None = None
        self.note: str | None = None
        self._last_check = 0.0
        self._own = False
        if not self.enabled:
            return
        if ctx.settings.replica_database_url:
            self.database = connect(ctx.settings.replica_database_url, driver=ctx.settings.db_driver)
            self._own = True
            where = f"replica {self.database.display_url}"
        else:
            self.database = ctx.db
            where = "the database server itself"
        if not self.database.caps.is_mysql:
            self.enabled = False
            self.note = "--max-replica-lag ignored: SQLite has no replicas"
            return
        lag = self.read()
        if lag == NOT_A_REPLICA:
            self.enabled = False
            self.note = (f"--max-replica-lag has no effect: {where} reports no replication "
                         "(its replica status is empty)")
        else:
            self.note = f"--max-replica-lag {max_lag:g}s watches {where} (lag now {describe_lag(lag)})"

    def read(self) -> Lag:
        return read_lag(self.database)

    def wait_while_lagging(self, ctx: "RunContext", stats) -> str | None:
        """Pause while the replica lags more than allowed; a stop reason if told to stop."""
        if not self.enabled or time.monotonic() - self._last_check < REPLICA_CHECK_EVERY:
            return None
        started = time.perf_counter()
        waited = False
        while True:
            self._last_check = time.monotonic()
            lag = self.read()
            if isinstance(lag, float) and lag <= self.max_lag:
                break
            if not waited:
                log.warning("replica lag %s > %gs: pausing", describe_lag(lag), self.max_lag)
                waited = True
            reason = ctx.why_stop()
            if reason:
                stats.add("replica wait", time.perf_counter() - started)
                return reason
            ctx.stop.wait(REPLICA_WAIT_STEP)
        if waited:
            stats.add("replica wait", time.perf_counter() - started)
            log.info("replica caught up: resuming")
        return None

    def close(self) -> None:
        if self._own and self.database is not None:
            self.database.engine.dispose()
