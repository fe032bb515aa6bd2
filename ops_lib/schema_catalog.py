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

from dataclasses import dataclass, field

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

    def describe(self) -> str:
        text = f"`{self.column}`" + (f"({self.prefix})" if self.prefix else "")
        return text + (" DESC" if self.descending else "")


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
        return (self.columns, self.referenced_table, self.referenced_columns,
                self.on_delete, self.on_update)

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
    approx_rows: int | None = None  # information_schema's estimate; None on SQLite
    approx_bytes: int | None = None  # data and indexes


@dataclass
class Catalog:
    dialect: str  # "mysql" or "sqlite"
    flavor: str  # "mariadb", "mysql" or "sqlite"
    server_version: str
    tables: dict[str, Table] = field(default_factory=dict)


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
