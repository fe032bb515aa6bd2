"""Compare reporting figures between the primary and a read replica or a warehouse copy."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402
from ops_lib.errors import EXIT_UNKNOWN  # noqa: E402

DAY = click.DateTime(["%Y-%m-%d"])


@tool_command(examples=[
    "python tools/shadow_reporting_validation.py  # the last 7 days, against the read replica",
    "python tools/shadow_reporting_validation.py --from 2026-11-01 --to 2026-11-08  "
    "# 1-7 November",
])
@click.option("--from", "date_from", type=DAY, default=None, metavar="YYYY-MM-DD",
              help="First day compared (default: 7 days before --to).")
@click.option("--to", "date_to", type=DAY, default=None, metavar="YYYY-MM-DD",
              help="First day NOT compared (default: the day the replica's lag reaches into; "
                   "today for a copy with no lag).")
@click.option("--target-url", default=None, metavar="URL",
              help="SQLAlchemy URL of the copy to compare with (env OPS_VALIDATION_TARGET_URL; "
                   "default: OPS_REPLICA_DATABASE_URL).")
@common_options(writes=False)
def main(date_from, date_to, **options):
    """Compare attendance and invoice figures, per day and institution, primary vs target.

    Exit 0 equal, 1 mismatch (or inconclusive: inside the replica's lag), 2 bad input,
    3 a database could not be read.
    """
    from ops_lib.jobs import reporting_validation  # here, not at the top: --help stays fast

    start = date_from.date() if date_from else None
    end = date_to.date() if date_to else None
    run_tool("shadow_reporting_validation", reporting_validation.run, options, lock=False,
             setting_flags={"target_url": "validation_target_url"},
             validate=lambda settings: reporting_validation.problems(settings, start, end),
             failed_exit=EXIT_UNKNOWN, date_from=start, date_to=end)


if __name__ == "__main__":
    tool_main(main)
