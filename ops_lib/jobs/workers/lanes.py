"""Lanes: one worker process runs the stages' rotation in several threads at once.

A lane is what a worker process is: the rotation, with stage objects and a connection of its
own. Lanes lock and claim rows as separate processes do (SKIP LOCKED, scan_key, unique keys,
transient errors retried), so what makes several processes safe makes several lanes safe. While
one lane waits for the server, another runs its Python: one process keeps its core and the
server busy at once, where a single connection leaves each idle half the time.

The lanes of a run share, behind one lock: each stage's LIMIT (a lane reserves a batch's worth
and gives back what it did not take), the progress bar, which stages stopped, and why the run
stopped. Each keeps its own figures; they are added up at the end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable

from ...db import describe_db_error
from ...result import DONE
from ...runtime import ProgressBar, RunContext
from .base import BUDGET_MARGIN_SECONDS, Stage, StageStats

log = logging.getLogger(__name__)


class Drain:
    """What the lanes of one run share, behind one lock."""

    def __init__(self, pipelines: list[list[Stage]], limit: int, expected: dict[str, int],
                 bar: ProgressBar):
        self._lock = threading.Lock()
        names = [stage.name for stage in pipelines[0]]
        self.remaining = dict.fromkeys(names, limit)
        self.claimed = dict.fromkeys(names, 0)
        self.expected = expected  # the bar's total, per stage
        self.bar = bar
        # Lanes that still have the stage in their rotation.
        self._rotating = Counter(stage.name for pipeline in pipelines for stage in pipeline)
        self._stopped_stages: set[str] = set()
        self.stop_reason = DONE
        self.failure: BaseException | None = None

    def reserve(self, name: str, wanted: int) -> int:
        """Up to `wanted` rows of the stage's LIMIT for one batch (0: none left, or the stage
        stopped in another lane)."""
        with self._lock:
            if name in self._stopped_stages:
                return 0
            size = min(wanted, self.remaining[name])
            self.remaining[name] -= size
            return size

    def took(self, name: str, reserved: int, taken: int) -> bool:
        """A batch took `taken` of its `reserved` rows: the rest goes back to the LIMIT. True
        when the stage's LIMIT is spent."""
        with self._lock:
            self.remaining[name] += reserved - taken
            if taken:
                self.claimed[name] += taken
                self.bar(taken)
                if self.claimed[name] > self.expected[name]:
                    self.expected[name] = self.claimed[name]
                    self.bar.set_total(sum(self.expected.values()))
            return self.remaining[name] <= 0

    def leave(self, name: str, stopped: bool = False) -> None:
        """A lane is done with the stage (`stopped`: it broke, and the other lanes drop it too).
        Once every lane is, the bar counts what it took."""
        with self._lock:
            if stopped:
                self._stopped_stages.add(name)
            self._rotating[name] -= 1
            if self._rotating[name] == 0:
                self.expected[name] = self.claimed[name]
                self.bar.set_total(sum(self.expected.values()))

    def why_stop(self, ctx: RunContext) -> str | None:
        """Why a lane should claim no more: the run's reason (budget, signal), or another lane
        failed."""
        if self.failure is not None:
            return "another lane failed"
        reason = ctx.why_stop(BUDGET_MARGIN_SECONDS)
        if reason:
            with self._lock:
                if self.stop_reason == DONE:
                    self.stop_reason = reason
        return reason

    def fail(self, lane: int, exc: BaseException) -> None:
        """A lane died: the run fails with the first such error; the other lanes stop claiming."""
        with self._lock:
            first = self.failure
            if first is None:
                self.failure = exc
        if first is None:
            return
        # Compared and logged without a statement's SQL and parameters (each lane's own `now`):
        # two lanes that met one lost server are one cause, and each line stays one line.
        if _cause(exc) == _cause(first):
            log.debug("lane %d failed too, of the same error", lane)
        else:  # the run reports the first error; this one is not lost either
            log.error("lane %d failed too: %s", lane, describe_db_error(exc))


def _cause(exc: BaseException) -> tuple:
    orig = getattr(exc, "orig", None) or exc
    return type(orig), getattr(orig, "args", ())


def rotate(ctx: RunContext, drain: Drain, pipeline: list[Stage],
           stats: dict[str, StageStats]) -> None:
    """One lane: the stages take turns one batch at a time until each is dry or at its LIMIT,
    or the run stops."""
    active = list(pipeline)

    def leave(stage: Stage, stopped: bool = False) -> None:
        active.remove(stage)
        drain.leave(stage.name, stopped)

    while active:
        for stage in list(active):
            if any(other.name in stage.waits_for for other in active):
                continue
            if drain.why_stop(ctx):
                return
            size = drain.reserve(stage.name, stage.batch_limit(ctx))
            if not size:
                leave(stage)
                continue
            stage_stats = stats[stage.name]
            started = time.perf_counter()
            taken = 0
            try:
                taken = stage.take(ctx, size, stage_stats)
            finally:
                spent = drain.took(stage.name, size, taken)
            if not taken:
                # Dry for now; an earlier stage still running may feed it (arrivals,
                # deliveries, markers), so it is only done once no earlier stage is.
                if not any(pipeline.index(other) < pipeline.index(stage) for other in active):
                    leave(stage)
                continue
            stage_stats.seconds += time.perf_counter() - started
            if stage_stats.stopped or spent:
                leave(stage, stopped=bool(stage_stats.stopped))


def lane_pipelines(make: Callable[[], list[Stage]], lanes: int) -> list[list[Stage]]:
    """Each lane's own stage objects: every stage in the first lane, the others without the
    stages only the first lane works."""
    return [make()] + [[stage for stage in make() if not stage.first_lane_only]
                       for _ in range(lanes - 1)]


def run_lanes(ctx: RunContext, drain: Drain,
              pipelines: list[list[Stage]]) -> list[dict[str, StageStats]]:
    """Run one lane per pipeline, the first in this thread (it keeps the signal handlers), and
    return each lane's figures; re-raise the first error a lane died of, once all have ended."""
    figures = [{stage.name: StageStats() for stage in pipeline} for pipeline in pipelines]

    def lane(number: int) -> None:
        pipeline = pipelines[number]
        try:
            with ctx.db.pinned():  # a connection of the lane's own (the first lane's is pinned)
                rotate(ctx, drain, pipeline, figures[number])
        except Exception as exc:
            drain.fail(number, exc)
        finally:
            for stage in pipeline:
                stage.close()

    # Daemons: a second SIGINT ends the process at once, lanes mid-batch included (the server
    # rolls their transactions back), as it ends a single lane.
    others = [threading.Thread(target=lane, args=(number,), name=f"lane-{number}", daemon=True)
              for number in range(1, len(pipelines))]
    try:
        for thread in others:
            thread.start()
        lane(0)
        for thread in others:
            thread.join()
    except BaseException as exc:  # a second SIGINT: the other lanes claim no more; we go at once
        drain.fail(0, exc)
        raise
    if drain.failure is not None:
        raise drain.failure
    return figures
