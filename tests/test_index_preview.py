"""generate_missing_index_sql.py: the index SQL schema.sql asks for, and nothing else on stdout.

Pure tests build catalogs by hand; the database tests break a real schema, apply the tool's
stdout with the real `mariadb` client (or sqlite3) and check that it comes back, and that the
tool itself ran no DDL.
"""

from __future__ import annotations

from ops_lib.jobs.index_preview import (
    IndexFix, fix_statements, index_sql, missing_indexes, plan_indexes, redundant_indexes,
)
from ops_lib.schema_catalog import Catalog, ForeignKey, Index, IndexPart, Table

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
           foreign_keys: tuple[ForeignKey, ...] = ()) -> Table:
    return Table(name, indexes={index.name: index for index in indexes},
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
    live = _catalog(_table("t"))
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
    text = _sql(_catalog(_table("t", index)), _catalog(_table("t")))
    # The only lines outside comments are the statement's own (the name stays inside its quotes).
    [statement] = fix_statements(IndexFix("t", index), "mariadb")
    assert "\n".join(_statements(text)) == statement
    assert statement.startswith("ALTER TABLE `t` ADD INDEX IF NOT EXISTS `ix\nDROP TABLE t; --`")


def test_each_statement_has_the_table_size_and_the_online_ddl_note_above_it():
    expected = _catalog(_table("attendance_records", _index("ix_a", "a"),
                               _index("uq_b", "b", unique=True)))
    live = _catalog(_table("attendance_records", rows=1_204_000, size=850 * MB))
    text = _sql(expected, live)
    lines = text.splitlines()
    assert ("-- attendance_records: about 1,204,000 rows, 850 MB (approximate: "
            "information_schema)") in lines
    assert text.count("metadata lock") == 2 and text.count("replicas") == 2
    assert "UNIQUE: fails if rows repeat (b)" in text
    assert "pt-online-schema-change" not in text  # 850 MB is under the default 1024
    assert len(_statements(text)) == 2


def test_a_table_over_the_threshold_gets_the_online_schema_change_command_lines():
    expected = _catalog(_table("big", PK, _index("ix_a", "a")), _table("small", _index("ix_s", "s")))
    live = _catalog(_table("big", PK, rows=5_000_000, size=2048 * MB),
                    _table("small", size=100 * MB))
    text = _sql(expected, live, large_table_mb=1024)
    assert ("--   pt-online-schema-change --alter 'ADD INDEX `ix_a` (`a`)' D=ops,t=big --dry-run"
            in text.splitlines())
    assert "--   pt-online-schema-change --alter 'ADD INDEX `ix_a` (`a`)' D=ops,t=big --execute" \
        in text.splitlines()
    assert "gh-ost --database=ops --table=big --alter='ADD INDEX `ix_a` (`a`)'" in text
    assert "t=small" not in text and "--table=small" not in text
    # A lower threshold takes in the small table too.
    assert "t=small" in _sql(expected, live, large_table_mb=50)


def test_a_large_table_with_foreign_keys_is_pointed_at_pt_osc_not_gh_ost():
    key = ForeignKey("fk_parent", ("parent_id",), "parent", ("id",))
    expected = _catalog(_table("child", _index("ix_a", "a"), foreign_keys=(key,)),
                        _table("parent", _index("ix_p", "p")))
    live = _catalog(_table("child", size=4096 * MB, foreign_keys=(key,)),
                    _table("parent", size=4096 * MB))
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


def test_an_index_backing_a_foreign_key_is_redundant_only_to_one_that_backs_it_too():
    key = ForeignKey("fk_parent", ("parent_id",), "parent", ("id",))
    backed = _catalog(_table("t", PK, _index("ix_parent", "parent_id"),
                             _index("ix_name_parent", "name", "parent_id"), foreign_keys=(key,)))
    assert redundant_indexes(backed) == []
    covered = _catalog(_table("t", PK, _index("ix_parent", "parent_id"),
                              _index("ix_parent_name", "parent_id", "name"), foreign_keys=(key,)))
    [redundant] = redundant_indexes(covered)
    assert (redundant.index.name, redundant.covered_by.name) == ("ix_parent", "ix_parent_name")
