"""The scheduler service: runs the schedule (ops_lib/schedule.py) itself, for hosts without cron,
Task Scheduler or systemd timers (a container, a locked-down Windows server).

`run` is the service in the foreground (systemd, Docker, a Task Scheduler "at startup" task);
`start`/`stop`/`restart`/`status` manage it through its PID file on hosts without a service
manager; `run --once` runs what is due now and exits; `--check` validates the schedule. The loop
and its policies are in service.py, the PID file in pidfile.py. Restarting the service after a
crash is a supervisor's job (the systemd unit, the Task Scheduler task), not this module's.

Stdlib only at import time: the tool's `--help` loads this module.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..result import JobResult
    from ..runtime import RunContext
    from ..schedule import ScheduledJob

ACTIONS = ("run", "start", "stop", "restart", "status")
DEFAULT_KILL_GRACE_SECONDS = 60
START_WAIT_SECONDS = 30  # how long `start` waits for the new service to hold its PID file
NAME = "run_scheduler"


def default_pid_file() -> str:
    from ..settings import DEFAULT_VAR_DIR

    return str(DEFAULT_VAR_DIR / f"{NAME}.pid")


def default_state_file() -> str:
    from ..settings import DEFAULT_VAR_DIR

    return str(DEFAULT_VAR_DIR / f"{NAME}.state.json")


def default_log_file() -> str:
    from ..settings import DEFAULT_VAR_DIR

    return str(DEFAULT_VAR_DIR / f"{NAME}.log")


def load_test_schedule(path: str) -> tuple[list[ScheduledJob], str | None]:
    """A schedule from a JSON file ({"tools_dir": ..., "jobs": [{tool, cron, ...}]}) instead
    of ops_lib/schedule.py: how the tests run the service on scripts of their own."""
    from ..schedule import ScheduledJob

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    jobs = [ScheduledJob(
        job["tool"], job["cron"], tuple(job.get("args", ())),
        budget_seconds=job.get("budget_seconds", 60), overlap=job.get("overlap", False),
        catch_up=job.get("catch_up", True), grace_seconds=job.get("grace_seconds", 0),
        what=job.get("what", "test job"), max_copies=job.get("max_copies", 1),
        randomized_delay_seconds=job.get("randomized_delay_seconds", 0))
        for job in data["jobs"]]
    return jobs, data.get("tools_dir")


def schedule_problems(jobs: list[ScheduledJob], tools_dir: str | None = None) -> list[str]:
    """What is wrong with the jobs the service would run: one line each. The schedule's own
    rules (ops_lib/schedule_files.py: every expression one that cron, Task Scheduler and systemd
    all say the same way; copies), and each job's script exists."""
    from ..schedule_files import schedule_problems as runner_problems
    from ..settings import REPO_ROOT

    folder = Path(tools_dir) if tools_dir else REPO_ROOT / "tools"
    problems = runner_problems(jobs)
    for job in jobs:
        if not (folder / f"{job.tool}.py").exists():
            problems.append(f"{job.tool}: {folder / (job.tool + '.py')} does not exist "
                            "(a tool not built yet cannot be scheduled)")
    return problems


def service_command(script: str, argv: list[str], action: str, log_file: str | None) -> list[str]:
    """The command `start` runs: this command line with `run` for its ACTION, never --json, and
    a --log-file (default var/run_scheduler.log): a detached service has no terminal. Without
    --database-url: `start` passes the URL in the environment (the ledger records this list,
    and `ps` shows a command line to every user)."""
    words: list[str] = []
    skip_value = False
    for word in argv:
        if skip_value:
            skip_value = False
        elif word == "--database-url":
            skip_value = True
        elif word != "--json" and not word.startswith("--database-url="):
            words.append(word)
    if action in words:
        words[words.index(action)] = "run"
    if not log_file:
        words += ["--log-file", default_log_file()]
    return [sys.executable, script, *words]


