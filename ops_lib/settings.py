"""Settings: one registry of every setting, its type, default and where it may come from.

Precedence, highest first (docs/configuration.md):
  1. a command-line flag (`--database-url`, ...), where the tool has one;
  2. the environment: `OPS_<NAME>` (for example `OPS_NOTIFICATIONS_RETENTION_DAYS=60`);
  3. the config file: `OPS_CONFIG`, else `ops_toolkit.toml` in the repository root, if present
     (TOML, top-level `name = value` pairs);
  4. the `system_settings` table (business settings only: retention, grace, thresholds);
  5. the built-in default.

Connection settings and secrets never come from the table. Everything is parsed and checked before
the tool connects, and every problem is reported at once. A tool refuses to run only over the
settings it uses (`uses`, from ops_lib/catalog.py); a bad value of any other setting, or an
`OPS_*` environment name that is no setting, is a warning and the bad value is not used.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

from sqlalchemy.engine import make_url

from .errors import ConfigError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VAR_DIR = REPO_ROOT / "var"
DEFAULT_DATABASE_URL = f"sqlite:///{DEFAULT_VAR_DIR / 'ops_toolkit.db'}"


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None


def _non_negative_int(value: Any) -> int:
    number = _parse_int(value)
    if number < 0:
        raise ValueError(f"must be 0 or more, got {number}")
    return number


def _positive_int(value: Any) -> int:
    number = _parse_int(value)
    if number <= 0:
        raise ValueError(f"must be more than 0, got {number}")
    return number


# A worker process's lanes share one interpreter lock: beyond a few, run more processes instead.
MAX_WORKER_THREADS = 8


def _worker_threads(value: Any) -> int | None:
    text = str(value).strip()
    if not text:
        return None
    number = _parse_int(text)
    if not 1 <= number <= MAX_WORKER_THREADS:
        raise ValueError(f"expected 1 to {MAX_WORKER_THREADS}, got {number}")
    return number


def _percent(value: Any) -> float:
    try:
        number = float(str(value).strip().removesuffix("%"))
    except ValueError:
        raise ValueError(f"expected a percentage from 0 to 100, got {value!r}") from None
    if not 0 <= number <= 100:
        raise ValueError(f"expected a percentage from 0 to 100, got {value!r}")
    return number


def _parse_str(value: Any) -> str:
    return str(value)


def _optional_str(value: Any) -> str | None:
    text = str(value).strip()
    return text or None


def _parse_database_url(value: Any) -> str:
    text = str(value).strip()
    try:
        url = make_url(text)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with the URL in it.
        raise ValueError("not an SQLAlchemy URL (dialect+driver://user:pass@host/db)") from exc
    if url.get_backend_name() not in ("sqlite", "mysql", "mariadb"):
        raise ValueError(f"unsupported database {url.get_backend_name()!r}; use mysql or sqlite")
    if url.host and "@" in url.host:
        # make_url split at the first '@': the rest of the password would show as the host.
        scheme, _, rest = text.partition("://")
        user = rest.rpartition("@")[0].split(":", 1)[0]
        host = rest.rpartition("@")[2]
        raise ValueError(f"the password holds an unencoded '@': write it as %40 "
                         f"({scheme}://{user}:<password, @ as %40>@{host})")
    if url.get_backend_name() != "sqlite" and not url.database:
        raise ValueError(f"no database name: end the URL with /<database>, as in "
                         f"{mask_url(text).rstrip('/')}/platform")
    return text


DB_DRIVERS = ("pymysql", "mysqlclient")


def _parse_db_driver(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in DB_DRIVERS:
        raise ValueError(f"expected one of {', '.join(DB_DRIVERS)}, got {value!r}")
    return text


def _optional_database_url(value: Any) -> str | None:
    return _parse_database_url(value) if str(value).strip() else None


def _log_format(value: Any) -> str:
    from .logfile import LOG_FORMATS

    text = str(value).strip().lower()
    if text not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return text


def _parse_clock(value: Any) -> str:
    text = str(value).strip()
    dt.datetime.strptime(text, "%H:%M")
    return text


def _parse_int_list(value: Any) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(_parse_int(v) for v in value)
    return tuple(_parse_int(part) for part in str(value).split(",") if part.strip())


EXPORT_READERS = ("auto", "connectorx", "pymysql")


def _parse_export_reader(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in EXPORT_READERS:
        raise ValueError(f"expected one of {', '.join(EXPORT_READERS)}, got {value!r}")
    return text


def _optional_job_list(value: Any) -> tuple[str, ...]:
    from .schedule import SCHEDULE

    optional = [job.tool for job in SCHEDULE if job.optional]
    names = value if isinstance(value, (list, tuple)) else str(value).split(",")
    chosen = tuple(name.strip() for name in names if str(name).strip())
    unknown = [name for name in chosen if name not in optional]
    if unknown:
        raise ValueError(f"not an optional job of the schedule: {', '.join(unknown)} "
                         f"(optional jobs: {', '.join(optional)})")
    return chosen


def _per_item(kind: str, names: Callable[[], Collection[str]], parse_value: Callable[[Any], int]):
    """A map-valued setting, `name=value,...` with `*=value` for every item not named (the flat
    registry's way to hold a value per queue or per tool); unknown names are errors that name
    the closest known one."""

    def parse(value: Any) -> dict[str, int]:
        if isinstance(value, dict):
            pairs = [(str(k), v) for k, v in value.items()]
        else:
            pairs = []
            for part in str(value).split(","):
                if not part.strip():
                    continue
                name, sep, number = part.partition("=")
                if not sep:
                    raise ValueError(f"expected {kind}=value pairs separated by commas "
                                     f"(`*` for every other {kind}), got {part.strip()!r}")
                pairs.append((name.strip(), number))
        known = set(names())
        parsed: dict[str, int] = {}
        problems = []
        for name, number in pairs:
            if name != "*" and name not in known:
                problems.append(f"unknown {kind} {name!r}{_did_you_mean(name, known)}")
                continue
            try:
                parsed[name] = parse_value(number)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return parsed

    return parse


def _queue_names() -> Collection[str]:
    from .queue import QUEUES

    return (*QUEUES, "dbjobs")  # and the DB jobs stage (ops_lib/jobs/db_jobs/figures.py)


def _scheduled_tools() -> Collection[str]:
    from .schedule import BY_TOOL

    return BY_TOOL


def per_item(values: Mapping[str, int], name: str, default: int | None = None) -> int | None:
    """The value of a map-valued setting for `name`: its own, else `*`'s, else `default`."""
    return values.get(name, values.get("*", default))


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    from_table: bool = False
    secret: bool = False

    @property
    def env_var(self) -> str:
        return f"OPS_{self.name.upper()}"


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        # Connections and files: environment, config file or flag only.
        Setting("database_url", DEFAULT_DATABASE_URL, _parse_database_url,
                "SQLAlchemy URL of the platform database", secret=True),
        Setting("db_driver", "pymysql", _parse_db_driver,
                "MySQL/MariaDB driver when the URL names none (mysql://): pymysql, or "
                "mysqlclient (C, the [fast] extra); a URL's own (mysql+mysqldb://) wins"),
        Setting("log_file", None, _optional_str,
                "also append log lines to this file (Task Scheduler captures no output); "
                "{date} in it is replaced by the UTC date, a file a day"),
        Setting("log_format", "text", _log_format,
                "text lines, or json: one JSON object a line with the run id"),
        Setting("outbox_dir", str(DEFAULT_VAR_DIR / "outbox"), _parse_str,
                "folder for .eml / push JSON lines when SMTP / Firebase is not configured"),
        Setting("lock_dir", str(DEFAULT_VAR_DIR / "locks"), _parse_str,
                "folder of run-lock files for an in-memory SQLite database "
                "(a file database keeps its locks beside it)"),
        Setting("smtp_host", None, _optional_str, "SMTP server; none = write .eml to the outbox"),
        Setting("smtp_port", 25, _positive_int, "SMTP port"),
        Setting("smtp_user", None, _optional_str, "SMTP login"),
        Setting("smtp_password", None, _optional_str, "SMTP password", secret=True),
        Setting("smtp_starttls", False, _parse_bool, "use STARTTLS"),
        Setting("smtp_from", "ops-toolkit@localhost", _parse_str, "sender address"),
        Setting("smtp_timeout_seconds", 30, _positive_int, "SMTP connect/send timeout"),
        Setting("firebase_credentials", None, _optional_str,
                "service-account JSON file ('anonymous' for an emulator); none = outbox"),
        Setting("firebase_project_id", None, _optional_str, "Firebase project id"),
        Setting("fcm_endpoint", None, _optional_str,
                "FCM send URL template with {0} for the project (an emulator or proxy)"),
        Setting("alert_email", None, _optional_str, "comma-separated recipients of failure mail"),
        Setting("alert_ping_url", None, _optional_str,
                "healthchecks-style URL: pinged at start (/start), success, failure (/fail)"),
        Setting("alert_timeout_seconds", 10, _positive_int, "time box of one alert"),
        # Workers.
        Setting("worker_lease_seconds", 600, _positive_int,
                "how long a claim is held before another run may recover the row", True),
        Setting("worker_max_attempts", 5, _positive_int,
                "attempts before a queue row is dead-lettered (status failed)", True),
        Setting("worker_backoff_seconds", 30, _positive_int, "first retry delay", True),
        Setting("worker_backoff_cap_seconds", 3600, _positive_int, "longest retry delay", True),
        Setting("worker_threads", None, _worker_threads,
                f"lanes (threads) of one worker process, 1 to {MAX_WORKER_THREADS}, each with its "
                "own connection; none: 2 on MySQL/MariaDB, 1 on SQLite (one writer at a time)"),
        Setting("scan_late_after", "09:00", _parse_clock,
                "local time after which a first scan is 'late' (institutions.late_after wins)",
                True),
        Setting("push_batch_size", 500, _positive_int, "messages per FCM send_each call", True),
        Setting("dead_letter_retention_days", 30, _positive_int,
                "dead-lettered rows older than this are pruned by the dead-letter tool", True),
        # Archive and cleanup.
        Setting("notifications_retention_days", 90, _positive_int, "keep notifications", True),
        Setting("audit_logs_retention_days", 365, _positive_int, "keep audit logs", True),
        Setting("payments_retention_days", 730, _positive_int, "keep payments", True),
        Setting("attendance_retention_days", 400, _positive_int,
                "mark attendance records archived after", True),
        Setting("stale_device_days", 270, _positive_int,
                "deactivate device tokens not seen for longer (Firebase's expiry)", True),
        Setting("replica_database_url", None, _optional_database_url,
                "SQLAlchemy URL of a read replica whose lag --max-replica-lag watches "
                "(none: the lag the database server itself reports)", secret=True),
        Setting("validation_target_url", None, _optional_database_url,
                "SQLAlchemy URL of the copy shadow_reporting_validation compares with the "
                "primary: a read replica or a warehouse copy (none: replica_database_url)",
                secret=True),
        # Warehouse export (ops_lib/jobs/warehouse_export).
        Setting("export_dir", str(DEFAULT_VAR_DIR / "exports"), _parse_str,
                "folder of the warehouse export's files, one sub-folder per table"),
        Setting("export_lag_seconds", 300, _non_negative_int,
                "the export leaves rows changed in the last N seconds for its next run (a "
                "transaction stamps updated_at before it commits; covers clock skew too)"),
        Setting("export_reader", "auto", _parse_export_reader,
                "how the export reads MySQL/MariaDB rows: auto (connectorx when installed, the "
                "[fast] extra, else PyMySQL), connectorx, or pymysql"),
        # Billing.
        Setting("invoice_due_days", 10, _non_negative_int, "due date = issue date + days", True),
        Setting("billing_grace_days", 7, _non_negative_int,
                "days overdue before an invoice is blocked", True),
        Setting("reminder_offsets_days", (-3, 0, 3), _parse_int_list,
                "reminder steps, days relative to the due date (plus one at blocking)", True),
        Setting("billing_currency", "BDT", _parse_str, "currency of attendee invoices", True),
        Setting("billing_batch_size", 2000, _positive_int,
                "rows per billing transaction (invoices issued, statuses, reminders)", True),
        # Reference data.
        Setting("location_max_shrink_percent", 5, _percent,
                "import_ipemis_locations refuses a source that would deactivate more than this "
                "share of a level's active rows in its scope (--allow-shrink overrides)", True),
        # The schedule (ops_lib/schedule.py).
        Setting("optional_jobs", (), _optional_job_list,
                "optional jobs of the schedule this host runs (comma-separated tool names); "
                "queue health judges their freshness only when named here"),
        # Queue health: per queue or per tool, `name=value,...`, `*` for the others.
        Setting("health_queue_depth_warning", {"*": 10000},
                _per_item("queue", _queue_names, _positive_int),
                "due rows of a queue from which queue health says WARNING", True),
        Setting("health_queue_depth_critical", {"*": 100000},
                _per_item("queue", _queue_names, _positive_int),
                "due rows of a queue from which queue health says CRITICAL", True),
        Setting("health_queue_latency_warning_seconds", {"*": 300},
                _per_item("queue", _queue_names, _positive_int),
                "age of a queue's oldest due row from which queue health says WARNING", True),
        Setting("health_queue_latency_critical_seconds", {"*": 900},
                _per_item("queue", _queue_names, _positive_int),
                "age of a queue's oldest due row from which queue health says CRITICAL", True),
        Setting("health_grace_seconds", {},
                _per_item("tool", _scheduled_tools, _non_negative_int),
                "how late a scheduled tool may be before it is late (default: the schedule's)",
                True),
    ]
}


