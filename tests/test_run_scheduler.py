"""The scheduler service (tools/run_scheduler.py, ops_lib/scheduler/).

Its jobs are real child processes of a test script (tests/fakes/scheduled_job.py) linked into a
tools folder of the test's own, never the real tools. The slot logic is driven by a fake clock
(the wall clock and the monotonic one apart, so a wall-clock step is a step of one only); the
service's own process (signals, PID file, start/status/stop) runs for real. Nothing waits on a
guess of the machine's speed: each test blocks on a file a child writes or on a process ending.
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
import time
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from ops_lib.db import connect
from ops_lib.runtime import StopSignal
from ops_lib.schedule import ScheduledJob
from ops_lib.scheduler.service import Scheduler, read_state
from ops_lib.schema import ops_job_runs
from tests.conftest import REPO, run_cli, sqlite_database, tool_env

FAKE_JOB = REPO / "tests" / "fakes" / "scheduled_job.py"
T0 = dt.datetime(2026, 3, 10, 12, 0, 30)  # 30 s after a minute's slot
WAIT_SECONDS = 60  # the most any wait for a process here may take before the test fails


class FakeClock:
    """The wall clock the test sets; monotonic seconds advance only with `advance`."""

    def __init__(self, start: dt.datetime):
        self.wall = start
        self.ticks = 0.0

    def now(self) -> dt.datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.ticks

    def sleep_until(self, moment, stop) -> None:  # the tests tick by hand
        raise AssertionError("not used")

    def advance(self, seconds: float) -> dt.datetime:
        self.wall += dt.timedelta(seconds=seconds)
        self.ticks += seconds
        return self.wall

    def step_to(self, moment: dt.datetime) -> dt.datetime:
        """A wall-clock step (NTP, a suspended VM): the monotonic clock does not move."""
        self.wall = moment
        return self.wall


def wait_for(condition, what: str) -> None:
    ends = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > ends:
            pytest.fail(f"gave up after {WAIT_SECONDS} s waiting for {what}")
        time.sleep(0.02)


class Rig:
    """A tools folder of test jobs, the folder they report to, and the scheduler's state."""

    def __init__(self, tmp_path: Path):
        self.tools = tmp_path / "tools"
        self.out = tmp_path / "out"
        self.tools.mkdir()
        self.out.mkdir()
        self.state_file = tmp_path / "state.json"
        self.release = tmp_path / "release"

    def job(self, tool: str, cron: str, *args: str, budget: int = 60, grace: int = 0,
            overlap: bool = False, catch_up: bool = False, copies: int = 1,
            delay: int = 0) -> ScheduledJob:
        link = self.tools / f"{tool}.py"
        if not link.exists():
            link.symlink_to(FAKE_JOB)
        return ScheduledJob(tool, cron, ("--dir", str(self.out), *args), budget_seconds=budget,
                            overlap=overlap, catch_up=catch_up, grace_seconds=grace,
                            what="a test job", max_copies=copies,
                            randomized_delay_seconds=delay)

    def scheduler(self, jobs: list[ScheduledJob], clock, kill_grace: float = 60) -> Scheduler:
        return Scheduler(jobs, clock, self.state_file, self.tools, kill_grace)

    def started(self, tool: str) -> list[Path]:
        return sorted(self.out.glob(f"{tool}.*.started"))

    def termed(self, tool: str) -> list[Path]:
        return sorted(self.out.glob(f"{tool}.*.term"))

    def schedule_file(self, jobs: list[dict]) -> Path:
        for job in jobs:
            link = self.tools / f"{job['tool']}.py"
            if not link.exists():
                link.symlink_to(FAKE_JOB)
            job["args"] = ["--dir", str(self.out), *job.get("args", [])]
        path = self.tools.parent / "schedule.json"
        path.write_text(json.dumps({"tools_dir": str(self.tools), "jobs": jobs}),
                        encoding="utf-8")
        return path


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path)


@pytest.fixture
def log_lines(caplog):
    caplog.set_level(logging.INFO, logger="ops")

    def lines(fragment: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if fragment in r.getMessage()]

    return lines


def settle(scheduler: Scheduler) -> None:
    """Wait until every child started so far has ended (the fake clock stands still)."""
    scheduler.wait_for_children(StopSignal())


# --- slots, overlap, timeouts, catch-up, clock steps (fake clock, real children) --------------

