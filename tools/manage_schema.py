"""Create the platform schema on an empty database, or reset a scratch one (manual use only)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402


@tool_command(examples=[
    "python tools/manage_schema.py create  # which tables are missing",
    "python tools/manage_schema.py create --execute",
    "python tools/manage_schema.py reset --execute --confirm ops_scratch  # wipe a scratch db",
])
@click.argument("action", type=click.Choice(["create", "reset"]))
@click.option("--confirm", metavar="DATABASE", help="reset: the database's name, typed again.")
@common_options(writes=True)
def main(action, confirm, **options):
    """Create missing tables (create) or drop and recreate every table (reset)."""
    from ops_lib.jobs import schema_admin  # here, not at the top: --help stays fast

    run_tool("manage_schema", schema_admin.run, options, creates_schema=True,
             validate=lambda settings: schema_admin.check_options(
                 settings.database_url, action, confirm, dry_run=not options["execute"]),
             action=action, confirm=confirm)


if __name__ == "__main__":
    tool_main(main)
