"""generate_missing_index_sql.py: the index SQL schema.sql asks for, and nothing else on stdout.

Pure tests build catalogs by hand; the database tests break a real schema, apply the tool's
stdout with the real `mariadb` client (or sqlite3), check with the drift check's comparison that
no difference is left, and that the tool itself ran no DDL.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from ops_lib.db import connect
from ops_lib.jobs.index_preview import (
    IndexFix, fix_statements, index_sql, missing_indexes, plan_indexes, redundant_indexes,
)
from ops_lib.jobs.schema_drift import compare
from ops_lib.schema_catalog import (
    Catalog, Column, ForeignKey, Index, IndexPart, Table,
)
from ops_lib.scratch_schema import expected_and_live
from tests.conftest import (
    REPO, MysqlScratch, assert_unchanged, job_context, require_mariadb, run_cli,
    run_mariadb_client, run_on_a_terminal, schema_state, snapshot, sqlite_database, tool_env,
    unique_name,
)

MB = 1024 * 1024


def _index(name: str, *columns: str, unique: bool = False, generated: bool = False) -> Index:
    parts = []
    for column in columns:
        descending = column.endswith(" DESC")
        column = column.removesuffix(" DESC")
        prefix = None
        if column.endswith(")"):
            column, _, length = column[:-1].partition("(")
            prefix = int(length)
        parts.append(IndexPart(column, prefix, descending))
    return Index(name, tuple(parts), unique, generated)


def _table(name: str, *indexes: Index, rows: int | None = 10, size: int | None = MB,
           foreign_keys: tuple[ForeignKey, ...] = (), lacking: tuple[str, ...] = (),
           columns: tuple[str, ...] = ()) -> Table:
    """A table with its indexes, `columns` and every column its indexes name but `lacking`."""
    names = [*columns, *(part.column for index in indexes for part in index.parts)]
    columns = {name: Column(name, "int", True) for name in names if name not in lacking}
    return Table(name, columns=columns, indexes={index.name: index for index in indexes},
                 foreign_keys={key.name: key for key in foreign_keys},
                 approx_rows=rows, approx_bytes=size)


def _catalog(*tables: Table, flavor: str = "mariadb") -> Catalog:
    dialect = "sqlite" if flavor == "sqlite" else "mysql"
    return Catalog(dialect, flavor, "test", {table.name: table for table in tables})


def _statements(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("--")]


def _sql(expected: Catalog, live: Catalog, **options) -> str:
    return index_sql(plan_indexes(expected, live), live, header=["test"], database="ops",
                     **options)


PK = _index("PRIMARY", "id", unique=True)
COLUMNS = ("id", "a", "b", "c", "d", "s", "p")  # a live table that has every column


# -- which indexes are missing --------------------------------------------------------------


def test_an_index_the_live_table_lacks_or_has_with_other_columns_is_a_fix_and_nothing_else():
    expected = _catalog(_table("t", PK, _index("ix_a", "a"), _index("ix_b", "b", "c"),
                               _index("uq_d", "d", unique=True), _index("ix_same", "e")))
    live = _catalog(_table("t", PK, _index("ix_b", "c", "b"), _index("uq_d", "d"),
                           _index("ix_same", "e")))
    fixes, missing_tables = missing_indexes(expected, live)
    assert missing_tables == []
    assert [(fix.expected.name, fix.changed) for fix in fixes] == [
        ("ix_a", False), ("ix_b", True), ("uq_d", True)]
    assert fixes[1].live.columns == ("c", "b")


def test_a_missing_primary_key_is_a_fix():
    expected = _catalog(_table("t", PK))
    live = _catalog(_table("t", columns=("id",)))
    [fix] = missing_indexes(expected, live)[0]
    assert fix.expected.primary and not fix.changed
    assert fix_statements(fix, "mariadb") == [
        "ALTER TABLE `t` ADD PRIMARY KEY (`id`), ALGORITHM=INPLACE, LOCK=NONE;"]


def test_an_equal_index_under_a_name_the_server_made_up_is_not_missing():
    expected = _catalog(_table("t", _index("t_ibfk_1", "a", generated=True),
                               _index("ix_b", "b")))
    live = _catalog(_table("t", _index("a", "a", generated=True), _index("b_idx", "b")))
    fixes, _ = missing_indexes(expected, live)
    # ix_b is named by schema.sql and by the live database differently: neither was made up.
    assert [fix.expected.name for fix in fixes] == ["ix_b"]


def test_a_live_index_under_a_name_schema_sql_uses_is_changed_and_the_unnamed_one_missing():
    # The drift check's case (test_schema_drift): both tools pair the same way.
    expected = _catalog(_table("t", PK, _index("idx_a", "a"), _index("b", "b", generated=True)))
    live = _catalog(_table("t", PK, _index("idx_a", "b"), columns=("a",)))
    fixes, _ = missing_indexes(expected, live)
    assert [(fix.expected.name, fix.live and fix.live.name) for fix in fixes] == \
        [("b", None), ("idx_a", "idx_a")]
    assert _statements(_sql(expected, live)) == [
        "ALTER TABLE `t` ADD INDEX IF NOT EXISTS `b` (`b`), ALGORITHM=INPLACE, LOCK=NONE;",
        "ALTER TABLE `t` DROP INDEX `idx_a`, ADD INDEX `idx_a` (`a`), ALGORITHM=INPLACE, "
        "LOCK=NONE;"]
    assert [d.object for d in compare(expected, live)] == ["index t.b", "index t.idx_a"]


def test_an_index_on_a_column_the_live_table_lacks_is_a_comment_and_no_statement():
    # The client stops at the first error: an ADD INDEX on a dropped column would leave the
    # file half applied. The other index is still added.
    expected = _catalog(_table("t", PK, _index("ix_gone", "a", "gone"), _index("ix_b", "b")))
    live = _catalog(_table("t", PK, columns=("a", "b")))
    sql = _sql(expected, live)
    assert _statements(sql) == [
        "ALTER TABLE `t` ADD INDEX IF NOT EXISTS `ix_b` (`b`), ALGORITHM=INPLACE, LOCK=NONE;"]
    assert ("-- no statement: t has no column gone; the columns come first: see python "
            "tools/check_schema_drift.py and docs/upgrading.md") in sql.splitlines()
    fixes, _ = missing_indexes(expected, live)
    assert [fix_statements(fix, "sqlite") for fix in fixes] == [
        ['CREATE INDEX IF NOT EXISTS "ix_b" ON "t" ("b");'], []]


def test_a_table_missing_from_the_live_database_is_one_comment_and_no_statement():
    expected = _catalog(_table("t", PK, _index("ix_a", "a")), _table("u", PK))
    live = _catalog(_table("u", PK))
    text = _sql(expected, live)
    assert "-- table t is missing: python tools/manage_schema.py create" in text.splitlines()
    assert _statements(text) == []


# -- statement text -------------------------------------------------------------------------


def test_mariadb_adds_if_not_exists_and_mysql_does_not():
    fix = IndexFix("t", _index("ix", "a", "b(10) DESC"))
    assert fix_statements(fix, "mariadb") == [
        "ALTER TABLE `t` ADD INDEX IF NOT EXISTS `ix` (`a`, `b`(10) DESC), "
        "ALGORITHM=INPLACE, LOCK=NONE;"]
    assert fix_statements(fix, "mysql") == [
        "ALTER TABLE `t` ADD INDEX `ix` (`a`, `b`(10) DESC), ALGORITHM=INPLACE, LOCK=NONE;"]
    unique = IndexFix("t", _index("uq", "a", unique=True))
    assert fix_statements(unique, "mariadb") == [
        "ALTER TABLE `t` ADD UNIQUE INDEX IF NOT EXISTS `uq` (`a`), ALGORITHM=INPLACE, LOCK=NONE;"]


def test_a_changed_index_is_dropped_and_added_in_one_alter():
    fix = IndexFix("t", _index("ix", "a", "b"), live=_index("ix", "a"))
    assert fix_statements(fix, "mariadb") == [
        "ALTER TABLE `t` DROP INDEX `ix`, ADD INDEX `ix` (`a`, `b`), ALGORITHM=INPLACE, LOCK=NONE;"]
    primary = IndexFix("t", _index("PRIMARY", "id", "day", unique=True), live=PK)
    assert fix_statements(primary, "mysql") == [
        "ALTER TABLE `t` DROP PRIMARY KEY, ADD PRIMARY KEY (`id`, `day`), "
        "ALGORITHM=INPLACE, LOCK=NONE;"]


def test_sqlite_creates_if_not_exists_and_drops_a_changed_index_first():
    fix = IndexFix("t", _index("ix", "a", "b"), live=_index("ix", "a"))
    assert fix_statements(fix, "sqlite") == [
        'DROP INDEX IF EXISTS "ix";', 'CREATE INDEX IF NOT EXISTS "ix" ON "t" ("a", "b");']
    unique = IndexFix("t", _index("uq", "a", unique=True))
    assert fix_statements(unique, "sqlite") == ['CREATE UNIQUE INDEX IF NOT EXISTS "uq" ON "t" ("a");']
    assert fix_statements(IndexFix("t", PK), "sqlite") == []


def test_odd_names_are_quoted_with_their_quote_character_doubled():
    fix = IndexFix("we`ird", _index('ix `a"', "col`x"))
    assert fix_statements(fix, "mysql") == [
        'ALTER TABLE `we``ird` ADD INDEX `ix ``a"` (`col``x`), ALGORITHM=INPLACE, LOCK=NONE;']
    assert fix_statements(fix, "sqlite") == [
        'CREATE INDEX IF NOT EXISTS "ix `a""" ON "we`ird" ("col`x");']


