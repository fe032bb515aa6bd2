"""import_ipemis_locations: the diff per level, applying it in one transaction, partial sources,
the shrink guard, and bad sources that leave the four tables as they were."""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import astuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select, text

from ops_lib.errors import BadInput
from ops_lib.jobs.locations import describe
from ops_lib.jobs.locations.model import (
    LEVELS,
    PARENT_COLUMN,
    PARENT_LEVEL,
    TABLES,
    LocationSource,
    SourceRow,
)
from ops_lib.jobs.locations.plan import apply, plan
from ops_lib.result import JobResult
from ops_lib.schema import ops_job_runs
from tests.conftest import assert_unchanged, run_cli, snapshot, tool_env, unique_name
from tests.location_data import Place, hierarchy, write_source

TOOL = "import_ipemis_locations"

# A small hierarchy: (level, code, parent code, English name, Bengali name).
HIERARCHY = [
    ("divisions", "10", None, "Barishal", "বরিশাল"),
    ("divisions", "30", None, "Dhaka", "ঢাকা"),
    ("districts", "1004", "10", "Barguna", "বরগুনা"),
    ("districts", "3026", "30", "Dhaka", "ঢাকা"),
    ("districts", "3033", "30", "Gazipur", "গাজীপুর"),
    ("upazilas", "100409", "1004", "Amtali", "আমতলী"),
    ("upazilas", "302602", "3026", "Dhamrai", "ধামরাই"),
    ("upazilas", "302638", "3026", "Keraniganj", "কেরানীগঞ্জ"),
    ("upazilas", "303330", "3033", "Gazipur Sadar", "গাজীপুর সদর"),
]
UNIONS = [  # four unions under each upazila but the last, which has one
    ("unions", f"{upazila}{n:02d}", upazila, f"Union {upazila}-{n}", f"ইউনিয়ন {upazila}-{n}")
    for upazila in ("100409", "302602", "302638") for n in range(1, 5)
] + [("unions", "30333001", "303330", "Pubail", "পূবাইল")]
EVERYTHING = HIERARCHY + UNIONS


def location_source(rows, description="test rows") -> LocationSource:
    by_level: dict[str, list[SourceRow]] = {}
    for level, code, parent, name_en, name_bn in rows:
        where = f"{level}.csv row {len(by_level.get(level, [])) + 2}"
        by_level.setdefault(level, []).append(
            SourceRow(level, code, parent, name_en, name_bn, where))
    return LocationSource(description, by_level, format="csv-per-level")


def replaced(rows, code, **fields):
    """The rows with the one of `code` changed: parent=, name_en=, name_bn=."""
    out = []
    for level, row_code, parent, name_en, name_bn in rows:
        if row_code == code:
            parent = fields.get("parent", parent)
            name_en = fields.get("name_en", name_en)
            name_bn = fields.get("name_bn", name_bn)
        out.append((level, row_code, parent, name_en, name_bn))
    return out


def without(rows, *codes):
    return [row for row in rows if row[1] not in codes]


def import_rows(db, rows, max_shrink_percent=5, allow_shrink=False, now=None):
    with db.begin() as conn:
        planned = plan(conn, location_source(rows), max_shrink_percent,
                       allow_shrink=allow_shrink)
        return planned, apply(conn, planned, now=now)


def plan_rows(db, rows, max_shrink_percent=5, allow_shrink=False):
    with db.begin(write=False) as conn:
        return plan(conn, location_source(rows), max_shrink_percent, allow_shrink=allow_shrink)


def stored(db, level):
    """code -> (parent code, name_en, name_bn, is_active) of every row of a level."""
    table = TABLES[level]
    with db.engine.connect() as conn:
        rows = conn.execute(select(table)).mappings().all()
        parents = {}
        if level in PARENT_COLUMN:
            parent_table = TABLES[PARENT_LEVEL[level]]
            parents = dict(conn.execute(select(parent_table.c.id, parent_table.c.code)).all())
    return {r["code"]: (parents.get(r.get(PARENT_COLUMN.get(level))), r["name_en"],
                        r["name_bn"], bool(r["is_active"])) for r in rows}


