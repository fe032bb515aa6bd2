"""A real MariaDB primary and replica for tests, in a temporary folder on spare local ports.

`ReplicaPair` installs a data directory (`mariadb-install-db`) and a copy of it, starts two
`mariadbd` processes on them (the primary with its binary log on), points the replica at the primary with
`CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos` and waits until replication runs. Leaving the
`with` block stops both servers and removes the folder, also when a test failed. The shared
server on 3306 is never touched. Starting takes a few seconds: share one pair per session.

What MariaDB 10.11 reports as `Seconds_Behind_Master` (checked by tests/test_replica_lag.py):
- replica caught up, both threads running: 0;
- SQL thread stopped (`stop_sql_thread`), or the IO thread not yet connected: NULL, which
  `ops_lib.replica.read_lag` returns as None ("unknown (replication stopped)"), whatever the
  replica has missed. Writes on the primary meanwhile wait in the relay log;
- SQL thread running behind: now minus the timestamp of the event it is applying. That is how
  `hold_back` makes a deterministic number: it turns on delayed replication
  (`MASTER_DELAY` = twice `seconds`) and writes one event on the primary whose timestamp is
  `seconds` in the past (`SET timestamp`): the SQL thread waits on that event for another
  `seconds`, and meanwhile reports a lag of `seconds` and more, however fast the machine is.
  Everything written on the primary after it waits too. `release` removes the delay.
`SHOW REPLICA STATUS` on the primary is empty: `read_lag` says NOT_A_REPLICA.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

from tests.fakes.smtp_server import free_port

INSTALL_DB = ("mariadb-install-db", "/usr/bin/mariadb-install-db")
MARIADBD = ("mariadbd", "/usr/sbin/mariadbd", "/usr/libexec/mariadbd")
START_TIMEOUT = 120.0  # seconds: a generous deadline, not an expectation of speed
REPLICATION_TIMEOUT = 120.0
REPLICATION_USER, REPLICATION_PASSWORD = "ops_repl", "ops_repl_pw"
MARKER_DATABASE = "ops_replication_marker"

# Small and quiet: two of these run next to the shared server on a CI machine.
STORAGE_OPTIONS = ("--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M")
SERVER_OPTIONS = (
    *STORAGE_OPTIONS,
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--performance-schema=OFF",
    "--max-connections=60",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ReplicationSetupError(RuntimeError):
    """The pair could not be started; the message ends with the server's error log."""


def find_binary(names: tuple[str, ...]) -> str | None:
    """The first of `names` on PATH, or given as a path, that is executable (mariadbd lives in
    /usr/sbin, not on every user's PATH)."""
    return next((found for found in map(shutil.which, names) if found), None)


