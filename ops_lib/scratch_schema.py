"""A scratch copy of schema.sql on the live server: what the drift check and index preview compare.

Like skeema's workspace, schema.sql is not parsed here but run on the same server, into a
database of its own, so the server itself normalises defaults, display widths, inherited
charsets and MariaDB's JSON; then two catalogs read the same way are compared. The scratch
database:

- is named `ops_scratch_<UTC YYYYmmddHHMMSS>_<6 hex>`, so one grant (`ops\\_scratch\\_%`) covers
  every run and a later run can tell its age from the name; an operator who may create only one
  named database gives that name instead (`--scratch-database NAME`);
- is never one that exists already (CREATE DATABASE, not IF NOT EXISTS: nothing of someone
  else's is loaded into or dropped), except an operator-named one that holds the marker table
  `_ops_scratch` every scratch gets first: a scratch a killed run left, dropped and created again;
- is created with the live database's default charset and collation, its DDL kept out of the
  binary log where the user may (skeema's --temp-schema-binlog=auto), its session's
  lock_wait_timeout capped (a metadata lock held elsewhere fails the run instead of stalling it);
- is dropped in every case: normal end, an error, a stop signal (checked between statements);
- and scratch databases a killed run left, older than an hour, are swept by the next run.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterable, Iterator

from .errors import BadInput, Interrupted, JobFailed, OpsError, PreconditionFailed
from .timeutil import utcnow

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from .runtime import RunContext, StopSignal
    from .schema_catalog import Catalog
    from .schema_sql import Statement

SCRATCH_PREFIX = "ops_scratch_"
NAME_TIME_FORMAT = "%Y%m%d%H%M%S"
GENERATED_NAME = re.compile(re.escape(SCRATCH_PREFIX) + r"(\d{14})_[0-9a-f]{6}")
STALE_AFTER = dt.timedelta(hours=1)
# The table every scratch gets first, with its creation time: an operator-named database that
# holds it is a scratch a killed run left, dropped by the next run; one without it is refused.
SCRATCH_MARKER = "_ops_scratch"
LOCK_WAIT_TIMEOUT_SECONDS = 5  # skeema's cap on its workspace sessions
SCRATCH_GRANT_PATTERN = SCRATCH_PREFIX.replace("_", "\\_") + "%"  # ops\_scratch\_%, for GRANT and LIKE
# An operator's --scratch-database: letters, digits, `_`, `$` and `-`, never a backquote, so it
# goes into `...` in SQL as it is. Not safe everywhere: `$` expands in an unquoted shell word
# and `_` is a LIKE wildcard, so it is quoted for a shell and compared with =, never LIKE.
OPERATOR_NAME = re.compile(r"[A-Za-z0-9_$-]{1,64}")

MYSQL_DATABASE_EXISTS = 1007

_log = logging.getLogger("ops")


class ScratchInterrupted(Interrupted):
    """A stop signal arrived while the scratch database was being prepared (it is dropped)."""


def generated_scratch_name(now: dt.datetime | None = None) -> str:
    """`ops_scratch_<UTC time of creation>_<6 random hex>`."""
    return f"{SCRATCH_PREFIX}{(now or utcnow()).strftime(NAME_TIME_FORMAT)}_{secrets.token_hex(3)}"


def scratch_created_at(name: str) -> dt.datetime | None:
    """When a generated scratch database was created, from its name; None for any other name."""
    match = GENERATED_NAME.fullmatch(name)
    if match is None:
        return None
    try:
        return dt.datetime.strptime(match.group(1), NAME_TIME_FORMAT)
    except ValueError:  # 14 digits that are no time (a 13th month): not one of ours
        return None


def stale_scratch_names(names: Iterable[str], now: dt.datetime,
                        older_than: dt.timedelta = STALE_AFTER) -> list[str]:
    """The generated scratch names among `names` created more than `older_than` before `now`."""
    stale = []
    for name in names:
        created = scratch_created_at(name)
        if created is not None and now - created > older_than:
            stale.append(name)
    return sorted(stale)


def check_scratch_name(name: str | None) -> list[str]:
    """Problems with an operator's --scratch-database NAME, found before connecting."""
    if name is None or OPERATOR_NAME.fullmatch(name):
        return []
    return [f"--scratch-database {name!r}: use 1 to 64 letters, digits, '_', '$' or '-'"]


