"""The schedule's generated files (ops_lib/schedule_files.py) against the schedule itself.

The checked-in crontab.example, Task Scheduler XML and systemd units must be exactly what the
schedule generates; each file's triggers are read back independently (ElementTree, configparser,
systemd-analyze) and their slots compared with croniter's.
"""

from __future__ import annotations

import configparser
import dataclasses
import datetime as dt
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from croniter import croniter

from ops_lib import schedule_files
from ops_lib.jobs.schedule_admin import check_problems, file_changes
from ops_lib.schedule import BY_TOOL, MANUAL_ONLY, SCHEDULE, ScheduledJob
from ops_lib.schedule_files import (SERVICE_TOOL, cron_shape, expressible_everywhere,
                                    generated_files, schedule_problems)
from tests.conftest import REPO, run_cli, sqlite_database, tool_env

NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
BASES = [dt.datetime(2026, 11, 28, 8, 47, 13), dt.datetime(2027, 2, 27, 23, 59),
         dt.datetime(2028, 2, 29, 1, 10), dt.datetime(2026, 12, 31, 23, 45)]


def cron_slots(cron: str, after: dt.datetime, count: int) -> list[dt.datetime]:
    slots = croniter(cron, after)
    return [slots.get_next(dt.datetime) for _ in range(count)]


def seconds_of(duration: str) -> int:
    """An XML duration (PnDTnHnMnS) in seconds, read independently of the generator."""
    found = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", duration)
    assert found, duration
    days, hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def test_the_checked_in_files_are_what_the_schedule_generates():
    assert [(change.path, change.change) for change in file_changes(REPO)] == []
    assert check_problems(REPO) == []


def _copy_of_the_toolkit(tmp_path: Path) -> Path:
    tmp_path.mkdir(exist_ok=True)
    for pattern in ("crontab.example", "taskscheduler", "systemd"):
        source = REPO / pattern
        if source.is_dir():
            shutil.copytree(source, tmp_path / pattern)
        else:
            shutil.copy(source, tmp_path / pattern)
    (tmp_path / "tools").mkdir()
    for tool in (REPO / "tools").glob("*.py"):
        (tmp_path / "tools" / tool.name).write_text("")
    return tmp_path


def test_a_hand_edit_a_missing_file_and_a_stale_one_each_fail_the_check(tmp_path):
    root = _copy_of_the_toolkit(tmp_path)
    assert check_problems(root) == []
    timer = root / "systemd" / "ops-run_billing_jobs.timer"
    timer.write_text(timer.read_text().replace("01:10:00", "01:20:00"))
    (root / "taskscheduler" / "queue_health_summary.xml").unlink()
    (root / "systemd" / "ops-old_job.timer").write_text("[Timer]\n")
    assert check_problems(root) == [
        f"{path} {what}; run: python tools/manage_schedule.py generate --execute"
        for path, what in [
            ("systemd/ops-old_job.timer", "is not generated from the schedule (stale)"),
            ("systemd/ops-run_billing_jobs.timer", "differs from what the schedule generates"),
            ("taskscheduler/queue_health_summary.xml", "is missing"),
        ]]


def test_a_job_added_without_regenerating_fails_and_a_tool_off_the_schedule_too(tmp_path):
    root = _copy_of_the_toolkit(tmp_path)
    added = ScheduledJob("rotate_keys", "0 3 * * 0", ("--execute",), budget_seconds=60,
                         overlap=False, catch_up=True, grace_seconds=3600, what="rotate keys")
    changed = {(c.path, c.change) for c in file_changes(root, (*SCHEDULE, added))}
    assert changed == {("crontab.example", "changed"), ("taskscheduler/rotate_keys.xml", "new"),
                       ("systemd/ops-rotate_keys.service", "new"),
                       ("systemd/ops-rotate_keys.timer", "new")}
    (root / "tools" / "rotate_keys.py").write_text("")
    assert check_problems(root) == [
        "tools/rotate_keys.py is neither on the schedule nor in MANUAL_ONLY (ops_lib/schedule.py)"]


