"""The shared command-line layer: common options, the tools' click command, and the one wrapper
that runs a job.

`ToolCommand` (`@tool_command`, `tool_main`) turns every usage error into one line, exit 2, and
the failed-run JSON object under --json.

`run_tool` is where every expected failure becomes one line and an exit code, where the run
lock, the run ledger, signals, alerts and the renderer are applied, the same way for every tool.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import click

# Only click, the standard library and these stdlib-only modules load with a tool: `--help`
# and usage errors never import SQLAlchemy, rich or the drivers (see `run_tool`).
from .errors import EXIT_FAILED, EXIT_UNKNOWN, EXIT_USAGE, BadInput, Interrupted, OpsError
from .logfile import LOG_FORMATS, AppendFileHandler, JsonFormatter, text_formatter
from .result import LOCK_HELD, JobResult

if TYPE_CHECKING:
    from .db import Database
    from .settings import Settings

log = logging.getLogger("ops")
# Why a run stopped or was skipped: logged even with --quiet, for cron mail and Task Scheduler logs.
summary = logging.getLogger("ops.summary")
EXIT_INTERRUPTED = 130

Job = Callable[..., JobResult]


def scratch_database_option(function: Callable) -> Callable:
    """--scratch-database NAME, for the tools that load schema.sql into a scratch schema."""
    return click.option(
        "--scratch-database", default=None, metavar="NAME",
        help="Load schema.sql into this database, which must not exist unless an earlier run of "
             "these checks left it (for a user who may create only one named database); "
             "default: ops_scratch_<time>_<hex>.")(function)


def common_options(writes: bool = True) -> Callable:
    """The options every tool takes, defined once; `--execute` only for tools that write."""

    def decorate(command: Callable) -> Callable:
        options = [
            click.option("--json", "json_output", is_flag=True,
                         help="Print one JSON object on stdout instead of a table."),
            click.option("--max-runtime", type=click.FloatRange(min=0, min_open=True),
                         default=None, metavar="SECONDS",
                         help="Stop claiming new work when this budget is near; finish cleanly."),
            click.option("--log-file", type=click.Path(dir_okay=False), default=None,
                         help="Also append log lines here; {date} in it is replaced by the "
                              "UTC date (env OPS_LOG_FILE)."),
            click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None,
                         help="Log lines as text (default) or one JSON object a line "
                              "(env OPS_LOG_FORMAT)."),
            click.option("--quiet", is_flag=True, help="Log warnings and errors only."),
            click.option("--debug", is_flag=True,
                         help="Log debug lines and show tracebacks of failures."),
            click.option("--database-url", default=None, metavar="URL",
                         help="SQLAlchemy URL (env OPS_DATABASE_URL; default: embedded SQLite)."),
        ]
        if writes:
            options.insert(0, click.option(
                "--execute", is_flag=True,
                help="Apply the changes. Without it the tool is a dry run that changes nothing."))
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


class _RedactSecrets(logging.Filter):
    """Belt and braces: no secret value leaves the process through a log line."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 3]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if record.exc_info and not record.exc_text:  # a traceback's text may hold one too
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            for secret in self.secrets:
                message = message.replace(secret, "***")
                if record.exc_text:
                    record.exc_text = record.exc_text.replace(secret, "***")
            record.msg, record.args = message, None
        return True


