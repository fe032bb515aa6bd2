"""The index SQL schema.sql asks for and the live database lacks: a file to review, never applied.

`missing_indexes` and `redundant_indexes` read two `Catalog`s (schema.sql loaded into a scratch
schema, and the live database) and change nothing; `index_sql` writes the statements with the
comments a person needs before running them (the table's size, the online-DDL risks, and above
`--large-table-mb` the pt-online-schema-change / gh-ost command line instead). `run` is the job:
it reads, it never runs DDL on the live database. Manual: docs/tools/generate_missing_index_sql.md.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from functools import lru_cache

from ..result import DONE, JobResult
from ..schema_catalog import Catalog, Index, Table, pair_by_name

# Above this size (data and indexes, information_schema's estimate) the comments advise an online
# schema-change tool: an in-place build reads the whole table (12 MB took 0.2 s on the test
# machine, idle: ~20 s per GB, several times that on a busy primary), and replicas lag as long.
DEFAULT_LARGE_TABLE_MB = 1024
MB = 1024 * 1024
SCHEMA_CREATE = "python tools/manage_schema.py create"


@dataclass(frozen=True)
class IndexFix:
    """An index schema.sql names that the live table lacks, or has with other parts."""

    table: str
    expected: Index
    live: Index | None = None  # the live index of the same name, when its definition differs
    # Columns the index needs that the live table lacks (a dropped or renamed column): no ADD
    # INDEX can work, and the client would stop at it with the file half applied.
    lacking_columns: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.live is not None


@dataclass(frozen=True)
class RedundantIndex:
    """A live index another index of the same table makes unnecessary."""

    table: str
    index: Index
    covered_by: Index


@dataclass
class IndexPlan:
    fixes: list[IndexFix] = field(default_factory=list)
    missing_tables: list[str] = field(default_factory=list)
    redundant: list[RedundantIndex] = field(default_factory=list)


# -- what is missing ----------------------------------------------------------------------------


def missing_indexes(expected: Catalog, live: Catalog) -> tuple[list[IndexFix], list[str]]:
    """(index fixes, tables missing from the live database), both in name order.

    Expected and live indexes are paired as the drift check pairs them
    (schema_catalog.pair_by_name): an expected index with no live one is missing, one paired
    with a live index of another definition is changed.
    """
    fixes: list[IndexFix] = []
    missing_tables = sorted(name for name in expected.tables if name not in live.tables)
    for name in sorted(expected.tables):
        if name in missing_tables:
            continue
        columns = live.tables[name].columns
        for wanted, present in pair_by_name(expected.tables[name].indexes,
                                            live.tables[name].indexes):
            if wanted is None or (present is not None
                                  and present.definition() == wanted.definition()):
                continue
            lacking = tuple(column for column in wanted.columns if column not in columns)
            fixes.append(IndexFix(name, wanted, present, lacking))
    return fixes, missing_tables


# -- what is redundant --------------------------------------------------------------------------


def _part_covers(wide, narrow) -> bool:
    """An index part `wide` serves every lookup `narrow` serves (same column and order; a
    prefix length no shorter)."""
    if wide.column != narrow.column or wide.descending != narrow.descending:
        return False
    return wide.prefix is None or (narrow.prefix is not None and narrow.prefix <= wide.prefix)


def _leftmost_prefix(narrow: tuple, wide: tuple) -> bool:
    return len(narrow) <= len(wide) and all(_part_covers(w, n) for n, w in zip(narrow, wide))


def _keep_rank(index: Index, named_in_schema: set[str]) -> tuple:
    """Of two equal indexes, the one to keep sorts first: schema.sql's, then a named one."""
    return (index.name not in named_in_schema, index.generated_name, index.name)


