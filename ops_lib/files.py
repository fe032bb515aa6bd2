"""Files other programs read while we write them (a node_exporter textfile, a status page).

A reader must see the old file or the new one, never half of one: write a temporary file in the
same folder (a rename is atomic only within one file system), fsync it, then rename it over.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Replace `path` with `text` in one step; returns the path written. The folder must exist
    (a mistyped path is an error, not a new folder)."""
    target = Path(path)
    folder = target.parent
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding=encoding, newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from the exporter's user
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return target
