"""The daily billing sweep: invoices, reminders, grace-period restriction, restore after payment."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402


@tool_command(examples=[
    "python tools/run_billing_jobs.py  # what today's sweep would do",
    "python tools/run_billing_jobs.py --as-of 2026-01-19 --execute  # replay a day, and apply it",
])
@click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              metavar="YYYY-MM-DD", help="Run as if today were this day (default: today in UTC).")
@common_options(writes=True)
def main(as_of, **options):
    """Issue this month's invoices, derive statuses, restrict and restore access, send reminders."""
    from ops_lib.jobs import billing  # here, not at the top: --help stays fast

    run_tool("run_billing_jobs", billing.run, options, as_of=as_of.date() if as_of else None)


if __name__ == "__main__":
    tool_main(main)
