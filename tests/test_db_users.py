"""The role declaration (ops_lib/catalog.py) and its grants (ops_lib/grants.py), without a server:
every tool has a role, every declared table exists, only the schema admin has DDL, the monitor
writes only its ledger, the scheduler holds what its children need; the statements per server;
SHOW GRANTS read back; privilege errors in words. tests/test_db_users_mariadb.py runs the tools
under these grants."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from ops_lib import grants
from ops_lib.catalog import (
    INSERT,
    MONITOR_NEVER_READS,
    ROLES,
    SERVER_PRIVILEGES,
    TOOLS,
    tables,
)
from ops_lib.db import describe_db_error, privilege_problem
from ops_lib.jobs.db_users import role_of_user, validate
from ops_lib.schedule import SCHEDULE
from ops_lib.schema import metadata
from tests.conftest import REPO, run_cli, sqlite_database, tool_env

DB = "school_db"
WRITES = {"INSERT", "UPDATE", "DELETE"}
DDL = {"CREATE", "DROP", "ALTER", "INDEX", "ALL PRIVILEGES"}


def test_every_tool_has_a_role_and_every_role_a_tool():
    assert sorted(TOOLS) == sorted(path.stem for path in (REPO / "tools").glob("*.py"))
    assert {use.role for use in TOOLS.values()} == set(ROLES)


def test_every_declared_table_is_a_table_of_the_schema():
    for tool, use in TOOLS.items():
        unknown = {table for _, table in use.all_tables()} - set(metadata.tables)
        assert unknown == set(), f"{tool} declares {unknown}, which schema.sql does not have"
        assert use.server <= set(SERVER_PRIVILEGES), tool


def test_an_update_or_delete_reads_the_table_too():
    assert tables(update="a", delete="b") == {("UPDATE", "a"), ("SELECT", "a"),
                                              ("DELETE", "b"), ("SELECT", "b")}
    assert tables(insert="c") == {(INSERT, "c")}


def on_live_database(grant: grants.Grant) -> bool:
    return grant.scope.startswith((f"`{DB}`.", f"`{DB.replace('_', chr(92) + '_')}`."))


@pytest.mark.parametrize("flavor", grants.FLAVORS)
def test_only_the_schema_admin_has_ddl_on_the_live_database(flavor):
    for role in grants.created_roles():
        ddl = {g for g in grants.role_grants(role, DB, flavor)
               if on_live_database(g) and g.privilege in DDL}
        assert bool(ddl) == (role == "schema_admin"), (role, ddl)


def test_the_monitor_writes_only_the_run_ledger_and_never_reads_the_web_apps_secrets():
    monitor = grants.role_grants("monitor", DB, grants.MARIADB)
    written = {g.scope for g in monitor if g.privilege in WRITES}
    assert written == {f"`{DB}`.`ops_job_runs`"}
    read = {g.scope.split(".")[1].strip("`") for g in monitor if g.privilege == "SELECT"}
    assert read == set(metadata.tables) - MONITOR_NEVER_READS
    # It covers every table any tool's dry run reads, but the web app's credentials (the worker's
    # dry run shows "unknown" for the rows a DB job would touch there).
    for use in TOOLS.values():
        assert use.reads() - MONITOR_NEVER_READS <= read


def test_the_worker_may_not_touch_invoices_or_payments():
    worker = grants.role_grants("worker", DB, grants.MARIADB)
    assert not {g for g in worker if g.scope.endswith(("`invoices`", "`payments`"))}


def test_the_scheduler_holds_every_grant_its_scheduled_children_need():
    scheduler = grants.role_grants("scheduler", DB, grants.MARIADB)
    for job in SCHEDULE:
        needed = grants.tool_grants(job.tool, DB, grants.MARIADB)
        assert grants.compare(needed, scheduler).missing == (), job.tool


def test_mariadb_and_mysql_spell_the_replica_privilege_and_the_default_role_their_way():
    names = grants.accounts("archiver", "ops_", "10.0.0.%")
    mariadb = grants.role_statements(names, DB, grants.MARIADB)
    mysql = grants.role_statements(names, DB, grants.MYSQL)
    assert "GRANT SLAVE MONITOR ON *.* TO `ops_archiver_role`" in mariadb
    assert "GRANT REPLICATION CLIENT ON *.* TO `ops_archiver_role`" in mysql
    assert mariadb[-1] == "SET DEFAULT ROLE `ops_archiver_role` FOR `ops_archiver`@`10.0.0.%`"
    assert mysql[-1] == "SET DEFAULT ROLE `ops_archiver_role` TO `ops_archiver`@`10.0.0.%`"
    assert mariadb[0] == "CREATE ROLE IF NOT EXISTS `ops_archiver_role`"
    assert ("CREATE USER IF NOT EXISTS `ops_archiver`@`10.0.0.%` IDENTIFIED BY "
            "<OPS_DB_PASSWORD_ARCHIVER>") in mariadb


def test_a_database_level_grant_escapes_the_underscore_wildcard():
    statements = grants.role_statements(grants.accounts("worker", "ops_", "%"), DB,
                                        grants.MARIADB)
    assert "GRANT CREATE TEMPORARY TABLES ON `school\\_db`.* TO `ops_worker_role`" in statements
    inspector = grants.role_grants("schema_inspector", DB, grants.MARIADB)
    assert grants.Grant("`ops\\_scratch\\_%`.*", "ALL PRIVILEGES") in inspector


def test_a_broader_grant_makes_a_narrower_one_redundant():
    admin = grants.role_grants("schema_admin", DB, grants.MARIADB)
    assert all(g.scope.endswith(".*") for g in admin), admin  # no table grant beside db.*


def test_a_password_is_quoted_as_an_sql_string():
    names = grants.accounts("billing", "ops_", "localhost")
    statements = grants.role_statements(names, DB, grants.MARIADB, password="it's\\x")
    assert ("CREATE USER IF NOT EXISTS `ops_billing`@`localhost` IDENTIFIED BY 'it''s\\\\x'"
            in statements)


MARIADB_SHOW_GRANTS = [
    "GRANT `t_worker_role` TO `t_worker`@`%`",
    "GRANT USAGE ON *.* TO `t_worker`@`%` IDENTIFIED BY PASSWORD '*B69027D44F6E5EDC07F1'",
    "GRANT DELETE ON `school_db`.`invoices` TO `t_worker`@`%`",
    "SET DEFAULT ROLE `t_worker_role` FOR `t_worker`@`%`",
]
MARIADB_ROLE_GRANTS = [
    "GRANT PROCESS, SLAVE MONITOR ON *.* TO `t_worker_role`",
    "GRANT SELECT, CREATE TEMPORARY TABLES ON `school\\_db`.* TO `t_worker_role`",
    "GRANT SELECT (`Host`, `User`) ON `mysql`.`db` TO `t_worker_role`",
    "GRANT ALL PRIVILEGES ON `ops\\_scratch\\_%`.* TO `t_worker_role` WITH GRANT OPTION",
]
MYSQL_SHOW_GRANTS = [
    "GRANT USAGE ON *.* TO `u`@`%`",
    "GRANT REPLICATION CLIENT ON *.* TO `u`@`%`",
    "GRANT SELECT, INSERT, UPDATE ON `school_db`.`ops_job_runs` TO `u`@`%`",
    "GRANT `ops_monitor_role`@`%`,`other`@`%` TO `u`@`%`",
]


def test_show_grants_lines_are_read_into_privileges_and_roles():
    user = grants.parse_show_grants(MARIADB_SHOW_GRANTS)
    assert user.roles == ["t_worker_role"]
    assert user.grants == {grants.Grant("`school_db`.`invoices`", "DELETE")}
    role = grants.parse_show_grants(MARIADB_ROLE_GRANTS)
    assert role.grants == {
        grants.Grant("*.*", "PROCESS"), grants.Grant("*.*", "SLAVE MONITOR"),
        grants.Grant("`school\\_db`.*", "SELECT"),
        grants.Grant("`school\\_db`.*", "CREATE TEMPORARY TABLES"),
        grants.Grant("`mysql`.`db`", "SELECT (`Host`, `User`)"),
        grants.Grant("`ops\\_scratch\\_%`.*", "ALL PRIVILEGES"),
        grants.Grant("`ops\\_scratch\\_%`.*", "GRANT OPTION")}
    mysql = grants.parse_show_grants(MYSQL_SHOW_GRANTS)
    assert mysql.roles == ["ops_monitor_role", "other"]
    assert grants.Grant("*.*", "REPLICATION CLIENT") in mysql.grants
    assert len(mysql.grants) == 4


def test_compare_names_what_is_missing_and_what_is_beyond():
    expected = grants.role_grants("device_cleanup", DB, grants.MARIADB)
    update = grants.Grant(f"`{DB}`.`notification_devices`", "UPDATE")
    extra = grants.Grant(f"`{DB}`.`invoices`", "DELETE")
    report = grants.compare(expected, (set(expected) - {update}) | {extra})
    assert (report.missing, report.beyond) == ((update,), (extra,))
    assert grants.compare(expected, expected).matches
    # A broader grant gives what a narrower one asks for, and is itself beyond the role.
    everything = grants.compare(expected, {grants.Grant("*.*", "ALL PRIVILEGES")})
    assert everything.missing == () and len(everything.beyond) == 1
    like = grants.compare(expected, {grants.Grant("`school\\_db`.*", "SELECT")})
    assert {g.privilege for g in like.missing} == {"UPDATE", "INSERT"}


def test_options_are_checked_before_connecting(tmp_path):
    existing = tmp_path / "passwords.env"
    existing.write_text("")
    assert validate((), "%", "ops_", None, None, execute=True, environ={}) == [
        "--execute needs each new user's password: set "
        + ", ".join(f"OPS_DB_PASSWORD_{r.upper()}" for r in grants.created_roles())
        + ", or give --password-file FILE to have them generated there"]
    assert validate(("monitor",), "%", "ops_", None, None, execute=True,
                    environ={"OPS_DB_PASSWORD_MONITOR": "x"}) == []
    assert "it exists already" in validate((), "%", "ops_", None, str(existing), True, {})[0]
    assert validate((), "%", "ops_", "ops_worker", None, execute=True) == [
        "--check changes nothing: leave out --execute"]
    assert "say which role" in validate((), "%", "ops_", "someone", None, False)[0]
    problems = validate((), "a'b", "my-prefix", None, None, False)
    assert len(problems) == 2 and "--prefix" in problems[0] and "--user-host" in problems[1]
    assert "longer than 32" in validate((), "%", "a_very_long_prefix_", None, None, False)[0]
    assert role_of_user("ops_worker", "ops_", None) == "worker"
    assert role_of_user("ops_administrator", "ops_", None) is None


class DriverError(Exception):
    """What PyMySQL raises: (code, message)."""


def wrapped(code: int, message: str) -> OperationalError:
    return OperationalError("SELECT 1", {}, DriverError(code, message))


@pytest.mark.parametrize("code, message, words", [
    (1142, "UPDATE command denied to user 'ops_monitor'@'10.0.0.7' for table "
           "`school`.`notification_devices`",
     "the database user 'ops_monitor'@'10.0.0.7' lacks the UPDATE privilege on table "
     "notification_devices (error 1142)"),
    (1142, "DROP command denied to user 'u'@'%' for table 'invoices'",  # MySQL 8's quoting
     "the database user 'u'@'%' lacks the DROP privilege on table invoices (error 1142)"),
    (1143, "SELECT command denied to user 'u'@'h' for column 'amount_minor' in table 'invoices'",
     "the database user 'u'@'h' lacks the SELECT privilege on column amount_minor of table "
     "invoices (error 1143)"),
    (1044, "Access denied for user 'u'@'%' to database 'school'",
     "the database user 'u'@'%' has no privilege on database school (error 1044)"),
    (1227, "Access denied; you need (at least one of) the PROCESS privilege(s) for this "
           "operation", "the database user lacks the PROCESS privilege (error 1227)"),
])
def test_a_privilege_error_is_one_line_in_words(code, message, words):
    error = wrapped(code, message)
    assert privilege_problem(error) == words
    assert describe_db_error(error) == words


def test_other_errors_are_no_privilege_problem():
    assert privilege_problem(wrapped(1213, "Deadlock found")) is None
    assert describe_db_error(wrapped(1213, "Deadlock found")) == "(1213) Deadlock found"


def test_on_sqlite_the_statements_print_for_a_named_server_and_database(tmp_path):
    env = tool_env(sqlite_database(tmp_path), tmp_path)
    done = run_cli("manage_db_users", "--user-host", "10.0.0.%", "--for-server", "mysql",
                   "--database", "school", "--role", "exporter", env=env)
    assert done.returncode == 0, done.stderr
    assert "GRANT PROCESS ON *.* TO `ops_exporter_role`;" in done.stdout
    assert "SET DEFAULT ROLE `ops_exporter_role` TO `ops_exporter`@`10.0.0.%`;" in done.stdout
    refused = run_cli("manage_db_users", "--user-host", "%", env=env)
    assert refused.returncode == 2
    assert "this database is SQLite" in refused.stderr


def test_an_execute_without_passwords_is_refused_before_connecting(tmp_path):
    env = tool_env("mysql+pymysql://root@127.0.0.1:1/nowhere", tmp_path)
    env.pop("OPS_DB_PASSWORD_MONITOR", None)
    done = run_cli("manage_db_users", "--user-host", "%", "--role", "monitor", "--execute",
                   env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: --execute needs each new user's password: set OPS_DB_PASSWORD_MONITOR, or "
        "give --password-file FILE to have them generated there")