def configure_logging(tool: str, quiet: bool, debug: bool, log_file: str | None,
                      secrets: list[str], *, log_format: str = "text",
                      run_id: str | None = None) -> None:
    """Log to stderr and, with `log_file`, append to it (ops_lib/logfile.py: safe with several
    processes on one file); `log_format` "json" writes one JSON object a line with `run_id`."""
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    formatter = JsonFormatter(tool, run_id) if log_format == "json" else text_formatter(tool)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(AppendFileHandler(log_file))
    redact = _RedactSecrets(secrets)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redact)
        root.addHandler(handler)
    root.setLevel(level)
    summary.setLevel(logging.INFO)
    # Keep library chatter (SDK retries, pool) out of operators' logs unless debugging.
    for noisy in ("urllib3", "google", "firebase_admin", "filelock", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


def _secret_values(settings: Settings) -> list[str]:
    from sqlalchemy.engine import make_url

    from .settings import SETTINGS

    secrets = []
    for name, setting in SETTINGS.items():
        value = getattr(settings, name)
        if setting.secret and value:
            if name == "database_url":
                value = make_url(value).password
            secrets.append(str(value) if value else "")
    return secrets


def read_table_settings(db: Database) -> dict[str, str]:
    """Rows of `system_settings` (an absent table means none; any other error is raised)."""
    from sqlalchemy import inspect, select

    from .schema_base import system_settings

    def read(conn) -> dict[str, str]:
        if not inspect(conn).has_table(system_settings.name):
            return {}
        return dict(conn.execute(select(system_settings.c.name, system_settings.c.value)).all())

    return db.run(read, write=False, what="settings")


def tool_exit_code(code: int, failed_exit: int = EXIT_FAILED,
                   bad_input_exit: int = EXIT_USAGE) -> int:
    """A generic exit code as a tool with its own failed and bad-input exits says it. A check
    that sets its failed exit promises it for every run that did not finish: a second Ctrl-C
    (130) too."""
    interrupted = EXIT_INTERRUPTED if failed_exit == EXIT_FAILED else failed_exit
    return {EXIT_FAILED: failed_exit, EXIT_USAGE: bad_input_exit,
            EXIT_INTERRUPTED: interrupted}.get(code, code)


def run_tool(
    tool: str,
    job: Job,
    options: dict[str, Any],
    *,
    lock: bool = True,
    creates_schema: bool = False,
    validate: Callable[[Settings], list[str]] | None = None,
    setting_flags: dict[str, str] | None = None,
    failed_exit: int = EXIT_FAILED,
    bad_input_exit: int = EXIT_USAGE,
    pager: str | None = None,
    **job_args: Any,
) -> None:
    """Run a job the way every tool runs; never returns (exits with the result's code).

    Checks (queue health, reporting validation) give their findings as the result's exit code
    and set `failed_exit` (and, under the Nagios convention, `bad_input_exit`) to 3, UNKNOWN:
    a run that could not check is the only failed run, the only one that alerts.
    `pager` (a Nagios-style check's name, e.g. "QUEUES"): a run that could not check, or was
    skipped, still prints its one pager line on stdout ("QUEUES UNKNOWN: why"), exit 3.
    `setting_flags` maps a tool's own options to the settings they set (option -> setting): a
    flag is the highest source of its setting, checked like the others before connecting.
    """

    def exit_code_for(code: int) -> int:
        return tool_exit_code(code, failed_exit, bad_input_exit)

    # Imported here, not at the top: a tool's `--help` and usage errors stay free of them.
    from . import alerts
    from .db import connect
    from .ledger import RunLedger, new_run_id
    from .render import choose_mode, render
    from .runtime import Budget, RunContext, StopSignal
    from .settings import load_settings

    debug = options.get("debug", False)
    dry_run = not options.get("execute", False)
    from .catalog import settings_used

    uses = settings_used(tool)  # a bad value of another setting only warns (ops_lib/catalog.py)
    try:
        flags = {"database_url": options.get("database_url"), "log_file": options.get("log_file"),
                 "log_format": options.get("log_format")}
        flags.update({setting: options.get(option)
                      for option, setting in (setting_flags or {}).items()})
        settings = load_settings(flags, uses=uses)
        problems = validate(settings) if validate else []
        if problems:
            raise BadInput(*problems)
    except OpsError as exc:
        _fail_line(exc, debug)
        _show_failure(JobResult(tool, dry_run, status="failed", stop_reason="error",
                                error=str(exc)), options, exit_code_for(exc.exit_code), pager)
        sys.exit(exit_code_for(exc.exit_code))

    run_id = new_run_id()
    try:
        configure_logging(tool, options.get("quiet", False), debug, settings.log_file,
                          _secret_values(settings), log_format=settings.log_format,
                          run_id=run_id)
    except OSError as exc:  # an unusable --log-file is bad input, not a traceback
        problem = BadInput(f"log file {settings.log_file}: {exc.strerror or exc}")
        _fail_line(problem, debug, exc)
        _show_failure(JobResult(tool, dry_run, status="failed", stop_reason="error",
                                error=str(problem)), options, exit_code_for(problem.exit_code),
                      pager)
        sys.exit(exit_code_for(problem.exit_code))
    for warning in settings.warnings:
        log.warning("%s", warning)
    mode = choose_mode(options.get("json_output", False))
    result: JobResult | None = None
    stop = StopSignal()
    held_lock = None
    db: Database | None = None
    try:
        # Only `manage_schema.py create --execute` may create an SQLite file; its dry run plans
        # against an empty stand-in, and writes nothing.
        creating = creates_schema and job_args.get("action") == "create"
        db = connect(settings.database_url, create=creating and not dry_run,
                     plan_create=creating and dry_run, driver=settings.db_driver)
        warned = len(settings.warnings)
        settings = settings.with_table(read_table_settings(db), uses=uses)
        for warning in settings.warnings[warned:]:
            log.warning("%s", warning)
        log.info("%s on %s (%s)%s", "dry run" if dry_run else "execute", db.display_url,
                 db.caps.server_version, f", run {run_id}")
        ledger = RunLedger(db, tool, run_id, _ledger_args(options, job_args), dry_run)
        try:
            ledger.start()
            ledger_started = True
        except OpsError:
            if not creates_schema:
                raise
            ledger_started = False  # the schema tool records its run once the table exists
        if lock:
            from .locks import run_lock  # filelock and hashing: not for a tool that takes no lock

            held_lock = run_lock(db, tool, settings.lock_dir)
            if not held_lock.acquire():
                summary.info("skipped: %s (lock %s)", LOCK_HELD, held_lock.name)
                result = JobResult(tool, dry_run, status="skipped", stop_reason=LOCK_HELD)
                if pager:  # a check that did not check is UNKNOWN, never OK
                    result.exit_code = EXIT_UNKNOWN
                    result.headline = pager_line(pager, "UNKNOWN", f"skipped: {LOCK_HELD}")
        if result is None:
            alerts.ping(settings, "start")
            stop.install()
            context = RunContext(
                db=db, settings=settings, run_id=run_id, tool=tool, dry_run=dry_run,
                budget=Budget(options.get("max_runtime")), stop=stop,
                heartbeat=ledger.heartbeat, show_progress=mode == "terminal",
            )
            with db.pinned():
                result = job(context, **job_args)
        result.run_id = run_id
        if stop.is_set() and result.status == "ok":
            result.status = "interrupted"
        if not ledger_started:
            try:
                ledger.start()
                ledger_started = True
            except OpsError:
                log.info("no run ledger yet (ops_job_runs does not exist): run not recorded")
        if ledger_started:
            ledger.finish(result)
    except (Exception, KeyboardInterrupt) as exc:
        message, exit_code, status = describe_failure(exc, tool)
        exit_code = exit_code_for(exit_code)
        shown = exc if isinstance(exc, OpsError) and str(exc) == message else OpsError(message)
        _fail_line(shown, debug, exc)
        result = _record_failure(db, tool, run_id, dry_run, message, options, job_args, status)
        _show_failure(result, options, exit_code, pager)
        if status == "failed":
            _alert(settings, result)
        sys.exit(exit_code)
    finally:
        stop.restore()
        if held_lock is not None:
            held_lock.release()

    render(result, mode)
    summary.info("stopped: %s", result.stop_reason)
    if result.status != "skipped":
        _alert(settings, result)
    if db is not None:
        db.engine.dispose()
    sys.exit(result.final_exit_code())


def describe_failure(exc: BaseException, tool: str | None = None) -> tuple[str, int, str]:
    """(one-line message, exit code, ledger status) for whatever stopped a run; a missing
    privilege names the role `tool` runs as."""
    from sqlalchemy.exc import DBAPIError

    from .db import describe_db_error, privilege_problem

    if isinstance(exc, Interrupted):  # a shutdown, not a failure: no failure alert
        return str(exc), exc.exit_code, "interrupted"
    hint = role_hint(tool) if privilege_problem(exc.__cause__ or exc) else ""
    if isinstance(exc, OpsError):
        return f"{exc}{hint}", exc.exit_code, "failed"
    if isinstance(exc, DBAPIError):
        return f"database error: {describe_db_error(exc)}{hint}", EXIT_FAILED, "failed"
    if isinstance(exc, KeyboardInterrupt):  # a second Ctrl-C: the operator wants it to stop now
        return ("stopped at once by a second interrupt; claimed rows return when their leases "
                "expire", EXIT_INTERRUPTED, "interrupted")
    # The last line of defence: one line, the traceback with --debug.
    return f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILED, "failed"


def role_hint(tool: str | None) -> str:
    """'; <tool> runs as the <role> role (...)': for a privilege error's line."""
    from .catalog import ROLES, TOOLS

    use = TOOLS.get(tool or "")
    if use is None or not ROLES[use.role].created:
        return ""
    return (f"; {tool} runs as the {use.role} role (its grants: python "
            f"tools/manage_db_users.py --role {use.role} --user-host HOST)")


def _alert(settings: Settings, result: JobResult | None) -> None:
    from . import alerts

    if result is not None:
        alerts.finished(settings, result)


def _ledger_args(options: dict[str, Any], job_args: dict[str, Any]) -> dict[str, Any]:
    from .settings import mask_http_url, mask_url

    # Every URL option (--database-url, --target-url) may hold a password, and so may a job's
    # argument that is a URL: a web one (a SOURCE to download) also keeps tokens and
    # signatures in its query string.
    def masked(value: str) -> str:
        if value.lower().startswith(("http://", "https://")):
            return mask_http_url(value)
        return mask_url(value)

    shown = {k: mask_url(v) if k.endswith("_url") else v
             for k, v in options.items() if v not in (None, False)}
    shown.update({k: masked(v) if isinstance(v, str) and "://" in v else v
                  for k, v in job_args.items()})
    return shown


def _record_failure(db, tool, run_id, dry_run, message, options, job_args,
                    status: str = "failed") -> JobResult:
    """Close the ledger row as failed, if there is a database to write it to."""
    from .ledger import RunLedger

    result = JobResult(tool, dry_run, status=status, stop_reason="error", error=message,
                       run_id=run_id)
    if db is None:
        return result
    try:
        ledger = RunLedger(db, tool, run_id, _ledger_args(options, job_args), dry_run)
        ledger.finish(result)
    except Exception as exc:  # the ledger is best effort once the run has already failed
        log.debug("could not record the failure in the ledger: %s", exc)
    return result


def pager_line(pager: str, state: str, text: str) -> str:
    """A check's first stdout line, under 80 characters: 'QUEUES UNKNOWN: why'."""
    line = f"{pager} {state}: {' '.join(text.split())}"
    return line if len(line) < 80 else line[:76].rstrip() + "..."


def _show_failure(result: JobResult, options: dict[str, Any], exit_code: int,
                  pager: str | None = None) -> None:
    """`--json` promises one JSON object on stdout, for a failed run too (the line is on stderr);
    a check's pager reads its one line on stdout, for a run that could not check too."""
    from .render import render

    result.exit_code = exit_code
    if pager:
        result.headline = pager_line(pager, "UNKNOWN", result.error or result.stop_reason)
    if options.get("json_output", False):
        render(result, "json")
    elif pager:
        click.echo(result.headline)


def _fail_line(exc: OpsError, debug: bool, cause: BaseException | None = None) -> None:
    if debug:
        traceback.print_exception(cause or exc, file=sys.stderr)
    # One line per problem: a bad input file can have many, each with its row and field.
    problems = getattr(exc, "problems", None) or [str(exc)]
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    # Task Scheduler keeps no stderr: the failure lines go to --log-file too (redacted).
    for problem in problems:
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "error: %s", (problem,),
                                None)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, AppendFileHandler):
                handler.handle(record)


