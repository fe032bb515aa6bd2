"""Print the index SQL schema.sql asks for and the live database lacks; never applies it."""

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
    "python tools/generate_missing_index_sql.py  # the SQL on screen; nothing is applied",
    "python tools/generate_missing_index_sql.py --large-table-mb 256  # advise pt-osc sooner",
    "to keep it, review it, then apply it with the mariadb client:",
    "  python tools/generate_missing_index_sql.py > fix.sql",
    "  mariadb --default-character-set=utf8mb4 DB < fix.sql",
])
@scratch_database_option
# No click default: the job's DEFAULT_LARGE_TABLE_MB applies (that module is not imported here:
# --help stays fast); tests/test_index_preview.py checks the help states it.
@click.option("--large-table-mb", type=click.FloatRange(min=0, min_open=True), metavar="MB",
              help="Above this size (information_schema's estimate) the comments advise "
                   "pt-online-schema-change or gh-ost instead of the ALTER. [default: 1024]")
@common_options(writes=False)
def main(scratch_database, large_table_mb, **options):
    """Print, as SQL on stdout and nothing else, the indexes schema.sql names that the live
    database lacks or has with other columns, each with its table's size and the online-DDL
    risks above it; redundant live indexes follow, commented out. It changes nothing: review
    the file, then run it with the mariadb client. Logs go to stderr. Exit 0; 1 a database
    error; 2 bad input."""
    from ops_lib import scratch_schema
    from ops_lib.jobs import index_preview  # here, not at the top: --help stays fast

    run_tool("generate_missing_index_sql", index_preview.run, options, lock=False,
             validate=lambda settings: scratch_schema.check_scratch_name(scratch_database),
             scratch_database=scratch_database, large_table_mb=large_table_mb)


if __name__ == "__main__":
    tool_main(main)
