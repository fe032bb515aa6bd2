"""Benchmark: the drift check beside `skeema diff` on the full schema, on MariaDB.

Loads schema.sql into a scratch live database (`ops_bench_schema_drift`), writes schema.sql split
per table as skeema wants it (one `<table>.sql` per CREATE TABLE, and a `.skeema` file with the
server, the schema and its default charset and collation) into a temporary folder, and times, as
medians of RUNS runs after one warm-up:

- `skeema diff` (Debian's `skeema` package; its column is skipped with a note where it is not
  installed), expected exit 0 with no difference and 1 with one dropped column;
- `python tools/check_schema_drift.py --database-url URL` the same two ways (0 and 1);
- `python -c pass`, a bare interpreter's start-up, taken off the drift check's time for the
  comparison the issue sets (the drift check less start-up, no slower than skeema);
- and each child's CPU seconds (user + system), which a busy machine changes less than wall time.

It also prints two floors that no drift check built on this project's stack can go under: the
import of SQLAlchemy and PyMySQL (`python -c "import sqlalchemy, pymysql"` less start-up), and
the server's own seconds to load schema.sql into a scratch database and drop it again (one
DB-API connection, one statement at a time, nothing else timed).

    python benchmarks/bench_schema_drift.py [--runs N] [--keep]

The server is OPS_BENCH_MYSQL_URL (default root@127.0.0.1:3306).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from ops_lib.jobs.schema_admin import create_scratch_database, drop_database  # noqa: E402
from ops_lib.schema_sql import schema_statements  # noqa: E402

SERVER = os.environ.get("OPS_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
DATABASE = "ops_bench_schema_drift"
DRIFT_TOOL = REPO / "tools" / "check_schema_drift.py"
DROPPED = ("attendance_scan_queue", "device_serial")  # in no index and no foreign key


def url() -> str:
    return f"{SERVER.rstrip('/')}/{DATABASE}"


def write_skeema_folder(folder: Path) -> int:
    """schema.sql as skeema reads it: one file per CREATE TABLE, and the .skeema options."""
    tables = 0
    for statement in schema_statements():
        if statement.table:  # SET NAMES is the session's, not the schema's
            (folder / f"{statement.table.strip('`')}.sql").write_text(statement.text + ";\n")
            tables += 1
    server = make_url(SERVER)
    engine = create_engine(url())
    with engine.connect() as conn:
        charset, collation = conn.execute(text(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
            "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :s"), {"s": DATABASE}).one()
    engine.dispose()
    options = [f"host={server.host or '127.0.0.1'}", f"port={server.port or 3306}",
               f"user={server.username or 'root'}", f"schema={DATABASE}",
               f"default-character-set={charset}", f"default-collation={collation}"]
    if server.password:
        options.append(f"password={server.password}")
    skeema_file = folder / ".skeema"
    skeema_file.write_text("\n".join(options) + "\n")
    skeema_file.chmod(0o600)
    return tables


def run_once(command: list[str], expected_exit: int | None,
             cwd: Path | None = None) -> tuple[float, float]:
    """(wall seconds, the child's CPU seconds) of one run of `command`; its exit code checked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
    env.update(OPS_LOCK_DIR=str(Path(tempfile.gettempdir()) / "ops-bench-locks"))
    with tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        took = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        if expected_exit is not None and code != expected_exit:
            output.seek(0)
            raise SystemExit(f"{' '.join(command[:3])} ... exited {code}, expected "
                             f"{expected_exit}:\n{output.read()[-4000:]}")
    return took, usage.ru_utime + usage.ru_stime


def medians(commands: dict[str, tuple]) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each command (args of run_once), after one warm-up run each.

    The commands take turns, round by round, so a machine that gets busier or quieter during
    the benchmark weighs on all of them alike.
    """
    for args in commands.values():
        run_once(*args)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(ARGS.runs):
        for name, args in commands.items():
            times[name].append(run_once(*args))
    return {name: (statistics.median(wall for wall, _ in taken),
                   statistics.median(cpu for _, cpu in taken)) for name, taken in times.items()}


def scratch_server_seconds(statements: list[str]) -> float:
    """The server's time to create a scratch database, load `statements` into it and drop it."""
    server = make_url(SERVER)
    connection = server.get_dialect().import_dbapi().connect(
        host=server.host or "127.0.0.1", port=server.port or 3306,
        user=server.username or "root", password=server.password or "", autocommit=True)
    scratch = f"{DATABASE}_floor"
    try:
        cursor = connection.cursor()
        cursor.execute(f"DROP DATABASE IF EXISTS `{scratch}`")
        started = time.perf_counter()
        cursor.execute(f"CREATE DATABASE `{scratch}`")
        cursor.execute(f"USE `{scratch}`")
        for statement in statements:
            cursor.execute(statement)
        cursor.execute(f"DROP DATABASE `{scratch}`")
        return time.perf_counter() - started
    finally:
        connection.close()


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    ARGS = parser.parse_args()
    skeema = shutil.which("skeema")
    load_before = os.getloadavg()
    drift = [sys.executable, str(DRIFT_TOOL), "--database-url", url()]
    create_scratch_database(SERVER, DATABASE)
    try:
        with tempfile.TemporaryDirectory(prefix="ops-bench-skeema-") as folder:
            tables = write_skeema_folder(Path(folder))
            rows, imports = [], []
            for case, exit_code in (("no difference", 0), ("one dropped column", 1)):
                if exit_code:
                    engine = create_engine(url())
                    with engine.begin() as conn:
                        conn.exec_driver_sql(f"ALTER TABLE {DROPPED[0]} DROP COLUMN {DROPPED[1]}")
                    engine.dispose()
                commands = {"start-up": ([sys.executable, "-c", "pass"], 0),
                            "drift": (drift, exit_code),
                            "import": ([sys.executable, "-c", "import sqlalchemy, pymysql"], 0)}
                if skeema:
                    commands["skeema"] = ([skeema, "diff"], exit_code, Path(folder))
                taken = medians(commands)
                rows.append((case, taken.get("skeema", (None, None)), taken["drift"],
                             taken["start-up"]))
                imports.append(taken["import"][0] - taken["start-up"][0])
            ddl = [statement.text for statement in schema_statements()]
            server_floor = statistics.median(scratch_server_seconds(ddl)
                                             for _ in range(ARGS.runs))
    finally:
        if not ARGS.keep:
            drop_database(SERVER, DATABASE)

    what = "drift check"
    print(f"\nschema drift on the full schema ({tables} tables), MariaDB at "
          f"{make_url(SERVER).render_as_string(hide_password=True)}; median of {ARGS.runs} runs "
          "(seconds); start-up = python -c pass")
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f} "
          "(the machine's {} cores; wall times under load are noisy, CPU less so)"
          .format(*load_before, *os.getloadavg(), os.cpu_count()))
    print(f"{'case':<20} {'skeema':>8} {what:>19} {'start-up':>9} "
          f"{what + ' - start-up':>30} {'ratio':>7}   {'CPU: skeema':>11} {what:>19}")
    for case, (skeema_s, skeema_cpu), (drift_s, drift_cpu), (startup, _) in rows:
        net = drift_s - startup
        shown = f"{skeema_s:>8.3f}" if skeema_s is not None else f"{'-':>8}"
        ratio = f"{net / skeema_s:>7.2f}" if skeema_s else f"{'-':>7}"
        cpu = f"{skeema_cpu:>11.3f}" if skeema_cpu is not None else f"{'-':>11}"
        print(f"{case:<20} {shown} {drift_s:>19.3f} {startup:>9.3f} {net:>30.3f} {ratio}   "
              f"{cpu} {drift_cpu:>19.3f}")
    print("ratio = (drift check - start-up) / skeema diff, wall; below 1 is faster than skeema. "
          "CPU = the child's user + system seconds (the rest of the wall time is waiting, mostly "
          "on the server's DDL)")
    import_floor = statistics.median(imports)
    print(f"floors: importing sqlalchemy and pymysql {import_floor:.3f} s (less start-up); the "
          f"server loading schema.sql into a scratch database and dropping it "
          f"{server_floor:.3f} s; together {import_floor + server_floor:.3f} s, the least a drift "
          "check on SQLAlchemy can take less start-up")
    if not skeema:
        print("note: skeema is not installed (Debian: apt-get install skeema); its column is "
              "skipped")


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
