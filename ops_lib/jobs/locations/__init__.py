"""import_ipemis_locations: refresh divisions, districts, upazilas and unions from a source.

Read the source (`source.read_source`: every problem a source alone shows), diff it against the
tables (`plan.plan`: parents, scope, the shrink guard), show the diff; `--execute` plans again
and applies in one transaction (`plan.apply`). Rules: docs/tools/import_ipemis_locations.md.
"""

from __future__ import annotations

from typing import Any

from ...render import at_most
from ...result import DONE, JobResult, dry_run_reason
from ...runtime import RunContext
from .model import SourceRow
from .plan import UNCHANGED_SAMPLE, LevelPlan, LocationPlan, RowUpdate, StoredRow, apply, plan

SAMPLE = 10  # rows shown per level and kind of change
WARNINGS_SHOWN = 20
MAPPED_FIELDS = ("level", "code", "parent_code", "name_en", "name_bn")
KINDS = ("new", "changed", "moved", "reactivated", "unchanged", "missing")


def run(ctx: RunContext, source: str, fmt: str | None = None,
        allow_shrink: bool = False) -> JobResult:
    """Import SOURCE (file, folder or URL): the diff per level; with --execute, applied."""
    from .source import read_source

    result = JobResult(ctx.tool, ctx.dry_run)
    loaded = read_source(source, fmt)
    percent = ctx.settings.location_max_shrink_percent
    written = None
    if ctx.dry_run:
        the_plan = ctx.db.run(lambda conn: plan(conn, loaded, percent, allow_shrink=allow_shrink),
                              write=False, what="plan the location import")
    else:
        def plan_and_apply(conn):
            # Planned again inside the writing transaction: what is applied is what was read.
            planned = plan(conn, loaded, percent, allow_shrink=allow_shrink)
            return planned, apply(conn, planned)

        the_plan, written = ctx.db.run(plan_and_apply, what="import locations")
    describe(result, the_plan, written, percent=percent,
             percent_source=ctx.settings.source("location_max_shrink_percent"))
    result.stop_reason = dry_run_reason() if ctx.dry_run else DONE
    return result


def describe(result: JobResult, the_plan: LocationPlan,
             written: dict[str, dict[str, int]] | None, *, percent: float,
             percent_source: str) -> None:
    """The dry run's report (and what --execute did): per level counts, samples, warnings."""
    source = the_plan.source
    held = ", ".join(f"{level} {len(source.rows[level])}" for level in source.levels())
    result.notes.append(f"source: {source.description} ({source.format or 'format given'}): "
                        f"{held}")
    if source.header_mapping:
        by_file: dict[str, dict[str, str]] = {}
        for file, header, mapped in source.header_mapping:
            by_file.setdefault(file, {"file": file})[mapped] = header
        fields = [name for name in MAPPED_FIELDS
                  if any(name in headers for headers in by_file.values())]
        # One row per file: which of its headers each field was read from.
        result.section("Header mapping", list(by_file.values()), columns=["file", *fields])
    result.section("Levels", [
        {"level": level, **level_plan.counts(), "scope": level_plan.scope}
        for level, level_plan in the_plan.levels.items()],
        columns=["level", "in_source", *KINDS, "active_in_scope", "scope"])
    for level, level_plan in the_plan.levels.items():
        _samples(result, level, level_plan)
    if any(level_plan.counts()[kind] > (UNCHANGED_SAMPLE if kind == "unchanged" else SAMPLE)
           for level_plan in the_plan.levels.values() for kind in KINDS):
        result.notes.append(f"the samples show at most {SAMPLE} rows of each kind per level "
                            f"({UNCHANGED_SAMPLE} unchanged); the Levels table counts them all")
    for kind in KINDS:
        result.counts[kind] = sum(level_plan.counts()[kind]
                                  for level_plan in the_plan.levels.values())
    warnings = [*source.warnings, *the_plan.warnings]
    shown = at_most(warnings, WARNINGS_SHOWN, "warning")  # the count line is not a warning
    result.notes.extend(f"warning: {line}" for line in shown[:WARNINGS_SHOWN])
    result.notes.extend(shown[WARNINGS_SHOWN:])
    result.counts["warnings"] = len(warnings)
    result.notes.append(f"a level may lose at most {percent:g}% of its active rows in scope "
                        f"(location_max_shrink_percent, {percent_source}; --allow-shrink)")
    if the_plan.writes() == 0:
        result.notes.append("nothing to change: the tables already match the source")
        return
    totals = _totals(the_plan)
    if written is None:
        result.notes.append(
            f"--execute would insert {totals['inserted']}, update {totals['updated']} and "
            f"deactivate {totals['deactivated']} rows, in one transaction")
        return
    done = {what: sum(level[what] for level in written.values())
            for what in ("inserted", "updated", "deactivated")}
    result.counts.update(done)
    result.notes.append(f"inserted {done['inserted']}, updated {done['updated']} and "
                        f"deactivated {done['deactivated']} rows, in one transaction")


def _totals(the_plan: LocationPlan) -> dict[str, int]:
    levels = the_plan.levels.values()
    return {"inserted": sum(len(lp.new) for lp in levels),
            "updated": sum(len(lp.updates) for lp in levels),
            "deactivated": sum(len(lp.missing) for lp in levels)}


def _samples(result: JobResult, level: str, level_plan: LevelPlan) -> None:
    kinds: list[tuple[str, list[dict[str, Any]], list[str]]] = [
        ("new", [_new(row) for row in level_plan.new[:SAMPLE]],
         ["code", "parent", "name_en", "name_bn", "where"]),
        ("changed", [line for u in level_plan.changed[:SAMPLE] for line in _changed(u)],
         ["code", "field", "old", "new", "where"]),
        ("moved", [_moved(u) for u in level_plan.moved[:SAMPLE]],
         ["code", "name_en", "from", "to", "where"]),
        ("reactivated", [_reactivated(u) for u in level_plan.reactivated[:SAMPLE]],
         ["code", "name_en", "where"]),
        ("unchanged", [_unchanged(row) for row in level_plan.unchanged_sample],
         ["code", "name_en", "where"]),
        ("missing", [_missing(row) for row in level_plan.missing[:SAMPLE]],
         ["code", "id", "name_en"]),
    ]
    for kind, rows, columns in kinds:
        if rows:
            if level == "divisions":
                columns = [name for name in columns if name not in ("parent", "from", "to")]
            result.section(f"{level} {kind}", rows, columns=columns)


def _new(row: SourceRow) -> dict[str, Any]:
    return {"code": row.code, "parent": row.parent_code, "name_en": row.name_en,
            "name_bn": row.name_bn, "where": row.where}


def _changed(update: RowUpdate) -> list[dict[str, Any]]:
    return [{"code": update.row.code, "field": name, "old": old, "new": new,
             "where": update.row.where}
            for name, (old, new) in update.differences.items() if name != "parent"]


def _moved(update: RowUpdate) -> dict[str, Any]:
    old, new = update.differences["parent"]
    return {"code": update.row.code, "name_en": update.row.name_en, "from": old, "to": new,
            "where": update.row.where}


def _reactivated(update: RowUpdate) -> dict[str, Any]:
    return {"code": update.row.code, "name_en": update.row.name_en, "where": update.row.where}


def _unchanged(row: SourceRow) -> dict[str, Any]:
    return {"code": row.code, "name_en": row.name_en, "where": row.where}


def _missing(row: StoredRow) -> dict[str, Any]:
    return {"code": row.code, "id": row.id, "name_en": row.name_en}

