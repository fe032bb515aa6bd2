"""Move old notifications, audit logs and payments to their archive tables; mark old attendance."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402


@tool_command(examples=[
    "python tools/archive_hot_path_data.py  # what would move: per area, and one batch's SQL",
    "python tools/archive_hot_path_data.py 1000 --execute --max-runtime 1200",
])
@click.argument("batch", type=click.IntRange(1, 10_000), default=1000, required=False)
@click.option("--sleep", type=click.FloatRange(min=0), default=0.0, show_default=True,
              metavar="SECONDS", help="Pause between two batches (eases the load on replicas).")
@click.option("--max-replica-lag", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Pause while replication lag exceeds this (replica_database_url setting, "
                   "else the server's own SHOW REPLICA STATUS).")
@common_options(writes=True)
def main(batch, sleep, max_replica_lag, **options):
    """Archive rows older than each area's retention, BATCH rows a transaction (default 1000)."""
    from ops_lib.jobs import archive_hot_path  # here, not at the top: --help stays fast

    run_tool("archive_hot_path_data", archive_hot_path.run, options,
             batch=batch, sleep=sleep, max_replica_lag=max_replica_lag)


if __name__ == "__main__":
    tool_main(main)
