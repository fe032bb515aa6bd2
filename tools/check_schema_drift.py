"""Check that the live database still matches schema.sql (skeema diff style); changes nothing."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import (  # noqa: E402
    common_options,
    run_tool,
    scratch_database_option,
    tool_command,
    tool_main,
)


@tool_command(examples=[
    "python tools/check_schema_drift.py  # every difference, one line each; exit 1 on drift",
    "python tools/check_schema_drift.py --ignore-extra-tables  # a database shared with other apps",
])
@scratch_database_option
@click.option("--ignore-extra-tables", is_flag=True,
              help="Do not report tables schema.sql does not have (other applications' tables).")
@common_options(writes=False)
def main(scratch_database, ignore_extra_tables, **options):
    """Compare the live schema with schema.sql loaded into a scratch schema on the same server.

    Reports missing, extra and changed tables, columns, indexes and foreign keys, and a changed
    engine or table charset. Exit 0 no drift, 1 drift, 2 bad input or any error (an unreachable
    database too). It issues no DDL on the live database; its only write is its run-ledger row.
    """
    from ops_lib import scratch_schema  # here, not at the top: --help stays fast
    from ops_lib.jobs import schema_drift

    run_tool("check_schema_drift", schema_drift.run, options, lock=False,
             validate=lambda settings: scratch_schema.check_scratch_name(scratch_database),
             failed_exit=schema_drift.EXIT_NOT_CHECKED,
             bad_input_exit=schema_drift.EXIT_NOT_CHECKED,
             scratch_database=scratch_database, ignore_extra_tables=ignore_extra_tables)


if __name__ == "__main__":
    tool_main(main)