def test_a_line_break_in_a_name_cannot_end_a_comment_and_start_a_statement():
    index = _index("ix\nDROP TABLE t; --", "a")
    text = _sql(_catalog(_table("t", index)), _catalog(_table("t", columns=("a",))))
    # The only lines outside comments are the statement's own (the name stays inside its quotes).
    [statement] = fix_statements(IndexFix("t", index), "mariadb")
    assert "\n".join(_statements(text)) == statement
    assert statement.startswith("ALTER TABLE `t` ADD INDEX IF NOT EXISTS `ix\nDROP TABLE t; --`")


def test_each_statement_has_the_table_size_and_the_online_ddl_note_above_it():
    expected = _catalog(_table("attendance_records", _index("ix_a", "a"),
                               _index("uq_b", "b", unique=True)))
    live = _catalog(_table("attendance_records", rows=1_204_000, size=850 * MB,
                           columns=COLUMNS))
    text = _sql(expected, live)
    lines = text.splitlines()
    assert ("-- attendance_records: about 1,204,000 rows, 850 MB (approximate: "
            "information_schema)") in lines
    assert text.count("metadata lock") == 2 and text.count("replicas") == 2
    assert "UNIQUE: fails if rows repeat (b)" in text
    assert "pt-online-schema-change" not in text  # 850 MB is under the default 1024
    assert len(_statements(text)) == 2


