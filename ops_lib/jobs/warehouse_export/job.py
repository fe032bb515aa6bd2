"""export_operational_warehouse_batch: the dry run and --execute of one table's next batch.

Dry run: the table, its cursor, the window (watermark to bound), the rows it holds, the
partitions and files `--execute` would write, and the folder; it writes nothing, not a folder.

--execute, in one consistent snapshot (window.py):
1. remove what a killed run left in temporary folders (a reader never looks there);
2. stream the window's rows into a new batch (files.py): temporary names, fsync, manifest,
   `_SUCCESS` last, then one rename publishes the whole batch;
3. then, and only then, move the watermark to the batch's last row.
A run that dies before 3 leaves its batch published but unconfirmed: the next run exports the
same rows again (at least once) and its manifest's `supersedes` names that batch. A run stopped
early (--max-runtime, SIGTERM) publishes the rows read so far, a prefix of the window in cursor
order, and the next run goes on from its last row.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import inspect

from ...errors import PreconditionFailed
from ...result import DONE, JobResult, dry_run_reason
from ...runtime import RunContext
from ...schema import ops_export_watermarks
from .reader import (
    choose_reader,
    count,
    cursor_of,
    last_row,
    partition_counts,
    prefetched,
    release_freed_memory,
    stream_window,
    stream_window_arrow,
)
from .tables import EXPORTS, Export
from .window import Watermark, Window, read_watermark, save_watermark, take_window

READERS = {
    "sqlite": "SQLite, in the export's snapshot",
    "pymysql": "PyMySQL, in the export's snapshot (export_reader; connectorx reads 7-10x faster: "
               "pip install 'ops-toolkit[fast]')",
    "connectorx": "connectorx, Arrow batches on its own connections (the window is settled "
                  "below its bound: the same rows)",
}
MAX_ROWS_PER_FILE = 1_000_000
ROW_GROUP_ROWS = 128_000


def table_folder(ctx: RunContext, export: Export) -> Path:
    return Path(ctx.settings.export_dir) / export.name


def unconfirmed_batches(published: list[dict[str, Any]], start: Watermark) -> list[str]:
    """Run ids of the batches published after the last one that moved the watermark and from
    the same watermark as this run: their runs died after publishing, and this run's batch
    holds their rows again (it supersedes them)."""
    run_ids = [m["run_id"] for m in published]
    if start.last_run_id in run_ids:
        published = published[run_ids.index(start.last_run_id) + 1:]
    return [m["run_id"] for m in published if m.get("watermark_from") == start.as_dict()]


def run(ctx: RunContext, table: str, fmt: str = "parquet", partition_by: str = "month",
        full_refresh: bool = False) -> JobResult:
    """Plan the table's next batch; with --execute, write and publish it, then move the
    watermark."""
    export = EXPORTS[table]
    result = JobResult(ctx.tool, ctx.dry_run)
    folder = table_folder(ctx, export)
    reader = choose_reader(ctx.settings.export_reader, ctx.db.caps.is_mysql)
    with ctx.db.snapshot() as conn:
        if not inspect(conn).has_table(ops_export_watermarks.name):
            raise PreconditionFailed(
                f"table {ops_export_watermarks.name} is missing: this database predates the "
                "warehouse export; apply docs/upgrading.md's 'Warehouse export' statements")
        start = read_watermark(conn, export)
        window = take_window(conn, ctx.db.caps, start, ctx.settings.export_lag_seconds,
                             full_refresh)
        _describe(result, export, window, start, folder, fmt, partition_by, reader)
        if ctx.dry_run:
            _plan(result, conn, export, window, partition_by, fmt)
            return result
        _execute(ctx, result, conn, export, window, folder, fmt, partition_by, reader)
    return result


def _describe(result: JobResult, export: Export, window: Window, start: Watermark,
              folder: Path, fmt: str, partition_by: str, reader: str) -> None:
    result.section("Export", [
        {"Item": "table", "Value": export.name},
        {"Item": "cursor", "Value": export.describe_cursor()},
        {"Item": "from (watermark)", "Value": str(window.start)},
        {"Item": "to (bound, exclusive)",
         "Value": f"{export.cursor} < {window.bound.isoformat(' ')} (now "
                  f"{window.now.isoformat(' ')} minus export_lag_seconds={window.lag_seconds}"
                  + (", held back by an open transaction" if window.held_back_by else "")
                  + ")"},
        {"Item": "archived rows", "Value": export.archived_how},
        {"Item": "format", "Value": f"{fmt}, partitioned by {export.partition} ({partition_by})"},
        {"Item": "output folder", "Value": str(folder)},
        {"Item": "reader", "Value": READERS[reader]},
    ], columns=["Item", "Value"])
    if window.full_refresh:
        result.notes.append(f"--full-refresh: starts over from the beginning (the watermark at "
                            f"{start} is ignored, and replaced after the batch is published)")
    result.notes.extend(window.notes)


def _plan(result: JobResult, conn, export: Export, window: Window, partition_by: str,
          fmt: str) -> None:
    from .files import plan_files

    parts = partition_counts(conn, export, window, partition_by)
    total = sum(parts.values())
    files = plan_files(parts, fmt=fmt, partition_column=export.partition,
                       partition_by=partition_by, max_rows_per_file=MAX_ROWS_PER_FILE)
    result.section("Files to write",
                   [{"File": f["file"], "Rows": f["rows"]} for f in files],
                   columns=["File", "Rows"])
    result.counts["rows"] = total
    result.counts["partitions"] = len(parts)
    result.counts["files"] = len(files)
    verb = "re-export" if window.full_refresh else "export"
    result.notes.append(f"--execute would {verb} {total} rows of {export.name}: {len(files)} "
                        f"{fmt} files in {len(parts)} partitions, one batch published at once"
                        if total else "nothing to export: no row changed in the window")
    result.stop_reason = dry_run_reason()


def _execute(ctx: RunContext, result: JobResult, conn, export: Export, window: Window,
             folder: Path, fmt: str, partition_by: str, reader: str) -> None:
    from .files import BatchWriter, published_batches, sweep_partial_batches

    swept = sweep_partial_batches(folder)
    if swept:
        result.notes.append(f"removed {len(swept)} unfinished batch folders a killed run left "
                            f"({', '.join(p.name for p in swept)})")
    supersedes = unconfirmed_batches(published_batches(folder), window.start)
    total = count(conn, export, window)
    result.counts["window_rows"] = total
    if not total:
        result.notes.append("nothing to export: no row changed in the window")
        result.counts["rows"] = 0
        return
    positions = [export.columns.index(c.name) for c in export.cursor_columns]
    writer = BatchWriter(folder, export.table, export.columns, run_id=ctx.run_id, fmt=fmt,
                         partition_column=export.partition, partition_by=partition_by,
                         max_rows_per_file=MAX_ROWS_PER_FILE, row_group_rows=ROW_GROUP_ROWS)
    if reader == "connectorx":
        chunks = prefetched(stream_window_arrow(ctx.db.url, ctx.db.engine.dialect, export,
                                                window))
        write, last_of = writer.write_arrow, last_row
    else:
        chunks = stream_window(conn, export, window)
        write, last_of = writer.write, (lambda chunk: chunk[-1])
    written, last = 0, None
    try:
        with ctx.progress(f"exporting {export.name}", total) as advance, closing(chunks):
            for chunk in chunks:
                write(chunk)
                written += len(chunk)
                last = last_of(chunk)
                release_freed_memory()  # what the chunk before freed (see its docstring)
                advance(len(chunk))
                reason = ctx.why_stop()
                if reason:
                    result.stop_reason = reason
                    break
        if not written:  # every row of the window changed or went since the count
            writer.abort()
            result.counts["rows"] = 0
            result.notes.append("nothing to export: the window's rows changed since counted")
            return
        mark = cursor_of(last, positions, ctx.run_id)
        manifest = writer.commit({
            "cursor": [c.name for c in export.cursor_columns],
            "watermark_from": window.start.as_dict(),
            "watermark_to": mark.as_dict(),
            "bound": window.bound.isoformat(),
            "lag_seconds": window.lag_seconds,
            "full_refresh": window.full_refresh,
            "reader": reader,
            "supersedes": supersedes,
        })
    except BaseException:
        writer.abort()
        raise
    # The batch is on disk with its _SUCCESS: now the watermark may move.
    ctx.db.run(lambda c: save_watermark(c, export, mark, written), what="watermark")
    result.counts["rows"] = written
    result.counts["files"] = len(manifest.get("files", []))
    result.section("Files written", [
        {"File": f.get("path"), "Rows": f.get("rows"), "Bytes": f.get("bytes", f.get("size"))}
        for f in manifest.get("files", [])], columns=["File", "Rows", "Bytes"])
    result.notes.append(f"published batch {ctx.run_id} in {folder}: {written} rows; watermark "
                        f"now {mark}")
    if supersedes:
        result.notes.append(f"supersedes {', '.join(supersedes)} (published by runs that died "
                            "before moving the watermark: the same rows, again)")
    if result.stop_reason != DONE and written < total:
        result.notes.append(f"{total - written} rows of the window left for the next run")