def drop_statement(name: str) -> str:
    return f"DROP DATABASE IF EXISTS `{name}`"


def sweep_stale_scratch_schemas(conn: Connection, now: dt.datetime,
                                older_than: dt.timedelta = STALE_AFTER,
                                log: logging.Logger | None = None) -> list[str]:
    """Drop the generated scratch databases older than `older_than` (left by killed runs).

    Only names of the generated pattern exactly; an operator-named scratch database is never
    swept. A drop that fails (a lock held past the session's lock_wait_timeout, no privilege)
    is a warning: the next run tries again. Returns the names dropped.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from .db import describe_db_error

    log = log or _log
    names = conn.execute(text(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE :pattern"),
        {"pattern": SCRATCH_GRANT_PATTERN}).scalars().all()
    dropped = []
    for name in stale_scratch_names(names, now, older_than):
        try:
            conn.exec_driver_sql(drop_statement(name))
        except DBAPIError as error:
            log.warning("could not drop the stale scratch database %s (%s); the next run "
                        "tries again, or by hand: %s;", name, describe_db_error(error),
                        drop_statement(name))
            continue
        dropped.append(name)
    if dropped:
        log.info("dropped %d stale scratch databases left by earlier runs: %s",
                 len(dropped), ", ".join(dropped))
    return dropped


@contextmanager
def scratch_schema(engine: Engine, live_schema: str, **options) -> Iterator[str]:
    """schema.sql loaded into a new database on `engine`'s server; yields its name and drops it
    on the way out, whatever happened (the options: `scratch_session`'s)."""
    with scratch_session(engine, live_schema, **options) as (scratch, _conn):
        yield scratch


@contextmanager
def scratch_session(engine: Engine, live_schema: str, *, name: str | None = None,
                    statements: list[Statement] | None = None, now: dt.datetime | None = None,
                    stop: StopSignal | None = None, log: logging.Logger | None = None,
                    sweep_older_than: dt.timedelta = STALE_AFTER,
                    lock_wait_timeout: int = LOCK_WAIT_TIMEOUT_SECONDS
                    ) -> Iterator[tuple[str, Connection]]:
    """schema.sql (or `statements`) loaded into a new database on `engine`'s server; yields its
    name and the session that made it (autocommit; read the scratch's catalog on it rather than
    on a new connection), and drops it on the way out, whatever happened.

    `name` is the operator's --scratch-database (default: a generated name); it must not exist.
    `stop` (the run's StopSignal) is checked between statements: a signal stops the load,
    drops the scratch database and raises ScratchInterrupted. After the load, generated scratch
    databases older than `sweep_older_than` are swept. `lock_wait_timeout` caps the session's
    metadata-lock waits, seconds (skeema's 5 s). `now` (naive UTC) names the scratch.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from .db import describe_db_error
    from .schema_sql import execute_statements, schema_statements

    log = log or _log
    now = now or utcnow()
    problems = check_scratch_name(name)
    if name == live_schema:
        problems.append(f"--scratch-database {name!r} is the live database: name one that this "
                        "run may create and drop")
    if problems:
        raise BadInput(*problems)
    scratch = name or generated_scratch_name(now)
    statements = schema_statements() if statements is None else statements

    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    created = False
    try:
        charset, collation = _default_charset(conn, live_schema)
        _prepare_session(conn, lock_wait_timeout, log)
        create = f"CREATE DATABASE `{scratch}` CHARACTER SET {charset} COLLATE {collation}"
        try:
            conn.exec_driver_sql(create)
        except DBAPIError as error:
            if not (name is not None and _is_our_leftover(conn, error, scratch)):
                raise _create_failed(error, scratch, name is not None) from None
            log.warning("--scratch-database %s is a scratch an earlier run left (it holds %s): "
                        "dropped and created again", scratch, SCRATCH_MARKER)
            conn.exec_driver_sql(drop_statement(scratch))
            conn.exec_driver_sql(create)
        created = True
        # First thing in it: the mark that says a later run may drop it (a run killed with -9
        # leaves an operator-named scratch no sweep touches).
        conn.exec_driver_sql(f"CREATE TABLE `{scratch}`.{SCRATCH_MARKER} (created_at DATETIME)")
        conn.execute(text(f"INSERT INTO `{scratch}`.{SCRATCH_MARKER} VALUES (:now)"), {"now": now})
        conn.exec_driver_sql(f"USE `{scratch}`")
        for statement in statements:
            _check_stop(stop, scratch)
            try:
                execute_statements(conn, [statement])
            except DBAPIError as error:
                raise _load_failed(scratch, statement, describe_db_error(error)) from None
        log.debug("schema.sql loaded into the scratch database %s (%d statements)",
                  scratch, len(statements))
        _check_stop(stop, scratch)
        try:
            sweep_stale_scratch_schemas(conn, now, sweep_older_than, log=log)
        except DBAPIError as error:  # housekeeping: the next run sweeps
            log.warning("could not look for stale scratch databases: %s", describe_db_error(error))
        _check_stop(stop, scratch)
        yield scratch, conn
    finally:
        try:
            if created:
                _drop_scratch(engine, conn, scratch, lock_wait_timeout, log)
        finally:
            # Closed, not pooled: the session's USE, sql_log_bin and lock_wait_timeout stay here.
            conn.invalidate()
            conn.close()


def _is_our_leftover(conn: Connection, error, scratch: str) -> bool:
    """The database exists and holds our marker table: a scratch a killed run left."""
    from sqlalchemy import text

    from .db import mysql_error_code

    if mysql_error_code(error) != MYSQL_DATABASE_EXISTS:
        return False
    return conn.execute(text(
        "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = :scratch "
        "AND TABLE_NAME = :marker"), {"scratch": scratch, "marker": SCRATCH_MARKER}).first() \
        is not None


def _prepare_session(conn: Connection, lock_wait_timeout: int, log: logging.Logger) -> None:
    """Keep the scratch's DDL out of the binary log where the user may; cap lock waits."""
    from sqlalchemy.exc import DBAPIError

    from .db import MYSQL_PRIVILEGE_MISSING, mysql_error_code

    try:
        conn.exec_driver_sql("SET SESSION sql_log_bin = 0")
    except DBAPIError as error:  # no SUPER / BINLOG ADMIN
        if mysql_error_code(error) != MYSQL_PRIVILEGE_MISSING:
            raise
        log.debug("no privilege to keep the scratch database's DDL out of the binary log")
    conn.exec_driver_sql("SET SESSION lock_wait_timeout = "
                         f"LEAST(@@session.lock_wait_timeout, {int(lock_wait_timeout)})")


def _default_charset(conn: Connection, live_schema: str) -> tuple[str, str]:
    from sqlalchemy import text

    row = conn.execute(text(
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
        "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name"), {"name": live_schema}).first()
    if row is None:
        raise PreconditionFailed(f"database {live_schema!r} does not exist on the server")
    return row[0], row[1]


def _create_failed(error, scratch: str, operator_named: bool) -> OpsError:
    from .db import MYSQL_DATABASE_ACCESS_DENIED, describe_db_error, mysql_error_code

    code = mysql_error_code(error)
    if code == MYSQL_DATABASE_EXISTS:
        if operator_named and scratch_created_at(scratch) is None:
            # Not a name of the generated pattern: it may be anyone's, never suggest dropping it
            return BadInput(f"--scratch-database {scratch} already exists: name a database that "
                            "does not exist (the check creates it and drops it afterwards)")
        return BadInput(f"the scratch database {scratch} already exists (a generated name met an "
                        f"existing database); if an earlier run left it: {drop_statement(scratch)};")
    if code == MYSQL_DATABASE_ACCESS_DENIED:
        return PreconditionFailed(
            f"cannot create the scratch database {scratch}: {describe_db_error(error)}; grant "
            f"the user ALL ON `{SCRATCH_GRANT_PATTERN}`.* (the schema_inspector role of "
            "tools/manage_db_users.py has it), or give --scratch-database NAME (a database "
            "the user may create and drop)")
    return JobFailed(f"cannot create the scratch database {scratch}: {describe_db_error(error)}")


def _load_failed(scratch: str, statement: Statement, reason: str) -> OpsError:
    what = f"the CREATE TABLE of {statement.table}" if statement.table else "a statement"
    return JobFailed(f"schema.sql line {statement.line}: {what} failed in the scratch "
                     f"database {scratch}: {reason}")


def _check_stop(stop: StopSignal | None, scratch: str) -> None:
    if stop is not None and stop.is_set():
        raise ScratchInterrupted(f"interrupted by {stop.signal_name} while preparing the scratch "
                                 f"database {scratch} (dropped); nothing was compared")


def _drop_scratch(engine: Engine, conn: Connection, scratch: str, lock_wait_timeout: int,
                  log: logging.Logger) -> None:
    """Drop on the scratch's own session; if that session is gone, once more on a new one; a
    failure is a warning with the statement to run by hand, never a second exception."""
    from .db import describe_db_error

    try:
        conn.exec_driver_sql(drop_statement(scratch))
        return
    except Exception as error:
        first = error
    try:
        with engine.connect() as fresh:
            fresh = fresh.execution_options(isolation_level="AUTOCOMMIT")
            _prepare_session(fresh, lock_wait_timeout, log)
            fresh.exec_driver_sql(drop_statement(scratch))
            fresh.invalidate()  # its session settings stay out of the pool
        return
    except Exception as error:
        log.warning("could not drop the scratch database %s (%s; %s); drop it by hand: %s;",
                    scratch, describe_db_error(first), describe_db_error(error),
                    drop_statement(scratch))


def expected_and_live(ctx: RunContext, scratch_database: str | None = None
                      ) -> tuple[Catalog, Catalog]:
    """(schema.sql's catalog, the live database's catalog), read the same way.

    MySQL/MariaDB: schema.sql loaded into a scratch database on the live server; SQLite: the
    catalog of an in-memory database built as `manage_schema.py create` builds one.
    """
    from .schema_catalog import expected_sqlite_catalog, read_catalog

    if not ctx.db.caps.is_mysql:
        if scratch_database is not None:
            raise BadInput("--scratch-database is for MySQL/MariaDB; on SQLite schema.sql's "
                           "schema is built in memory")
        with ctx.db.engine.connect() as conn:
            return expected_sqlite_catalog(), read_catalog(conn)
    live_schema = ctx.db.engine.url.database
    if not live_schema:
        raise BadInput(f"the database URL {ctx.db.display_url} names no database")
    # The live catalog is read on the run's own connection (pinned: no new one), not on the
    # scratch session, whose metadata-lock waits are capped: a live table locked by a running
    # ALTER longer than that would be left out of information_schema's answer with only a
    # warning. It is read on a thread while schema.sql loads into the scratch: the load waits
    # on the server's DDL, so the read costs no wall time. Each connection has one user.
    run_connection = ctx.db.pin()  # (pins are per thread: the reading thread takes this one)

    def read_live() -> Catalog:
        with ctx.db.pinned_like(run_connection), ctx.db.begin(write=False) as conn:
            return read_catalog(conn, live_schema)

    # Leaving the pool waits for the thread, also on a failure: the run's connection is used
    # next (the failure's ledger row), and each connection has one user.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ops-live-catalog") as pool:
        live = pool.submit(read_live)
        with scratch_session(ctx.db.engine, live_schema, name=scratch_database, stop=ctx.stop,
                             log=ctx.log) as (scratch, conn):
            expected = read_catalog(conn, scratch)
            expected.tables.pop(SCRATCH_MARKER, None)  # ours, not schema.sql's
        return expected, live.result()