def test_a_mysql_table_without_an_estimate_does_not_say_sqlite():
    expected = _catalog(_table("t", PK, _index("ix_a", "a")))
    live = _catalog(_table("t", PK, rows=None, size=None, columns=COLUMNS))
    assert "-- t: size not known (information_schema.TABLES has no estimate for it)" in \
        _sql(expected, live).splitlines()
    assert "SQLite" not in _sql(expected, live)


def test_a_table_over_the_threshold_gets_the_online_schema_change_command_lines():
    expected = _catalog(_table("big", PK, _index("ix_a", "a")), _table("small", _index("ix_s", "s")))
    live = _catalog(_table("big", PK, rows=5_000_000, size=2048 * MB, columns=COLUMNS),
                    _table("small", size=100 * MB, columns=COLUMNS))
    text = _sql(expected, live, large_table_mb=1024)
    assert ("--   pt-online-schema-change --alter 'ADD INDEX `ix_a` (`a`)' D=ops,t=big --dry-run"
            in text.splitlines())
    assert "--   pt-online-schema-change --alter 'ADD INDEX `ix_a` (`a`)' D=ops,t=big --execute" \
        in text.splitlines()
    assert "gh-ost --database=ops --table=big --alter='ADD INDEX `ix_a` (`a`)'" in text
    assert "t=small" not in text and "--table=small" not in text
    # A lower threshold takes in the small table too.
    assert "t=small" in _sql(expected, live, large_table_mb=50)


