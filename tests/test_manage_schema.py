"""tools/manage_schema.py: create the schema on an empty database; reset a scratch one only with
--execute and the database's name typed again."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, insert, inspect, select

from ops_lib.db import connect
from ops_lib.schema import institutions, metadata, ops_job_runs, plans, students
from tests.conftest import MysqlScratch, require_mariadb, run_cli, snapshot, tool_env, unique_name


@pytest.fixture(params=["sqlite", "mariadb"])
def empty_url(request, tmp_path):
    """A database with no tables at all."""
    if request.param == "sqlite":
        (tmp_path / "empty.db").touch()  # an empty file: no file at all is refused (test_db_urls)
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    require_mariadb()
    scratch = MysqlScratch(unique_name("ops_empty"))
    scratch.create()
    database = connect(scratch.url)
    with database.engine.begin() as conn:
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
        for table in inspect(conn).get_table_names():
            conn.exec_driver_sql(f"DROP TABLE `{table}`")
    database.engine.dispose()
    yield scratch.url
    scratch.drop()


def table_names(url: str) -> set[str]:
    database = connect(url)
    with database.engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
    database.engine.dispose()
    return names


def test_create_dry_run_on_an_empty_database_creates_nothing(empty_url, tmp_path):
    done = run_cli("manage_schema", "create", "--json", env=tool_env(empty_url, tmp_path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["counts"] == {"tables_missing": len(metadata.tables), "tables_present": 0}
    assert len(result["sections"]["Tables to create"]) == len(metadata.tables)
    assert table_names(empty_url) == set()


def test_create_execute_makes_every_table_and_records_its_own_run(empty_url, tmp_path):
    done = run_cli("manage_schema", "create", "--execute", env=tool_env(empty_url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert table_names(empty_url) == set(metadata.tables)
    database = connect(empty_url)
    with database.begin(write=False) as conn:
        runs = conn.execute(select(ops_job_runs.c.tool, ops_job_runs.c.status,
                                   ops_job_runs.c.counts)).all()
    database.engine.dispose()
    assert [(tool, status) for tool, status, _ in runs] == [("manage_schema", "ok")]
    assert json.loads(runs[0].counts)["tables_created"] == len(metadata.tables)

    again = run_cli("manage_schema", "create", "--execute", env=tool_env(empty_url, tmp_path))
    assert again.returncode == 0
    assert "nothing to create" in again.stdout


def fill(db, _tmp_path) -> None:
    """A few rows in parent and child tables (foreign keys make a careless drop fail)."""
    with db.begin() as conn:
        conn.execute(insert(plans).values(id=1, name="Basic", monthly_fee_minor=100))
        conn.execute(insert(institutions).values(id=1, name="S", code="S-1", plan_id=1))
        conn.execute(insert(students).values(id=1, institution_id=1, name="R", card_uid="C"))


def test_reset_dry_run_changes_nothing(db, tmp_path):
    fill(db, tmp_path)
    before = snapshot(db)
    done = run_cli("manage_schema", "reset", env=tool_env(db.url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert snapshot(db) == before
    assert "would DROP" in done.stdout


def test_reset_refuses_without_the_database_name_typed_again(db, tmp_path):
    fill(db, tmp_path)
    before = snapshot(db)
    for extra in ([], ["--confirm", "some_other_db"]):
        done = run_cli("manage_schema", "reset", "--execute", *extra,
                       env=tool_env(db.url, tmp_path))
        assert done.returncode == 2
        assert "reset needs --confirm with the database name typed again" in done.stderr
        assert snapshot(db) == before


def test_reset_with_the_name_empties_every_table_and_records_the_run(db, tmp_path):
    fill(db, tmp_path)
    name = db.engine.url.database.rsplit("/", 1)[-1]
    done = run_cli("manage_schema", "reset", "--execute", "--confirm", name, "--json",
                   env=tool_env(db.url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert all(rows == [] for table, rows in snapshot(db).items() if table != "ops_job_runs")
    with db.begin(write=False) as conn:
        assert conn.execute(select(func.count()).select_from(plans)).scalar_one() == 0
        runs = conn.execute(select(ops_job_runs.c.run_id, ops_job_runs.c.status)).all()
    # Regression: the reset dropped the ledger under its own run, which was then not recorded.
    assert [tuple(r) for r in runs] == [(json.loads(done.stdout)["run_id"], "ok")]
