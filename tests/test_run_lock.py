"""The run lock between real processes, on MariaDB (GET_LOCK) and on SQLite (an OS file lock)."""

from __future__ import annotations

import json
import signal

import pytest
from sqlalchemy import select

from ops_lib.db import connect
from ops_lib.jobs.schema_admin import create_schema, create_scratch_database, drop_database
from ops_lib.locks import run_lock, server_lock_name
from ops_lib.result import LOCK_HELD
from ops_lib.schema import ops_job_runs
from tests.conftest import MYSQL_SERVER_URL, REPO, run_cli, sqlite_database, tool_env
from tests.processes import kill_hard, start_waiting_tool

pytestmark = pytest.mark.slow


def test_a_second_run_is_skipped_while_the_first_holds_the_lock_and_exits_0(db_url, tmp_path):
    env = tool_env(db_url, tmp_path)
    holder, _, release = start_waiting_tool(env, tmp_path, "--tool", "manage_schema")
    try:
        second = run_cli("manage_schema", "create", env=env)
        assert second.returncode == 0, second.stderr
        assert "skipped" in second.stderr
        assert f"stopped: {LOCK_HELD}" in second.stdout
        assert "status=skipped" in second.stdout
    finally:
        release.touch()
        out, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, err
    assert "status=ok" in out


def test_the_lock_is_free_at_once_after_the_holder_is_killed_with_sigkill(db_url, tmp_path):
    env = tool_env(db_url, tmp_path)
    holder, _, _ = start_waiting_tool(env, tmp_path, "--tool", "manage_schema")
    try:
        blocked = run_cli("manage_schema", "create", "--json", env=env)
        assert json.loads(blocked.stdout)["status"] == "skipped"
    finally:
        kill_hard(holder)
    assert holder.returncode == -signal.SIGKILL

    after = run_cli("manage_schema", "create", "--json", env=env)
    assert after.returncode == 0, after.stderr
    assert "skipped" not in after.stderr
    assert json.loads(after.stdout)["status"] == "ok"


def test_the_killed_holders_ledger_row_is_marked_abandoned_and_the_next_run_records_ok(db, tmp_path):
    env = tool_env(db.url, tmp_path)
    holder, _, _ = start_waiting_tool(env, tmp_path, "--tool", "manage_schema", "--execute")
    kill_hard(holder)
    after = run_cli("manage_schema", "create", "--execute", env=env)
    assert after.returncode == 0, after.stderr
    with db.begin(write=False) as conn:
        rows = conn.execute(select(ops_job_runs.c.pid, ops_job_runs.c.status)
                            .where(ops_job_runs.c.tool == "manage_schema")
                            .order_by(ops_job_runs.c.id)).all()
    assert [status for _, status in rows] == ["abandoned", "ok"]
    assert rows[0].pid == holder.pid


def test_two_different_tools_do_not_block_each_other(db_url, tmp_path):
    env = tool_env(db_url, tmp_path)
    holder, _, release = start_waiting_tool(env, tmp_path, "--tool", "some_other_tool")
    try:
        other = run_cli("manage_schema", "create", "--json", env=env)
        assert json.loads(other.stdout)["status"] == "ok"
    finally:
        release.touch()
        holder.communicate(timeout=30)


def test_the_same_tool_on_another_sqlite_database_is_not_blocked(tmp_path):
    first = f"sqlite:///{tmp_path / 'one.db'}"
    second = f"sqlite:///{tmp_path / 'two.db'}"
    for url in (first, second):
        database = connect(url, create=True)
        with database.engine.begin() as conn:
            create_schema(conn, is_mysql=False)
        database.engine.dispose()
    holder, _, release = start_waiting_tool(tool_env(first, tmp_path), tmp_path,
                                            "--tool", "manage_schema")
    try:
        other = run_cli("manage_schema", "create", "--json", env=tool_env(second, tmp_path))
        assert json.loads(other.stdout)["status"] == "ok"
        same = run_cli("manage_schema", "create", "--json", env=tool_env(first, tmp_path))
        assert json.loads(same.stdout)["status"] == "skipped"
    finally:
        release.touch()
        holder.communicate(timeout=30)


def test_two_tools_hold_their_locks_at_once_on_a_database_with_a_64_character_name(
        mysql_scratch, tmp_path):
    # GET_LOCK names were `ops:<database>:<tool>` cut at 64 characters: on a long database name
    # every tool took the same lock, and manage_schema was skipped while dead letters ran.
    name = ("ops_test_long_name_" + "x" * 64)[:64]
    url = create_scratch_database(MYSQL_SERVER_URL, name)
    try:
        env = tool_env(url, tmp_path)
        holder, _, release = start_waiting_tool(env, tmp_path, "--tool", "manage_dead_letters")
        try:
            other = run_cli("manage_schema", "create", "--json", env=env)
            assert other.returncode == 0, other.stderr
            assert json.loads(other.stdout)["status"] == "ok"
        finally:
            release.touch()
            holder.communicate(timeout=30)
    finally:
        drop_database(MYSQL_SERVER_URL, name)


def test_server_lock_names_stay_within_64_characters_and_differ_per_tool_and_database():
    tools = sorted(path.stem for path in (REPO / "tools").glob("*.py"))
    names = {server_lock_name(database, tool)
             for database in ("d" * 64, "d" * 63 + "e", "platform") for tool in tools}
    assert len(names) == 3 * len(tools)
    assert max(len(name) for name in names) <= 64
    assert server_lock_name("platform", "manage_schema").startswith("ops:manage_schema:platform:")


def test_sqlite_lock_files_differ_per_tool(tmp_path):
    url = sqlite_database(tmp_path)
    database = connect(url)
    tools = sorted(path.stem for path in (REPO / "tools").glob("*.py"))
    try:
        paths = {run_lock(database, tool, tmp_path / "locks").path for tool in tools}
    finally:
        database.engine.dispose()
    assert len(paths) == len(tools)
    assert all(path.parent == tmp_path for path in paths)


def test_a_tool_takes_its_lock_beside_an_sqlite_file_with_a_long_name(tmp_path):
    # `<file>.<tool>.lock` went past the file system's 255-byte name limit (ENAMETOOLONG).
    url = sqlite_database(tmp_path, "o" * 240 + ".db")
    database = connect(url)
    try:
        locks = [run_lock(database, tool, tmp_path / "locks")
                 for tool in ("manage_dead_letters", "manage_schema")]
        assert all(lock.acquire() for lock in locks)
        assert len({lock.path for lock in locks}) == 2
        assert not run_lock(database, "manage_schema", tmp_path / "locks").acquire()
        for lock in locks:
            lock.release()
    finally:
        database.engine.dispose()
