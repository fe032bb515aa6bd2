"""Reading a location source: every format, header spelling and encoding; every problem of a
bad source reported at once, one line each; URL sources against a real local HTTP server."""

from __future__ import annotations

import codecs
import json
import re
import shlex
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ops_lib.errors import EXIT_USAGE, BadInput
from ops_lib.jobs.locations.model import CODE_MAX, MAX_PROBLEMS_SHOWN, NAME_MAX
from ops_lib.jobs.locations.source import level_named, read_source
from tests.location_data import WRITE_FORMATS, Place, by_level, hierarchy, write_source

if TYPE_CHECKING:
    import ssl

REPO = Path(__file__).resolve().parent.parent


def problems_of(source, *args, **kwargs) -> list[str]:
    with pytest.raises(BadInput) as raised:
        read_source(str(source), *args, **kwargs)
    assert raised.value.exit_code == EXIT_USAGE
    return raised.value.problems


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


UNIONS_OF_SAVAR = (
    "code,parent_code,name_en,name_bn\n"
    "267211,2672,Aminbazar,আমিনবাজার\n"
    "267215,2672,Ashulia,আশুলিয়া\n"
    "267227,2672,Birulia,বিরুলিয়া\n"
)


# -- every format ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", WRITE_FORMATS)
def test_each_format_reads_the_whole_country_byte_for_byte(tmp_path, fmt):
    expected = by_level(hierarchy())
    source = read_source(str(write_source(tmp_path, fmt)))
    assert source.levels() == ["divisions", "districts", "upazilas", "unions"]
    assert {level: len(rows) for level, rows in source.rows.items()} == {
        level: len(rows) for level, rows in expected.items()}
    assert source.format == {"csv": "csv-per-level", "csv-combined": "csv-combined"}.get(
        fmt, "json")
    for level, places in expected.items():
        read = source.rows[level]
        assert [row.code for row in read] == [place.code for place in places]
        assert [row.parent_code for row in read] == [place.parent_code for place in places]
        assert [row.name_en for row in read] == [place.name_en for place in places]
        assert [row.name_bn.encode("utf-8") for row in read] == [
            place.name_bn.encode("utf-8") for place in places]
    # Leading zeros are part of a code, and the precomposed য় is not normalised away.
    barguna = [row for row in source.rows["districts"] if row.name_en == "Barguna"]
    assert [(row.code, row.parent_code) for row in barguna] == [("04", "10")]
    assert any(row.code.startswith("04") for row in source.rows["unions"])
    mymensingh = [row for row in source.rows["divisions"] if row.code == "45"]
    assert "\u09df" in mymensingh[0].name_bn
    assert source.warnings == []
    mapped = {(header, target) for _, header, target in source.header_mapping}
    assert {("code", "code"), ("name_en", "name_en"), ("name_bn", "name_bn"),
            ("parent_code", "parent_code")} <= mapped


def test_a_folder_with_some_levels_is_a_partial_source_with_the_parent_codes_as_given(tmp_path):
    unions = [place for place in hierarchy() if place.level == "unions"][:40]
    source = read_source(str(write_source(tmp_path, "csv", unions)))
    assert source.levels() == ["unions"]
    # The upazilas are not in the source: whether they exist is the planner's question.
    assert [row.parent_code for row in source.rows["unions"]] == [p.parent_code for p in unions]


def test_a_folder_of_json_level_files_reads(tmp_path):
    folder = tmp_path / "levels"
    for level, places in by_level(hierarchy()[:300]).items():
        items = [{"code": p.code, "parent_code": p.parent_code, "name": p.name_en,
                  "bn_name": p.name_bn} for p in places]
        write(folder / f"{level}.json", json.dumps(items, ensure_ascii=False))
    source = read_source(folder)
    assert source.format == "json"
    assert {level: len(rows) for level, rows in source.rows.items()} == {
        level: len(places) for level, places in by_level(hierarchy()[:300]).items()}
    assert source.rows["unions"][0].where == "unions.json [0]"
    assert problems_of(folder, "csv-combined") == [
        f"{folder}: a folder holds one file per level; --format csv-combined reads one file: "
        f"give the file"]


def test_a_level_twice_in_a_json_object_is_refused(tmp_path):
    union = '{"code": "267211", "parent_code": "2672", "name": "Aminbazar", "bn_name": null}'
    text = f'{{"unions": [{union}], "Unions": [{union}], "districts": []}}'
    assert problems_of(write(tmp_path / "bd.json", text)) == [
        "bd.json: keys 'unions' and 'Unions' are both unions: keep one",
        "bd.json districts is an empty list"]
    text = f'{{"unions": [{union}], "unions": [{union}]}}'
    assert problems_of(write(tmp_path / "bd.json", text)) == [
        "bd.json: key 'unions' twice in one object (one would be lost)"]


def test_rows_say_where_they_come_from(tmp_path):
    folder = write_source(tmp_path, "csv")
    source = read_source(str(folder))
    assert source.rows["unions"][0].where == "unions.csv row 2"
    assert source.description == str(folder)
    listed = read_source(str(write_source(tmp_path / "list", "json")))
    first_union = next(i for i, place in enumerate(hierarchy()) if place.level == "unions")
    assert listed.rows["unions"][0].where == f"locations.json [{first_union}]"
    keyed = read_source(str(write_source(tmp_path / "object", "json-object")))
    assert keyed.rows["unions"][11].where == "locations.json unions[11]"