def test_a_due_job_runs_once_per_slot(rig):
    clock = FakeClock(T0)
    scheduler = rig.scheduler([rig.job("minutely", "* * * * *", "--exit", "0")], clock)
    for _minute in range(3):
        scheduler.tick(clock.now())
        settle(scheduler)
        for _ in range(3):  # later ticks in the same minute start nothing
            scheduler.tick(clock.advance(9))
        clock.advance(60 - 27)
    assert len(rig.started("minutely")) == 3
    assert scheduler.tally.counts == {"started": 3, "ok": 3}
    state = json.loads(rig.state_file.read_text(encoding="utf-8"))["jobs"]["minutely"]
    assert state["last_slot"] == "2026-03-10 12:02:00"
    assert state["last_run"]["outcome"] == "ok"


def test_an_overlapping_slot_is_skipped_with_one_line_and_a_two_copy_job_runs_two(rig,
                                                                                  log_lines):
    clock = FakeClock(T0)
    wait = ("--wait-for", str(rig.release))
    single = rig.job("single", "* * * * *", *wait, budget=3600)
    double = rig.job("double", "* * * * *", *wait, budget=3600, overlap=True, copies=2)
    scheduler = rig.scheduler([single, double], clock)
    scheduler.tick(clock.now())  # 12:00:30: both start
    for seconds in (35, 10, 20, 10, 20):  # 12:01:05 ... 12:02:05: two more slots
        scheduler.tick(clock.advance(seconds))
    wait_for(lambda: len(rig.started("single")) == 1 and len(rig.started("double")) == 2,
             "one copy of single and two of double")
    assert [len(scheduler.running(job)) for job in (single, double)] == [1, 2]
    skipped_single = log_lines("single: slot")
    assert [line for line in skipped_single if "skipped" in line] == [
        f"single: slot 2026-03-10 12:0{m}:00 skipped: still running since 2026-03-10 12:00:30 "
        f"(pid {scheduler.running(single)[0].pid})" for m in (1, 2)]
    assert [line for line in log_lines("double: slot") if "skipped" in line] == [
        line for line in log_lines("double: slot 2026-03-10 12:02:00 skipped: 2 copies running")]
    assert len(log_lines("double: slot 2026-03-10 12:02:00 skipped")) == 1
    rig.release.touch()
    settle(scheduler)
    assert len(rig.started("single")) == 1 and len(rig.started("double")) == 2


def test_a_job_past_its_timeout_gets_sigterm_then_sigkill_and_both_are_recorded(rig, log_lines):
    clock = FakeClock(T0)
    polite = rig.job("polite", "0 12 * * *", budget=10, grace=5)
    stubborn = rig.job("stubborn", "0 12 * * *", "--ignore-term", budget=10, grace=5)
    scheduler = rig.scheduler([polite, stubborn], clock, kill_grace=3)
    scheduler.tick(clock.now())
    wait_for(lambda: rig.started("polite") and rig.started("stubborn"), "both jobs to start")
    scheduler.tick(clock.advance(15))  # budget + grace reached, not passed
    assert rig.termed("polite") == [] and len(scheduler.children) == 2
    scheduler.tick(clock.advance(1))
    wait_for(lambda: scheduler.running(polite)[0].process.poll() is not None,
             "the polite job to end on SIGTERM")
    scheduler.tick(clock.advance(1))
    assert len(rig.termed("polite")) == 1
    assert scheduler.last_run["polite"]["outcome"] == "timed out after 15s: stopped by SIGTERM"
    [child] = scheduler.running(stubborn)
    assert child.process.poll() is None  # it ignores SIGTERM
    scheduler.tick(clock.advance(2))  # 3 s since SIGTERM: the kill grace, not past it
    assert child.process.poll() is None and not child.killed
    scheduler.tick(clock.advance(2))
    wait_for(lambda: child.process.poll() is not None, "the stubborn job to die of SIGKILL")
    scheduler.tick(clock.advance(1))
    assert child.process.returncode == -signal.SIGKILL
    assert scheduler.last_run["stubborn"]["outcome"] == "timed out after 15s: stopped by SIGKILL"
    assert scheduler.tally.counts["timed_out"] == 2
    assert len(log_lines(f"stubborn: pid {child.pid} ignored SIGTERM for 3s: SIGKILL")) == 1
    saved = json.loads(rig.state_file.read_text(encoding="utf-8"))["jobs"]
    assert saved["stubborn"]["last_run"]["outcome"].endswith("SIGKILL")


