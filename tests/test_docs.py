"""Every tool has help and a manual page; every setting is documented."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ops_lib.settings import SETTINGS
from tests.conftest import run_cli, sqlite_database, tool_env

REPO = Path(__file__).resolve().parent.parent
TOOLS = sorted(p.stem for p in (REPO / "tools").glob("*.py"))
# What `--help` and a usage error must not load: they answer before any of it is needed.
HEAVY_MODULES = ("sqlalchemy", "rich", "pymysql", "firebase_admin")


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_has_help_and_a_manual_page(tool):
    run = subprocess.run([sys.executable, str(REPO / "tools" / f"{tool}.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "--json" in run.stdout and "--database-url" in run.stdout
    page = REPO / "docs" / "tools" / f"{tool}.md"
    assert page.exists(), f"docs/tools/{tool}.md is missing"
    text = page.read_text(encoding="utf-8")
    for heading in ("## Synopsis", "## Risks", "## Exit status", "## Options"):
        assert heading in text, f"{page.name} has no {heading!r}"


def test_every_setting_is_in_the_configuration_reference():
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [name for name in SETTINGS if f"`{name}`" not in text]
    assert missing == []


def _default_as_documented(default) -> str | None:
    """A setting's default as the reference's table shows it (None: the page words it)."""
    from ops_lib.settings import REPO_ROOT

    if isinstance(default, tuple):
        return f"`{','.join(map(str, default))}`" if default else "(none)"
    if isinstance(default, dict):
        return f"`{','.join(f'{k}={v}' for k, v in default.items())}`" if default else None
    return f"`{str(default).replace(str(REPO_ROOT), '<repo>')}`"


def test_the_settings_table_gives_each_settings_default_source_and_meaning():
    """One row per setting, `| name | default | table | what it is |`, its default the code's."""
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = {match.group(1): match.groups()[1:] for match in re.finditer(
        r"^\| `([a-z_]+)` \| (.*?) \| (.*?) \| (.*) \|$", text, re.M)}
    wrong = []
    for name, setting in SETTINGS.items():
        if name not in rows:
            wrong.append(f"{name}: no row")
            continue
        default, table, meaning = rows[name]
        expected = _default_as_documented(setting.default)
        if expected is not None and default != expected or not default.strip():
            wrong.append(f"{name}: default {default!r}, the code's is {expected!r}")
        if (table.strip() == "yes") != setting.from_table:
            wrong.append(f"{name}: table column {table!r}, from_table={setting.from_table}")
        if not meaning.strip():
            wrong.append(f"{name}: no meaning")
    assert wrong == []


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_page_shows_a_sample_of_its_output(tool):
    text = (REPO / "docs" / "tools" / f"{tool}.md").read_text(encoding="utf-8")
    found = re.search(r"^## Sample output.*\n(?:.*\n)*?```", text, re.M)
    assert found, f"docs/tools/{tool}.md has no '## Sample output' section with a code block"


def test_the_readme_lists_every_tool():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert [t for t in TOOLS if f"{t}.py" not in text] == []


def writes(tool: str) -> bool:
    run = subprocess.run([sys.executable, str(REPO / "tools" / f"{tool}.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    return "--execute" in run.stdout.split("Examples:")[0]


def help_examples(tool: str) -> list[str]:
    """The command lines under "Examples:" in the tool's --help."""
    run = subprocess.run([sys.executable, str(REPO / "tools" / f"{tool}.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    found = re.search(r"^\s*Examples:\n((?:\s+python .*\n)+)", run.stdout, re.M)
    assert found, f"{tool} --help has no Examples section"
    return [line.strip() for line in found.group(1).splitlines()]


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_help_shows_a_dry_run_example_and_its_execute_line(tool, tmp_path):
    examples = help_examples(tool)
    assert all(line.startswith(f"python tools/{tool}.py") for line in examples), examples
    dry_runs = [line for line in examples if "--execute" not in shlex.split(line, comments=True)]
    if writes(tool):
        assert dry_runs and len(dry_runs) < len(examples), "a dry run, then the --execute line"
    else:  # a read-only tool (a check) has no --execute: every example is a run of its own
        assert dry_runs and dry_runs == examples
    # The dry-run examples really run, as printed, on a database with the schema (the
    # reporting validation compares it with itself).
    url = sqlite_database(tmp_path)
    env = tool_env(url, tmp_path, OPS_VALIDATION_TARGET_URL=url)
    for line in dry_runs:
        words = shlex.split(line, comments=True)[1:]
        done = subprocess.run([sys.executable, *words], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"{line}: {done.stderr}"
        assert "dry_run=yes" in done.stdout


def test_worker_help_states_the_max_runtime_margin():
    from ops_lib.jobs.workers import BUDGET_MARGIN_SECONDS

    done = run_cli("run_background_workers", "--help", env=tool_env("sqlite://", REPO))
    text = " ".join(done.stdout.split())
    assert f"--max-runtime must be more than {BUDGET_MARGIN_SECONDS:g} seconds" in text


def imported_modules(tool: str, *args: str) -> set[str]:
    """Top-level names of every module `python -X importtime tools/<tool>.py ARGS` loaded."""
    run = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "tools" / f"{tool}.py"),
                          *args], capture_output=True, text=True, timeout=60,
                         env=tool_env("sqlite:///never-created.db", REPO))
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", run.stderr, re.M)
    assert "click" in names, run.stderr[-2000:]
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("tool", TOOLS)
def test_help_and_usage_errors_load_no_database_or_rendering_library(tool):
    """Regression: --help imported SQLAlchemy and the jobs first (0.43-0.50 s on a loaded box)."""
    assert imported_modules(tool, "--help").isdisjoint(HEAVY_MODULES)
    assert imported_modules(tool, "--no-such-flag", "--json").isdisjoint(HEAVY_MODULES)