# -- header spellings and level names ----------------------------------------------------------


@pytest.mark.parametrize("header, mapped", [
    ("id,upazilla_id,name,bn_name", ["code", "parent_code", "name_en", "name_bn"]),
    (" Code , Parent Code ,Name EN,Name-BN", ["code", "parent_code", "name_en", "name_bn"]),
    ("geo_code,upazila_code,english_name,bangla_name", ["code", "parent_code", "name_en",
                                                        "name_bn"]),
    ("BBS_CODE,parent_id,name_en,bengali_name", ["code", "parent_code", "name_en", "name_bn"]),
    ("bn_name,name,upazila_id,code", ["name_bn", "name_en", "parent_code", "code"]),
])
def test_common_header_spellings_map_to_the_fields(tmp_path, header, mapped):
    rows = [line.split(",") for line in UNIONS_OF_SAVAR.splitlines()[1:]]
    order = {"code": 0, "parent_code": 1, "name_en": 2, "name_bn": 3}
    body = "\n".join(",".join(row[order[f]] for f in mapped) for row in rows)
    source = read_source(str(write(tmp_path / "unions.csv", f"{header}\n{body}\n")))
    assert [(row.code, row.parent_code, row.name_en, row.name_bn)
            for row in source.rows["unions"]][0] == ("267211", "2672", "Aminbazar", "আমিনবাজার")
    assert [(h, f) for _, h, f in source.header_mapping] == list(zip(header.split(","), mapped))


def test_a_combined_csv_takes_level_names_singular_or_plural_in_any_case(tmp_path):
    text = ("Level,Code,Division_ID,District_ID,Name,BN_Name,url\n"
            "Division,30,,,Dhaka,ঢাকা,x\n"
            "DISTRICTS,26,30,,Dhaka,ঢাকা,x\n"
            "upazilla,2672,,26,Savar,সাভার,x\n"
            "upazilas,2638,,26,Keraniganj,কেরানীগঞ্জ,x\n")
    source = read_source(str(write(tmp_path / "bd.csv", text)))
    assert source.format == "csv-combined"
    assert {level: [row.code for row in rows] for level, rows in source.rows.items()} == {
        "divisions": ["30"], "districts": ["26"], "upazilas": ["2672", "2638"]}
    assert ("bd.csv", "Division_ID", "parent_code of districts") in source.header_mapping
    assert ("bd.csv", "District_ID", "parent_code of upazilas") in source.header_mapping
    assert source.warnings == ["bd.csv: columns ignored: 'url'"]


def test_json_number_codes_become_decimal_strings_with_one_warning(tmp_path):
    document = {"division": [{"id": 30, "name": "Dhaka", "bn_name": "ঢাকা"}],
                "District": [{"id": 26, "division_id": 30, "name": "Dhaka", "bn_name": "ঢাকা"},
                             {"id": 33, "division_id": "30", "name": "Gazipur",
                              "bn_name": "গাজীপুর"}]}
    path = write(tmp_path / "bd.json", json.dumps(document, ensure_ascii=False))
    source = read_source(str(path))
    assert [(row.code, row.parent_code) for row in source.rows["districts"]] == [
        ("26", "30"), ("33", "30")]
    assert source.warnings == [
        "bd.json division: 1 codes were JSON numbers, read as text (e.g. '30'); a leading "
        "zero lost before cannot come back",
        "bd.json District: 3 codes were JSON numbers, read as text (e.g. '26'); a leading "
        "zero lost before cannot come back"]


def test_a_file_of_unknown_kind_asks_for_the_format(tmp_path):
    path = write(tmp_path / "export.txt", UNIONS_OF_SAVAR)
    assert problems_of(path) == [
        "export.txt: cannot tell its format (not .csv or .json): pass --format csv, "
        "csv-combined, json"]
    folder = tmp_path / "mixed"
    write(folder / "unions.csv", UNIONS_OF_SAVAR)
    write(folder / "districts.json", "[]")
    assert problems_of(folder) == [
        f"{folder}: holds both .csv and .json level files: pass --format csv or --format json"]
    assert read_source(str(folder), "csv").levels() == ["unions"]


def test_an_unknown_format_is_refused(tmp_path):
    path = write(tmp_path / "unions.csv", UNIONS_OF_SAVAR)
    assert problems_of(path, "xml") == ["unknown format 'xml': use csv, csv-combined, json"]
    assert read_source(path, "csv-per-level").levels() == ["unions"]


def test_a_csv_named_after_no_level_and_without_a_level_column_is_refused(tmp_path):
    path = write(tmp_path / "export.csv", UNIONS_OF_SAVAR)
    assert problems_of(path) == [
        "export.csv: no level column, and its name does not say the level (divisions.csv, "
        "districts.csv, upazilas.csv, unions.csv): rename it or add a level column"]
    # --format csv-combined insists on the level column.
    assert problems_of(write(tmp_path / "unions.csv", UNIONS_OF_SAVAR), "csv-combined") == [
        "unions.csv: no level column (one of level); its headers: 'code', 'parent_code', "
        "'name_en', 'name_bn'"]