def test_the_online_tool_lines_name_the_server_and_no_dsn_is_made_of_a_name_with_a_comma():
    expected = _catalog(_table("big", PK, _index("ix_a", "a")), _table("b,=x", _index("ix_b", "b")))
    live = _catalog(_table("big", PK, size=2048 * MB, columns=COLUMNS),
                    _table("b,=x", size=2048 * MB, columns=COLUMNS))
    text = _sql(expected, live, server=("db1.example", 3307))
    assert "h=db1.example,P=3307,D=ops,t=big --dry-run" in text
    assert "gh-ost --host=db1.example --port=3307 --database=ops --table=big" in text
    # pt-osc splits its DSN on `,` and `=`: no line for that table, and the reason.
    assert "t=b,=x" not in text
    assert "no pt-online-schema-change line: its DSN cannot hold a name with ',' or '='" in text
    assert "gh-ost --host=db1.example --port=3307 --database=ops --table=b,=x" in text


def test_a_large_table_with_foreign_keys_is_pointed_at_pt_osc_not_gh_ost():
    key = ForeignKey("fk_parent", ("parent_id",), "parent", ("id",))
    expected = _catalog(_table("child", _index("ix_a", "a"), foreign_keys=(key,)),
                        _table("parent", _index("ix_p", "p")))
    live = _catalog(_table("child", size=4096 * MB, foreign_keys=(key,), columns=COLUMNS),
                    _table("parent", size=4096 * MB, columns=COLUMNS))
    text = _sql(expected, live)
    assert "gh-ost --database" not in text
    assert text.count("gh-ost does not support") == 2
    # The referenced table's children must follow the copy.
    assert "D=ops,t=parent --alter-foreign-keys-method=auto --dry-run" in text


# -- redundant indexes ----------------------------------------------------------------------


def test_a_leftmost_prefix_of_another_index_is_redundant_and_listed_commented_out():
    live = _catalog(_table("t", PK, _index("ix_a", "a"), _index("ix_a_b", "a", "b")))
    [redundant] = redundant_indexes(live)
    assert (redundant.index.name, redundant.covered_by.name) == ("ix_a", "ix_a_b")
    text = _sql(live, live)
    assert "-- ALTER TABLE `t` DROP INDEX `ix_a`;  -- covered by ix_a_b (a, b)" in text.splitlines()
    assert _statements(text) == []


def test_not_redundant_a_middle_column_the_primary_key_or_a_unique_constraint():
    live = _catalog(_table("t", PK, _index("ix_b", "b"), _index("ix_a_b", "a", "b"),
                           _index("ix_id_a", "id", "a"), _index("uq_a", "a", unique=True),
                           _index("uq_c", "c", unique=True), _index("uq_c_d", "c", "d", unique=True),
                           _index("ix_e", "e"), _index("ix_e_desc_f", "e DESC", "f"),
                           _index("ix_g", "g(20)"), _index("ix_g_h", "g(10)", "h")))
    assert redundant_indexes(live) == []


def test_of_two_duplicates_one_is_kept_and_a_non_unique_one_goes_before_a_unique_one():
    live = _catalog(_table("t", PK, _index("ix_a", "a"), _index("ix_a_again", "a"),
                           _index("ix_c", "c"), _index("uq_c", "c", unique=True),
                           _index("ix_id", "id"),
                           _index("ix_d", "d(10)"), _index("ix_d_long", "d(20)")))
    found = {(r.index.name, r.covered_by.name) for r in redundant_indexes(live)}
    assert found == {("ix_a_again", "ix_a"), ("ix_c", "uq_c"), ("ix_id", "PRIMARY"),
                     ("ix_d", "ix_d_long")}


def test_of_two_duplicates_the_one_schema_sql_names_is_kept():
    live = _catalog(_table("t", _index("a_copy", "a"), _index("z_ix_a", "a")))
    schema = _catalog(_table("t", _index("z_ix_a", "a")))
    [redundant] = redundant_indexes(live, schema)
    assert (redundant.index.name, redundant.covered_by.name) == ("a_copy", "z_ix_a")