def missing_binaries() -> list[str]:
    """The MariaDB programs this helper needs and cannot find."""
    return [names[0] for names in (INSTALL_DB, MARIADBD) if not find_binary(names)]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the test process dies, even by SIGKILL, so a
    killed pytest leaves no server behind (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _as_root() -> tuple[str, ...]:
    # mariadbd refuses to run as root unless told to: CI runs the tests as root.
    return ("--user=root",) if os.geteuid() == 0 else ()


class Server:
    """One mariadbd process with its own data directory, socket, port and error log."""

    def __init__(self, folder: Path, name: str, server_id: int, extra: tuple[str, ...] = ()):
        self.folder = folder
        self.name = name
        self.server_id = server_id
        self.extra = extra
        self.datadir = folder / name
        self.error_log = folder / f"{name}.err"
        self.port = 0
        self.process: subprocess.Popen | None = None

    def own_tmpdir(self) -> list[str]:
        """A server starting up deletes every `#sql*` file in its tmpdir: with the default
        /tmp it would delete the shared server's temporary tables under its running queries."""
        tmpdir = self.folder / f"{self.name}.tmp"
        tmpdir.mkdir(exist_ok=True)
        return [f"--tmpdir={tmpdir}"]

    def install(self) -> None:
        command = [find_binary(INSTALL_DB), "--no-defaults", f"--datadir={self.datadir}",
                   "--auth-root-authentication-method=normal", "--skip-test-db", *_as_root(),
                   *self.own_tmpdir(),
                   *STORAGE_OPTIONS]  # the bootstrap writes a small redo log too
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            raise ReplicationSetupError(
                f"{self.name}: mariadb-install-db exited {done.returncode}:\n" + "\n".join(tail))

    def start(self) -> None:
        """Start on a spare port and wait until it accepts connections (a port taken between
        choosing and binding is retried with another)."""
        for _attempt in range(3):
            self.stop()  # an earlier attempt's server, if it is still there
            logged = self._log_size()
            self.port = free_port()
            self.process = subprocess.Popen(
                [find_binary(MARIADBD), "--no-defaults", *_as_root(),
                 f"--datadir={self.datadir}", f"--socket={self.folder / (self.name + '.sock')}",
                 f"--pid-file={self.folder / (self.name + '.pid')}",
                 f"--log-error={self.error_log}", f"--port={self.port}",
                 f"--server-id={self.server_id}", *self.own_tmpdir(), *SERVER_OPTIONS,
                 *self.extra],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            why = self._wait_until_ready()
            if why is None:
                return
            if "Address already in use" not in self._log_since(logged):
                break
        self.stop()
        raise ReplicationSetupError(f"{self.name}: mariadbd on port {self.port} {why}; "
                                    f"its error log ends:\n{self.log_tail()}")

    def _wait_until_ready(self) -> str | None:
        """None once the server accepts connections; else what went wrong."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"exited {self.process.returncode}"
            try:
                self.connect().close()
                return None
            except pymysql.err.OperationalError:
                time.sleep(0.1)
        return f"did not accept connections within {START_TIMEOUT:g} s"

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="",
                               database=database, autocommit=True, connect_timeout=5,
                               cursorclass=pymysql.cursors.DictCursor)

    def query(self, *statements: str) -> list[dict]:
        """Run the statements on one connection; the rows of the last one."""
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
                return list(cursor.fetchall())
        finally:
            connection.close()

    def url(self, database: str = "") -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}"

    def _log_size(self) -> int:
        try:
            return self.error_log.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        """What the error log gained since `offset` (this start attempt's own lines)."""
        try:
            with open(self.error_log, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no error log: {exc})"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # mariadbd shuts down cleanly on SIGTERM
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


class ReplicaPair:
    """A primary (binary log on, server id 1) and its replica (server id 2); see the module
    docstring for the lag each state reports."""

    def __init__(self, folder: Path | None = None):
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="ops-replica-"))
        self.primary = Server(self.folder, "primary", 1, ("--log-bin=primary-bin",))
        self.replica = Server(self.folder, "replica", 2, ("--relay-log=replica-relay-bin",))
        self.connection = ""  # the replica's connection name ('' = the default connection)

    # -- lifetime ---------------------------------------------------------------------------

    def __enter__(self) -> "ReplicaPair":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def start(self) -> None:
        # One installation, copied: the bootstrap is most of the start-up time.
        self.primary.install()
        shutil.copytree(self.primary.datadir, self.replica.datadir)
        for server in (self.primary, self.replica):
            server.start()
        self.primary.query(
            f"CREATE USER '{REPLICATION_USER}'@'127.0.0.1' IDENTIFIED BY '{REPLICATION_PASSWORD}'",
            f"GRANT REPLICATION SLAVE ON *.* TO '{REPLICATION_USER}'@'127.0.0.1'",
            f"CREATE DATABASE {MARKER_DATABASE}",
            f"CREATE TABLE {MARKER_DATABASE}.marker (id INT AUTO_INCREMENT PRIMARY KEY, "
            "note VARCHAR(100) NOT NULL)",
        )
        self._replicate()

    def _replicate(self) -> None:
        self.replica.query(
            f"CHANGE MASTER '{self.connection}' TO MASTER_HOST='127.0.0.1', "
            f"MASTER_PORT={self.primary.port}, MASTER_USER='{REPLICATION_USER}', "
            f"MASTER_PASSWORD='{REPLICATION_PASSWORD}', MASTER_USE_GTID=slave_pos, "
            "MASTER_CONNECT_RETRY=1",
            f"START SLAVE '{self.connection}'",
        )
        self.wait_caught_up()

    def rename_connection(self, name: str) -> None:
        """Replicate over the named connection `name` (MariaDB multi-source; '' = the default
        one) instead of the current one, from where the replica is."""
        self.replica.query(f"STOP SLAVE '{self.connection}'",
                           f"RESET SLAVE '{self.connection}' ALL")
        self.connection = name
        self._replicate()

    def close(self) -> None:
        for server in (self.replica, self.primary):
            server.stop()
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- addresses --------------------------------------------------------------------------

    def primary_url(self, database: str = "") -> str:
        return self.primary.url(database)

    def replica_url(self, database: str = "") -> str:
        return self.replica.url(database)

    # -- replication state ------------------------------------------------------------------

    def status(self) -> dict:
        """The replica's status row for its connection (`SHOW SLAVE '...' STATUS`)."""
        rows = self.replica.query(f"SHOW SLAVE '{self.connection}' STATUS")
        if not rows:
            raise ReplicationSetupError("the replica reports no replication")
        return rows[0]

    def lag(self):
        """`Seconds_Behind_Master` as the replica reports it (None = NULL)."""
        return self.status()["Seconds_Behind_Master"]

    def stop_sql_thread(self) -> None:
        """Stop applying: the replica keeps receiving events but falls behind, lag NULL."""
        self.replica.query(f"STOP SLAVE '{self.connection}' SQL_THREAD")

    def start_sql_thread(self) -> None:
        self.replica.query(f"START SLAVE '{self.connection}' SQL_THREAD")

    def hold_back(self, seconds: int = 3600) -> None:
        """Make the replica report a lag of `seconds` or more, until `release`."""
        self._set_delay(2 * seconds)
        self.primary.query(
            f"SET timestamp = UNIX_TIMESTAMP() - {int(seconds)}",
            f"INSERT INTO {MARKER_DATABASE}.marker (note) VALUES ('held back {int(seconds)} s')",
        )
        self._wait_for(lambda status: (status["Seconds_Behind_Master"] or 0) >= seconds,
                       f"the replica to report a lag of {seconds} s")

    def release(self) -> None:
        """Remove the delay `hold_back` set, and wait until the replica has caught up."""
        self._set_delay(0)
        self.wait_caught_up()

    def _set_delay(self, seconds: int) -> None:
        # MariaDB changes MASTER_DELAY only with both threads stopped.
        self.replica.query(f"STOP SLAVE '{self.connection}'",
                           f"CHANGE MASTER '{self.connection}' TO MASTER_DELAY={int(seconds)}",
                           f"START SLAVE '{self.connection}'")

    def wait_caught_up(self) -> None:
        """Wait until the replica has applied everything the primary has written so far, and
        reports a lag of 0 with both threads running."""
        position = self.primary.query("SELECT @@gtid_binlog_pos AS pos")[0]["pos"]
        self._wait_for(
            lambda status: (status["Slave_IO_Running"] == "Yes"
                            and status["Slave_SQL_Running"] == "Yes"
                            and status["Seconds_Behind_Master"] == 0
                            and self._applied(position)),
            f"the replica to apply the primary's GTID position {position!r}")

    def _applied(self, position: str) -> bool:
        if not position:
            return True
        done = self.replica.query(f"SELECT MASTER_GTID_WAIT('{position}', 0) AS done")
        return done[0]["done"] == 0

    def _wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + REPLICATION_TIMEOUT
        status = self.status()
        while not condition(status):
            if time.monotonic() > deadline:
                keep = ("Slave_IO_Running", "Slave_SQL_Running", "Seconds_Behind_Master",
                        "SQL_Delay", "Last_IO_Error", "Last_SQL_Error", "Gtid_IO_Pos")
                raise ReplicationSetupError(
                    f"waited {REPLICATION_TIMEOUT:g} s for {what}; replica status "
                    f"{ {k: status.get(k) for k in keep} }; its error log ends:\n"
                    f"{self.replica.log_tail()}")
            time.sleep(0.1)
            status = self.status()
