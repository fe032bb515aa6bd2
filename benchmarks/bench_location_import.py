"""Benchmark: importing the full location hierarchy (8 / 64 / ~500 / ~4,500 rows) on MariaDB.

Writes the test data's full hierarchy (tests/location_data.py) as one CSV per level, then prints,
as medians of RUNS runs, each on a fresh scratch database (`ops_bench_locations`):

- reading the source (`read_source`: parsing and validation, no database);
- a first import (plan + apply, one transaction: every row new), a second one of the same
  source (plan only finds nothing to change) and a third that renames every union (the
  UPDATE path), in-process, the job only;
- the same first import as a process (`python tools/import_ipemis_locations.py SOURCE
  --execute`: interpreter start-up, reading, the run ledger and lock included), beside the
  process floor (`python tools/import_ipemis_locations.py --help`);
- the server's raw INSERT floor for the same rows: four executemany INSERTs with the ids
  computed in Python, no reads, no diff; and the first import's ratio to it.

    python benchmarks/bench_location_import.py [--runs N] [--keep]

The server is OPS_BENCH_MYSQL_URL (default root@127.0.0.1:3306). Target (issue 13): the first
import under 2 seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import insert  # noqa: E402

from ops_lib.db import connect  # noqa: E402
from ops_lib.jobs.locations.model import (  # noqa: E402
    PARENT_COLUMN,
    PARENT_LEVEL,
    TABLES,
    LocationSource,
)
from ops_lib.jobs.locations.plan import apply, plan  # noqa: E402
from ops_lib.jobs.locations.source import read_source  # noqa: E402
from ops_lib.jobs.schema_admin import create_scratch_database, drop_database  # noqa: E402
from ops_lib.timeutil import utcnow  # noqa: E402
from tests.location_data import write_source  # noqa: E402

SERVER = os.environ.get("OPS_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
DATABASE = "ops_bench_locations"


def fresh_database():
    return connect(create_scratch_database(SERVER, DATABASE))


def import_once(database, source) -> float:
    started = time.perf_counter()
    with database.begin() as conn:
        apply(conn, plan(conn, source, 5))
    return time.perf_counter() - started


def renamed_unions(source: LocationSource) -> LocationSource:
    rows = dict(source.rows)
    rows["unions"] = [replace(row, name_en=f"{row.name_en} Union") for row in rows["unions"]]
    return LocationSource(source.description, rows, format=source.format)


def raw_inserts(database, source) -> float:
    """The same rows, ids given, four executemany INSERTs in one transaction: the floor."""
    now = utcnow()
    ids = {level: {row.code: n for n, row in enumerate(rows, start=1)}
           for level, rows in source.rows.items()}
    started = time.perf_counter()
    with database.begin() as conn:
        for level in source.levels():
            parent = PARENT_LEVEL.get(level)
            conn.execute(insert(TABLES[level]), [
                {"id": ids[level][row.code], "code": row.code, "name_en": row.name_en,
                 "name_bn": row.name_bn, "is_active": True, "updated_at": now,
                 **({PARENT_COLUMN[level]: ids[parent][row.parent_code]} if parent else {})}
                for row in source.rows[level]])
    return time.perf_counter() - started


def tool_once(folder: Path) -> float:
    database = fresh_database()
    database.engine.dispose()
    env = {**os.environ, "OPS_DATABASE_URL": f"{SERVER.rstrip('/')}/{DATABASE}"}
    started = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "tools" / "import_ipemis_locations.py"),
                    str(folder), "--execute", "--quiet"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def help_once() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "tools" / "import_ipemis_locations.py"),
                    "--help"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the scratch database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_source(Path(tmp), "csv")
        reads, firsts, seconds, renames, floors, tools, helps = [], [], [], [], [], [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            source = read_source(str(folder))
            reads.append(time.perf_counter() - started)
            database = fresh_database()
            firsts.append(import_once(database, source))
            seconds.append(import_once(database, source))
            renames.append(import_once(database, renamed_unions(source)))
            database.engine.dispose()
            database = fresh_database()
            floors.append(raw_inserts(database, source))
            database.engine.dispose()
            tools.append(tool_once(folder))
            helps.append(help_once())
    if not args.keep:
        drop_database(SERVER, DATABASE)
    counts = ", ".join(f"{level} {len(rows)}" for level, rows in source.rows.items())
    first, floor = statistics.median(firsts), statistics.median(floors)
    print(f"location import on {database.caps.server_version}: {counts} "
          f"(medians of {args.runs} runs)")
    print(f"{'what':<44} {'seconds':>8}")
    for what, seconds_taken in [
            ("read the source (CSV per level)", statistics.median(reads)),
            ("first import, in-process (plan + apply)", first),
            ("second import of the same source", statistics.median(seconds)),
            ("third import: every union renamed", statistics.median(renames)),
            ("first import, the tool as a process", statistics.median(tools)),
            ("process floor: the tool's --help", statistics.median(helps)),
            ("raw INSERT floor, same rows", floor)]:
        print(f"{what:<44} {seconds_taken:>8.3f}")
    print(f"first import / raw INSERT floor: {first / floor:.1f}x")


if __name__ == "__main__":
    main()
