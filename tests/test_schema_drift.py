"""check_schema_drift.py: the comparison (pure) and the tool on SQLite and MariaDB."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal

import pytest
from sqlalchemy import create_engine, text

from ops_lib.cli import EXIT_INTERRUPTED, describe_failure, tool_exit_code
from ops_lib.db import connect
from ops_lib.errors import EXIT_FAILED, Interrupted, JobFailed
from ops_lib.jobs.schema_drift import (CHANGED, EXIT_NOT_CHECKED, EXTRA, MISSING, Drift, compare,
                                       headline)
from ops_lib.schema import metadata
from ops_lib.schema_catalog import (Catalog, Column, ForeignKey, Index, IndexPart, Table,
                                    read_catalog)
from ops_lib.scratch_schema import ScratchInterrupted
from ops_lib.timeutil import utcnow
from tests.conftest import (MYSQL_SERVER_URL, MysqlScratch, assert_unchanged, catalog_of,
                            job_context, loaded_scratch, named_at, require_mariadb, run_cli,
                            schema_state, scratch_sweep_turn, snapshot, sqlite_database,
                            start_cli, tool_env, unique_name, wait_for_drop_waiting_on_lock)


# --- compare(): pure, on hand-made catalogs -------------------------------------------------

def _students(**changes) -> Table:
    table = Table(
        "students",
        columns={
            "id": Column("id", "bigint", False, auto_increment=True),
            "institution_id": Column("institution_id", "bigint", False),
            "name": Column("name", "varchar(200)", False, charset="utf8mb4",
                           collation="utf8mb4_unicode_ci"),
            "status": Column("status", "varchar(20)", False, default="active",
                             charset="utf8mb4", collation="utf8mb4_unicode_ci"),
        },
        indexes={
            "PRIMARY": Index("PRIMARY", (IndexPart("id"),), unique=True),
            "ix_students_name": Index("ix_students_name",
                                      (IndexPart("institution_id"), IndexPart("name", 20)),
                                      unique=False),
        },
        foreign_keys={
            "fk_students_institution": ForeignKey("fk_students_institution", ("institution_id",),
                                                  "institutions", ("id",)),
        },
        engine="InnoDB", charset="utf8mb4", collation="utf8mb4_unicode_ci")
    for name, value in changes.items():
        setattr(table, name, value)
    return table


def _catalog(*tables: Table) -> Catalog:
    return Catalog("mysql", "mariadb", "10.11", {t.name: t for t in tables})


def _lines(drifts: list[Drift]) -> list[str]:
    return [drift.line() for drift in drifts]


def test_equal_catalogs_have_no_drift():
    assert compare(_catalog(_students()), _catalog(_students())) == []


def test_a_changed_column_type_is_one_line_saying_both_sides():
    live = _students()
    live.columns["name"] = Column("name", "varchar(100)", False, charset="utf8mb4",
                                  collation="utf8mb4_unicode_ci")
    assert _lines(compare(_catalog(_students()), _catalog(live))) == [
        "column students.name: schema.sql has varchar(200) NOT NULL; "
        "live database has varchar(100) NOT NULL"]


def test_a_missing_column_says_the_live_database_has_none():
    live = _students()
    del live.columns["status"]
    [drift] = compare(_catalog(_students()), _catalog(live))
    assert (drift.kind, drift.object, drift.actual) == (MISSING, "column students.status", None)
    assert drift.line() == ("column students.status: schema.sql has varchar(20) NOT NULL "
                            "DEFAULT 'active'; live database has none")


def test_a_missing_table_is_one_line_and_not_one_per_column_or_index():
    drifts = compare(_catalog(_students()), _catalog())
    assert [(d.kind, d.object) for d in drifts] == [(MISSING, "table students")]


def test_extra_tables_are_reported_unless_ignored():
    other = Table("wp_posts", columns={"id": Column("id", "bigint", False)})
    assert [(d.kind, d.object) for d in compare(_catalog(_students()),
                                                 _catalog(_students(), other))] == \
        [(EXTRA, "table wp_posts")]
    assert compare(_catalog(_students()), _catalog(_students(), other),
                   ignore_extra_tables=True) == []


def test_a_table_default_charset_change_is_one_line_when_its_columns_keep_theirs():
    live = _students(charset="latin1", collation="latin1_swedish_ci")
    assert _lines(compare(_catalog(_students()), _catalog(live))) == [
        "table students charset: schema.sql has CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci; "
        "live database has CHARSET=latin1 COLLATE=latin1_swedish_ci"]


def test_a_column_collation_change_shows_both_collations():
    live = _students()
    live.columns["name"] = Column("name", "varchar(200)", False, charset="utf8mb4",
                                  collation="utf8mb4_bin")
    assert _lines(compare(_catalog(_students()), _catalog(live))) == [
        "column students.name: schema.sql has varchar(200) NOT NULL COLLATE utf8mb4_unicode_ci; "
        "live database has varchar(200) NOT NULL COLLATE utf8mb4_bin"]


def test_a_column_changed_in_a_table_whose_charset_changed_shows_no_collation_noise():
    live = _students(charset="latin1", collation="latin1_swedish_ci")
    live.columns["name"] = Column("name", "varchar(100)", False, charset="utf8mb4",
                                  collation="utf8mb4_unicode_ci")
    assert _lines(compare(_catalog(_students()), _catalog(live)))[1] == (
        "column students.name: schema.sql has varchar(200) NOT NULL; "
        "live database has varchar(100) NOT NULL")


def test_a_converted_table_still_shows_how_its_columns_differ():
    # ALTER TABLE ... CONVERT TO: every column now has its (new) table's collation.
    live = _students(charset="latin1", collation="latin1_swedish_ci")
    for name in ("name", "status"):
        live.columns[name] = Column(**{**live.columns[name].__dict__, "charset": "latin1",
                                       "collation": "latin1_swedish_ci"})
    lines = _lines(compare(_catalog(_students()), _catalog(live)))
    assert lines[1] == ("column students.name: schema.sql has varchar(200) NOT NULL COLLATE "
                        "utf8mb4_unicode_ci; live database has varchar(200) NOT NULL COLLATE "
                        "latin1_swedish_ci")
    assert len(lines) == 3


def test_indexes_pair_by_definition_when_the_server_named_one_side():
    want, live = _students(), _students()
    want.indexes["institution_id"] = Index("institution_id", (IndexPart("institution_id"),),
                                           unique=False, generated_name=True)
    live.indexes["fk_students_institution"] = Index(
        "fk_students_institution", (IndexPart("institution_id"),), unique=False)
    assert compare(_catalog(want), _catalog(live)) == []


def test_generated_foreign_key_names_pair_by_definition():
    want, live = _students(), _students()
    for table, name in ((want, "students_ibfk_1"), (live, "students_ibfk_7")):
        key = table.foreign_keys.pop("fk_students_institution")
        table.foreign_keys[name] = ForeignKey(name, key.columns, key.referenced_table,
                                              key.referenced_columns, generated_name=True)
    assert compare(_catalog(want), _catalog(live)) == []


def test_a_live_index_under_a_name_schema_sql_uses_is_that_index_changed_not_a_twin():
    # schema.sql: idx_a (a) and an unnamed index on b (the server names it `b`); live: only
    # idx_a, on b. idx_a is schema.sql's name: it is idx_a changed, and `b` is missing.
    def table(*indexes: Index) -> Table:
        return Table("t", indexes={index.name: index for index in indexes})

    expected = table(Index("idx_a", (IndexPart("a"),), False),
                     Index("b", (IndexPart("b"),), False, generated_name=True))
    live = table(Index("idx_a", (IndexPart("b"),), False))
    assert _lines(compare(_catalog(expected), _catalog(live))) == [
        "index t.b: schema.sql has INDEX (`b`); live database has none",
        "index t.idx_a: schema.sql has INDEX (`a`); live database has INDEX (`b`)"]


def test_two_named_indexes_of_the_same_definition_are_a_rename_not_the_same_index():
    live = _students()
    index = live.indexes.pop("ix_students_name")
    live.indexes["ix_renamed"] = Index("ix_renamed", index.parts, index.unique)
    assert [(d.kind, d.object) for d in compare(_catalog(_students()), _catalog(live))] == [
        (EXTRA, "index students.ix_renamed"), (MISSING, "index students.ix_students_name")]


def test_generated_names_do_not_pair_indexes_of_different_definitions():
    want, live = _students(), _students()
    want.indexes["name"] = Index("name", (IndexPart("name"),), False, generated_name=True)
    live.indexes["name_2"] = Index("name_2", (IndexPart("status"),), False, generated_name=True)
    assert [(d.kind, d.object) for d in compare(_catalog(want), _catalog(live))] == [
        (MISSING, "index students.name"), (EXTRA, "index students.name_2")]


def test_the_order_of_an_index_s_columns_is_drift():
    # (The order tables, columns and keys are created in is not: test_schema_catalog reads
    # tables made in other orders as equal.)
    live = _students()
    live.indexes["ix_students_name"] = Index(
        "ix_students_name", (IndexPart("name", 20), IndexPart("institution_id")), False)
    assert _lines(compare(_catalog(_students()), _catalog(live))) == [
        "index students.ix_students_name: schema.sql has INDEX (`institution_id`, `name`(20)); "
        "live database has INDEX (`name`(20), `institution_id`)"]


@pytest.mark.parametrize("change, expected, actual", [
    ({"parts": (IndexPart("institution_id"), IndexPart("name"))},
     "INDEX (`institution_id`, `name`(20))", "INDEX (`institution_id`, `name`)"),
    ({"unique": True}, "INDEX (`institution_id`, `name`(20))",
     "UNIQUE (`institution_id`, `name`(20))"),
])
def test_an_index_prefix_or_uniqueness_change_is_a_changed_index(change, expected, actual):
    live = _students()
    index = live.indexes["ix_students_name"]
    live.indexes[index.name] = Index(**{**index.__dict__, **change})
    assert compare(_catalog(_students()), _catalog(live)) == [
        Drift(CHANGED, "index students.ix_students_name", expected, actual)]


def test_no_action_and_restrict_are_the_same_foreign_key_rule():
    live = _students()
    key = live.foreign_keys["fk_students_institution"]
    live.foreign_keys[key.name] = ForeignKey(key.name, key.columns, key.referenced_table,
                                             key.referenced_columns, "NO ACTION", "NO ACTION")
    assert compare(_catalog(_students()), _catalog(live)) == []


def test_a_changed_foreign_key_rule_is_one_changed_key():
    live = _students()
    key = live.foreign_keys["fk_students_institution"]
    live.foreign_keys[key.name] = ForeignKey(key.name, key.columns, key.referenced_table,
                                             key.referenced_columns, on_delete="CASCADE")
    assert _lines(compare(_catalog(_students()), _catalog(live))) == [
        "foreign key students.fk_students_institution: schema.sql has (institution_id) "
        "REFERENCES institutions (id) ON DELETE RESTRICT ON UPDATE RESTRICT; live database has "
        "(institution_id) REFERENCES institutions (id) ON DELETE CASCADE ON UPDATE RESTRICT"]


def test_a_changed_primary_key_and_engine_are_named_after_the_table():
    live = _students(engine="MyISAM")
    live.indexes["PRIMARY"] = Index("PRIMARY", (IndexPart("id"), IndexPart("institution_id")),
                                    True)
    assert [d.object for d in compare(_catalog(_students()), _catalog(live))] == [
        "table students engine", "primary key students"]


def test_differences_are_ordered_by_table_then_object():
    first = Table("attendance", columns={"id": Column("id", "bigint", False)})
    live = _students(engine="Aria")
    del live.columns["status"]
    live.columns["added"] = Column("added", "int", True)
    del live.indexes["ix_students_name"]
    live.foreign_keys.clear()
    drifts = compare(_catalog(first, _students()), _catalog(live))
    assert [d.object for d in drifts] == [
        "table attendance", "table students engine", "column students.added",
        "column students.status", "index students.ix_students_name",
        "foreign key students.fk_students_institution"]
    assert headline(drifts, 1) == "schema drift: 6 differences in 2 tables"
    assert headline([], 28) == "no schema drift: 28 tables match schema.sql"


def test_a_dropped_sqlite_foreign_key_is_one_line_named_by_its_columns():
    # SQLite keeps no key names: the catalog names them by table and columns, so dropping the
    # first key renames no other (a number would move to the next key).
    def read_with(*keys: str) -> Catalog:
        engine = create_engine("sqlite://")
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE a (id INTEGER PRIMARY KEY)")
            conn.exec_driver_sql("CREATE TABLE b (id INTEGER PRIMARY KEY)")
            conn.exec_driver_sql(f"CREATE TABLE pairs (a_id INT, b_id INT{''.join(keys)})")
            catalog = read_catalog(conn)
        engine.dispose()
        return catalog

    both = read_with(", FOREIGN KEY (a_id) REFERENCES a (id)",
                     ", FOREIGN KEY (b_id) REFERENCES b (id)")
    assert sorted(both.tables["pairs"].foreign_keys) == ["fk_pairs_a_id", "fk_pairs_b_id"]
    assert all(key.generated_name for key in both.tables["pairs"].foreign_keys.values())
    without_first = read_with(", FOREIGN KEY (b_id) REFERENCES b (id)")
    assert [(d.kind, d.object) for d in compare(both, without_first)] == \
        [(MISSING, "foreign key pairs.fk_pairs_a_id")]


# --- the tool, on SQLite and MariaDB ---------------------------------------------------------

TOOL = "check_schema_drift"


@pytest.fixture
def database_of(tmp_path):
    """`database_of(dialect)`: a database of the test's own built from schema.sql (manage_schema's
    way). The tests change its schema, so it is never the shared scratch database."""
    made = []

    def make(dialect: str) -> str:
        if dialect == "sqlite":
            return sqlite_database(tmp_path)
        require_mariadb()
        scratch = MysqlScratch(unique_name("ops_drift"))
        scratch.create()
        made.append(scratch)
        return scratch.url

    yield make
    for scratch in made:
        scratch.drop()


@pytest.fixture(params=["sqlite", "mariadb"])
def live_url(request, database_of) -> str:
    return database_of(request.param)


def _run(url: str, tmp_path, *args: str):
    return run_cli(TOOL, *args, env=tool_env(url, tmp_path))


def _json_run(url: str, tmp_path, *args: str) -> tuple[int, dict]:
    done = _run(url, tmp_path, "--json", *args)
    return done.returncode, json.loads(done.stdout)


def _ddl(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _sqlite_edit_table(url: str, table: str, old: str, new: str) -> None:
    """Change a table's definition in place: SQLite's ALTER TABLE cannot change a column's type,
    default or nullability, or drop a foreign key. Editing the stored CREATE TABLE (writable
    schema) makes the same catalog a rebuilt table would have; these edits leave the rows'
    format as it is."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = ?",
                                       (table,)).scalar_one()
            assert old in sql, f"{old!r} not in {sql}"
            conn.exec_driver_sql("PRAGMA writable_schema = ON")
            conn.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE name = ?",
                                 (sql.replace(old, new, 1), table))
            conn.exec_driver_sql("PRAGMA writable_schema = OFF")
    finally:
        engine.dispose()


