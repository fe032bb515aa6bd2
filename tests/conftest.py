"""Shared fixtures: a fresh database per test on SQLite and on MariaDB, and helpers.

MariaDB is reached at OPS_TEST_MYSQL_URL (default root@127.0.0.1:3306). Locally a test that needs
it is skipped when the server is down; in CI (CI=true) it fails instead.
"""

from __future__ import annotations

import importlib
import itertools
import os
import pty
import re
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from ops_lib.db import Database, connect
from ops_lib.jobs.schema_admin import create_schema, create_scratch_database, drop_database
from ops_lib.schema import metadata

REPO = Path(__file__).resolve().parent.parent
MYSQL_SERVER_URL = os.environ.get("OPS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _mysql_reachable() -> str | None:
    try:
        engine = create_engine(MYSQL_SERVER_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure means: not reachable
        return str(exc).splitlines()[0]


def require_mariadb() -> None:
    problem = _mysql_reachable()
    if problem:
        if IN_CI:
            pytest.fail(f"MariaDB must be reachable in CI at {MYSQL_SERVER_URL}: {problem}")
        pytest.skip(f"MariaDB not reachable: {problem}")


class MysqlScratch:
    """A scratch database on the server, with the schema loaded from schema.sql."""

    def __init__(self, name: str):
        self.name = name
        self.url = f"{MYSQL_SERVER_URL.rstrip('/')}/{name}"

    def create(self) -> None:
        self.url = create_scratch_database(MYSQL_SERVER_URL, self.name)

    def drop(self) -> None:
        drop_database(MYSQL_SERVER_URL, self.name)


@pytest.fixture(scope="session")
def mysql_scratch():
    require_mariadb()
    scratch = MysqlScratch(f"ops_test_{os.getpid()}")
    scratch.create()
    yield scratch
    scratch.drop()


def require_mariadb_programs() -> None:
    """mariadb-install-db and mariadbd, to start servers of a test's own: skip without them
    locally, fail in CI."""
    from replication import missing_binaries

    missing = missing_binaries()
    if missing:
        if IN_CI:
            pytest.fail(f"CI needs the MariaDB server programs: {', '.join(missing)}")
        pytest.skip(f"MariaDB server programs not found: {', '.join(missing)}")


@pytest.fixture(scope="session")
def replica_pair():
    """A MariaDB primary and replica of the test's own (tests/replication.py), started once."""
    from replication import ReplicaPair

    require_mariadb_programs()
    with ReplicaPair() as pair:
        yield pair


def _empty_all_tables(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
        for table in reversed(metadata.sorted_tables):
            conn.exec_driver_sql(f"DELETE FROM `{table.name}`")
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
    engine.dispose()


def sqlite_database(folder: Path, name: str = "ops.db") -> str:
    """The URL of a new SQLite file in `folder` with the schema and no rows."""
    url = f"sqlite:///{folder / name}"
    database = connect(url, create=True)
    with database.engine.begin() as conn:
        create_schema(conn, is_mysql=False)
    database.engine.dispose()
    return url


def require_mysqlclient() -> None:
    """The C driver of the [fast] extra: skip without it locally, fail in CI (.ci/run builds it)."""
    try:
        importlib.import_module("MySQLdb")
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"CI needs mysqlclient (pip install -e '.[fast]'): {exc}")
        pytest.skip(f"mysqlclient not installed: {exc}")


def with_driver(url: str, driver: str) -> str:
    """The same MySQL URL through another driver (SQLAlchemy's name: pymysql, mysqldb)."""
    parsed = make_url(url)
    return parsed.set(drivername=f"{parsed.get_backend_name()}+{driver}").render_as_string(
        hide_password=False)


# The worker's exactly-once, kill and dry-run tests run on each of these; the rest of the suite
# on the first two (PyMySQL is the default driver), so the suite stays within its time.
EVERY_BACKEND = ["sqlite", "mariadb", "mariadb-mysqlclient"]


@pytest.fixture(params=["sqlite", "mariadb"])
def db_url(request, tmp_path) -> str:
    """A database URL with the schema and no rows: SQLite file, or the MariaDB scratch database
    (through PyMySQL, or through mysqlclient for the param "mariadb-mysqlclient")."""
    if request.param == "sqlite":
        return sqlite_database(tmp_path)
    if request.param == "mariadb-mysqlclient":
        require_mysqlclient()
    scratch = request.getfixturevalue("mysql_scratch")
    _empty_all_tables(scratch.url)
    if request.param == "mariadb-mysqlclient":
        return with_driver(scratch.url, "mysqldb")
    return scratch.url


@pytest.fixture
def mariadb_url(mysql_scratch) -> str:
    _empty_all_tables(mysql_scratch.url)
    return mysql_scratch.url


@pytest.fixture
def db(db_url) -> Database:
    database = connect(db_url)
    yield database
    database.engine.dispose()


LEDGER = "ops_job_runs"
_snapshots_taken = itertools.count()


class Snapshot(dict):
    """Every row of every table, sorted, the run ledger included; `==` compares two of them.

    Two snapshots are equal when every table holds the same rows, the ledger too, except for
    one ledger row that only the later snapshot has: the row of the run in between (a dry run
    may write its own row, SPEC.md). A row of an earlier run changed or removed, or a second new
    ledger row, is a difference; `assert_unchanged(..., runs=N)` allows N runs in between.
    """

    def __init__(self, rows: dict, ledger: dict[str, tuple]):
        super().__init__(rows)
        self.ledger = ledger  # run_id -> row
        self.taken = next(_snapshots_taken)

    def differences(self, other: "Snapshot") -> list[str]:
        earlier, later = sorted((self, other), key=lambda snap: snap.taken)
        found = []
        for name in sorted((set(earlier) | set(later)) - {LEDGER}):
            was, now = earlier.get(name, []), later.get(name, [])
            if was != now:
                gone, new = [r for r in was if r not in now], [r for r in now if r not in was]
                found.append(f"{name}: {len(gone)} rows gone or changed {gone[:3]}, "
                             f"{len(new)} rows new or changed {new[:3]}")
        for run_id, row in earlier.ledger.items():
            if later.ledger.get(run_id) != row:
                found.append(f"{LEDGER}: run {run_id} was {row}, now {later.ledger.get(run_id)}")
        return found

    def new_runs(self, other: "Snapshot") -> list[str]:
        """Run ids in the later of the two snapshots only: the runs' own rows."""
        earlier, later = sorted((self, other), key=lambda snap: snap.taken)
        return [run_id for run_id in later.ledger if run_id not in earlier.ledger]

    def __eq__(self, other):
        if not isinstance(other, Snapshot):
            return dict.__eq__(self, other)
        return not self.differences(other) and len(self.new_runs(other)) <= 1

    def __ne__(self, other):
        return not self == other

    __hash__ = None  # type: ignore[assignment]


def snapshot(database: Database, exclude: tuple[str, ...] = ()) -> Snapshot:
    """Every row of every table, the run ledger included: compare before and after with `==`.

    A later snapshot may hold one new ledger row (the run's own) and still be equal; see
    `Snapshot`. `assert_unchanged` also checks how many runs wrote a row.
    """
    rows, ledger = {}, {}
    with database.engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name in exclude:
                continue
            result = conn.execute(select(table)).all()
            rows[table.name] = sorted((tuple(r) for r in result), key=repr)
            if table.name == LEDGER:
                ledger = {r.run_id: tuple(r) for r in result}
    return Snapshot(rows, ledger)


def assert_unchanged(before: Snapshot, after: Snapshot, runs: int = 1) -> None:
    """No row changed but the ledger rows of exactly `runs` new runs."""
    assert before.differences(after) == []
    assert len(before.new_runs(after)) == runs, before.new_runs(after)


def pytest_collection_modifyitems(items):
    """The slow tests (real processes, large loads) first, in their order: the test processes
    hand tests out in this order, so the long ones start early and the two processes end
    together on short ones, not one of them alone on a long one."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_assertrepr_compare(op, left, right):
    if op == "==" and isinstance(left, Snapshot) and isinstance(right, Snapshot):
        new_runs = left.new_runs(right)
        extra = [f"{LEDGER}: {len(new_runs)} new rows, one allowed: {new_runs}"] \
            if len(new_runs) > 1 else []
        return ["the snapshots differ:", *left.differences(right), *extra]
    return None


def tool_env(url: str, tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
    env.update(
        OPS_DATABASE_URL=url,
        OPS_LOCK_DIR=str(tmp_path / "locks"),
        OPS_OUTBOX_DIR=str(tmp_path / "outbox"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_cli(tool: str, *args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python tools/<tool>.py ARGS` as cron would: a real process, no terminal."""
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / f"{tool}.py"), *args],
        env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def start_cli(tool: str, *args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "tools" / f"{tool}.py"), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def job_context(url: str, tmp_path: Path, dry_run: bool = False, **env: str):
    """A RunContext as run_tool builds it, for calling a job function in-process."""
    from ops_lib.ledger import new_run_id
    from ops_lib.runtime import Budget, RunContext, StopSignal
    from ops_lib.settings import load_settings

    settings = load_settings(env=tool_env(url, tmp_path, **env))
    return RunContext(db=connect(url), settings=settings, run_id=new_run_id(), tool="test",
                      dry_run=dry_run, budget=Budget(None), stop=StopSignal())


