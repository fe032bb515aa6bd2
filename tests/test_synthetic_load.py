"""The synthetic load generator: requested counts, deterministic with --seed, a dry run changes
nothing, the history leaves the bare load as it was; on SQLite and MariaDB.
(tests/test_demo_database.py: every tool's dry run finds work on the demo, and the demo is the
same rows for the same --seed and --now.)"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib.util
import json

import pytest
from sqlalchemy import DateTime, func, select

from ops_lib.db import connect
from ops_lib.jobs.synthetic_load import DEMO_HISTORY, TABLES, LoadSize, build_rows
from ops_lib.result import DRY_RUN
from ops_lib.schema import attendance_scan_queue, institutions, students
from tests.conftest import (
    REPO,
    MysqlScratch,
    require_mariadb,
    run_cli,
    snapshot,
    sqlite_database,
    tool_env,
    unique_name,
)

SIZE = ["--institutions", "3", "--students-per-institution", "7", "--guardians-per-student", "2",
        "--devices-per-guardian", "1", "--scans", "500", "--days", "3"]
BARE = [*SIZE, "--no-history"]
EXPECTED = {"plans": 3, "institutions": 3, "students": 21, "guardians": 42,
            "guardian_students": 42, "notification_devices": 42, "attendance_scan_queue": 500}
GENERATED = sorted({table for table in TABLES.values()}, key=lambda t: t.name)


def row_counts(db) -> dict[str, int]:
    """Rows per table the generator writes, tables left empty left out."""
    with db.begin(write=False) as conn:
        counts = {table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                  for table in GENERATED}
    return {name: n for name, n in counts.items() if n}


def test_the_generator_makes_the_requested_counts(db, tmp_path):
    done = run_cli("generate_synthetic_load", *BARE, "--execute", "--json",
                   env=tool_env(db.url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert row_counts(db) == EXPECTED
    result = json.loads(done.stdout)
    assert result["counts"] == {f"{name}_inserted": n for name, n in EXPECTED.items()}
    with db.begin(write=False) as conn:
        scans = conn.execute(select(attendance_scan_queue)).mappings().all()
        cards = set(conn.execute(select(students.c.card_uid)).scalars())
    assert {s["status"] for s in scans} == {"pending"} and {s["attempts"] for s in scans} == {0}
    assert {s["card_uid"] for s in scans} <= cards
    days = {s["scanned_at"].date() for s in scans}
    assert 2 <= len(days) <= 4  # three local days, shifted into UTC


def test_unknown_cards_appear_at_the_requested_ratio(tmp_path):
    db = connect(sqlite_database(tmp_path, "unknown.db"))
    done = run_cli("generate_synthetic_load", "--institutions", "1",
                   "--students-per-institution", "5", "--scans", "400", "--no-history",
                   "--unknown-card-ratio", "0.25", "--execute", env=tool_env(db.url, tmp_path))
    assert done.returncode == 0, done.stderr
    with db.begin(write=False) as conn:
        unknown = conn.execute(select(func.count()).select_from(attendance_scan_queue)
                               .where(attendance_scan_queue.c.card_uid.like("UNKNOWN-%"))
                               ).scalar_one()
    db.engine.dispose()
    assert 60 <= unknown <= 140


def test_a_second_run_adds_rows_after_the_first_without_collisions(db, tmp_path):
    env = tool_env(db.url, tmp_path)
    for _ in range(2):
        done = run_cli("generate_synthetic_load", *SIZE, "--execute", "--json", env=env)
        assert done.returncode == 0, done.stderr
    once = {}
    for part, n in json.loads(done.stdout)["counts"].items():
        table = TABLES[part.removesuffix("_inserted")].name
        once[table] = once.get(table, 0) + n
    assert set(once) > set(EXPECTED)  # with the history (the default)
    assert row_counts(db) == {name: 2 * n for name, n in once.items()}


def every_row_but_a_run(db, run_id: str) -> dict:
    """Every row of every table, the run ledger included less `run_id`'s own row."""
    rows = snapshot(db, exclude=())
    rows["ops_job_runs"] = [row for row in rows["ops_job_runs"] if run_id not in row]
    return rows


def test_the_dry_run_changes_nothing(db, tmp_path):
    env = tool_env(db.url, tmp_path)
    assert run_cli("generate_synthetic_load", *SIZE, "--execute", env=env).returncode == 0
    before = snapshot(db, exclude=())
    done = run_cli("generate_synthetic_load", *SIZE, env=env)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split("run=")[1].split()[0]
    assert every_row_but_a_run(db, run_id) == before
    assert len(snapshot(db, exclude=())["ops_job_runs"]) == len(before["ops_job_runs"]) + 1
    assert "rows_to_insert: table=attendance_scan_queue rows=500" in done.stdout
    assert "rows_to_insert: table=notifications rows=200" in done.stdout
    assert "--execute would insert these rows (seed 1)" in done.stdout
    assert done.stdout.splitlines()[-1] == f"stopped: {DRY_RUN}"  # as every tool words it