def test_a_database_built_from_schema_sql_has_no_drift_and_the_check_changes_nothing(
        live_url, tmp_path):
    database = connect(live_url)
    before, schema_before = snapshot(database), schema_state(live_url)
    done = _run(live_url, tmp_path)
    assert done.returncode == 0, done.stderr
    tables = len(metadata.tables)
    assert done.stdout.splitlines()[0] == f"no schema drift: {tables} tables match schema.sql"
    assert f"counts: changed=0 differences=0 extra=0 missing=0 tables_compared={tables} " \
        f"tables_expected={tables}" in done.stdout
    assert "differences:" not in done.stdout
    code, result = _json_run(live_url, tmp_path)
    assert (code, result["exit_code"], result["sections"]["Differences"]) == (0, 0, [])
    assert schema_state(live_url) == schema_before
    assert_unchanged(before, snapshot(database), runs=2)  # only the two runs' ledger rows
    database.engine.dispose()


# Each kind of drift, made on purpose: (name, MariaDB statements, SQLite change, expected).
# A SQLite change is statements, or ("edit", table, old text, new text) for _sqlite_edit_table.
DRIFTS = [
    ("drop a column", ["ALTER TABLE guardians DROP COLUMN email"],
     ["ALTER TABLE guardians DROP COLUMN email"], (MISSING, "column guardians.email")),
    # SQLite keeps no sizes: there the type itself changes.
    ("change a type", ["ALTER TABLE guardians MODIFY phone VARCHAR(64)"],
     ("edit", "guardians", "phone VARCHAR(32)", "phone TEXT"),
     (CHANGED, "column guardians.phone")),
    ("change a default",
     ["ALTER TABLE notification_devices ALTER COLUMN platform SET DEFAULT 'ios'"],
     ("edit", "notification_devices", "DEFAULT 'android'", "DEFAULT 'ios'"),
     (CHANGED, "column notification_devices.platform")),
    ("change nullability", ["ALTER TABLE guardians MODIFY name VARCHAR(200) NULL"],
     ("edit", "guardians", "name VARCHAR(200) NOT NULL", "name VARCHAR(200)"),
     (CHANGED, "column guardians.name")),
    ("drop an index", ["ALTER TABLE report_email_queue DROP INDEX ix_report_email_finished"],
     ["DROP INDEX ix_report_email_finished"],
     (MISSING, "index report_email_queue.ix_report_email_finished")),
    ("change an index's columns",
     ["ALTER TABLE report_email_queue DROP INDEX ix_report_email_finished, "
      "ADD INDEX ix_report_email_finished (status, sent_at)"],
     ["DROP INDEX ix_report_email_finished",
      "CREATE INDEX ix_report_email_finished ON report_email_queue (status, sent_at)"],
     (CHANGED, "index report_email_queue.ix_report_email_finished")),
    ("drop a foreign key",
     ["ALTER TABLE notification_devices DROP FOREIGN KEY fk_devices_guardian"],
     ("edit", "notification_devices",
      ", \n\tCONSTRAINT fk_devices_guardian FOREIGN KEY(guardian_id) REFERENCES guardians (id)",
      ""),
     # SQLite keeps no key names: the catalog names a key by its table and columns.
     (MISSING, "foreign key notification_devices.{fk_devices_guardian|"
               "fk_notification_devices_guardian_id}")),
    ("add an extra table", ["CREATE TABLE wp_options (id INT PRIMARY KEY)"],
     ["CREATE TABLE wp_options (id INT PRIMARY KEY)"], (EXTRA, "table wp_options")),
    # MariaDB only: SQLite has no charsets, so this kind cannot be made there.
    ("change a table's charset", ["ALTER TABLE guardians DEFAULT CHARSET latin1"], None,
     (CHANGED, "table guardians charset")),
]
CASES = [pytest.param(dialect, mysql if dialect == "mariadb" else lite, expected,
                      id=f"{dialect}-{name}")
         for name, mysql, lite, expected in DRIFTS
         for dialect in ("sqlite", "mariadb") if (mysql if dialect == "mariadb" else lite)]


