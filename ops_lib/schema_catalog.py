"""What a database's schema is, in one normalised form two databases can be compared on.

The drift check (ops_lib/jobs/schema_drift.py) reads one `Catalog` from a scratch copy of
schema.sql and one from the live database and compares them; the index preview
(ops_lib/jobs/index_preview.py) reads the same two for their indexes and sizes. Readers
(`read_catalog`) normalise what the server shows, so that two catalogs are equal exactly when the
schemas are: every rule of that normalisation is in this module, each with its own test
(tests/test_schema_catalog.py).

Normalised forms (MySQL 8 and MariaDB 10.6+ read alike; SQLite where it can express them):
- `Column.type`: lower case, no integer display width (`bigint(20)` -> `bigint`) except
  `tinyint(1)` (BOOL/BOOLEAN), `integer` -> `int`, `json` for MariaDB's `longtext` + json_valid
  check; on SQLite no sizes (`varchar(150)` -> `varchar`).
- `Column.default`: None for no default and for DEFAULT NULL; `CURRENT_TIMESTAMP` for
  `current_timestamp()`, `now()`, `CURRENT_TIMESTAMP`; otherwise the literal's value unquoted
  (MariaDB's `'pending'` and MySQL's `pending` both -> `pending`).
- `Column.charset` / `Column.collation`: the column's own (effective) values, None for types
  without one and for JSON; compared as they are, so that changing only a table's default charset
  is one difference (the table's), not one per column. Shown only where they differ from the
  table's (`Column.describe(table)`).
- `ForeignKey.on_delete` / `on_update`: `RESTRICT` for `NO ACTION` (the same in InnoDB).
- The table's AUTO_INCREMENT counter, column order, index order and constraint order are not
  read or not compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from sqlalchemy import Connection, text

PRIMARY = "PRIMARY"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    default: str | None = None
    auto_increment: bool = False
    on_update: str | None = None  # "CURRENT_TIMESTAMP" for ON UPDATE CURRENT_TIMESTAMP
    charset: str | None = None
    collation: str | None = None

    def describe(self, table: "Table | None" = None) -> str:
        """As DDL would say it: `varchar(20) NOT NULL DEFAULT 'pending'`."""
        words = [self.type, "NULL" if self.nullable else "NOT NULL"]
        if self.default is not None:
            words.append("DEFAULT " + (self.default if self.default == "CURRENT_TIMESTAMP"
                                       else _quoted(self.default)))
        if self.on_update:
            words.append(f"ON UPDATE {self.on_update}")
        if self.auto_increment:
            words.append("AUTO_INCREMENT")
        if self.collation and (table is None or self.collation != table.collation):
            words.append(f"COLLATE {self.collation}")
        return " ".join(words)


@dataclass(frozen=True)
class IndexPart:
    column: str
    prefix: int | None = None  # SUB_PART: index only the first N characters
    descending: bool = False

    def describe(self, quote: Callable[[str], str] | None = None) -> str:
        """`b`(10) DESC; `quote` quotes the name (default: MySQL's backquotes, one doubled).
        The one way a part is written, in drift lines and in the index preview's SQL."""
        name = quote(self.column) if quote else "`" + self.column.replace("`", "``") + "`"
        return name + (f"({self.prefix})" if self.prefix else "") + \
            (" DESC" if self.descending else "")


@dataclass(frozen=True)
class Index:
    name: str  # "PRIMARY" for the primary key
    parts: tuple[IndexPart, ...]
    unique: bool
    generated_name: bool = False  # the server named it (schema.sql gave no name)

    @property
    def primary(self) -> bool:
        return self.name == PRIMARY

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(part.column for part in self.parts)

    def definition(self) -> tuple:
        """What the index is, its name aside: two indexes with equal definitions are the same."""
        return (self.primary, self.unique, self.parts)

    def describe(self) -> str:
        kind = "PRIMARY KEY" if self.primary else "UNIQUE" if self.unique else "INDEX"
        return f"{kind} ({', '.join(part.describe() for part in self.parts)})"


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    referenced_table: str
    referenced_columns: tuple[str, ...]
    on_delete: str = "RESTRICT"
    on_update: str = "RESTRICT"
    generated_name: bool = False  # the server named it (`<table>_ibfk_<n>`)

    def definition(self) -> tuple:
        """What the key is, its name aside; its rules as the catalog normalises them (a
        hand-made key saying NO ACTION equals a read one)."""
        return (self.columns, self.referenced_table, self.referenced_columns,
                normalise_rule(self.on_delete), normalise_rule(self.on_update))

    def describe(self) -> str:
        return (f"({', '.join(self.columns)}) REFERENCES {self.referenced_table} "
                f"({', '.join(self.referenced_columns)}) ON DELETE {self.on_delete} "
                f"ON UPDATE {self.on_update}")


@dataclass
class Table:
    name: str
    columns: dict[str, Column] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)  # the primary key as "PRIMARY"
    foreign_keys: dict[str, ForeignKey] = field(default_factory=dict)
    engine: str | None = None  # None on SQLite
    charset: str | None = None
    collation: str | None = None
    # Sizes are not schema: two tables with the same definition are equal whatever they hold.
    approx_rows: int | None = field(default=None, compare=False)  # an estimate; None on SQLite
    approx_bytes: int | None = field(default=None, compare=False)  # data and indexes


