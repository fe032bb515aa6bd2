"""The schedule's files for each runner, generated from ops_lib/schedule.py and checked in.

Pure functions, no I/O: `crontab_text` (cron), `task_scheduler_xml` and `service_task_xml`
(Windows Task Scheduler), `systemd_units` (timers and services), and `generated_files`, every
checked-in file by its path. `expressible_everywhere` is the rule that keeps the three runners
in step: only the cron shapes every runner can say the same way are allowed (docs/scheduling.md).
tools/manage_schedule.py writes the files and checks them; the tests compare them.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from dataclasses import dataclass
from typing import Iterable, Sequence

from .schedule import MANUAL_ONLY, SCHEDULE, ScheduledJob

# The scheduler service (schedsvc's tools/run_scheduler.py) runs the schedule itself: it is
# neither on it nor manual; its own unit and task come from here.
SERVICE_TOOL = "run_scheduler"
SERVICE_ARGS = ("run",)

# Where the example files put things; an operator edits them on install (docs/scheduling.md).
EXAMPLE_HOME = "/opt/ops-toolkit"
EXAMPLE_ENV_FILE = "/etc/ops-toolkit.env"
EXAMPLE_PYTHON = "python3"
SYSTEMD_PYTHON = "/usr/bin/python3"
SYSTEMD_USER = "ops-toolkit"
# Placeholders register_tasks.ps1 replaces with its -Python and -ToolkitDir parameters.
TASK_PYTHON = "{PYTHON}"
TASK_HOME = "{TOOLKIT_DIR}"

BLOCK_BEGIN = "# BEGIN ops-toolkit (managed by tools/manage_schedule.py)"
BLOCK_END = "# END ops-toolkit (managed by tools/manage_schedule.py)"

GENERATED_BY = ("Generated from ops_lib/schedule.py by "
                "`python tools/manage_schedule.py generate --execute`: do not edit by hand.")

# The scheduler service under a supervisor: restarted after a crash a few minutes later, at most
# SERVICE_START_LIMIT_BURST starts within SERVICE_START_LIMIT_INTERVAL (then it stays down and
# queue health says so). systemd's defaults (100 ms, 5 in 10 s) give up within a second.
SERVICE_RESTART_SECONDS = 120
SERVICE_START_LIMIT_BURST = 5
SERVICE_START_LIMIT_INTERVAL = 3600
# A stop lets the service pass SIGTERM on and wait for its running jobs; systemd kills what is
# left after this long.
SERVICE_STOP_SECONDS = 600
# Task Scheduler: restart a failed start, and re-start a service that died, this often.
SERVICE_TASK_RESTART_MINUTES = 5
SERVICE_TASK_RESTART_COUNT = 3
SERVICE_TASK_BOOT_DELAY_MINUTES = 1
# A job past its time limit is sent SIGTERM (cron's `timeout`), then SIGKILL this much later.
KILL_AFTER_SECONDS = 60

WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"


# --- which cron expressions every runner can say ---------------------------------------------

@dataclass(frozen=True)
class CronShape:
    """A cron expression every runner can say: every N minutes, daily, weekly or monthly."""

    kind: str  # "minutes" | "daily" | "weekly" | "monthly"
    every_minutes: int = 0  # kind "minutes"
    hour: int = 0
    minute: int = 0
    weekday: int = 0  # kind "weekly": 0 Sunday .. 6 Saturday
    day: int = 0  # kind "monthly"


_NUMBER = re.compile(r"\d{1,2}")


def cron_shape(cron: str) -> CronShape:
    """The shape of `cron`; ValueError (why) when some runner cannot say it the same way.

    Accepted, exactly: `* * * * *`; `*/N * * * *` with N dividing 60; `M H * * *`;
    `M H * * D` (one weekday, 0-7); `M H D * *` (one day of the month). Everything else is
    refused: lists, ranges, steps outside the minute field, names, `?`, `L`, `W`, `#`, `@daily`.
    """
    from croniter import croniter  # here: a tool's --help never loads it

    fields = cron.split()
    if len(fields) != 5 or not croniter.is_valid(cron):
        raise ValueError("not a valid five-field cron expression")
    minute, hour, day, month, weekday = fields
    for name, value in zip(("minute", "hour", "day", "month", "weekday"), fields):
        for mark, what in ((",", "a list"), ("-", "a range"), ("?", "'?'"), ("L", "'L'"),
                           ("W", "'W'"), ("#", "'#'")):
            if mark in value.upper():
                raise ValueError(f"{what} in the {name} field: not one of the shapes every "
                                 f"runner says the same way (docs/scheduling.md)")
        if value != "*" and not _NUMBER.fullmatch(value) and not (
                name == "minute" and value.startswith("*/")):
            if "/" in value:
                raise ValueError(f"a step in the {name} field ({value}): only */N in the "
                                 f"minute field is accepted")
            raise ValueError(f"{value!r} in the {name} field: only numbers and * are accepted")
    if month != "*":
        raise ValueError("a month restriction: the accepted shapes run every month")
    if minute == "*" or minute.startswith("*/"):
        if (hour, day, weekday) != ("*", "*", "*"):
            raise ValueError("every minute or every N minutes within some hours or days: only "
                             "around the clock is accepted")
        every = 1 if minute == "*" else int(minute[2:])
        if every < 1 or 60 % every:
            raise ValueError(f"every {every} minutes does not divide the hour: cron restarts at "
                             f"minute 0 every hour, Task Scheduler's repetition does not")
        return CronShape("minutes", every_minutes=every)
    if hour == "*":
        raise ValueError("a fixed minute of every hour: not an accepted shape (use */N minutes "
                         "or a time of day)")
    at = {"hour": int(hour), "minute": int(minute)}
    if day != "*" and weekday != "*":
        raise ValueError("both a day of the month and a weekday: cron runs on either, the "
                         "other runners on one kind only")
    if weekday != "*":
        return CronShape("weekly", weekday=int(weekday) % 7, **at)
    if day != "*":
        return CronShape("monthly", day=int(day), **at)
    return CronShape("daily", **at)


def expressible_everywhere(cron: str) -> str | None:
    """None when cron, Task Scheduler and systemd can all say `cron` the same way; else why not."""
    try:
        cron_shape(cron)
    except ValueError as exc:
        return str(exc)
    return None


def schedule_problems(jobs: Iterable[ScheduledJob] = SCHEDULE,
                      tools: Iterable[str] | None = None) -> list[str]:
    """What is wrong with the schedule itself, one line each: expressions the runners cannot all
    say, copies the systemd timers cannot split, and (given the names of tools/*.py) a tool
    neither scheduled nor manual-only, or a manual-only one that does not exist."""
    jobs = list(jobs)
    problems = []
    for job in jobs:
        why = expressible_everywhere(job.cron)
        if why:
            problems.append(f"{job.tool}: cron {job.cron!r}: {why}")
            continue
        if job.max_copies > 1:
            shape = cron_shape(job.cron)
            if not job.overlap:
                problems.append(f"{job.tool}: max_copies {job.max_copies} but overlap is False")
            elif shape.kind != "minutes" or 60 % (shape.every_minutes * job.max_copies):
                problems.append(f"{job.tool}: {job.max_copies} copies of {job.in_words()}: the "
                                f"systemd timers split the hour between copies, so the interval "
                                f"times the copies must divide 60 minutes")
    if tools is not None:
        tools = set(tools)
        known = {job.tool for job in jobs} | set(MANUAL_ONLY) | {SERVICE_TOOL}
        for tool in sorted(tools - known):
            problems.append(f"tools/{tool}.py is neither on the schedule nor in MANUAL_ONLY "
                            f"(ops_lib/schedule.py)")
        for tool in sorted(set(MANUAL_ONLY) - tools):
            problems.append(f"MANUAL_ONLY names {tool}, but tools/{tool}.py does not exist")
    return problems


# --- cron -------------------------------------------------------------------------------------

def _comment(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, 97, initial_indent=f"# {indent}",
                         subsequent_indent=f"# {indent}  " if indent else "# ",
                         break_on_hyphens=False, break_long_words=False)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _overlap_words(job: ScheduledJob) -> str:
    if job.max_copies > 1:
        return (f"up to {job.max_copies} copies at once (rows are claimed; each run stops "
                f"within its {job.budget_seconds} s budget)")
    return "one copy at a time (a second copy finds the run lock held and logs 'skipped')"


def cron_command(job: ScheduledJob, python: str = EXAMPLE_PYTHON, home: str | None = None,
                 env_file: str | None = None) -> str:
    """The shell command of a job's cron line: its folder, its secrets, its time limit. With
    `home` and `env_file` the paths are written into the command (quoted); without, it uses the
    crontab's OPS_HOME and ENV_FILE lines."""
    words = [python, f"tools/{job.tool}.py", *job.args]
    command = " ".join(shlex.quote(word) for word in words)
    folder = shlex.quote(home) if home is not None else '"$OPS_HOME"'
    secrets = shlex.quote(env_file) if env_file is not None else '"$ENV_FILE"'
    # POSIX sh only: a block without SHELL= runs under cron's /bin/sh.
    line = (f"cd {folder} && set -a && . {secrets} && set +a && "
            f"timeout -k {KILL_AFTER_SECONDS} {job.time_limit_seconds} {command}")
    return line.replace("%", "\\%")  # cron turns a bare % into a newline


def crontab_text(optional_jobs: Iterable[str] = (), home: str = EXAMPLE_HOME,
                 python: str = EXAMPLE_PYTHON, env_file: str = EXAMPLE_ENV_FILE,
                 run_as: str | None = None, jobs: Sequence[ScheduledJob] = SCHEDULE,
                 in_a_block: bool = False) -> str:
    """The schedule as a crontab: required jobs (and the optional ones named) as live lines,
    the other optional ones commented out with why, manual-only tools as comments.
    `run_as`: the /etc/cron.d format, where each line names the user it runs as.
    `in_a_block`: a block inside a crontab that has other lines: no environment lines (cron
    applies one to every later line, other people's too), the paths are in each command."""
    enabled = set(optional_jobs)
    width = max(len(job.cron) for job in jobs)
    lines = _comment("ops-toolkit's schedule for cron (Linux). " + GENERATED_BY)
    lines += _comment(
        "Install it as a marked block of the service user's crontab with "
        "`python tools/manage_schedule.py install-crontab --execute` (a re-run replaces the "
        "block, --remove takes it out); docs/scheduling.md. Do not also run "
        f"tools/{SERVICE_TOOL}.py (the scheduler service): it runs this same schedule itself.")
    lines += _comment(
        "Times are UTC: keep the server's clock on UTC (cron reads the expressions in local "
        "time). Every tool logs to stderr and to OPS_LOG_FILE; "
        + ("cron mails stderr to the crontab's MAILTO (to this user when it is not set). "
           if in_a_block else "cron mails stderr only when MAILTO is set. ")
        + "Each line stops its job after its budget plus grace (timeout).")
    if in_a_block:
        lines += _comment("This block sets no environment lines (cron would apply them to every "
                          "later line, other jobs' too); the paths are in each line. "
                          "Secrets live in the env file each line reads (OPS_DATABASE_URL, "
                          "OPS_SMTP_*), readable by this user only.")
    else:
        lines += [
            "SHELL=/bin/bash",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            'MAILTO=""',
            f"OPS_HOME={home}",
            "# Secrets live in an env file readable by this user only (OPS_DATABASE_URL, "
            "OPS_SMTP_*).",
            f"ENV_FILE={env_file}",
        ]
    paths = {"home": home, "env_file": env_file} if in_a_block else {}
    user = f"{run_as} " if run_as else ""
    for job in jobs:
        live = not job.optional or job.tool in enabled
        line = f"{job.cron.ljust(width)}  {user}{cron_command(job, python, **paths)}"
        lines.append("")
        if live:
            enabled_why = " Optional, enabled by optional_jobs." if job.optional else ""
            lines += _comment(f"{job.tool}: {job.what}. {_sentence(job.in_words())}, "
                              f"{_overlap_words(job)}.{enabled_why}")
            lines.append(line)
        else:
            lines += _comment(f"Optional: {job.tool}: {job.what}. Suggested: "
                              f"{job.in_words()}. Optional because: {job.why_optional}. To "
                              f"enable it, name it in the optional_jobs setting and re-run "
                              f"install-crontab (or uncomment the line).")
            lines.append(f"# {line}")
    lines.append("")
    lines.append("# Never scheduled (a person runs them):")
    for tool, why in MANUAL_ONLY.items():
        lines += _comment(f"tools/{tool}.py: {why}.", indent="  ")
    return "\n".join(lines) + "\n"


def crontab_block(**options) -> str:
    """`crontab_text` between the installer's BEGIN and END markers (with no environment
    lines)."""
    return f"{BLOCK_BEGIN}\n{crontab_text(in_a_block=True, **options)}{BLOCK_END}\n"


# --- Windows Task Scheduler -------------------------------------------------------------------

def iso_duration(seconds: int) -> str:
    """Seconds as an XML duration: 540 -> PT9M, 88200 -> P1DT30M, 0 -> PT0S."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    text = "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")
    return text if text != "P" else "PT0S"


def _task(description: str):
    import xml.etree.ElementTree as ET

    ET.register_namespace("", TASK_NS)
    task = ET.Element(f"{{{TASK_NS}}}Task", version="1.2")
    info = _sub(task, "RegistrationInfo")
    _sub(info, "Description", description)
    return task, _sub(task, "Triggers")


def _sub(parent, tag: str, text: str | None = None, **attributes: str):
    import xml.etree.ElementTree as ET

    element = ET.SubElement(parent, f"{{{TASK_NS}}}{tag}", attributes)
    if text is not None:
        element.text = text
    return element


def _boolean(value: bool) -> str:
    return "true" if value else "false"


def _add_trigger(triggers, shape: CronShape) -> None:
    # The schedule is UTC: a StartBoundary with Z fires at that instant whatever the host's zone.
    if shape.kind == "minutes":
        trigger = _sub(triggers, "TimeTrigger")
        repetition = _sub(trigger, "Repetition")  # no Duration: repeat indefinitely
        _sub(repetition, "Interval", iso_duration(shape.every_minutes * 60))
        _sub(repetition, "StopAtDurationEnd", "false")
        # From midnight: with N dividing 60 the repetition meets cron's minutes every hour.
        _sub(trigger, "StartBoundary", "2026-01-01T00:00:00Z")
        _sub(trigger, "Enabled", "true")
        return
    trigger = _sub(triggers, "CalendarTrigger")
    _sub(trigger, "StartBoundary", f"2026-01-01T{shape.hour:02d}:{shape.minute:02d}:00Z")
    _sub(trigger, "Enabled", "true")
    if shape.kind == "daily":
        _sub(_sub(trigger, "ScheduleByDay"), "DaysInterval", "1")
    elif shape.kind == "weekly":
        by_week = _sub(trigger, "ScheduleByWeek")
        _sub(_sub(by_week, "DaysOfWeek"), WEEKDAYS[shape.weekday])
        _sub(by_week, "WeeksInterval", "1")
    else:
        by_month = _sub(trigger, "ScheduleByMonth")
        _sub(_sub(by_month, "DaysOfMonth"), "Day", str(shape.day))
        months = _sub(by_month, "Months")
        for month in MONTHS:
            _sub(months, month)


def _settings(task, *, policy: str, start_when_available: bool, time_limit: str,
              enabled: bool):
    settings = _sub(task, "Settings")
    _sub(settings, "MultipleInstancesPolicy", policy)
    _sub(settings, "DisallowStartIfOnBatteries", "false")
    _sub(settings, "StopIfGoingOnBatteries", "false")
    _sub(settings, "AllowHardTerminate", "true")
    _sub(settings, "StartWhenAvailable", _boolean(start_when_available))
    _sub(settings, "AllowStartOnDemand", "true")
    _sub(settings, "Enabled", _boolean(enabled))
    _sub(settings, "ExecutionTimeLimit", time_limit)
    return settings


def _exec(task, tool: str, args: Iterable[str]) -> None:
    actions = _sub(task, "Actions", Context="Author")
    action = _sub(actions, "Exec")
    _sub(action, "Command", TASK_PYTHON)
    _sub(action, "Arguments", _windows_command_line([f"tools\\{tool}.py", *args]))
    _sub(action, "WorkingDirectory", TASK_HOME)


def _windows_command_line(words: list[str]) -> str:
    """Words quoted the way a Windows program's command line parser reads them back."""
    import subprocess

    return subprocess.list2cmdline(words)


def _xml_text(task) -> str:
    import xml.etree.ElementTree as ET

    ET.indent(task, "  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(task, "unicode") + "\n"


def task_scheduler_xml(job: ScheduledJob) -> str:
    """One job as a Task Scheduler task (schema 1.2). Optional jobs are registered disabled.

    Task Scheduler cannot cap copies at N: a job with max_copies > 1 runs in Parallel and is
    held to N by its own budget (a run ends within it, one starts per slot)."""
    shape = cron_shape(job.cron)
    optional = f" Optional ({job.why_optional}): registered disabled." if job.optional else ""
    task, triggers = _task(f"ops-toolkit {job.tool}: {job.what}; {job.in_words()}.{optional} "
                           f"{GENERATED_BY}")
    _add_trigger(triggers, shape)
    _settings(task, policy="Parallel" if job.max_copies > 1 else "IgnoreNew",
              start_when_available=job.catch_up,
              time_limit=iso_duration(job.time_limit_seconds), enabled=not job.optional)
    _exec(task, job.tool, job.args)
    return _xml_text(task)


def service_task_xml() -> str:
    """The scheduler service as a task: at startup, no time limit, restarted when it fails.

    Task Scheduler's RestartOnFailure acts only when the task fails to start, not when the
    program exits or crashes; so a second trigger repeats every few minutes and, with
    IgnoreNew, starts the service again only when it is not running."""
    task, triggers = _task(
        f"ops-toolkit scheduler service (tools/{SERVICE_TOOL}.py run): runs the whole schedule; "
        f"register it instead of the per-job tasks, never with them. {GENERATED_BY}")
    boot = _sub(triggers, "BootTrigger")
    _sub(boot, "Enabled", "true")
    _sub(boot, "Delay", iso_duration(SERVICE_TASK_BOOT_DELAY_MINUTES * 60))
    _add_trigger(triggers, CronShape("minutes", every_minutes=SERVICE_TASK_RESTART_MINUTES))
    settings = _settings(task, policy="IgnoreNew", start_when_available=True,
                         time_limit="PT0S", enabled=True)
    restart = _sub(settings, "RestartOnFailure")
    _sub(restart, "Interval", iso_duration(SERVICE_TASK_RESTART_MINUTES * 60))
    _sub(restart, "Count", str(SERVICE_TASK_RESTART_COUNT))
    _exec(task, SERVICE_TOOL, SERVICE_ARGS)
    return _xml_text(task)


# --- systemd ----------------------------------------------------------------------------------

def on_calendar(shape: CronShape, copy: int = 0, copies: int = 1) -> str:
    """systemd's OnCalendar for a shape; with `copies`, the slots of copy number `copy`."""
    if shape.kind == "minutes":
        step = shape.every_minutes * copies
        first = shape.every_minutes * copy
        minute = "*" if step == 1 else f"{first:02d}/{step}"
        return f"*-*-* *:{minute}:00 UTC"
    at = f"{shape.hour:02d}:{shape.minute:02d}:00 UTC"
    if shape.kind == "weekly":
        return f"{WEEKDAYS[shape.weekday][:3]} *-*-* {at}"
    if shape.kind == "monthly":
        return f"*-*-{shape.day:02d} {at}"
    return f"*-*-* {at}"


def _unit(sections: list[tuple[str, list[tuple[str, str]]]], comments: list[str]) -> str:
    lines = [f"# {line}" for line in comments]
    for name, entries in sections:
        lines += ["", f"[{name}]"] + [f"{key}={value}" for key, value in entries]
    return "\n".join(lines) + "\n"


def _unit_comments(about: str) -> list[str]:
    return textwrap.wrap(GENERATED_BY, 97) + textwrap.wrap(
        f"Edit User, WorkingDirectory, EnvironmentFile and the python path for this host with a "
        f"drop-in (docs/scheduling.md), not here. {about}", 97)


def _service_common() -> list[tuple[str, str]]:
    return [
        ("User", SYSTEMD_USER),
        ("WorkingDirectory", EXAMPLE_HOME),
        ("EnvironmentFile", EXAMPLE_ENV_FILE),
    ]


def _job_service(job: ScheduledJob, description: str) -> str:
    command = " ".join(shlex.quote(w) for w in [SYSTEMD_PYTHON, f"tools/{job.tool}.py",
                                                 *job.args])
    return _unit([
        ("Unit", [("Description", description),
                  ("Wants", "network-online.target"),
                  ("After", "network-online.target")]),
        ("Service", [
            ("Type", "oneshot"),
            *_service_common(),
            ("ExecStart", command.replace("%", "%%")),
            # A oneshot service's time limit is TimeoutStartSec (RuntimeMaxSec does not apply
            # to it): SIGTERM at budget plus grace, SIGKILL TimeoutStopSec later.
            ("TimeoutStartSec", str(job.time_limit_seconds)),
            ("TimeoutStopSec", str(KILL_AFTER_SECONDS)),
        ]),
    ], _unit_comments(f"Started by its timer, {job.in_words()}."))


def _job_timer(job: ScheduledJob, calendar: str, description: str,
               calendar_words: str) -> str:
    timer: list[tuple[str, str]] = [("OnCalendar", calendar), ("AccuracySec", "1s")]
    if job.catch_up:  # a slot missed while the host was down runs once at boot
        timer.append(("Persistent", "true"))
    if job.randomized_delay_seconds:
        timer.append(("RandomizedDelaySec", str(job.randomized_delay_seconds)))
    optional = ([f"Optional ({job.why_optional}): enable it only where optional_jobs names it."]
                if job.optional else [])
    return _unit([("Unit", [("Description", description)]), ("Timer", timer),
                  ("Install", [("WantedBy", "timers.target")])],
                 _unit_comments(" ".join([f"{_sentence(calendar_words)}."] + optional)))


def systemd_units(jobs: Sequence[ScheduledJob] = SCHEDULE) -> dict[str, str]:
    """Every unit file by name: a oneshot service and its timer per job, copies of a job with
    max_copies > 1 as a templated service with one timer per copy, and ops-scheduler.service."""
    units: dict[str, str] = {}
    for job in jobs:
        shape = cron_shape(job.cron)
        name = f"ops-{job.tool}"
        what = f"ops-toolkit {job.tool}: {job.what}"
        if job.max_copies == 1:
            units[f"{name}.service"] = _job_service(job, what)
            units[f"{name}.timer"] = _job_timer(job, on_calendar(shape), f"{what} (timer)",
                                                job.in_words())
            continue
        # A timer never starts a unit that is still running: copy k of N has its own instance
        # and its own timer, firing on every N-th slot; so N copies at most, each slot starts one.
        units[f"{name}@.service"] = _job_service(job, f"{what} (copy %i)")
        for copy in range(job.max_copies):
            units[f"{name}@{copy}.timer"] = _job_timer(
                job, on_calendar(shape, copy, job.max_copies),
                f"{what} (timer of copy {copy} of {job.max_copies})",
                f"copy {copy} of {job.max_copies}: every {job.max_copies} slots of the job's "
                f"{job.in_words()}, from slot {copy}; together the copies take every slot")
    units["ops-scheduler.service"] = scheduler_service_unit()
    return units


def scheduler_service_unit() -> str:
    """ops-scheduler.service: the scheduler service in the foreground, restarted after a crash."""
    command = " ".join([SYSTEMD_PYTHON, f"tools/{SERVICE_TOOL}.py", *SERVICE_ARGS])
    return _unit([
        ("Unit", [
            ("Description", "ops-toolkit scheduler service: runs the whole schedule (instead of "
                            "the ops-*.timer units, never with them)"),
            ("Wants", "network-online.target"),
            ("After", "network-online.target"),
            # Counted over an interval longer than the restarts it allows, so the cap holds:
            # after the last one the unit stays failed until someone starts it again.
            ("StartLimitIntervalSec", str(SERVICE_START_LIMIT_INTERVAL)),
            ("StartLimitBurst", str(SERVICE_START_LIMIT_BURST)),
        ]),
        ("Service", [
            ("Type", "exec"),
            *_service_common(),
            ("ExecStart", command),
            ("Restart", "on-failure"),
            ("RestartSec", str(SERVICE_RESTART_SECONDS)),
            # SIGTERM to the service alone, which passes it on to its jobs and waits for them;
            # whatever is left after TimeoutStopSec is killed.
            ("KillMode", "mixed"),
            ("TimeoutStopSec", str(SERVICE_STOP_SECONDS)),
        ]),
        ("Install", [("WantedBy", "multi-user.target")]),
    ], _unit_comments("The scheduler service in the foreground; systemd restarts it after a "
                      "crash, a few times an hour at most."))


# --- every checked-in file --------------------------------------------------------------------

# The folders (and patterns) the generated files own: a file there that is not generated is stale.
MANAGED_PATTERNS = ("crontab.example", "taskscheduler/*.xml", "taskscheduler/service/*.xml",
                    "systemd/*")
SERVICE_TASK_PATH = f"taskscheduler/service/{SERVICE_TOOL}.xml"


def generated_files(jobs: Sequence[ScheduledJob] = SCHEDULE) -> dict[str, str]:
    """Every generated file's text by its path from the repository root."""
    files = {"crontab.example": crontab_text(jobs=jobs)}
    for job in jobs:
        files[f"taskscheduler/{job.tool}.xml"] = task_scheduler_xml(job)
    files[SERVICE_TASK_PATH] = service_task_xml()
    for name, text in systemd_units(jobs).items():
        files[f"systemd/{name}"] = text
    return files