def test_every_tool_is_scheduled_or_manual_only_and_every_expression_is_accepted():
    tools = {path.stem for path in (REPO / "tools").glob("*.py")}
    assert schedule_problems(SCHEDULE, tools) == []
    assert tools <= set(BY_TOOL) | set(MANUAL_ONLY) | {SERVICE_TOOL}


def test_the_check_names_each_problem_on_its_own_line_with_exit_1(tmp_path):
    env = tool_env(sqlite_database(tmp_path), tmp_path)
    done = run_cli("manage_schedule", "--check", env=env)
    assert (done.returncode, done.stdout.splitlines()[0]) == (0, "SCHEDULE OK: no problems")
    # A copy of the toolkit (a tool runs the ops_lib beside it) with two hand edits.
    copy = _copy_of_the_toolkit(tmp_path / "toolkit")
    shutil.copytree(REPO / "ops_lib", copy / "ops_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "tools" / "manage_schedule.py", copy / "tools")
    (copy / "crontab.example").write_text("# mine\n")
    (copy / "systemd" / "ops-scheduler.service").unlink()
    done = subprocess.run([sys.executable, str(copy / "tools" / "manage_schedule.py"),
                           "--check"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    fix = "; run: python tools/manage_schedule.py generate --execute"
    assert done.stdout.splitlines()[0] == "SCHEDULE PROBLEMS: 2 problems"
    assert [line for line in done.stdout.splitlines() if line.startswith("problems:")] == [
        f'problems: problem="crontab.example differs from what the schedule generates{fix}"',
        f'problems: problem="systemd/ops-scheduler.service is missing{fix}"']
    bad = dataclasses.replace(BY_TOOL["run_billing_jobs"], cron="*/7 * * * *")
    assert schedule_problems([bad]) == [
        "run_billing_jobs: cron '*/7 * * * *': every 7 minutes does not divide the hour: cron "
        "restarts at minute 0 every hour, Task Scheduler's repetition does not"]


# --- expressibility ---------------------------------------------------------------------------

@pytest.mark.parametrize("cron, shape", [
    ("* * * * *", ("minutes", 1)),
    ("*/15 * * * *", ("minutes", 15)),
    ("*/30 * * * *", ("minutes", 30)),
    ("10 1 * * *", ("daily", 0)),
    ("0 2 * * 0", ("weekly", 0)),
    ("0 2 * * 7", ("weekly", 0)),
    ("15 3 31 * *", ("monthly", 0)),
])
def test_accepted_shapes(cron, shape):
    assert expressible_everywhere(cron) is None
    assert (cron_shape(cron).kind, cron_shape(cron).every_minutes) == shape


@pytest.mark.parametrize("cron, why", [
    ("*/7 * * * *", "every 7 minutes does not divide the hour"),
    ("*/45 * * * *", "every 45 minutes does not divide the hour"),
    ("0 2 * * 1-5", "a range in the weekday field"),
    ("0,30 * * * *", "a list in the minute field"),
    ("0 */2 * * *", "a step in the hour field (*/2)"),
    ("5/15 * * * *", "a step in the minute field (5/15)"),
    ("H/15 * * * *", "not a valid five-field cron expression"),
    ("@daily", "not a valid five-field cron expression"),
    ("0 2 * * mon", "'mon' in the weekday field"),
    ("0 0 L * *", "'L' in the day field"),
    ("* 2 * * *", "every minute or every N minutes within some hours or days"),
    ("*/15 * 1 * *", "every minute or every N minutes within some hours or days"),
    ("5 * * * *", "a fixed minute of every hour"),
    ("0 2 1 * 1", "both a day of the month and a weekday"),
    ("0 2 1 6 *", "a month restriction"),
])
def test_refused_shapes_say_why(cron, why):
    assert why in (expressible_everywhere(cron) or "")


# --- Task Scheduler -----------------------------------------------------------------------------

def _read_task(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def task_slots(task: ET.Element, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The task's next `count` starts after `after`, computed from its XML alone."""
    [trigger] = task.find("t:Triggers", NS)
    start = dt.datetime.strptime(trigger.find("t:StartBoundary", NS).text,
                                 "%Y-%m-%dT%H:%M:%SZ")
    slots: list[dt.datetime] = []
    if trigger.tag.endswith("TimeTrigger"):
        step = dt.timedelta(seconds=seconds_of(trigger.find("t:Repetition/t:Interval", NS).text))
        assert trigger.find("t:Repetition/t:Duration", NS) is None  # repeats indefinitely
        at = start + ((after - start) // step + 1) * step
        return [at + n * step for n in range(count)]
    day = dt.datetime.combine(after.date(), start.time())
    weekdays = [d.tag.split("}")[1] for d in trigger.findall(
        "t:ScheduleByWeek/t:DaysOfWeek/*", NS)]
    month_days = [int(d.text) for d in trigger.findall("t:ScheduleByMonth/t:DaysOfMonth/t:Day", NS)]
    months = [m.tag.split("}")[1] for m in trigger.findall("t:ScheduleByMonth/t:Months/*", NS)]
    while len(slots) < count:
        if day > after and (
                trigger.find("t:ScheduleByDay", NS) is not None
                or day.strftime("%A") in weekdays
                or (day.day in month_days and day.strftime("%B") in months)):
            slots.append(day)
        day += dt.timedelta(days=1)
    return slots


@pytest.mark.parametrize("job", SCHEDULE, ids=lambda job: job.tool)
def test_each_task_xml_matches_its_job(job):
    task = _read_task(REPO / "taskscheduler" / f"{job.tool}.xml")
    assert task.get("version") == "1.2"
    for base in BASES:
        assert task_slots(task, base, 4) == cron_slots(job.cron, base, 4), base
    settings = task.find("t:Settings", NS)
    assert seconds_of(settings.find("t:ExecutionTimeLimit", NS).text) == (
        job.budget_seconds + job.grace_seconds)
    assert settings.find("t:MultipleInstancesPolicy", NS).text == (
        "Parallel" if job.max_copies > 1 else "IgnoreNew")
    assert settings.find("t:StartWhenAvailable", NS).text == str(job.catch_up).lower()
    assert settings.find("t:Enabled", NS).text == str(not job.optional).lower()
    action = task.find("t:Actions/t:Exec", NS)
    assert action.find("t:Command", NS).text == "{PYTHON}"
    assert action.find("t:WorkingDirectory", NS).text == "{TOOLKIT_DIR}"
    assert action.find("t:Arguments", NS).text == " ".join([f"tools\\{job.tool}.py", *job.args])


def test_the_service_task_starts_at_boot_has_no_time_limit_and_comes_back_after_a_crash():
    task = _read_task(REPO / "taskscheduler" / "service" / f"{SERVICE_TOOL}.xml")
    triggers = task.find("t:Triggers", NS)
    assert triggers.find("t:BootTrigger/t:Enabled", NS).text == "true"
    # RestartOnFailure covers a failed start only; the repeating trigger, with IgnoreNew,
    # starts a service that died and does nothing while it runs.
    repeat = seconds_of(triggers.find("t:TimeTrigger/t:Repetition/t:Interval", NS).text)
    settings = task.find("t:Settings", NS)
    assert settings.find("t:MultipleInstancesPolicy", NS).text == "IgnoreNew"
    assert settings.find("t:ExecutionTimeLimit", NS).text == "PT0S"
    restart = settings.find("t:RestartOnFailure", NS)
    assert 60 <= seconds_of(restart.find("t:Interval", NS).text) == repeat
    assert 1 <= int(restart.find("t:Count", NS).text) <= 255
    action = task.find("t:Actions/t:Exec", NS)
    assert action.find("t:Arguments", NS).text == "tools\\run_scheduler.py run"


def test_register_tasks_ps1_takes_its_parameters_and_registers_exactly_the_xml_present():
    script = (REPO / "taskscheduler" / "register_tasks.ps1").read_text(encoding="utf-8")
    param_block = re.search(r"^param\((.*?)^\)", script, re.M | re.S).group(1)
    names = re.findall(r"\[(?:string|string\[\]|switch)\]\$(\w+)", param_block)
    assert names == ["ToolkitDir", "User", "Python", "Optional", "Service", "Remove"]
    # It globs the folders the generator writes and names no file of its own.
    assert 'Get-ChildItem -Path $PSScriptRoot -Filter "*.xml"' in script
    assert 'Get-ChildItem -Path (Join-Path $PSScriptRoot "service") -Filter "*.xml"' in script
    assert set(re.findall(r"[\w$*]+\.xml\b", script)) == {"*.xml", "$_.xml"}
    generated = {path for path in generated_files() if path.startswith("taskscheduler/")}
    assert generated == {f"taskscheduler/{p.name}" for p in
                         (REPO / "taskscheduler").glob("*.xml")} | {
        f"taskscheduler/service/{p.name}" for p in (REPO / "taskscheduler/service").glob("*.xml")}
    # Idempotent: every registration replaces the task of the same name.
    assert "Register-ScheduledTask" in script and "-Force" in script.split(
        "Register-ScheduledTask", 1)[1].splitlines()[0]
    assert "Unregister-ScheduledTask" in script and "{TOOLKIT_DIR}" in script


# --- systemd ----------------------------------------------------------------------------------

def _read_unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keys are case-sensitive
    unit.read_string((REPO / "systemd" / name).read_text(encoding="utf-8"))
    return unit


def calendar_slots(expression: str, after: dt.datetime, count: int) -> list[dt.datetime]:
    """OnCalendar's next slots, from systemd-analyze; without it, from the expression's text
    for the forms the generator writes (then the comparison checks the text itself)."""
    if shutil.which("systemd-analyze"):
        done = subprocess.run(
            ["systemd-analyze", "calendar", f"--iterations={count}",
             f"--base-time={after:%Y-%m-%d %H:%M:%S} UTC", expression],
            capture_output=True, text=True, timeout=30, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        found = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", done.stdout)
        return [dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S") for stamp in found]
    *weekday, date, time, zone = expression.split()
    assert zone == "UTC" and date.startswith("*-*-")
    hour, minute, _ = time.split(":")

    def allowed(field: str, top: int) -> range | list[int]:
        if field == "*":
            return range(top)
        if "/" in field:
            first, step = field.split("/")
            return range(int(first), top, int(step))
        return [int(field)]

    minutes, hours, day = allowed(minute, 60), allowed(hour, 24), date[4:]
    slots, at = [], after.replace(second=0, microsecond=0)
    while len(slots) < count:
        at += dt.timedelta(minutes=1)
        if (at.minute in minutes and at.hour in hours and (day == "*" or at.day == int(day))
                and (not weekday or at.strftime("%a") == weekday[0])):
            slots.append(at)
    return slots


@pytest.mark.parametrize("job", SCHEDULE, ids=lambda job: job.tool)
def test_each_job_has_a_oneshot_service_and_a_timer_on_its_slots(job):
    copies = job.max_copies
    service = _read_unit(f"ops-{job.tool}{'@' if copies > 1 else ''}.service")["Service"]
    assert service["Type"] == "oneshot"
    assert int(service["TimeoutStartSec"]) == job.budget_seconds + job.grace_seconds
    assert service["ExecStart"].split()[1:] == [f"tools/{job.tool}.py", *job.args]
    assert {"User", "WorkingDirectory", "EnvironmentFile"} <= set(service)
    timers = ([f"ops-{job.tool}.timer"] if copies == 1
              else [f"ops-{job.tool}@{copy}.timer" for copy in range(copies)])
    for base in BASES[:2]:
        slots: list[dt.datetime] = []
        for name in timers:
            timer = _read_unit(name)["Timer"]
            assert timer.get("Persistent") == ("true" if job.catch_up else None)
            assert int(timer.get("RandomizedDelaySec", "0")) == job.randomized_delay_seconds
            assert "Unit" not in timer  # each timer starts its own name's service (or copy)
            slots += calendar_slots(timer["OnCalendar"], base, 6)
        # Every slot is started by exactly one timer: the copies take turns.
        assert sorted(slots)[:6] == cron_slots(job.cron, base, 6)
        assert len(set(slots)) == len(slots)


def test_the_scheduler_service_unit_restarts_with_a_cooldown_and_a_cap_that_holds():
    unit = _read_unit("ops-scheduler.service")
    service = unit["Service"]
    assert service["ExecStart"].split()[1:] == ["tools/run_scheduler.py", "run"]
    assert service["Restart"] == "on-failure" and service["KillMode"] == "mixed"
    restart_seconds = int(service["RestartSec"])
    assert restart_seconds >= 60
    burst, interval = int(unit["Unit"]["StartLimitBurst"]), int(unit["Unit"]["StartLimitIntervalSec"])
    # The starts a burst allows fit in the interval, so the cap is reached (systemd's default
    # 5 in 10 s with a 100 ms restart would too, within a second; one restart every 2 minutes
    # over 5 minutes would never reach it).
    assert 1 < burst and (burst - 1) * restart_seconds < interval
    assert "TimeoutStartSec" not in service and "RuntimeMaxSec" not in service


def test_systemd_accepts_every_unit():
    if not shutil.which("systemd-analyze"):
        assert all(_read_unit(path.name) for path in (REPO / "systemd").iterdir())
        return
    units = sorted(str(path) for path in (REPO / "systemd").iterdir())
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *units],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


# --- cron ---------------------------------------------------------------------------------------

def test_the_crontab_runs_required_jobs_comments_optional_ones_and_names_manual_tools():
    text = (REPO / "crontab.example").read_text(encoding="utf-8")
    assert text.isascii() and "%" not in text.replace("\\%", "")
    live = [line for line in text.splitlines() if line and line[0] in "*0123456789"]
    assert [line.split("tools/")[1].split(".py")[0] for line in live] == [
        job.tool for job in SCHEDULE if not job.optional]
    for job in SCHEDULE:
        [line] = [line for line in text.splitlines() if f"tools/{job.tool}.py" in line]
        assert line.lstrip("# ").startswith(job.cron + " ")
        assert line.endswith(" ".join([f"tools/{job.tool}.py", *job.args]))
        assert f"timeout -k 60 {job.budget_seconds + job.grace_seconds} " in line
        if job.optional:
            assert line.startswith("# ") and job.why_optional in " ".join(
                text.replace("\n# ", " ").split())
    flat = " ".join(text.replace("\n# ", " ").split())
    for tool, why in MANUAL_ONLY.items():
        assert f"tools/{tool}.py: {why}" in flat


def test_the_optional_jobs_named_are_live_lines():
    text = schedule_files.crontab_text(optional_jobs=["check_schema_drift"])
    assert "\n0 6 1 * *" in text and "\n# 0 4 * * *" in text


def test_generate_dry_run_changes_nothing_and_execute_repairs_every_file(tmp_path):
    from types import SimpleNamespace

    from ops_lib.jobs.schedule_admin import run

    root = _copy_of_the_toolkit(tmp_path)
    timer = root / "systemd" / "ops-run_billing_jobs.timer"
    timer.write_text(timer.read_text().replace("01:10:00", "01:20:00"))
    (root / "taskscheduler" / "service" / f"{SERVICE_TOOL}.xml").unlink()
    (root / "systemd" / "ops-old_job.timer").write_text("[Timer]\n")
    before = {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}

    planned = run(SimpleNamespace(dry_run=True), "generate", False, root=root)
    assert {(row["file"], row["change"]) for row in planned.sections[0].rows} == {
        ("systemd/ops-old_job.timer", "stale"), ("systemd/ops-run_billing_jobs.timer", "changed"),
        (f"taskscheduler/service/{SERVICE_TOOL}.xml", "new")}
    assert any("-OnCalendar=*-*-* 01:20:00 UTC\n+OnCalendar=*-*-* 01:10:00 UTC" in note
               for note in planned.notes)
    assert {path: path.read_bytes() for path in root.rglob("*") if path.is_file()} == before

    run(SimpleNamespace(dry_run=False), "generate", False, root=root)
    assert file_changes(root) == [] and not (root / "systemd" / "ops-old_job.timer").exists()
    assert [p.name for p in root.rglob(".*")] == []  # no temporary file left behind
