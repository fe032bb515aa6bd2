"""The log file: safe when several processes of the toolkit append to one file at once.

Cron starts the worker every minute while the last copy may still run, and the scheduler service
runs its jobs as child processes: all of them write the same `--log-file`. So:

- every record is ONE `write()` on a descriptor opened with `O_APPEND`: the kernel puts each
  write at the end of the file as it is then, so lines of two processes never overwrite or cut
  into each other (logging.FileHandler writes through a buffered stream, which may split a long
  record into several writes). A record is never split: one longer than `MAX_RECORD_BYTES` is
  cut short, with a note, and still written whole in one call. (Linux writes up to 2 GiB less a
  page in one call to a local file; 64 KiB is far inside that and far above any real line.)
- the toolkit never rotates its own file (two processes rotating at once is the bug): logrotate
  does, with `copytruncate` (deploy/logrotate/ops-toolkit). Truncation is safe with O_APPEND: a
  writer's next record lands at the new end of the file, offset 0, never at its old offset
  (which would leave a hole of NUL bytes). There is nothing to reopen.
- on Windows nobody rotates a file a process holds open: `{date}` in the path is replaced by the
  record's UTC date (`ops-{date}.log` -> `ops-2026-11-28.log`), so each day has its own file
  and a long-running process moves to the next file at midnight UTC. Delete old files by age.
  There the file is opened for appending only (FILE_APPEND_DATA without FILE_WRITE_DATA), the
  Windows way to make each write land at the end: the C runtime's O_APPEND seeks, then writes,
  and two processes can meet in between.

`--log-format json` writes one JSON object a line (`JsonFormatter`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time

DATE_PLACEHOLDER = "{date}"
# The most one record may take: one write() call, whole, on any local filesystem.
MAX_RECORD_BYTES = 64 * 1024
LOG_FORMATS = ("text", "json")


def log_path(template: str, created: float) -> str:
    """The file a record made at `created` (epoch seconds) goes to: `{date}` is its UTC date."""
    if DATE_PLACEHOLDER not in template:
        return template
    day = dt.datetime.fromtimestamp(created, dt.timezone.utc).strftime("%Y-%m-%d")
    return template.replace(DATE_PLACEHOLDER, day)


def _open_for_append(path: str) -> int:
    """A descriptor on which every write goes to the end of the file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows hosts only
        import _winapi
        import msvcrt

        file_append_data, share_all, open_always = 0x0004, 0x0007, 4
        handle = _winapi.CreateFile(path, file_append_data, share_all, _winapi.NULL,
                                    open_always, 0x80, _winapi.NULL)  # FILE_ATTRIBUTE_NORMAL
        return msvcrt.open_osfhandle(handle, 0)  # binary: the bytes as encoded
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


class AppendFileHandler(logging.Handler):
    """Appends each record to the file in one write; `{date}` in the path names a file a day."""

    terminator = "\n"

    def __init__(self, template: str):
        super().__init__()
        self.template = template
        self.path = log_path(template, dt.datetime.now(dt.timezone.utc).timestamp())
        self._fd: int | None = _open_for_append(self.path)  # an unusable path fails here

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self._encode(record)
            self.acquire()  # threads of one process: one descriptor, records in order
            try:
                path = log_path(self.template, record.created)
                if path != self.path or self._fd is None:
                    self._close_fd()
                    self._fd, self.path = _open_for_append(path), path
                os.write(self._fd, data)
            finally:
                self.release()
        except Exception:
            self.handleError(record)

    def _encode(self, record: logging.LogRecord) -> bytes:
        data = (self.format(record) + self.terminator).encode("utf-8", "replace")
        if len(data) <= MAX_RECORD_BYTES:
            return data
        # Too long for one record: cut the message, not the line, so JSON stays JSON.
        message = record.getMessage().encode("utf-8", "replace")
        note = f" ... [{len(data) - MAX_RECORD_BYTES} bytes more not logged]"
        keep = max(0, len(message) - (len(data) - MAX_RECORD_BYTES) - len(note) - 64)
        shorter = logging.makeLogRecord(record.__dict__)
        shorter.msg = message[:keep].decode("utf-8", "ignore") + note
        shorter.args, shorter.exc_info, shorter.exc_text, shorter.stack_info = None, None, None, None
        data = (self.format(shorter) + self.terminator).encode("utf-8", "replace")
        return data[:MAX_RECORD_BYTES - 1] + b"\n" if len(data) > MAX_RECORD_BYTES else data

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self.acquire()
        try:
            self._close_fd()
        finally:
            self.release()
        super().close()


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, tool, pid, run id, message (json.dumps)."""

    def __init__(self, tool: str, run_id: str | None):
        super().__init__()
        self.tool = tool
        self.run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        moment = dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
        entry = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "tool": self.tool,
            "pid": record.process,
            "run_id": self.run_id,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def text_formatter(tool: str) -> logging.Formatter:
    """The plain line: `2026-11-28T08:50:01Z INFO tool[pid] message` (UTC)."""
    formatter = logging.Formatter(
        f"%(asctime)s %(levelname)s {tool}[%(process)d] %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    return formatter
