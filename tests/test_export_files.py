"""The warehouse export's files, read back by a real engine (DuckDB) and by pyarrow.

No database: rows are built in Python as a DB-API cursor gives them (naive UTC datetimes, dates,
integer money, Bengali text, NULLs, JSON), so these tests pin the file contract of
docs/warehouse-export.md on their own; the export job's tests cover the rows' selection.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from importlib import metadata as package_metadata
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from ops_lib import schema
from ops_lib.errors import BadInput, PreconditionFailed
from ops_lib.jobs.warehouse_export.files import (
    FORMATS,
    MANIFEST_NAME,
    SUCCESS_NAME,
    BatchWriter,
    arrow_schema,
    check_output_dir,
    partition_key,
    plan_files,
    published_batches,
    sweep_partial_batches,
)
from tests.conftest import REPO

UTC = dt.timezone.utc
ATTENDANCE = [c.name for c in schema.attendance_records.columns]
INVOICES = [c.name for c in schema.invoices.columns]
NOTIFICATIONS = [c.name for c in schema.notifications.columns]
DUCKDB_TYPES = {"int64": "BIGINT", "date32[day]": "DATE", "bool": "BOOLEAN", "string": "VARCHAR",
                "timestamp[us, tz=UTC]": "TIMESTAMP WITH TIME ZONE"}
DOCS = REPO / "docs" / "warehouse-export.md"


def attendance_rows(count: int, *, first_id: int = 1, months=(10, 11), version: int = 0,
                    status: str = "present") -> list[tuple]:
    rows = []
    for row_id in range(first_id, first_id + count):
        n = row_id - 1  # one id, one day: a later version of a row differs only as asked
        day = dt.date(2026, months[n % len(months)], 1 + n % 28)
        first_scan = dt.datetime.combine(day, dt.time(7, 55, n % 60, 123456))
        rows.append((row_id, 1 + n % 3, 1000 + row_id, day, first_scan,
                     first_scan + dt.timedelta(hours=6), 1 + n % 4, status, n % 5 == 0,
                     first_scan, first_scan + dt.timedelta(seconds=version)))
    return rows


def invoice_rows() -> list[tuple]:
    created = dt.datetime(2026, 11, 1, 0, 0, 0)
    return [
        (1, "INV-2026-11-0001", "institution", 7, None, dt.date(2026, 11, 1), dt.date(2026, 11, 30),
         9_007_199_254_740_993, "BDT", "paid", created, dt.date(2026, 11, 10),
         dt.datetime(2026, 11, 9, 23, 59, 59, 999999), "institution:7:2026-11", created,
         created + dt.timedelta(microseconds=1), "run-a"),
        (2, "INV-2026-11-0002", "student", 7, 42, dt.date(2026, 11, 1), dt.date(2026, 11, 30),
         -500, "BDT", "void", None, None, None, "", created, None, None),
        (3, "INV-2026-12-0003", "student", 8, 43, dt.date(2026, 12, 1), dt.date(2026, 12, 31),
         0, "BDT", "generated", dt.datetime(2099, 12, 31, 23, 59, 59), dt.date(2027, 1, 10),
         None, None, created, None, "run-b"),
    ]


def notification_rows() -> list[tuple]:
    sent = dt.datetime(2026, 11, 28, 2, 30, 0, 1)
    return [
        (1, 11, 21, "attendance", "উপস্থিতি: রহিম আজ স্কুলে এসেছে",
         'সময় ০৮:০৫, "গেট ২", প্রথম স্ক্যান\nদ্বিতীয় লাইন',
         {"student": "রহিম", "late": False, "minutes": 5, "nested": {"a": [1, 2]}},
         "attendance:21:2026-11-28", sent, None, "done", sent, None, None, None),
        (2, 12, None, "billing", "Invoice due", None, None, "billing:12:2026-11", sent,
         sent + dt.timedelta(hours=1), "pending", None, "worker-1",
         sent + dt.timedelta(minutes=5), sent),
        (3, 13, 23, "notice", "", "", {"text": "a,b;\tc"}, "notice:13", sent, None, "pending",
         None, None, None, None),
    ]


TABLES = {
    "attendance_records": (schema.attendance_records, ATTENDANCE, attendance_rows(40),
                           "attendance_date"),
    "invoices": (schema.invoices, INVOICES, invoice_rows(), "period_start"),
    "notifications": (schema.notifications, NOTIFICATIONS, notification_rows(), "created_at"),
}


def engine() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def write_batch(folder: Path, table, columns, chunks, *, run_id="run1", fmt="parquet",
                partition_column=None, fields=None, **options) -> dict:
    writer = BatchWriter(folder, table, columns, run_id=run_id, fmt=fmt,
                         partition_column=partition_column, **options)
    for chunk in chunks:
        writer.write(chunk)
    return writer.commit(fields or {"watermark_from": None, "watermark_to": None})


def duckdb_types(manifest: dict) -> dict[str, str]:
    return {c["name"]: DUCKDB_TYPES[c["type"]] for c in manifest["columns"]}


def read_back(folder: Path, manifest: dict) -> tuple[list[tuple], dict[str, str]]:
    """The batch's rows as DuckDB reads them (the data columns only, by id) and their types:
    Parquet as it stands, CSV and JSON Lines with the manifest's types, as the docs say."""
    files = [str(folder / manifest["batch"] / f["path"]) for f in manifest["files"]]
    names = [c["name"] for c in manifest["columns"]]
    types = duckdb_types(manifest)
    if manifest["format"] == "parquet":
        source = f"read_parquet({files!r}, hive_partitioning = false)"
    elif manifest["format"] == "csv":
        source = (f"read_csv({files!r}, hive_partitioning = false, header = true, "
                  f"allow_quoted_nulls = false, types = {types!r})")
    else:
        source = f"read_json({files!r}, hive_partitioning = false, columns = {types!r})"
    connection = engine()
    relation = connection.sql(f"SELECT {', '.join(names)} FROM {source} ORDER BY 1")
    described = dict(zip(relation.columns, (str(t) for t in relation.types)))
    return relation.fetchall(), described