def test_an_index_backing_a_foreign_key_is_redundant_to_a_wider_one_starting_with_its_columns():
    # The wider index backs the key too: the leftmost-prefix rule needs no foreign-key rule.
    key = ForeignKey("fk_parent", ("parent_id",), "parent", ("id",))
    backed = _catalog(_table("t", PK, _index("ix_parent", "parent_id"),
                             _index("ix_name_parent", "name", "parent_id"), foreign_keys=(key,)))
    assert redundant_indexes(backed) == []
    covered = _catalog(_table("t", PK, _index("ix_parent", "parent_id"),
                              _index("ix_parent_name", "parent_id", "name"), foreign_keys=(key,)))
    [redundant] = redundant_indexes(covered)
    assert (redundant.index.name, redundant.covered_by.name) == ("ix_parent", "ix_parent_name")


def test_the_tools_help_states_the_jobs_large_table_size(tmp_path):
    from ops_lib.jobs.index_preview import DEFAULT_LARGE_TABLE_MB

    shown = run_cli("generate_missing_index_sql", "--help", env=tool_env("sqlite://", tmp_path))
    assert shown.returncode == 0
    assert f"[default: {DEFAULT_LARGE_TABLE_MB}]" in " ".join(shown.stdout.split())


# -- the tool on real databases -------------------------------------------------------------

TOOL = "generate_missing_index_sql"


@pytest.fixture
def mariadb_live():
    """A MariaDB database of the test's own, built from schema.sql (the tests change indexes)."""
    require_mariadb()
    scratch = MysqlScratch(unique_name("ops_ixprev"))
    scratch.create()
    yield scratch
    scratch.drop()


def _drift(url: str, tmp_path) -> list[str]:
    """The drift check's differences between schema.sql and the database at `url`."""
    ctx = job_context(url, tmp_path, dry_run=True)
    try:
        expected, live = expected_and_live(ctx)
    finally:
        ctx.db.engine.dispose()
    return [drift.line() for drift in compare(expected, live)]


def _run_tool(url: str, tmp_path, *args: str):
    done = run_cli(TOOL, *args, env=tool_env(url, tmp_path))
    assert done.returncode == 0, done.stderr
    return done


def _only_sql(stdout: str) -> None:
    """stdout is the SQL file: it opens with the header's comment lines, ends with a newline.
    (That the client runs every line is checked by applying it with the mariadb client.)"""
    assert stdout.startswith(f"-- {TOOL} run=") and stdout.endswith("\n")
    assert "review before running; nothing was applied" in stdout.splitlines()[2]


def _apply_with_the_mariadb_client(url: str, sql: str) -> None:
    applied = run_mariadb_client(url, sql.encode())
    assert applied.returncode == 0, applied.stderr.decode()


def _apply_with_sqlite3(url: str, sql: str) -> None:
    with sqlite3.connect(make_url(url).database) as conn:
        conn.executescript(sql)


@pytest.mark.parametrize("flavor", ["sqlite", "mariadb"])
def test_a_database_built_from_schema_sql_gets_the_header_and_no_statement(flavor, tmp_path,
                                                                          request):
    url = sqlite_database(tmp_path) if flavor == "sqlite" \
        else request.getfixturevalue("mariadb_live").url
    done = _run_tool(url, tmp_path)
    _only_sql(done.stdout)
    assert _statements(done.stdout) == []
    assert "nothing to add: the live database has every index schema.sql names" in done.stdout
    assert "Redundant" not in done.stdout  # schema.sql itself has no redundant index
    assert " INFO " in done.stderr and "-- " not in done.stderr  # logs on stderr, SQL on stdout


