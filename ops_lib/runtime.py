"""What a job gets to run with: database, settings, ledger, time budget and stop signals."""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .db import Database
from .result import BUDGET
from .settings import Settings


class Budget:
    """`--max-runtime`: stop claiming new work once the budget is near."""

    def __init__(self, max_runtime: float | None, clock: Callable[[], float] = time.monotonic):
        self.max_runtime = max_runtime
        self._clock = clock
        self.started = clock()

    def elapsed(self) -> float:
        return self._clock() - self.started

    def remaining(self) -> float | None:
        if self.max_runtime is None:
            return None
        return self.max_runtime - self.elapsed()

    def near_end(self, margin: float = 0.0) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= margin


class StopSignal:
    """Set by SIGTERM/SIGINT: the job finishes its current item and stops cleanly.

    A second SIGINT raises KeyboardInterrupt at once, for an operator who means it.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking at once on a stop signal; True when stopped."""
        return self._event.wait(max(0.0, seconds))

    def set(self, name: str) -> None:
        self.signal_name = name
        self._event.set()

    def _handle(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self._event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        logging.getLogger("ops").warning("%s received: finishing the current batch, then stopping", name)
        self.set(name)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
            signum = getattr(signal, name, None)
            if signum is not None:
                self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


@dataclass
class RunContext:
    db: Database
    settings: Settings
    run_id: str
    tool: str
    dry_run: bool
    budget: Budget
    stop: StopSignal
    heartbeat: Callable[[], None] = lambda: None
    show_progress: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ops"))

    def why_stop(self, margin: float = 0.0) -> str | None:
        """The reason to stop claiming work now, or None to go on (also beats the heartbeat)."""
        self.heartbeat()
        if self.stop.is_set():
            return f"interrupted by {self.stop.signal_name}"
        if self.budget.near_end(margin):
            return BUDGET
        return None

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator["ProgressBar"]:
        """Progress on a terminal (stderr); counted only, not drawn, for cron and Task Scheduler.

        While the bar is drawn, log lines go through the bar's console, which prints them above
        the bar instead of over it.
        """
        bar = ProgressBar(total)
        if not self.show_progress:
            yield bar
            return
        from rich.progress import MofNCompleteColumn, Progress

        from .render import stderr_console

        with Progress(*Progress.get_default_columns(), MofNCompleteColumn(),
                      console=stderr_console(), transient=True) as shown:
            bar.draw_on(shown, shown.add_task(description, total=total))
            with _logging_through(shown.console):
                yield bar


class ProgressBar:
    """A progress bar's figures; `bar(n)` advances it. The total may change as work is found."""

    def __init__(self, total: int | None):
        self.total = total
        self.completed = 0
        self._shown = None
        self._task = None

    def draw_on(self, shown, task) -> None:
        self._shown, self._task = shown, task

    def __call__(self, n: int = 1) -> None:
        self.completed += n
        if self._shown is not None:
            self._shown.update(self._task, completed=self.completed)

    def set_total(self, total: int) -> None:
        self.total = total
        if self._shown is not None:
            self._shown.update(self._task, total=total)


@contextmanager
def _logging_through(console) -> Iterator[None]:
    """Point the root logger's terminal handlers at `console` (rich prints a line above a live
    bar), then back."""
    class ToConsole:
        def write(self, text: str) -> int:
            console.print(text.rstrip("\n"), markup=False, highlight=False, emoji=False,
                          soft_wrap=True)
            return len(text)

        def flush(self) -> None:
            pass

    swapped = []
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and getattr(handler.stream, "isatty", None) \
                and handler.stream.isatty():
            swapped.append((handler, handler.setStream(ToConsole())))
    try:
        yield
    finally:
        for handler, stream in swapped:
            handler.setStream(stream)