class ToolCommand(click.Command):
    """A tool's command: usage errors as one line (and one JSON object with --json), exit 2.

    Every parameter is checked even after one fails, so all the problems click can see are
    reported at once; `examples` become the "Examples" section of `--help`.
    """

    def __init__(self, *args: Any, examples: Sequence[str] = (), usage_exit: int = EXIT_USAGE,
                 pager: str | None = None, **kwargs: Any):
        self.usage_exit = usage_exit
        self.pager = pager
        if examples:
            kwargs["epilog"] = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in examples)
        super().__init__(*args, **kwargs)
        for param in self.params:
            param.handle_parse_result = _collecting(param.handle_parse_result)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_PROBLEMS] = problems = []
        try:
            rest = super().parse_args(ctx, args)
        except click.UsageError as exc:  # the parser's own (unknown option, extra argument)
            problems.append(exc)
        if problems:
            raise click.UsageError("; ".join(_one_line(p) for p in problems), ctx)
        return rest

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             **extra: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        prog_name = prog_name or os.path.basename(sys.argv[0])
        try:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            _usage_failure(Path(prog_name).stem, args, f"{_one_line(exc)} "
                           f"(see {prog_name} --help)", self.usage_exit, self.pager)
        except click.ClickException as exc:
            _usage_failure(Path(prog_name).stem, args, _one_line(exc),
                           self.usage_exit if exc.exit_code == EXIT_USAGE else exc.exit_code,
                           self.pager)
        except click.Abort:  # Ctrl-C before the job started: nothing was done
            click.echo("error: interrupted before the run started", err=True)
            sys.exit(EXIT_INTERRUPTED)


