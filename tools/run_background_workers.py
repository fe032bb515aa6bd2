"""Drain the queues: scans, notification fan-out, push delivery, roll-ups, snapshots, report emails.

Cron runs it every minute; several copies may run at once (rows are claimed, never shared).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool  # noqa: E402
from ops_lib.jobs import workers  # noqa: E402


@click.command()
@click.argument("limit", type=click.IntRange(min=1), default=100, required=False)
@common_options(writes=True)
def main(limit, **options):
    """Process up to LIMIT rows per stage (default 100), stages taking turns.

    --max-runtime must be more than 5 seconds: claiming stops 5 s before the budget ends.
    """
    run_tool("run_background_workers", workers.run, options, lock=False,
             validate=lambda settings: workers.validate(settings, options["max_runtime"]),
             limit=limit)


if __name__ == "__main__":
    main()
