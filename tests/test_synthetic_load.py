"""The synthetic load generator: requested counts, deterministic with --seed, a dry run changes
nothing; on SQLite and MariaDB."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import DateTime, func, select

from ops_lib.db import connect
from ops_lib.jobs.synthetic_load import TABLES
from ops_lib.schema import attendance_scan_queue, institutions, students
from tests.conftest import (
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
EXPECTED = {"plans": 3, "institutions": 3, "students": 21, "guardians": 42,
            "guardian_students": 42, "notification_devices": 42, "attendance_scan_queue": 500}


def row_counts(db) -> dict[str, int]:
    with db.begin(write=False) as conn:
        return {name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in TABLES.items()}


def test_the_generator_makes_the_requested_counts(db, tmp_path):
    done = run_cli("generate_synthetic_load", *SIZE, "--execute", "--json",
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
                   "--students-per-institution", "5", "--scans", "400",
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
        done = run_cli("generate_synthetic_load", *SIZE, "--execute", env=env)
        assert done.returncode == 0, done.stderr
    assert row_counts(db) == {name: 2 * n for name, n in EXPECTED.items()}


def test_the_dry_run_changes_nothing(db, tmp_path):
    env = tool_env(db.url, tmp_path)
    assert run_cli("generate_synthetic_load", *SIZE, "--execute", env=env).returncode == 0
    before = snapshot(db)
    done = run_cli("generate_synthetic_load", *SIZE, env=env)
    assert done.returncode == 0, done.stderr
    assert snapshot(db) == before
    assert "rows_to_insert: table=attendance_scan_queue rows=500" in done.stdout
    assert "--execute would insert these rows (seed 1)" in done.stdout


def normalised_rows(db) -> dict[str, list[tuple]]:
    """Every generated row, with times made relative to the run's clock (its institutions'
    created_at): the same seed gives the same rows whenever it runs.

    Regression: plans took created_at from the server's clock, a second off now and then."""
    with db.begin(write=False) as conn:
        now = conn.execute(select(func.min(institutions.c.created_at))).scalar_one()
        rows = {}
        for name, table in TABLES.items():
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
    done = run_cli("generate_synthetic_load", *SIZE, "--seed", seed, "--execute",
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