def expected_values(table, columns, rows) -> list[tuple]:
    """The source rows as a reader should get them: times as UTC instants."""
    fields = arrow_schema(table, columns)
    expected = []
    for row in sorted(rows, key=lambda r: r[0]):
        values = []
        for field, value in zip(fields, row):
            if isinstance(value, dt.datetime):
                value = value.replace(tzinfo=UTC)
            elif isinstance(value, (dict, list)):
                value = json.dumps(value, ensure_ascii=False)
            values.append(value)
        expected.append(tuple(values))
    return expected


def normalised(rows: list[tuple], table, columns) -> list[tuple]:
    """JSON compared as what it means (its text may be spaced differently)."""
    json_at = [i for i, name in enumerate(columns)
               if isinstance(table.c[name].type, schema.JSON)]
    result = []
    for row in rows:
        row = list(row)
        for i in json_at:
            row[i] = None if row[i] is None else json.loads(row[i])
        result.append(tuple(row))
    return result


# --- each format reads back exactly -------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table_name", sorted(TABLES))
def test_each_format_reads_back_in_duckdb_with_the_source_values_and_types(tmp_path, fmt,
                                                                            table_name):
    table, columns, rows, partition_column = TABLES[table_name]
    manifest = write_batch(tmp_path, table, columns, [rows[:2], rows[2:]], fmt=fmt,
                           partition_column=partition_column)
    got, types = read_back(tmp_path, manifest)
    assert normalised(got, table, columns) == normalised(
        expected_values(table, columns, rows), table, columns)
    assert types == duckdb_types(manifest)
    by_name = {c["name"]: c for c in manifest["columns"]}
    assert by_name["id"] == {"name": "id", "type": "int64", "nullable": False,
                             "sql_type": "BIGINT"}


