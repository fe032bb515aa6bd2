"""Database access: the engine, what the server can do, transactions, and transient-error retry."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from .errors import BadInput, DatabaseUnavailable
from .settings import DEFAULT_DATABASE_URL, mask_url

log = logging.getLogger(__name__)
T = TypeVar("T")

# MySQL/MariaDB error codes worth another try: deadlock, lock wait timeout, server gone away,
# lost connection, too many connections, query interrupted by a restart, and 1467: InnoDB
# reports a deadlock or lock wait on a table's AUTO-INC lock (concurrent INSERT ... SELECT
# under innodb_autoinc_lock_mode=1) as "Failed to read auto-increment value"; four workers
# at once met it in the suite. A retry reruns the whole transaction after a rollback.
MYSQL_TRANSIENT_CODES = {1213, 1205, 2006, 2013, 1040, 1927, 1317, 1467}
# Cannot connect at all, or login refused: the run fails at once with one line.
MYSQL_UNREACHABLE_CODES = {2003, 2005, 1045, 1049, 1044}
MYSQL_DUPLICATE_KEY = 1062  # ER_DUP_ENTRY: a unique or primary key already holds the value
# SQLite's extended result codes for the same (sqlite3 names them from Python 3.11 on).
SQLITE_DUPLICATE_KEY_NAMES = {"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"}


@dataclass(frozen=True)
class Capabilities:
    """What the connected server offers, detected from its version."""

    dialect: str  # "mysql" or "sqlite"
    server_version: str
    is_mariadb: bool
    skip_locked: bool
    named_locks: bool

    @property
    def is_mysql(self) -> bool:
        return self.dialect == "mysql"


@dataclass
class Database:
    engine: Engine
    caps: Capabilities
    url: str = field(repr=False)  # holds the password: repr shows display_url instead
    # Each thread's pinned connection (`pinned`): the worker's lanes share this object.
    # (init=False: a copy made with dataclasses.replace gets its own, not the original's pins.)
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False,
                                    compare=False)

    def __repr__(self) -> str:
        return f"Database(url={self.display_url!r}, caps={self.caps!r})"

    @property
    def display_url(self) -> str:
        return mask_url(self.url)

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Run the transactions inside on one connection, not one checked out of the pool each.

        A job of thousands of short transactions saves the pool's ping and reset around every
        one (two round trips). A lost connection reconnects at its next transaction. The pin is
        the calling thread's: each of the worker's lanes pins a connection of its own.
        """
        if self._pinned is not None:
            yield
            return
        with self.engine.connect() as conn:
            self._local.pinned = conn
            try:
                yield
            finally:
                self._local.pinned = None

    @property
    def _pinned(self) -> Connection | None:
        return getattr(self._local, "pinned", None)

    @contextmanager
    def pinned_like(self, other_thread_pin: Connection | None) -> Iterator[None]:
        """Run this thread's transactions on another thread's pinned connection (`pin()` read
        there), for work handed to a helper thread while that thread leaves the connection
        alone: one user at a time, and no new connection."""
        self._local.pinned = other_thread_pin
        try:
            yield
        finally:
            self._local.pinned = None

    def pin(self) -> Connection | None:
        """The calling thread's pinned connection, if any (for pinned_like)."""
        return self._pinned

    @contextmanager
    def begin(self, write: bool = True) -> Iterator[Connection]:
        """A transaction; on SQLite a writing one takes the write lock up front (BEGIN IMMEDIATE)."""
        pinned = self._pinned
        if pinned is not None and not pinned.in_transaction():
            # A transaction opened inside another one (a heartbeat) takes a pooled connection.
            pinned.execution_options(ops_write=write)
            with pinned.begin():
                yield pinned
            return
        with self.engine.connect() as conn:
            if write:
                conn = conn.execution_options(ops_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only transaction whose statements all see one consistent snapshot.

        MySQL/MariaDB: REPEATABLE READ on this connection only (the engine's is READ COMMITTED)
        and `START TRANSACTION WITH CONSISTENT SNAPSHOT`, which takes the snapshot at once
        rather than at the first read. SQLite: one read transaction is one snapshot (WAL).
        Plain SQL and SQLAlchemy's isolation option: the same with any driver.
        """
        with self.engine.connect() as conn:
            if self.caps.is_mysql:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                if self.caps.is_mysql:
                    conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                yield conn

    def run(self, work: Callable[[Connection], T], write: bool = True, what: str = "") -> T:
        """Run `work` in one transaction, retried on transient errors with capped backoff."""
        return retry_transient(lambda: self._once(work, write), what=what)

    def _once(self, work: Callable[[Connection], T], write: bool) -> T:
        with self.begin(write=write) as conn:
            return work(conn)


def mysql_error_code(exc: BaseException) -> int | None:
    """The MySQL error number of a SQLAlchemy error or of a driver's own exception."""
    orig = getattr(exc, "orig", None) or exc
    args = getattr(orig, "args", None)
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_transient(exc: BaseException) -> bool:
    """Deadlock, lock wait timeout, lost connection, or SQLite's busy database."""
    if not isinstance(exc, DBAPIError):
        return False
    code = mysql_error_code(exc)
    if code is not None:
        return code in MYSQL_TRANSIENT_CODES
    if exc.connection_invalidated:
        return True
    message = str(getattr(exc, "orig", exc)).lower()
    return isinstance(exc, OperationalError) and (
        "database is locked" in message or "database table is locked" in message
    )


def is_duplicate_key(exc: BaseException) -> bool:
    """A unique or primary key refused a second row with the same key.

    Not any integrity error: a foreign-key, NOT NULL or CHECK violation is a different failure
    and must not be mistaken for "someone wrote the same row first". MySQL says so by error
    code; SQLite by the constraint that failed (Python 3.10's sqlite3 carries no error code).
    """
    orig = getattr(exc, "orig", None) or exc
    code = mysql_error_code(exc)
    if code is not None:
        return code == MYSQL_DUPLICATE_KEY
    name = getattr(orig, "sqlite_errorname", None)
    if name is not None:
        return name in SQLITE_DUPLICATE_KEY_NAMES
    message = str(orig)
    return message.startswith(("UNIQUE constraint failed", "PRIMARY KEY must be unique"))


def retry_transient(
    work: Callable[[], T],
    attempts: int = 6,
    base_delay: float = 0.05,
    max_delay: float = 2.0,
    what: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `work`, retrying transient database errors with capped exponential backoff + jitter."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except DBAPIError as exc:
            if not is_transient(exc) or attempt == attempts:
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            log.warning(
                "transient database error%s (attempt %d of %d), retrying in %.2fs: %s",
                f" in {what}" if what else "",
                attempt,
                attempts,
                delay,
                describe_db_error(exc),
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


# A privilege the login lacks: on a table, a column, a database (also at connect time), or a
# server privilege (PROCESS, SLAVE MONITOR...).
MYSQL_TABLE_ACCESS_DENIED = 1142
MYSQL_COLUMN_ACCESS_DENIED = 1143
MYSQL_DATABASE_ACCESS_DENIED = 1044
MYSQL_PRIVILEGE_MISSING = 1227
MYSQL_PRIVILEGE_CODES = {MYSQL_TABLE_ACCESS_DENIED, MYSQL_COLUMN_ACCESS_DENIED,
                         MYSQL_DATABASE_ACCESS_DENIED, MYSQL_PRIVILEGE_MISSING}
_DENIED_TABLE = re.compile(
    r"(?P<what>[A-Z][A-Z ]*?) command denied to user '(?P<user>[^']*)'@'(?P<host>[^']*)' "
    r"for (?:column '(?P<column>[^']*)' in )?table (?P<table>[`'][^`']*[`'](?:\.[`'][^`']*[`'])?)")
_DENIED_DATABASE = re.compile(
    r"Access denied for user '(?P<user>[^']*)'@'(?P<host>[^']*)' to database '(?P<db>[^']*)'")
_MISSING_PRIVILEGE = re.compile(r"you need \(at least one of\) the (?P<what>.+?) privilege")


def privilege_problem(exc: BaseException) -> str | None:
    """A missing privilege (MySQL errors 1142, 1143, 1044, 1227) in words: who lacks what on
    which table; None for any other error."""
    code = mysql_error_code(exc)
    args = getattr(getattr(exc, "orig", None) or exc, "args", ())
    if code not in MYSQL_PRIVILEGE_CODES or len(args) < 2:
        return None
    message = " ".join(str(args[1]).split())
    table = _DENIED_TABLE.search(message)
    if table:
        name = table["table"].replace("`", "").replace("'", "").rsplit(".", 1)[-1]
        on = f"column {table['column']} of table {name}" if table["column"] else f"table {name}"
        return (f"the database user '{table['user']}'@'{table['host']}' lacks the "
                f"{table['what']} privilege on {on} (error {code})")
    database = _DENIED_DATABASE.search(message)
    if database:
        return (f"the database user '{database['user']}'@'{database['host']}' has no "
                f"privilege on database {database['db']} (error {code})")
    missing = _MISSING_PRIVILEGE.search(message)
    if missing:
        return f"the database user lacks the {missing['what']} privilege (error {code})"
    return None


def describe_db_error(exc: BaseException) -> str:
    """A one-line description of a database error, without the SQL or any parameters."""
    orig = getattr(exc, "orig", None) or exc
    args = getattr(orig, "args", ())
    problem = privilege_problem(exc)
    if problem:
        return problem
    if len(args) >= 2 and isinstance(args[0], int):
        # The server quotes the statement after "near": its line breaks would break the line.
        return " ".join(f"({args[0]}) {args[1]}".split())
    return " ".join(str(orig).splitlines()[0].split()) if str(orig) else type(orig).__name__


def sqlite_file(url: str | URL) -> Path | None:
    """The file of an SQLite URL; None for an in-memory database."""
    parsed = make_url(url)
    database = parsed.database
    if database and parsed.query.get("uri") == "true":  # sqlite:///file:/path/x.db?uri=true
        if parsed.query.get("mode") == "memory":
            return None
        database = database.removeprefix("file:")
    return Path(database) if database and database != ":memory:" else None


def create_schema_command(url: str) -> str:
    """The command that creates the schema in this very database (password masked)."""
    command = "python tools/manage_schema.py create --execute"
    if url != DEFAULT_DATABASE_URL:
        command += " --database-url '" + mask_url(url).replace("'", "'\\''") + "'"
    return command


def _sqlite_engine(url: str, create: bool) -> Engine:
    file = sqlite_file(url)
    if file is not None and create:
        file.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's begin event decide BEGIN vs BEGIN IMMEDIATE (pysqlite's own is wrong).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("ops_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


# The MySQL/MariaDB drivers the toolkit runs on: SQLAlchemy's name of each, by setting value.
MYSQL_DRIVERS = {"pymysql": "pymysql", "mysqlclient": "mysqldb"}
DEFAULT_MYSQL_DRIVER = "pymysql"


def _escape_datetime(value: dt.datetime, mapping=None) -> str:
    if value.tzinfo is not None:
        from pymysql import converters

        return converters.escape_datetime(value, mapping)
    return "'" + value.isoformat(" ") + "'"  # the text PyMySQL writes, formatted faster


def _escape_date(value: dt.date, mapping=None) -> str:
    return "'" + value.isoformat() + "'"


def _quick_datetime_decoder(driver_decoder: Callable[[str], Any]) -> Callable[[str], Any]:
    """A DATETIME/TIMESTAMP decoder that parses the server's text in C (datetime.fromisoformat),
    leaving anything else ("0000-00-00 00:00:00", a date alone) to the driver's own. Both
    drivers parse it in Python, at ~2 us a value: a worker's batches read hundreds of
    thousands of them."""

    def decode(text: str) -> Any:
        if len(text) >= 19:  # "YYYY-MM-DD HH:MM:SS[.ffffff]", as the server writes it
            try:
                return dt.datetime.fromisoformat(text)
            except ValueError:
                pass
        return driver_decoder(text)

    return decode


@functools.cache
def pymysql_conversions() -> dict:
    """PyMySQL's conversions with quicker datetime and date encoders (a batch binds hundreds of
    thousands of them, and PyMySQL's str.format of each field took a third of its escaping
    time) and a quicker DATETIME decoder."""
    from pymysql import converters
    from pymysql.constants import FIELD_TYPE

    decode = _quick_datetime_decoder(converters.convert_datetime)
    return {**converters.conversions, dt.datetime: _escape_datetime, dt.date: _escape_date,
            FIELD_TYPE.DATETIME: decode, FIELD_TYPE.TIMESTAMP: decode}


def _pymysql_tuning() -> tuple[dict, Callable[[Engine], None]]:
    """PyMySQL (pure Python): quicker encoders, and no TLS context per connection where the
    server offers no TLS."""
    return {"conv": pymysql_conversions()}, _skip_tls_the_server_lacks


def _skip_tls_the_server_lacks(engine: Engine) -> None:
    from pymysql.constants.CLIENT import SSL as CLIENT_SSL

    # PyMySQL (1.2) tries TLS wherever the URL says nothing of it, and for that builds a TLS
    # context per connection, loading the system CA bundle: 0.1-0.2 s of CPU each, spent even
    # on a server that offers no TLS. Once a connection has shown that this server offers none,
    # the next ones say so up front: plain text, as the driver would have fallen back to. A URL
    # with ssl options, and a server that offers TLS, are left to the driver.
    server_offers_tls: list[bool] = []

    @event.listens_for(engine, "connect")
    def _note_tls(dbapi_connection, _record):
        if not server_offers_tls:
            capabilities = getattr(dbapi_connection, "server_capabilities", None)
            if isinstance(capabilities, int):
                server_offers_tls.append(bool(capabilities & CLIENT_SSL))

    @event.listens_for(engine, "do_connect")
    def _plain_text_up_front(_dialect, _record, _cargs, cparams):
        asks_for_tls = any(key == "ssl" or key.startswith("ssl_") for key in cparams)
        if server_offers_tls == [False] and not asks_for_tls:
            cparams["ssl_disabled"] = True


def _mysqlclient_tuning() -> tuple[dict, Callable[[Engine], None]]:
    """mysqlclient's (MySQLdb, C): its encoders are C code already; its DATETIME decoder is
    Python, and gets the quicker one."""
    from MySQLdb import converters  # not installed: an ImportError, told as a usage error
    from MySQLdb.constants import FIELD_TYPE

    decode = _quick_datetime_decoder(converters.DateTime_or_None)
    return {"conv": {**converters.conversions, FIELD_TYPE.DATETIME: decode,
                     FIELD_TYPE.TIMESTAMP: decode}}, lambda engine: None


# One function per driver, the only place that knows anything of a driver's own: its connect
# arguments, and a hook for the engine's events.
DRIVER_TUNING = {"pymysql": _pymysql_tuning, "mysqldb": _mysqlclient_tuning}


def mysql_driver(url: str | URL, driver: str | None = None) -> str:
    """SQLAlchemy's name of the driver to use: the URL's own (`mysql+mysqldb://`), else the
    `db_driver` setting's, else PyMySQL."""
    named = make_url(url).get_driver_name()
    if "+" in make_url(url).drivername:
        if named not in DRIVER_TUNING:
            raise BadInput(f"unsupported MySQL driver {named!r} in the database URL: use "
                           f"mysql+pymysql:// or mysql+mysqldb:// (mysqlclient)")
        return named
    return MYSQL_DRIVERS[driver or DEFAULT_MYSQL_DRIVER]


def _mysql_engine(url: str, driver: str | None = None) -> Engine:
    parsed = make_url(url)
    name = mysql_driver(parsed, driver)
    parsed = parsed.set(drivername=f"{parsed.get_backend_name()}+{name}")
    query = dict(parsed.query)
    query.setdefault("charset", "utf8mb4")
    parsed = parsed.set(query=query)
    try:
        driver_args, tune_engine = DRIVER_TUNING[name]()
    except ImportError as exc:  # PyMySQL is a dependency: only the [fast] extra's may lack
        raise BadInput(
            "the mysqlclient driver is not installed: pip install 'ops-toolkit[fast]' (it builds "
            "against libmariadb-dev, with pkg-config, gcc and python3-dev), or use PyMySQL "
            "(db_driver = pymysql)") from exc
    engine = create_engine(
        parsed,
        pool_pre_ping=True,
        pool_recycle=3600,
        # The connection returned last is reused first: a closed slot (a scratch schema's
        # session, invalidated) is reconnected only when no open connection is idle (a new
        # connection's cost: see _skip_tls_the_server_lacks).
        pool_use_lifo=True,
        # Queue workers read what others committed after they waited for a row lock.
        isolation_level="READ COMMITTED",
        connect_args={"init_command": "SET time_zone = '+00:00'", "connect_timeout": 10,
                      **driver_args},
    )
    tune_engine(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # The schema's collation for the session (SQLAlchemy's SET NAMES resets it to the
        # charset's default): a string built in SQL (CAST, CONCAT) then compares with a column
        # without "Illegal mix of collations".
        cursor = dbapi_connection.cursor()
        cursor.execute("SET collation_connection = 'utf8mb4_unicode_ci'")
        cursor.close()

    return engine


def _detect(engine: Engine) -> Capabilities:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            version = conn.exec_driver_sql("select sqlite_version()").scalar_one()
            return Capabilities("sqlite", version, False, skip_locked=False, named_locks=False)
        version = conn.exec_driver_sql("select version()").scalar_one()
    is_mariadb = "mariadb" in version.lower()
    numbers = tuple(int(part) for part in version.split("-")[0].split(".")[:3])
    skip_locked = numbers >= ((10, 6, 0) if is_mariadb else (8, 0, 1))
    return Capabilities("mysql", version, is_mariadb, skip_locked=skip_locked, named_locks=True)


def connect(url: str, create: bool = False, plan_create: bool = False,
            driver: str | None = None) -> Database:
    """Open the database, check it answers, and detect what it can do.

    An SQLite file must exist unless `create` (only `manage_schema.py create --execute` creates
    one): a mistyped path fails with one line instead of leaving folders and an empty file behind.
    `plan_create` (the dry run of `create`) stands an empty in-memory database in for a missing
    file, so the plan lists every table `--execute` would create there, and nothing is written.
    """
    backend = make_url(url).get_backend_name()
    file = sqlite_file(url) if backend == "sqlite" else None
    engine_url = url
    if file is not None and not create and not file.is_file():
        if not plan_create:
            raise BadInput(f"no SQLite database at {file} (nothing was created); to create one "
                           f"there: {create_schema_command(url)}")
        engine_url = "sqlite://"
    try:
        engine = (_sqlite_engine(engine_url, create) if backend == "sqlite"
                  else _mysql_engine(url, driver))
    except OSError as exc:  # the SQLite file's folder cannot be created
        raise DatabaseUnavailable(
            f"cannot use the database at {mask_url(url)}: {exc.strerror or exc}: {exc.filename}"
        ) from exc
    try:
        caps = retry_transient(lambda: _detect(engine), attempts=3, what="connect")
    except DBAPIError as exc:
        engine.dispose()
        raise DatabaseUnavailable(
            f"cannot use the database at {mask_url(url)}: {describe_db_error(exc)}"
        ) from exc
    return Database(engine=engine, caps=caps, url=url)