def location_tables(db):
    snap = snapshot(db)
    return {level: snap[level] for level in LEVELS}


def test_a_first_import_inserts_every_level_with_its_parents_and_a_second_changes_nothing(db):
    planned, written = import_rows(db, EVERYTHING)
    assert {level: lp.counts()["new"] for level, lp in planned.levels.items()} == {
        "divisions": 2, "districts": 3, "upazilas": 4, "unions": 13}
    assert written["unions"] == {"inserted": 13, "updated": 0, "deactivated": 0}
    assert stored(db, "unions")["30260203"] == ("302602", "Union 302602-3",
                                                "ইউনিয়ন 302602-3", True)
    assert stored(db, "districts")["3033"] == ("30", "Gazipur", "গাজীপুর", True)
    before = location_tables(db)

    again = plan_rows(db, EVERYTHING)
    assert again.writes() == 0
    assert {level: lp.unchanged for level, lp in again.levels.items()} == {
        "divisions": 2, "districts": 3, "upazilas": 4, "unions": 13}
    result = JobResult("import_ipemis_locations", dry_run=True)
    describe(result, again, None, percent=5, percent_source="default")
    assert "nothing to change: the tables already match the source" in result.notes
    _, written = import_rows(db, EVERYTHING)
    assert written["unions"] == {"inserted": 0, "updated": 0, "deactivated": 0}
    assert location_tables(db) == before  # updated_at too: nothing was touched


def test_a_rename_a_new_union_a_moved_union_and_a_removed_union_show_in_the_diff_and_apply(db):
    first, second = dt.datetime(2026, 10, 1, 2, 0, 0), dt.datetime(2026, 11, 1, 2, 0, 0)
    import_rows(db, EVERYTHING, now=first)
    rows = replaced(EVERYTHING, "10040901", name_en="Arpangashia", name_bn="আড়পাঙ্গাশিয়া")
    rows = replaced(rows, "30260201", parent="302638")  # moved to Keraniganj
    rows = without(rows, "30263804")  # removed
    rows = rows + [("unions", "30263805", "302638", "Aganagar", "আগানগর")]  # new

    planned = plan_rows(db, rows, max_shrink_percent=10)
    unions = planned.levels["unions"]
    counts = unions.counts()
    assert (counts["new"], counts["changed"], counts["moved"], counts["missing"],
            counts["unchanged"]) == (1, 1, 1, 1, 10)
    assert [r.code for r in unions.new] == ["30263805"]
    [renamed] = unions.changed
    assert renamed.differences == {"name_en": ("Union 100409-1", "Arpangashia"),
                                   "name_bn": ("ইউনিয়ন 100409-1", "আড়পাঙ্গাশিয়া")}
    [moved] = unions.moved
    assert (moved.row.code, moved.differences) == ("30260201", {"parent": ("302602", "302638")})
    assert [r.code for r in unions.missing] == ["30263804"]
    result = JobResult("import_ipemis_locations", dry_run=True)
    describe(result, planned, None, percent=10, percent_source="test")
    sections = {s.title: s.rows for s in result.sections}
    assert sections["unions changed"][0] == {
        "code": "10040901", "field": "name_en", "old": "Union 100409-1", "new": "Arpangashia",
        "where": "unions.csv row 2"}
    assert sections["unions moved"][0]["from"] == "302602"
    assert sections["unions missing"][0]["code"] == "30263804"
    assert "--execute would insert 1, update 2 and deactivate 1 rows, in one transaction" \
        in result.notes

    _, written = import_rows(db, rows, max_shrink_percent=10, now=second)
    assert written["unions"] == {"inserted": 1, "updated": 2, "deactivated": 1}
    after = stored(db, "unions")
    assert after["10040901"] == ("100409", "Arpangashia", "আড়পাঙ্গাশিয়া", True)
    assert after["30260201"][0] == "302638"
    assert after["30263804"][3] is False  # inactive, not deleted
    assert after["30263805"] == ("302638", "Aganagar", "আগানগর", True)
    with db.engine.connect() as conn:
        now = dict(conn.execute(select(TABLES["unions"].c.code,
                                       TABLES["unions"].c.updated_at)).all())
    # Exactly the rows written carry the second import's time; every other keeps the first's.
    assert {code for code, stamp in now.items() if stamp == second} == {
        "10040901", "30260201", "30263804", "30263805"}
    assert {code for code, stamp in now.items() if stamp == first} == \
        {row[1] for row in UNIONS} - {"10040901", "30260201", "30263804"}

    back = plan_rows(db, rows + [UNIONS[-2]])  # the removed union comes back
    assert [u.row.code for u in back.levels["unions"].reactivated] == ["30263804"]
    assert back.levels["unions"].reactivated[0].differences == {}
    import_rows(db, rows + [UNIONS[-2]])
    assert stored(db, "unions")["30263804"][3] is True