def test_a_semicolon_separated_export_reads(tmp_path):
    text = UNIONS_OF_SAVAR.replace(",", ";")
    source = read_source(str(write(tmp_path / "unions.csv", text)))
    assert [row.name_bn for row in source.rows["unions"]] == ["আমিনবাজার", "আশুলিয়া",
                                                                "বিরুলিয়া"]


# -- encoding ----------------------------------------------------------------------------------


def test_a_utf8_bom_is_fine(tmp_path):
    path = tmp_path / "unions.csv"
    path.write_bytes(codecs.BOM_UTF8 + UNIONS_OF_SAVAR.encode())
    source = read_source(str(path))
    assert source.header_mapping[0] == ("unions.csv", "code", "code")
    assert source.rows["unions"][0].code == "267211"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_utf16_file_is_rejected_by_name(tmp_path, encoding):
    path = tmp_path / "unions.csv"
    path.write_bytes(("\ufeff" if encoding == "utf-16-be" else "") .encode(encoding)
                     + UNIONS_OF_SAVAR.encode(encoding))
    assert problems_of(path) == ["unions.csv is UTF-16; save it as UTF-8"]


def test_an_invalid_byte_is_reported_with_its_line_and_byte(tmp_path):
    good = UNIONS_OF_SAVAR.encode()
    # A Windows-1252 é on line 3, and half of a Bengali letter (its first two bytes) on line 4.
    line3 = good.index(b"267215")
    data = good[:line3] + b"267215,2672,Ash\xe9lia,x\n" + "267227,2672,Birulia,".encode() \
        + "বি".encode()[:2] + b"\n"
    path = tmp_path / "unions.csv"
    path.write_bytes(data)
    assert problems_of(path) == [
        f"unions.csv: not UTF-8 at line 3, byte {line3 + 15} (0xE9)",
        f"unions.csv: not UTF-8 at line 4, byte {data.rindex(b'Birulia,') + 8} (0xE0)"]


def test_a_bad_byte_offset_counts_the_bom(tmp_path):
    path = tmp_path / "unions.json"
    path.write_bytes(codecs.BOM_UTF8 + b'[{"code": "1\xff"}]')
    assert problems_of(path) == ["unions.json: not UTF-8 at line 1, byte 15 (0xFF)"]


def test_a_lone_surrogate_escape_in_json_is_not_valid_text(tmp_path):
    path = write(tmp_path / "unions.json",
                 '[{"code": "267211", "parent_code": "2672", "name_en": "Aminbazar", '
                 '"name_bn": "\\ud800"}]')
    assert problems_of(path) == [
        "unions.json [0]: Bengali name holds a lone surrogate escape (\\udXXX): not valid "
        "Unicode text"]


# -- validation --------------------------------------------------------------------------------


def test_a_missing_column_is_one_problem_naming_the_file_and_its_headers(tmp_path):
    folder = tmp_path / "levels"
    write(folder / "districts.csv", "code,name,bn_name\n26,Dhaka,ঢাকা\n")
    write(folder / "unions.csv", "code,upazila_id,bn_name\n267211,2672,আমিনবাজার\n")
    assert problems_of(folder) == [
        "districts.csv: no parent code column of districts (one of parent_code, parent_id, "
        "parent, division_id, division_code); its headers: 'code', 'name', 'bn_name'",
        "unions.csv: no English name column (one of name_en, name, english_name, en_name, "
        "name_english); its headers: 'code', 'upazila_id', 'bn_name'"]


def test_a_json_key_missing_from_every_object_is_one_problem_naming_the_keys(tmp_path):
    path = write(tmp_path / "unions.json", '[{"id": "267211", "upazila_id": "2672", '
                                           '"bn_name": "আমিনবাজার"}]')
    assert problems_of(path) == [
        "unions.json: no English name key (one of name_en, name, english_name, en_name, "
        "name_english); its keys: 'id', 'upazila_id', 'bn_name'"]


def test_json_values_that_are_not_text_are_problems(tmp_path):
    items = [{"code": 267211.0, "parent_code": "2672", "name_en": "Aminbazar", "name_bn": None},
             {"code": "267215", "parent_code": True, "name_en": 7, "name_bn": ["আশুলিয়া"]},
             {"code": "267227", "parent_code": 2672, "name_en": "Birulia", "name_bn": None}]
    path = write(tmp_path / "unions.json", json.dumps(items))
    assert problems_of(path) == [
        "unions.json [0]: code is a JSON number (267211.0), not text",
        "unions.json [1]: parent code is a JSON boolean (True), not text",
        "unions.json [1]: English name is a JSON number (7), not text",
        "unions.json [1]: Bengali name is a JSON list (['আশুলিয়া']), not text"]


def test_two_columns_for_one_field_are_refused(tmp_path):
    text = "id,code,parent_code,name,bn_name\n1,267211,2672,Aminbazar,আমিনবাজার\n"
    assert problems_of(write(tmp_path / "unions.csv", text)) == [
        "unions.csv: columns 'id', 'code' are all the code: keep one"]


