"""Every tool under its role's user on MariaDB: users made from manage_db_users.py's printed
statements, each tool run dry and with --execute; each attempt outside its grants fails with
one line, and leaves every row as it was. This is the check of ops_lib/catalog.py's table
declaration against the code: a user holds exactly the declared grants, so a table the code
touches and the declaration forgets is an error here.

Users and roles are server-wide: each module run has its own prefix, dropped at teardown.
"""

from __future__ import annotations

import os
import re
import stat
import uuid

import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from ops_lib import grants
from ops_lib.catalog import ROLES, TOOLS
from ops_lib.db import connect, describe_db_error
from ops_lib.jobs.schema_admin import create_scratch_database, drop_database
from ops_lib.jobs.db_jobs.handlers import HANDLERS
from ops_lib.schema import (
    cron_jobs,
    notification_devices,
    password_reset_codes,
    pending_registrations,
    user_sessions,
    users,
)
from ops_lib.timeutil import utcnow
from tests.conftest import (
    MYSQL_SERVER_URL,
    REPO,
    assert_unchanged,
    job_context,
    require_mariadb,
    run_cli,
    snapshot,
    tool_env,
)

# One test process for the module: its `server` (a loaded database and a user per role) is
# built once per process, so a second process would build a second one.
pytestmark = [pytest.mark.mariadb, pytest.mark.slow, pytest.mark.xdist_group("roles_server")]
LOCATIONS = str(REPO / "docs" / "examples" / "locations")
PLACEHOLDER = re.compile(r"<(OPS_DB_PASSWORD_[A-Z_]+)>")


def password_of(variable: str) -> str:
    return f"Pw-{variable.lower()}-7x"


def run_as_root(statements: list[str]) -> None:
    engine = create_engine(MYSQL_SERVER_URL)
    try:
        with engine.connect() as conn:
            cursor = conn.connection.cursor()  # no parameters: `%` in a host stays literal
            for statement in statements:
                cursor.execute(statement)
            cursor.close()
    finally:
        engine.dispose()


def drop_accounts(prefix: str) -> None:
    """Every user and role whose name starts with `prefix` (this module's only)."""
    engine = create_engine(MYSQL_SERVER_URL)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT User, Host, is_role FROM mysql.user WHERE "
                                     "LEFT(User, :n) = :prefix"),
                                {"n": len(prefix), "prefix": prefix}).all()
    finally:
        engine.dispose()
    run_as_root([f"DROP ROLE `{user}`" if is_role == "Y" else f"DROP USER `{user}`@`{host}`"
                 for user, host, is_role in rows])


class Server:
    """The test's database, loaded as root, and a user per role made from the printed SQL."""

    def __init__(self, tmp_path_factory):
        self.tmp = tmp_path_factory.mktemp("roles")
        self.name = f"ops_test_roles_{uuid.uuid4().hex[:8]}"
        self.prefix = f"t{uuid.uuid4().hex[:6]}_"
        self.root_url = create_scratch_database(MYSQL_SERVER_URL, self.name)

    def env(self, url: str, **extra: str) -> dict:
        return tool_env(url, self.tmp, OPS_EXPORT_DIR=str(self.tmp / "exports"), **extra)

    def url_of(self, role: str) -> str:
        user = f"{self.prefix}{role}"
        return make_url(self.root_url).set(
            username=user, password=password_of(f"OPS_DB_PASSWORD_{role.upper()}")) \
            .render_as_string(hide_password=False)

    def run(self, role: str | None, tool: str, *args: str) -> object:
        url = self.root_url if role is None else self.url_of(role)
        return run_cli(tool, *args, env=self.env(url))

    def snapshot(self):
        database = connect(self.root_url)
        try:
            return snapshot(database)
        finally:
            database.engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_mariadb()
    made = Server(tmp_path_factory)
    try:
        load = made.run(None, "generate_synthetic_load", "--institutions", "2",
                        "--students-per-institution", "15", "--scans", "120", "--execute")
        assert load.returncode == 0, load.stderr
        with create_engine(made.root_url).begin() as conn:  # one device the clean-up deactivates
            conn.execute(insert(notification_devices).values(
                guardian_id=conn.exec_driver_sql("SELECT MIN(id) FROM guardians").scalar(),
                token=f"stale-{uuid.uuid4().hex}", platform="android", is_active=True,
                last_seen_at=utcnow().replace(year=2000), created_at=utcnow().replace(year=2000)))
            add_due_db_jobs(conn)
        printed = made.run(None, "manage_db_users", "--user-host", "%", "--prefix", made.prefix)
        assert printed.returncode == 0, printed.stderr
        made.sql = printed.stdout
        statements = [line.rstrip(";") for line in printed.stdout.splitlines()
                      if line and not line.startswith("--")]
        run_as_root([PLACEHOLDER.sub(lambda m: f"'{password_of(m.group(1))}'", statement)
                     for statement in statements])
        yield made
    finally:
        drop_accounts(made.prefix)
        drop_database(MYSQL_SERVER_URL, made.name)


