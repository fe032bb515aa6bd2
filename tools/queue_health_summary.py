"""Queue depth and latency, and every scheduled tool's freshness: a Nagios-style check."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402


@tool_command(usage_exit=3, pager="QUEUES", examples=[
    "python tools/queue_health_summary.py  # the pager line, then every queue and tool",
    "python tools/queue_health_summary.py --perfdata --timeout 20  # as Nagios runs it",
])
@click.option("--perfdata", is_flag=True, help="Add Nagios perfdata after a '|' on the first line.")
@click.option("--prometheus", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write the node_exporter textfile here (atomically).")
@click.option("--html", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write the self-contained status page here (atomically).")
@click.option("--alert", is_flag=True,
              help="Email and ping when the state gets worse than the last --alert run's, and "
                   "once when it recovers.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Give up (exit 3, UNKNOWN) when the check takes longer.")
@click.option("--now", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
                                            "%Y-%m-%dT%H:%M"]),
              default=None, metavar="UTC-TIME", help="Judge as of this UTC time instead of the clock (replays, tests).")
@common_options(writes=False)
def main(perfdata, prometheus, html, alert, timeout, now, **options):
    """Queue depth and latency, and every scheduled tool's freshness; changes nothing.

    Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (could not check). The first line is the
    pager's; --prometheus FILE and --html FILE write a node_exporter textfile and a status page
    (atomically); the schedule runs it every 15 minutes with --alert."""
    from ops_lib.jobs import queue_health  # here, not at the top: --help stays fast

    run_tool("queue_health_summary", queue_health.run, options, lock=alert,
             failed_exit=3, bad_input_exit=3, pager="QUEUES",
             validate=lambda settings: queue_health.check_outputs(prometheus, html),
             perfdata=perfdata, prometheus=prometheus,
             html=html, alert=alert, timeout=timeout, now=now)


if __name__ == "__main__":
    tool_main(main)
