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
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Progress on a terminal (stderr); a no-op for cron and Task Scheduler."""
        if not self.show_progress:
            yield lambda _n=1: None
            return
        from rich.progress import Progress

        from .render import stderr_console

        with Progress(console=stderr_console(), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
