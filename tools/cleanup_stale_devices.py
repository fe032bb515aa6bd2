"""Mark notification device tokens inactive when not seen for more than stale_device_days."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402


@tool_command(examples=[
    "python tools/cleanup_stale_devices.py  # how many are stale, and the stalest ten",
    "python tools/cleanup_stale_devices.py 5000 --execute",
])
@click.argument("limit", type=click.IntRange(min=1), default=1000, required=False)
@common_options(writes=True)
def main(limit, **options):
    """Deactivate at most LIMIT stale device tokens (default 1000), stalest first."""
    from ops_lib.jobs import stale_devices  # here, not at the top: --help stays fast

    run_tool("cleanup_stale_devices", stale_devices.run, options, limit=limit)


if __name__ == "__main__":
    tool_main(main)