def _covers(wide: Index, narrow: Index, named_in_schema: set[str]) -> bool:
    """`narrow` is redundant because of `wide` (pt-duplicate-key-checker's rule)."""
    if narrow.primary or wide is narrow or not _leftmost_prefix(narrow.parts, wide.parts):
        return False
    if narrow.unique and not (wide.unique and wide.parts == narrow.parts):
        return False  # its constraint would go: only the very same constraint replaces it
    if wide.definition() == narrow.definition() \
            and _keep_rank(narrow, named_in_schema) < _keep_rank(wide, named_in_schema):
        return False  # duplicates: exactly one of them is kept
    # No foreign-key rule is needed: an index backing a key has the key's whole columns first,
    # and a covering index starts with the same whole columns (_part_covers), so backs it too.
    return True


def redundant_indexes(live: Catalog, expected: Catalog | None = None) -> list[RedundantIndex]:
    """Live indexes whose parts are a leftmost prefix of another index of the same table, or a
    duplicate of one (one of the duplicates is kept: schema.sql's, else a named one).

    Never the primary key; never a UNIQUE index because of a non-unique or a longer one (its
    constraint would go). An index backing a foreign key is only ever covered by one that backs
    it too (the leftmost-prefix rule implies it). The covering index named is the longest.
    """
    found = []
    for name in sorted(live.tables):
        table = live.tables[name]
        schema_table = expected.tables.get(name) if expected else None
        named_in_schema = set(schema_table.indexes) if schema_table else set()
        indexes = sorted(table.indexes.values(), key=lambda index: index.name)
        for narrow in indexes:
            covering = [wide for wide in indexes if _covers(wide, narrow, named_in_schema)]
            if covering:
                widest = max(covering, key=lambda wide: (len(wide.parts), wide.primary,
                                                         wide.unique, wide.name))
                found.append(RedundantIndex(name, narrow, widest))
    return found


# -- the statements -----------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _preparer(dialect: str):
    from sqlalchemy.dialects import mysql, sqlite

    return (mysql if dialect == "mysql" else sqlite).dialect().identifier_preparer


def quote(name: str, dialect: str) -> str:
    """A name as the dialect quotes it (always quoted; a quote character inside doubled)."""
    return _preparer(dialect).quote_identifier(name)


def index_parts(index: Index, dialect: str) -> str:
    """`a`, `b`(10) DESC: an index's parts as IndexPart.describe writes them, quoted for the
    dialect (SQLite's catalog has no prefix lengths)."""
    return ", ".join(part.describe(lambda name: quote(name, dialect)) for part in index.parts)


def _add_clause(index: Index, if_not_exists: bool) -> str:
    parts = index_parts(index, "mysql")
    if index.primary:
        return f"ADD PRIMARY KEY ({parts})"
    kind = "UNIQUE INDEX" if index.unique else "INDEX"
    guard = " IF NOT EXISTS" if if_not_exists else ""
    return f"ADD {kind}{guard} {quote(index.name, 'mysql')} ({parts})"


def _drop_clause(index: Index) -> str:
    return "DROP PRIMARY KEY" if index.primary else f"DROP INDEX {quote(index.name, 'mysql')}"


def alter_spec(fix: IndexFix, flavor: str) -> str:
    """What follows `ALTER TABLE t`: the ADD (a changed index: DROP and ADD, in one ALTER so the
    table is never without it between two statements). `IF NOT EXISTS` on MariaDB only (MySQL
    rejects it), and not beside a DROP of the same name."""
    if fix.changed:
        return f"{_drop_clause(fix.live)}, {_add_clause(fix.expected, False)}"
    return _add_clause(fix.expected, flavor == "mariadb")


def fix_statements(fix: IndexFix, flavor: str) -> list[str]:
    """The statements that give the live table the index schema.sql names ([] where the table
    lacks a column of it, or SQLite cannot: a primary key is part of its table)."""
    if fix.lacking_columns:
        return []
    if flavor != "sqlite":
        return [f"ALTER TABLE {quote(fix.table, 'mysql')} {alter_spec(fix, flavor)}, "
                "ALGORITHM=INPLACE, LOCK=NONE;"]
    if _sqlite_table_part(fix.expected) or (fix.changed and _sqlite_table_part(fix.live)):
        return []
    index = fix.expected
    statements = [f"DROP INDEX IF EXISTS {quote(fix.live.name, 'sqlite')};"] if fix.changed else []
    unique = "UNIQUE " if index.unique else ""
    statements.append(f"CREATE {unique}INDEX IF NOT EXISTS {quote(index.name, 'sqlite')} ON "
                      f"{quote(fix.table, 'sqlite')} ({index_parts(index, 'sqlite')});")
    return statements