def add_due_db_jobs(conn) -> None:
    """One due job per built-in handler, each with an expired row to work on, so the worker's
    role is exercised on the DB-jobs tables too."""
    past = utcnow().replace(year=2000)
    user_id = conn.execute(insert(users).values(
        name="Role Test", mobile=f"+880{uuid.uuid4().int % 10**10:010d}", role="admin")
    ).inserted_primary_key[0]
    conn.execute(insert(password_reset_codes).values(
        user_id=user_id, code_hash="h", expires_at=past))
    conn.execute(insert(pending_registrations).values(
        mobile="+8801", name="Pending", otp_hash="h", expires_at=past))
    conn.execute(insert(user_sessions).values(
        user_id=user_id, token_hash=uuid.uuid4().hex, expires_at=past))
    conn.execute(insert(cron_jobs), [
        {"name": job_type, "job_type": job_type, "run_at": past,
         "user_id": user_id if job_type == "expire_password_reset_codes" else None}
        for job_type in HANDLERS])


def assert_ok(done) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    assert "error" not in done.stderr.lower(), done.stderr


# What each role's user runs: every tool of the role, dry and --execute where it writes.
RUNS = {
    "worker": [("manage_db_jobs", "list"), ("manage_db_jobs", "pause", "--id", "1"),
               ("run_background_workers", "200"),
               ("run_background_workers", "200", "--execute"),
               ("run_background_workers", "200", "--execute")],
    "billing": [("run_billing_jobs",), ("run_billing_jobs", "--execute")],
    "archiver": [("archive_hot_path_data",), ("archive_hot_path_data", "--execute"),
                 ("archive_hot_path_data", "--execute", "--max-replica-lag", "30")],
    "device_cleanup": [("cleanup_stale_devices",), ("cleanup_stale_devices", "--execute")],
    "schema_inspector": [("check_schema_drift",), ("generate_missing_index_sql",)],
    "exporter": [("export_operational_warehouse_batch", "attendance_records"),
                 ("export_operational_warehouse_batch", "attendance_records", "--execute"),
                 ("export_operational_warehouse_batch", "audit_logs", "--execute"),
                 ("export_operational_warehouse_batch", "attendance_rollups", "--execute")],
    "location_importer": [("import_ipemis_locations", f"{LOCATIONS}/per-level"),
                          ("import_ipemis_locations", f"{LOCATIONS}/per-level", "--execute"),
                          ("import_ipemis_locations", f"{LOCATIONS}/partial/unions.csv",
                           "--execute")],
    "scheduler": [("run_scheduler", "--check"), ("run_scheduler", "status"),
                  ("manage_schedule", "--check")],
    "schema_admin": [("manage_schema", "create"), ("manage_schema", "create", "--execute"),
                     ("manage_dead_letters", "list"),
                     ("manage_dead_letters", "retry", "--queue", "scans", "--id", "1",
                      "--execute"),
                     ("generate_synthetic_load", "--institutions", "1",
                      "--students-per-institution", "3", "--scans", "5", "--no-history",
                      "--execute")],
}


def test_every_role_and_every_tool_is_run_here():
    run_here = {tool for runs in RUNS.values() for tool, *_ in runs} | {
        "queue_health_summary", "shadow_reporting_validation", "manage_db_users"}
    assert run_here == set(TOOLS)
    assert set(RUNS) | {"monitor"} == set(grants.created_roles())
    for role, runs in RUNS.items():
        assert {tool for tool, *_ in runs} == set(grants.tools_of(role)), role


@pytest.mark.parametrize("role", sorted(RUNS))
def test_each_role_runs_its_tools_dry_and_with_execute_under_exactly_its_grants(server, role):
    for args in RUNS[role]:
        done = server.run(role, *args)
        assert_ok(done)
    if role == "worker":  # the DB jobs ran: each one-off done and deleted, its rows expired
        with create_engine(server.root_url).connect() as conn:
            assert conn.execute(text(
                "SELECT (SELECT COUNT(*) FROM cron_jobs), (SELECT COUNT(*) FROM user_sessions),"
                " (SELECT COUNT(*) FROM password_reset_codes),"
                " (SELECT COUNT(*) FROM pending_registrations WHERE status = 'pending')"
            )).one() == (0, 0, 0, 0)