def test_a_parent_missing_from_the_source_level_above_is_reported_per_row(tmp_path):
    places = hierarchy()[:200]
    orphans = [Place("unions", "999901", "9999", "Nowhere", "কোথাও"),
               Place("districts", "98", "70", "Lost", "হারানো")]
    source = write_source(tmp_path, "csv-combined", places + orphans)
    assert problems_of(source) == [
        "locations.csv row 203: parent code '70' is not a division in the source",
        "locations.csv row 202: parent code '9999' is not an upazila in the source"]


def test_the_children_of_a_bad_row_are_not_reported_again_as_orphans(tmp_path):
    text = ("level,code,parent_code,name,bn_name\n"
            "district,26,30,,ঢাকা\n"
            "upazila,2672,26,Savar,সাভার\n"
            "upazila,2638,27,Keraniganj,কেরানীগঞ্জ\n")
    assert problems_of(write(tmp_path / "bd.csv", text)) == [
        "bd.csv row 2: English name is empty",
        "bd.csv row 4: parent code '27' is not a district in the source"]


def test_a_duplicate_code_is_reported_with_both_rows(tmp_path):
    text = UNIONS_OF_SAVAR + "267215,2672,Ashulia Bazar,আশুলিয়া বাজার\n"
    assert problems_of(write(tmp_path / "unions.csv", text)) == [
        "unions.csv row 5: code '267215' is already at unions.csv row 3 (unions)"]


@pytest.mark.parametrize("code", ["১০", "１０", "Straße", "ab c", "26.1", "é"])
def test_a_code_outside_ascii_letters_digits_underscore_and_hyphen_is_a_problem(tmp_path, code):
    """MariaDB's utf8mb4_unicode_ci key holds '১০' and '10', '１０' and '10', 'ß' and 'ss' for
    one code: such a code would pass here and fail half-way through the import there."""
    text = UNIONS_OF_SAVAR + f"{code},2672,Dhamsona,ধামসোনা\n267233,{code},Kaundia,কাউন্দিয়া\n"
    assert problems_of(write(tmp_path / "unions.csv", text)) == [
        f"unions.csv row 5: code {code!r} holds other characters than ASCII letters, digits, "
        f"'_' and '-' (the database would match it to another code)",
        f"unions.csv row 6: parent code {code!r} holds other characters than ASCII letters, "
        f"digits, '_' and '-' (the database would match it to another code)"]


def test_codes_differing_only_in_case_are_one_code(tmp_path):
    text = ("level,code,parent_code,name,bn_name\n"
            "division,DH,,Dhaka,ঢাকা\n"
            "division,dh,,Dhaka Two,ঢাকা\n"
            "district,Fe-1,dH,Feni,ফেনী\n")
    assert problems_of(write(tmp_path / "bd.csv", text)) == [
        "bd.csv row 3: code 'dh' is already at bd.csv row 2 as 'DH' (divisions; codes "
        "differing only in case are one code)"]
    # A parent named in another case is the same parent, as the database's key finds it.
    text = text.replace("division,dh,", "division,CT,")
    source = read_source(str(write(tmp_path / "ok.csv", text)))
    assert [(row.code, row.parent_code) for row in source.rows["districts"]] == [("Fe-1", "dH")]


def test_the_same_code_at_two_levels_is_no_duplicate(tmp_path):
    text = "level,code,parent_code,name,bn_name\ndivision,30,,Dhaka,ঢাকা\ndistrict,30,30,Feni,ফেনী\n"
    source = read_source(str(write(tmp_path / "bd.csv", text)))
    assert [row.code for row in source.rows["districts"]] == ["30"]


@pytest.mark.parametrize("name", ["", "   ", "\u00a0\t"])
def test_an_english_name_empty_after_trimming_is_a_problem(tmp_path, name):
    text = UNIONS_OF_SAVAR + f"267233,2672,{name},ধামসোনা\n"
    assert problems_of(write(tmp_path / "unions.csv", text)) == [
        "unions.csv row 5: English name is empty"]


def test_an_empty_bengali_name_is_allowed_and_becomes_none(tmp_path):
    source = read_source(str(write(tmp_path / "unions.csv",
                                   UNIONS_OF_SAVAR + "267233,2672,Dhamsona,\n")))
    assert source.rows["unions"][-1].name_bn is None


def test_too_long_codes_and_names_are_counted_in_characters(tmp_path):
    bengali = "ক" * NAME_MAX  # 150 characters, 450 bytes: it fits
    text = ("code,parent_code,name_en,name_bn\n"
            f"{'1' * CODE_MAX},2672,{'A' * NAME_MAX},{bengali}\n"
            f"{'2' * (CODE_MAX + 1)},2672,{'B' * (NAME_MAX + 1)},{bengali}ক\n")
    assert problems_of(write(tmp_path / "unions.csv", text)) == [
        f"unions.csv row 3: code '{'2' * (CODE_MAX + 1)}' is {CODE_MAX + 1} characters, more "
        f"than {CODE_MAX}",
        f"unions.csv row 3: English name is {NAME_MAX + 1} characters, more than {NAME_MAX}",
        f"unions.csv row 3: Bengali name is {NAME_MAX + 1} characters, more than {NAME_MAX}"]


