"""The worker's progress bar on a terminal: the real tool in a pseudo-terminal (pty)."""

from __future__ import annotations

import re
import sys

from tests.conftest import REPO, run_on_a_terminal, tool_env
from tests.worker_rows import add_backlog, engine_for

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def run_worker_on_a_terminal(env: dict, *args: str) -> tuple[int, list[str]]:
    """Run the worker with stdout and stderr on a pty; returns its exit code and the text it
    wrote, split into the pieces a terminal shows (lines, and redraws after a carriage return)."""
    code, written = run_on_a_terminal(
        [sys.executable, str(REPO / "tools" / "run_background_workers.py"), *args],
        dict(env, COLUMNS="220", LINES="50", TERM="xterm-256color"))
    text = ANSI.sub("", written.decode("utf-8", "replace"))
    return code, [piece for piece in re.split(r"[\r\n]", text) if piece.strip()]


def test_the_bar_counts_the_work_there_and_log_lines_print_above_it(db_url, tmp_path):
    """Regression: the bar's total was LIMIT x 6 stages (1 % after 82,000 of 300,000 rows),
    and log lines were written over the bar."""
    engine = engine_for(db_url)
    add_backlog(engine, 30)  # 30 pushes waiting, nothing else
    engine.dispose()

    code, pieces = run_worker_on_a_terminal(tool_env(db_url, tmp_path), "20", "--execute")

    assert code == 0, "\n".join(pieces)
    # The bar's last frame: 20 of 20 (LIMIT 20 of the 30 waiting), not 20 of 120.
    frames = [p for p in pieces if "draining queues" in p]
    assert frames and re.search(r"\b20/20\b", frames[-1]), frames
    assert not any(re.search(r"/120\b", f) for f in frames)
    # The warning logged while the bar was drawn is a line of its own, not text after the bar.
    [warning] = [p for p in pieces if "no Firebase credentials configured" in p]
    assert TIMESTAMP.match(warning), warning