@dataclass
class Catalog:
    dialect: str  # "mysql" or "sqlite"
    flavor: str  # "mariadb", "mysql" or "sqlite"
    server_version: str
    tables: dict[str, Table] = field(default_factory=dict)


Named = TypeVar("Named", Index, ForeignKey)


def pair_by_name(expected: dict[str, Named], live: dict[str, Named]
                 ) -> list[tuple[Named | None, Named | None]]:
    """Each index (or foreign key) of schema.sql with the live one that stands for it, sorted by
    name: (expected, live), (expected, None) where the live table lacks it, (None, live) for an
    extra one. The drift check and the index preview both pair this way.

    The same name is the same item (changed if the definitions differ). An expected item whose
    name the live table lacks is the live item of the same definition whose name schema.sql does
    not use, where either name is the server's own (schema.sql named none, or the live one was
    created without a name): such a name says nothing. A live name schema.sql uses is never taken
    for another item: it is that item, changed.
    """
    pairs: list[tuple[Named | None, Named | None]] = []
    unclaimed = {name: item for name, item in live.items() if name not in expected}
    for name, item in sorted(expected.items()):
        if name in live:
            pairs.append((item, live[name]))
            continue
        twin = next((other for _, other in sorted(unclaimed.items())
                     if other.definition() == item.definition()
                     and (other.generated_name or item.generated_name)), None)
        if twin is not None:
            del unclaimed[twin.name]
        pairs.append((item, twin))
    pairs.extend((None, item) for _, item in sorted(unclaimed.items()))
    return sorted(pairs, key=lambda pair: (pair[0] or pair[1]).name)


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --- reading a catalog -------------------------------------------------------------------------

_INTEGER = re.compile(r"^(tinyint|smallint|mediumint|integer|int|bigint)(\(\d+\))?(.*)$")
_NOW = re.compile(r"^(current_timestamp|now|localtimestamp|localtime)(\(\s*(\d*)\s*\))?$", re.I)
_JSON_CHECK = re.compile(r"^json_valid\(`?([^`)]+)`?\)$", re.I)
_ON_UPDATE = re.compile(r"on update ([a-z_]+(\(\s*\d*\s*\))?)", re.I)


def normalise_type(column_type: str, *, is_json: bool = False, sqlite: bool = False) -> str:
    """`bigint(20)` -> `bigint`, `BOOL` -> `tinyint(1)`, MariaDB's JSON `longtext` -> `json`."""
    kind = " ".join(column_type.lower().split())
    if is_json or kind == "json":
        return "json"
    if kind in ("bool", "boolean"):
        return "boolean" if sqlite else "tinyint(1)"
    if sqlite:  # SQLite keeps no sizes: VARCHAR(150) and VARCHAR(20) are one type there
        kind = re.sub(r"\s*\(.*\)", "", kind)
        return "int" if kind == "integer" else kind
    match = _INTEGER.match(kind)
    if match:  # display widths are cosmetic; MySQL 8 drops them, except BOOL's tinyint(1)
        name, width, rest = match.groups()
        name = "int" if name == "integer" else name
        keep = width if name == "tinyint" and width == "(1)" else ""
        return f"{name}{keep}{rest}"
    return kind


