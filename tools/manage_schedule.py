"""Generate and check the schedule's files (cron, Task Scheduler, systemd); install the crontab."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402


@tool_command(examples=[
    "python tools/manage_schedule.py generate  # which generated files would change, as a diff",
    "python tools/manage_schedule.py generate --execute",
    "python tools/manage_schedule.py --check  # exit 1 and one line per problem",
    "python tools/manage_schedule.py install-crontab --crontab-file /etc/cron.d/ops-toolkit "
    "--cron-user ops  # the block it would write there, as a diff",
    "python tools/manage_schedule.py install-crontab --execute  # into this user's crontab",
])
@click.argument("action", type=click.Choice(["generate", "install-crontab"]), required=False)
@click.option("--check", is_flag=True,
              help="Check the schedule (every runner can say each cron expression, every tool "
                   "is scheduled or manual-only) and that the checked-in files are what it "
                   "generates; exit 1 with one line per problem.")
@click.option("--crontab-file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="install-crontab: edit this file (e.g. /etc/cron.d/ops-toolkit) instead of "
                   "the user's crontab (crontab -l / crontab -).")
@click.option("--remove", is_flag=True, help="install-crontab: take the block out.")
@click.option("--cron-user", default=None, metavar="USER",
              help="install-crontab with an /etc/cron.d file: the user each line runs as.")
@click.option("--env-file", default="/etc/ops-toolkit.env", show_default=True, metavar="FILE",
              help="install-crontab: the secrets file each line loads.")
@click.option("--python", "python", default=None, metavar="PATH",
              help="install-crontab: the python that runs the tools (default: this one).")
@common_options(writes=True)
def main(action, check, crontab_file, remove, cron_user, env_file, python, **options):
    """Write crontab.example, taskscheduler/*.xml and systemd/* from ops_lib/schedule.py
    (generate), check them (--check), or install the schedule as a marked block of a crontab
    (install-crontab: a re-run replaces the block, --remove takes it out, other lines are left
    byte for byte; the block enables the optional jobs the optional_jobs setting names)."""
    from ops_lib.jobs import schedule_admin  # here, not at the top: --help stays fast

    run_tool("manage_schedule", schedule_admin.run, options,
             validate=lambda _settings: schedule_admin.check_install_options(
                 action, check, crontab_file, remove, cron_user, python, options["execute"]),
             action=action, check=check, crontab_file=crontab_file, remove=remove,
             cron_user=cron_user, env_file=env_file, python=python)


if __name__ == "__main__":
    tool_main(main)
