"""The metadata every table of ops_lib/schema.py is defined on, its helpers, and the two tables
every tool reads or writes at start-up: `system_settings` and the run ledger `ops_job_runs`.

Apart from schema.py so that a tool's start-up builds these two tables, not all of them: the
rest took about 40 ms of CPU to import (their definitions, and SQLite's dialect for one
table's `sqlite_autoincrement`), a tenth of a drift check's own import time. Elsewhere import
tables from ops_lib.schema, which has them all; this module is for the start-up path.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

metadata = MetaData()

MYSQL_TABLE_OPTIONS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}


def _table(name: str, *parts) -> Table:
    return Table(name, metadata, *parts, **MYSQL_TABLE_OPTIONS)

# BIGINT ids on MySQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


def _id() -> Column:
    return Column("id", Id, primary_key=True, autoincrement=True)


def _created_at() -> Column:
    return Column("created_at", DateTime, nullable=False, server_default=func.current_timestamp())


def _flag(name: str, default: bool) -> Column:
    return Column(name, Boolean, nullable=False, server_default=text("1" if default else "0"))


system_settings = _table(
    "system_settings",
    Column("name", String(100), nullable=False),
    Column("value", Text, nullable=True),
    Column("updated_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    PrimaryKeyConstraint("name", name="pk_system_settings"),
)

ops_job_runs = _table(
    "ops_job_runs",
    _id(),
    Column("run_id", String(32), nullable=False),
    Column("tool", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("args", Text, nullable=True),
    _flag("dry_run", True),
    Column("started_at", DateTime, nullable=False),
    Column("heartbeat_at", DateTime, nullable=False),
    Column("finished_at", DateTime, nullable=True),
    Column("status", String(16), nullable=False, server_default="running"),
    Column("stop_reason", String(255), nullable=True),
    Column("counts", Text, nullable=True),
    Column("error", Text, nullable=True),
    UniqueConstraint("run_id", name="uq_ops_job_runs_run_id"),
    Index("ix_ops_job_runs_freshness", "tool", "status", "finished_at"),
)