def normalise_timestamp_function(text: str) -> str | None:
    """`current_timestamp()`, `now()`, `CURRENT_TIMESTAMP` -> `CURRENT_TIMESTAMP` (with fsp)."""
    match = _NOW.match(text.strip())
    if not match:
        return None
    precision = match.group(3)
    return f"CURRENT_TIMESTAMP({precision})" if precision else "CURRENT_TIMESTAMP"


def normalise_default(raw: str | None, flavor: str) -> str | None:
    """COLUMN_DEFAULT as a value: MariaDB quotes literals and says `NULL`, MySQL does neither."""
    if raw is None:
        return None
    now = normalise_timestamp_function(raw)
    if now:
        return now
    if flavor in ("mariadb", "sqlite"):
        if raw.upper() == "NULL":
            return None
        if len(raw) >= 2 and raw[0] == raw[-1] == "'":
            return raw[1:-1].replace("''", "'").replace("\\'", "'")
    if flavor == "sqlite" and len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1]
    return raw


def normalise_rule(rule: str | None) -> str:
    """ON DELETE/UPDATE: NO ACTION is RESTRICT in InnoDB (and the default everywhere)."""
    rule = (rule or "NO ACTION").upper()
    return "RESTRICT" if rule == "NO ACTION" else rule


def _on_update(extra: str) -> str | None:
    match = _ON_UPDATE.search(extra or "")
    return normalise_timestamp_function(match.group(1)) if match else None


def _charset_of(collation: str | None) -> str | None:
    return collation.split("_", 1)[0] if collation else None


def is_generated_index_name(name: str, first_column: str) -> bool:
    """The server's name for an unnamed index: its first column's, `_2`, `_3`... on a clash."""
    return name == first_column or re.fullmatch(re.escape(first_column) + r"_\d+", name) is not None


def is_generated_foreign_key_name(name: str, table: str) -> bool:
    """InnoDB's name for an unnamed foreign key: `<table>_ibfk_<n>`."""
    return re.fullmatch(re.escape(table) + r"_ibfk_\d+", name) is not None


def read_catalog(conn: Connection, schema: str | None = None) -> Catalog:
    """The normalised catalog of a MySQL/MariaDB schema (default: the connection's) or SQLite."""
    if conn.dialect.name == "sqlite":
        return _read_sqlite(conn)
    return _read_mysql(conn, schema or conn.exec_driver_sql("SELECT DATABASE()").scalar_one())


def expected_sqlite_catalog() -> Catalog:
    """schema.sql's catalog on SQLite: an in-memory database built as `manage_schema` builds one."""
    from sqlalchemy import create_engine

    from .jobs.schema_admin import create_schema

    engine = create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            create_schema(conn, is_mysql=False)
            return read_catalog(conn)
    finally:
        engine.dispose()


def _rows(conn: Connection, sql: str, **params) -> list:
    return conn.execute(text(sql), params).mappings().all()


