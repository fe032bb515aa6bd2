"""--log-file with several processes at once (cron overlaps the worker): whole lines, every one;
--log-format json; secrets redacted in both formats; `{date}` file names; logrotate's
copytruncate under a writer that keeps its file open (ops_lib/logfile.py)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops_lib.logfile import MAX_RECORD_BYTES, AppendFileHandler, JsonFormatter
from tests.conftest import IN_CI, REPO, run_cli, sqlite_database, tool_env

# A process of the toolkit that logs through configure_logging, as a tool does: it waits for
# the test's go file (so the copies start writing together), then logs LINES records whose
# lengths vary up to about 9 KB: beyond the 4 KB a pipe writes atomically and the 8 KB buffer
# of a buffered file, the two sizes at which a naive writer splits a line.
WRITER = r'''
import logging, os, sys, time
sys.path.insert(0, sys.argv[1])
from ops_lib.cli import configure_logging
log_file, log_format, go, done, lines, secret = sys.argv[2:8]
configure_logging("log_writer", False, False, log_file, [secret], log_format=log_format,
                  run_id=f"run-{os.getpid()}")
while not os.path.exists(go):
    time.sleep(0.005)
log = logging.getLogger("ops")
for number in range(int(lines)):
    size = (number * 997) % 9000
    log.info("record %d of %d size %d %s end %s", number, os.getpid(), size, "x" * size, secret)
open(done, "w").close()
while os.path.exists(done):  # the test removes it when it has rotated the file (if it does)
    time.sleep(0.005)
for number in range(int(lines), 2 * int(lines)):
    log.info("record %d of %d size %d %s end %s", number, os.getpid(), 5, "x" * 5, secret)
'''
SECRET = "hunter2-not-in-any-log"
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO log_writer\[(\d+)\] "
                       r"record (\d+) of (\d+) size (\d+) (x*) end \*\*\*$")


def _start_writers(tmp_path: Path, log_file: Path, log_format: str, copies: int, lines: int,
                   keep_open: bool = False) -> list[tuple[subprocess.Popen, Path]]:
    script = tmp_path / "log_writer.py"
    script.write_text(WRITER, encoding="utf-8")
    go = tmp_path / "go"
    writers = []
    for copy in range(copies):
        done = tmp_path / f"done-{copy}"
        process = subprocess.Popen(
            [sys.executable, str(script), str(REPO), str(log_file), log_format, str(go),
             str(done), str(lines), SECRET],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        writers.append((process, done))
    go.touch()
    for process, done in writers:
        while not done.exists():  # each copy has written its first LINES records
            assert process.poll() is None, f"a writer exited early ({process.returncode})"
            time.sleep(0.01)
    if not keep_open:
        _finish(writers)
    return writers


def _finish(writers: list[tuple[subprocess.Popen, Path]]) -> None:
    for _, done in writers:
        done.unlink()
    for process, _ in writers:
        assert process.wait(timeout=120) == 0


def _text_records(text: str) -> dict[int, list[int]]:
    """pid -> record numbers, checking that every line is one whole record."""
    found: dict[int, list[int]] = {}
    for line in text.split("\n")[:-1]:
        match = TEXT_LINE.match(line)
        assert match, f"a broken line: {line[:120]!r}...{line[-60:]!r}"
        pid, number, pid_again, size, xs = match.groups()
        assert pid == pid_again and len(xs) == int(size)
        found.setdefault(int(pid), []).append(int(number))
    assert text.endswith("\n")
    return found


def test_four_processes_writing_one_text_log_file_at_once_leave_every_line_whole(tmp_path):
    log_file = tmp_path / "logs" / "toolkit.log"
    writers = _start_writers(tmp_path, log_file, "text", copies=4, lines=400)
    records = _text_records(log_file.read_text(encoding="utf-8"))
    assert sorted(records) == sorted(process.pid for process, _ in writers)
    for numbers in records.values():
        assert numbers == list(range(800))  # each process's records, all, in its order
    assert SECRET not in log_file.read_text(encoding="utf-8")


def test_json_lines_of_four_processes_each_parse_and_carry_the_run_id(tmp_path):
    log_file = tmp_path / "toolkit.log"
    writers = _start_writers(tmp_path, log_file, "json", copies=4, lines=300)
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 * 600
    by_pid: dict[int, list[int]] = {}
    for line in lines:
        entry = json.loads(line)
        assert set(entry) == {"time", "level", "tool", "pid", "run_id", "logger", "message"}
        assert entry["tool"] == "log_writer" and entry["level"] == "INFO"
        assert entry["run_id"] == f"run-{entry['pid']}"
        assert dt.datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).utcoffset() \
            == dt.timedelta(0)
        _, number, _, pid, _, size, xs, _, secret = entry["message"].split(" ")
        assert int(pid) == entry["pid"] and len(xs) == int(size) and secret == "***"
        by_pid.setdefault(entry["pid"], []).append(int(number))
    assert sorted(by_pid) == sorted(process.pid for process, _ in writers)
    assert all(numbers == list(range(600)) for numbers in by_pid.values())


def test_a_tools_json_log_lines_carry_its_run_id(tmp_path):
    url = sqlite_database(tmp_path)
    log_file = tmp_path / "toolkit.log"
    done = run_cli("cleanup_stale_devices", "--json", "--log-format", "json",
                   "--log-file", str(log_file), env=tool_env(url, tmp_path))
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    entries = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert entries and {entry["run_id"] for entry in entries} == {run_id}
    assert {entry["tool"] for entry in entries} == {"cleanup_stale_devices"}
    assert any(entry["message"] == "stopped: dry run: nothing changed" for entry in entries)
    # stderr carries the same JSON objects (for journald and Docker).
    assert [json.loads(line)["run_id"] for line in done.stderr.splitlines()] == \
        [run_id] * len(done.stderr.splitlines())


def test_secrets_in_a_traceback_are_redacted_in_json_too(tmp_path):
    log_file = tmp_path / "toolkit.log"
    script = tmp_path / "traceback_writer.py"
    script.write_text(r'''
import logging, sys
sys.path.insert(0, sys.argv[1])
from ops_lib.cli import configure_logging
configure_logging("log_writer", False, True, sys.argv[2], [sys.argv[3]], log_format=sys.argv[4],
                  run_id="run-1")
try:
    raise ConnectionError(f"could not log in as ops:{sys.argv[3]}@db")
except ConnectionError:
    logging.getLogger("ops").debug("login failed (%s)", sys.argv[3], exc_info=True)
''', encoding="utf-8")
    for log_format in ("json", "text"):
        subprocess.run([sys.executable, str(script), str(REPO), str(log_file), SECRET,
                        log_format], check=True, capture_output=True, timeout=60)
    text = log_file.read_text(encoding="utf-8")
    assert SECRET not in text
    entry = json.loads(text.splitlines()[0])
    assert entry["message"] == "login failed (***)"
    assert "ConnectionError: could not log in as ops:***@db" in entry["exception"]
    assert "ConnectionError: could not log in as ops:***@db" in text.split("\n", 1)[1]


def _record(message: str, when: dt.datetime) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "ops", "levelno": logging.INFO, "levelname": "INFO",
                                  "msg": message, "created": when.timestamp(), "process": 7})


def test_date_in_the_path_names_one_file_per_utc_day(tmp_path):
    handler = AppendFileHandler(str(tmp_path / "logs" / "ops-{date}.log"))
    handler.setFormatter(JsonFormatter("worker", "run-1"))
    before = dt.datetime(2026, 1, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
    after = dt.datetime(2026, 2, 1, 0, 0, 0, tzinfo=dt.timezone.utc)
    for message, when in (("last of january", before), ("first of february", after),
                          ("second of february", after)):
        handler.handle(_record(message, when))
    handler.close()
    january = (tmp_path / "logs" / "ops-2026-01-31.log").read_text(encoding="utf-8")
    february = (tmp_path / "logs" / "ops-2026-02-01.log").read_text(encoding="utf-8")
    assert [json.loads(line)["message"] for line in january.splitlines()] == ["last of january"]
    assert [json.loads(line)["message"] for line in february.splitlines()] == [
        "first of february", "second of february"]
    assert json.loads(january)["time"] == "2026-01-31T23:59:59.000Z"


def test_a_record_longer_than_one_write_may_take_is_cut_short_still_one_whole_json_line(
        tmp_path):
    log_file = tmp_path / "toolkit.log"
    handler = AppendFileHandler(str(log_file))
    handler.setFormatter(JsonFormatter("worker", "run-1"))
    now = dt.datetime.now(dt.timezone.utc)
    handler.handle(_record("é" * MAX_RECORD_BYTES, now))  # two bytes a character in UTF-8
    handler.handle(_record("next", now))
    handler.close()
    data = log_file.read_bytes()
    first, second = data.split(b"\n")[:2]
    assert len(first) + 1 <= MAX_RECORD_BYTES
    message = json.loads(first)["message"]
    assert message.startswith("éé") and re.search(r" \.\.\. \[\d+ bytes more not logged\]$",
                                                   message)
    assert json.loads(second)["message"] == "next"


def test_logrotate_copytruncate_under_writers_that_keep_the_file_open(tmp_path):
    logrotate = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
    if logrotate is None:
        if IN_CI:
            pytest.fail("CI needs logrotate (apt-get install logrotate)")
        pytest.skip("logrotate is not installed")
    log_dir = tmp_path / "logs"
    log_file = log_dir / "toolkit.log"
    writers = _start_writers(tmp_path, log_file, "text", copies=2, lines=200, keep_open=True)
    shipped = (REPO / "deploy" / "logrotate" / "ops-toolkit").read_text(encoding="utf-8")
    assert "copytruncate" in shipped.split("{", 1)[1]
    config = tmp_path / "logrotate.conf"
    config.write_text(shipped.replace("/var/log/ops/*.log", f"{log_dir}/*.log"),
                      encoding="utf-8")
    config.chmod(0o644)
    rotated = subprocess.run([logrotate, "--force", "--state", str(tmp_path / "state"),
                              str(config)], capture_output=True, text=True, timeout=60)
    assert rotated.returncode == 0, rotated.stderr
    _finish(writers)  # the writers log their second half into the truncated file
    [old] = [path for path in log_dir.iterdir() if path != log_file]
    first_half, second_half = _text_records(old.read_text(encoding="utf-8")), \
        _text_records(log_file.read_text(encoding="utf-8"))
    assert b"\0" not in log_file.read_bytes()  # written at the new end, not the old offset
    for process, _ in writers:
        assert first_half[process.pid] == list(range(200))
        assert second_half[process.pid] == list(range(200, 400))


def test_the_log_format_comes_from_the_environment_too_and_a_bad_one_is_one_line(tmp_path):
    url = sqlite_database(tmp_path)
    log_file = tmp_path / "toolkit.log"
    done = run_cli("cleanup_stale_devices", "--log-file", str(log_file),
                   env=tool_env(url, tmp_path, OPS_LOG_FORMAT="json"))
    assert done.returncode == 0, done.stderr
    assert all(json.loads(line)["tool"] == "cleanup_stale_devices"
               for line in log_file.read_text(encoding="utf-8").splitlines())
    bad = run_cli("cleanup_stale_devices", env=tool_env(url, tmp_path, OPS_LOG_FORMAT="xml"))
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "error: OPS_LOG_FORMAT log_format: expected one of text, json, got 'xml'"]