def test_after_a_gap_of_several_slots_a_catch_up_job_runs_once_and_a_never_late_one_not_at_all(
        rig, log_lines):
    clock = FakeClock(T0)
    jobs = [rig.job("catches_up", "0 * * * *", "--exit", "0", catch_up=True),
            rig.job("never_late", "0 * * * *", "--exit", "0", catch_up=False)]
    first = rig.scheduler(jobs, clock)
    first.tick(clock.now())
    settle(first)
    # The service is down from 12:00:30 to 17:40 (the 17:00 slot is more than half an interval
    # late); a new one reads the state file.
    clock.step_to(dt.datetime(2026, 3, 10, 17, 40))
    second = rig.scheduler(jobs, clock)
    second.tick(clock.now())
    settle(second)
    second.tick(clock.advance(300))
    assert (len(rig.started("catches_up")), len(rig.started("never_late"))) == (2, 1)
    assert log_lines("catches_up: 5 slots missed") == [
        "catches_up: 5 slots missed since 2026-03-10 12:00:00: running once now"]
    [skipped] = [line for line in log_lines("never_late: ") if "missed" in line]
    assert skipped.startswith("never_late: 5 slots missed (the last at 2026-03-10 17:00:00, "
                              "40m late): skipped, the job is never run late")
    second.tick(clock.step_to(dt.datetime(2026, 3, 10, 18, 0, 5)))  # back on time: both run
    settle(second)
    assert (len(rig.started("catches_up")), len(rig.started("never_late"))) == (3, 2)


def test_a_wall_clock_step_back_does_not_repeat_a_daily_job_and_a_step_forward_runs_it_once(
        rig, log_lines):
    clock = FakeClock(dt.datetime(2026, 3, 10, 1, 10, 20))
    daily = rig.job("daily", "10 1 * * *", "--exit", "0", catch_up=True)
    minutely = rig.job("minutely", "* * * * *", "--exit", "0")
    scheduler = rig.scheduler([daily, minutely], clock)
    scheduler.tick(clock.now())
    settle(scheduler)
    assert (len(rig.started("daily")), len(rig.started("minutely"))) == (1, 1)

    scheduler.tick(clock.step_to(dt.datetime(2026, 3, 10, 1, 5)))  # NTP steps back 5 minutes
    assert len(log_lines("the wall clock went back")) == 1
    for moment in ("01:06:05", "01:09:59", "01:10:00", "01:10:40", "01:11:02"):
        scheduler.tick(clock.step_to(dt.datetime.fromisoformat(f"2026-03-10T{moment}")))
        settle(scheduler)
    assert len(rig.started("daily")) == 1  # 01:10 again: already run
    # The frequent job went on from the new time (01:06, 01:09, 01:10, 01:11) after its first
    # run at 01:10, instead of waiting for 01:11 to come round.
    assert len(rig.started("minutely")) == 5

    # A suspended VM wakes the next day at 03:00: the missed 01:10 runs once, and only once.
    scheduler.tick(clock.step_to(dt.datetime(2026, 3, 11, 3, 0)))
    settle(scheduler)
    for seconds in (20, 20, 20):
        scheduler.tick(clock.advance(seconds))
        settle(scheduler)
    assert len(rig.started("daily")) == 2
    assert scheduler.last_slot["daily"] == dt.datetime(2026, 3, 11, 1, 10)


def test_a_heavy_job_starts_within_its_random_delay_once_even_across_a_restart(rig, log_lines):
    clock = FakeClock(dt.datetime(2026, 3, 10, 1, 10))
    heavy = rig.job("heavy", "10 1 * * *", "--exit", "0", catch_up=True, delay=600)
    # A seeded generator: its first delay is 81 s (the service uses an unseeded one).
    first = Scheduler([heavy], clock, rig.state_file, rig.tools, rng=random.Random(1))
    first.tick(clock.now())
    start_at = dt.datetime(2026, 3, 10, 1, 11, 21)
    assert log_lines("heavy: slot") == [
        "heavy: slot 2026-03-10 01:10:00: starts at 2026-03-10 01:11:21 (random delay of up to "
        "10m)"]
    first.tick(clock.advance(80))
    assert rig.started("heavy") == [] and first.children == []
    # The service restarts within the delay: the new one keeps the start time from the state.
    second = rig.scheduler([heavy], clock)
    assert second.next_wake(clock.now()) == start_at
    second.tick(clock.step_to(start_at))
    settle(second)
    for _ in range(3):
        second.tick(clock.advance(300))
        settle(second)
    assert len(rig.started("heavy")) == 1
    assert second.last_run["heavy"]["slot"] == "2026-03-10 01:10:00"