def test_a_union_moved_to_an_upazila_new_in_the_same_source_gets_its_id(db):
    import_rows(db, EVERYTHING)
    rows = replaced(EVERYTHING, "30333001", parent="303334")
    rows = rows + [("upazilas", "303334", "3033", "Kaliakair", "কালিয়াকৈর")]
    planned, written = import_rows(db, rows, max_shrink_percent=100)
    assert [r.code for r in planned.levels["upazilas"].new] == ["303334"]
    assert written["unions"] == {"inserted": 0, "updated": 1, "deactivated": 0}
    assert stored(db, "unions")["30333001"][0] == "303334"


def test_one_divisions_subtree_never_deactivates_the_other_divisions_rows(db):
    import_rows(db, EVERYTHING)
    before = stored(db, "unions")
    # Dhaka alone, with one of its unions gone and one district renamed.
    dhaka = [row for row in EVERYTHING
             if row[1].startswith("30") and row[0] != "divisions" or row[1] == "30"]
    dhaka = replaced(without(dhaka, "30260204"), "3033", name_en="Gazipur District")
    planned = plan_rows(db, dhaka, max_shrink_percent=50)
    assert planned.levels["divisions"].missing == []
    assert [r.code for r in planned.levels["unions"].missing] == ["30260204"]
    assert planned.levels["unions"].active_in_scope == 9  # Dhaka's unions only
    import_rows(db, dhaka, max_shrink_percent=50)
    after = stored(db, "unions")
    assert {code: row for code, row in after.items() if code.startswith("10")} == \
        {code: row for code, row in before.items() if code.startswith("10")}
    assert all(row[3] for row in stored(db, "divisions").values())
    assert all(row[3] for code, row in stored(db, "districts").items())
    assert after["30260204"][3] is False


def test_a_unions_only_source_deactivates_only_under_the_upazilas_it_names(db):
    import_rows(db, EVERYTHING)
    amtali = [row for row in UNIONS if row[2] == "100409"][:3]  # one of four gone
    planned = plan_rows(db, amtali, max_shrink_percent=30)
    assert list(planned.levels) == ["unions"]
    assert [r.code for r in planned.levels["unions"].missing] == ["10040904"]
    assert planned.levels["unions"].active_in_scope == 4


def test_a_division_missing_from_a_full_source_takes_its_subtree_along_with_allow_shrink(db):
    import_rows(db, EVERYTHING)
    barishal_codes = [row[1] for row in EVERYTHING
                      if row[1].startswith("10") and row[0] != "divisions"] + ["10"]
    rest = without(EVERYTHING, *barishal_codes)
    # One division left is a subtree: nothing of Barishal would go.
    assert plan_rows(db, rest).writes() == 0
    three = rest + [("divisions", "40", None, "Khulna", "খুলনা")]
    with pytest.raises(BadInput) as refused:
        plan_rows(db, three)
    assert refused.value.problems[0].startswith(
        "divisions: 1 of 2 active rows (every division) would become inactive (50.0%")
    planned = plan_rows(db, three, allow_shrink=True)
    assert {level: [r.code for r in lp.missing] for level, lp in planned.levels.items()} == {
        "divisions": ["10"], "districts": ["1004"], "upazilas": ["100409"],
        "unions": ["10040901", "10040902", "10040903", "10040904"]}


