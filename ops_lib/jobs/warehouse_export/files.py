"""The files of a warehouse export batch: rows in, files a reader can trust out.

One batch is one folder under the table's folder. It is written as `.tmp-batch-<run_id>/` (a
name no reader's glob takes: `batch=*` does not match it, and Spark/Hadoop skip names starting
with `.`), every data file inside it under a temporary name first, each fsynced and renamed;
then `_manifest.json`, then `_SUCCESS` last, then the folder is renamed to
`batch=<UTC time>-<run_id>/` and the table folder fsynced. A reader therefore sees either no
batch or a complete one with its `_SUCCESS` (docs/warehouse-export.md has the layout and the
reader's query).

pyarrow is imported inside the functions: the tool's --help must not load it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ops_lib.errors import BadInput, PreconditionFailed
from ops_lib.files import write_atomically

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from sqlalchemy import Table

FORMATS = ("parquet", "csv", "jsonl")
PARTITION_BY = ("month", "day")
MANIFEST_NAME = "_manifest.json"  # '_' so Spark and Hadoop never take it for a data file
SUCCESS_NAME = "_SUCCESS"
BATCH_PREFIX = "batch="
TEMPORARY_PREFIX = ".tmp-batch-"
# Hive's (and Spark's) name for a NULL partition value; DuckDB reads it back as NULL.
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
MANIFEST_VERSION = 1
# A batch's folder name starts with the UTC time of its commit, to the microsecond, so names
# sort in the order the batches were published (the reader's tie-break, "batch DESC").
BATCH_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
# Bytes of Parquet rows waiting in memory for a full row group, over all partitions. Past it the
# partition with the most waiting is spilled to a temporary Arrow file beside its Parquet file
# and read back when its row group is full: rows of many partitions mixed in one batch (a full
# refresh in cursor order touches every month in each page) still make full row groups, and
# memory stays flat however many rows the batch holds.
WAITING_BYTES = 32 << 20
# Open files at once; the least recently written is finished first (then its partition gets a
# new file), so a full refresh by day over years stays under the process's file limit.
MAX_OPEN_FILES = 64
_EXTENSIONS = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}
_SUFFIXES = ("_date", "_at", "_on")
_NULL_KEY = -(2**62)  # the partition key of a NULL date, below any real one
_EPOCH = dt.date(1970, 1, 1)


def tool_version() -> str:
    """The installed ops-toolkit's version (pyproject.toml), recorded in every manifest."""
    from importlib import metadata

    try:
        return metadata.version("ops-toolkit")
    except metadata.PackageNotFoundError:
        return "unknown"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --- schema -----------------------------------------------------------------------------------


def _arrow_type(column) -> "pa.DataType":
    import pyarrow as pa
    from sqlalchemy import JSON, Boolean, Date, DateTime, Integer, String

    kind = column.type
    # Order matters: DateTime before Date is not needed (separate classes), but Boolean is
    # checked before Integer because some dialect types derive from both.
    if isinstance(kind, Boolean):
        return pa.bool_()
    if isinstance(kind, Integer):  # BigInteger, SmallInteger; money columns are *_minor BIGINT
        return pa.int64()
    if isinstance(kind, DateTime):
        # The database keeps naive UTC: the files say so, as UTC timestamps.
        return pa.timestamp("us", tz="UTC")
    if isinstance(kind, Date):
        return pa.date32()
    if isinstance(kind, (String, JSON)):  # Text is a String; JSON is kept as its JSON text
        return pa.string()
    raise ValueError(f"{column.table.name}.{column.name}: no file type for {kind!r}")


