"""The scheduler service: runs the schedule itself, each job a child process (no cron needed)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402
from ops_lib.scheduler import ACTIONS, DEFAULT_KILL_GRACE_SECONDS  # noqa: E402


@tool_command(examples=[
    "python tools/run_scheduler.py --check  # the schedule this host would run, validated",
    "python tools/run_scheduler.py status  # running? last tick, each job's last run, next slot",
])
@click.argument("action", type=click.Choice(ACTIONS), required=False, metavar="[ACTION]")
@click.option("--once", is_flag=True, help="run: start what is due now, wait for it, exit.")
@click.option("--check", is_flag=True, help="Validate the schedule and exit (no ACTION needed).")
@click.option("--pid-file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="The service's PID file (default var/run_scheduler.pid).")
@click.option("--state-file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Each job's last slot and run (default var/run_scheduler.state.json).")
@click.option("--kill-grace", type=click.FloatRange(min=0), default=DEFAULT_KILL_GRACE_SECONDS,
              show_default=True, metavar="SECONDS",
              help="After SIGTERM (timeout or stop), how long a job has before SIGKILL.")
@click.option("--test-schedule", type=click.Path(dir_okay=False, exists=True), default=None,
              hidden=True)  # tests: a JSON schedule of test scripts instead of the real one
@common_options(writes=False)
def main(action, once, check, pid_file, state_file, kill_grace, test_schedule, **options):
    """Run the schedule (ops_lib/schedule.py) as a service: ACTION is run (foreground), start,
    stop, restart or status (through the PID file); run --once runs what is due now and exits.

    \b
    The service in the foreground (systemd, Docker, a Task Scheduler at-startup task):
      python tools/run_scheduler.py run
    Detached, on a POSIX host without a service manager (logs to var/run_scheduler.log),
    and stopped (SIGTERM; running jobs get --kill-grace):
      python tools/run_scheduler.py start
      python tools/run_scheduler.py stop

    Slots come from the wall clock in UTC; per job an overlap limit, a timeout (budget plus
    grace, then SIGTERM, then SIGKILL) and a catch-up policy. SIGTERM/SIGINT: nothing new starts,
    running jobs get --kill-grace. Restarts after a crash are the supervisor's (systemd, Task
    Scheduler)."""
    from ops_lib import scheduler  # here, not at the top: --help stays fast

    # The service's own row in the run ledger is a run that acts (queue health watches its
    # heartbeat); status, --check, start and stop change no data.
    options["execute"] = action == "run" and not check
    command = scheduler.service_command(os.path.abspath(__file__), sys.argv[1:], action or "",
                                        options.get("log_file") or os.environ.get("OPS_LOG_FILE"))
    run_tool("run_scheduler", scheduler.run, options, lock=False,
             validate=lambda settings: scheduler.validate(action, check, once, settings,
                                                          test_schedule),
             action=action, once=once, check=check, pid_file=pid_file, state_file=state_file,
             kill_grace=kill_grace, service_command=command, test_schedule=test_schedule)


if __name__ == "__main__":
    tool_main(main)
