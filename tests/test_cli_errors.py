"""Expected failures are one line and an exit code; passwords never leave the process; settings
come from flag > environment > config file > system_settings table > default."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import make_url

from ops_lib.cli import read_table_settings
from ops_lib.errors import ConfigError
from ops_lib.schema import ops_job_runs, system_settings
from ops_lib.settings import SETTINGS, load_settings
from tests.conftest import MYSQL_SERVER_URL, REPO, run_cli, tool_env

PASSWORD = "S3cretPw"
UNREACHABLE = f"mysql+pymysql://root:{PASSWORD}@127.0.0.1:1/x"


def assert_one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    return lines[0]


def test_an_unreachable_database_gives_one_line_and_exit_1(tmp_path):
    log_file = tmp_path / "logs" / "run.log"
    done = run_cli("manage_schema", "create", "--database-url", UNREACHABLE,
                   "--log-file", str(log_file), env=tool_env("sqlite://", tmp_path))
    assert done.returncode == 1
    line = assert_one_error_line(done.stderr)
    assert "cannot use the database at mysql+pymysql://root:***@127.0.0.1:1/x" in line
    assert "(2003)" in line
    assert done.stdout == ""
    # Task Scheduler keeps no stderr: the failure is in the log file too.
    logged = log_file.read_text()
    assert "ERROR manage_schema" in logged and "cannot use the database" in logged
    assert PASSWORD not in done.stdout + done.stderr + logged


def test_with_debug_an_unreachable_database_shows_the_traceback_without_the_password(tmp_path):
    log_file = tmp_path / "run.log"
    env = tool_env(UNREACHABLE, tmp_path)  # from the environment this time
    done = run_cli("manage_schema", "create", "--debug", "--log-file", str(log_file), env=env)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "DatabaseUnavailable" in done.stderr and "OperationalError" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot use the database")
    assert PASSWORD not in done.stdout + done.stderr + log_file.read_text()


def test_a_log_file_that_cannot_be_written_is_bad_input_not_a_traceback(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    done = run_cli("manage_schema", "create", "--log-file", str(blocker / "run.log"),
                   env=tool_env(f"sqlite:///{tmp_path / 'ops.db'}", tmp_path))
    assert done.returncode == 2
    assert "log file" in assert_one_error_line(done.stderr)


def test_an_sqlite_file_that_cannot_be_created_gives_one_line_and_exit_1(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    done = run_cli("manage_schema", "create", "--execute",  # only create --execute makes a file
                   env=tool_env(f"sqlite:///{blocker / 'sub' / 'ops.db'}", tmp_path))
    assert done.returncode == 1
    assert "cannot use the database at sqlite:///" in assert_one_error_line(done.stderr)


def test_bad_settings_are_all_reported_at_once_with_exit_2(tmp_path):
    env = tool_env(f"mysql+pymysql://root:{PASSWORD}@127.0.0.1:notaport/x", tmp_path,
                   OPS_WORKER_MAX_ATTEMPTS="abc", OPS_SMTP_PORT="-5")
    done = run_cli("run_background_workers", "1", env=env)  # a tool that uses all three
    assert done.returncode == 2
    lines = sorted(done.stderr.strip().splitlines())  # one line per problem, all of them
    assert lines == [
        "error: OPS_DATABASE_URL database_url: not an SQLAlchemy URL "
        "(dialect+driver://user:pass@host/db)",
        "error: OPS_SMTP_PORT smtp_port: must be more than 0, got -5",
        "error: OPS_WORKER_MAX_ATTEMPTS worker_max_attempts: expected a whole number, got 'abc'",
    ]
    assert PASSWORD not in done.stdout + done.stderr


def test_a_bad_value_in_the_settings_table_is_bad_input(db, tmp_path):
    with db.begin() as conn:
        conn.execute(insert(system_settings).values(name="worker_max_attempts", value="many"))
    done = run_cli("run_background_workers", "1", env=tool_env(db.url, tmp_path))
    assert done.returncode == 2
    assert "system_settings.worker_max_attempts: expected a whole number, got 'many'" in \
        done.stderr


@pytest.fixture
def user_with_password(mariadb_url):
    """A MariaDB login with a password, allowed on the scratch database only."""
    user, password = f"ops_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex[:12]}"
    database = mariadb_url.rsplit("/", 1)[1]
    server = create_engine(MYSQL_SERVER_URL)
    hosts = ("localhost", "127.0.0.1", "%%")  # '%' doubled: PyMySQL formats the statement
    with server.begin() as conn:
        for host in hosts:
            login = f"'{user}'@'{host}'"
            conn.exec_driver_sql(f"CREATE USER {login} IDENTIFIED BY '{password}'")
            conn.exec_driver_sql(f"GRANT ALL ON `{database}`.* TO {login}")
    url = make_url(mariadb_url).set(username=user, password=password) \
        .render_as_string(hide_password=False)
    yield url, password
    with server.begin() as conn:
        for host in hosts:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'{host}'")
    server.dispose()


@pytest.mark.mariadb
def test_a_password_never_appears_in_output_logs_or_ledger_of_successful_runs(
        user_with_password, mariadb_url, tmp_path):
    url, password = user_with_password
    log_file = tmp_path / "run.log"
    outputs = []
    for args, env in [
        (["manage_schema", "create", "--database-url", url, "--debug"],
         tool_env("sqlite://", tmp_path)),
        (["generate_synthetic_load", "--institutions", "1", "--students-per-institution", "2",
          "--scans", "5", "--execute", "--json"], tool_env(url, tmp_path)),
        (["generate_synthetic_load", "--scans", "1", "--database-url", url],
         tool_env("sqlite://", tmp_path)),
    ]:
        done = run_cli(*args, "--log-file", str(log_file), env=env)
        assert done.returncode == 0, done.stderr
        outputs += [done.stdout, done.stderr]
    logged = log_file.read_text()
    assert logged.count(" INFO ") >= 6
    assert f"://{make_url(url).username}:***@" in logged  # the URL is shown, with the password hidden
    engine = create_engine(mariadb_url)
    with engine.connect() as conn:
        ledger = conn.execute(select(ops_job_runs.c.args, ops_job_runs.c.error)).all()
    engine.dispose()
    assert len(ledger) == 3
    assert '"database_url": "mysql+pymysql://' in ledger[0].args
    for text in outputs + [logged] + [str(tuple(row)) for row in ledger]:
        assert password not in text


@pytest.mark.mariadb
def test_a_refused_login_gives_one_line_without_the_password(user_with_password, tmp_path):
    url, password = user_with_password
    wrong = url.replace(password, "WrongPw-123")
    done = run_cli("manage_schema", "create", env=tool_env(wrong, tmp_path))
    assert done.returncode == 1
    line = assert_one_error_line(done.stderr)
    assert "(1045) Access denied" in line
    assert "WrongPw-123" not in done.stderr and password not in done.stderr


# Settings precedence: flag > environment > config file > system_settings table > default.

def config_file(tmp_path, **values) -> str:
    path = tmp_path / "ops_toolkit.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return str(path)


def test_each_source_wins_over_the_ones_below_it(tmp_path):
    name = "worker_lease_seconds"
    env = {"OPS_WORKER_LEASE_SECONDS": "20", "OPS_CONFIG": config_file(tmp_path, **{name: 30})}
    table = {name: "40"}

    chosen = load_settings({name: 10}, env).with_table(table)
    assert (chosen.worker_lease_seconds, chosen.source(name)) == (10, "flag")

    chosen = load_settings({}, env).with_table(table)
    assert (chosen.worker_lease_seconds, chosen.source(name)) == (20, "OPS_WORKER_LEASE_SECONDS")

    chosen = load_settings({}, {"OPS_CONFIG": env["OPS_CONFIG"]}).with_table(table)
    assert chosen.worker_lease_seconds == 30
    assert chosen.source(name).startswith("config file ")

    chosen = load_settings({}, {}).with_table(table)
    assert (chosen.worker_lease_seconds, chosen.source(name)) == (40, "system_settings")

    chosen = load_settings({}, {}).with_table({})
    assert (chosen.worker_lease_seconds, chosen.source(name)) == \
        (SETTINGS[name].default, "default")


def test_the_settings_table_never_sets_connections_or_secrets(tmp_path):
    table = {"database_url": "sqlite:///elsewhere.db", "smtp_password": "x",
             "lock_dir": "/elsewhere", "no_such_setting": "1", "billing_grace_days": "3"}
    chosen = load_settings({}, {}).with_table(table)
    assert chosen.database_url == SETTINGS["database_url"].default
    assert chosen.smtp_password is None
    assert chosen.lock_dir == SETTINGS["lock_dir"].default
    assert chosen.billing_grace_days == 3


def test_a_config_file_with_an_unknown_setting_and_a_bad_value_reports_both(tmp_path):
    path = config_file(tmp_path, worker_lease_seconds="soon", worker_lease_secs=5)
    with pytest.raises(ConfigError) as raised:
        load_settings({}, {"OPS_CONFIG": path})
    assert len(raised.value.problems) == 2
    assert "unknown setting 'worker_lease_secs'" in str(raised.value)
    assert "worker_lease_seconds: expected a whole number, got 'soon'" in str(raised.value)


def test_table_settings_are_read_from_the_real_table(db):
    with db.begin() as conn:
        conn.execute(insert(system_settings), [
            {"name": "notifications_retention_days", "value": "60"},
            {"name": "reminder_offsets_days", "value": "-5,0,5"},
        ])
    chosen = load_settings({}, {"OPS_NOTIFICATIONS_RETENTION_DAYS": "45"}) \
        .with_table(read_table_settings(db))
    assert chosen.notifications_retention_days == 45  # the environment wins over the table
    assert chosen.reminder_offsets_days == (-5, 0, 5)
    assert chosen.source("reminder_offsets_days") == "system_settings"


def test_settings_shown_to_people_hide_the_password():
    chosen = load_settings({"database_url": UNREACHABLE}, {"OPS_SMTP_PASSWORD": "mail-pw"})
    shown = chosen.as_dict()
    assert shown["database_url"] == "mysql+pymysql://root:***@127.0.0.1:1/x"
    assert shown["smtp_password"] == "***"
    assert PASSWORD not in repr(shown)


def test_with_json_a_failed_run_still_prints_one_json_object(tmp_path):
    """Regression: --json printed nothing on stdout when the run failed."""
    done = run_cli("manage_schema", "create", "--json", "--database-url", UNREACHABLE,
                   env=tool_env("sqlite://", tmp_path))
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert (result["status"], result["exit_code"], result["stop_reason"]) == \
        ("failed", 1, "error")
    assert result["error"].startswith("cannot use the database at mysql+pymysql://root:***@")
    assert PASSWORD not in done.stdout

    bad = run_cli("manage_schema", "create", "--json",
                  env=tool_env("sqlite://", tmp_path, OPS_SMTP_PORT="x"))
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["exit_code"] == 2
    assert "smtp_port" in json.loads(bad.stdout)["error"]


def test_a_database_without_the_schema_gives_one_line_naming_the_fix(tmp_path):
    (tmp_path / "empty.db").touch()  # an SQLite file that does not exist is another error
    done = run_cli("generate_synthetic_load", env=tool_env(f"sqlite:///{tmp_path / 'empty.db'}",
                                                             tmp_path))
    assert done.returncode == 1
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in done.stderr
    assert "cannot write the run ledger (ops_job_runs)" in line
    assert "python tools/manage_schema.py create --execute" in line


# Usage errors: one line on stderr, exit 2, and under --json the object a failed run prints.

TOOLS = sorted(p.stem for p in (REPO / "tools").glob("*.py"))

USAGE_ERRORS = [  # (tool, arguments, a fragment the one line must contain)
    ("cleanup_stale_devices", ["-5"], "'-5'"),
    ("run_background_workers", ["-5"], "'-5'"),
    ("cleanup_stale_devices", ["abc"], "'abc' is not a valid integer"),
    ("archive_hot_path_data", ["abc"], "'abc' is not a valid integer"),
    ("manage_schema", ["create", "--bogus"], "No such option '--bogus'"),
    ("run_billing_jobs", ["--bogus"], "No such option '--bogus'"),
    ("run_billing_jobs", ["--as-of", "2026-13-01"], "'2026-13-01' does not match"),
    ("manage_dead_letters", [], "Missing argument"),
    ("manage_schema", [], "Missing argument"),
]


def usage_error_env(tmp_path) -> dict:
    return tool_env(f"sqlite:///{tmp_path / 'never' / 'ops.db'}", tmp_path)


@pytest.mark.parametrize("tool, args, fragment", USAGE_ERRORS)
def test_a_usage_error_is_one_error_line_with_exit_2_and_nothing_on_stdout(tmp_path, tool, args,
                                                                         fragment):
    done = run_cli(tool, *args, env=usage_error_env(tmp_path))
    assert done.returncode == 2, done.stderr
    line = assert_one_error_line(done.stderr)
    assert fragment in line
    assert f"(see {tool}.py --help)" in line
    assert done.stdout == ""
    assert not (tmp_path / "never").exists()  # nothing was created, nothing connected


@pytest.mark.parametrize("tool, args, fragment", USAGE_ERRORS)
def test_with_json_a_usage_error_prints_the_failed_run_object(tmp_path, tool, args, fragment):
    done = run_cli(tool, *args, "--json", env=usage_error_env(tmp_path))
    assert done.returncode == 2, done.stderr
    line = assert_one_error_line(done.stderr)
    result = json.loads(done.stdout)
    assert result == {
        "tool": tool, "run_id": None, "dry_run": True, "status": "failed", "stop_reason": "error",
        "exit_code": 2, "counts": {}, "sections": {}, "notes": [], "statements": [],
        "timings": {}, "error": line.removeprefix("error: "),
    }
    assert fragment in result["error"]


# Nagios-style checks: a usage error is UNKNOWN (3), not 2.
USAGE_EXIT = {"queue_health_summary": 3}


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_reports_an_unknown_option_as_one_line_and_one_json_object(tmp_path, tool):
    done = run_cli(tool, "--no-such-flag", "--execute", "--json", env=usage_error_env(tmp_path))
    expected = USAGE_EXIT.get(tool, 2)
    assert done.returncode == expected, done.stderr
    assert "No such option '--no-such-flag'" in assert_one_error_line(done.stderr)
    result = json.loads(done.stdout)
    assert (result["tool"], result["dry_run"], result["exit_code"]) == (tool, False, expected)


def test_every_bad_argument_click_can_see_is_reported_in_the_one_line(tmp_path):
    done = run_cli("archive_hot_path_data", "0", "--sleep", "soon", "--max-runtime", "-1",
                   env=usage_error_env(tmp_path))
    assert done.returncode == 2
    line = assert_one_error_line(done.stderr)
    assert "'--sleep': 'soon' is not a valid float" in line
    assert "'--max-runtime': -1.0 is not in the range" in line
    assert "'[BATCH]': 0 is not in the range" in line


# Option problems are found before connecting: no connection, no ledger row.

def test_reset_without_confirm_is_refused_before_connecting_to_the_database(tmp_path):
    """Regression: it connected (exit 1, "cannot use the database") before checking --confirm."""
    done = run_cli("manage_schema", "reset", "--execute", "--database-url", UNREACHABLE,
                   env=tool_env("sqlite://", tmp_path))
    assert done.returncode == 2, done.stderr
    line = assert_one_error_line(done.stderr)
    assert "reset needs --confirm with the database name typed again ('x')" in line


def test_reset_without_confirm_writes_no_ledger_row(db, tmp_path):
    """Regression: the refused reset left a failed row in ops_job_runs."""
    def ledger_rows():
        with db.begin(write=False) as conn:
            return sorted(tuple(r) for r in conn.execute(select(ops_job_runs)).all())

    before = ledger_rows()
    for extra in ([], ["--confirm", "some_other_db"]):
        done = run_cli("manage_schema", "reset", "--execute", *extra, "--json",
                       env=tool_env(db.url, tmp_path))
        assert done.returncode == 2, done.stderr
        assert "reset needs --confirm" in assert_one_error_line(done.stderr)
        assert json.loads(done.stdout)["exit_code"] == 2
        assert ledger_rows() == before