def run_on_a_terminal(command: list[str], env: dict, stderr=None) -> tuple[int, bytes]:
    """Run `command` with stdout (and stderr, unless given) on a pseudo-terminal; returns its
    exit code and every byte it wrote there."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=follower,
                               stderr=follower if stderr is None else stderr)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=60), b"".join(chunks)


# Scratch databases (ops_lib/scratch_schema.py): shared by its tests and the tools' signal tests.

def named_at(when) -> str:
    """A generated scratch name for a database created at `when` (naive UTC)."""
    from ops_lib.scratch_schema import SCRATCH_PREFIX

    return f"{SCRATCH_PREFIX}{when:%Y%m%d%H%M%S}_{uuid.uuid4().hex[:6]}"


@contextmanager
def scratch_sweep_turn(server):
    """The turn to make old scratch databases and sweep them, one test on the server at a time
    (a server-wide lock: another test's sweep would drop or wait on this test's databases)."""
    with server.connect() as conn:
        got = conn.exec_driver_sql("SELECT GET_LOCK('ops_test_scratch_sweep', 600)").scalar()
        assert got == 1, "another test run held the scratch sweep lock for 10 minutes"
        try:
            yield
        finally:
            conn.exec_driver_sql("SELECT RELEASE_LOCK('ops_test_scratch_sweep')")


def loaded_scratch(process: subprocess.Popen) -> str:
    """The scratch's name, from the process's log line once schema.sql is loaded."""
    seen = []
    for line in process.stderr:
        seen.append(line)
        match = re.search(r"schema.sql loaded into the scratch database (\S+)", line)
        if match:
            return match.group(1)
    process.wait()
    pytest.fail(f"the process exited {process.returncode} before loading: {''.join(seen)}")


def wait_for_drop_waiting_on_lock(server, process, scratch: str, old: str) -> None:
    """Until the process's session (in its scratch) waits for the metadata lock to drop `old`."""
    deadline = time.monotonic() + 120  # a hang guard, not a speed assumption
    with server.connect() as conn:
        while not conn.execute(text(
                "SELECT 1 FROM information_schema.PROCESSLIST WHERE DB = :scratch "
                "AND INFO = :drop AND STATE LIKE '%metadata lock%'"),
                {"scratch": scratch, "drop": f"DROP DATABASE IF EXISTS `{old}`"}).first():
            assert process.poll() is None, "the process exited before its sweep waited"
            assert time.monotonic() < deadline, "the sweep never waited on the lock"
            time.sleep(0.02)