def test_parquet_carries_its_types_so_a_reader_needs_no_options(tmp_path):
    manifest = write_batch(tmp_path, schema.invoices, INVOICES, [invoice_rows()],
                           partition_column="period_start")
    relation = engine().sql(f"SELECT * FROM read_parquet('{tmp_path}/batch=*/**/*.parquet')")
    types = dict(zip(relation.columns, (str(t) for t in relation.types)))
    assert types["amount_minor"] == "BIGINT"  # integer minor units, never a float
    assert types["period_start"] == "DATE" and types["due_date"] == "DATE"
    assert types["paid_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["batch"] == "VARCHAR" and types["period_start_month"] == "VARCHAR"
    assert {types[c["name"]] for c in manifest["columns"]} <= set(DUCKDB_TYPES.values())
    parquet_schema = pq.read_schema(tmp_path / manifest["batch"] / manifest["files"][0]["path"])
    assert not parquet_schema.field("amount_minor").nullable  # NOT NULL: a required field
    assert parquet_schema.field("paid_at").nullable


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_csv_and_json_lines_of_attendance_read_back_typed_without_options(tmp_path, fmt):
    manifest = write_batch(tmp_path, schema.attendance_records, ATTENDANCE,
                           [attendance_rows(30)], fmt=fmt, partition_column="attendance_date")
    reader = "read_csv" if fmt == "csv" else "read_json"
    relation = engine().sql(f"SELECT * FROM {reader}('{tmp_path}/batch=*/**/*.{fmt}')")
    types = dict(zip(relation.columns, (str(t) for t in relation.types)))
    assert {name: types[name] for name in ATTENDANCE} == duckdb_types(manifest)


def test_values_as_raw_drivers_give_them_make_the_same_file(tmp_path):
    """PyMySQL's raw cursor: TINYINT(1) as 0/1 and JSON as text; raw SQLite: dates and times
    as text. The files must not depend on which one the job used."""
    typed = attendance_rows(6)
    raw = [(*r[:3], r[3].isoformat(), r[4].isoformat(" "), str(r[5]), r[6], r[7], int(r[8]),
            r[9].isoformat(" "), r[10].isoformat(" ")) for r in typed]
    first = write_batch(tmp_path / "typed", schema.attendance_records, ATTENDANCE, [typed])
    second = write_batch(tmp_path / "raw", schema.attendance_records, ATTENDANCE, [raw])
    notes = notification_rows()
    raw_notes = [(*r[:6], None if r[6] is None else json.dumps(r[6], ensure_ascii=False), *r[7:])
                 for r in notes]
    third = write_batch(tmp_path / "typed", schema.notifications, NOTIFICATIONS, [notes],
                        run_id="run2")
    fourth = write_batch(tmp_path / "raw", schema.notifications, NOTIFICATIONS, [raw_notes],
                         run_id="run2")
    for one, other, base in ((first, second, "run1"), (third, fourth, "run2")):
        assert one["files"][0]["path"] == other["files"][0]["path"]
        left = pq.read_table(tmp_path / "typed" / one["batch"] / one["files"][0]["path"])
        right = pq.read_table(tmp_path / "raw" / other["batch"] / other["files"][0]["path"])
        assert left.equals(right), base


def test_arrow_data_from_an_arrow_native_reader_makes_the_same_file(tmp_path):
    """connectorx and the like give naive nanosecond times, int32, large strings, 0/1 as
    int8, and columns in their own order: the file must be the one the tuple path writes."""
    import pyarrow as pa

    rows = attendance_rows(8)
    by_name = dict(zip(ATTENDANCE, zip(*rows)))
    kinds = {"attendance_date": pa.date32(), "status": pa.large_string(),
             "is_archived": pa.int8(), "scan_count": pa.int32(), "institution_id": pa.int32()}
    arrays = {}
    for name in reversed(ATTENDANCE):
        values = [int(v) for v in by_name[name]] if name == "is_archived" else by_name[name]
        if name.endswith("_at"):
            arrays[name] = pa.array(values, type=pa.timestamp("ns"))
        else:
            arrays[name] = pa.array(values, type=kinds.get(name, pa.int64()))
    table = pa.table(arrays)
    first = write_batch(tmp_path / "tuples", schema.attendance_records, ATTENDANCE, [rows])
    writer = BatchWriter(tmp_path / "arrow", schema.attendance_records, ATTENDANCE,
                         run_id="run1")
    assert writer.write_arrow(table.slice(0, 3)) == 3 and writer.write_arrow(table.slice(3)) == 5
    second = writer.commit({})
    left = pq.read_table(tmp_path / "tuples" / first["batch"] / first["files"][0]["path"])
    right = pq.read_table(tmp_path / "arrow" / second["batch"] / second["files"][0]["path"])
    assert left.equals(right)


def test_a_null_in_a_not_null_column_is_refused_as_schema_drift(tmp_path):
    row = list(attendance_rows(1)[0])
    row[ATTENDANCE.index("updated_at")] = None
    writer = BatchWriter(tmp_path, schema.attendance_records, ATTENDANCE, run_id="run1")
    with pytest.raises(PreconditionFailed, match="updated_at is NOT NULL"):
        writer.write([tuple(row)])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


# --- partitions, files, row groups ---------------------------------------------------------------


@pytest.mark.parametrize("partition_by, folders", [
    ("month", ["attendance_month=2026-10", "attendance_month=2026-11"]),
    ("day", [f"attendance_day=2026-{m:02d}-{d:02d}" for m, d in
             sorted({(10 + n % 2, 1 + n % 28) for n in range(40)})]),
])
def test_rows_go_to_hive_partition_folders_of_their_date(tmp_path, partition_by, folders):
    rows = attendance_rows(40)
    manifest = write_batch(tmp_path, schema.attendance_records, ATTENDANCE, [rows[:17], rows[17:]],
                           partition_column="attendance_date", partition_by=partition_by)
    batch = tmp_path / manifest["batch"]
    assert sorted(p.name for p in batch.iterdir() if p.is_dir()) == folders
    key = partition_key("attendance_date", partition_by)
    length = 7 if partition_by == "month" else 10
    mismatched = engine().execute(
        f"SELECT count(*) FROM read_parquet('{batch}/*/*.parquet', hive_partitioning = true) "
        f"WHERE strftime(attendance_date, '%Y-%m-%d')[1:{length}] <> {key}::VARCHAR").fetchone()
    assert mismatched == (0,)
    assert manifest["partitioning"] == {"column": "attendance_date", "by": partition_by,
                                        "key": key}
    # Within a partition the rows keep the order they came in (the watermark's order).
    for entry in manifest["files"]:
        ids = pq.read_table(batch / entry["path"], columns=["id"]).column("id").to_pylist()
        assert ids == sorted(ids)


def test_a_time_column_partitions_by_its_utc_day_and_null_goes_to_the_hive_default(tmp_path):
    manifest = write_batch(tmp_path, schema.invoices, INVOICES, [invoice_rows()],
                           partition_column="paid_at", partition_by="day")
    assert [f["path"] for f in manifest["files"]] == [
        "paid_day=2026-11-09/part-00000.parquet",
        "paid_day=__HIVE_DEFAULT_PARTITION__/part-00000.parquet"]
    got = engine().sql(f"SELECT id, paid_day FROM read_parquet('{tmp_path}/batch=*/*/*.parquet', "
                       "hive_partitioning = true) ORDER BY id").fetchall()
    assert got == [(1, dt.date(2026, 11, 9)), (2, None), (3, None)]


def test_a_table_without_a_partition_column_writes_its_files_in_the_batch_folder(tmp_path):
    manifest = write_batch(tmp_path, schema.notifications, NOTIFICATIONS, [notification_rows()],
                           fmt="jsonl")
    assert manifest["partitioning"] is None
    assert [f["path"] for f in manifest["files"]] == ["part-00000.jsonl"]


def test_a_partition_splits_into_files_of_max_rows_per_file(tmp_path):
    rows = attendance_rows(23, months=(11,))
    manifest = write_batch(tmp_path, schema.attendance_records, ATTENDANCE,
                           [rows[i:i + 4] for i in range(0, 23, 4)], fmt="csv",
                           partition_column="attendance_date", max_rows_per_file=10)
    assert [(f["path"], f["rows"]) for f in manifest["files"]] == [
        ("attendance_month=2026-11/part-00000.csv", 10),
        ("attendance_month=2026-11/part-00001.csv", 10),
        ("attendance_month=2026-11/part-00002.csv", 3)]
    first_ids = engine().sql(
        f"SELECT id FROM read_csv('{tmp_path / manifest['batch'] / manifest['files'][1]['path']}')"
    ).fetchall()
    assert [i for (i,) in first_ids] == list(range(11, 21))


def test_parquet_row_groups_hold_the_rows_asked_for(tmp_path):
    rows = attendance_rows(1000, months=(11,))
    manifest = write_batch(tmp_path, schema.attendance_records, ATTENDANCE,
                           [rows[i:i + 70] for i in range(0, 1000, 70)],
                           partition_column="attendance_date", max_rows_per_file=800,
                           row_group_rows=300)
    groups = []
    for entry in manifest["files"]:
        meta = pq.ParquetFile(tmp_path / manifest["batch"] / entry["path"]).metadata
        groups.append([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        assert entry["row_groups"] == meta.num_row_groups
        assert meta.row_group(0).column(0).compression == "ZSTD"
    assert groups == [[300, 300, 200], [200]]


def test_rows_of_many_partitions_mixed_stay_within_the_open_file_limit(tmp_path):
    """Three chunks each touching five days, two files open at most: each chunk finishes the
    least recently written files, so every day gets a file per chunk and no row is lost."""
    rows = attendance_rows(60, months=(11,))
    days = [dt.date(2026, 11, 1 + n % 5) for n in range(60)]
    rows = [(*r[:3], day, *r[4:]) for r, day in zip(rows, days)]
    manifest = write_batch(tmp_path, schema.attendance_records, ATTENDANCE,
                           [rows[0:20], rows[20:40], rows[40:60]],
                           partition_column="attendance_date", partition_by="day",
                           row_group_rows=3, max_open_files=2)
    per_day = {}
    for entry in manifest["files"]:
        per_day.setdefault(entry["path"].split("/")[0], []).append(entry["rows"])
    assert per_day == {f"attendance_day=2026-11-0{d}": [4, 4, 4] for d in range(1, 6)}
    got = engine().sql(f"SELECT id FROM read_parquet('{tmp_path}/batch=*/*/*.parquet') ORDER BY id")
    assert [i for (i,) in got.fetchall()] == list(range(1, 61))


def five_days_mixed(count: int) -> list[tuple]:
    """Attendance rows whose days take turns (1st, 2nd, ... 5th of November, again), as a full
    refresh in cursor order brings every partition in each page."""
    rows = attendance_rows(count, months=(11,))
    return [(*r[:3], dt.date(2026, 11, 1 + n % 5), *r[4:]) for n, r in enumerate(rows)]


def test_rows_of_many_partitions_mixed_past_the_memory_budget_still_make_full_row_groups(
        tmp_path):
    """Five days in every chunk and memory for no waiting rows: each chunk's rows are spilled
    to a hidden file beside their Parquet file and read back when a row group is full, so every
    file gets full groups of its rows in their order; the spill files go with the batch."""
    rows = five_days_mixed(100)
    table_folder = tmp_path / "attendance_records"
    writer = BatchWriter(table_folder, schema.attendance_records, ATTENDANCE, run_id="spill",
                         partition_column="attendance_date", partition_by="day",
                         row_group_rows=8, waiting_bytes=1)
    writer.write(rows[:10])
    temporary = table_folder / ".tmp-batch-spill"
    spilled = sorted(p.relative_to(temporary).as_posix() for p in temporary.rglob("*.spill.*"))
    assert spilled == [f"attendance_day=2026-11-0{d}/.part-00000.parquet.spill.arrow"
                       for d in range(1, 6)]
    for start in range(10, 100, 10):
        writer.write(rows[start:start + 10])
    manifest = writer.commit({})
    batch = table_folder / manifest["batch"]
    assert [p for p in batch.rglob("*") if "spill" in p.name] == []
    for entry in manifest["files"]:
        meta = pq.ParquetFile(batch / entry["path"]).metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [8, 8, 4]
        assert entry["row_groups"] == 3
        day = int(entry["path"][len("attendance_day=2026-11-0")])
        ids = pq.read_table(batch / entry["path"], columns=["id"]).column("id").to_pylist()
        assert ids == list(range(day, 101, 5))  # every row of its day, in the rows' order

    aborted = BatchWriter(table_folder, schema.attendance_records, ATTENDANCE, run_id="gone",
                          partition_column="attendance_date", row_group_rows=8,
                          waiting_bytes=1)
    aborted.write(rows[:10])
    assert list((table_folder / ".tmp-batch-gone").rglob("*.spill.arrow"))
    aborted.abort()
    assert [p.name for p in table_folder.iterdir()] == [manifest["batch"]]


@pytest.mark.parametrize("partition_by", ["month", "day"])
def test_the_dry_run_plan_names_the_files_the_writer_writes(tmp_path, partition_by):
    rows = attendance_rows(45)
    counts: dict = {}
    for row in rows:  # as the job's GROUP BY gives them: one count per date
        counts[row[3]] = counts.get(row[3], 0) + 1
    plan = plan_files(counts, fmt="parquet", partition_column="attendance_date",
                      partition_by=partition_by, max_rows_per_file=2)
    manifest = write_batch(tmp_path, schema.attendance_records, ATTENDANCE, [rows],
                           partition_column="attendance_date", partition_by=partition_by,
                           max_rows_per_file=2)
    assert [(p["file"], p["rows"]) for p in plan] == [
        (f["path"], f["rows"]) for f in manifest["files"]]
    assert plan_files({None: 3}, fmt="csv", partition_column=None) == [
        {"partition": None, "file": "part-00000.csv", "rows": 3}]


# --- the manifest and publishing -----------------------------------------------------------------


def test_the_manifest_checksums_sizes_and_counts_match_the_files(tmp_path):
    rows = attendance_rows(50)
    fields = {"watermark_from": [dt.datetime(2026, 11, 1), 0],
              "watermark_to": [dt.datetime(2026, 11, 28, 1, 55), 50],
              "supersedes": "batch=20261127T020000.000000Z-run0", "lag_seconds": 300}
    manifest = write_batch(tmp_path, schema.attendance_records, ATTENDANCE, [rows],
                           partition_column="attendance_date", max_rows_per_file=15,
                           fields=fields)
    batch = tmp_path / manifest["batch"]
    on_disk = sorted(p.relative_to(batch).as_posix() for p in batch.rglob("*") if p.is_file())
    listed = sorted(f["path"] for f in manifest["files"])
    assert on_disk == sorted([*listed, MANIFEST_NAME, SUCCESS_NAME])
    for entry in manifest["files"]:
        data = (batch / entry["path"]).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["rows"] == pq.ParquetFile(batch / entry["path"]).metadata.num_rows
    assert manifest["row_count"] == sum(f["rows"] for f in manifest["files"]) == 50
    stored = json.loads((batch / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert stored["files"] == manifest["files"] and stored["row_count"] == 50
    assert stored["watermark_to"] == ["2026-11-28T01:55:00Z", 50]
    assert stored["supersedes"] == "batch=20261127T020000.000000Z-run0"
    assert stored["lag_seconds"] == 300
    assert stored["tool_version"] == package_metadata.version("ops-toolkit")
    assert stored["primary_key"] == ["id"]
    assert [c["name"] for c in stored["columns"]] == ATTENDANCE
    assert re.fullmatch(r"batch=\d{8}T\d{6}\.\d{6}Z-run1", stored["batch"])
    assert stored["created_at"].endswith("Z")
    success = json.loads((batch / SUCCESS_NAME).read_text(encoding="utf-8"))
    assert success["manifest_sha256"] == hashlib.sha256(
        (batch / MANIFEST_NAME).read_bytes()).hexdigest()


def test_batches_are_listed_oldest_first_and_their_names_sort_in_publishing_order(tmp_path):
    names = []
    for n in range(3):
        names.append(write_batch(tmp_path, schema.attendance_records, ATTENDANCE,
                                 [attendance_rows(2)], run_id=f"z{9 - n}")["batch"])
    assert names == sorted(names)  # run ids z9, z8, z7 sort backwards; the time prefix wins
    assert [m["batch"] for m in published_batches(tmp_path)] == names


def test_an_empty_batch_is_published_with_no_files_and_a_composite_key(tmp_path):
    manifest = write_batch(tmp_path, schema.attendance_rollups,
                           [c.name for c in schema.attendance_rollups.columns], [[]],
                           partition_column="attendance_date")
    assert (manifest["row_count"], manifest["files"]) == (0, [])
    assert manifest["primary_key"] == ["institution_id", "attendance_date", "class_name"]
    assert [m["batch"] for m in published_batches(tmp_path)] == [manifest["batch"]]


def glob_sees(pattern: str) -> list[str]:
    return [f for (f,) in engine().sql(f"SELECT file FROM glob('{pattern}')").fetchall()]


def test_nothing_is_visible_to_a_reader_before_commit_or_after_abort(tmp_path):
    table_folder = tmp_path / "attendance_records"
    rows = attendance_rows(32)  # 16 a month: three files finished, a fourth one open
    for finish in ("commit", "abort"):
        writer = BatchWriter(table_folder, schema.attendance_records, ATTENDANCE,
                             run_id=f"run-{finish}", partition_column="attendance_date",
                             max_rows_per_file=5)
        writer.write(rows)  # finished files exist inside the temporary folder
        temporary = table_folder / f".tmp-batch-run-{finish}"
        assert len(list(temporary.rglob("part-*.parquet"))) == 6
        assert glob_sees(f"{table_folder}/batch=*/**/*.parquet") == []
        assert published_batches(table_folder) == []
        # Spark and Hadoop skip '.' and '_' names: every entry a reader lists is hidden.
        assert all(p.name[0] in "._" for p in table_folder.iterdir())
        if finish == "abort":
            writer.abort()
            assert list(table_folder.iterdir()) == []
        else:
            writer.commit({})
            assert len(glob_sees(f"{table_folder}/batch=*/**/*.parquet")) == 8
            for entry in table_folder.iterdir():
                entry.rename(tmp_path / entry.name)  # out of the way for the abort case


CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from ops_lib import schema
from ops_lib.jobs.warehouse_export.files import BatchWriter
from tests.test_export_files import ATTENDANCE, attendance_rows
writer = BatchWriter(sys.argv[2], schema.attendance_records, ATTENDANCE, run_id="killed",
                     fmt=sys.argv[3], partition_column="attendance_date", max_rows_per_file=5,
                     row_group_rows=2)
writer.write(attendance_rows(12, months=(11,)))
print("written", flush=True)
sys.stdin.read()  # the test kills us here: two files finished, a third one open
writer.commit({})
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_writer_killed_mid_batch_leaves_only_a_temporary_folder_the_next_run_sweeps(
        tmp_path, fmt):
    table_folder = tmp_path / "attendance_records"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(REPO), str(table_folder), fmt],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = child.stdout.readline()  # blocks until the rows are written (or the child died)
        assert line == "written\n", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()
    temporary = table_folder / ".tmp-batch-killed"
    assert [p.name for p in table_folder.iterdir()] == [temporary.name]
    partition = temporary / "attendance_month=2026-11"
    assert sorted(p.name for p in partition.iterdir()) == [
        f".part-00002.{fmt}.inprogress", f"part-00000.{fmt}", f"part-00001.{fmt}"]
    assert glob_sees(f"{table_folder}/batch=*/**/*") == []
    assert published_batches(table_folder) == []

    assert sweep_partial_batches(table_folder) == [temporary]
    assert list(table_folder.iterdir()) == []
    manifest = write_batch(table_folder, schema.attendance_records, ATTENDANCE,
                           [attendance_rows(12, months=(11,))], run_id="next", fmt=fmt,
                           partition_column="attendance_date", max_rows_per_file=5)
    got, _ = read_back(table_folder, manifest)
    assert [row[0] for row in got] == list(range(1, 13))


def test_the_sweep_spares_the_callers_own_folder_and_published_batches(tmp_path):
    write_batch(tmp_path, schema.attendance_records, ATTENDANCE, [attendance_rows(3)])
    BatchWriter(tmp_path, schema.attendance_records, ATTENDANCE, run_id="dead").write(
        attendance_rows(3))
    mine = BatchWriter(tmp_path, schema.attendance_records, ATTENDANCE, run_id="mine")
    assert sweep_partial_batches(tmp_path, keep_run_id="mine") == [tmp_path / ".tmp-batch-dead"]
    assert mine.folder.is_dir() and len(published_batches(tmp_path)) == 1
    assert sweep_partial_batches(tmp_path / "never-exported") == []


# --- the docs' reader query ----------------------------------------------------------------------


def docs_latest_version_query(table_folder: Path) -> str:
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", text, re.S)
    [query] = [b for b in blocks if b.startswith("-- The latest version of each")]
    return query.replace("var/exports/attendance_records", table_folder.as_posix())


def test_the_docs_latest_version_query_keeps_the_newest_version_of_each_row(tmp_path):
    table_folder = tmp_path / "attendance_records"
    first = attendance_rows(3)  # ids 1, 2, 3
    write_batch(table_folder, schema.attendance_records, ATTENDANCE, [first], run_id="b1",
                partition_column="attendance_date")
    changed = attendance_rows(2, first_id=2, version=60, status="late")[:1]  # id 2, newer
    again = [first[2]]  # id 3 once more, unchanged (at-least-once)
    new = attendance_rows(1, first_id=4)
    write_batch(table_folder, schema.attendance_records, ATTENDANCE, [changed + again + new],
                run_id="b2", partition_column="attendance_date")
    # A killed run's folder and a copy without _SUCCESS hold a newer id 1: neither counts.
    newest_one = attendance_rows(1, version=999, status="absent")
    BatchWriter(table_folder, schema.attendance_records, ATTENDANCE, run_id="killed",
                partition_column="attendance_date", max_rows_per_file=1).write(newest_one)
    partial = write_batch(tmp_path / "elsewhere", schema.attendance_records, ATTENDANCE,
                          [newest_one], run_id="copying", partition_column="attendance_date")
    copied = table_folder / "batch=29991231T000000.000000Z-copying"
    (tmp_path / "elsewhere" / partial["batch"]).rename(copied)
    (copied / SUCCESS_NAME).unlink()

    got = engine().sql(docs_latest_version_query(table_folder))
    assert got.columns == ATTENDANCE
    rows = sorted(got.fetchall())
    assert [(r[0], r[7], r[10]) for r in rows] == [
        (1, "present", first[0][10].replace(tzinfo=UTC)),
        (2, "late", changed[0][10].replace(tzinfo=UTC)),
        (3, "present", first[2][10].replace(tzinfo=UTC)),
        (4, "present", new[0][10].replace(tzinfo=UTC))]


# --- the output folder ---------------------------------------------------------------------------


def test_an_output_folder_under_a_regular_file_is_one_bad_input_line_and_nothing_is_created(
        tmp_path):
    blocker = tmp_path / "exports.txt"
    blocker.write_text("not a folder")
    for path in (blocker / "attendance", blocker):
        with pytest.raises(BadInput) as refused:
            check_output_dir(path)
        message = str(refused.value)
        assert str(path) in message and "\n" not in message and "not a folder" in message
    before = sorted(tmp_path.rglob("*"))
    fresh = tmp_path / "var" / "exports"
    assert check_output_dir(fresh) == fresh
    assert sorted(tmp_path.rglob("*")) == before  # the dry run writes nothing, not a folder