def test_a_division_with_a_parent_and_a_district_without_one_are_problems(tmp_path):
    text = ("level,code,parent_code,name,bn_name\n"
            "division,30,BD,Dhaka,ঢাকা\n"
            "district,26,,Dhaka,ঢাকা\n")
    assert problems_of(write(tmp_path / "bd.csv", text)) == [
        "bd.csv row 2: parent code 'BD' given, but a division has no parent",
        "bd.csv row 3: parent code is empty (the division it belongs to)"]


def test_stray_spaces_are_trimmed_and_each_fix_is_a_warning(tmp_path):
    text = ("code,parent_code,name_en,name_bn\n"
            " 267211 ,2672,  Aminbazar ,আমিনবাজার\n"
            "267215,2672,Ashulia\u00a0\u00a0Bazar,আশুলিয়া\tবাজার \n"
            "267227,2672,Birulia,বিরুলিয়া\n")
    source = read_source(str(write(tmp_path / "unions.csv", text)))
    assert [(row.code, row.name_en, row.name_bn) for row in source.rows["unions"]] == [
        ("267211", "Aminbazar", "আমিনবাজার"), ("267215", "Ashulia Bazar", "আশুলিয়া বাজার"),
        ("267227", "Birulia", "বিরুলিয়া")]
    assert source.warnings == [
        "unions.csv row 2: English name '  Aminbazar ' trimmed to 'Aminbazar'",
        "unions.csv row 3: English name 'Ashulia\\xa0\\xa0Bazar' trimmed to 'Ashulia Bazar'",
        "unions.csv row 3: Bengali name 'আশুলিয়া\\tবাজার ' trimmed to 'আশুলিয়া বাজার'"]


def test_the_same_name_twice_under_one_parent_is_a_warning_not_an_error(tmp_path):
    text = ("code,parent_code,name_en,name_bn\n"
            "267211,2672,Char Kalia,চর কালিয়া\n"
            "267215,2672,char kalia,চর কালিয়া\n"
            "263811,2638,Char Kalia,চর কালিয়া\n")  # under another upazila: no warning
    source = read_source(str(write(tmp_path / "unions.csv", text)))
    assert len(source.rows["unions"]) == 3
    assert source.warnings == [
        "unions.csv row 2, unions.csv row 3: 2 unions named 'Char Kalia' under upazila '2672' "
        "(codes tell them apart)"]


def test_every_problem_is_found_in_one_pass_and_more_than_20_are_counted(tmp_path):
    lines = ["code,parent_code,name_en,name_bn"]
    lines += [f"2672{n:02d},2672,,নাম" for n in range(10, 40)]  # 30 empty English names
    lines += ["267211,2672,Again,আবার"]  # and a duplicate code
    problems = problems_of(write(tmp_path / "unions.csv", "\n".join(lines) + "\n"))
    assert len(problems) == MAX_PROBLEMS_SHOWN + 1
    assert problems[0] == "unions.csv row 2: English name is empty"
    assert problems[MAX_PROBLEMS_SHOWN - 1] == "unions.csv row 21: English name is empty"
    assert problems[-1] == "... and 10 more problems"


def test_problems_of_every_file_of_a_folder_are_reported_together(tmp_path):
    folder = tmp_path / "levels"
    write(folder / "districts.csv", "code,parent_code,name,bn_name\n26,30,Dhaka,ঢাকা\n26,30,X,x\n")
    write(folder / "unions.csv", "code,parent_code,name,bn_name\n1,2,A,a,extra\n")
    write(folder / "upazilas.csv", "code,parent_code,name,bn_name\n")
    assert problems_of(folder) == [
        "upazilas.csv has a header but no rows",
        "unions.csv row 2: 5 fields, the header has 4",
        "districts.csv row 3: code '26' is already at districts.csv row 2 (districts)"]


def test_a_json_source_of_the_wrong_shape_says_what_it_needs(tmp_path):
    assert problems_of(write(tmp_path / "bd.json", '{"data": [], "unions": {}}')) == [
        "bd.json: key 'data' is not a level (division, district, upazila or union)",
        "bd.json unions: a list is needed, not an object"]
    assert problems_of(write(tmp_path / "bad.json", '[{"level": "ward", "code": 1}, 7')) == [
        "bad.json is not valid JSON: Expecting ',' delimiter at line 1, column 33"]
    assert problems_of(write(tmp_path / "odd.json", '[{"level": "ward", "code": "1", '
                             '"name": "A", "bn_name": null}, 7]')) == [
        "odd.json [1]: an object is needed, not a number",
        "odd.json [0]: level 'ward' is not a level (division, district, upazila or union)"]


def test_two_files_for_one_level_in_a_folder_are_refused(tmp_path):
    folder = tmp_path / "levels"
    write(folder / "unions.csv", UNIONS_OF_SAVAR)
    write(folder / "Union.csv", UNIONS_OF_SAVAR)
    write(folder / "notes.csv", "whatever\n")
    assert problems_of(folder) == [f"{folder}: Union.csv and unions.csv are both unions: keep one"]