# `OPS_*` environment variables of the toolkit that are not settings (docs/configuration.md).
# The toolkit's own variables that are not settings: the config file's path, and the install
# folder crontab.example sets for every line (cron passes it on to each tool).
NOT_SETTINGS_ENV = ("OPS_CONFIG", "OPS_HOME")
# OPS_DB_PASSWORD_<ROLE>: the password manage_db_users.py --execute gives a role's new user.
NOT_SETTINGS_ENV_PREFIXES = ("OPS_TEST_", "OPS_BENCH_", "OPS_DB_PASSWORD_")


class Settings:
    """Resolved settings, with the source of each value and the warnings found on the way."""

    def __init__(self, values: dict[str, Any], sources: dict[str, str],
                 warnings: tuple[str, ...] = ()):
        self._values = values
        self._sources = sources
        self.warnings = warnings

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def source(self, name: str) -> str:
        return self._sources[name]

    def as_dict(self, reveal_secrets: bool = False) -> dict[str, Any]:
        shown = {}
        for name, value in self._values.items():
            if SETTINGS[name].secret and not reveal_secrets:
                value = mask_secret(name, value)
            shown[name] = value
        return shown

    def with_table(self, table_values: Mapping[str, str],
                   uses: Collection[str] | None = None) -> "Settings":
        """Fill settings still at their default from the `system_settings` table.

        A bad value of a setting in `uses` (None: every setting) is an error; of another, a
        warning, and the setting keeps its default.
        """
        values, sources, problems = dict(self._values), dict(self._sources), _Problems(uses)
        for name, raw in table_values.items():
            setting = SETTINGS.get(name)
            if setting is None or not setting.from_table or sources[name] != "default":
                continue
            try:
                values[name] = setting.parse(raw)
                sources[name] = "system_settings"
            except (ValueError, TypeError) as exc:
                problems.bad_value(name, f"system_settings.{name}: {exc}")
        problems.raise_errors()
        return Settings(values, sources, self.warnings + tuple(problems.warnings))