def test_the_monitor_runs_its_checks_and_every_other_tools_dry_run_and_writes_only_its_ledger(
        server):
    before = server.snapshot()
    health = server.run("monitor", "queue_health_summary", "--html",
                        str(server.tmp / "status.html"))
    assert health.returncode in (0, 1, 2), health.stdout + health.stderr  # 3: could not check
    validation = server.run("monitor", "shadow_reporting_validation", "--target-url",
                            server.url_of("monitor"))
    assert validation.returncode == 0, validation.stdout + validation.stderr
    # (--allow-shrink: the importer's test may have run its partial source before this one.)
    dry_runs = [(*args, "--allow-shrink") if args[0] == "import_ipemis_locations" else args
                for role, runs in RUNS.items() if role != "schema_inspector"
                for args in runs if "--execute" not in args]
    for args in dry_runs:  # the drift check and the index preview need their scratch schemas
        assert_ok(server.run("monitor", *args))
    assert_unchanged(before, server.snapshot(), runs=2 + len(dry_runs))


def one_error_line(done) -> str:
    """The one `error:` line of a failed run (its INFO lines aside), no traceback."""
    lines = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in done.stderr
    return lines[0]


def test_a_write_by_the_monitor_fails_with_one_line_naming_the_privilege_and_table(server):
    before = server.snapshot()
    done = server.run("monitor", "cleanup_stale_devices", "--execute")
    assert done.returncode == 1
    line = one_error_line(done)
    assert re.search(f"the database user '{server.prefix}monitor'@'[^']+' lacks the UPDATE "
                     r"privilege on table notification_devices \(error 1142\)", line), line
    assert "cleanup_stale_devices runs as the device_cleanup role" in line
    assert_unchanged(before, server.snapshot())


def test_the_worker_touching_invoices_fails_with_one_line_and_writes_nothing(server):
    worker_tables = {g.scope.split(".")[1].strip("`")
                     for g in grants.role_grants("worker", server.name, grants.MARIADB)
                     if not g.scope.endswith("*")}
    before = server.snapshot()
    done = server.run("worker", "run_billing_jobs", "--execute")
    assert done.returncode == 1
    line = one_error_line(done)
    table = re.search(r"lacks the \w+ privilege on table (\w+) \(error 1142\)", line).group(1)
    assert table not in worker_tables
    assert_unchanged(before, server.snapshot())
    engine = create_engine(server.url_of("worker"))
    try:
        with engine.connect() as conn, pytest.raises(Exception) as raised:
            conn.exec_driver_sql("SELECT COUNT(*) FROM invoices")
    finally:
        engine.dispose()
    assert re.fullmatch(f"the database user '{server.prefix}worker'@'[^']+' lacks the SELECT "
                        r"privilege on table invoices \(error 1142\)",
                        describe_db_error(raised.value))


@pytest.mark.parametrize("role, refused", [
    ("schema_inspector", "DROP"),
    # The reset's plan counts every table's rows: the worker, and the monitor (never the web
    # app's users), are refused a read before the DROP.
    ("monitor", "SELECT"), ("worker", "SELECT"),
])
def test_a_drop_outside_the_schema_admin_fails_with_one_line_and_every_table_stays(
        server, role, refused):
    before = server.snapshot()
    done = server.run(role, "manage_schema", "reset", "--execute", "--confirm", server.name)
    assert done.returncode == 1
    assert f"lacks the {refused} privilege on table" in one_error_line(done)
    assert_unchanged(before, server.snapshot())


def test_a_login_with_no_privilege_on_the_database_is_unknown_to_the_monitoring_checks(server):
    user = f"{server.prefix}nogrant"
    run_as_root([f"CREATE USER `{user}`@`%` IDENTIFIED BY 'Pw-nothing-1'"])
    url = make_url(server.root_url).set(username=user, password="Pw-nothing-1") \
        .render_as_string(hide_password=False)
    done = run_cli("queue_health_summary", env=server.env(url))
    assert done.returncode == 3  # UNKNOWN: it could not check
    assert done.stdout.startswith("QUEUES UNKNOWN: cannot use the database")
    line = one_error_line(done)
    assert re.search(f"the database user '{user}'@'[^']+' has no privilege on database "
                     f"{server.name} \\(error 1044\\)", line), line
    assert "queue_health_summary runs as the monitor role" in line
    other = run_cli("cleanup_stale_devices", env=server.env(url))
    assert other.returncode == 1 and "(error 1044)" in one_error_line(other)