def _sqlite_table_part(index: Index) -> bool:
    """SQLite's primary key and UNIQUE constraints belong to the table: no CREATE or DROP INDEX
    adds or removes them, only rebuilding the table."""
    return index.primary or index.name.startswith("sqlite_autoindex_")


def drop_statement(redundant: RedundantIndex, flavor: str) -> str:
    """The DROP of a redundant index, commented out, with the index that covers it."""
    index, wide = redundant.index, redundant.covered_by
    if flavor == "sqlite":
        drop = f"DROP INDEX {quote(index.name, 'sqlite')};"
    else:
        drop = f"ALTER TABLE {quote(redundant.table, 'mysql')} DROP INDEX {quote(index.name, 'mysql')};"
    covering = f"{wide.name} ({', '.join(wide.columns)})"
    if flavor == "sqlite" and _sqlite_table_part(index):
        covering += "; a UNIQUE constraint of the table: only rebuilding the table drops it"
    return _comment(f"{drop}  -- covered by {covering}")


# -- the comments -------------------------------------------------------------------------------


def _comment(text: str) -> str:
    """One SQL comment line. A line break inside a name would end the comment and turn the rest
    of the line into SQL the reader runs: it becomes a space."""
    return "-- " + " ".join(text.splitlines())


def _megabytes(size: int) -> str:
    megabytes = size / MB
    if megabytes >= 10:
        return f"{megabytes:,.0f} MB"
    return f"{megabytes:.1f} MB" if megabytes >= 0.1 else "under 0.1 MB"


def size_line(table: Table, flavor: str) -> str:
    if flavor == "sqlite":
        return _comment(f"{table.name}: size not read (SQLite keeps no estimate)")
    if table.approx_rows is None:
        return _comment(f"{table.name}: size not known (information_schema.TABLES has no "
                        "estimate for it)")
    size = f", {_megabytes(table.approx_bytes)}" if table.approx_bytes is not None else ""
    return _comment(f"{table.name}: about {table.approx_rows:,} rows{size} "
                    "(approximate: information_schema)")


def _risk_lines(fix: IndexFix, flavor: str) -> list[str]:
    table, index = fix.table, fix.expected
    if flavor == "sqlite":
        lines = ["SQLite builds the index holding the database's write lock: writers wait "
                 "until it is done"]
    else:
        lines = ["online DDL: it takes a metadata lock at its start and at its end; one long "
                 "or idle transaction on the table stalls it there, and every later query on "
                 "the table queues behind it",
                 "replicas run it after the primary has finished: they lag by about its build "
                 "time"]
        if index.primary:
            lines.append("a primary key rebuilds the table (in place, still online) and makes "
                         "its columns NOT NULL")
    if index.unique:
        dialect = "sqlite" if flavor == "sqlite" else "mysql"
        columns = ", ".join(quote(column, dialect) for column in index.columns)
        lines.append(f"UNIQUE: fails if rows repeat ({', '.join(index.columns)}); look first: "
                     f"SELECT {columns}, COUNT(*) FROM {quote(table, dialect)} GROUP BY {columns} "
                     "HAVING COUNT(*) > 1;")
    return [_comment(line) for line in lines]


def _has_foreign_keys(table: str, live: Catalog) -> bool:
    return bool(live.tables[table].foreign_keys) or _is_referenced(table, live)


def _is_referenced(table: str, live: Catalog) -> bool:
    return any(key.referenced_table == table for other in live.tables.values()
               for key in other.foreign_keys.values())