def arrow_schema(table: "Table", columns: Sequence[str]) -> "pa.Schema":
    """The Arrow schema of `columns` of `table`: typed and nullable as the metadata says."""
    import pyarrow as pa

    unknown = [name for name in columns if name not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column {', '.join(unknown)}")
    return pa.schema([pa.field(name, _arrow_type(table.c[name]), nullable=table.c[name].nullable)
                      for name in columns])


def _json_columns(table: "Table", columns: Sequence[str]) -> set[int]:
    from sqlalchemy import JSON

    return {i for i, name in enumerate(columns) if isinstance(table.c[name].type, JSON)}


def _as_json_text(value: Any) -> Any:
    # A driver that decodes JSON (SQLAlchemy's JSON type) gives dicts and lists; a raw DB-API
    # cursor gives the text. Strings are taken as the JSON text already.
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _column_array(values: Sequence[Any], field: "pa.Field") -> "pa.Array":
    """One column of DB-API values as a typed Arrow array (the fast path is one C call)."""
    import pyarrow as pa

    try:
        array = pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        array = _converted_array(values, field)
    if array.null_count and not field.nullable:
        _refuse_null(field)
    return array


def _refuse_null(field: "pa.Field") -> None:
    raise PreconditionFailed(f"column {field.name} is NOT NULL in schema.sql but the database "
                             "gave a NULL: run check_schema_drift.py")


def _converted_array(values: Sequence[Any], field: "pa.Field") -> "pa.Array":
    """What the fast path refused: 0/1 booleans (MySQL TINYINT), date and time as text (raw
    SQLite), Decimal integers."""
    import pyarrow as pa

    kind = field.type
    if pa.types.is_boolean(kind):
        return pa.array(values, type=pa.int64()).cast(pa.bool_())
    if pa.types.is_timestamp(kind):
        text = pa.array([None if v is None else str(v) for v in values], type=pa.string())
        return text.cast(pa.timestamp("us")).view(kind)
    if pa.types.is_date(kind):
        text = pa.array([None if v is None else str(v)[:10] for v in values], type=pa.string())
        return text.cast(kind)
    if pa.types.is_integer(kind):
        return pa.array([None if v is None else int(v) for v in values], type=kind)
    return pa.array([None if v is None else str(v) for v in values], type=kind)


# --- partitions and file names ----------------------------------------------------------------


def partition_key(column: str, partition_by: str) -> str:
    """The Hive key of a partition folder: the column's name without its `_date`/`_at`/`_on`
    suffix, then `_month` or `_day` (attendance_date -> attendance_month, created_at ->
    created_day). It never equals a data column's name, so a Hive reader adds no clash."""
    if partition_by not in PARTITION_BY:
        raise ValueError(f"partition_by must be one of {PARTITION_BY}, not {partition_by!r}")
    stem = column
    for suffix in _SUFFIXES:
        if column.endswith(suffix) and len(column) > len(suffix):
            stem = column[: -len(suffix)]
            break
    return f"{stem}_{partition_by}"


def partition_label(value: Any, partition_by: str) -> str:
    """The partition value of one date, datetime (naive UTC) or ISO text: `2026-11` by month,
    `2026-11-28` by day; NULL is Hive's default partition."""
    if value is None:
        return NULL_PARTITION
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    text = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)
    return text[:7] if partition_by == "month" else text[:10]


def file_name(index: int, fmt: str) -> str:
    return f"part-{index:05d}.{_EXTENSIONS[fmt]}"


def plan_files(partition_counts: Mapping[Any, int], *, fmt: str, partition_column: str | None,
               partition_by: str = "month", max_rows_per_file: int = 1_000_000) -> list[dict]:
    """The files a batch would write, for the dry run: `partition_counts` maps partition values
    (dates, datetimes, ISO text or ready labels; None for a table without a partition column)
    to row counts. Returns [{"partition", "file", "rows"}] in path order, paths relative to the
    batch folder. A real run may write more files when it must close files early (more open
    partitions than MAX_OPEN_FILES)."""
    _check_format(fmt)
    if max_rows_per_file < 1:
        raise ValueError("max_rows_per_file must be at least 1")
    rows_per_folder: dict[str, int] = {}
    for value, count in partition_counts.items():
        folder = ("" if partition_column is None else
                  f"{partition_key(partition_column, partition_by)}="
                  f"{partition_label(value, partition_by)}")
        rows_per_folder[folder] = rows_per_folder.get(folder, 0) + int(count)
    planned = []
    for folder in sorted(rows_per_folder):
        remaining, index = rows_per_folder[folder], 0
        while remaining > 0:
            rows = min(remaining, max_rows_per_file)
            name = file_name(index, fmt)
            planned.append({"partition": folder or None,
                            "file": f"{folder}/{name}" if folder else name, "rows": rows})
            remaining -= rows
            index += 1
    return planned


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")