def test_a_parent_in_neither_the_source_nor_the_database_is_one_line_per_row(db):
    import_rows(db, EVERYTHING)
    before = snapshot(db)
    rows = [("unions", "99999901", "999999", "Nowhere", None),
            ("unions", "99999902", "999999", "Nowhere Two", None),
            UNIONS[0]]
    with pytest.raises(BadInput) as refused:
        plan_rows(db, rows)
    assert refused.value.problems == [
        "unions.csv row 2: parent upazila '999999' is neither in the source nor in the database",
        "unions.csv row 3: parent upazila '999999' is neither in the source nor in the database"]
    assert snapshot(db) == before


def test_a_parent_only_in_the_database_and_inactive_there_is_a_warning(db):
    import_rows(db, EVERYTHING)
    import_rows(db, without(EVERYTHING, "303330", "30333001"), allow_shrink=True)
    assert stored(db, "upazilas")["303330"][3] is False
    planned = plan_rows(db, [UNIONS[-1]])  # Pubail alone: its upazila is inactive
    assert planned.warnings == [
        "unions.csv row 2: upazila '303330' is inactive in the database and not in the source"]
    assert [u.row.code for u in planned.levels["unions"].reactivated] == ["30333001"]


def test_a_truncated_unions_level_is_refused_and_passes_with_allow_shrink(db):
    import_rows(db, EVERYTHING)
    before = snapshot(db)
    truncated = HIERARCHY + UNIONS[:5]
    with pytest.raises(BadInput) as refused:
        import_rows(db, truncated)
    [line] = refused.value.problems
    assert line == ("unions: 8 of 13 active rows (under the upazilas in the source) would "
                    "become inactive (61.5%, more than location_max_shrink_percent=5%); is the "
                    "source complete? If the rows are really gone, run again with "
                    "--allow-shrink")
    assert snapshot(db) == before
    _, written = import_rows(db, truncated, allow_shrink=True)
    assert written["unions"]["deactivated"] == 8


def test_a_unions_file_cut_short_is_refused_by_the_guard_of_the_upazila_it_cuts(db):
    """Regression: with the upazilas not in the source, the scope is the upazilas the rows
    name, so a unions file cut after 2,000 of 4,720 rows put only the cut upazila's unions in
    scope ("11 of 2011"): under 5 %, and they were deactivated. Each upazila the rows name is
    now guarded on its own."""
    places = hierarchy()
    import_rows(db, [astuple(place) for place in places])
    before = snapshot(db)
    unions = [place for place in places if place.level == "unions"]
    cut = unions[:2000]
    upazila = cut[-1].parent_code
    under = [place for place in unions if place.parent_code == upazila]
    kept = [place for place in cut if place.parent_code == upazila]
    assert 0 < len(kept) < len(under)  # the file really is cut inside an upazila
    gone = len(under) - len(kept)
    with pytest.raises(BadInput) as refused:
        plan_rows(db, [astuple(place) for place in cut])
    assert refused.value.problems == [
        f"unions under upazila {upazila!r}: {gone} of {len(under)} active rows would become "
        f"inactive ({100 * gone / len(under):.1f}%, more than "
        f"location_max_shrink_percent=5%); the source does not hold the upazilas, so each "
        f"upazila its rows name is guarded on its own: is the source cut short? If the rows "
        f"are really gone, run again with --allow-shrink"]
    assert snapshot(db) == before
    _, written = import_rows(db, [astuple(place) for place in cut], allow_shrink=True)
    assert written["unions"]["deactivated"] == gone


def test_a_share_exactly_at_the_limit_passes_and_one_row_more_is_refused(db):
    twenty = HIERARCHY + [("unions", f"303330{n:02d}", "303330", f"Union {n}", None)
                          for n in range(1, 21)]
    import_rows(db, twenty)
    one_gone = without(twenty, "30333020")  # 1 of 20: exactly 5 %
    assert plan_rows(db, one_gone, max_shrink_percent=5).writes() == 1
    with pytest.raises(BadInput) as refused:  # 2 of 20: 10 %
        plan_rows(db, without(one_gone, "30333019"), max_shrink_percent=5)
    assert refused.value.problems[0].startswith(
        "unions: 2 of 20 active rows (under the upazilas in the source) would become inactive "
        "(10.0%, more than location_max_shrink_percent=5%)")


