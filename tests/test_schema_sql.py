"""schema.sql is split where MySQL would split it, and loads on the server as the client loads it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import create_engine

from ops_lib.errors import BadInput
from ops_lib.schema_sql import (
    SCHEMA_SQL,
    SPLIT_CACHE_FORMAT,
    cached_split,
    execute_statements,
    schema_statements,
    split_statements,
)
from ops_lib.schema import metadata
from tests.conftest import MYSQL_SERVER_URL, REPO, require_mariadb, unique_name

TRICKY = """-- a comment; with a semicolon
SET NAMES utf8mb4;
# a hash comment; too
CREATE TABLE IF NOT EXISTS `odd;name` (
  a VARCHAR(20) NOT NULL DEFAULT 'x;y' COMMENT 'a 5% share; really',
  b VARCHAR(20) DEFAULT 'it''s; fine' /* inline; comment */,
  c VARCHAR(20) DEFAULT "dq;str"
) COMMENT='table; comment';
CREATE TABLE plain (id INT PRIMARY KEY)
"""


def test_a_semicolon_in_a_string_name_or_comment_does_not_split():
    statements = split_statements(TRICKY)
    assert [s.table for s in statements] == [None, "odd;name", "plain"]
    assert [s.line for s in statements] == [2, 4, 9]
    assert statements[0].text == "SET NAMES utf8mb4"
    assert statements[1].text.startswith("CREATE TABLE IF NOT EXISTS `odd;name` (")
    assert statements[1].text.endswith("COMMENT='table; comment'")
    assert "/* inline; comment */" in statements[1].text


def test_schema_sql_has_one_create_table_per_table_of_the_metadata():
    tables = [s.table for s in schema_statements() if s.table]
    assert sorted(tables) == sorted(metadata.tables)
    assert [s.text for s in schema_statements() if not s.table] == [
        "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci"]


def test_an_unterminated_string_is_one_clear_error():
    with pytest.raises(BadInput, match="schema SQL cannot be read"):
        split_statements("CREATE TABLE t (a VARCHAR(2) DEFAULT 'open)")


def test_a_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(BadInput, match="cannot read .*missing.sql"):
        schema_statements(tmp_path / "missing.sql")


def test_the_tricky_statements_load_on_mariadb_as_written():
    require_mariadb()
    name = unique_name("ops_schema_split")
    server = create_engine(MYSQL_SERVER_URL)
    with server.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    engine = create_engine(f"{MYSQL_SERVER_URL.rstrip('/')}/{name}")
    try:
        with engine.begin() as conn:
            execute_statements(conn, split_statements(TRICKY))
            created = conn.exec_driver_sql("SHOW CREATE TABLE `odd;name`").one()[1]
        assert "DEFAULT 'x;y'" in created and "COMMENT 'a 5% share; really'" in created
        assert "DEFAULT 'it''s; fine'" in created or "DEFAULT 'it\\'s; fine'" in created
        assert "COMMENT='table; comment'" in created
    finally:
        engine.dispose()
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        server.dispose()


def test_schema_sql_path_is_the_repository_file():
    assert SCHEMA_SQL.name == "schema.sql" and SCHEMA_SQL.is_file()


# The split cache: keyed by the file's bytes, checked against the text, never required.

OTHER = TRICKY.replace("odd;name", "odd;other").replace("a 5% share", "a 6% share")


def _entries(folder):
    return sorted(folder.glob("schema-sql-*.json"))


def test_a_cached_split_is_the_split_itself_and_needs_no_tokenizer(tmp_path):
    assert cached_split(TRICKY.encode(), tmp_path) == split_statements(TRICKY)
    [entry] = _entries(tmp_path)
    # A new process reads the entry back: the same statements, and sqlglot never imported.
    code = ("import sys; from pathlib import Path; from ops_lib.schema_sql import cached_split, "
            "split_statements; "
            f"got = cached_split(Path({str(tmp_path / 'tricky.sql')!r}).read_bytes(), "
            f"Path({str(tmp_path)!r})); "
            "print('sqlglot' in sys.modules, [(s.text, s.line, s.table) for s in got])")
    (tmp_path / "tricky.sql").write_text(TRICKY)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False " + repr([(s.text, s.line, s.table)
                                           for s in split_statements(TRICKY)])
    assert _entries(tmp_path) == [entry]


def test_each_text_has_its_own_entry(tmp_path):
    assert cached_split(TRICKY.encode(), tmp_path) == split_statements(TRICKY)
    assert cached_split(OTHER.encode(), tmp_path) == split_statements(OTHER)
    assert len(_entries(tmp_path)) == 2
    assert cached_split(TRICKY.encode(), tmp_path) == split_statements(TRICKY)


def test_an_entry_that_does_not_match_the_text_is_not_served(tmp_path):
    """Even under the right name (a copied or hand-edited cache), statements of another text
    are never used: the file is split again and the entry rewritten."""
    cached_split(OTHER.encode(), tmp_path)
    [other_entry] = _entries(tmp_path)
    cached_split(TRICKY.encode(), tmp_path)
    tricky_entry = next(e for e in _entries(tmp_path) if e != other_entry)
    tricky_entry.write_text(other_entry.read_text())  # OTHER's statements under TRICKY's name
    assert cached_split(TRICKY.encode(), tmp_path) == split_statements(TRICKY)
    assert json.loads(tricky_entry.read_text())["statements"][1][0].startswith(
        "CREATE TABLE IF NOT EXISTS `odd;name`")


@pytest.mark.parametrize("damage", ["not json", '{"format": 1}', '{"format": 1, "statements": 3}',
                                    '{"format": 0, "statements": []}'])
def test_a_damaged_or_older_entry_means_a_new_split(tmp_path, damage):
    cached_split(TRICKY.encode(), tmp_path)
    [entry] = _entries(tmp_path)
    entry.write_text(damage.replace('"format": 1', f'"format": {SPLIT_CACHE_FORMAT}'))
    assert cached_split(TRICKY.encode(), tmp_path) == split_statements(TRICKY)
    assert json.loads(entry.read_text())["format"] == SPLIT_CACHE_FORMAT


def test_an_unwritable_cache_still_splits(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    assert cached_split(TRICKY.encode(), blocker / "cache") == split_statements(TRICKY)
