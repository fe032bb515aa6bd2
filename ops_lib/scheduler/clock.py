"""The scheduler's clock: the wall clock in UTC for slots, a monotonic one for durations.

Slots come from the wall clock (a cron slot is a wall-clock time), durations (a job's timeout,
the kill grace) from the monotonic clock, so a wall-clock step neither kills a job early nor lets
one run on. Tests pass a clock of their own with the same three methods.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol

from ..runtime import StopSignal

# The longest the loop sleeps at once: children are reaped and timeouts checked this often, and
# a wall-clock step is noticed within this much.
POLL_SECONDS = 1.0


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """Now, naive UTC (what the schedule's slots and the database use)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never steps (durations only)."""

    def sleep_until(self, moment: dt.datetime, stop: StopSignal) -> None:
        """Return at `moment` (wall clock) or earlier: on a stop signal, or after POLL_SECONDS."""


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep_until(self, moment: dt.datetime, stop: StopSignal) -> None:
        # Never one long sleep: the wall clock may step while we wait, and children need reaping.
        left = (moment - self.now()).total_seconds()
        stop.wait(min(max(left, 0.0), POLL_SECONDS))
