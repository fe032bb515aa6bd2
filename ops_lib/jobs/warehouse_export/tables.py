"""The allow-list: which tables the warehouse export may write, and how each is walked.

Declared the way the archive declares its AREAS: one `Export` per table, nothing else is exported.
A table not named here is refused before the tool connects (the tool's click.Choice of
`TABLE_NAMES`, the package's light copy of these names, checked below).

Each export walks its table by a cursor, `(time column, key...)` in that order:
- `updated_at` and the primary key for tables whose rows change (every toolkit write sets
  `updated_at`; the archive's mark too);
- `created_at` and the id for an append-only table (a row never changes once written). Not the
  id alone: auto-increment ids are taken at INSERT and committed in any order, so "id > last"
  skips a row whose transaction committed late. A time column bounded by the oldest open
  transaction does not (window.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, Table

from . import TABLE_NAMES

from ...schema import (
    attendance_records,
    attendance_rollups,
    audit_logs,
    audit_logs_archive,
)


@dataclass(frozen=True)
class Export:
    name: str
    table: Table
    cursor: str  # the time column of the cursor
    partition: str  # the date (or date-time) column of the Hive partition folders
    append_only: bool = False
    # Where rows go when the archive moves them out: read together with the hot table (a row is
    # in exactly one of the two in any snapshot: the archive moves it in one transaction).
    archive: Table | None = None
    archived_how: str = ""

    @property
    def key(self) -> list[Column]:
        return list(self.table.primary_key.columns)

    @property
    def cursor_columns(self) -> list[Column]:
        """(time column, primary key...): the keyset order of the walk."""
        return [self.table.c[self.cursor], *self.key]

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.table.columns]

    def describe_cursor(self) -> str:
        names = ", ".join(c.name for c in self.cursor_columns)
        if self.append_only:
            return f"({names}): append-only, a row never changes once written"
        return f"({names}): every change sets {self.cursor}"


EXPORTS: dict[str, Export] = {e.name: e for e in [
    Export("attendance_records", attendance_records, cursor="updated_at",
           partition="attendance_date",
           archived_how="the archive marks old records is_archived=1 in place and sets "
                        "updated_at: the mark is exported as a change"),
    Export("attendance_rollups", attendance_rollups, cursor="updated_at",
           partition="attendance_date",
           archived_how="never archived; a roll-up recomputed by the worker is exported again "
                        "with its new figures (a class that vanished from a day is not "
                        "deleted in the warehouse: use --full-refresh to rebuild)"),
    Export("audit_logs", audit_logs, cursor="created_at", partition="created_at",
           append_only=True, archive=audit_logs_archive,
           archived_how="read together with audit_logs_archive, where the archive moves "
                        "entries older than audit_logs_retention_days"),
]}
assert tuple(EXPORTS) == TABLE_NAMES, "warehouse_export.TABLE_NAMES is out of date"

# Not exported, on purpose: notifications and payments change (read, fan-out, settlement)
# without an updated_at to say so; invoices have updated_at NULL until their first change;
# notification_devices hold push tokens (secrets). Each needs an updated_at (NOT NULL, set by
# every writer) or a hashed view before it can join this list.
