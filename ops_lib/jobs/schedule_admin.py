"""The schedule's files: generate them, check them, install the crontab block.

`generate` writes what ops_lib/schedule_files.py generates (crontab.example, the Task Scheduler
XML, the systemd units) and deletes a stale one; `check` says what is wrong, one line each;
`install-crontab` puts the schedule into a crontab as a marked block that a re-run replaces and
`--remove` takes out, every other byte of the crontab left as it was. Dry runs show a diff.
"""

from __future__ import annotations

import difflib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import BadInput, OpsError
from ..files import write_atomically
from ..result import DONE, JobResult, dry_run_reason
from ..schedule import SCHEDULE, ScheduledJob
from ..schedule_files import (BLOCK_BEGIN, BLOCK_END, EXAMPLE_ENV_FILE, MANAGED_PATTERNS,
                              crontab_block, generated_files, schedule_problems)

TOOLKIT = Path(__file__).resolve().parents[2]
TOOL = "manage_schedule"
# A crontab's bytes as text, each byte one character: foreign lines come back byte for byte
# whatever their encoding (the block itself is ASCII).
CRONTAB_ENCODING = "latin-1"


@dataclass(frozen=True)
class FileChange:
    path: str  # from the toolkit's root
    old: str | None  # None: not there yet
    new: str | None  # None: stale, to delete

    @property
    def change(self) -> str:
        return "new" if self.old is None else "stale" if self.new is None else "changed"


def file_changes(root: Path = TOOLKIT, jobs: Sequence[ScheduledJob] = SCHEDULE
                 ) -> list[FileChange]:
    """The generated files that differ from what is on disk under `root`, and stale ones."""
    wanted = generated_files(jobs)
    present = {str(path.relative_to(root).as_posix())
               for pattern in MANAGED_PATTERNS for path in root.glob(pattern) if path.is_file()}
    changes = []
    for path in sorted(set(wanted) | present):
        old = (root / path).read_text(encoding="utf-8") if path in present else None
        new = wanted.get(path)
        if old != new:
            changes.append(FileChange(path, old, new))
    return changes


def check_problems(root: Path = TOOLKIT, jobs: Sequence[ScheduledJob] = SCHEDULE) -> list[str]:
    """Everything wrong with the schedule and its checked-in files, one line each."""
    tools = [path.stem for path in (root / "tools").glob("*.py")]
    problems = schedule_problems(jobs, tools)
    if problems:  # files generated from a schedule the runners cannot all say mean nothing
        return problems
    fix = "run: python tools/manage_schedule.py generate --execute"
    for change in file_changes(root, jobs):
        what = {"new": "is missing", "stale": "is not generated from the schedule (stale)",
                "changed": "differs from what the schedule generates"}[change.change]
        problems.append(f"{change.path} {what}; {fix}")
    return problems


def unified_diff(old: str | None, new: str | None, name: str) -> str:
    return "".join(difflib.unified_diff(
        (old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True),
        f"a/{name}" if old is not None else "/dev/null",
        f"b/{name}" if new is not None else "/dev/null"))


# --- the crontab block --------------------------------------------------------------------------

def with_block(crontab: str, block: str | None) -> str:
    """`crontab` with its ops-toolkit block replaced by `block` (appended when it has none;
    taken out when `block` is None). Every other line is kept byte for byte."""
    lines = crontab.split("\n")  # not splitlines: "\r" and friends stay inside their line
    begins = [n for n, line in enumerate(lines) if line.rstrip() == BLOCK_BEGIN]
    ends = [n for n, line in enumerate(lines) if line.rstrip() == BLOCK_END]
    if len(begins) > 1 or len(ends) > 1:
        raise BadInput("the crontab holds more than one ops-toolkit block: remove the extra "
                       "one by hand (crontab -e)")
    if len(begins) != len(ends) or (begins and ends[0] < begins[0]):
        raise BadInput("the crontab's ops-toolkit block has a BEGIN line without its END line "
                       "(or the other way round): fix it by hand (crontab -e)")
    block_lines = block.rstrip("\n").split("\n") if block is not None else []
    if begins:
        return "\n".join(lines[:begins[0]] + block_lines + lines[ends[0] + 1:])
    if block is None:
        return crontab
    if crontab and not crontab.endswith("\n"):
        crontab += "\n"  # cron ignores a last line without its newline anyway
    return crontab + block


def _zone_warnings(crontab: str) -> list[str]:
    """A CRON_TZ= or TZ= line above the block makes cron read the block's UTC times in that
    zone (cronie honours CRON_TZ for the lines after it)."""
    above = crontab.split(BLOCK_BEGIN)[0].split("\n")
    settings = [line.strip() for line in above
                if line.strip().split("=")[0].strip() in ("CRON_TZ", "TZ") and "=" in line]
    return [f"the crontab sets {setting!r} above the block: its times are UTC, so cron may run "
            f"them at other hours; move that line below the block or remove it"
            for setting in settings]