def test_once_starts_a_heavy_job_at_once_also_one_a_service_had_put_off(rig):
    """`run --once` has one tick: a random delay would mark the slot handled and never run it."""
    clock = FakeClock(dt.datetime(2026, 3, 10, 1, 10))
    heavy = rig.job("heavy", "10 1 * * *", "--exit", "0", catch_up=True, delay=600)
    light = rig.job("light", "10 1 * * *", "--exit", "0", catch_up=True, delay=600)
    service = Scheduler([heavy], clock, rig.state_file, rig.tools, rng=random.Random(1))
    service.tick(clock.now())
    assert rig.started("heavy") == [] and service.delayed  # put off by 81 s
    once = Scheduler([heavy, light], clock, rig.state_file, rig.tools, rng=random.Random(1),
                     once=True)
    once.tick(clock.advance(1))
    settle(once)
    assert (len(rig.started("heavy")), len(rig.started("light"))) == (1, 1)
    assert once.delayed == {}


def test_once_beats_the_heartbeat_while_it_waits_for_its_jobs(rig):
    """Else queue health calls the service down during a long `--once` run."""
    import threading

    clock = FakeClock(T0)
    slow = rig.job("slow", "* * * * *", "--wait-for", str(rig.release))
    scheduler = rig.scheduler([slow], clock)
    scheduler.tick(clock.now())
    wait_for(lambda: rig.started("slow"), "the job to start")
    beats = []
    waiting = threading.Thread(target=scheduler.wait_for_children,
                               args=(StopSignal(), lambda: beats.append(1)))
    waiting.start()
    try:
        wait_for(lambda: len(beats) >= 3, "three heartbeats while the job runs")
        assert scheduler.children  # still waiting for it
    finally:
        rig.release.touch()
        waiting.join(WAIT_SECONDS)
    assert not waiting.is_alive() and scheduler.children == []


# --- the service's own process -----------------------------------------------------------------

def service_env(tmp_path: Path) -> dict:
    return tool_env(sqlite_database(tmp_path), tmp_path)


def service_args(rig: Rig, tmp_path: Path, schedule: Path) -> list[str]:
    return ["--pid-file", str(tmp_path / "sched.pid"), "--state-file", str(rig.state_file),
            "--test-schedule", str(schedule), "--log-file", str(tmp_path / "sched.log"),
            "--kill-grace", "1"]


def start_service(rig: Rig, tmp_path: Path, env: dict, schedule: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "run_scheduler.py"), "run",
         *service_args(rig, tmp_path, schedule)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def service_rows(url: str, tool: str = "run_scheduler") -> list:
    database = connect(url)
    with database.engine.connect() as conn:
        rows = conn.execute(select(ops_job_runs).where(
            ops_job_runs.c.tool == tool).order_by(ops_job_runs.c.id)).all()
    database.engine.dispose()
    return rows


def log_text(tmp_path: Path) -> str:
    path = tmp_path / "sched.log"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def test_sigterm_stops_the_service_and_its_running_jobs_get_their_grace(rig, tmp_path):
    env = service_env(tmp_path)
    schedule = rig.schedule_file([
        {"tool": "polite", "cron": "* * * * *", "budget_seconds": 3600},
        {"tool": "stubborn", "cron": "* * * * *", "args": ["--ignore-term", "--ledger"],
         "budget_seconds": 3600}])
    service = start_service(rig, tmp_path, env, schedule)
    try:
        wait_for(lambda: rig.started("polite") and rig.started("stubborn"),
                 "the service to start both jobs")
        stubborn_pid = int(rig.started("stubborn")[0].name.split(".")[1])
        service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=WAIT_SECONDS)
    finally:
        if service.poll() is None:
            service.kill()
    assert service.returncode == 0, err
    assert len(rig.termed("polite")) == 1  # the polite job got SIGTERM and finished
    assert rig.termed("stubborn") == []
    with pytest.raises(ProcessLookupError):
        os.kill(stubborn_pid, 0)  # ... the stubborn one SIGKILL after the kill grace
    log = log_text(tmp_path)
    assert "stopping: SIGTERM to 2 running jobs, 1s for them to finish" in log
    assert f"stubborn: pid {stubborn_pid} still running after the grace: SIGKILL" in log
    [row] = service_rows(env["OPS_DATABASE_URL"])
    assert (row.status, row.stop_reason, row.dry_run) == ("interrupted", "interrupted by SIGTERM",
                                                         False)
    assert json.loads(row.counts)["stopped_with_service"] == 2
    # The killed job could not close its own ledger row: the service did.
    [killed] = service_rows(env["OPS_DATABASE_URL"], tool="stubborn")
    assert (killed.status, killed.pid, killed.stop_reason) == (
        "abandoned", stubborn_pid, "killed by the scheduler: stopped with the service (SIGKILL)")
    assert not (tmp_path / "sched.pid").exists()


