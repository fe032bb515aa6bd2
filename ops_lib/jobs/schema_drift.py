"""Schema drift: does the live database still match schema.sql? (check_schema_drift.py)

The way skeema does it: schema.sql is loaded into a scratch schema on the same server (an
in-memory database on SQLite; ops_lib/scratch_schema.py), both catalogs are read the same way
(ops_lib/schema_catalog.py normalises what the server shows), and `compare` lists what differs.
It never changes the live schema; its only write is its run-ledger row.

Exit 0 no drift, 1 drift, 2 bad input or any error, an interrupted run included: a monitor must
never read an outage as drift, nor an unfinished check as none.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Iterable

from ..errors import EXIT_OK, Interrupted
from ..result import JobResult
from ..runtime import RunContext
from ..schema_catalog import Catalog, Column, Named, Table, pair_by_name
from ..scratch_schema import expected_and_live

MISSING, EXTRA, CHANGED = "missing", "extra", "changed"
EXIT_DRIFT = 1
EXIT_NOT_CHECKED = 2  # bad input, any error, an interrupted run
SECTION = "Differences"

# Within a table, the order differences are listed in: the table's own, then its parts.
_RANK = {"table": 0, "engine": 1, "charset": 2, "column": 3, "primary key": 4, "index": 5,
         "foreign key": 6}


@dataclass(frozen=True)
class Drift:
    """One difference: `expected` is what schema.sql says, `actual` what the live database has
    (None: it has none / schema.sql has none)."""

    kind: str  # missing | extra | changed
    object: str  # "column students.name", "index students.ix_x", "primary key students"...
    expected: str | None
    actual: str | None
    table: str = field(default="", compare=False, repr=False)  # for counting, not shown

    def line(self) -> str:
        """The difference as one line: the object, what schema.sql says, what the database has."""
        return (f"{self.object}: schema.sql has {self.expected or 'none'}; "
                f"live database has {self.actual or 'none'}")

    __str__ = line

    def to_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "object": self.object, "expected": self.expected,
                "actual": self.actual}


def compare(expected: Catalog, live: Catalog, *, ignore_extra_tables: bool = False) -> list[Drift]:
    """Every difference between the catalog of schema.sql and the live one, each reported once,
    ordered by table and then object. Pure: both catalogs are already read and normalised."""
    found: list[tuple[tuple, Drift]] = []

    def add(table: str, what: str, name: str, drift: Drift) -> None:
        found.append(((table, _RANK[what], name), replace(drift, table=table)))

    for name in sorted(expected.tables.keys() - live.tables.keys()):
        add(name, "table", "", Drift(MISSING, f"table {name}",
                                     _table_summary(expected.tables[name]), None))
    if not ignore_extra_tables:
        for name in sorted(live.tables.keys() - expected.tables.keys()):
            add(name, "table", "", Drift(EXTRA, f"table {name}", None,
                                         _table_summary(live.tables[name])))
    for name in sorted(expected.tables.keys() & live.tables.keys()):
        for what, key, drift in _compare_table(expected.tables[name], live.tables[name]):
            add(name, what, key, drift)
    return [drift for _, drift in sorted(found, key=lambda pair: pair[0])]


def _compare_table(want: Table, have: Table) -> Iterable[tuple[str, str, Drift]]:
    name = want.name
    if want.engine != have.engine:
        yield "engine", "", Drift(CHANGED, f"table {name} engine", want.engine, have.engine)
    if (want.charset, want.collation) != (have.charset, have.collation):
        yield "charset", "", Drift(CHANGED, f"table {name} charset", _charset(want),
                                   _charset(have))

    for column in sorted(want.columns.keys() | have.columns.keys()):
        old, new = want.columns.get(column), have.columns.get(column)
        if old == new:
            continue
        shown_old, shown_new = _column_texts(old, want, new, have)
        yield "column", column, Drift(_kind(old, new), f"column {name}.{column}", shown_old,
                                      shown_new)

    for old, new in _differing(want.indexes, have.indexes):
        index = old or new
        what = "primary key" if index.primary else "index"
        label = f"primary key {name}" if index.primary else f"index {name}.{index.name}"
        yield what, index.name, Drift(_kind(old, new), label, old and old.describe(),
                                      new and new.describe())
    for old, new in _differing(want.foreign_keys, have.foreign_keys):
        key = old or new
        yield "foreign key", key.name, Drift(_kind(old, new), f"foreign key {name}.{key.name}",
                                             old and old.describe(), new and new.describe())


def _differing(want: dict[str, Named], have: dict[str, Named]
               ) -> list[tuple[Named | None, Named | None]]:
    """The pairs (schema_catalog.pair_by_name) whose two sides differ."""
    return [(old, new) for old, new in pair_by_name(want, have)
            if old is None or new is None or old.definition() != new.definition()]


def _kind(old: object | None, new: object | None) -> str:
    return MISSING if new is None else EXTRA if old is None else CHANGED


def _column_texts(old: Column | None, want: Table, new: Column | None,
                  have: Table) -> tuple[str | None, str | None]:
    """Each side as DDL says it. The collation is shown where it is what differs (then on both
    sides), and for a missing or extra column where it is not its table's own."""
    if old is None or new is None:
        return old and old.describe(want), new and new.describe(have)
    if old.collation == new.collation:
        hidden = Table(want.name, collation=old.collation)
        shown_old, shown_new = old.describe(hidden), new.describe(hidden)
    else:
        shown_old, shown_new = old.describe(), new.describe()
    if shown_old == shown_new:  # a charset without a collation: say it
        shown_old += f" CHARACTER SET {old.charset}"
        shown_new += f" CHARACTER SET {new.charset}"
    return shown_old, shown_new