def test_a_parent_only_in_the_database_is_refused_when_the_source_holds_its_level(db):
    """The source's upazilas decide which upazilas a union may name, not the database."""
    import_rows(db, EVERYTHING)
    rows = [row for row in HIERARCHY if row[1] != "303330"] + [UNIONS[-1]]  # Pubail's upazila
    with pytest.raises(BadInput) as refused:
        plan_rows(db, rows, allow_shrink=True)
    assert refused.value.problems == [
        "unions.csv row 2: parent upazila '303330' is not in the source, which holds the "
        "upazilas"]


def test_codes_are_matched_without_case_as_the_database_key_does(db):
    import_rows(db, [("divisions", "DH", None, "Dhaka", "ঢাকা"),
                     ("divisions", "CT", None, "Chattogram", "চট্টগ্রাম")])
    # A district naming its division in another case finds it, as the unique key would.
    _, written = import_rows(db, [("districts", "fe", "ct", "Feni", "ফেনী")])
    assert written["districts"]["inserted"] == 1
    assert stored(db, "districts")["fe"][0] == "CT"
    assert plan_rows(db, [("districts", "fe", "CT", "Feni", "ফেনী")]).writes() == 0
    before = snapshot(db)
    # A row whose code differs from the database's only in case would be a second row to
    # Python and the same row to MariaDB: refused, nothing written.
    with pytest.raises(BadInput) as refused:
        plan_rows(db, [("divisions", "dh", None, "Dhaka", "ঢাকা"),
                       ("divisions", "CT", None, "Chattogram", "চট্টগ্রাম")])
    assert refused.value.problems == [
        "divisions.csv row 2: code 'dh' is 'DH' in the database: codes differing only in case "
        "are one code there; write it as 'DH'"]
    assert snapshot(db) == before


def test_a_source_with_codes_differing_only_in_case_is_exit_2_on_every_database(
        db, db_url, tmp_path):
    """Regression: on MariaDB 'DH' and 'dh' failed half-way with IntegrityError 1062 (exit 1);
    SQLite took both."""
    import_rows(db, EVERYTHING)
    before = snapshot(db)
    twice = run_tool(db_url, tmp_path, EVERYTHING + [("divisions", "dh", None, "Dhaka", "ঢাকা"),
                                                     ("divisions", "DH", None, "Dhaka", "ঢাকা")],
                     "--execute")
    assert twice.returncode == 2, twice.stderr
    assert twice.stderr.strip().splitlines()[-1] == (
        "error: divisions.csv row 5: code 'DH' is already at divisions.csv row 4 as 'dh' "
        "(divisions; codes differing only in case are one code)")
    assert_unchanged(before, snapshot(db))
    import_rows(db, [("districts", "Ab", "10", "Ab", None)], max_shrink_percent=100)
    before = snapshot(db)
    other_case = run_tool(db_url, tmp_path, [("districts", "aB", "10", "Ab", None)], "--execute")
    assert other_case.returncode == 2, other_case.stderr
    assert other_case.stderr.strip().splitlines()[-1] == (
        "error: districts.csv row 2: code 'aB' is 'Ab' in the database: codes differing only "
        "in case are one code there; write it as 'Ab'")
    assert_unchanged(before, snapshot(db))


def test_the_dry_run_shows_a_sample_of_the_unchanged_rows(db):
    import_rows(db, EVERYTHING)
    result = JobResult("import_ipemis_locations", dry_run=True)
    describe(result, plan_rows(db, EVERYTHING), None, percent=5, percent_source="default")
    sections = {s.title: s.rows for s in result.sections}
    assert sections["unions unchanged"] == [
        {"code": code, "name_en": name, "where": f"unions.csv row {n}"}
        for n, (_, code, _, name, _) in enumerate(UNIONS[:3], start=2)]
    assert sections["divisions unchanged"][0]["code"] == "10"