def test_a_job_that_crashes_does_not_stop_the_service(rig, tmp_path):
    env = service_env(tmp_path)
    schedule = rig.schedule_file([
        {"tool": "crasher", "cron": "* * * * *", "args": ["--exit", "3"]},
        {"tool": "sleeper", "cron": "* * * * *", "budget_seconds": 3600}])
    service = start_service(rig, tmp_path, env, schedule)
    try:
        def saved() -> dict:
            return read_state(rig.state_file).get("jobs", {})

        # The state file is written at the end of the tick that saw the crash.
        wait_for(lambda: (saved().get("crasher", {}).get("last_run") or {}).get("outcome")
                 == "failed (exit 3)" and saved()["sleeper"]["running"],
                 "the crash to be recorded while the other job runs")
        assert "failed (exit 3), exit 3" in log_text(tmp_path)
        assert service.poll() is None
        shown: dict = {}

        def status_shows_the_failure() -> bool:
            # The crasher runs every minute: a status taken as a new minute starts shows its
            # next run going; the next look shows that run failed too.
            status = run_cli("run_scheduler", "status", "--json",
                             *service_args(rig, tmp_path, schedule), env=env)
            assert status.returncode == 0, status.stderr
            shown.update(json.loads(status.stdout)["sections"])
            rows = {row["tool"]: row for row in shown["Jobs"]}
            return rows["crasher"]["outcome"] == "failed (exit 3)"

        wait_for(status_shows_the_failure, "status to show the crash")
        assert shown["Service"][0]["running"] == "yes"
        assert shown["Service"][0]["pid"] == service.pid
        jobs = {row["tool"]: row for row in shown["Jobs"]}
        assert jobs["sleeper"]["state"] == "running (1)"
        service.send_signal(signal.SIGTERM)
        service.communicate(timeout=WAIT_SECONDS)
    finally:
        if service.poll() is None:
            service.kill()
    assert service.returncode == 0