def normalised_rows(db) -> dict[str, list[tuple]]:
    """Every generated row, with times made relative to the run's clock (its institutions'
    created_at): the same seed gives the same rows whenever it runs.

    Regression: plans took created_at from the server's clock, a second off now and then."""
    with db.begin(write=False) as conn:
        now = conn.execute(select(func.min(institutions.c.created_at))).scalar_one()
        rows = {}
        for table in GENERATED:
            name = table.name
            times = {c.name for c in table.columns if isinstance(c.type, DateTime)}
            result = []
            for row in conn.execute(select(table).order_by(*table.primary_key.columns)).mappings():
                values = []
                for key, value in row.items():
                    if key == "scanned_at":  # built from the run's date, not its time
                        value = value - dt.datetime.combine(now.date(), dt.time())
                    elif key in times and value is not None:
                        value = value - now
                    values.append((key, value))
                result.append(tuple(values))
            rows[name] = result
    return rows


def generate_into(url: str, tmp_path, seed: str) -> dict[str, list[tuple]]:
    done = run_cli("generate_synthetic_load", *BARE, "--seed", seed, "--execute",
                   env=tool_env(url, tmp_path))
    assert done.returncode == 0, done.stderr
    database = connect(url)
    try:
        return normalised_rows(database)
    finally:
        database.engine.dispose()


def test_the_same_seed_gives_the_same_rows_in_two_fresh_sqlite_databases(tmp_path):
    first = generate_into(sqlite_database(tmp_path, "a.db"), tmp_path, "42")
    second = generate_into(sqlite_database(tmp_path, "b.db"), tmp_path, "42")
    other = generate_into(sqlite_database(tmp_path, "c.db"), tmp_path, "43")
    assert sum(len(rows) for rows in first.values()) == sum(EXPECTED.values())
    assert first == second
    assert first["attendance_scan_queue"] != other["attendance_scan_queue"]


@pytest.mark.mariadb
def test_the_same_seed_gives_the_same_rows_in_two_fresh_mariadb_databases(tmp_path):
    require_mariadb()
    scratches = [MysqlScratch(unique_name("ops_seed")) for _ in range(2)]
    try:
        for scratch in scratches:
            scratch.create()
        first, second = (generate_into(s.url, tmp_path, "42") for s in scratches)
    finally:
        for scratch in scratches:
            scratch.drop()
    assert first == second
    assert len(first["attendance_scan_queue"]) == 500


NOW = "2026-11-28 02:00:00"


BENCH_WORKERS_SIZE = LoadSize(institutions=3, students_per_institution=40, scans=2000, days=5,
                              seed=1)
# sha256 of build_rows(BENCH_WORKERS_SIZE) at NOW on an empty database, from the generator
# before the history existed (commit fc3ebef): the load bench_workers.py builds.
BENCH_WORKERS_ROWS_SHA256 = "9b667dfdc618b4faaa197e8fd118e52540bde0a1eeadaf0725538a8b656812dd"


def built(tmp_path, name: str, size: LoadSize) -> dict[str, list[dict]]:
    database = connect(sqlite_database(tmp_path, name))
    try:
        with database.engine.begin() as conn:
            return build_rows(conn, size, dt.datetime.fromisoformat(NOW))
    finally:
        database.engine.dispose()


def test_the_load_bench_workers_builds_is_the_same_rows_as_before_the_demo_history(tmp_path):
    rows = built(tmp_path, "bench.db", BENCH_WORKERS_SIZE)
    digest = hashlib.sha256(json.dumps(rows, default=str, sort_keys=True).encode()).hexdigest()
    assert digest == BENCH_WORKERS_ROWS_SHA256


def test_the_history_leaves_every_row_of_the_bare_load_as_it_was_but_the_restricted_subjects(
        tmp_path):
    bare = built(tmp_path, "bare.db", BENCH_WORKERS_SIZE)
    with_history = built(tmp_path, "history.db",
                         dataclasses.replace(BENCH_WORKERS_SIZE, history=DEMO_HISTORY))
    assert set(with_history) > set(bare)
    restricted = {name: {r["id"] for r in with_history[name]
                         if r.get("access_state") == "restricted"}
                  for name in ("institutions", "students")}
    assert len(restricted["institutions"]) == 1
    assert len(restricted["students"]) == DEMO_HISTORY.billing_cases
    for name, rows in bare.items():
        assert [but_access(r) for r in with_history[name]] == [but_access(r) for r in rows], name
    assert {r.get("access_state", "active") for name in ("institutions", "students")
            for r in bare[name]} == {"active"}


def but_access(row: dict) -> dict:
    return {key: value for key, value in row.items() if key != "access_state"}


def test_the_tools_history_defaults_are_the_demo_history_the_tests_use():
    """The tool spells its defaults out (--help stays fast: the job is imported when it runs);
    they must stay DEMO_HISTORY's."""
    spec = importlib.util.spec_from_file_location(
        "generate_synthetic_load_tool", REPO / "tools" / "generate_synthetic_load.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    defaults = {p.name: p.default for p in tool.main.params}
    assert {f.name: defaults[f.name] for f in dataclasses.fields(DEMO_HISTORY)} == \
        dataclasses.asdict(DEMO_HISTORY)
    assert defaults["history"] is True