def catalog_of(url: str):
    """The normalised catalog (ops_lib/schema_catalog.py) of the database at `url`."""
    from ops_lib.schema_catalog import read_catalog

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return read_catalog(conn)
    finally:
        engine.dispose()


def schema_state(url: str) -> dict:
    """What any DDL would change: each table's definition (size estimates are no part of a
    Table's equality) and, on MySQL/MariaDB, its CREATE_TIME, which even a no-op rebuild moves."""
    catalog = catalog_of(url)
    times: dict = {}
    if catalog.dialect == "mysql":
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                times = dict(conn.execute(text(
                    "SELECT TABLE_NAME, CREATE_TIME FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE()")).all())
        finally:
            engine.dispose()
    return {name: (table, times.get(name)) for name, table in catalog.tables.items()}


def run_mariadb_client(url: str, sql: bytes) -> subprocess.CompletedProcess:
    """`mariadb --default-character-set=utf8mb4 DB < file`, as the docs tell an operator, on the
    database of `url`; `sql` is the file. No client: a skip here, a failure in CI."""
    import shutil

    from sqlalchemy.engine import make_url

    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        if IN_CI:  # .ci/run installs MariaDB, and so its client
            pytest.fail("no mysql command-line client in CI")
        pytest.skip("no mysql command-line client on this machine")
    server = make_url(url)
    command = [client, "--default-character-set=utf8mb4", "--protocol=TCP",
               f"--host={server.host or '127.0.0.1'}", f"--port={server.port or 3306}",
               f"--user={server.username or 'root'}", server.database]
    env = {**os.environ, "MYSQL_PWD": server.password or ""}
    return subprocess.run(command, input=sql, capture_output=True, env=env, timeout=60)


@pytest.fixture
def smtp():
    """A real local SMTP server (aiosmtpd) that keeps what it receives."""
    from tests.fakes.smtp_server import FakeSmtpServer

    with FakeSmtpServer() as server:
        yield server


@pytest.fixture
def pings():
    """A local HTTP server recording every ping (path, body)."""
    from tests.fakes.ping_server import PingRecorder

    with PingRecorder() as recorder:
        yield recorder