def mask_secret(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "database_url":
        return mask_url(value)
    return "***"


# Driver options that carry a password in a URL's query string (`...?password=...`).
SECRET_QUERY_KEYS = frozenset({"password", "passwd", "ssl_key_password"})


def mask_url(url: str) -> str:
    """The URL with its password hidden, also one given as a query option."""
    try:
        parsed = make_url(url)
        secret = {key: "hidden" for key in parsed.query if key.lower() in SECRET_QUERY_KEYS}
        return parsed.update_query_dict(secret).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


# Query parameters of a web URL whose value is a secret: their name holds one of these words,
# in any case (`?token=`, `?api_key=`, `X-Amz-Signature=`, `?sig=`, `?auth=`, `?passwd=`).
SECRET_QUERY_WORDS = ("token", "key", "secret", "signature", "sig", "password", "passwd", "pwd",
                      "auth")


def mask_http_url(url: str) -> str:
    """An http(s) URL as it may be shown and stored: the userinfo password and the values of
    secret-looking query parameters (SECRET_QUERY_WORDS) become `***`; everything else stays
    exactly as given (its %-escapes, its #fragment)."""
    from urllib.parse import unquote, urlsplit

    try:
        has_password = urlsplit(url).password is not None
    except ValueError:
        return "<unparseable URL>"
    # Cut by hand, not urlunsplit: that would drop an empty '?' or '#' the URL was given with.
    rest, hash_mark, fragment = url.partition("#")
    rest, question_mark, query = rest.partition("?")
    scheme, slashes, rest = rest.partition("//") if "//" in rest else ("", "", rest)
    netloc, slash, path = rest.partition("/")
    if has_password:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = "&".join(_mask_parameter(item, unquote) for item in query.split("&"))
    return (f"{scheme}{slashes}{netloc}{slash}{path}{question_mark}{query}"
            f"{hash_mark}{fragment}")


def _mask_parameter(item: str, unquote: Callable[[str], str]) -> str:
    name, equals, value = item.partition("=")
    secret = any(word in unquote(name).casefold() for word in SECRET_QUERY_WORDS)
    return f"{name}=***" if secret and equals and value else item


def _config_file(env: Mapping[str, str]) -> Path | None:
    explicit = env.get("OPS_CONFIG")
    if explicit:
        return Path(explicit)
    default = REPO_ROOT / "ops_toolkit.toml"
    return default if default.exists() else None


class _Problems:
    """Errors (settings the tool uses) and warnings (the others), collected to report at once."""

    def __init__(self, uses: Collection[str] | None):
        self.uses = uses
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def bad_value(self, name: str, problem: str) -> None:
        if self.uses is None or name in self.uses:
            self.errors.append(problem)
        else:
            self.warnings.append(f"{problem} (not used by this tool: ignored)")

    def raise_errors(self) -> None:
        if self.errors:
            raise ConfigError(*self.errors)


def _did_you_mean(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def unknown_environment(env: Mapping[str, str]) -> list[str]:
    """Warnings for `OPS_*` names in the environment that are no setting (typos, old names)."""
    known = {setting.env_var for setting in SETTINGS.values()}
    return [
        f"environment {name} is not a setting of the toolkit and is ignored"
        f"{_did_you_mean(name, known)}"
        for name in sorted(env)
        if name.startswith("OPS_") and name not in known and name not in NOT_SETTINGS_ENV
        and not name.startswith(NOT_SETTINGS_ENV_PREFIXES)
    ]


def load_settings(
    overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
    uses: Collection[str] | None = None,
) -> Settings:
    """Resolve every setting from flags, environment and config file; report all problems.

    `uses`: the settings the tool uses (None: all). A bad value of one of them is an error; of
    another, a warning, and that setting keeps its default.
    """
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    problems = _Problems(uses)
    problems.warnings.extend(unknown_environment(env))
    file_values: dict[str, Any] = {}
    path = _config_file(env)
    if path is not None:
        try:
            file_values = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            problems.errors.append(f"config file {path}: {exc.strerror or exc}")
        except tomllib.TOMLDecodeError as exc:
            problems.errors.append(f"config file {path}: {exc}")
        for name in file_values:
            if name not in SETTINGS:
                # The file is the toolkit's own, so every name in it is meant as a setting: the
                # closest one. A typo stops only the tools that use the setting it misspells.
                meant = difflib.get_close_matches(name, list(SETTINGS), n=1)
                line = f"config file {path}: unknown setting {name!r}{_did_you_mean(name, SETTINGS)}"
                if meant:
                    problems.bad_value(meant[0], line)
                else:
                    problems.warnings.append(line)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, setting in SETTINGS.items():
        for source, raw in (
            ("flag", overrides.get(name)),
            (setting.env_var, env.get(setting.env_var)),
            (f"config file {path}", file_values.get(name)),
        ):
            if raw is None:
                continue
            try:
                values[name] = setting.parse(raw)
                sources[name] = source
            except (ValueError, TypeError) as exc:
                problems.bad_value(name, f"{source} {name}: {exc}")
            break
        if name not in values:  # unset, or a bad value the tool does not use
            values[name] = setting.default
            sources[name] = "default"
    problems.raise_errors()
    return Settings(values, sources, tuple(problems.warnings))
