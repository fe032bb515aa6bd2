"""The scheduler service's loop: which slots fell due, which jobs start, and their children.

Every tick reads the wall clock (UTC) and, per job, compares the latest slot at or before now
with the last slot it handled (kept in the state file, so a restart knows it too). Slots, never
sleeps: a slow tick skips no slot, and a wall-clock step is judged by slots:

- forward (a suspended VM, an NTP step): the slots passed in between were missed; a catch-up job
  runs once for all of them, a "never late" job skips them, each with one log line;
- back: a slot already handled is never run again, so a daily job does not repeat; a job that
  runs at least hourly goes on from the new time instead of waiting for the old one to return.

Each job is a child process (`python tools/<tool>.py ARGS`, from the repository root) in its own
process group: a job that crashes or hangs cannot take the scheduler with it. Its output lines
are relayed to the scheduler's log, prefixed with the tool and pid.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..files import write_atomically
from ..runtime import StopSignal
from ..schedule import HOUR, ScheduledJob
from ..settings import REPO_ROOT
from .clock import Clock

log = logging.getLogger("ops")

STATE_VERSION = 1
SAVE_EVERY_SECONDS = 15.0  # the last tick is saved this often when nothing else changed
STEP_BACK_TOLERANCE = dt.timedelta(seconds=2)  # a smaller step back is jitter, not a step
COUNT_MISSED_UP_TO = 1000  # missed slots are counted this far (a minutely job down for a week)


def late_after_seconds(job: ScheduledJob, slot: dt.datetime) -> float:
    """How late a slot may start and still count as on time: half the job's interval, at least
    a minute, at most an hour (APScheduler's 1 s default is what its users complain about)."""
    return min(max(job.interval_seconds(slot) / 2, 60.0), float(HOUR))


def _when(moment: dt.datetime | None) -> str | None:
    return moment.isoformat(sep=" ", timespec="seconds") if moment else None


def _parse_when(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


@dataclass
class Child:
    """One running copy of a job."""

    job: ScheduledJob
    slot: dt.datetime
    process: subprocess.Popen
    started_at: dt.datetime  # wall clock, for people
    started_tick: float  # the clock's monotonic seconds, for the timeout
    relay: threading.Thread | None = None
    terminated_at: float | None = None  # when SIGTERM was sent (monotonic)
    killed: bool = False
    why_stopped: str | None = None  # "timeout" or "shutdown"

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Tally:
    """What the service did, for its result and ledger row."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount


class Scheduler:
    """Decides, per tick, which jobs start; starts, reaps, times out and stops their children."""

    def __init__(self, jobs: Iterable[ScheduledJob], clock: Clock, state_file: str | Path,
                 tools_dir: str | Path | None = None, kill_grace: float = 60.0,
                 env: dict[str, str] | None = None,
                 close_killed: Callable[[str, int, str], object] | None = None,
                 rng: random.Random | None = None, once: bool = False):
        self.jobs = list(jobs)
        # `run --once`: its one tick starts what is due, so no random delay (a delayed start
        # would be marked handled and never run).
        self.once = once
        self.rng = rng or random.Random()
        # Heavy jobs' starts put off by their random delay: tool -> (slot, start at).
        self.delayed: dict[str, tuple[dt.datetime, dt.datetime]] = {}
        # (tool, pid, why): closes the ledger row of a run killed by SIGKILL, which cannot.
        self.close_killed = close_killed
        self.clock = clock
        self.state_file = Path(state_file)
        self.tools_dir = Path(tools_dir) if tools_dir else REPO_ROOT / "tools"
        self.kill_grace = kill_grace
        self.env = env
        self.children: list[Child] = []
        self.tally = Tally()
        self.last_slot: dict[str, dt.datetime] = {}
        self.last_run: dict[str, dict] = {}
        self.last_tick: dt.datetime | None = None
        self._dirty = False
        self._saved_at = float("-inf")
        self._load()

    # --- state ---------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("state file %s unreadable (%s): starting afresh", self.state_file, exc)
            return
        self.last_tick = _parse_when(state.get("last_tick"))
        for tool, saved in state.get("jobs", {}).items():
            if saved.get("last_slot"):
                self.last_slot[tool] = _parse_when(saved["last_slot"])
            if saved.get("last_run"):
                self.last_run[tool] = saved["last_run"]
            if saved.get("delayed"):
                slot, start_at = saved["delayed"]
                self.delayed[tool] = (_parse_when(slot), _parse_when(start_at))

    def save(self, force: bool = False) -> None:
        """Write the state file (atomically) when something changed, or every little while."""
        if not (force or self._dirty or time.monotonic() - self._saved_at >= SAVE_EVERY_SECONDS):
            return
        state = {
            "version": STATE_VERSION,
            "pid": os.getpid(),
            "last_tick": _when(self.last_tick),
            "jobs": {job.tool: {
                "last_slot": _when(self.last_slot.get(job.tool)),
                "last_run": self.last_run.get(job.tool),
                "delayed": ([_when(moment) for moment in self.delayed[job.tool]]
                            if job.tool in self.delayed else None),
                "running": [{"pid": c.pid, "slot": _when(c.slot),
                             "started_at": _when(c.started_at)} for c in self.running(job)],
            } for job in self.jobs},
        }
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.state_file, json.dumps(state, indent=1, sort_keys=True))
        self._dirty = False
        self._saved_at = time.monotonic()

    # --- ticks -----------------------------------------------------------------------------

    def tick(self, now: dt.datetime) -> None:
        """Reap finished children, stop overdue ones, and start every job whose slot is due."""
        now = now.replace(microsecond=0)
        self.reap()
        self.enforce_timeouts()
        stepped_back = self.last_tick is not None and now < self.last_tick - STEP_BACK_TOLERANCE
        if stepped_back:
            log.warning("the wall clock went back from %s to %s: slots already handled are not "
                        "run again", _when(self.last_tick), _when(now))
            self.tally.add("clock_steps_back")
        for job in self.jobs:
            self._consider(job, now, stepped_back)
        self.last_tick = now
        self.save()

    def next_wake(self, now: dt.datetime) -> dt.datetime:
        now = now.replace(microsecond=0)
        return min([job.next_slot(now) for job in self.jobs]
                   + [start_at for _, start_at in self.delayed.values()])

    def _consider(self, job: ScheduledJob, now: dt.datetime, stepped_back: bool) -> None:
        waiting = self.delayed.get(job.tool)
        if waiting is not None:
            if now < waiting[1] and not self.once:
                return
            del self.delayed[job.tool]
            self._dirty = True
            self._start_unless_running(job, waiting[0], now)
            return
        due = job.previous_slot(now)
        late_after = late_after_seconds(job, due)
        lateness = (now - due).total_seconds()
        last = self.last_slot.get(job.tool)
        if last is None:
            # First sight of the job (no state yet): a slot due within its lateness window runs
            # now; an older one is history, never a catch-up.
            before_due = job.previous_slot(due - dt.timedelta(seconds=1))
            last = due if lateness > late_after else before_due
            self.last_slot[job.tool] = last
            self._dirty = True
        elif stepped_back and last > now and job.interval_seconds(due) <= HOUR:
            # A frequent job would otherwise wait for the old time to come round again.
            log.info("%s: the clock went back; going on from the slot of %s", job.tool,
                     _when(due))
            self.last_slot[job.tool] = due
            self._dirty = True
            return
        if due <= last:
            return
        missed = self._slots_between(job, last, due)
        self.last_slot[job.tool] = due  # handled now, whatever happens below
        self._dirty = True
        late = lateness > late_after
        if late and not job.catch_up:
            skipped = missed + 1
            log.warning("%s: %d slot%s missed (the last at %s, %s late): skipped, the job is "
                        "never run late; next slot %s", job.tool, skipped, _plural(skipped),
                        _when(due), _duration(lateness), _when(job.next_slot(now)))
            self.tally.add("slots_missed", skipped)
            return
        if missed or late:
            log.info("%s: %d slot%s missed since %s: running once now", job.tool, missed + 1,
                     _plural(missed + 1), _when(last))
            self.tally.add("slots_missed", missed)
            self.tally.add("caught_up")
        if job.randomized_delay_seconds and not self.once:
            # Hosts sharing a database server do not all start the heavy jobs in one second
            # (systemd's RandomizedDelaySec; a catch-up run is delayed too, as there).
            start_at = now + dt.timedelta(
                seconds=round(self.rng.uniform(0, job.randomized_delay_seconds)))
            if start_at > now:
                self.delayed[job.tool] = (due, start_at)
                log.info("%s: slot %s: starts at %s (random delay of up to %s)", job.tool,
                         _when(due), _when(start_at), _duration(job.randomized_delay_seconds))
                return
        self._start_unless_running(job, due, now)

    def _start_unless_running(self, job: ScheduledJob, due: dt.datetime,
                              now: dt.datetime) -> None:
        running = self.running(job)
        allowed = job.max_copies if job.overlap else 1
        if len(running) >= allowed:
            oldest = min(running, key=lambda c: c.started_tick)
            log.warning("%s: slot %s skipped: %s since %s (pid %d)", job.tool, _when(due),
                        "still running" if allowed == 1 else f"{len(running)} copies running",
                        _when(oldest.started_at), oldest.pid)
            self.tally.add("slots_skipped_running")
            return
        self.start(job, due, now)

    @staticmethod
    def _slots_between(job: ScheduledJob, last: dt.datetime, due: dt.datetime) -> int:
        """How many slots lie strictly between `last` and `due` (counted up to a cap)."""
        count, slot = 0, job.next_slot(last)
        while slot < due and count < COUNT_MISSED_UP_TO:
            count += 1
            slot = job.next_slot(slot)
        return count

    # --- children --------------------------------------------------------------------------

    def running(self, job: ScheduledJob) -> list[Child]:
        return [c for c in self.children if c.job.tool == job.tool]

    def command(self, job: ScheduledJob) -> list[str]:
        return [sys.executable, str(self.tools_dir / f"{job.tool}.py"), *job.args]

    def start(self, job: ScheduledJob, slot: dt.datetime, now: dt.datetime) -> Child | None:
        env = dict(self.env if self.env is not None else os.environ)
        # The child's lines reach the log once, through the relay, not also by its own
        # --log-file; unbuffered, so they arrive as they are written.
        env.pop("OPS_LOG_FILE", None)
        env["PYTHONUNBUFFERED"] = "1"
        options: dict = {}
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            options["start_new_session"] = True  # its own group: a signal reaches its children
        try:
            process = subprocess.Popen(
                self.command(job), cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                bufsize=1, **options)
        except OSError as exc:
            log.error("%s: slot %s: could not start: %s", job.tool, _when(slot), exc)
            self.tally.add("start_failures")
            self._record(job, slot, now, None, f"could not start: {exc}", None)
            return None
        child = Child(job, slot, process, now, self.clock.monotonic())
        child.relay = threading.Thread(target=_relay, args=(job.tool, process), daemon=True)
        child.relay.start()
        self.children.append(child)
        self.tally.add("started")
        log.info("%s: slot %s: started (pid %d)", job.tool, _when(slot), process.pid)
        self._record(job, slot, now, process.pid, "running", None)
        return child

    def _record(self, job: ScheduledJob, slot: dt.datetime, started: dt.datetime,
                pid: int | None, outcome: str, exit_code: int | None,
                finished: dt.datetime | None = None) -> None:
        self.last_run[job.tool] = {
            "slot": _when(slot), "started_at": _when(started), "pid": pid,
            "finished_at": _when(finished), "outcome": outcome, "exit_code": exit_code}
        self._dirty = True

    def reap(self) -> list[Child]:
        """Collect the children that ended; log and record how each ended."""
        ended = [c for c in self.children if c.process.poll() is not None]
        for child in ended:
            self.children.remove(child)
            if child.relay is not None:
                child.relay.join(timeout=1)  # a job's own child may hold the pipe
            code = child.process.returncode
            took = _duration(self.clock.monotonic() - child.started_tick)
            if child.why_stopped == "timeout":
                how = "SIGKILL" if child.killed else "SIGTERM"
                outcome = f"timed out after {_duration(child.job.time_limit_seconds)}: stopped " \
                          f"by {how}"
                self.tally.add("timed_out")
            elif child.why_stopped == "shutdown":
                outcome = "stopped with the service" + (" (SIGKILL)" if child.killed else "")
                self.tally.add("stopped_with_service")
            elif code == 0:
                outcome = "ok"
                self.tally.add("ok")
            elif code < 0:
                outcome = f"killed by {_signal_name(-code)}"
                self.tally.add("failed")
            else:
                outcome = f"failed (exit {code})"
                self.tally.add("failed")
            if child.killed and self.close_killed is not None:
                try:
                    self.close_killed(child.job.tool, child.pid,
                                      f"killed by the scheduler: {outcome}")
                except Exception as exc:  # the ledger is best effort; the next run closes it
                    log.warning("%s: pid %d: ledger row not closed: %s", child.job.tool,
                                child.pid, exc)
            level = logging.INFO if outcome == "ok" else logging.WARNING
            log.log(level, "%s: slot %s (pid %d): %s, exit %s, after %s", child.job.tool,
                    _when(child.slot), child.pid, outcome, code, took)
            if self.last_run.get(child.job.tool, {}).get("pid") in (child.pid, None):
                self._record(child.job, child.slot, child.started_at, child.pid, outcome, code,
                             finished=self.clock.now().replace(microsecond=0))
        return ended

    def enforce_timeouts(self) -> None:
        """SIGTERM a child past its budget plus grace; SIGKILL it a kill grace later."""
        now = self.clock.monotonic()
        for child in self.children:
            if child.process.poll() is not None:
                continue
            if child.terminated_at is None:
                if now - child.started_tick > child.job.time_limit_seconds:
                    log.warning("%s: slot %s (pid %d) still running after %s (budget %ds + "
                                "grace %ds): SIGTERM", child.job.tool, _when(child.slot),
                                child.pid, _duration(now - child.started_tick),
                                child.job.budget_seconds, child.job.grace_seconds)
                    child.why_stopped = "timeout"
                    self._terminate(child, now)
            elif not child.killed and now - child.terminated_at > self.kill_grace:
                log.warning("%s: pid %d ignored SIGTERM for %s: SIGKILL", child.job.tool,
                            child.pid, _duration(self.kill_grace))
                self._kill(child)

    def _terminate(self, child: Child, at: float) -> None:
        child.terminated_at = at
        _send(child.process, signal.SIGTERM)

    def _kill(self, child: Child) -> None:
        child.killed = True
        _send(child.process, getattr(signal, "SIGKILL", signal.SIGTERM))

    def wait_for_children(self, stop: StopSignal,
                          heartbeat: Callable[[], None] | None = None) -> None:
        """Until every child has ended (`--once`), timeouts applied, beating `heartbeat` (which
        limits its own rate) so the service does not look dead; a stop signal ends the wait."""
        while self.children and not stop.is_set():
            self.reap()
            self.enforce_timeouts()
            if heartbeat is not None:
                heartbeat()
            if self.children:
                stop.wait(0.1)
        self.reap()

    def shutdown(self, wait: Callable[[float], object] = time.sleep) -> None:
        """Stop: SIGTERM to every running job, up to the kill grace for them to end, then
        SIGKILL (real seconds: the children are real processes)."""
        self.reap()
        if self.children:
            log.warning("stopping: SIGTERM to %d running job%s, %s for them to finish",
                        len(self.children), _plural(len(self.children)),
                        _duration(self.kill_grace))
            for child in self.children:
                child.why_stopped = child.why_stopped or "shutdown"
                if child.terminated_at is None:
                    self._terminate(child, self.clock.monotonic())
            ends = time.monotonic() + self.kill_grace
            while self.children and time.monotonic() < ends:
                wait(0.05)
                self.reap()
            for child in self.children:
                log.warning("%s: pid %d still running after the grace: SIGKILL", child.job.tool,
                            child.pid)
                self._kill(child)
            for child in list(self.children):
                child.process.wait()
            self.reap()
        self.save(force=True)

    def kill_all(self) -> None:
        """A second interrupt: SIGKILL every child at once."""
        for child in self.children:
            if child.process.poll() is None:
                self._kill(child)


def _send(process: subprocess.Popen, signum: int) -> None:
    if process.poll() is not None:
        return
    try:
        if os.name == "nt":
            process.terminate() if signum == signal.SIGTERM else process.kill()
        else:
            os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _relay(tool: str, process: subprocess.Popen) -> None:
    """Each line the child writes goes to the scheduler's log."""
    for line in process.stdout:
        line = line.rstrip("\n")
        if line:
            log.info("%s[%d]: %s", tool, process.pid, line)
    process.stdout.close()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _plural(count: int) -> str:
    return "" if count == 1 else "s"


def _duration(seconds: float) -> str:
    from ..jobs.queue_health.freshness import duration_in_words

    return duration_in_words(dt.timedelta(seconds=seconds))


def serve(scheduler: Scheduler, stop: StopSignal, heartbeat: Callable[[], None],
          once: bool = False) -> None:
    """The service's loop: tick, beat, sleep to the next slot (never longer than a poll), until
    a stop signal; then stop the running jobs. `once`: one tick, wait for what it started."""
    clock = scheduler.clock

    def beat() -> None:
        try:
            heartbeat()
        except Exception as exc:  # a database blip must not stop the jobs: beat again later
            log.warning("heartbeat not written to the run ledger: %s", exc)

    try:
        while True:
            now = clock.now()
            scheduler.tick(now)
            beat()
            if once:
                scheduler.wait_for_children(stop, beat)
                break
            if stop.is_set():
                break
            clock.sleep_until(scheduler.next_wake(now), stop)
            if stop.is_set():
                break
        scheduler.shutdown()
    except BaseException:
        scheduler.kill_all()  # a second Ctrl-C, or a bug: leave no job behind
        raise


def read_state(state_file: str | Path) -> dict:
    """The state file as the service last wrote it ({} when there is none)."""
    try:
        return json.loads(Path(state_file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
