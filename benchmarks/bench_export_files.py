"""Benchmark: the warehouse export's file writer alone (no database), rows/s and peak RSS.

Each measurement runs in a fresh process, so its peak RSS (getrusage's high-water mark) is its
own: it generates narrow attendance-like rows in memory, CHUNK at a time (as a streaming cursor
hands them over), over two months, and writes them with BatchWriter as one batch (month
partitions, the default 128,000-row groups and 1,000,000-row files), commit included (sha256,
fsync, manifest, rename). The time counted is the writer's only (write + commit), not the row
generation. A "rows only" line gives the peak of a process that generates the same rows and
imports pyarrow but writes nothing: the floor to compare with. Memory is flat when the peak for 2,000,000 rows is within 10 % of that for 1,000,000.

    python benchmarks/bench_export_files.py [--rows 1000000 2000000] [--formats parquet csv jsonl]
                                            [--chunk 20000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FORMATS = ("parquet", "csv", "jsonl")


def chunks(total: int, size: int):
    """Attendance-like rows: ids in order, 500 institutions, two months of school days."""
    start = dt.datetime(2026, 10, 1, 7, 50)
    for low in range(1, total + 1, size):
        rows = []
        for row_id in range(low, min(low + size, total + 1)):
            day = dt.date(2026, 10, 1) + dt.timedelta(days=(row_id * 61) // (total + 1))
            first = start.replace(month=day.month, day=day.day) + dt.timedelta(seconds=row_id % 3600)
            rows.append((row_id, 1 + row_id % 500, row_id, day, first,
                         first + dt.timedelta(hours=6), 2, "present" if row_id % 9 else "late",
                         False, first, first + dt.timedelta(hours=6, microseconds=row_id % 997)))
        yield rows


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(fmt: str, rows: int, chunk: int, folder: Path) -> dict:
    """In this process: write `rows` rows as one batch; the writer's seconds and peak RSS."""
    from ops_lib import schema
    from ops_lib.jobs.warehouse_export.files import BatchWriter

    table = schema.attendance_records
    columns = [c.name for c in table.columns]
    spent = 0.0
    writer = None
    if fmt == "none":  # the floor: the same rows and libraries, nothing written
        for module in ("pyarrow.csv", "pyarrow.parquet", "pyarrow.compute"):
            importlib.import_module(module)
    else:
        writer = BatchWriter(folder, table, columns, run_id=f"bench-{fmt}", fmt=fmt,
                             partition_column="attendance_date")
    for part in chunks(rows, chunk):
        if writer is not None:
            started = time.perf_counter()
            writer.write(part)
            spent += time.perf_counter() - started
    size = 0
    if writer is not None:
        started = time.perf_counter()
        manifest = writer.commit({"watermark_from": None, "watermark_to": None})
        spent += time.perf_counter() - started
        size = sum(f["bytes"] for f in manifest["files"])
    return {"format": fmt, "rows": rows, "seconds": spent, "peak_rss_mib": peak_rss_mib(),
            "bytes": size}


def in_child(fmt: str, rows: int, chunk: int, folder: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", fmt, str(rows), str(chunk),
                           str(folder)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 2_000_000])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (a temporary "
                        "folder by default, removed afterwards)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        fmt, rows, chunk, folder = options.child
        print(json.dumps(measure(fmt, int(rows), int(chunk), Path(folder))))
        return
    base = Path(tempfile.mkdtemp(prefix="bench-export-", dir=options.dir))
    try:
        print(f"writer alone, attendance_records, month partitions, chunks of {options.chunk:,}")
        print(f"{'format':<10}{'rows':>11}{'seconds':>9}{'rows/s':>11}{'MB/s':>7}"
              f"{'peak RSS MiB':>14}{'vs first':>10}")
        for fmt in ["none", *options.formats]:
            first = None
            for rows in options.rows:
                result = in_child(fmt, rows, options.chunk, base / f"{fmt}-{rows}")
                first = first or result["peak_rss_mib"]
                label = "rows only" if fmt == "none" else fmt
                if fmt == "none":
                    rate = mbps = "-"
                else:
                    rate = f"{rows / result['seconds']:,.0f}"
                    mbps = f"{result['bytes'] / result['seconds'] / 1e6:.0f}"
                print(f"{label:<10}{rows:>11,}"
                      f"{result['seconds']:>9.2f}{rate:>11}{mbps:>7}"
                      f"{result['peak_rss_mib']:>14.0f}{result['peak_rss_mib'] / first:>10.2f}")
                shutil.rmtree(base / f"{fmt}-{rows}", ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