def test_a_file_that_is_not_named_after_a_level_in_a_folder_is_ignored_with_a_warning(tmp_path):
    folder = tmp_path / "levels"
    write(folder / "union.csv", UNIONS_OF_SAVAR)
    write(folder / "unoins.csv", UNIONS_OF_SAVAR)
    source = read_source(folder)  # a Path is fine too
    assert source.levels() == ["unions"]
    assert source.warnings == [f"{folder / 'unoins.csv'}: ignored (not named after a level)"]


def test_a_level_file_in_a_folder_holds_only_its_level(tmp_path):
    folder = tmp_path / "levels"
    write(folder / "upazilas.csv", "level,code,parent_code,name,bn_name\n"
                                   "upazila,2672,26,Savar,সাভার\n"
                                   "union,267211,2672,Aminbazar,আমিনবাজার\n")
    assert problems_of(folder) == ["upazilas.csv row 3: level 'union' in a table of upazilas"]


def test_a_malformed_csv_quote_stops_that_file_with_its_row(tmp_path):
    text = UNIONS_OF_SAVAR + '267231,2672,"Bhakurta"x,ভাকুর্তা\n'
    assert problems_of(write(tmp_path / "unions.csv", text)) == [
        "unions.csv row 5: not readable as CSV (',' expected after '\"'); the rest of the "
        "file is not read"]


def test_a_missing_source_is_one_line(tmp_path):
    assert problems_of(tmp_path / "nowhere.csv") == [f"{tmp_path / 'nowhere.csv'}: no such file "
                                                     f"or folder"]


# -- URL sources -------------------------------------------------------------------------------


class _Server:
    """A real HTTP server on 127.0.0.1; `routes` maps a path to what the handler does."""

    def __init__(self, tls: "ssl.SSLContext | None" = None):
        self.routes: dict[str, object] = {}
        self.scheme = "https" if tls else "http"
        self.release = threading.Event()  # a stalled answer waits for this
        self.seen_authorization: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.seen_authorization.append(self.headers.get("Authorization"))
                server.routes[self.path.split("?")[0]](self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, userinfo: str = "") -> str:
        return f"{self.scheme}://{userinfo}127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = _Server()
    yield server
    server.close()


EXACT = -1


@pytest.fixture
def https_server(monkeypatch, tmp_path):
    """The same server over TLS, with a certificate for 127.0.0.1 that the download trusts
    (SSL_CERT_FILE: the default context's certificate store)."""
    import datetime as dt
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = _Server(tls)
    yield server
    server.close()


def body(data: bytes, length: int | None = EXACT, content_type: str = "text/csv"):
    """An answer with `data`; Content-Length `length` (EXACT: the data's, None: no header)."""
    def answer(handler: BaseHTTPRequestHandler):
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        if length is not None:
            handler.send_header("Content-Length", str(len(data) if length == EXACT else length))
        handler.end_headers()
        handler.wfile.write(data)
    return answer


def chunked(data: bytes, content_type: str = "text/csv", whole: bool = True):
    """An answer with `data` in chunks of 100 bytes (Transfer-Encoding: chunked); not `whole`:
    the connection closes before the last, empty chunk."""
    def answer(handler: BaseHTTPRequestHandler):
        handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        try:
            for start in range(0, len(data), 100):
                piece = data[start:start + 100]
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if whole:
                handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # the reader stopped at its cap
            pass
    return answer


def test_a_url_source_reads_a_good_file(http_server, tmp_path):
    data = write_source(tmp_path, "json").read_bytes()
    http_server.routes["/geo/locations.json"] = body(data, len(data), "application/json")
    source = read_source(http_server.url("/geo/locations.json"))
    assert len(source.rows["unions"]) == len(by_level(hierarchy())["unions"])
    assert source.description == http_server.url("/geo/locations.json")
    first_union = next(i for i, place in enumerate(hierarchy()) if place.level == "unions")
    assert source.rows["unions"][0].where == f"locations.json [{first_union}]"


def test_a_chunked_url_named_after_a_level_reads(http_server):
    http_server.routes["/unions.csv"] = chunked(UNIONS_OF_SAVAR.encode())
    source = read_source(http_server.url("/unions.csv"))
    assert [row.code for row in source.rows["unions"]] == ["267211", "267215", "267227"]


def test_a_chunked_body_cut_before_its_last_chunk_is_a_short_read(http_server):
    data = UNIONS_OF_SAVAR.encode()
    http_server.routes["/unions.csv"] = chunked(data, whole=False)
    assert problems_of(http_server.url("/unions.csv")) == [
        f"{http_server.url('/unions.csv')}: short read: the connection closed after "
        f"{len(data)} bytes"]


def test_a_url_without_a_length_is_refused_since_a_cut_body_would_look_whole(http_server):
    """Without Content-Length or chunked encoding the body ends where the connection ends:
    a dropped connection would pass as a complete file."""
    http_server.routes["/unions.csv"] = body(UNIONS_OF_SAVAR.encode(), length=None)
    assert problems_of(http_server.url("/unions.csv")) == [
        f"{http_server.url('/unions.csv')}: the server gave no length (no Content-Length, not "
        f"chunked), so a cut download cannot be told from a whole one: nothing read"]


