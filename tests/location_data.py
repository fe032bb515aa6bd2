"""A full, realistic Bangladesh hierarchy for the location import tests, in every source format.

8 real divisions and 64 real districts (BBS geocodes, Bengali names), then about 500 upazilas
and 4,500 unions with generated names in English and Bengali script. Codes follow BBS: a
district's two digits (several start with 0), then two digits per level below, so an upazila of
Barguna is "0409" and one of its unions "040917". Deterministic: every call gives the same rows.

`write_source(folder, fmt, rows)` writes rows in one documented format: "csv" (one file per
level in a folder), "csv-combined", "json" (a list) or "json-object" (one list per level).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ops_lib.jobs.locations.model import LEVELS

WRITE_FORMATS = ("csv", "csv-combined", "json", "json-object")


@dataclass(frozen=True)
class Place:
    level: str
    code: str
    parent_code: str | None
    name_en: str
    name_bn: str | None


# code, English, Bengali; then the division's districts (BBS district code, English, Bengali).
# "ময়মনসিংহ" is written with the precomposed য় (U+09DF) that Unicode normalisation would
# decompose: a reader that normalised would change its bytes.
DIVISIONS = [
    ("10", "Barishal", "বরিশাল", [
        ("04", "Barguna", "বরগুনা"), ("06", "Barishal", "বরিশাল"), ("09", "Bhola", "ভোলা"),
        ("42", "Jhalokati", "ঝালকাঠি"), ("78", "Patuakhali", "পটুয়াখালী"),
        ("79", "Pirojpur", "পিরোজপুর")]),
    ("20", "Chattogram", "চট্টগ্রাম", [
        ("03", "Bandarban", "বান্দরবান"), ("12", "Brahmanbaria", "ব্রাহ্মণবাড়িয়া"),
        ("13", "Chandpur", "চাঁদপুর"), ("15", "Chattogram", "চট্টগ্রাম"),
        ("19", "Cumilla", "কুমিল্লা"), ("22", "Cox's Bazar", "কক্সবাজার"), ("30", "Feni", "ফেনী"),
        ("46", "Khagrachhari", "খাগড়াছড়ি"), ("51", "Lakshmipur", "লক্ষ্মীপুর"),
        ("75", "Noakhali", "নোয়াখালী"), ("84", "Rangamati", "রাঙ্গামাটি")]),
    ("30", "Dhaka", "ঢাকা", [
        ("26", "Dhaka", "ঢাকা"), ("29", "Faridpur", "ফরিদপুর"), ("33", "Gazipur", "গাজীপুর"),
        ("35", "Gopalganj", "গোপালগঞ্জ"), ("48", "Kishoreganj", "কিশোরগঞ্জ"),
        ("54", "Madaripur", "মাদারীপুর"), ("56", "Manikganj", "মানিকগঞ্জ"),
        ("59", "Munshiganj", "মুন্সিগঞ্জ"), ("67", "Narayanganj", "নারায়ণগঞ্জ"),
        ("68", "Narsingdi", "নরসিংদী"), ("82", "Rajbari", "রাজবাড়ী"),
        ("86", "Shariatpur", "শরীয়তপুর"), ("93", "Tangail", "টাঙ্গাইল")]),
    ("40", "Khulna", "খুলনা", [
        ("01", "Bagerhat", "বাগেরহাট"), ("18", "Chuadanga", "চুয়াডাঙ্গা"), ("41", "Jashore", "যশোর"),
        ("44", "Jhenaidah", "ঝিনাইদহ"), ("47", "Khulna", "খুলনা"), ("50", "Kushtia", "কুষ্টিয়া"),
        ("55", "Magura", "মাগুরা"), ("57", "Meherpur", "মেহেরপুর"), ("65", "Narail", "নড়াইল"),
        ("87", "Satkhira", "সাতক্ষীরা")]),
    ("45", "Mymensingh", "ম\u09dfমনসিংহ", [
        ("39", "Jamalpur", "জামালপুর"), ("61", "Mymensingh", "ম\u09dfমনসিংহ"),
        ("72", "Netrokona", "নেত্রকোণা"), ("89", "Sherpur", "শেরপুর")]),
    ("50", "Rajshahi", "রাজশাহী", [
        ("10", "Bogura", "বগুড়া"), ("38", "Joypurhat", "জয়পুরহাট"), ("64", "Naogaon", "নওগাঁ"),
        ("69", "Natore", "নাটোর"), ("70", "Chapai Nawabganj", "চাঁপাইনবাবগঞ্জ"),
        ("76", "Pabna", "পাবনা"), ("81", "Rajshahi", "রাজশাহী"), ("88", "Sirajganj", "সিরাজগঞ্জ")]),
    ("55", "Rangpur", "রংপুর", [
        ("27", "Dinajpur", "দিনাজপুর"), ("32", "Gaibandha", "গাইবান্ধা"),
        ("49", "Kurigram", "কুড়িগ্রাম"), ("52", "Lalmonirhat", "লালমনিরহাট"),
        ("73", "Nilphamari", "নীলফামারী"), ("77", "Panchagarh", "পঞ্চগড়"),
        ("85", "Rangpur", "রংপুর"), ("94", "Thakurgaon", "ঠাকুরগাঁও")]),
    ("60", "Sylhet", "সিলেট", [
        ("36", "Habiganj", "হবিগঞ্জ"), ("58", "Moulvibazar", "মৌলভীবাজার"),
        ("90", "Sunamganj", "সুনামগঞ্জ"), ("91", "Sylhet", "সিলেট")]),
]

# Place names are built from these halves, English and Bengali side by side (15 x 12 names).
FIRST = [("Char", "চর"), ("Kali", "কালি"), ("Rup", "রূপ"), ("Shib", "শিব"), ("Gopal", "গোপাল"),
         ("Ram", "রাম"), ("Sona", "সোনা"), ("Nawab", "নবাব"), ("Debi", "দেবী"), ("Hari", "হরি"),
         ("Madhab", "মাধব"), ("Lakshmi", "লক্ষ্মী"), ("Kamal", "কমল"), ("Bhai", "ভাই"),
         ("Shanti", "শান্তি")]
SECOND = [("pur", "পুর"), ("ganj", "গঞ্জ"), ("hati", "হাটি"), ("nagar", "নগর"), ("bari", "বাড়ী"),
          ("kandi", "কান্দি"), ("dia", "দিয়া"), ("khali", "খালী"), ("danga", "ডাঙ্গা"),
          ("gram", "গ্রাম"), ("ghat", "ঘাট"), ("tola", "টোলা")]
BENGALI_DIGITS = str.maketrans("0123456789", "০১২৩৪৫৬৭৮৯")


def _place_name(number: int) -> tuple[str, str]:
    first_en, first_bn = FIRST[number % len(FIRST)]
    second_en, second_bn = SECOND[(number // len(FIRST)) % len(SECOND)]
    return first_en + second_en, first_bn + second_bn


@lru_cache(maxsize=1)
def _hierarchy() -> tuple[Place, ...]:
    draw = random.Random(13)
    places: list[Place] = []
    upazila_number = union_number = 0
    for division_code, division_en, division_bn, districts in DIVISIONS:
        places.append(Place("divisions", division_code, None, division_en, division_bn))
        for district_code, district_en, district_bn in districts:
            places.append(Place("districts", district_code, division_code, district_en,
                                district_bn))
            upazila_codes = sorted(draw.sample(range(2, 99), draw.randint(5, 11)))
            for index, upazila in enumerate(upazila_codes):
                upazila_code = f"{district_code}{upazila:02d}"
                if index == 0:
                    name_en, name_bn = f"{district_en} Sadar", f"{district_bn} সদর"
                else:
                    upazila_number += 7  # a stride coprime to 180: names spread evenly
                    name_en, name_bn = _place_name(upazila_number)
                places.append(Place("upazilas", upazila_code, district_code, name_en, name_bn))
                # Consecutive numbers give distinct names: no two unions of one upazila share one.
                for union in sorted(draw.sample(range(10, 99), draw.randint(5, 13))):
                    union_number += 1
                    name_en, name_bn = _place_name(union_number)
                    if union_number % 9 == 0:  # some unions carry a number, as real ones do
                        name_en += f" {union % 3 + 1}"
                        name_bn += f" {str(union % 3 + 1).translate(BENGALI_DIGITS)}"
                    places.append(Place("unions", f"{upazila_code}{union:02d}", upazila_code,
                                        name_en, name_bn))
    return tuple(places)


def hierarchy() -> list[Place]:
    """Every place of the generated country, parents before children (a new list each call)."""
    return list(_hierarchy())


def by_level(rows: list[Place]) -> dict[str, list[Place]]:
    return {level: [row for row in rows if row.level == level] for level in LEVELS
            if any(row.level == level for row in rows)}


def write_source(folder: Path, fmt: str, rows: list[Place] | None = None) -> Path:
    """Write `rows` (default: the whole hierarchy) in `fmt` under `folder`; the SOURCE path.

    "csv": a folder `levels/` with one `<level>.csv` per level the rows hold; "csv-combined":
    `locations.csv` with a level column; "json": `locations.json`, a list of objects with a
    level field; "json-object": `locations.json`, an object with one list per level.
    """
    rows = hierarchy() if rows is None else rows
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        target = folder / "levels"
        target.mkdir(exist_ok=True)
        for level, places in by_level(rows).items():
            header = ["code", "name_en", "name_bn"] if level == "divisions" else [
                "code", "parent_code", "name_en", "name_bn"]
            _write_csv(target / f"{level}.csv", header,
                       [_fields(place, header) for place in places])
        return target
    if fmt == "csv-combined":
        header = ["level", "code", "parent_code", "name_en", "name_bn"]
        target = folder / "locations.csv"
        _write_csv(target, header, [_fields(place, header) for place in rows])
        return target
    if fmt == "json":
        document: object = [_object(place, with_level=True) for place in rows]
    elif fmt == "json-object":
        document = {level: [_object(place) for place in places]
                    for level, places in by_level(rows).items()}
    else:
        raise ValueError(f"unknown format {fmt!r}: one of {WRITE_FORMATS}")
    target = folder / "locations.json"
    target.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
    return target


def _fields(place: Place, header: list[str]) -> list[str]:
    values = {"level": place.level, "code": place.code, "parent_code": place.parent_code or "",
              "name_en": place.name_en, "name_bn": place.name_bn or ""}
    return [values[name] for name in header]


def _object(place: Place, with_level: bool = False) -> dict:
    item = {"level": place.level} if with_level else {}
    item["code"] = place.code
    if place.parent_code is not None:
        item["parent_code"] = place.parent_code
    item.update(name_en=place.name_en, name_bn=place.name_bn)
    return item


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
