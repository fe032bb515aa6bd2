"""Database URLs a new operator gets wrong: each is one line, exit 2, nothing created, and a hint
that repeats the operator's own --database-url (password masked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops_lib.db import create_schema_command
from ops_lib.schema import metadata
from ops_lib.settings import DEFAULT_DATABASE_URL
from tests.conftest import run_cli, tool_env

pytestmark = pytest.mark.slow


def one_error_line(done) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_a_mysql_url_without_a_database_name_is_one_line_and_exit_2(tmp_path):
    # It was "unexpected AssertionError" with exit 1.
    done = run_cli("cleanup_stale_devices", "--database-url", "mysql+pymysql://root@127.0.0.1:3306",
                   env=tool_env("sqlite://", tmp_path))
    line = one_error_line(done)
    assert line == ("error: flag database_url: no database name: end the URL with /<database>, "
                    "as in mysql+pymysql://root@127.0.0.1:3306/platform")


def test_an_unencoded_at_in_the_password_is_one_line_and_shows_no_part_of_the_password(tmp_path):
    # It showed `root:***@cretPw@127.0.0.1`: the password's tail as the host.
    env = tool_env("mysql+pymysql://root:Se@cretPw@127.0.0.1:3306/platform", tmp_path)
    done = run_cli("run_background_workers", "10", "--json", env=env)
    line = one_error_line(done)
    assert "the password holds an unencoded '@': write it as %40" in line
    assert "mysql+pymysql://root:<password, @ as %40>@127.0.0.1:3306/platform" in line
    assert "cretPw" not in done.stdout + done.stderr and "Se@" not in done.stdout + done.stderr
    assert json.loads(done.stdout)["exit_code"] == 2


@pytest.mark.parametrize("tool, args", [
    ("cleanup_stale_devices", ()),
    ("run_background_workers", ("10",)),
    ("manage_schema", ("reset", "--execute", "--confirm", "x.db")),
])
def test_a_mistyped_sqlite_path_creates_nothing_and_names_the_command_for_that_path(
        tmp_path, tool, args):
    # A dry run created the folders and an empty file, then suggested a command without
    # --database-url, which would have created the schema in the default database.
    url = f"sqlite:///{tmp_path / 'typo' / 'dir' / 'x.db'}"
    done = run_cli(tool, *args, "--database-url", url, env=tool_env("sqlite://", tmp_path))
    line = one_error_line(done)
    assert line == (f"error: no SQLite database at {tmp_path / 'typo' / 'dir' / 'x.db'} "
                    f"(nothing was created); to create one there: python tools/manage_schema.py "
                    f"create --execute --database-url '{url}'")
    assert not (tmp_path / "typo").exists()


def test_the_dry_run_of_create_on_a_new_sqlite_path_lists_every_table_and_creates_nothing(
        tmp_path):
    """Regression: the first example of `manage_schema.py --help` (the dry run of `create`)
    failed on a fresh install, where the file does not exist yet."""
    database = tmp_path / "new" / "ops.db"
    done = run_cli("manage_schema", "create", "--json", "--database-url", f"sqlite:///{database}",
                   env=tool_env("sqlite://", tmp_path))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["counts"] == {"tables_missing": len(metadata.tables), "tables_present": 0}
    assert f"--execute would create the SQLite file {database} first" in answer["notes"]
    assert answer["stop_reason"] == "dry run: nothing changed"
    assert not (tmp_path / "new").exists()


def test_following_the_hint_creates_the_schema_in_the_database_the_operator_named(tmp_path):
    url = f"sqlite:///{tmp_path / 'new' / 'ops.db'}"
    env = tool_env("sqlite://", tmp_path)
    hint = one_error_line(run_cli("cleanup_stale_devices", "--database-url", url, env=env))
    command = hint.split("to create one there: python tools/", 1)[1]
    tool, *args = command.replace("'", "").split()
    created = run_cli(tool.removesuffix(".py"), *args, env=env)
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "new" / "ops.db").is_file()
    after = run_cli("cleanup_stale_devices", "--database-url", url, env=env)
    assert after.returncode == 0, after.stderr


def test_a_file_without_the_schema_names_the_command_with_its_url(tmp_path):
    (tmp_path / "empty.db").touch()
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    done = run_cli("cleanup_stale_devices", "--database-url", url, env=tool_env("sqlite://",
                                                                                  tmp_path))
    assert done.returncode == 1
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert line.endswith(f"create the schema first: python tools/manage_schema.py create "
                         f"--execute --database-url '{url}'")


def test_the_schema_command_masks_the_password_and_leaves_out_the_default_url():
    assert create_schema_command("mysql+pymysql://ops:S3cret@db.internal/platform") == (
        "python tools/manage_schema.py create --execute "
        "--database-url 'mysql+pymysql://ops:***@db.internal/platform'")
    assert create_schema_command(DEFAULT_DATABASE_URL) == (
        "python tools/manage_schema.py create --execute")


def test_an_sqlite_uri_filename_names_the_file_it_opens(tmp_path):
    """Regression: `sqlite:///file:/path/x.db?uri=true` was refused as a missing file."""
    from ops_lib.db import sqlite_file

    database = tmp_path / "ops.db"
    assert sqlite_file(f"sqlite:///file:{database}?mode=rw&uri=true") == database
    assert sqlite_file("sqlite:///file:scratch?mode=memory&uri=true") is None
    created = run_cli("manage_schema", "create", "--execute",
                      env=tool_env(f"sqlite:///{database}", tmp_path))
    assert created.returncode == 0, created.stderr
    done = run_cli("cleanup_stale_devices", "--database-url",
                   f"sqlite:///file:{database}?mode=rw&uri=true", env=tool_env("sqlite://", tmp_path))
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "file:").exists() and not Path("file:").exists()
    assert any(p.name.endswith(".cleanup_stale_devices.lock") for p in tmp_path.iterdir())


def test_a_password_given_as_a_query_option_is_hidden_too():
    from ops_lib.settings import mask_url

    shown = mask_url("mysql+pymysql://ops@db.internal/platform?charset=utf8mb4&password=s3cret")
    assert "s3cret" not in shown and "password=hidden" in shown and "charset=utf8mb4" in shown
    assert mask_url("mysql+pymysql://ops:s3cret@db/platform") == "mysql+pymysql://ops:***@db/platform"