class CrontabCommand:
    """The user's crontab, through `crontab -l` and `crontab -`."""

    def __init__(self, program: str = "crontab"):
        self.program = program

    def describe(self) -> str:
        return "the user's crontab (crontab -l)"

    def read(self) -> str:
        try:
            done = subprocess.run([self.program, "-l"], capture_output=True, timeout=60)
        except FileNotFoundError:
            raise OpsError(f"no {self.program} command on this host (is cron installed?); "
                           f"or write a file with --crontab-file") from None
        stderr = done.stderr.decode(CRONTAB_ENCODING).strip()
        if done.returncode != 0:
            if "no crontab" in stderr.lower():
                return ""
            raise OpsError(f"{self.program} -l failed: {stderr or f'exit {done.returncode}'}")
        return done.stdout.decode(CRONTAB_ENCODING)

    def write(self, text: str) -> None:
        done = subprocess.run([self.program, "-"], input=text.encode(CRONTAB_ENCODING),
                              capture_output=True, timeout=60)
        if done.returncode != 0:
            stderr = done.stderr.decode(CRONTAB_ENCODING).strip()
            raise OpsError(f"{self.program} - refused the new crontab: "
                           f"{stderr or f'exit {done.returncode}'}")


class CrontabFile:
    """A crontab file (a test's, or /etc/cron.d/ops-toolkit), replaced in one step."""

    def __init__(self, path: str):
        self.path = Path(path)

    def describe(self) -> str:
        return str(self.path)

    def read(self) -> str:
        try:
            return self.path.read_bytes().decode(CRONTAB_ENCODING)
        except FileNotFoundError:
            return ""

    def write(self, text: str) -> None:
        if not self.path.parent.is_dir():
            raise BadInput(f"--crontab-file {self.path}: no folder {self.path.parent}")
        write_atomically(self.path, text, encoding=CRONTAB_ENCODING)


def check_install_options(action: str | None, check: bool, crontab_file: str | None,
                          remove: bool, cron_user: str | None, python: str | None = None,
                          execute: bool = False) -> list[str]:
    """Problems with the options, before anything connects."""
    problems = []
    if action is None and not check:
        problems.append("say what to do: generate, install-crontab, or --check")
    if check and action == "install-crontab":
        problems.append("--check checks the generated files: not with install-crontab")
    if check and execute:
        problems.append("--check changes nothing: leave out --execute")
    if action != "install-crontab":
        for given, name in ((crontab_file, "--crontab-file"), (remove, "--remove"),
                            (cron_user, "--cron-user"), (python, "--python")):
            if given:
                problems.append(f"{name} goes with install-crontab")
    if cron_user and not crontab_file:
        problems.append("--cron-user is for a file in /etc/cron.d: give --crontab-file too")
    return problems


# --- the job ------------------------------------------------------------------------------------

def run(context, action: str | None, check: bool, crontab_file: str | None = None,
        remove: bool = False, cron_user: str | None = None, env_file: str = EXAMPLE_ENV_FILE,
        python: str | None = None, root: Path = TOOLKIT) -> JobResult:
    """manage_schedule.py: generate or check the files, or install the crontab block."""
    if check:
        return _check(root)
    if action == "generate":
        return _generate(context, root)
    target = CrontabFile(crontab_file) if crontab_file else CrontabCommand()
    return _install_crontab(context, target, remove, cron_user, env_file,
                            python or sys.executable, root)


def _check(root: Path) -> JobResult:
    result = JobResult(TOOL, dry_run=True, stop_reason=DONE)
    problems = check_problems(root)
    result.section("Problems", [{"problem": problem} for problem in problems], ["problem"])
    result.counts["problems"] = len(problems)
    result.exit_code = 1 if problems else 0
    result.headline = (f"SCHEDULE {'PROBLEMS' if problems else 'OK'}: "
                       f"{len(problems) or 'no'} problem{'' if len(problems) == 1 else 's'}")
    return result


def _generate(context, root: Path) -> JobResult:
    result = JobResult(TOOL, context.dry_run)
    changes = file_changes(root)
    result.section("Files", [{"file": c.path, "change": c.change} for c in changes],
                   ["file", "change"])
    for change in changes:
        result.add(change.change)
        result.notes.append(unified_diff(change.old, change.new, change.path).rstrip("\n"))
    if not changes:
        result.notes.append("every generated file is up to date")
    if context.dry_run:
        result.stop_reason = dry_run_reason()
        return result
    for change in changes:
        path = root / change.path
        if change.new is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, change.new)
    result.stop_reason = DONE
    return result


def _install_crontab(context, target, remove: bool, cron_user: str | None, env_file: str,
                     python: str, root: Path) -> JobResult:
    result = JobResult(TOOL, context.dry_run)
    current = target.read()
    block = None if remove else crontab_block(
        optional_jobs=context.settings.optional_jobs, home=str(root), python=python,
        env_file=env_file, run_as=cron_user)
    wanted = with_block(current, block)
    had_block = BLOCK_BEGIN in current
    change = ("unchanged" if wanted == current else "removed" if remove
              else "replaced" if had_block else "installed")
    result.section("Crontab", [{"crontab": target.describe(), "change": change}],
                   ["crontab", "change"])
    if wanted != current:
        result.notes.append(unified_diff(current, wanted, "crontab").rstrip("\n"))
    if not remove:
        result.notes += _zone_warnings(wanted)
    if not remove and not Path(env_file).is_file():
        result.notes.append(f"the env file {env_file} does not exist: every line fails until "
                            f"it does (--env-file)")
    if context.dry_run:
        result.stop_reason = dry_run_reason()
        return result
    if wanted != current:
        target.write(wanted)
    result.stop_reason = DONE
    return result