def _read_mysql(conn: Connection, schema: str) -> Catalog:
    version = conn.exec_driver_sql("SELECT VERSION()").scalar_one()
    flavor = "mariadb" if "mariadb" in version.lower() else "mysql"
    catalog = Catalog("mysql", flavor, version)
    for row in _rows(conn, """
            SELECT TABLE_NAME AS name, ENGINE AS engine, TABLE_COLLATION AS collation,
                   TABLE_ROWS AS approx_rows,
                   COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) AS approx_bytes
            FROM information_schema.TABLES
            WHERE TABLE_SCHEMA = :schema AND TABLE_TYPE = 'BASE TABLE'""", schema=schema):
        catalog.tables[row["name"]] = Table(
            row["name"], engine=row["engine"], charset=_charset_of(row["collation"]),
            collation=row["collation"], approx_rows=row["approx_rows"],
            approx_bytes=row["approx_bytes"])
    json_columns = set()
    if flavor == "mariadb":  # MariaDB's JSON is LONGTEXT with a json_valid(column) CHECK
        for row in _rows(conn, """
                SELECT TABLE_NAME AS table_name, CHECK_CLAUSE AS clause
                FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = :schema""",
                         schema=schema):
            match = _JSON_CHECK.match(row["clause"].strip())
            if match:
                json_columns.add((row["table_name"], match.group(1)))
    for row in _rows(conn, """
            SELECT TABLE_NAME AS table_name, COLUMN_NAME AS name, COLUMN_DEFAULT AS col_default,
                   IS_NULLABLE AS nullable, COLUMN_TYPE AS column_type, EXTRA AS extra,
                   CHARACTER_SET_NAME AS charset, COLLATION_NAME AS collation
            FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :schema
            ORDER BY TABLE_NAME, ORDINAL_POSITION""", schema=schema):
        table = catalog.tables.get(row["table_name"])
        if table is None:  # a view's columns
            continue
        is_json = (row["table_name"], row["name"]) in json_columns
        column_type = normalise_type(row["column_type"], is_json=is_json)
        text_like = column_type != "json" and row["collation"] is not None
        table.columns[row["name"]] = Column(
            row["name"], column_type, row["nullable"] == "YES",
            normalise_default(row["col_default"], flavor),
            auto_increment="auto_increment" in (row["extra"] or "").lower(),
            on_update=_on_update(row["extra"]),
            charset=row["charset"] if text_like else None,
            collation=row["collation"] if text_like else None)
    parts: dict[tuple[str, str], list] = {}
    unique: dict[tuple[str, str], bool] = {}
    for row in _rows(conn, """
            SELECT TABLE_NAME AS table_name, INDEX_NAME AS name, COLUMN_NAME AS column_name,
                   SUB_PART AS prefix, COLLATION AS ordering, NON_UNIQUE AS non_unique
            FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = :schema
            ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX""", schema=schema):
        key = (row["table_name"], row["name"])
        parts.setdefault(key, []).append(IndexPart(
            row["column_name"] or "", row["prefix"], row["ordering"] == "D"))
        unique[key] = not int(row["non_unique"])
    for (table_name, name), index_parts in parts.items():
        if table_name in catalog.tables:
            catalog.tables[table_name].indexes[name] = Index(
                name, tuple(index_parts), unique[(table_name, name)],
                name != PRIMARY and is_generated_index_name(name, index_parts[0].column))
    # Two queries joined here, not one JOIN of the two views: MariaDB builds information_schema
    # views per query and joined them by nested loop, 12-15 ms against about 1 ms for both
    # alone (35 tables, 12 keys).
    rules = {(row["table_name"], row["name"]): row for row in _rows(conn, """
            SELECT TABLE_NAME AS table_name, CONSTRAINT_NAME AS name, DELETE_RULE AS on_delete,
                   UPDATE_RULE AS on_update
            FROM information_schema.REFERENTIAL_CONSTRAINTS
            WHERE CONSTRAINT_SCHEMA = :schema""", schema=schema)}
    key_columns = _rows(conn, """
            SELECT TABLE_NAME AS table_name, CONSTRAINT_NAME AS name, COLUMN_NAME AS column_name,
                   REFERENCED_TABLE_NAME AS referenced_table,
                   REFERENCED_COLUMN_NAME AS referenced_column
            FROM information_schema.KEY_COLUMN_USAGE
            WHERE TABLE_SCHEMA = :schema AND REFERENCED_TABLE_NAME IS NOT NULL
            ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION""", schema=schema)
    _add_foreign_keys(catalog, [
        {**row, "on_delete": rule["on_delete"], "on_update": rule["on_update"]}
        for row in key_columns
        if (rule := rules.get((row["table_name"], row["name"]))) is not None],
        lambda table, name, _columns: is_generated_foreign_key_name(name, table))
    return catalog