def _break_mariadb(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in (
                "DROP INDEX ix_payments_created ON payments",
                "DROP INDEX ix_audit_logs_created ON audit_logs",
                "ALTER TABLE attendance_records DROP INDEX ix_records_institution_day, "
                "ADD INDEX ix_records_institution_day (attendance_date, institution_id)",
                "DROP INDEX uq_invoices_no ON invoices"):
            conn.exec_driver_sql(statement)
    engine.dispose()


def test_mariadb_the_printed_sql_applied_with_the_client_restores_every_index(mariadb_live,
                                                                               tmp_path):
    url = mariadb_live.url
    _break_mariadb(url)
    assert len(_drift(url, tmp_path)) == 4
    broken = schema_state(url)
    database = connect(url)
    rows_before = snapshot(database)

    done = _run_tool(url, tmp_path)

    # The tool ran no DDL: the live schema and its rows are as they were (but its ledger row).
    assert schema_state(url) == broken
    assert_unchanged(rows_before, snapshot(database))
    database.engine.dispose()
    _only_sql(done.stdout)
    statements = _statements(done.stdout)
    assert statements == [
        "ALTER TABLE `attendance_records` DROP INDEX `ix_records_institution_day`, ADD INDEX "
        "`ix_records_institution_day` (`institution_id`, `attendance_date`), "
        "ALGORITHM=INPLACE, LOCK=NONE;",
        "ALTER TABLE `audit_logs` ADD INDEX IF NOT EXISTS `ix_audit_logs_created` (`created_at`), "
        "ALGORITHM=INPLACE, LOCK=NONE;",
        "ALTER TABLE `invoices` ADD UNIQUE INDEX IF NOT EXISTS `uq_invoices_no` (`invoice_no`), "
        "ALGORITHM=INPLACE, LOCK=NONE;",
        "ALTER TABLE `payments` ADD INDEX IF NOT EXISTS `ix_payments_created` (`created_at`), "
        "ALGORITHM=INPLACE, LOCK=NONE;"]
    assert done.stdout.count("(approximate: information_schema)") == 4

    _apply_with_the_mariadb_client(url, done.stdout)

    assert _drift(url, tmp_path) == []
    again = _run_tool(url, tmp_path)
    assert _statements(again.stdout) == []


def test_sqlite_the_printed_sql_applied_with_sqlite3_restores_every_index(tmp_path):
    url = sqlite_database(tmp_path)
    with sqlite3.connect(make_url(url).database) as conn:
        conn.executescript("""
            DROP INDEX ix_payments_created;
            DROP INDEX ix_audit_logs_created;
            DROP INDEX ix_records_institution_day;
            CREATE INDEX ix_records_institution_day ON attendance_records (attendance_date);""")
    assert len(_drift(url, tmp_path)) == 3
    broken = schema_state(url)
    database = connect(url)
    rows_before = snapshot(database)

    done = _run_tool(url, tmp_path)

    assert schema_state(url) == broken
    assert_unchanged(rows_before, snapshot(database))
    database.engine.dispose()
    _only_sql(done.stdout)
    assert _statements(done.stdout) == [
        'DROP INDEX IF EXISTS "ix_records_institution_day";',
        'CREATE INDEX IF NOT EXISTS "ix_records_institution_day" ON "attendance_records" '
        '("institution_id", "attendance_date");',
        'CREATE INDEX IF NOT EXISTS "ix_audit_logs_created" ON "audit_logs" ("created_at");',
        'CREATE INDEX IF NOT EXISTS "ix_payments_created" ON "payments" ("created_at");']

    _apply_with_sqlite3(url, done.stdout)

    assert _drift(url, tmp_path) == []
    assert _statements(_run_tool(url, tmp_path).stdout) == []


def test_mariadb_redundant_indexes_are_listed_commented_out_with_what_covers_them(mariadb_live,
                                                                                   tmp_path):
    url = mariadb_live.url
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in (
                # a leftmost prefix of ix_records_institution_day
                "CREATE INDEX ix_records_institution ON attendance_records (institution_id)",
                # a duplicate of ix_payments_created: the copy goes, schema.sql's stays
                "CREATE INDEX ix_payments_created_copy ON payments (created_at)",
                # ix_districts_division backs fk_districts_division; this does not cover it
                "CREATE INDEX ix_districts_name_division ON districts (name_en, division_id)"):
            conn.exec_driver_sql(statement)
    engine.dispose()
    done = _run_tool(url, tmp_path)
    lines = done.stdout.splitlines()
    assert [line for line in lines if "DROP INDEX" in line] == [
        "-- ALTER TABLE `attendance_records` DROP INDEX `ix_records_institution`;  -- covered by "
        "ix_records_institution_day (institution_id, attendance_date)",
        "-- ALTER TABLE `payments` DROP INDEX `ix_payments_created_copy`;  -- covered by "
        "ix_payments_created (created_at)"]
    assert _statements(done.stdout) == []
    assert "redundant indexes (commented out): 2" in done.stdout


def test_json_gives_the_same_sql_as_text_and_the_statements_as_a_list(tmp_path):
    url = sqlite_database(tmp_path)
    with sqlite3.connect(make_url(url).database) as conn:
        conn.execute("DROP INDEX ix_payments_created")
    done = _run_tool(url, tmp_path, "--json")
    result = json.loads(done.stdout)
    assert result["statements"] == [
        'CREATE INDEX IF NOT EXISTS "ix_payments_created" ON "payments" ("created_at");']
    assert result["counts"]["missing_indexes"] == 1
    assert _statements(result["text"]) == result["statements"]
    [row] = result["sections"]["index fixes"]
    assert (row["table"], row["index"], row["change"]) == ("payments", "ix_payments_created",
                                                           "missing")


def test_on_a_terminal_the_sql_is_printed_as_it_is_too(tmp_path):
    url = sqlite_database(tmp_path)
    code, output = run_on_a_terminal(
        [sys.executable, str(REPO / "tools" / f"{TOOL}.py")], tool_env(url, tmp_path),
        stderr=subprocess.DEVNULL)
    assert code == 0
    text = output.decode().replace("\r\n", "\n")
    _only_sql(text)
    assert "\x1b[" not in text  # no colours, no table borders


def test_failures_print_nothing_on_stdout_and_exit_2_for_bad_input_1_for_the_database(tmp_path):
    url = sqlite_database(tmp_path)
    bad = run_cli(TOOL, "--large-table-mb", "0", env=tool_env(url, tmp_path))
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr.startswith("error: ")
    sqlite_scratch = run_cli(TOOL, "--scratch-database", "ops_mine", env=tool_env(url, tmp_path))
    assert (sqlite_scratch.returncode, sqlite_scratch.stdout) == (2, "")
    assert "--scratch-database is for MySQL/MariaDB" in sqlite_scratch.stderr
    down_url = "mysql+pymysql://root@127.0.0.1:1/ops"
    down = run_cli(TOOL, env=tool_env(down_url, tmp_path))
    assert (down.returncode, down.stdout) == (1, "")
    assert "error: " in down.stderr
    # A bad scratch name is found before connecting: 2, although the server is down.
    bad_name = run_cli(TOOL, "--scratch-database", "x;drop", env=tool_env(down_url, tmp_path))
    assert (bad_name.returncode, bad_name.stdout) == (2, "")
    assert "--scratch-database 'x;drop'" in bad_name.stderr


def test_a_result_with_text_is_printed_as_it_is_and_one_without_as_before():
    from io import StringIO

    from ops_lib.render import render
    from ops_lib.result import JobResult

    document = JobResult("t", True, counts={"n": 1}, text="-- a file\nSELECT 1;\n")
    for mode in ("plain", "terminal"):
        out = StringIO()
        render(document, mode, out)
        assert out.getvalue() == "-- a file\nSELECT 1;\n"
    out = StringIO()
    render(document, "json", out)
    assert json.loads(out.getvalue())["text"] == "-- a file\nSELECT 1;\n"
    out = StringIO()
    render(JobResult("t", True, counts={"n": 1}), "json", out)
    assert "text" not in json.loads(out.getvalue())  # other tools' JSON keeps its keys


def test_mariadb_a_missing_table_is_one_comment_and_a_named_scratch_database_is_dropped(
        mariadb_live, tmp_path):
    url = mariadb_live.url
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE audit_logs_archive")
    scratch = unique_name("ops_ixprev_scratch")
    done = _run_tool(url, tmp_path, "--scratch-database", scratch)
    with engine.connect() as conn:
        left = conn.exec_driver_sql("SELECT COUNT(*) FROM information_schema.SCHEMATA "
                                    "WHERE SCHEMA_NAME = %s", (scratch,)).scalar_one()
    engine.dispose()
    assert left == 0
    assert ("-- table audit_logs_archive is missing: python tools/manage_schema.py create"
            in done.stdout.splitlines())
    assert _statements(done.stdout) == []


def test_the_headers_apply_command_quotes_the_database_for_the_shell(tmp_path):
    url = sqlite_database(tmp_path, "my ops; db.sqlite")
    done = _run_tool(url, tmp_path)
    path = str(tmp_path / "my ops; db.sqlite")
    assert f"Then: sqlite3 '{path}' < fix.sql" in done.stdout.splitlines()[2]