def online_tool_lines(fix: IndexFix, live: Catalog, database: str,
                      server: tuple[str, int] | None = None) -> list[str]:
    """The advice for a large table: the same change by pt-online-schema-change (and gh-ost,
    which does not support foreign keys, where the table has none), as full command lines.
    `server` (host, port) goes into both command lines."""
    spec = alter_spec(fix, "mysql")  # the tools send their own ALTER: no MariaDB-only words
    values = ([f"h={server[0]}", f"P={server[1]}"] if server else []) + \
        [f"D={database}", f"t={fix.table}"]
    lines = ["instead of this ALTER, an online schema-change tool copies the table in small "
             "chunks and can pause for load and replica lag (both do nothing without --execute):"]
    if any(mark in value[2:] for value in values for mark in ",="):
        # A DSN is key=value pairs split on `,`: no quoting can put these characters in a name.
        lines.append("  (no pt-online-schema-change line: its DSN cannot hold a name with ',' "
                     "or '=')")
    else:
        pt_osc = f"pt-online-schema-change --alter {shlex.quote(spec)} " \
                 f"{shlex.quote(','.join(values))}"
        if _is_referenced(fix.table, live):  # other tables' keys point at it
            pt_osc += " --alter-foreign-keys-method=auto"
        lines += [f"  {pt_osc} --dry-run", f"  {pt_osc} --execute"]
    if fix.expected.unique and not fix.expected.primary:
        lines.append("  (pt-online-schema-change refuses a new UNIQUE index "
                     "(--check-unique-key-change): its copy would silently drop repeated rows; "
                     "remove them first)")
    if _has_foreign_keys(fix.table, live):
        lines.append(f"  (not gh-ost: {fix.table} has foreign keys, which gh-ost does not support)")
    else:
        where = (f"--host={shlex.quote(server[0])} --port={server[1]} " if server else "")
        gh_ost = (f"gh-ost {where}--database={shlex.quote(database)} "
                  f"--table={shlex.quote(fix.table)} --alter={shlex.quote(spec)}")
        lines.append(f"  or: {gh_ost}   (then again with --execute)")
        if live.flavor == "mariadb":
            lines.append("  (gh-ost is not tested on MariaDB: prefer pt-online-schema-change)")
    return [_comment(line) for line in lines]


def _is_large(table: Table, large_table_mb: float) -> bool:
    return table.approx_bytes is not None and table.approx_bytes > large_table_mb * MB


def plan_indexes(expected: Catalog, live: Catalog) -> IndexPlan:
    """Everything the preview prints, read from the two catalogs; changes nothing."""
    fixes, missing_tables = missing_indexes(expected, live)
    return IndexPlan(fixes, missing_tables, redundant_indexes(live, expected))


def index_sql(plan: IndexPlan, live: Catalog, *, header: list[str], database: str,
              large_table_mb: float = DEFAULT_LARGE_TABLE_MB,
              server: tuple[str, int] | None = None) -> str:
    """The file: `header` lines (comments), then per table its size, and per index the risks,
    the large-table advice and the statement; then the redundant indexes, commented out."""
    flavor = live.flavor
    lines = [_comment(line) for line in header]
    for table in plan.missing_tables:
        lines += ["", _comment(f"table {table} is missing: {SCHEMA_CREATE}")]
    for fix in plan.fixes:  # in table order, then index order
        table = live.tables[fix.table]
        what = (f"{fix.table}.{fix.expected.name}: the live index is {fix.live.describe()}, "
                f"schema.sql says {fix.expected.describe()}" if fix.changed
                else f"{fix.table}.{fix.expected.name}: missing; schema.sql says "
                     f"{fix.expected.describe()}")
        lines += ["", _comment(what), size_line(table, flavor)]
        statements = fix_statements(fix, flavor)
        if fix.lacking_columns:
            lines.append(_comment(
                f"no statement: {fix.table} has no column {', '.join(fix.lacking_columns)}; "
                "the columns come first: see python tools/check_schema_drift.py and "
                "docs/upgrading.md"))
            continue
        if not statements:
            lines.append(_comment("SQLite cannot add or change a primary key or a UNIQUE "
                                  "constraint in place: the table must be rebuilt"))
            continue
        lines += _risk_lines(fix, flavor)
        if flavor != "sqlite" and _is_large(table, large_table_mb):
            lines.append(_comment(f"{fix.table} is over {large_table_mb:,g} MB "
                                  "(--large-table-mb):"))
            lines += online_tool_lines(fix, live, database, server)
        lines += statements
    if not plan.fixes and not plan.missing_tables:
        lines += ["", _comment("nothing to add: the live database has every index schema.sql "
                               "names")]
    if plan.redundant:
        lines += ["", _comment("Redundant indexes in the live database (pt-duplicate-key-checker's "
                               "rule), left commented out: dropping one is a decision of its own")]
        lines += [drop_statement(redundant, flavor) for redundant in plan.redundant]
    return "\n".join(lines) + "\n"


