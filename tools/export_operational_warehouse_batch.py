"""Export the next batch of an allow-listed table to files for analytics (Parquet by default)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402
from ops_lib.jobs.warehouse_export import FORMATS, PARTITION_BY, TABLE_NAMES  # noqa: E402


def _writable_output(settings) -> list[str]:
    """The output folder must be writable (checked before connecting; creates nothing)."""
    from pathlib import Path

    from ops_lib.jobs.warehouse_export.files import check_output_dir

    check_output_dir(Path(settings.export_dir))  # BadInput: one line, exit 2
    return []


@tool_command(examples=[
    "python tools/export_operational_warehouse_batch.py attendance_records  # window, rows, files",
    "python tools/export_operational_warehouse_batch.py attendance_records --execute",
    "python tools/export_operational_warehouse_batch.py audit_logs --format jsonl "
    "--output-dir /srv/exports --execute",
])
@click.argument("table", type=click.Choice(TABLE_NAMES), metavar="TABLE")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Folder of the files, one sub-folder per table (setting export_dir; "
                   "default var/exports beside the embedded database).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="parquet",
              show_default=True, help="File format of the batch.")
@click.option("--partition-by", type=click.Choice(PARTITION_BY), default="month",
              show_default=True, help="Hive partition folders by the month or the day of the "
                                      "table's date column.")
@click.option("--full-refresh", is_flag=True,
              help="Start over: export every row again, whatever the watermark says.")
@common_options(writes=True)
def main(table, output_dir, fmt, partition_by, full_refresh, **options):
    """Export the rows of TABLE changed since the last batch, as one batch of files."""
    from ops_lib.jobs.warehouse_export import job  # here, not at the top: --help stays fast

    run_tool("export_operational_warehouse_batch", job.run, {**options, "output_dir": output_dir},
             setting_flags={"output_dir": "export_dir"}, validate=_writable_output,
             table=table, fmt=fmt, partition_by=partition_by, full_refresh=full_refresh)


if __name__ == "__main__":
    tool_main(main)
