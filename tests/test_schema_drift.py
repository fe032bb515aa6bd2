"""check_schema_drift.py: the comparison (pure) and the tool on SQLite and MariaDB."""

from __future__ import annotations

import pytest

from ops_lib.jobs.schema_drift import CHANGED, EXTRA, MISSING, Drift, compare, headline
from ops_lib.schema_catalog import Catalog, Column, ForeignKey, Index, IndexPart, Table


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


def test_a_column_collation_change_shows_the_collation():
    live = _students()
    live.columns["name"] = Column("name", "varchar(200)", False, charset="utf8mb4",
                                  collation="utf8mb4_bin")
    assert _lines(compare(_catalog(_students()), _catalog(live))) == [
        "column students.name: schema.sql has varchar(200) NOT NULL; "
        "live database has varchar(200) NOT NULL COLLATE utf8mb4_bin"]


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


def test_the_order_of_indexes_and_keys_is_not_drift_but_the_order_of_columns_is():
    live = _students()
    live.indexes = dict(reversed(live.indexes.items()))
    assert compare(_catalog(_students()), _catalog(live)) == []
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


def test_a_dropped_sqlite_foreign_key_is_one_line_though_the_next_is_renumbered():
    # SQLite keeps no key names: the catalog numbers them, so dropping the first renumbers the
    # second; the definition, not the number, says which one is gone.
    def keyed(*keys: ForeignKey) -> Table:
        return Table("pairs", columns={}, foreign_keys={key.name: key for key in keys})

    first = ForeignKey("fk_pairs_0", ("a_id",), "a", ("id",), generated_name=True)
    second = ForeignKey("fk_pairs_1", ("b_id",), "b", ("id",), generated_name=True)
    renumbered = ForeignKey("fk_pairs_0", ("b_id",), "b", ("id",), generated_name=True)
    assert [(d.kind, d.object) for d in compare(_catalog(keyed(first, second)),
                                                 _catalog(keyed(renumbered)))] == \
        [(MISSING, "foreign key pairs.fk_pairs_0")]