def _object_named(dialect: str, template: str) -> str:
    """`kind x.{mariadb name|sqlite name}` -> the name on this dialect."""
    if "{" not in template:
        return template
    head, names = template[:-1].split("{")
    mariadb, sqlite = names.split("|")
    return head + (mariadb if dialect == "mariadb" else sqlite)


@pytest.mark.parametrize("dialect, change, expected", CASES)
def test_each_kind_of_drift_is_reported_exactly_once_and_nothing_else(
        database_of, tmp_path, dialect, change, expected):
    url = database_of(dialect)
    if isinstance(change, tuple):
        _sqlite_edit_table(url, *change[1:])
    else:
        _ddl(url, *change)
    kind, name = expected[0], _object_named(dialect, expected[1])
    schema_before = schema_state(url)

    code, result = _json_run(url, tmp_path)
    assert (code, result["exit_code"]) == (1, 1), result
    [drift] = result["sections"]["Differences"]
    assert (drift["kind"], drift["object"]) == (kind, name)
    assert set(drift) == {"kind", "object", "expected", "actual"}
    assert (drift["expected"] is None) == (kind == EXTRA)
    assert (drift["actual"] is None) == (kind == MISSING)

    done = _run(url, tmp_path)
    assert done.returncode == 1, done.stderr
    table = name.split(" ")[-1].split(".")[0] if kind != CHANGED or "charset" not in name \
        else name.split(" ")[1]
    assert done.stdout.splitlines()[0] == "schema drift: 1 difference in 1 table"
    [line] = [line for line in done.stdout.splitlines() if line.startswith("differences:")]
    assert f'object="{name}"' in line and f"kind={kind}" in line
    assert [line for line in done.stdout.splitlines() if table in line] == [line]
    assert schema_state(url) == schema_before  # the check ran no DDL


