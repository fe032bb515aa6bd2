"""Dead-lettered queue rows (status failed): list, retry, forget or prune them (support tool)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402
from ops_lib.jobs.dead_letter_names import ACTIONS, QUEUE_CHOICES, SAMPLE  # noqa: E402


@tool_command(examples=[
    "python tools/manage_dead_letters.py list  # what failed, and why",
    "python tools/manage_dead_letters.py retry --queue scans --id 20002  # the plan",
    "python tools/manage_dead_letters.py retry --queue scans --id 20002 --execute",
])
@click.argument("action", type=click.Choice(ACTIONS))
@click.option("--queue", type=click.Choice(QUEUE_CHOICES), default="all",
              show_default=True, help="Which queue's failed rows.")
@click.option("--id", "ids", type=click.IntRange(min=1), multiple=True, metavar="N",
              help="A row id (repeat for several); needs one --queue.")
@click.option("--older-than-days", type=click.IntRange(min=0), default=None, metavar="DAYS",
              help="prune: age in days (default: setting dead_letter_retention_days).")
@click.option("--sample", type=click.IntRange(min=0), default=SAMPLE,
              show_default=True, help="Rows shown per queue.")
@common_options(writes=True)
def main(action, queue, ids, older_than_days, sample, **options):
    """List, retry (back to pending), forget (delete by id) or prune (delete by age) failed rows."""
    from ops_lib.jobs import dead_letters  # here, not at the top: --help stays fast

    run_tool("manage_dead_letters", dead_letters.run, options,
             validate=lambda _settings: dead_letters.validate(action, queue, ids, older_than_days),
             action=action, queue=queue, ids=list(ids), older_than_days=older_than_days,
             sample=sample)


if __name__ == "__main__":
    tool_main(main)