def test_a_url_password_is_sent_as_basic_auth_and_masked_in_every_message(http_server):
    http_server.routes["/unions.csv"] = lambda handler: handler.send_error(403)
    url = http_server.url("/unions.csv", userinfo="ipemis:s3cret@")
    problems = problems_of(url)
    masked = http_server.url("/unions.csv", userinfo="ipemis:***@")
    assert problems == [f"{masked}: HTTP 403 Forbidden: nothing read"]
    assert http_server.seen_authorization == ["Basic aXBlbWlzOnMzY3JldA=="]  # ipemis:s3cret


@pytest.mark.parametrize("url, shown", [
    ("https://ops:pw@data.example.org/bd/unions.csv?v=2&token=T0k&X-Amz-Signature=ab%2Fcd#top",
     "https://ops:***@data.example.org/bd/unions.csv?v=2&token=***&X-Amz-Signature=***#top"),
    ("http://h.example/a%20b/unions.csv?api_key=1&sig=2&Auth=3&client_secret=4&passwd=5&q=a%20b",
     "http://h.example/a%20b/unions.csv?api_key=***&sig=***&Auth=***&client_secret=***&passwd=***"
     "&q=a%20b"),
    ("http://user@[::1]:8080/x//y?access%5Ftoken=z&empty=&flag",
     "http://user@[::1]:8080/x//y?access%5Ftoken=***&empty=&flag"),
    ("http://h.example/unions.csv?#", "http://h.example/unions.csv?#"),
])
def test_a_web_url_is_shown_with_its_secrets_masked_and_the_rest_as_given(url, shown):
    from ops_lib.settings import mask_http_url

    assert mask_http_url(url) == shown


def test_a_token_in_the_query_string_stays_out_of_every_message(http_server):
    http_server.routes["/unions.csv"] = lambda handler: handler.send_error(404)
    url = http_server.url("/unions.csv?token=s3cret&v=2")
    assert problems_of(url) == [
        f"{http_server.url('/unions.csv?token=***&v=2')}: HTTP 404 Not Found: nothing read"]


def test_a_redirect_does_not_carry_the_password_on(http_server):
    def moved(handler):
        handler.send_response(302)
        handler.send_header("Location", http_server.url("/mirror/unions.csv"))
        handler.end_headers()

    http_server.routes["/unions.csv"] = moved
    http_server.routes["/mirror/unions.csv"] = body(UNIONS_OF_SAVAR.encode())
    source = read_source(http_server.url("/unions.csv", userinfo="ipemis:s3cret@"))
    assert len(source.rows["unions"]) == 3
    assert http_server.seen_authorization == ["Basic aXBlbWlzOnMzY3JldA==", None]


def test_a_404_is_one_line(http_server):
    http_server.routes["/unions.csv"] = lambda handler: handler.send_error(404)
    assert problems_of(http_server.url("/unions.csv?v=2")) == [
        f"{http_server.url('/unions.csv?v=2')}: HTTP 404 Not Found: nothing read"]


def test_a_server_that_stalls_before_answering_is_a_timeout(http_server):
    http_server.routes["/unions.csv"] = lambda handler: http_server.release.wait(60)
    assert problems_of(http_server.url("/unions.csv"), timeout=0.2) == [
        f"{http_server.url('/unions.csv')}: not complete within the timeout of 0.2 s (after 0 "
        f"bytes): nothing read"]


def test_a_server_that_stalls_half_way_through_the_body_is_a_timeout(http_server):
    data = UNIONS_OF_SAVAR.encode()

    def half_then_stall(handler):
        body(data[:40], len(data))(handler)
        handler.wfile.flush()
        http_server.release.wait(60)

    http_server.routes["/unions.csv"] = half_then_stall
    problems = problems_of(http_server.url("/unions.csv"), timeout=0.2)
    # Almost always after the 40 bytes; a server thread scheduled late makes it 0 bytes (the
    # wait for the answer): either way nothing half-read comes back.
    assert len(problems) == 1 and re.fullmatch(
        re.escape(f"{http_server.url('/unions.csv')}: not complete within the timeout of "
                  f"0.2 s (after ")
        + r"(40|0) bytes\): nothing read", problems[0]), problems


def test_an_https_source_reads_and_its_deadline_holds_too(https_server):
    https_server.routes["/unions.csv"] = body(UNIONS_OF_SAVAR.encode())
    source = read_source(https_server.url("/unions.csv"))
    assert [row.code for row in source.rows["unions"]] == ["267211", "267215", "267227"]
    https_server.routes["/slow/unions.csv"] = lambda handler: https_server.release.wait(60)
    assert problems_of(https_server.url("/slow/unions.csv"), timeout=0.2) == [
        f"{https_server.url('/slow/unions.csv')}: not complete within the timeout of 0.2 s "
        f"(after 0 bytes): nothing read"]


