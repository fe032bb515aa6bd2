"""Refresh divisions, districts, upazilas and unions from a file, a folder or a URL."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402


@tool_command(examples=[
    "python tools/import_ipemis_locations.py docs/examples/locations/per-level  # the diff only",
    "python tools/import_ipemis_locations.py docs/examples/locations/per-level --execute",
    "python tools/import_ipemis_locations.py https://data.example.org/bd/locations.json "
    "--execute  # from a URL",
    "python tools/import_ipemis_locations.py docs/examples/locations/partial/unions.csv "
    "--execute  # a partial source: only Savar's unions",
])
@click.argument("source")
@click.option("--format", "fmt", type=click.Choice(["csv", "csv-combined", "json"]),
              default=None, help="The source's format, where it cannot be told from the file.")
@click.option("--allow-shrink", is_flag=True,
              help="Deactivate rows even when a level loses more than the setting "
                   "location_max_shrink_percent of its active rows (the dry run shows it).")
@common_options(writes=True)
def main(source, fmt, allow_shrink, **options):
    """Refresh the location hierarchy from SOURCE: a file, a folder of one file per level, or
    an http(s) URL. Rows missing from the source become inactive, never deleted."""
    from ops_lib.jobs import locations  # here, not at the top: --help stays fast

    run_tool("import_ipemis_locations", locations.run, options,
             source=source, fmt=fmt, allow_shrink=allow_shrink)


if __name__ == "__main__":
    tool_main(main)
