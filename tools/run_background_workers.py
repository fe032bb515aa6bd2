"""Drain the queues: scans, notification fan-out, push delivery, roll-ups, snapshots, report emails.

Cron runs it every minute; several copies may run at once (rows are claimed, never shared).
"""

import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402

GC_YOUNG_THRESHOLD = 10_000


@tool_command(examples=[
    "python tools/run_background_workers.py  # what each stage would take now",
    "python tools/run_background_workers.py 500 --execute --max-runtime 240 --quiet  # cron",
    "python tools/run_background_workers.py 200000 --execute --threads 3  # one copy, 3 lanes",
])
@click.argument("limit", type=click.IntRange(min=1), default=100, required=False)
@click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
              help="Lanes of this process: threads with a connection each, working the queues "
                   "side by side as separate copies would, so the process runs its Python while "
                   "the server works (setting worker_threads, env OPS_WORKER_THREADS; default 2 "
                   "on MySQL/MariaDB, 1 on SQLite, which lets one writer at a time).")
@common_options(writes=True)
def main(limit, threads, **options):
    """Process up to LIMIT rows per stage (default 100), stages taking turns.

    --max-runtime must be more than 5 seconds: the worker stops claiming 5 seconds before the
    budget ends, to finish the batch in hand.
    """
    from ops_lib.jobs import workers  # here, not at the top: --help stays fast

    # A batch makes hundreds of thousands of objects that live until it ends (rows, tuples):
    # with CPython's default thresholds (700, 10, 10) they reached the oldest generation, and
    # collecting it walked the whole heap every few batches (a fifth of the scans stage's CPU).
    # Young collections ten times rarer let a batch's objects die young.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    run_tool("run_background_workers", workers.run, {**options, "threads": threads}, lock=False,
             setting_flags={"threads": "worker_threads"},
             validate=lambda settings: workers.validate(settings, options["max_runtime"]),
             limit=limit)


if __name__ == "__main__":
    tool_main(main)