# --- the output folder ------------------------------------------------------------------------


def check_output_dir(path: str | os.PathLike) -> Path:
    """Refuse (BadInput, one line) an output folder that cannot be created or written, before
    any row is read. Creates nothing: the dry run writes nothing, not even a folder."""
    target = Path(path).expanduser().absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise BadInput(f"output folder {target} cannot be created: {existing} is a "
                           "broken link")
        existing = existing.parent
    if not existing.is_dir():
        if existing == target:
            raise BadInput(f"output folder {target} is a file, not a folder")
        raise BadInput(f"output folder {target} cannot be created: {existing} is a file, "
                       "not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == target else f"cannot be created in {existing}"
        raise BadInput(f"output folder {target} {what} (permission denied)")
    return target


def _fsync_path(path: Path) -> None:
    """Make a folder's entries (renames, new files) durable; Windows cannot open a folder, and
    its NTFS journal already orders the metadata."""
    if os.name == "nt":
        return
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _hash_and_sync(path: Path) -> tuple[str, int]:
    """The file's sha256 and size, after fsyncing it ('r+b': Windows flushes only writable
    handles)."""
    digest = hashlib.sha256()
    with open(path, "r+b") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
        os.fsync(stream.fileno())
        size = stream.tell()
    return digest.hexdigest(), size


def sweep_partial_batches(table_folder: str | os.PathLike,
                          keep_run_id: str | None = None) -> list[Path]:
    """Remove the temporary folders runs left when they were killed; returns them. Call it
    while holding the export's run lock (another live run's folder would go too);
    `keep_run_id` spares the caller's own."""
    folder = Path(table_folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if (entry.name.startswith(TEMPORARY_PREFIX) and entry.is_dir()
                and entry.name != f"{TEMPORARY_PREFIX}{keep_run_id}"):
            shutil.rmtree(entry)
            removed.append(entry)
    if removed:
        _fsync_path(folder)
    return removed


def published_batches(table_folder: str | os.PathLike) -> list[dict]:
    """The manifests of the complete batches (those with `_SUCCESS`), oldest first."""
    folder = Path(table_folder)
    if not folder.is_dir():
        return []
    manifests = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not (entry.name.startswith(BATCH_PREFIX) and (entry / SUCCESS_NAME).is_file()):
            continue
        try:
            manifests.append(json.loads((entry / MANIFEST_NAME).read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise PreconditionFailed(f"export batch {entry} has _SUCCESS but no readable "
                                     f"manifest: {error}") from error
    return manifests


def _batch_time(name: str) -> dt.datetime | None:
    match = re.match(rf"{re.escape(BATCH_PREFIX)}(\d{{8}}T\d{{6}}\.\d{{6}}Z)-", name)
    if not match:
        return None
    return dt.datetime.strptime(match.group(1), BATCH_TIME_FORMAT).replace(
        tzinfo=dt.timezone.utc)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # naive values of this toolkit are UTC
            return value.isoformat() + "Z"
        return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return value.as_posix()
    raise TypeError(f"cannot record {type(value).__name__} in a manifest")


# --- the writer -------------------------------------------------------------------------------


class _PartitionFiles:
    """The files of one partition folder: the one being written, and the rows waiting for a
    Parquet row group."""

    def __init__(self, folder: str):
        self.folder = folder  # relative to the batch folder; "" without partitions
        self.next_index = 0
        self.writer = None  # the open file's writer (a text stream for JSON Lines)
        self.name = ""
        self.rows_in_file = 0  # rows assigned to the open file, written or waiting
        self.row_groups = 0
        self.waiting: list = []  # Arrow record batches not yet in a row group, in memory
        self.waiting_rows = 0
        self.waiting_bytes = 0
        self.spill = None  # the Arrow stream writer of the rows spilled to disk, oldest first
        self.spilled_rows = 0


class BatchWriter:
    """Streams chunks of rows into one batch's files; `commit` publishes them, `abort` (or a
    kill, then `sweep_partial_batches`) leaves nothing a reader takes."""

    def __init__(self, table_folder: str | os.PathLike, table: "Table", columns: Sequence[str],
                 *, run_id: str, fmt: str = "parquet", partition_column: str | None = None,
                 partition_by: str = "month", max_rows_per_file: int = 1_000_000,
                 row_group_rows: int = 128_000, max_open_files: int = MAX_OPEN_FILES,
                 waiting_bytes: int = WAITING_BYTES):
        import pyarrow as pa

        _check_format(fmt)
        if not re.fullmatch(r"[A-Za-z0-9_-]+", run_id or ""):
            raise ValueError(f"run_id {run_id!r} is not a plain name")
        if min(max_rows_per_file, row_group_rows, max_open_files, waiting_bytes) < 1:
            raise ValueError("max_rows_per_file, row_group_rows, max_open_files and "
                             "waiting_bytes must be at least 1")
        self.table = table
        self.columns = list(columns)
        self.schema = arrow_schema(table, self.columns)
        self.run_id = run_id
        self.fmt = fmt
        self.max_rows_per_file = max_rows_per_file
        self.row_group_rows = row_group_rows
        self.max_open_files = max_open_files
        self.waiting_bytes = waiting_bytes
        self.partition_column = partition_column
        self.partition_by = partition_by
        self.key = None
        if partition_column is not None:
            if partition_column not in self.columns:
                raise ValueError(f"partition column {partition_column} is not exported")
            kind = self.schema.field(partition_column).type
            if not (pa.types.is_date(kind) or pa.types.is_timestamp(kind)):
                raise ValueError(f"partition column {partition_column} is not a date or time")
            self.key = partition_key(partition_column, partition_by)
            if self.key in table.c:  # a Hive reader would see two columns of one name
                raise ValueError(f"partition key {self.key} is a column of {table.name}")
        self._json_columns = _json_columns(table, self.columns)
        self.table_folder = Path(table_folder)
        self.folder = self.table_folder / f"{TEMPORARY_PREFIX}{run_id}"
        self.table_folder.mkdir(parents=True, exist_ok=True)
        self.folder.mkdir()  # a leftover of the same run id is a bug, not something to reuse
        self._partitions: dict[str, _PartitionFiles] = {}
        self._open: OrderedDict[str, _PartitionFiles] = OrderedDict()
        self._files: list[dict] = []
        self._waiting_bytes = 0
        self.row_count = 0
        self._finished = False

    # Rows in.

    def write(self, rows: Sequence[tuple]) -> int:
        """Add a chunk of DB-API rows (tuples in `columns` order); returns the rows taken."""
        if self._finished:
            raise RuntimeError("the batch is already committed or aborted")
        if not rows:
            return 0
        return self._write_batch(self._record_batch(rows))

    def write_arrow(self, data) -> int:
        """Add an Arrow record batch or table (an Arrow-native reader's, e.g. connectorx) with
        the batch's columns: cast to the batch's types, naive times taken as UTC."""
        if self._finished:
            raise RuntimeError("the batch is already committed or aborted")
        import pyarrow as pa

        missing = [name for name in self.columns if name not in data.schema.names]
        if missing:
            raise ValueError(f"the Arrow data has no column {', '.join(missing)}")
        arrays = []
        for field in self.schema:
            column = data.column(field.name)
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks()
            if pa.types.is_timestamp(field.type) and pa.types.is_timestamp(column.type):
                if column.type.tz is None:
                    column = column.cast(pa.timestamp("us")).view(field.type)
                else:
                    column = column.cast(field.type)
            else:
                column = column.cast(field.type)
            if column.null_count and not field.nullable:
                _refuse_null(field)
            arrays.append(column)
        if not len(data):
            return 0
        return self._write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def _write_batch(self, batch: "pa.RecordBatch") -> int:
        for folder, part in self._split_by_partition(batch):
            self._append(self._partition(folder), part)
        self.row_count += batch.num_rows
        return batch.num_rows

    def _record_batch(self, rows: Sequence[tuple]) -> "pa.RecordBatch":
        import pyarrow as pa

        by_column = list(zip(*rows))
        if len(by_column) != len(self.columns):
            raise ValueError(f"rows have {len(by_column)} values, the batch has "
                             f"{len(self.columns)} columns")
        arrays = []
        for index, field in enumerate(self.schema):
            values = by_column[index]
            if index in self._json_columns:
                values = [_as_json_text(v) for v in values]
            arrays.append(_column_array(values, field))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _split_by_partition(self, batch: "pa.RecordBatch") -> Iterable[tuple[str, Any]]:
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.key is None:
            yield "", batch
            return
        # Integer keys, not text: strftime costs ~1 µs a row, these a few ns.
        days = batch.column(self.partition_column)
        if pa.types.is_timestamp(days.type):
            days = days.view(pa.timestamp("us")).cast(pa.date32())  # the UTC date
        if self.partition_by == "month":
            keys = pc.add(pc.multiply(pc.year(days), 100), pc.month(days))
        else:
            keys = days.cast(pa.int32())
        keys = pc.fill_null(keys.cast(pa.int64()), _NULL_KEY)
        distinct = pc.unique(keys)
        if len(distinct) == 1:
            yield self._folder_of(distinct[0].as_py()), batch
            return
        # One filter per partition, not slices of one sorted copy: a slice keeps its whole
        # parent batch alive while it waits for its row group, so memory would grow with the
        # number of partitions times the pages read. A filter keeps the rows' order (the
        # watermark's) and owns its buffers.
        for key in sorted(distinct.to_pylist()):
            yield self._folder_of(key), batch.filter(pc.equal(keys, key))

    def _folder_of(self, key: int) -> str:
        if key == _NULL_KEY:
            label = NULL_PARTITION
        elif self.partition_by == "month":
            label = f"{key // 100:04d}-{key % 100:02d}"
        else:
            label = (_EPOCH + dt.timedelta(days=key)).isoformat()
        return f"{self.key}={label}"

    def _partition(self, folder: str) -> _PartitionFiles:
        partition = self._partitions.get(folder)
        if partition is None:
            partition = self._partitions[folder] = _PartitionFiles(folder)
            (self.folder / folder).mkdir(exist_ok=True)
        return partition

    def _append(self, partition: _PartitionFiles, batch) -> None:
        offset = 0
        while offset < batch.num_rows:
            if partition.writer is None:
                self._open_file(partition)
            room = self.max_rows_per_file - partition.rows_in_file
            piece = batch.slice(offset, room)
            offset += piece.num_rows
            partition.rows_in_file += piece.num_rows
            if self.fmt == "parquet":
                partition.waiting.append(piece)
                partition.waiting_rows += piece.num_rows
                partition.waiting_bytes += piece.nbytes
                self._waiting_bytes += piece.nbytes
                if partition.spilled_rows + partition.waiting_rows >= self.row_group_rows:
                    self._write_row_groups(partition)
            elif self.fmt == "csv":
                partition.writer.write_batch(_with_times_as_text(piece, " "))
            else:
                partition.writer.write(_jsonl_lines(piece))
            self._open.move_to_end(partition.folder)
            if partition.rows_in_file >= self.max_rows_per_file:
                self._close_file(partition)
        while self._waiting_bytes > self.waiting_bytes:
            self._spill(max(self._open.values(), key=lambda p: p.waiting_bytes))

    def _temporary_path(self, partition: _PartitionFiles) -> Path:
        return self.folder / partition.folder / f".{partition.name}.inprogress"

    def _open_file(self, partition: _PartitionFiles) -> None:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        while len(self._open) >= self.max_open_files:
            self._close_file(next(iter(self._open.values())))
        partition.name = file_name(partition.next_index, self.fmt)
        partition.next_index += 1
        partition.rows_in_file = partition.row_groups = 0
        path = self._temporary_path(partition)
        if self.fmt == "parquet":
            # zstd: smaller than snappy, and DuckDB, Spark, BigQuery and ClickHouse all read it.
            # Dictionaries on text columns only: on ids and times (nearly all distinct) each
            # open file's dictionary builders held ~6 MiB a column, so memory grew with rows
            # over many partitions (2M rows, 20 months: 163 MiB of Arrow memory against 45).
            partition.writer = pq.ParquetWriter(
                path, self.schema, compression="zstd",
                use_dictionary=[f.name for f in self.schema if pa.types.is_string(f.type)
                                or pa.types.is_large_string(f.type)])
        elif self.fmt == "csv":
            partition.writer = pcsv.CSVWriter(path, _with_times_as_text(self.schema, " "))
        else:
            partition.writer = open(path, "w", encoding="utf-8", newline="\n")
        self._open[partition.folder] = partition

    def _spill_path(self, partition: _PartitionFiles) -> Path:
        return self.folder / partition.folder / f".{partition.name}.spill.arrow"

    def _spill(self, partition: _PartitionFiles) -> None:
        """Move the partition's waiting rows from memory to its spill file (Arrow IPC, no
        compression: it is read back within the run, mostly from the page cache)."""
        import pyarrow as pa

        if partition.spill is None:
            partition.spill = pa.ipc.new_stream(str(self._spill_path(partition)), self.schema)
        for batch in partition.waiting:
            partition.spill.write_batch(batch)
        partition.spilled_rows += partition.waiting_rows
        self._waiting_bytes -= partition.waiting_bytes
        partition.waiting, partition.waiting_rows, partition.waiting_bytes = [], 0, 0

    def _take_spilled(self, partition: _PartitionFiles) -> list:
        """The partition's spilled rows, read back into memory; the spill file goes."""
        import pyarrow as pa

        if partition.spill is None:
            return []
        partition.spill.close()
        partition.spill = None
        path = self._spill_path(partition)
        with pa.OSFile(str(path)) as source:
            batches = pa.ipc.open_stream(source).read_all().to_batches()
        path.unlink()
        partition.spilled_rows = 0
        return batches

    def _write_row_groups(self, partition: _PartitionFiles, *, last: bool = False) -> None:
        """Write the partition's full row groups, spilled rows first; `last`: the rest too, as
        a shorter group (the file is being finished)."""
        import pyarrow as pa

        rows = pa.Table.from_batches(self._take_spilled(partition) + partition.waiting,
                                     schema=self.schema)
        self._waiting_bytes -= partition.waiting_bytes
        offset = 0
        while rows.num_rows - offset >= self.row_group_rows or (last and offset < rows.num_rows):
            group = rows.slice(offset, self.row_group_rows)
            partition.writer.write_table(group, row_group_size=group.num_rows)
            partition.row_groups += 1
            offset += group.num_rows
        rest = rows.slice(offset)
        partition.waiting = rest.to_batches()
        partition.waiting_rows = rest.num_rows
        partition.waiting_bytes = rest.nbytes
        self._waiting_bytes += rest.nbytes

    def _close_file(self, partition: _PartitionFiles) -> None:
        if self.fmt == "parquet" and partition.spilled_rows + partition.waiting_rows:
            self._write_row_groups(partition, last=True)
        partition.writer.close()
        partition.writer = None
        del self._open[partition.folder]
        temporary = self._temporary_path(partition)
        sha256, size = _hash_and_sync(temporary)
        final = temporary.with_name(partition.name)
        os.replace(temporary, final)
        relative = f"{partition.folder}/{partition.name}" if partition.folder else partition.name
        entry = {"path": relative, "rows": partition.rows_in_file, "bytes": size,
                 "sha256": sha256}
        if self.fmt == "parquet":
            entry["row_groups"] = partition.row_groups
        if partition.folder:
            entry["partition"] = {self.key: partition.folder.split("=", 1)[1]}
        self._files.append(entry)

    # Publishing.

    def commit(self, manifest_fields: Mapping[str, Any]) -> dict:
        """Finish every file, write the manifest and `_SUCCESS`, and publish the batch folder
        in one rename. `manifest_fields` come from the caller (watermark_from, watermark_to,
        supersedes, ...). Returns the manifest."""
        if self._finished:
            raise RuntimeError("the batch is already committed or aborted")
        for partition in list(self._open.values()):
            self._close_file(partition)
        for folder in {p.folder for p in self._partitions.values() if p.folder}:
            _fsync_path(self.folder / folder)
        created_at = self._publish_time()
        name = f"{BATCH_PREFIX}{created_at.strftime(BATCH_TIME_FORMAT)}-{self.run_id}"
        manifest = self._manifest(manifest_fields, name, created_at)
        text = json.dumps(manifest, ensure_ascii=False, indent=2, default=_json_default) + "\n"
        write_atomically(self.folder / MANIFEST_NAME, text)
        success = {"manifest": MANIFEST_NAME,
                   "manifest_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                   "row_count": self.row_count}
        write_atomically(self.folder / SUCCESS_NAME, json.dumps(success) + "\n")
        _fsync_path(self.folder)
        final = self.table_folder / name
        os.rename(self.folder, final)
        _fsync_path(self.table_folder)
        _fsync_path(self.table_folder.parent)  # the table folder itself may be new
        self.folder = final
        self._finished = True
        return manifest

    def _publish_time(self) -> dt.datetime:
        """Now, or just after the newest published batch if the clock went back: folder names
        must sort in publishing order."""
        now = utc_now()
        times = [t for t in (_batch_time(p.name) for p in self.table_folder.iterdir()) if t]
        if times and max(times) >= now:
            now = max(times) + dt.timedelta(microseconds=1)
        return now

    def _manifest(self, fields: Mapping[str, Any], name: str, created_at: dt.datetime) -> dict:
        own = {
            "manifest_version": MANIFEST_VERSION,
            "run_id": self.run_id,
            "table": self.table.name,
            "batch": name,
            "format": self.fmt,
            "created_at": created_at,
            "tool": "ops-toolkit",
            "tool_version": tool_version(),
            "row_count": self.row_count,
            # What a reader deduplicates by (with updated_at): id, or a composite key.
            "primary_key": [c.name for c in self.table.primary_key.columns],
            "partitioning": None if self.key is None else {
                "column": self.partition_column, "by": self.partition_by, "key": self.key},
            "columns": [{"name": f.name, "type": str(f.type), "nullable": f.nullable,
                         "sql_type": str(self.table.c[f.name].type)} for f in self.schema],
            "files": sorted(self._files, key=lambda f: f["path"]),
        }
        clash = sorted(set(own) & set(fields))
        if clash:
            raise ValueError(f"manifest fields {clash} are the writer's own")
        manifest = {"watermark_from": None, "watermark_to": None, "supersedes": None}
        manifest.update(fields)
        return {**own, **manifest}

    def abort(self) -> None:
        """Close and remove everything this batch wrote (nothing was published)."""
        if self._finished:
            return
        self._finished = True
        for partition in list(self._open.values()):
            for stream in (partition.spill, partition.writer):
                try:
                    if stream is not None:
                        stream.close()
                except Exception:  # the folder goes anyway; a close error must not hide it
                    pass
        self._open.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "BatchWriter":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if not self._finished:
            self.abort()


def _times_as_text(column, separator: str):
    """`2026-11-28 08:00:00.000123Z` (separator " ") or ISO 8601's `…T…Z`: the UTC wall time,
    always six decimals. Arrow's own formatting of a zoned time looks the zone up per value and
    is 30 times slower."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = column.view(pa.timestamp("us")).cast(pa.string())
    if separator != " ":
        text = pc.replace_substring(text, " ", separator, max_replacements=1)
    return pc.binary_join_element_wise(text, pa.scalar("Z"), "")


def _with_times_as_text(batch_or_schema, separator: str):
    """A record batch (or its schema) with its timestamp columns as text."""
    import pyarrow as pa

    schema = batch_or_schema if isinstance(batch_or_schema, pa.Schema) else batch_or_schema.schema
    fields = [pa.field(f.name, pa.string(), f.nullable) if pa.types.is_timestamp(f.type) else f
              for f in schema]
    if isinstance(batch_or_schema, pa.Schema):
        return pa.schema(fields)
    columns = [_times_as_text(c, separator) if pa.types.is_timestamp(c.type) else c
               for c in batch_or_schema.columns]
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


def _jsonl_lines(batch) -> str:
    """JSON Lines of a record batch: one object per row, dates `2026-11-28`, times ISO 8601 in
    UTC with `Z`, JSON columns as their text (as in the other formats)."""
    import pyarrow as pa

    columns = []
    for column in _with_times_as_text(batch, "T").columns:
        if pa.types.is_date(column.type):
            column = column.cast(pa.string())
        columns.append(column.to_pylist())
    names = batch.schema.names
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    return "".join(encode(dict(zip(names, row))) + "\n" for row in zip(*columns))