def test_reporting_validation_without_a_read_grant_is_unknown(server):
    done = server.run("worker", "shadow_reporting_validation", "--target-url",
                      server.url_of("worker"))
    assert done.returncode == 3  # UNKNOWN: the lag it reads first needs SLAVE MONITOR
    assert "lacks the SUPER, SLAVE MONITOR privilege (error 1227)" in one_error_line(done)


def check(server, *args: str):
    return server.run(None, "manage_db_users", "--user-host", "%", "--prefix", server.prefix,
                      "--json", *args)


def test_check_finds_nothing_missing_or_beyond_in_a_user_made_from_the_statements(server):
    import json

    from ops_lib.jobs import db_users

    # The tool once (its --check of a failing user is the next test's), then the same job
    # in-process for every role: SHOW GRANTS of real users either way, one start-up.
    done = check(server, "--check", f"{server.prefix}monitor")
    assert done.returncode == 0, done.stdout + done.stderr
    counts = json.loads(done.stdout)["counts"]
    assert counts["missing"] == counts["beyond"] == 0
    ctx = job_context(server.root_url, server.tmp, dry_run=True)
    try:
        for role in grants.created_roles():
            result = db_users.run(ctx, user_host="%", prefix=server.prefix,
                                  check_user=f"{server.prefix}{role}")
            assert (result.counts["missing"], result.counts["beyond"]) == (0, 0), role
            assert result.exit_code == 0, role
    finally:
        ctx.db.engine.dispose()


def test_check_reports_one_grant_too_few_and_one_too_many(server):
    import json

    user = f"{server.prefix}chk"
    needed = sorted(grants.role_grants("device_cleanup", server.name, grants.MARIADB))
    left_out = next(g for g in needed if g.privilege == "UPDATE")
    given = [g for g in needed if g != left_out] + [
        grants.Grant(grants.table_scope(server.name, "invoices"), "DELETE")]
    run_as_root([f"CREATE USER `{user}`@`%` IDENTIFIED BY 'Pw-check-1'",
                 *grants.grant_statements(given, f"`{user}`@`%`")])
    done = check(server, "--check", user, "--role", "device_cleanup")
    assert done.returncode == 1, done.stdout + done.stderr
    sections = json.loads(done.stdout)["sections"]
    assert sections["Missing"] == [{"privilege": "UPDATE",
                                    "on": f"`{server.name}`.`notification_devices`"}]
    assert sections["Beyond the role"] == [{"privilege": "DELETE",
                                            "on": f"`{server.name}`.`invoices`"}]


def test_execute_takes_a_password_from_the_environment_and_generates_the_other_into_a_0600_file(
        server, tmp_path):
    prefix = f"t{uuid.uuid4().hex[:6]}_"
    password_file = tmp_path / "passwords.env"
    env = server.env(server.root_url, OPS_DB_PASSWORD_MONITOR="Given-pw-42")
    try:
        done = run_cli("manage_db_users", "--user-host", "%", "--prefix", prefix,
                       "--role", "monitor", "--role", "device_cleanup", "--execute",
                       "--password-file", str(password_file), env=env)
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(os.stat(password_file).st_mode) == 0o600
        [line] = [x for x in password_file.read_text().splitlines() if not x.startswith("#")]
        variable, generated = line.split("=", 1)
        generated = generated.strip("'")
        assert variable == "OPS_DB_PASSWORD_DEVICE_CLEANUP" and len(generated) >= 24
        assert generated not in done.stdout + done.stderr
        assert "Given-pw-42" not in done.stdout + done.stderr
        for user, password, tool in [(f"{prefix}monitor", "Given-pw-42", "queue_health_summary"),
                                     (f"{prefix}device_cleanup", generated,
                                      "cleanup_stale_devices")]:
            url = make_url(server.root_url).set(username=user, password=password) \
                .render_as_string(hide_password=False)
            ran = run_cli(tool, env=server.env(url))
            assert ran.returncode in (0, 1, 2), ran.stderr
            assert "error" not in ran.stderr.lower(), ran.stderr
        again = run_cli("manage_db_users", "--user-host", "%", "--prefix", prefix, "--role",
                        "monitor", "--execute", env=env)  # existing user, the same password
        assert again.returncode == 0, again.stderr
    finally:
        drop_accounts(prefix)


def test_the_printed_statements_name_every_role_and_hide_every_password(server):
    for role in grants.created_roles():
        assert f"CREATE ROLE IF NOT EXISTS `{server.prefix}{role}_role`;" in server.sql
        assert (f"IDENTIFIED BY <OPS_DB_PASSWORD_{role.upper()}>;") in server.sql
    assert "Pw-" not in server.sql
    assert not ROLES["administrator"].created
