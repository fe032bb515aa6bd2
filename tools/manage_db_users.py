"""Print (or create) the database roles and users each tool needs; check a user's grants."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402
from ops_lib.grants import created_roles  # noqa: E402 (standard library only: --help stays fast)


@tool_command(examples=[
    "python tools/manage_db_users.py --user-host '10.0.0.%' --for-server mariadb "
    "--database school  # every role's SQL, for a server this host cannot reach",
    "python tools/manage_db_users.py --user-host '10.0.0.%' --for-server mysql --database school "
    "--role worker  # one role, for MySQL 8",
    "python tools/manage_db_users.py --user-host '10.0.0.%' --execute "
    "--password-file ~/ops-db-passwords.env  # as root: new users' passwords there, mode 0600",
])
@click.option("--role", "roles", type=click.Choice(created_roles()), multiple=True,
              help="Only this role (repeat for several; default: every role).")
@click.option("--user-host", required=True, metavar="PATTERN",
              help="The host part of each user: where the tools connect from "
                   "(localhost, 10.0.0.%, an address).")
@click.option("--prefix", default="ops_", show_default=True,
              help="Start of every user's and role's name (user <prefix><role>, role "
                   "<prefix><role>_role): one set per database on a shared server.")
@click.option("--for-server", type=click.Choice(["mariadb", "mysql"]), default=None,
              help="Print the statements for this server (default: the connected one's).")
@click.option("--database", default=None, metavar="NAME",
              help="The database the grants are on (default: the connected one's; with "
                   "--for-server, printing needs no server).")
@click.option("--check", "check_user", default=None, metavar="USER",
              help="Compare USER@--user-host's grants (SHOW GRANTS, its roles' too) with its "
                   "role's: lists what is missing and what is beyond; exit 1 if either.")
@click.option("--password-file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="--execute: generate the password of each new user with no "
                   "OPS_DB_PASSWORD_<ROLE> and write it here (a new file, mode 0600).")
@common_options(writes=True)
def main(roles, user_host, prefix, for_server, database, check_user, password_file,
         **options):
    """Print the CREATE ROLE, GRANT and CREATE USER statements of each tool's role (passwords as
    placeholders), derived from what each tool declares it reads and writes (ops_lib/catalog.py).
    --execute runs them as the connected administrator; --check USER reports a user's grants
    against its role. Run it as the server's administrator (root or a user WITH GRANT OPTION)."""
    from ops_lib.jobs import db_users  # here, not at the top: --help stays fast

    run_tool("manage_db_users", db_users.run, options, lock=False,
             validate=lambda _settings: db_users.validate(
                 roles, user_host, prefix, check_user, password_file, options["execute"]),
             roles=roles, user_host=user_host, prefix=prefix, for_server=for_server,
             database=database,
             check_user=check_user, password_file=password_file)


if __name__ == "__main__":
    tool_main(main)