def _charset(table: Table) -> str | None:
    if table.charset is None and table.collation is None:
        return None
    return " ".join(filter(None, [table.charset and f"CHARSET={table.charset}",
                                  table.collation and f"COLLATE={table.collation}"]))


def _table_summary(table: Table) -> str:
    return (f"a table of {_plural(len(table.columns), 'column')}, "
            f"{_plural(len(table.indexes), 'index')}, "
            f"{_plural(len(table.foreign_keys), 'foreign key')}")


def headline(drifts: list[Drift], tables_compared: int) -> str:
    """The first stdout line: `schema drift: 3 differences in 2 tables` or
    `no schema drift: 28 tables match schema.sql`."""
    if not drifts:
        return f"no schema drift: {tables_compared} tables match schema.sql"
    tables = len({drift.table for drift in drifts})
    return (f"schema drift: {_plural(len(drifts), 'difference')} in "
            f"{_plural(tables, 'table')}")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "es" if word.endswith("x") else "s")


def run(ctx: RunContext, scratch_database: str | None = None,
        ignore_extra_tables: bool = False) -> JobResult:
    """Load schema.sql into a scratch schema, read both catalogs, list every difference."""
    result = JobResult(ctx.tool, ctx.dry_run)
    started = time.perf_counter()
    # A stop signal while the scratch is prepared raises ScratchInterrupted (an Interrupted):
    # run_tool records the run as interrupted and exits EXIT_NOT_CHECKED, never 0.
    expected, live = expected_and_live(ctx, scratch_database)
    result.timings["read"] = time.perf_counter() - started
    if ctx.stop.is_set():
        raise Interrupted(f"interrupted by {ctx.stop.signal_name} before comparing")
    drifts = compare(expected, live, ignore_extra_tables=ignore_extra_tables)
    result.section(SECTION, [drift.to_dict() for drift in drifts],
                   columns=["kind", "object", "expected", "actual"],
                   labels={"expected": "schema.sql", "actual": "live database"})
    compared = len(expected.tables.keys() & live.tables.keys())
    result.counts.update(
        tables_expected=len(expected.tables), tables_compared=compared,
        differences=len(drifts),
        **{kind: sum(drift.kind == kind for drift in drifts) for kind in (MISSING, EXTRA, CHANGED)})
    if ignore_extra_tables:
        result.counts["extra_tables_ignored"] = len(live.tables.keys() - expected.tables.keys())
    result.headline = headline(drifts, compared)
    result.exit_code = EXIT_DRIFT if drifts else EXIT_OK
    result.stop_reason = (f"drift: {_plural(len(drifts), 'difference')}" if drifts
                          else "no drift")
    result.notes.append(f"compared with schema.sql loaded into a scratch "
                        f"{'in-memory database' if live.dialect == 'sqlite' else 'schema'} on "
                        f"{live.flavor} {live.server_version}")
    return result

