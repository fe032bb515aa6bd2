"""Warehouse export: the next batch of an allow-listed table, as files an analytics engine loads
as they are (issue 14; docs/tools/export_operational_warehouse_batch.md, docs/warehouse-export.md).

- tables.py: the allow-list `EXPORTS` (which tables, each one's cursor, partition column and how
  its archived rows stay exportable);
- window.py: the watermark state (`ops_export_watermarks`) and the window of one run, taken in
  one consistent snapshot and bounded below every open transaction;
- reader.py: the rows of a window, streamed from the server in chunks;
- files.py: the batch on disk (temporary folder, manifest, `_SUCCESS`, atomic rename);
- job.py: the dry run and `--execute`.

This module loads nothing heavy: the tool's `--help` and its refusal of an unknown table name
read only the names below (tables.py checks they are exactly `EXPORTS`'s).
"""

TABLE_NAMES = ("attendance_records", "attendance_rollups", "audit_logs")
FORMATS = ("parquet", "csv", "jsonl")
PARTITION_BY = ("month", "day")