def test_a_server_trickling_bytes_forever_is_refused_at_the_deadline(http_server):
    """Regression: the timeout was per socket wait, so a byte every 0.05 s never tripped a
    0.5 s timeout. The server here sends a byte every 0.05 s for 40 s (far more than the
    deadline, whatever the machine's speed) of a body it announces bigger still: only a
    deadline over the whole download stops the read before the server does."""
    tick = 0.05
    sent = []

    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/csv")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.write(b"code,parent_code,name_en,name_bn\n")
        for _ in range(800):  # 40 s of ticks; the test's end stops it sooner
            if http_server.release.wait(tick):
                return
            handler.wfile.write(b"1")
            handler.wfile.flush()
            sent.append(1)

    http_server.routes["/unions.csv"] = trickle
    timeout = 0.5
    started = time.monotonic()
    problems = problems_of(http_server.url("/unions.csv"), timeout=timeout)
    took = time.monotonic() - started
    assert len(problems) == 1 and re.fullmatch(
        re.escape(f"{http_server.url('/unions.csv')}: not complete within the timeout of 0.5 s "
                  f"(after ") + r"\d+ bytes\): nothing read", problems[0]), problems
    # Refused by the deadline, not by the server stopping: the server had 40 s of ticks left.
    assert timeout <= took < 800 * tick, took


def test_a_body_larger_than_the_cap_is_refused(http_server):
    data = UNIONS_OF_SAVAR.encode() * 20
    http_server.routes["/unions.csv"] = chunked(data)  # no Content-Length: the cap counts
    assert problems_of(http_server.url("/unions.csv"), max_bytes=1000) == [
        f"{http_server.url('/unions.csv')}: more than the size cap of 1,000 bytes"]
    http_server.routes["/big.csv"] = body(data, len(data))
    assert problems_of(http_server.url("/big.csv"), max_bytes=1000) == [
        f"{http_server.url('/big.csv')}: {len(data):,} bytes announced, more than the size cap "
        f"of 1,000"]


def test_a_content_length_larger_than_the_body_is_a_short_read(http_server):
    data = UNIONS_OF_SAVAR.encode()
    http_server.routes["/unions.csv"] = body(data, len(data) + 500)
    assert problems_of(http_server.url("/unions.csv")) == [
        f"{http_server.url('/unions.csv')}: short read: the connection closed after "
        f"{len(data)} of the {len(data) + 500:,} bytes announced"]


def test_an_html_page_sent_instead_of_the_file_is_refused(http_server):
    page = b"<!DOCTYPE html><html><body>Please log in</body></html>"
    http_server.routes["/unions.csv"] = body(page, len(page), "text/html; charset=utf-8")
    assert problems_of(http_server.url("/unions.csv")) == [
        f"{http_server.url('/unions.csv')}: the server sent an HTML page (a login or error "
        f"page?), not a location file: nothing read"]


def test_a_refused_connection_is_one_line(http_server):
    url = http_server.url("/unions.csv")
    http_server.close()  # nobody listens on the port any more
    problems = problems_of(url)
    assert len(problems) == 1 and problems[0].startswith(f"{url}: cannot download: ")


def test_only_http_urls_are_read():
    assert problems_of("ftp://user:pw@example.org/unions.csv") == [
        "ftp://user:***@example.org/unions.csv: only http and https URLs can be read"]


# -- the documented examples -------------------------------------------------------------------


def documented_examples() -> list[str]:
    text = (REPO / "docs" / "locations-source.md").read_text(encoding="utf-8")
    return sorted(set(re.findall(r"\]\((examples/locations/[^)]+)\)", text)))


def test_the_documentation_links_examples_of_every_format():
    examples = documented_examples()
    assert len(examples) >= 5, examples
    for link in examples:
        assert (REPO / "docs" / link).exists(), link


def manual_file_sources() -> list[tuple[str, str | None]]:
    """(file, --format) of each example in the tool's manual whose SOURCE is one file."""
    text = (REPO / "docs" / "tools" / "import_ipemis_locations.md").read_text(encoding="utf-8")
    found = []
    for line in re.findall(r"^python tools/import_ipemis_locations\.py .*$", text, re.M):
        words = shlex.split(line, comments=True)[2:]
        source = next(word for word in words if not word.startswith("-"))
        fmt = words[words.index("--format") + 1] if "--format" in words else None
        if source.endswith((".csv", ".json")) and "://" not in source:
            found.append((source, fmt))
    return found


def test_the_manual_has_examples_of_a_single_file_source():
    assert manual_file_sources()


@pytest.mark.parametrize("source, fmt", manual_file_sources())
def test_each_single_file_example_of_the_manual_reads_when_named_as_shown(tmp_path, source, fmt):
    """Regression: the manual showed `unions-2026-11.csv --format csv`, which a file of that
    name fails ("its name does not say the level")."""
    name = Path(source).name
    kind = {"csv": "partial/unions.csv", "csv-combined": "locations-combined.csv",
            "json": "locations.json"}[fmt or ("json" if name.endswith(".json") else
                                              "csv" if level_named(Path(name).stem) else
                                              "csv-combined")]
    example = (REPO / "docs" / "examples" / "locations" / kind).read_bytes()
    assert read_source(str(write_bytes(tmp_path / name, example)), fmt).levels()


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("link", documented_examples())
def test_each_documented_example_reads(link):
    source = read_source(str(REPO / "docs" / link))
    assert source.levels(), link
    for rows in source.rows.values():
        assert all(row.name_bn for row in rows), link  # every example shows the Bengali name
    if link.rstrip("/").endswith("per-level"):
        assert source.levels() == ["divisions", "districts", "upazilas", "unions"]