def test_start_status_stop_use_the_pid_file_and_a_stale_one_does_not_block_a_start(rig, tmp_path):
    env = service_env(tmp_path)
    schedule = rig.schedule_file([{"tool": "sleeper", "cron": "* * * * *",
                                   "budget_seconds": 3600}])
    args = service_args(rig, tmp_path, schedule)
    pid_file = tmp_path / "sched.pid"
    # What a crash (SIGKILL, a power cut) leaves: the pid of a process long gone, no lock held.
    pid_file.write_text("999999\n", encoding="utf-8")
    (tmp_path / "sched.pid.lock").touch()

    def scheduler(action: str) -> dict:
        done = run_cli("run_scheduler", action, "--json", *args, env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def started_pid(result: dict) -> int:
        pid = int(result["stop_reason"].removeprefix("started (pid ").rstrip(")"))
        pids.append(pid)
        return pid

    pids: list[int] = []
    before = scheduler("status")
    assert before["stop_reason"] == "not running (stale pid file of pid 999999)"
    try:
        pid = started_pid(scheduler("start"))
        assert pid_file.read_text(encoding="utf-8").strip() == str(pid)
        wait_for(lambda: rig.started("sleeper") and read_state(rig.state_file),
                 "the started service to run its job and save its state")
        assert scheduler("start")["stop_reason"] == f"already running (pid {pid})"
        status = scheduler("status")
        assert status["sections"]["Service"][0]["running"] == "yes"
        assert status["sections"]["Service"][0]["pid"] == pid
        assert status["sections"]["Jobs"][0]["tool"] == "sleeper"
        assert status["sections"]["Service"][0]["last_tick"] is not None
        restarted = scheduler("restart")
        assert restarted["counts"] == {"stopped": 1, "started": 1}
        pid = started_pid(restarted)
        assert pid != pids[0] and pid_file.read_text(encoding="utf-8").strip() == str(pid)
        stopped = scheduler("stop")
        assert stopped["stop_reason"] == f"stopped (pid {pid})"
    finally:
        for started in pids:
            try:
                os.kill(started, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # Each stop gave the running job its SIGTERM (the restarted service runs the job at the next
    # minute: the state file says this minute's slot was handled).
    assert len(rig.termed("sleeper")) == len(rig.started("sleeper")) >= 1
    assert scheduler("status")["stop_reason"] == "not running"


def test_the_command_start_runs_holds_no_database_url_and_no_json():
    """The list is recorded in the run ledger, and `ps` shows a command line to every user."""
    from ops_lib.scheduler import default_log_file, service_command

    argv = ["start", "--database-url", "mysql+pymysql://ops:s3cret@db/platform", "--json",
            "--pid-file", "start", "--database-url=mysql+pymysql://ops:s3cret@db/platform"]
    assert service_command("tools/run_scheduler.py", argv, "start", None) == [
        sys.executable, "tools/run_scheduler.py", "run", "--pid-file", "start", "--log-file",
        default_log_file()]


def test_a_second_service_on_the_same_pid_file_is_skipped_and_queue_health_still_sees_the_first(
        rig, tmp_path):
    env = service_env(tmp_path)
    schedule = rig.schedule_file([{"tool": "sleeper", "cron": "* * * * *",
                                   "budget_seconds": 3600}])
    service = start_service(rig, tmp_path, env, schedule)
    try:
        wait_for(lambda: rig.started("sleeper"), "the service to run its job")
        second = run_cli("run_scheduler", "run", "--once", "--json",
                         *service_args(rig, tmp_path, schedule), env=env)
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["stop_reason"] == (
            f"the scheduler already runs (pid {service.pid})")
        health = run_cli("queue_health_summary", "--json", env=env)
        [row] = [row for row in json.loads(health.stdout)["sections"]["Tools"]
                 if row["tool"] == "run_scheduler"]
        assert (row["freshness"], row["state"]) == ("ok", "OK")
    finally:
        service.send_signal(signal.SIGTERM)
        service.communicate(timeout=WAIT_SECONDS)
    assert len(rig.started("sleeper")) == 1
    assert [row.status for row in service_rows(env["OPS_DATABASE_URL"])] == [
        "interrupted", "skipped"]


def test_once_runs_what_is_due_now_waits_for_it_and_exits(rig, tmp_path):
    env = service_env(tmp_path)
    schedule = rig.schedule_file([
        {"tool": "due", "cron": "* * * * *", "args": ["--exit", "0"]},
        {"tool": "not_due", "cron": "0 0 29 2 *", "args": ["--exit", "0"]}])
    slots = []
    for _run in range(2):
        done = run_cli("run_scheduler", "run", "--once", "--json",
                       *service_args(rig, tmp_path, schedule), env=env)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["stop_reason"] == "ran what was due"
        saved = read_state(rig.state_file)["jobs"]["due"]
        assert saved["last_run"]["outcome"] == "ok"  # it waited for the job to end
        slots.append(saved["last_slot"])
    # The second run in the same minute starts nothing: the state file says the slot was run.
    assert len(rig.started("due")) == len(set(slots))
    assert rig.started("not_due") == []
    assert [(row.status, row.dry_run) for row in service_rows(env["OPS_DATABASE_URL"])] == [
        ("ok", False), ("ok", False)]


def test_check_refuses_a_bad_or_inexpressible_cron_expression_and_a_missing_tool(rig, tmp_path):
    env = service_env(tmp_path)
    schedule = rig.schedule_file([{"tool": "fine", "cron": "*/5 * * * *"},
                                  {"tool": "typo", "cron": "61 * * * *"},
                                  {"tool": "weekdays", "cron": "0 2 * * 1-5"}])
    (rig.tools / "fine.py").unlink()
    nowhere = tool_env(f"sqlite:///{tmp_path / 'never' / 'ops.db'}", tmp_path)
    done = run_cli("run_scheduler", "--check", "--test-schedule", str(schedule), env=nowhere)
    assert done.returncode == 2
    assert not (tmp_path / "never").exists()  # found before connecting
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: typo: cron '61 * * * *': not a valid five-field cron expression",
        "error: weekdays: cron '0 2 * * 1-5': a range in the weekday field: not one of the "
        "shapes every runner says the same way (docs/scheduling.md)",
        f"error: fine: {rig.tools / 'fine.py'} does not exist (a tool not built yet cannot be "
        "scheduled)"]
    real = run_cli("run_scheduler", "--check", "--json", env=env)
    assert real.returncode == 0, real.stderr
    assert [row["tool"] for row in json.loads(real.stdout)["sections"]["Jobs"]] == [
        "run_background_workers", "queue_health_summary", "run_billing_jobs",
        "archive_hot_path_data", "cleanup_stale_devices"]


# --- queue health judges the service by its heartbeat ---------------------------------------

def test_queue_health_shows_the_service_down_when_its_heartbeat_is_old_and_ok_when_fresh(
        db, tmp_path):
    now = dt.datetime(2026, 3, 10, 12, 0)
    with db.begin() as conn:
        conn.execute(insert(ops_job_runs).values(
            run_id="service", tool="run_scheduler", host="here", pid=1, dry_run=False,
            started_at=now - dt.timedelta(days=5), heartbeat_at=now - dt.timedelta(seconds=20),
            status="running"))

    def service_health() -> tuple[int, dict]:
        done = run_cli("queue_health_summary", "--json", "--now", now.isoformat(),
                       env=tool_env(db.url, tmp_path))
        assert done.returncode in (0, 1, 2), done.stderr
        tools = json.loads(done.stdout)["sections"]["Tools"]
        [row] = [row for row in tools if row["tool"] == "run_scheduler"]
        return done.returncode, row

    code, fresh = service_health()  # its row has run for five days: normal for a service
    assert (fresh["freshness"], fresh["state"], fresh["running_for"]) == ("ok", "OK", "5d")
    assert code == 1  # the scheduled tools never ran: WARNING, nothing about the service
    with db.begin() as conn:
        conn.execute(update(ops_job_runs).where(ops_job_runs.c.run_id == "service").values(
            heartbeat_at=now - dt.timedelta(minutes=20)))
    code, down = service_health()
    assert (down["freshness"], down["state"]) == ("down", "CRITICAL")
    assert code == 2


def test_a_start_waits_out_a_status_probe_of_its_lock_instead_of_skipping(tmp_path):
    """holder() (status, or start polling for its child) takes the lock for an instant; a
    service starting in that instant waits for it instead of exiting "already runs"."""
    import threading

    import filelock

    from ops_lib.scheduler.pidfile import PidFile

    lock = PidFile(tmp_path / "sched.pid")
    probe = filelock.FileLock(str(lock.lock_path), timeout=0)
    probe.acquire()  # a probe caught in the middle
    acquired = []
    starting = threading.Thread(target=lambda: acquired.append(lock.acquire()))
    starting.start()
    starting.join(0.2)  # let it try while the probe holds (a slow start only weakens the test)
    probe.release()
    starting.join(WAIT_SECONDS)
    try:
        assert acquired == [True] and lock.read_pid() == os.getpid()
    finally:
        lock.release()
    assert lock.holder() is None and not lock.path.exists()

def test_holder_names_only_a_live_run_scheduler_process(tmp_path):
    """A crashed service's pid reused by another process, or a pid not written yet, is never
    taken for the service's (stop would SIGTERM it)."""
    import filelock

    from ops_lib.scheduler.pidfile import PidFile

    pid_file = tmp_path / "sched.pid"
    lock = PidFile(pid_file)
    held = filelock.FileLock(str(lock.lock_path), timeout=0)
    held.acquire()
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    service_like = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                                     "run_scheduler"], stdin=subprocess.PIPE)
    try:
        assert lock.holder() == 0  # locked, no pid file yet
        pid_file.write_text(f"{other.pid}\n", encoding="utf-8")
        assert lock.holder() == (0 if Path("/proc/self").exists() else other.pid)
        pid_file.write_text(f"{service_like.pid}\n", encoding="utf-8")
        assert lock.holder() == service_like.pid
        held.release()
        assert lock.holder() is None
    finally:
        for child in (other, service_like):
            child.communicate(b"", timeout=WAIT_SECONDS)
    dead = other.pid
    pid_file.write_text(f"{dead}\n", encoding="utf-8")
    held.acquire()
    try:
        assert lock.holder() == 0
    finally:
        held.release()