_PROBLEMS = "ops.usage_problems"


def _collecting(handle: Callable) -> Callable:
    """Record a parameter's usage error instead of stopping at it, so the next ones are checked."""

    @functools.wraps(handle)
    def handle_parse_result(ctx: click.Context, opts: Any, args: list[str]) -> Any:
        try:
            return handle(ctx, opts, args)
        except click.UsageError as exc:
            if _PROBLEMS not in ctx.meta:
                raise
            ctx.meta[_PROBLEMS].append(exc)
            return None, args

    return handle_parse_result


def _one_line(exc: click.ClickException) -> str:
    message = exc.format_message()
    if isinstance(exc, click.NoSuchOption) and exc.option_name.lstrip("-").isdigit():
        message = f"{message.rstrip('.')} (a negative number is not a valid value)"
    return " ".join(message.split()).rstrip(".")  # "Choose from:\n\tlist,\n\t..." too


def _usage_failure(tool: str, args: list[str], message: str, exit_code: int,
                   pager: str | None = None) -> None:
    """The same line, exit code and `--json` object as a run that failed on bad input."""
    words = args[:args.index("--")] if "--" in args else args
    click.echo(f"error: {message}", err=True)
    _show_failure(JobResult(tool, "--execute" not in words, status="failed", stop_reason="error",
                            error=message), {"json_output": "--json" in words}, exit_code, pager)
    sys.exit(exit_code)


def tool_command(examples: Sequence[str] = (), usage_exit: int = EXIT_USAGE,
                 pager: str | None = None, **kwargs: Any) -> Callable[[Callable], ToolCommand]:
    """`@click.command()` for a tool: `examples` are full command lines, a dry run first;
    a Nagios-style check gives `usage_exit` 3 (its usage errors are UNKNOWN) and its `pager`
    name, so a usage error still prints the pager's line on stdout."""
    return click.command(cls=ToolCommand, examples=examples, usage_exit=usage_exit, pager=pager,
                         **kwargs)


def tool_main(command: click.Command) -> None:
    """Entry point for `if __name__ == "__main__"`: parse, run, exit with the toolkit's codes."""
    if not isinstance(command, ToolCommand):
        raise TypeError(f"{command.name} is not declared with @tool_command")
    code = command.main(prog_name=os.path.basename(sys.argv[0]))  # --help: 0; a run exits itself
    sys.exit(code if isinstance(code, int) else 0)
