"""The diff of a location source against the four tables (`plan`, read-only) and its writing
(`apply`, one transaction).

Rules (docs/tools/import_ipemis_locations.md):
- Rows are keyed by code per level, never by name, compared without case (`code_key`) as the
  database's unique key compares them; a source code in another case than the database's is a
  problem. A row of the source is new (no row has its
  code), changed (English or Bengali name differs), moved (its parent differs), reactivated
  (its row is inactive) or unchanged; a row can be changed, moved and reactivated at once.
- Missing: an active row the source lacks becomes inactive only when the source speaks for its
  parent ("in scope"). For districts, upazilas and unions the parents in scope are those of the
  source's level above when the source holds that level, else the parents its rows name, plus
  the rows of the level above that this plan deactivates (a division that goes takes its
  subtree along). Divisions have no parent: a source that lists two or more divisions is read as
  the country's full list; a source with one division is that division's subtree and
  deactivates no division. A level the source does not hold is not touched.
- A parent is looked up in the source's level above when the source holds it (only there),
  else in the database.
- Shrink guard: a level that would deactivate more than `max_shrink_percent` of its active rows
  in scope is refused (BadInput) unless `allow_shrink`. When the source lacks the level above,
  its scope is the parents its rows name, which a cut file shrinks along with itself: then each
  named parent that would lose more than that share of its active children is refused too.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import Connection, insert, null, select, update

from ...errors import BadInput
from ...sqlutil import in_keys, update_each
from ...timeutil import utcnow
from .model import LEVELS, PARENT_COLUMN, PARENT_LEVEL, SINGULAR, TABLES, LocationSource, \
    SourceRow, code_key, too_many

NAME_FIELDS = ("name_en", "name_bn")
UNCHANGED_SAMPLE = 3  # unchanged rows are the bulk of a refresh: a few show what was compared


class StoredRow(NamedTuple):
    id: int
    code: str
    parent_id: int | None
    name_en: str
    name_bn: str | None
    is_active: bool


@dataclass(frozen=True)
class RowUpdate:
    """An existing row the source changes: its new values and what differs (old, new)."""

    row: SourceRow
    id: int
    differences: dict[str, tuple[str | None, str | None]]  # name_en, name_bn, parent (codes)
    reactivated: bool

    @property
    def renamed(self) -> bool:
        return any(name in self.differences for name in NAME_FIELDS)

    @property
    def moved(self) -> bool:
        return "parent" in self.differences


@dataclass
class LevelPlan:
    level: str
    in_source: int
    new: list[SourceRow] = field(default_factory=list)
    updates: list[RowUpdate] = field(default_factory=list)
    unchanged: int = 0
    missing: list[StoredRow] = field(default_factory=list)
    unchanged_sample: list[SourceRow] = field(default_factory=list)  # the first few
    active_in_scope: int = 0
    # A level whose parent level the source lacks: parent code -> (missing, active) children.
    per_parent: dict[str, tuple[int, int]] = field(default_factory=dict)
    scope: str = ""  # which rows a missing one is looked for among, in words

    @property
    def changed(self) -> list[RowUpdate]:
        return [u for u in self.updates if u.renamed]

    @property
    def moved(self) -> list[RowUpdate]:
        return [u for u in self.updates if u.moved]

    @property
    def reactivated(self) -> list[RowUpdate]:
        return [u for u in self.updates if u.reactivated]

    def counts(self) -> dict[str, int]:
        return {"in_source": self.in_source, "new": len(self.new), "changed": len(self.changed),
                "moved": len(self.moved), "reactivated": len(self.reactivated),
                "unchanged": self.unchanged, "missing": len(self.missing),
                "active_in_scope": self.active_in_scope}

    def writes(self) -> int:
        return len(self.new) + len(self.updates) + len(self.missing)


@dataclass
class LocationPlan:
    source: LocationSource
    levels: dict[str, LevelPlan]  # the levels the source holds, parents first
    stored: dict[str, dict[str, StoredRow]]  # by level, by code_key(code): the rows read
    warnings: list[str] = field(default_factory=list)

    def writes(self) -> int:
        return sum(level.writes() for level in self.levels.values())


def _read_level(conn: Connection, level: str) -> dict[str, StoredRow]:
    table = TABLES[level]
    parent = table.c[PARENT_COLUMN[level]] if level in PARENT_COLUMN else null()
    query = select(table.c.id, table.c.code, parent, table.c.name_en, table.c.name_bn,
                   table.c.is_active)
    # Keyed as the database's unique key compares codes: 'DH' and 'dh' are one code.
    return {code_key(r.code): StoredRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]))
            for r in conn.execute(query)}


def plan(conn: Connection, source: LocationSource, max_shrink_percent: float, *,
         allow_shrink: bool = False) -> LocationPlan:
    """The diff of `source` against the tables, per level it holds; reads one query per level.

    Raises BadInput (nothing written) for a parent found neither in the source nor in the
    database, and for a level that would shrink more than `max_shrink_percent` without
    `allow_shrink`.
    """
    held = source.levels()
    needed = sorted({*held, *(PARENT_LEVEL[lv] for lv in held if lv in PARENT_LEVEL)},
                    key=LEVELS.index)
    stored = {level: _read_level(conn, level) for level in needed}
    code_of = {level: {row.id: code for code, row in rows.items()}
               for level, rows in stored.items()}
    result = LocationPlan(source, {}, stored)
    problems: list[str] = []
    shrinking: list[str] = []
    limit = f"more than location_max_shrink_percent={max_shrink_percent:g}%"
    for level in held:
        level_plan = _plan_level(level, source, stored, code_of, result, problems)
        result.levels[level] = level_plan
        if allow_shrink:
            continue
        share = 100 * len(level_plan.missing) / max(level_plan.active_in_scope, 1)
        if share > max_shrink_percent:
            shrinking.append(
                f"{level}: {len(level_plan.missing)} of {level_plan.active_in_scope} active "
                f"rows ({level_plan.scope}) would become inactive ({share:.1f}%, {limit}); is "
                f"the source complete? If the rows are really gone, run again with "
                f"--allow-shrink")
        for parent_code, (going, active) in level_plan.per_parent.items():
            share = 100 * going / active
            if share > max_shrink_percent:
                kind = SINGULAR[PARENT_LEVEL[level]]
                shrinking.append(
                    f"{level} under {kind} {parent_code!r}: {going} of {active} active rows "
                    f"would become inactive ({share:.1f}%, {limit}); the source does not hold "
                    f"the {PARENT_LEVEL[level]}, so each {kind} its rows name is guarded on "
                    f"its own: is the source cut short? If the rows are really gone, run "
                    f"again with --allow-shrink")
    if problems:
        raise BadInput(*too_many(problems))
    if shrinking:
        raise BadInput(*too_many(shrinking))
    return result


def _plan_level(level: str, source: LocationSource, stored: dict[str, dict[str, StoredRow]],
                code_of: dict[str, dict[int, str]], result: LocationPlan,
                problems: list[str]) -> LevelPlan:
    rows = source.rows[level]
    existing = stored[level]
    parent_level = PARENT_LEVEL.get(level)
    in_source_parents = ({code_key(row.code) for row in source.rows[parent_level]}
                         if parent_level in source.rows else None)
    level_plan = LevelPlan(level, len(rows))
    for row in rows:
        if parent_level and not _parent_found(row, parent_level, in_source_parents, stored,
                                              result, problems):
            continue
        old = existing.get(code_key(row.code))
        if old is None:
            level_plan.new.append(row)
            continue
        if old.code != row.code:
            problems.append(f"{row.where}: code {row.code!r} is {old.code!r} in the database: "
                            f"codes differing only in case are one code there; write it as "
                            f"{old.code!r}")
            continue
        differences = {}
        if old.name_en != row.name_en:
            differences["name_en"] = (old.name_en, row.name_en)
        if old.name_bn != row.name_bn:
            differences["name_bn"] = (old.name_bn, row.name_bn)
        if parent_level:
            old_parent = code_of[parent_level].get(old.parent_id)
            if old_parent is None or code_key(old_parent) != code_key(row.parent_code):
                differences["parent"] = (old_parent, row.parent_code)
        if differences or not old.is_active:
            level_plan.updates.append(RowUpdate(row, old.id, differences, not old.is_active))
        else:
            level_plan.unchanged += 1
            if len(level_plan.unchanged_sample) < UNCHANGED_SAMPLE:
                level_plan.unchanged_sample.append(row)
    _find_missing(level_plan, source, stored, result)
    return level_plan


def _parent_found(row: SourceRow, parent_level: str, in_source: set[str] | None,
                  stored: dict[str, dict[str, StoredRow]], result: LocationPlan,
                  problems: list[str]) -> bool:
    kind = SINGULAR[parent_level]
    if in_source is not None:  # the source holds the level above: it alone decides
        if code_key(row.parent_code) in in_source:
            return True
        problems.append(f"{row.where}: parent {kind} {row.parent_code!r} is not in the source, "
                        f"which holds the {parent_level}")
        return False
    parent = stored[parent_level].get(code_key(row.parent_code))
    if parent is None:
        problems.append(f"{row.where}: parent {kind} {row.parent_code!r} is neither in the "
                        f"source nor in the database")
        return False
    if not parent.is_active:
        result.warnings.append(f"{row.where}: {kind} {row.parent_code!r} is inactive in the "
                               f"database and not in the source")
    return True


def _find_missing(level_plan: LevelPlan, source: LocationSource,
                  stored: dict[str, dict[str, StoredRow]], result: LocationPlan) -> None:
    level = level_plan.level
    parent_level = PARENT_LEVEL.get(level)
    given = {code_key(row.code) for row in source.rows[level]}
    active = [row for row in stored[level].values() if row.is_active]
    if parent_level is None:
        if len(source.rows[level]) < 2:
            level_plan.scope = "one division: its subtree only, no division deactivated"
            return
        level_plan.scope = "every division"
        in_scope = active
    else:
        if parent_level in source.rows:
            codes = {code_key(row.code) for row in source.rows[parent_level]}
            named = f"under the {parent_level} in the source"
        else:
            codes = {code_key(row.parent_code) for row in source.rows[level]}
            named = f"under the {parent_level} its rows name"
        going = result.levels.get(parent_level)
        gone_ids = {row.id for row in going.missing} if going else set()
        parents = {stored[parent_level][code].id for code in codes
                   if code in stored[parent_level]} | gone_ids
        level_plan.scope = named + (f" and the {len(gone_ids)} {parent_level} that go"
                                    if gone_ids else "")
        in_scope = [row for row in active if row.parent_id in parents]
    level_plan.active_in_scope = len(in_scope)
    level_plan.missing = [row for row in in_scope if code_key(row.code) not in given]
    if parent_level is not None and parent_level not in source.rows:
        # The scope is the parents the rows name, so a cut file shrinks its own scope: each
        # named parent is guarded on its own too (plan()).
        code_of = {row.id: row.code for row in stored[parent_level].values()}
        active_under = Counter(row.parent_id for row in in_scope)
        for parent_id, going in sorted(Counter(row.parent_id for row in level_plan.missing)
                                       .items()):
            level_plan.per_parent[code_of[parent_id]] = (going, active_under[parent_id])


def apply(conn: Connection, the_plan: LocationPlan,
          now: dt.datetime | None = None) -> dict[str, dict[str, int]]:
    """Write the plan on `conn` (inside the caller's transaction), parents before children.

    Per level: one multi-row INSERT of the new rows, one UPDATE joined to a temporary table of
    the changed, moved and reactivated ones, one UPDATE setting `is_active = 0` on the missing
    ones; `updated_at` = now on every row written, nothing else touched. Returns, per level,
    the rows inserted, updated and deactivated.
    """
    now = now or utcnow()
    ids = {level: {key: row.id for key, row in rows.items()}  # by code_key(code)
           for level, rows in the_plan.stored.items()}
    written: dict[str, dict[str, int]] = {}
    for level, level_plan in the_plan.levels.items():
        table = TABLES[level]
        parent_level = PARENT_LEVEL.get(level)
        parent_column = PARENT_COLUMN.get(level)

        def values(row: SourceRow) -> dict:
            given = {"name_en": row.name_en, "name_bn": row.name_bn}
            if parent_level:
                given[parent_column] = ids[parent_level][code_key(row.parent_code)]
            return given

        if level_plan.new:
            conn.execute(insert(table), [
                {"code": row.code, **values(row), "is_active": True,
                 "updated_at": now} for row in level_plan.new])
            # Their children are inserted next and need the ids just given.
            new_codes = [row.code for row in level_plan.new]
            ids[level].update((code_key(code), id_) for code, id_ in conn.execute(
                select(table.c.code, table.c.id).where(in_keys(table.c.code, new_codes))))
        updated = 0
        if level_plan.updates:
            updated = update_each(conn, table, table.c.id, {
                u.id: {**values(u.row), "is_active": True} for u in level_plan.updates},
                common={"updated_at": now})
        deactivated = 0
        if level_plan.missing:
            deactivated = conn.execute(
                update(table)
                .where(in_keys(table.c.id, [row.id for row in level_plan.missing]),
                       table.c.is_active == True)  # noqa: E712
                .values(is_active=False, updated_at=now)).rowcount
        written[level] = {"inserted": len(level_plan.new), "updated": updated,
                          "deactivated": deactivated}
    return written
