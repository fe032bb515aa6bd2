"""schema.sql is split where MySQL would split it, and loads on the server as the client loads it."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from ops_lib.errors import BadInput
from ops_lib.schema_sql import (
    SCHEMA_SQL,
    execute_statements,
    schema_statements,
    split_statements,
)
from ops_lib.schema import metadata
from tests.conftest import MYSQL_SERVER_URL, require_mariadb, unique_name

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
