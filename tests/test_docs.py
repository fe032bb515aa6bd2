"""Every tool has help and a manual page; every setting is documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ops_lib.settings import SETTINGS

REPO = Path(__file__).resolve().parent.parent
TOOLS = sorted(p.stem for p in (REPO / "tools").glob("*.py"))


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


def test_the_readme_lists_every_tool():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert [t for t in TOOLS if f"{t}.py" not in text] == []
