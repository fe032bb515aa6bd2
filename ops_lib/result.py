"""The one result type every job returns; the renderer draws it, the ledger stores it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import EXIT_FAILED, EXIT_OK

# Why a run stopped; always printed and written to the ledger. Every tool words the same
# situation the same way, so one grep over cron mail finds it.
DONE = "no more work"
DRY_RUN = "dry run: nothing changed"
BUDGET = "max runtime reached"
LOCK_HELD = "another run holds the lock"


def limit_reached(left: int | None) -> str:
    """Work is left beyond the run's LIMIT (None: some may be, the count is unknown)."""
    return "limit reached, more may be left" if left is None else f"limit reached, {left} left"


def dry_run_reason(left: int | None = 0) -> str:
    """A dry run's why-it-stopped; names the work its LIMIT would leave for a later run."""
    return DRY_RUN if left == 0 else f"{DRY_RUN}; {limit_reached(left)}"


@dataclass
class Section:
    """A titled table of rows (dicts with the same keys), e.g. per-stage figures or samples."""

    title: str
    rows: list[dict[str, Any]]
    columns: list[str] | None = None
    # Columns shown as plain digits although their names do not say id (`id`, `*_id`, `*_ids`).
    id_columns: tuple[str, ...] = ()
    # Headings a table shows instead of a column's key (JSON and plain lines keep the keys).
    labels: dict[str, str] = field(default_factory=dict)

    def column_names(self) -> list[str]:
        if self.columns:
            return self.columns
        names: list[str] = []
        for row in self.rows:
            names.extend(k for k in row if k not in names)
        return names


@dataclass
class JobResult:
    tool: str
    dry_run: bool
    status: str = "ok"  # ok | failed | skipped | interrupted
    stop_reason: str = DONE
    counts: dict[str, int] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings and facts worth a line
    statements: list[str] = field(default_factory=list)  # SQL --execute would run
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    run_id: str | None = None
    exit_code: int | None = None  # set by health checks (0/1/2/3); otherwise from status
    # A check's one-line status (Nagios style, perfdata after a `|`): the first line on stdout.
    headline: str | None = None
    # A result that is a document of its own (the index preview's SQL file): printed verbatim,
    # alone, by every mode but --json, where it is the "text" key.
    text: str | None = None

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount

    def section(self, title: str, rows: list[dict[str, Any]], columns: list[str] | None = None,
                id_columns: tuple[str, ...] = (), labels: dict[str, str] | None = None):
        self.sections.append(Section(title, rows, columns, id_columns, labels or {}))

    def final_exit_code(self) -> int:
        if self.exit_code is not None:
            return self.exit_code
        return EXIT_FAILED if self.status == "failed" else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "exit_code": self.final_exit_code(),
            "counts": self.counts,
            "sections": {s.title: s.rows for s in self.sections},
            "notes": self.notes,
            "statements": self.statements,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "error": self.error,
            **({"headline": self.headline} if self.headline else {}),
            **({"text": self.text} if self.text is not None else {}),
        }