# -- the job ------------------------------------------------------------------------------------


def run(ctx, scratch_database: str | None = None,
        large_table_mb: float | None = None) -> JobResult:
    """Read schema.sql (in a scratch schema) and the live database; print the index SQL.
    `large_table_mb` None: DEFAULT_LARGE_TABLE_MB."""
    from sqlalchemy.engine import make_url

    from ..scratch_schema import expected_and_live
    from ..timeutil import utcnow

    result = JobResult(ctx.tool, ctx.dry_run, stop_reason=DONE)
    expected, live = expected_and_live(ctx, scratch_database=scratch_database)
    plan = plan_indexes(expected, live)
    url = make_url(ctx.db.url)
    database = url.database or ""
    server = (url.host or "localhost", url.port or 3306) if live.flavor != "sqlite" else None
    statements = [statement for fix in plan.fixes for statement in fix_statements(fix, live.flavor)]
    if live.flavor == "sqlite":
        apply = f"sqlite3 {shlex.quote(database)} < fix.sql"
    else:
        apply = f"mariadb --default-character-set=utf8mb4 {shlex.quote(database)} < fix.sql"
    header = [
        f"{ctx.tool} run={ctx.run_id} dry_run=yes: the indexes schema.sql names that the "
        "live database lacks or has with other columns",
        f"database: {ctx.db.display_url} ({ctx.db.caps.server_version}), read "
        f"{utcnow():%Y-%m-%d %H:%M:%S} UTC",
        f"review before running; nothing was applied. Then: {apply}",
        f"statements: {len(statements)}; tables missing: {len(plan.missing_tables)}; "
        f"redundant indexes (commented out): {len(plan.redundant)}",
    ]
    result.text = index_sql(plan, live, header=header, database=database,
                            large_table_mb=large_table_mb or DEFAULT_LARGE_TABLE_MB,
                            server=server)
    result.statements = statements
    result.counts = {"missing_indexes": sum(not fix.changed for fix in plan.fixes),
                     "changed_indexes": sum(fix.changed for fix in plan.fixes),
                     "missing_tables": len(plan.missing_tables),
                     "redundant_indexes": len(plan.redundant)}
    result.section("index fixes", [
        {"table": fix.table, "index": fix.expected.name,
         "change": "changed" if fix.changed else "missing",
         "schema_sql": fix.expected.describe(),
         "live": fix.live.describe() if fix.live else None} for fix in plan.fixes],
        columns=["table", "index", "change", "schema_sql", "live"])
    result.section("redundant indexes", [
        {"table": r.table, "index": r.index.name, "parts": r.index.describe(),
         "covered_by": r.covered_by.name, "covering_parts": r.covered_by.describe()}
        for r in plan.redundant],
        columns=["table", "index", "parts", "covered_by", "covering_parts"])
    result.notes.extend(f"table {table} is missing: {SCHEMA_CREATE}"
                        for table in plan.missing_tables)
    return result
