"""One renderer for every job's result: a rich table on a terminal, plain lines otherwise, JSON.

Results go to stdout; logs and progress go to stderr, so `tool > plan.txt` keeps a clean file.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from .result import JobResult, Section

if TYPE_CHECKING:  # rich loads only to draw a table: --json and usage errors stay light
    from rich.console import Console

MODES = ("terminal", "plain", "json")


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def choose_mode(json_flag: bool, stream: TextIO | None = None) -> str:
    if json_flag:
        return "json"
    stream = stream or sys.stdout
    return "terminal" if stream.isatty() else "plain"


def is_id_column(section: Section, name: str) -> bool:
    """Ids are names, not amounts: `1211` must read as the row an operator will look up."""
    return name == "id" or name.endswith(("_id", "_ids")) or name in section.id_columns


def _cell(value: Any, is_id: bool = False) -> str:
    if value is None or value == {}:
        return "-"
    if isinstance(value, dict):  # figures of their own (a stage's details): JSON keeps the dict
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    if is_id:
        return str(value)
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def more_count(count: int, noun: str) -> str:
    """'1 more problem', '3 more problems': what a list cut short leaves out (`noun` singular)."""
    return f"{count} more {noun}{'' if count == 1 else 's'}"


def at_most(lines: list[str], limit: int, noun: str) -> list[str]:
    """At most `limit` lines, then one line counting the rest: '... and 3 more problems'."""
    if len(lines) <= limit:
        return list(lines)
    return [*lines[:limit], f"... and {more_count(len(lines) - limit, noun)}"]


def _plain_value(value: Any) -> str:
    if isinstance(value, dict):
        text = " ".join(f"{k}={v}" for k, v in value.items()) or "-"
    else:
        text = "-" if value is None else str(value)
    return f'"{text}"' if (" " in text or not text) else text


def _headline(result: JobResult) -> str:
    mode = "dry run" if result.dry_run else "executed"
    return f"{result.tool}: {mode}, status {result.status}"


def render_plain(result: JobResult) -> str:
    lines = [result.headline] if result.headline else []
    lines += [
        f"{result.tool} run={result.run_id or '-'} dry_run={'yes' if result.dry_run else 'no'} "
        f"status={result.status}"
    ]
    for section in result.sections:
        key = section.title.lower().replace(" ", "_")
        for row in section.rows:
            fields = " ".join(f"{k}={_plain_value(row.get(k))}" for k in section.column_names())
            lines.append(f"{key}: {fields}")
    if result.counts:
        lines.append("counts: " + " ".join(f"{k}={v}" for k, v in sorted(result.counts.items())))
    if result.timings:
        lines.append(
            "timings: " + " ".join(f"{k}={v:.3f}s" for k, v in sorted(result.timings.items()))
        )
    lines.extend(f"note: {note}" for note in result.notes)
    lines.extend(f"sql: {statement}" for statement in result.statements)
    if result.error:
        lines.append(f"error: {result.error}")
    lines.append(f"stopped: {result.stop_reason}")
    return "\n".join(lines) + "\n"


def render_terminal(result: JobResult, console: Console) -> None:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    if result.headline:  # a pager's line stays plain text, also on a terminal
        console.print(Text(result.headline), soft_wrap=True)
    style = {"ok": "green", "failed": "bold red", "skipped": "yellow", "interrupted": "yellow"}
    # Data (cells, titles, notes, SQL, errors) is never read as rich markup: "[/x]" in a row
    # would otherwise vanish or raise MarkupError.
    console.print(Text(_headline(result), style=f"bold {style.get(result.status, '')}".strip()))
    for section in result.sections:
        table = Table(title=Text(section.title), title_justify="left")
        columns = section.column_names()
        for name in columns:
            table.add_column(Text(section.labels.get(name, name)))
        ids = [is_id_column(section, name) for name in columns]
        for row in section.rows:
            table.add_row(*(Text(_cell(row.get(name), is_id))
                            for name, is_id in zip(columns, ids)))
        if not section.rows and columns:
            table.add_row("(none)", *[""] * (len(columns) - 1))
        console.print(table)
    if result.counts:
        table = Table(title="Counts", title_justify="left")
        table.add_column("what")
        table.add_column("count", justify="right")
        for name, value in sorted(result.counts.items()):
            table.add_row(Text(name), _cell(value))
        console.print(table)
    if result.timings:
        console.print(
            "timings: " + ", ".join(f"{k} {v:.3f}s" for k, v in sorted(result.timings.items()))
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    for statement in result.statements:
        console.print(f"[cyan]sql:[/] {escape(statement)}", highlight=False)
    if result.error:
        console.print(f"[red]error:[/] {escape(result.error)}", highlight=False)
    console.print(f"stopped: {escape(result.stop_reason)}", highlight=False)


def render_json(result: JobResult) -> str:
    return json.dumps(result.to_dict(), default=str, sort_keys=True) + "\n"


def render(result: JobResult, mode: str, stream: TextIO | None = None) -> None:
    """Write the result to stdout (or `stream`) in one of the three modes."""
    stream = stream or sys.stdout
    if mode != "json" and result.text is not None:
        stream.write(result.text)  # the document alone: `tool > file` keeps nothing else
    elif mode == "json":
        stream.write(render_json(result))
    elif mode == "terminal":
        from rich.console import Console

        render_terminal(result, Console(file=stream, force_terminal=stream.isatty() or None))
    else:
        stream.write(render_plain(result))
    stream.flush()