def _add_foreign_keys(catalog: Catalog, rows, generated) -> None:
    """Foreign keys from one row per column, in order (KEY_COLUMN_USAGE or SQLite's pragma)."""
    grouped: dict[tuple[str, str], list] = {}
    for row in rows:
        grouped.setdefault((row["table_name"], row["name"]), []).append(row)
    for (table_name, name), columns in grouped.items():
        table = catalog.tables.get(table_name)
        if table is None:
            continue
        first = columns[0]
        table.foreign_keys[name] = ForeignKey(
            name, tuple(c["column_name"] for c in columns), first["referenced_table"],
            tuple(c["referenced_column"] for c in columns), normalise_rule(first["on_delete"]),
            normalise_rule(first["on_update"]),
            generated(table_name, name, [c["column_name"] for c in columns]))


def _read_sqlite(conn: Connection) -> Catalog:
    version = conn.exec_driver_sql("SELECT sqlite_version()").scalar_one()
    catalog = Catalog("sqlite", "sqlite", version)
    tables = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    primary: dict[str, list[tuple[int, str]]] = {}
    for row in _rows(conn, f"""
            SELECT m.name AS table_name, p.name AS name, p.type AS type, p."notnull" AS not_null,
                   p.dflt_value AS col_default, p.pk AS pk
            FROM ({tables}) m JOIN pragma_table_info(m.name) p ORDER BY m.name, p.cid"""):
        table = catalog.tables.setdefault(row["table_name"], Table(row["table_name"]))
        table.columns[row["name"]] = Column(
            row["name"], normalise_type(row["type"] or "", sqlite=True), not row["not_null"],
            normalise_default(row["col_default"], "sqlite"))
        if row["pk"]:
            primary.setdefault(row["table_name"], []).append((row["pk"], row["name"]))
    for table_name, columns in primary.items():
        table = catalog.tables[table_name]
        names = [name for _, name in sorted(columns)]
        table.indexes[PRIMARY] = Index(PRIMARY, tuple(IndexPart(n) for n in names), True)
        only = table.columns[names[0]]
        if len(names) == 1 and only.type == "int":  # INTEGER PRIMARY KEY: the rowid, counting up
            table.columns[names[0]] = Column(only.name, only.type, only.nullable, only.default,
                                             auto_increment=True)
    parts: dict[tuple[str, str], list] = {}
    unique: dict[tuple[str, str], bool] = {}
    for row in _rows(conn, f"""
            SELECT m.name AS table_name, l.name AS name, l."unique" AS is_unique,
                   x.name AS column_name, x."desc" AS descending
            FROM ({tables}) m JOIN pragma_index_list(m.name) l JOIN pragma_index_xinfo(l.name) x
            WHERE l.origin <> 'pk' AND x."key" = 1
            ORDER BY m.name, l.name, x.seqno"""):
        key = (row["table_name"], row["name"])
        parts.setdefault(key, []).append(IndexPart(row["column_name"] or "", None,
                                                   bool(row["descending"])))
        unique[key] = bool(row["is_unique"])
    for (table_name, name), index_parts in parts.items():
        catalog.tables[table_name].indexes[name] = Index(
            name, tuple(index_parts), unique[(table_name, name)],
            generated_name=name.startswith("sqlite_autoindex_"))
    # SQLite keeps no foreign key names: each is named by its table and columns (as stable as
    # the key: dropping another key renames none), marked generated.
    rows = _rows(conn, f"""
            SELECT m.name AS table_name, f.id AS fk_id, f."from" AS column_name,
                   f."table" AS referenced_table, f."to" AS referenced_column,
                   f.on_delete AS on_delete, f.on_update AS on_update
            FROM ({tables}) m JOIN pragma_foreign_key_list(m.name) f
            ORDER BY m.name, f.id, f.seq""")
    columns_of: dict[tuple[str, int], list[str]] = {}
    for row in rows:
        columns_of.setdefault((row["table_name"], row["fk_id"]), []).append(row["column_name"])
    names: dict[tuple[str, int], str] = {}
    for (table_name, fk_id), columns in columns_of.items():
        name = base = "_".join(["fk", table_name, *columns])
        number = 2
        while name in names.values():  # two keys on the same columns
            name, number = f"{base}_{number}", number + 1
        names[(table_name, fk_id)] = name
    _add_foreign_keys(catalog, [{**row, "name": names[(row["table_name"], row["fk_id"])]}
                                for row in rows],
                      lambda table, _name, _columns: True)
    return catalog
