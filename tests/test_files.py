"""write_atomically: the whole new file or the old one, never a temporary left behind."""

from __future__ import annotations

import os

import pytest

from ops_lib.files import write_atomically


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics" / "ops.prom"
    with pytest.raises(FileNotFoundError):  # no folder made up for a mistyped path
        write_atomically(target, "first\n")
    target.parent.mkdir()
    write_atomically(target, "first\n")
    write_atomically(target, "second\n")
    assert target.read_text() == "second\n"
    assert os.listdir(target.parent) == ["ops.prom"]
    if os.name == "posix":
        assert target.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "page.html"
    target.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(target, "caf\u00e9 \ud800", encoding="utf-8")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["page.html"]
