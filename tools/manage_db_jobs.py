"""The jobs the web app defines in cron_jobs: list, pause, resume, or run one now (support tool)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402
from ops_lib.jobs.db_jobs import ACTIONS  # noqa: E402


@tool_command(examples=[
    "python tools/manage_db_jobs.py list  # state, last slot and next slot of every job",
    "python tools/manage_db_jobs.py pause --id 12  # what pausing it would change",
    "python tools/manage_db_jobs.py pause --id 12 --execute",
    "python tools/manage_db_jobs.py run --id 12 --execute  # its next slot now (dry run first)",
])
@click.argument("action", type=click.Choice(ACTIONS))
@click.option("--id", "ids", type=click.IntRange(min=1), multiple=True, metavar="N",
              help="A cron_jobs id (repeat for several; run takes one).")
@common_options(writes=True)
def main(action, ids, **options):
    """List the DB jobs, pause or resume them (is_active), or run one's next slot now."""
    from ops_lib.jobs.db_jobs import admin  # here, not at the top: --help stays fast

    run_tool("manage_db_jobs", admin.run, options,
             validate=lambda _settings: admin.validate(action, ids), action=action,
             ids=list(ids))


if __name__ == "__main__":
    tool_main(main)
