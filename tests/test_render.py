"""One renderer, three modes, on one result: rich table (terminal), plain lines, JSON."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
from rich.console import Console

from ops_lib.render import choose_mode, render, render_json, render_plain, render_terminal
from ops_lib.result import BUDGET, JobResult
from tests.conftest import REPO, run_on_a_terminal, tool_env

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def sample_result() -> JobResult:
    result = JobResult("archive_hot_path_data", dry_run=True, stop_reason=BUDGET,
                       run_id="0123456789abcdef0123456789abcdef")
    result.section("Archive readiness", [
        {"area": "notifications", "retention": 90, "eligible": 1234567, "status": "ready"},
        {"area": "audit logs", "retention": 365, "eligible": 0, "status": None},
    ])
    result.section("Empty table", [], columns=["id", "name"])
    result.counts.update(rows_moved=1500, batches=3)
    result.timings["select"] = 0.25
    result.notes.append("payments: nothing older than 730 days")
    result.statements.append("DELETE FROM notifications WHERE id IN (1, 2) [not escaped]")
    return result


class TtyBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_mode_is_greppable_key_value_lines_without_colour():
    text = render_plain(sample_result())
    assert text == (
        "archive_hot_path_data run=0123456789abcdef0123456789abcdef dry_run=yes status=ok\n"
        "archive_readiness: area=notifications retention=90 eligible=1234567 status=ready\n"
        'archive_readiness: area="audit logs" retention=365 eligible=0 status=-\n'
        "counts: batches=3 rows_moved=1500\n"
        "timings: select=0.250s\n"
        "note: payments: nothing older than 730 days\n"
        "sql: DELETE FROM notifications WHERE id IN (1, 2) [not escaped]\n"
        "stopped: max runtime reached\n"
    )
    assert "\x1b[" not in text


def test_json_mode_is_one_object_with_every_field():
    line = render_json(sample_result())
    assert line.endswith("\n") and line.count("\n") == 1
    data = json.loads(line)
    assert data["tool"] == "archive_hot_path_data"
    assert data["dry_run"] is True
    assert data["status"] == "ok" and data["exit_code"] == 0
    assert data["stop_reason"] == BUDGET
    assert data["counts"] == {"rows_moved": 1500, "batches": 3}
    assert data["sections"]["Archive readiness"][0] == {
        "area": "notifications", "retention": 90, "eligible": 1234567, "status": "ready"}
    assert data["sections"]["Empty table"] == []
    assert data["notes"] == ["payments: nothing older than 730 days"]
    assert data["statements"] == ["DELETE FROM notifications WHERE id IN (1, 2) [not escaped]"]
    assert data["timings"] == {"select": 0.25}
    assert data["error"] is None


def test_terminal_mode_draws_rich_tables_in_colour():
    buffer = io.StringIO()
    render_terminal(sample_result(),
                    Console(file=buffer, force_terminal=True, width=120, color_system="standard"))
    raw = buffer.getvalue()
    assert ANSI.search(raw), "a terminal gets colour"
    text = ANSI.sub("", raw)
    assert "archive_hot_path_data: dry run, status ok" in text
    assert "Archive readiness" in text
    assert re.search(r"│ notifications\s+│ 90\s+│ 1,234,567 │ ready\s+│", text)
    assert re.search(r"│ audit logs\s+│ 365\s+│ 0\s+│ -\s+│", text)
    assert re.search(r"│ \(none\)\s+│\s+│", text), "an empty section says so"
    assert "Counts" in text  # figures no section shows are never hidden
    assert "timings: select 0.250s" in text
    assert "note: payments: nothing older than 730 days" in text
    # Statements are printed as they are: brackets are not taken for rich markup.
    assert "sql: DELETE FROM notifications WHERE id IN (1, 2) [not escaped]" in text
    assert text.rstrip().endswith("stopped: max runtime reached")


def test_terminal_mode_draws_the_counts_table_when_there_are_no_sections():
    result = JobResult("cleanup_stale_devices", dry_run=False, counts={"deactivated": 12345})
    buffer = io.StringIO()
    render_terminal(result, Console(file=buffer, force_terminal=True, width=100))
    text = ANSI.sub("", buffer.getvalue())
    assert "cleanup_stale_devices: executed, status ok" in text
    assert "Counts" in text and re.search(r"│ deactivated │\s+12,345 │", text)


def test_a_failed_result_shows_its_error_in_every_mode():
    result = JobResult("t", dry_run=False, status="failed", stop_reason="error",
                       error="database error: (1146) Table 'x.y' doesn't exist")
    assert "error: database error: (1146) Table 'x.y' doesn't exist\n" in render_plain(result)
    assert json.loads(render_json(result))["exit_code"] == 1
    buffer = io.StringIO()
    render_terminal(result, Console(file=buffer, force_terminal=True, width=100))
    text = ANSI.sub("", buffer.getvalue())
    assert "t: executed, status failed" in text
    assert "error: database error: (1146) Table 'x.y' doesn't exist" in text


@pytest.mark.parametrize("json_flag, stream, mode", [
    (True, TtyBuffer(), "json"), (True, io.StringIO(), "json"),
    (False, TtyBuffer(), "terminal"), (False, io.StringIO(), "plain"),
])
def test_the_mode_follows_the_json_flag_then_whether_stdout_is_a_terminal(json_flag, stream,
                                                                           mode):
    assert choose_mode(json_flag, stream) == mode


def test_render_writes_each_mode_to_its_stream():
    result = sample_result()
    plain, as_json, tty = io.StringIO(), io.StringIO(), TtyBuffer()
    render(result, "plain", plain)
    render(result, "json", as_json)
    render(result, "terminal", tty)
    assert plain.getvalue() == render_plain(result)
    assert json.loads(as_json.getvalue())["counts"]["rows_moved"] == 1500
    assert ANSI.search(tty.getvalue()) and "1,234,567" in ANSI.sub("", tty.getvalue())


def test_a_real_tool_on_a_terminal_draws_a_table_and_in_a_pipe_prints_plain_lines(tmp_path):
    (tmp_path / "ops.db").touch()  # a dry run no longer creates a missing SQLite file
    env = tool_env(f"sqlite:///{tmp_path / 'ops.db'}", tmp_path, COLUMNS="100", TERM="xterm")
    command = [sys.executable, str(REPO / "tools" / "manage_schema.py"), "create"]
    code, written = run_on_a_terminal(command, env, stderr=subprocess.PIPE)
    on_terminal = written.decode()
    assert code == 0
    assert ANSI.search(on_terminal)
    assert "Tables to create" in on_terminal and "┃ table" in ANSI.sub("", on_terminal)

    piped = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0
    assert "\x1b[" not in piped.stdout
    assert piped.stdout.startswith("manage_schema run=")
    assert "tables_to_create: table=plans" in piped.stdout


def test_terminal_mode_shows_brackets_in_data_as_they_are_instead_of_reading_markup():
    """Regression: a note with "[/x]" raised MarkupError and "[bold]" in a cell vanished."""
    result = JobResult("t", dry_run=True, error="bad value [/b] in row 7")
    result.section("Samples [all]", [{"name": "[bold]Rafi[/bold]", "[col]": "x"}])
    result.notes.append("closing [/x] tag")
    buffer = io.StringIO()
    render_terminal(result, Console(file=buffer, force_terminal=True, width=100))
    text = ANSI.sub("", buffer.getvalue())
    assert "[bold]Rafi[/bold]" in text
    assert "Samples [all]" in text and "[col]" in text
    assert "note: closing [/x] tag" in text
    assert "error: bad value [/b] in row 7" in text


def test_terminal_tables_show_ids_as_plain_digits_and_counts_with_separators():
    """Regression: ids were drawn as "1,211", which no one can paste into a query."""
    result = JobResult("t", dry_run=True, counts={"deactivated": 12345})
    result.section("Devices", [
        {"id": 1211, "guardian_id": 45678, "device_ids": 1234567, "scan": 98765, "rows": 4321},
    ], id_columns=("scan",))
    buffer = io.StringIO()
    render_terminal(result, Console(file=buffer, force_terminal=True, width=120))
    text = ANSI.sub("", buffer.getvalue())
    assert re.search(r"│ 1211 │ 45678\s+│ 1234567\s+│ 98765 │ 4,321 │", text), text
    assert re.search(r"│ deactivated │\s+12,345 │", text)
    assert "1,211" not in text and "45,678" not in text and "98,765" not in text