def test_bengali_names_read_back_byte_for_byte(db):
    names = ["চট্টগ্রাম", "কক্সবাজার", "ময়মনসিংহ", "রাজশাহী বিভাগ (পুরাতন)"]
    rows = [("divisions", f"{n}", None, f"Division {n}", name) for n, name in enumerate(names)]
    import_rows(db, rows, max_shrink_percent=100)
    read = {code: row[2] for code, row in stored(db, "divisions").items()}
    assert [read[str(n)].encode("utf-8") for n in range(len(names))] == \
        [name.encode("utf-8") for name in names]


# The tool, end to end: a real process on a source written to files.

def write_rows(folder, rows, fmt="csv"):
    """The rows (tuples) written as a source in one of the documented formats."""
    return write_source(folder, fmt, [Place(*row) for row in rows])


def run_tool(db_url, tmp_path, rows, *args, **env):
    source = write_rows(tmp_path / unique_name("source"), rows)
    return run_cli(TOOL, str(source), *args, env=tool_env(db_url, tmp_path, **env))


def test_the_dry_run_changes_nothing_and_execute_applies_what_it_showed(db, db_url, tmp_path):
    first = run_tool(db_url, tmp_path, EVERYTHING, "--execute")
    assert first.returncode == 0, first.stderr
    assert "note: inserted 22, updated 0 and deactivated 0 rows, in one transaction" \
        in first.stdout
    rows = replaced(EVERYTHING, "3033", name_en="Gazipur District")
    before = snapshot(db)
    dry = run_tool(db_url, tmp_path, rows)
    assert dry.returncode == 0, dry.stderr
    assert 'districts_changed: code=3033 field=name_en old=Gazipur new="Gazipur District"' \
        in dry.stdout
    assert "note: --execute would insert 0, update 1 and deactivate 0 rows" in dry.stdout
    assert "stopped: dry run: nothing changed" in dry.stdout
    assert_unchanged(before, snapshot(db))  # the run ledger too, but for the run's own row
    done = run_tool(db_url, tmp_path, rows, "--execute", "--json")
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)
    assert (output["counts"]["changed"], output["counts"]["updated"]) == (1, 1)
    assert stored(db, "districts")["3033"][1] == "Gazipur District"
    again = run_tool(db_url, tmp_path, rows, "--execute")
    assert again.returncode == 0, again.stderr
    assert "note: nothing to change: the tables already match the source" in again.stdout


def test_a_parent_missing_everywhere_is_exit_2_and_leaves_the_tables_as_they_were(
        db, db_url, tmp_path):
    import_rows(db, EVERYTHING)
    before = snapshot(db)
    done = run_tool(db_url, tmp_path, [("unions", "99999901", "999999", "Nowhere", "")],
                    "--execute")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: unions.csv row 2: parent upazila '999999' is neither in the source nor in the "
        "database")
    assert_unchanged(before, snapshot(db))


def test_a_truncated_unions_file_is_exit_2_and_passes_with_allow_shrink(db, db_url, tmp_path):
    import_rows(db, EVERYTHING)
    before = snapshot(db)
    truncated = HIERARCHY + UNIONS[:5]
    refused = run_tool(db_url, tmp_path, truncated, "--execute")
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: unions: 8 of 13 active rows") and "--allow-shrink" in line
    assert_unchanged(before, snapshot(db))
    allowed = run_tool(db_url, tmp_path, truncated, "--execute", "--allow-shrink")
    assert allowed.returncode == 0, allowed.stderr
    assert sum(not row[3] for row in stored(db, "unions").values()) == 8


def test_the_shrink_limit_comes_from_the_setting(db, db_url, tmp_path):
    import_rows(db, EVERYTHING)
    truncated = HIERARCHY + UNIONS[:5]
    done = run_tool(db_url, tmp_path, truncated, OPS_LOCATION_MAX_SHRINK_PERCENT="70")
    assert done.returncode == 0, done.stderr
    assert "at most 70% of its active rows in scope (location_max_shrink_percent, " \
        "OPS_LOCATION_MAX_SHRINK_PERCENT" in done.stdout


@pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)
def test_a_failure_half_way_through_the_import_leaves_nothing_written(db, db_url, tmp_path):
    """A trigger fails the last union's insert: the divisions, districts and upazilas the run
    wrote before it, in the same transaction, are rolled back with it."""
    import_rows(db, HIERARCHY[:2])
    before = snapshot(db)
    with db.engine.begin() as conn:
        conn.execute(text(
            "CREATE TRIGGER fail_pubail BEFORE INSERT ON unions FOR EACH ROW "
            "IF NEW.code = '30333001' THEN SIGNAL SQLSTATE '45000' "
            "SET MESSAGE_TEXT = 'test: no Pubail'; END IF"))
    try:
        done = run_tool(db_url, tmp_path, replaced(EVERYTHING, "10", name_en="Barisal"),
                        "--execute")
        assert done.returncode == 1, done.stderr
        assert "test: no Pubail" in done.stderr.strip().splitlines()[-1]
        assert_unchanged(before, snapshot(db))
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER fail_pubail"))


def test_a_bad_format_is_refused_before_connecting(tmp_path):
    never = tmp_path / "never" / "ops.db"
    done = run_cli(TOOL, str(tmp_path), "--format", "xml", "--execute",
                   env=tool_env(f"sqlite:///{never}", tmp_path))
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "Invalid value for '--format': 'xml' is not one of" in line
    assert not never.parent.exists()


def stored_everything(db):
    """Every stored row as the Place a source would give for it."""
    return [Place(level, code, parent, name_en, name_bn)
            for level in LEVELS
            for code, (parent, name_en, name_bn, _active) in stored(db, level).items()]


@pytest.mark.parametrize("fmt", ["csv", "csv-combined", "json", "json-object"])
def test_the_full_hierarchy_in_each_format_imports_and_a_second_import_changes_nothing(
        db, db_url, tmp_path, fmt):
    source = write_source(tmp_path / "source", fmt)
    env = tool_env(db_url, tmp_path)
    first = run_cli(TOOL, str(source), "--execute", "--json", env=env)
    assert first.returncode == 0, first.stderr
    places = hierarchy()
    assert json.loads(first.stdout)["counts"]["inserted"] == len(places) > 5000
    # Codes with their leading zeros, parents, and Bengali names equal byte for byte.
    read_back = stored_everything(db)
    assert len(read_back) == len(places) and set(read_back) == set(places)
    before = location_tables(db)
    second = run_cli(TOOL, str(source), "--execute", env=env)
    assert second.returncode == 0, second.stderr
    assert "note: nothing to change: the tables already match the source" in second.stdout
    assert location_tables(db) == before


def _duplicate_code(folder):
    return write_rows(folder, EVERYTHING + [UNIONS[0]])


def _bad_byte(folder):
    source = write_rows(folder, EVERYTHING)
    unions = source / "unions.csv"
    unions.write_bytes(unions.read_bytes().replace("পূবাইল".encode(), b"\xff\xfe bad"))
    return source


def _missing_column(folder):
    source = write_rows(folder, EVERYTHING)
    unions = source / "unions.csv"
    lines = unions.read_text(encoding="utf-8").splitlines()
    unions.write_text("\n".join(",".join(line.split(",")[:3]) for line in lines) + "\n",
                      encoding="utf-8")
    return source


