"""The catalog readers' normalisation: one test per rule that keeps the drift check quiet where
nothing differs, on what MariaDB and MySQL 8 each show in information_schema."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from ops_lib.jobs.schema_admin import create_scratch_database, drop_database
from ops_lib.schema_catalog import (
    PRIMARY,
    Column,
    expected_sqlite_catalog,
    is_generated_foreign_key_name,
    is_generated_index_name,
    normalise_default,
    normalise_rule,
    normalise_timestamp_function,
    normalise_type,
    read_catalog,
)
from ops_lib.schema import metadata
from tests.conftest import MYSQL_SERVER_URL, require_mariadb, sqlite_database, unique_name

# One test process for the module: `mariadb_pair` loads schema.sql into two databases once per
# process.
pytestmark = pytest.mark.xdist_group("schema_catalog_module")


# --- each rule on the values the two servers show -----------------------------------------------

def test_mariadb_quoted_default_and_mysql_bare_default_are_one_value():
    assert normalise_default("'pending'", "mariadb") == normalise_default("pending", "mysql") \
        == "pending"
    assert normalise_default("'it''s'", "mariadb") == normalise_default("it's", "mysql") == "it's"
    assert normalise_default("0", "mariadb") == normalise_default("0", "mysql") == "0"


def test_mariadb_null_default_is_no_default():
    assert normalise_default("NULL", "mariadb") is None
    assert normalise_default(None, "mysql") is None
    assert normalise_default("'NULL'", "mariadb") == "NULL"  # the string, not the null


def test_current_timestamp_is_one_spelling():
    assert normalise_default("current_timestamp()", "mariadb") == "CURRENT_TIMESTAMP"
    assert normalise_default("CURRENT_TIMESTAMP", "mysql") == "CURRENT_TIMESTAMP"
    assert normalise_default("now()", "mysql") == "CURRENT_TIMESTAMP"
    assert normalise_default("current_timestamp(6)", "mariadb") == \
        normalise_default("CURRENT_TIMESTAMP(6)", "mysql") == "CURRENT_TIMESTAMP(6)"
    assert normalise_timestamp_function("'current_timestamp()'") is None  # a string literal


def test_json_is_json_on_both_servers():
    # MariaDB shows JSON as LONGTEXT plus a json_valid(column) CHECK; MySQL 8 as json.
    assert normalise_type("longtext", is_json=True) == normalise_type("json") == "json"
    assert normalise_type("longtext") == "longtext"


def test_integer_display_widths_are_ignored():
    assert normalise_type("bigint(20)") == normalise_type("bigint") == "bigint"
    assert normalise_type("int(11)") == normalise_type("INTEGER") == "int"
    assert normalise_type("int(10) unsigned") == normalise_type("int unsigned") == "int unsigned"
    assert normalise_type("tinyint(4)") == "tinyint"
    assert normalise_type("varchar(150)") == "varchar(150)"  # a size is not a display width


def test_bool_is_tinyint_1():
    assert normalise_type("BOOL") == normalise_type("boolean") == normalise_type("tinyint(1)") \
        == "tinyint(1)"


def test_no_action_is_restrict():
    assert normalise_rule("NO ACTION") == normalise_rule("RESTRICT") == normalise_rule(None) \
        == "RESTRICT"
    assert normalise_rule("cascade") == "CASCADE"


def test_server_generated_names_are_recognised():
    assert is_generated_foreign_key_name("students_ibfk_1", "students")
    assert not is_generated_foreign_key_name("fk_students_institution", "students")
    assert not is_generated_foreign_key_name("other_ibfk_1", "students")
    assert is_generated_index_name("card_uid", "card_uid")
    assert is_generated_index_name("card_uid_2", "card_uid")
    assert not is_generated_index_name("ix_card", "card_uid")


def test_sqlite_types_have_no_sizes():
    assert normalise_type("VARCHAR(150)", sqlite=True) == normalise_type("VARCHAR(20)", sqlite=True)
    assert normalise_type("INTEGER", sqlite=True) == "int"


def test_a_column_shows_its_collation_only_where_it_is_not_the_tables():
    column = Column("code", "varchar(20)", False, "x", charset="latin1",
                    collation="latin1_swedish_ci")
    assert column.describe() == "varchar(20) NOT NULL DEFAULT 'x' COLLATE latin1_swedish_ci"
    plain = Column("name", "varchar(20)", True, charset="utf8mb4", collation="utf8mb4_unicode_ci")
    table = expected_sqlite_catalog().tables["plans"]
    table.collation = "utf8mb4_unicode_ci"
    assert plain.describe(table) == "varchar(20) NULL"


# --- the readers on real databases ----------------------------------------------------------

def test_sqlite_database_made_by_manage_schema_matches_the_expected_catalog(tmp_path):
    engine = create_engine(sqlite_database(tmp_path))
    with engine.connect() as conn:
        live = read_catalog(conn)
    engine.dispose()
    expected = expected_sqlite_catalog()
    assert live.tables == expected.tables
    students = expected.tables["students"]
    assert students.indexes[PRIMARY].columns == ("id",) and students.columns["id"].auto_increment
    assert [fk.referenced_table for fk in students.foreign_keys.values()] == ["institutions"]


@pytest.fixture(scope="module")
def mariadb_pair():
    """Two MariaDB databases loaded from schema.sql, dropped at the end."""
    require_mariadb()
    names = [unique_name("ops_catalog_a"), unique_name("ops_catalog_b")]
    urls = [create_scratch_database(MYSQL_SERVER_URL, name) for name in names]
    engines = [create_engine(url) for url in urls]
    yield engines
    for engine in engines:
        engine.dispose()
    for name in names:
        drop_database(MYSQL_SERVER_URL, name)


def _catalog(engine):
    with engine.connect() as conn:
        return read_catalog(conn)


def test_mariadb_reads_schema_sql_as_written(mariadb_pair):
    catalog = _catalog(mariadb_pair[0])
    assert catalog.flavor == "mariadb" and set(catalog.tables) == set(metadata.tables)
    audit = catalog.tables["audit_logs"]
    assert audit.columns["details"] == Column("details", "json", True)
    assert audit.columns["id"].auto_increment and audit.columns["id"].type == "bigint"
    assert audit.columns["created_at"].default == "CURRENT_TIMESTAMP"
    assert (audit.engine, audit.charset, audit.collation) == \
        ("InnoDB", "utf8mb4", "utf8mb4_unicode_ci")
    assert audit.columns["actor"].collation == "utf8mb4_unicode_ci"
    divisions = catalog.tables["divisions"]
    assert divisions.columns["is_active"].type == "tinyint(1)"
    assert divisions.columns["is_active"].default == "1"
    assert catalog.tables["attendance_scan_queue"].columns["status"].default == "pending"
    fk = catalog.tables["districts"].foreign_keys["fk_districts_division"]
    assert (fk.columns, fk.referenced_table, fk.referenced_columns, fk.on_delete) == \
        (("division_id",), "divisions", ("id",), "RESTRICT")
    assert catalog.tables["attendance_scan_queue"].indexes["ix_scan_queue_due"].columns == \
        ("status", "available_at", "created_at")


def test_auto_increment_counters_are_not_schema(mariadb_pair):
    with mariadb_pair[0].begin() as conn:
        conn.exec_driver_sql("INSERT INTO plans (name, monthly_fee_minor) VALUES ('x', 1)")
        conn.exec_driver_sql("ALTER TABLE guardians AUTO_INCREMENT = 5000")
    first, second = _catalog(mariadb_pair[0]), _catalog(mariadb_pair[1])
    assert first.tables == second.tables


def test_a_table_created_with_columns_keys_and_constraints_in_other_orders_reads_equal(
        mariadb_pair):
    orders = [
        "a INT NOT NULL, b BIGINT, c BIGINT, PRIMARY KEY (a), KEY ix_b (b), KEY ix_c (c), "
        "CONSTRAINT fk_b FOREIGN KEY (b) REFERENCES plans (id), "
        "CONSTRAINT fk_c FOREIGN KEY (c) REFERENCES plans (id)",
        "c BIGINT, b BIGINT, a INT NOT NULL, CONSTRAINT fk_c FOREIGN KEY (c) REFERENCES plans (id), "
        "KEY ix_c (c), CONSTRAINT fk_b FOREIGN KEY (b) REFERENCES plans (id), KEY ix_b (b), "
        "PRIMARY KEY (a)",
    ]
    for engine, body in zip(mariadb_pair, orders):
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE ordered ({body}) ENGINE=InnoDB")
    try:
        first, second = _catalog(mariadb_pair[0]), _catalog(mariadb_pair[1])
        # The server really kept the other column order: read in it, the tables still equal.
        assert list(first.tables["ordered"].columns) == ["a", "b", "c"]
        assert list(second.tables["ordered"].columns) == ["c", "b", "a"]
        assert first.tables["ordered"] == second.tables["ordered"]
        assert set(first.tables["ordered"].indexes) == {"PRIMARY", "ix_b", "ix_c"} and \
            set(first.tables["ordered"].foreign_keys) == {"fk_b", "fk_c"}
    finally:
        for engine in mariadb_pair:
            with engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE ordered")


def test_unnamed_keys_get_server_names_marked_generated(mariadb_pair):
    with mariadb_pair[0].begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE unnamed (id INT PRIMARY KEY, plan_id BIGINT, note LONGTEXT, "
            "KEY (plan_id, id), FOREIGN KEY (plan_id) REFERENCES plans (id)) ENGINE=InnoDB")
    try:
        table = _catalog(mariadb_pair[0]).tables["unnamed"]
        assert [(fk.name, fk.generated_name) for fk in table.foreign_keys.values()] == \
            [("unnamed_ibfk_1", True)]
        assert table.indexes["plan_id"].generated_name
        assert not table.indexes[PRIMARY].generated_name
        assert table.columns["note"].type == "longtext"  # no json_valid check: not JSON
    finally:
        with mariadb_pair[0].begin() as conn:
            conn.exec_driver_sql("DROP TABLE unnamed")
