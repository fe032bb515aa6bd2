"""The administrative hierarchy as a source gives it, before it meets the database.

`source.read_source` turns a file, folder or URL into a `LocationSource` (or refuses it with one
line per problem); `plan` diffs it against the four tables and `apply` writes the diff. This
module is the contract between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...render import at_most
from ...schema import districts, divisions, unions, upazilas

# Parents before children: the order of validation, of the diff and of the writes.
LEVELS = ("divisions", "districts", "upazilas", "unions")
TABLES = {"divisions": divisions, "districts": districts, "upazilas": upazilas, "unions": unions}
PARENT_LEVEL = {"districts": "divisions", "upazilas": "districts", "unions": "upazilas"}
SINGULAR = {"divisions": "division", "districts": "district", "upazilas": "upazila",
            "unions": "union"}
PARENT_COLUMN = {"districts": "division_id", "upazilas": "district_id", "unions": "upazila_id"}
# What a value may hold, from the tables themselves: SQLite would store a longer one and MariaDB
# would fail half-way through the import.
CODE_MAX = divisions.c.code.type.length
NAME_MAX = divisions.c.name_en.type.length
# A bad source lists this many problems, then a count of the rest.
MAX_PROBLEMS_SHOWN = 20


@dataclass(frozen=True)
class SourceRow:
    level: str
    code: str  # a string: a leading zero is part of the code
    parent_code: str | None  # None for a division
    name_en: str  # trimmed, inner whitespace collapsed
    name_bn: str | None
    where: str  # for messages: "unions.csv row 12", "locations.json unions[11]"


@dataclass
class LocationSource:
    description: str  # the SOURCE as given, a URL's secrets masked (settings.mask_http_url)
    rows: dict[str, list[SourceRow]]  # by level; a level the source does not hold is absent
    header_mapping: list[tuple[str, str, str]] = field(default_factory=list)  # file, header, field
    warnings: list[str] = field(default_factory=list)  # names fixed, same name twice under a parent
    format: str = ""  # "csv-per-level", "csv-combined", "json"

    def levels(self) -> list[str]:
        return [level for level in LEVELS if level in self.rows]


def too_many(problems: list[str]) -> list[str]:
    """At most MAX_PROBLEMS_SHOWN problems, then one line counting the rest."""
    return at_most(problems, MAX_PROBLEMS_SHOWN, "problem")


def code_key(code: str) -> str:
    """What a code is compared by: its case folded, as MariaDB's case-insensitive unique key
    compares it (codes are ASCII letters, digits, '_' and '-', so nothing else differs)."""
    return code.lower()