@pytest.mark.parametrize("make, message", [
    (_duplicate_code, "error: unions.csv row 15: code '10040901' is already at unions.csv row 2"),
    (_bad_byte, "error: unions.csv: not UTF-8 at line 14, byte"),
    (_missing_column, "error: unions.csv: no Bengali name column"),
])
def test_a_bad_source_is_exit_2_with_its_message_and_leaves_the_tables_as_they_were(
        db, db_url, tmp_path, make, message):
    import_rows(db, replaced(EVERYTHING, "30", name_en="Dhaka Division"))
    before = snapshot(db)
    done = run_cli(TOOL, str(make(tmp_path / "source")), "--execute",
                   env=tool_env(db_url, tmp_path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(message), done.stderr
    assert_unchanged(before, snapshot(db))


def test_a_name_with_stray_spaces_is_stored_trimmed_and_reported(db, db_url, tmp_path):
    rows = replaced(EVERYTHING, "30333001", name_en="  Pubail \t Union ",
                    name_bn=" পূবাইল  ইউনিয়ন")
    done = run_tool(db_url, tmp_path, rows, "--execute")
    assert done.returncode == 0, done.stderr
    assert stored(db, "unions")["30333001"][1:3] == ("Pubail Union", "পূবাইল ইউনিয়ন")
    assert ("note: warning: unions.csv row 14: English name '  Pubail \\t Union ' trimmed to "
            "'Pubail Union'") in done.stdout
    assert "counts: " in done.stdout and " warnings=2" in done.stdout


def test_a_url_source_imports_and_its_password_and_token_stay_out_of_the_output_and_ledger(
        db, db_url, tmp_path):
    body = write_rows(tmp_path / "source", EVERYTHING, "csv-combined").read_bytes()

    class OneFile(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/csv; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), OneFile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = (f"http://ops:S3cretPw@127.0.0.1:{server.server_port}/locations.csv"
               f"?month=2026%2011&api_token=T0kenS3cret")
        done = run_cli(TOOL, url, "--execute", env=tool_env(db_url, tmp_path))
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert len(stored(db, "unions")) == 13
    with db.engine.connect() as conn:
        [args] = conn.execute(select(ops_job_runs.c.args)
                              .where(ops_job_runs.c.tool == TOOL)).scalars().all()
    # The secrets masked, the rest as given (not re-encoded).
    assert json.loads(args)["source"] == (f"http://ops:***@127.0.0.1:{server.server_port}"
                                          f"/locations.csv?month=2026%2011&api_token=***")
    for secret in ("S3cretPw", "T0kenS3cret"):
        assert secret not in done.stdout + done.stderr + args


def test_the_dry_run_says_which_header_each_field_was_read_from(db, db_url, tmp_path):
    import_rows(db, EVERYTHING)
    unions = tmp_path / "unions.csv"
    unions.write_text("id,upazilla_id,name,bn_name\n30333001,303330,Pubail,পূবাইল\n",
                      encoding="utf-8")
    done = run_cli(TOOL, str(unions), env=tool_env(db_url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert ("header_mapping: file=unions.csv code=id parent_code=upazilla_id name_en=name "
            "name_bn=bn_name") in done.stdout.splitlines()
    assert ('levels: level=unions in_source=1 new=0 changed=0 moved=0 reactivated=0 '
            'unchanged=1 missing=0 active_in_scope=1 scope="under the upazilas its rows name"'
            ) in done.stdout.splitlines()


def test_one_divisions_subtree_of_the_whole_country_changes_nothing_outside_it(
        db, db_url, tmp_path):
    places = hierarchy()
    import_rows(db, [astuple(place) for place in places])
    before = location_tables(db)
    dhaka = [p for p in places if p.level == "divisions" and p.code == "30"]
    for level in LEVELS[1:]:  # codes repeat across levels: district 30 is Feni, not Dhaka
        parents = {p.code for p in dhaka if p.level == PARENT_LEVEL[level]}
        dhaka += [p for p in places if p.level == level and p.parent_code in parents]
    gone = next(p for p in reversed(dhaka) if p.level == "unions")
    source = write_source(tmp_path / "dhaka", "json-object", [p for p in dhaka if p != gone])
    done = run_cli(TOOL, str(source), "--execute", env=tool_env(db_url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert "note: inserted 0, updated 0 and deactivated 1 rows, in one transaction" \
        in done.stdout
    after = location_tables(db)
    assert {level: after[level] for level in LEVELS[:3]} == \
        {level: before[level] for level in LEVELS[:3]}
    changed = set(after["unions"]) ^ set(before["unions"])
    assert {row[1] for row in changed} == {gone.code}  # the one union, and no other row
    assert stored(db, "unions")[gone.code][3] is False


def test_a_source_with_several_problems_gets_one_error_line_for_each(db, db_url, tmp_path):
    rows = replaced(EVERYTHING, UNIONS[1][1], name_en="  ") + [UNIONS[0]]  # blank name, twice
    before = snapshot(db)
    done = run_tool(db_url, tmp_path, rows, "--execute")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, done.stderr
    assert sum("is already at unions.csv row" in line for line in errors) == 1, errors
    assert sum("English name" in line for line in errors) == 1, errors
    assert_unchanged(before, snapshot(db))
