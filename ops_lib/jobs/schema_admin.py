"""Create the schema on an empty database, or reset a scratch one (support tool, never scheduled)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, create_engine, func, inspect, select
from sqlalchemy.engine import make_url

from ..db import sqlite_file
from ..errors import BadInput
from ..result import DONE, DRY_RUN, JobResult
from ..runtime import RunContext
from ..schema import metadata
from ..schema_sql import SCHEMA_SQL, execute_statements, schema_statements

__all__ = ["SCHEMA_SQL", "create_schema", "create_scratch_database", "drop_database", "run"]


def database_name(database_url: str) -> str:
    """The name `reset --confirm` expects: the database, or the SQLite file's name."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return Path(url.database or ":memory:").name
    return url.database or ""


def check_options(database_url: str, action: str, confirm: str | None,
                  dry_run: bool) -> list[str]:
    """Problems the arguments alone show, reported before anything connects (exit 2)."""
    name = database_name(database_url)
    if action == "reset" and not dry_run and confirm != name:
        return [f"reset needs --confirm with the database name typed again ({name!r})"]
    return []


def missing_tables(conn: Connection) -> list[str]:
    present = set(inspect(conn).get_table_names())
    return [t.name for t in metadata.sorted_tables if t.name not in present]


def create_schema(conn: Connection, is_mysql: bool) -> None:
    """Create every missing table: from schema.sql on MySQL, from the metadata on SQLite."""
    if is_mysql:
        execute_statements(conn, schema_statements())
    else:
        metadata.create_all(conn, checkfirst=True)


def create_scratch_database(server_url: str, name: str) -> str:
    """Drop and recreate database `name` on a MySQL server, load schema.sql; returns its URL.

    For tests and benchmarks only: whatever the database held is lost.
    """
    server = create_engine(server_url)
    try:
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
            conn.exec_driver_sql(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        server.dispose()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            create_schema(conn, is_mysql=True)
    finally:
        engine.dispose()
    return url


def drop_database(server_url: str, name: str) -> None:
    server = create_engine(server_url)
    try:
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        server.dispose()


def drop_schema(conn: Connection, is_mysql: bool) -> None:
    if is_mysql:
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
    metadata.drop_all(conn, checkfirst=True)
    if is_mysql:
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")


def run(ctx: RunContext, action: str, confirm: str | None = None) -> JobResult:
    result = JobResult(ctx.tool, ctx.dry_run, stop_reason=DRY_RUN if ctx.dry_run else DONE)
    name = database_name(ctx.db.url)
    with ctx.db.begin(write=False) as conn:
        missing = missing_tables(conn)
        present = [t for t in metadata.sorted_tables if t.name not in missing]
        rows = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in present}
    result.counts.update(tables_missing=len(missing), tables_present=len(present))

    if action == "create":
        result.section("Tables to create", [{"table": t} for t in missing])
        if not missing:
            result.notes.append("every table of schema.sql exists: nothing to create")
        elif ctx.dry_run:
            source = "schema.sql" if ctx.db.caps.is_mysql else "the library's metadata"
            result.notes.append(f"--execute would create {len(missing)} tables from {source}")
            file = sqlite_file(ctx.db.url)
            if file is not None and not file.is_file():
                result.notes.append(f"--execute would create the SQLite file {file} first")
        else:
            with ctx.db.engine.begin() as conn:
                create_schema(conn, ctx.db.caps.is_mysql)
            result.counts["tables_created"] = len(missing)
        return result

    # reset: drop and recreate every table of the contract, on a scratch database only.
    result.section("Tables to drop and recreate",
                   [{"table": t, "rows": rows.get(t)} for t in rows] or [])
    result.counts["rows_lost"] = sum(rows.values())
    if ctx.dry_run:
        result.notes.append(
            f"--execute --confirm {name} would DROP {len(rows)} tables ({sum(rows.values())} rows) "
            f"in database {name!r} and create them empty"
        )
        return result
    problems = check_options(ctx.db.url, action, confirm, ctx.dry_run)
    if problems:  # the tool checks before connecting; this guards callers from Python
        raise BadInput(*problems)
    with ctx.db.engine.begin() as conn:
        drop_schema(conn, ctx.db.caps.is_mysql)
        create_schema(conn, ctx.db.caps.is_mysql)
    result.counts["tables_created"] = len(metadata.tables)
    return result