def test_ignore_extra_tables_hides_another_applications_table_but_not_other_drift(
        live_url, tmp_path):
    _ddl(live_url, "CREATE TABLE wp_options (id INT PRIMARY KEY)")
    done = _run(live_url, tmp_path, "--ignore-extra-tables")
    assert done.returncode == 0, done.stderr
    assert "wp_options" not in done.stdout
    assert "extra_tables_ignored=1" in done.stdout
    _ddl(live_url, "DROP INDEX ix_report_email_finished" if live_url.startswith("sqlite")
         else "ALTER TABLE report_email_queue DROP INDEX ix_report_email_finished")
    code, result = _json_run(live_url, tmp_path, "--ignore-extra-tables")
    assert code == 1
    assert [(d["kind"], d["object"]) for d in result["sections"]["Differences"]] == [
        (MISSING, "index report_email_queue.ix_report_email_finished")]


def test_an_unreachable_database_exits_2_with_one_line_never_1(tmp_path):
    url = "mysql+pymysql://root@127.0.0.1:1/ops"  # nothing listens on port 1
    done = _run(url, tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "127.0.0.1" in line
    assert done.stdout == ""
    code, result = _json_run(url, tmp_path)
    assert (code, result["exit_code"], result["status"]) == (2, 2, "failed")


def test_bad_usage_exits_2(tmp_path):
    done = _run(sqlite_database(tmp_path), tmp_path, "--no-such-flag")
    assert done.returncode == 2
    assert done.stderr == ("error: No such option '--no-such-flag' "
                           "(see check_schema_drift.py --help)\n")


def test_on_a_terminal_the_table_says_schema_sql_and_live_database(tmp_path):
    from io import StringIO

    from rich.console import Console

    from ops_lib.render import render_terminal
    from ops_lib.result import JobResult

    result = JobResult(TOOL, True)
    drift = Drift(CHANGED, "column guardians.phone", "varchar(32) NULL", "varchar(64) NULL")
    result.section("Differences", [drift.to_dict()], columns=["kind", "object", "expected",
                                                               "actual"],
                   labels={"expected": "schema.sql", "actual": "live database"})
    out = StringIO()
    render_terminal(result, Console(file=out, width=200))
    header = next(line for line in out.getvalue().splitlines() if "object" in line)
    assert "schema.sql" in header and "live database" in header
    assert "expected" not in header and "actual" not in header


def test_a_stop_signal_before_the_comparison_is_interrupted_not_no_drift(tmp_path):
    from ops_lib.jobs import schema_drift

    ctx = job_context(sqlite_database(tmp_path), tmp_path, dry_run=True)
    ctx.stop.set("SIGTERM")
    try:
        with pytest.raises(Interrupted, match="^interrupted by SIGTERM before comparing$"):
            schema_drift.run(ctx)
    finally:
        ctx.db.engine.dispose()


def test_an_interrupted_run_is_recorded_as_interrupted_and_exits_as_the_tool_says():
    # describe_failure: no "failed" (no failure alert for a shutdown); the drift check's 2 for
    # any run that did not check, a second Ctrl-C (130) included; a tool without its own
    # failed exit keeps 1 and 130.
    assert describe_failure(ScratchInterrupted("stopped")) == ("stopped", EXIT_FAILED,
                                                               "interrupted")
    assert describe_failure(KeyboardInterrupt())[1:] == (EXIT_INTERRUPTED, "interrupted")
    assert describe_failure(JobFailed("broken"))[1:] == (EXIT_FAILED, "failed")
    drift = {"failed_exit": EXIT_NOT_CHECKED, "bad_input_exit": EXIT_NOT_CHECKED}
    assert [tool_exit_code(code, **drift) for code in (EXIT_FAILED, EXIT_INTERRUPTED, 0, 1)] \
        == [2, 2, 0, 2]
    assert [tool_exit_code(code) for code in (EXIT_FAILED, EXIT_INTERRUPTED, 2)] == [1, 130, 2]


def _databases(like: str) -> set[str]:
    engine = create_engine(MYSQL_SERVER_URL)
    try:
        with engine.connect() as conn:
            return set(conn.execute(text(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE :n"),
                {"n": like}).scalars())
    finally:
        engine.dispose()


@pytest.fixture
def mariadb_live(database_of) -> str:
    return database_of("mariadb")


def test_the_generated_scratch_schema_is_gone_after_a_run(mariadb_live, tmp_path):
    done = _run(mariadb_live, tmp_path, "--debug")  # --debug logs the scratch's name
    assert done.returncode == 0, done.stderr
    [scratch] = re.findall(r"loaded into the scratch database (ops_scratch_\w+)", done.stderr)
    assert _databases(scratch) == set()


def test_an_operator_named_scratch_is_used_and_dropped(mariadb_live, tmp_path):
    name = unique_name("ops_drift_scratch")
    done = _run(mariadb_live, tmp_path, "--scratch-database", name)
    assert done.returncode == 0, done.stderr
    assert _databases(name) == set()


def test_an_existing_scratch_name_is_bad_input_exit_2_and_left_as_it_was(
        mariadb_live, tmp_path):
    name = unique_name("ops_drift_taken")
    _ddl(MYSQL_SERVER_URL, f"CREATE DATABASE `{name}`", f"CREATE TABLE `{name}`.kept (id INT)")
    try:
        done = _run(mariadb_live, tmp_path, "--scratch-database", name)
        assert done.returncode == 2
        assert f"error: --scratch-database {name} already exists" in done.stderr
        assert "DROP" not in done.stderr
        assert _databases(name) == {name}
        assert set(catalog_of(f"{MYSQL_SERVER_URL}/{name}").tables) == {"kept"}
    finally:
        _ddl(MYSQL_SERVER_URL, f"DROP DATABASE `{name}`")


def test_a_bad_scratch_name_is_refused_before_connecting(tmp_path):
    done = _run("mysql+pymysql://root@127.0.0.1:1/ops", tmp_path, "--scratch-database", "a;b")
    assert done.returncode == 2
    assert done.stderr == ("error: --scratch-database 'a;b': use 1 to 64 letters, digits, '_', "
                           "'$' or '-'\n")


@pytest.mark.parametrize("tool, exit_code", [
    ("check_schema_drift", EXIT_NOT_CHECKED), ("generate_missing_index_sql", EXIT_FAILED)])
def test_sigterm_while_the_sweep_waits_is_an_interrupted_run_with_no_scratch_left(
        mariadb_live, tmp_path, tool, exit_code):
    """The real tool, stopped while its sweep waits on a metadata lock this test holds on an old
    generated scratch: exit 2 for the drift check (1 for the preview), the ledger says
    interrupted, and neither scratch is left."""
    server = create_engine(MYSQL_SERVER_URL, isolation_level="AUTOCOMMIT")
    old = named_at(utcnow() - dt.timedelta(hours=2))  # past the tool's hour: swept
    try:
        with scratch_sweep_turn(server), server.connect() as holder:
            holder.exec_driver_sql(f"CREATE DATABASE `{old}`")
            holder.exec_driver_sql(f"CREATE TABLE `{old}`.kept (id INT)")
            holder.exec_driver_sql("BEGIN")
            holder.exec_driver_sql(f"SELECT * FROM `{old}`.kept")  # the sweep's DROP waits
            process = start_cli(tool, "--debug", env=tool_env(mariadb_live, tmp_path))
            try:
                scratch = loaded_scratch(process)
                wait_for_drop_waiting_on_lock(server, process, scratch, old)
                process.send_signal(signal.SIGTERM)
            finally:
                holder.exec_driver_sql("ROLLBACK")
                out, err = process.communicate(timeout=120)
        assert process.returncode == exit_code, err
        assert f"error: interrupted by SIGTERM while preparing the scratch database {scratch}" \
            in err
        assert _databases(scratch) == set()
        engine = create_engine(mariadb_live)
        with engine.connect() as conn:
            statuses = conn.execute(text("SELECT status FROM ops_job_runs WHERE tool = :tool"),
                                    {"tool": tool}).scalars().all()
        engine.dispose()
        assert statuses == ["interrupted"]
    finally:
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{old}`")
        server.dispose()


def test_a_stop_signal_while_preparing_the_scratch_is_an_interrupted_run_with_no_scratch_left(
        mariadb_live, tmp_path):
    """On MariaDB the stop arrives while the scratch is loaded: the job stops with
    ScratchInterrupted (run_tool: interrupted, exit 2) and the scratch is dropped."""
    from ops_lib.jobs import schema_drift

    name = unique_name("ops_drift_stopped")
    ctx = job_context(mariadb_live, tmp_path, dry_run=True)
    ctx.stop.set("SIGTERM")
    try:
        with pytest.raises(ScratchInterrupted, match=f"^interrupted by SIGTERM while preparing "
                                                     f"the scratch database {name}"):
            schema_drift.run(ctx, scratch_database=name)
    finally:
        ctx.db.engine.dispose()
    assert _databases(name) == set()