def validate(action: str | None, check: bool, once: bool, settings=None,
             test_schedule: str | None = None) -> list[str]:
    """Option problems, found before connecting; with --check, the schedule's problems."""
    if check:
        return schedule_problems(*_jobs(settings, test_schedule))
    if action is None:
        return [f"give an ACTION ({', '.join(ACTIONS)}) or --check"]
    if once and action != "run":
        return [f"--once goes with run, not {action}"]
    if os.name == "nt" and action in ("start", "stop", "restart"):
        return [f"{action} is for hosts without a service manager and is POSIX only: on Windows "
                "run the service from a Task Scheduler task (taskscheduler/), "
                "`python tools/run_scheduler.py run`, and stop or start that task"]
    return []


def run(ctx: RunContext, action: str | None, once: bool = False, check: bool = False,
        pid_file: str | None = None, state_file: str | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE_SECONDS, service_command: list[str] | None = None,
        test_schedule: str | None = None) -> JobResult:
    """The scheduler's ACTION (see the module's docstring)."""
    from ..result import JobResult

    result = JobResult(ctx.tool, ctx.dry_run)
    pid_file = pid_file or default_pid_file()
    state_file = state_file or default_state_file()
    jobs, tools_dir = _jobs(ctx.settings, test_schedule)
    if check:  # its problems were found before connecting (validate)
        _jobs_section(result, jobs, {}, dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
        result.stop_reason = f"schedule valid: {len(jobs)} jobs"
        return result
    if action == "run":
        _serve(ctx, result, jobs, tools_dir, pid_file, state_file, kill_grace, once)
    elif action == "status":
        _status(result, jobs, pid_file, state_file)
    elif action == "stop":
        _stop(result, pid_file, kill_grace)
    elif action == "start":
        _start(result, pid_file, service_command, ctx.settings.database_url)
    elif action == "restart":
        _stop(result, pid_file, kill_grace)
        _start(result, pid_file, service_command, ctx.settings.database_url)
    return result


def _jobs(settings, test_schedule: str | None) -> tuple[list[ScheduledJob], str | None]:
    """The jobs this host runs (with the tools folder a test schedule names)."""
    from ..schedule import active_jobs

    if test_schedule:
        return load_test_schedule(test_schedule)
    return active_jobs(settings.optional_jobs), None


def _serve(ctx, result, jobs, tools_dir, pid_file, state_file, kill_grace, once) -> None:
    from ..cli import summary
    from ..ledger import close_killed_run
    from .clock import SystemClock
    from .pidfile import PidFile
    from .service import Scheduler, serve

    lock = PidFile(pid_file)
    if not lock.acquire():
        # Like every tool whose lock is held: skipped, exit 0 (a `--once` from cron while the
        # last one still waits for a long job; a supervisor must not restart in a loop).
        summary.info("skipped: the scheduler already runs (pid %s, pid file %s)",
                     lock.read_pid() or "?", pid_file)
        result.status = "skipped"
        result.stop_reason = f"the scheduler already runs (pid {lock.read_pid() or '?'})"
        return
    try:
        # The jobs use the service's database, also when it came from --database-url.
        env = dict(os.environ, OPS_DATABASE_URL=ctx.settings.database_url)
        scheduler = Scheduler(jobs, SystemClock(), state_file, tools_dir, kill_grace, env,
                              close_killed=lambda tool, pid, why: close_killed_run(
                                  ctx.db, tool, pid, why), once=once)
        ctx.log.info("scheduler %s: %d jobs (%s), pid file %s, state %s", "--once" if once
                     else "running", len(jobs), ", ".join(j.tool for j in jobs), pid_file,
                     state_file)
        serve(scheduler, ctx.stop, lambda: ctx.heartbeat(), once=once)
    finally:
        lock.release()
    result.counts.update(scheduler.tally.counts)
    if ctx.stop.is_set():
        result.stop_reason = f"interrupted by {ctx.stop.signal_name}"
    else:
        result.stop_reason = "ran what was due" if once else "stopped"


def _status(result, jobs, pid_file, state_file) -> None:
    from .pidfile import PidFile
    from .service import read_state

    lock = PidFile(pid_file)
    pid = lock.holder()
    state = read_state(state_file)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    result.section("Service", [{
        "running": "yes" if pid is not None else "no",
        "pid": pid if pid is not None else None,
        "last_tick": state.get("last_tick"),
        "pid_file": pid_file,
        "state_file": state_file,
    }], id_columns=("pid",))
    _jobs_section(result, jobs, state.get("jobs", {}), now, running=pid is not None)
    result.counts["running"] = int(pid is not None)
    stale = lock.read_pid() if pid is None else None
    result.stop_reason = (f"running (pid {pid})" if pid is not None else
                          "not running" + (f" (stale pid file of pid {stale})" if stale else ""))


def _jobs_section(result, jobs, saved: dict, now: dt.datetime, running: bool = False) -> None:
    rows = []
    for job in jobs:
        job_state = saved.get(job.tool, {})
        last = job_state.get("last_run") or {}
        copies = len(job_state.get("running", [])) if running else 0
        delayed = job_state.get("delayed") if running else None
        rows.append({
            "tool": job.tool,
            "schedule": job.in_words(),
            "policy": _policy(job),
            "timeout": f"{job.time_limit_seconds}s",
            "last_slot": job_state.get("last_slot"),
            "last_run": last.get("started_at"),
            "outcome": last.get("outcome"),
            "state": (f"running ({copies})" if copies else
                      f"random delay: starts {delayed[1]}" if delayed else "idle"),
            "next_slot": job.next_slot(now.replace(microsecond=0)).isoformat(
                sep=" ", timespec="seconds"),
        })
    result.section("Jobs", rows)


def _policy(job: ScheduledJob) -> str:
    overlap = f"up to {job.max_copies} copies" if job.overlap and job.max_copies > 1 else \
        "one at a time"
    return f"{overlap}, {'catch up once' if job.catch_up else 'never late'}"


def _stop(result, pid_file, kill_grace) -> None:
    """SIGTERM the pid in the PID file, only while its lock is held; wait for the lock to go."""
    import signal

    from ..errors import JobFailed
    from .pidfile import PidFile

    lock = PidFile(pid_file)
    pid = lock.holder()
    if pid is None:
        stale = lock.read_pid()
        result.stop_reason = "not running" + (f" (stale pid file of pid {stale} ignored)"
                                              if stale else "")
        return
    if not pid:
        raise JobFailed(f"the PID file {pid_file} is locked but holds no pid: stop the service "
                        "by hand")
    os.kill(pid, signal.SIGTERM)
    # The service gives its running jobs the kill grace; then it exits and the lock goes.
    waited_for = kill_grace + START_WAIT_SECONDS
    ends = time.monotonic() + waited_for
    while lock.holder() is not None and time.monotonic() < ends:
        time.sleep(0.1)
    if lock.holder() is not None:
        raise JobFailed(f"pid {pid} still runs {waited_for:g} s after SIGTERM")
    result.add("stopped")
    result.stop_reason = f"stopped (pid {pid})"


def _start(result, pid_file, service_command, database_url: str) -> None:
    """Start `run` as a detached process (its own session, no terminal); wait until it holds
    its PID file."""
    from ..errors import JobFailed
    from .pidfile import PidFile

    lock = PidFile(pid_file)
    pid = lock.holder()
    if pid is not None:
        result.stop_reason = f"already running (pid {pid})"
        return
    process = subprocess.Popen(service_command, env=dict(os.environ,
                                                         OPS_DATABASE_URL=database_url),
                               stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, close_fds=True)
    ends = time.monotonic() + START_WAIT_SECONDS
    while time.monotonic() < ends:
        if lock.holder() == process.pid:
            result.add("started")
            result.stop_reason = f"started (pid {process.pid})"
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    code = process.poll()
    raise JobFailed(f"the service exited {code} at once: see its log" if code is not None else
                    f"the service (pid {process.pid}) did not take its PID file within "
                    f"{START_WAIT_SECONDS} s: see its log")
