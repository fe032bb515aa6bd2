"""The one error family of the toolkit: every expected failure, with its exit code.

The library raises these and never prints or exits; `ops_lib.cli` turns them into one line on
stderr and the exit code (a traceback only with --debug).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# Health checks (monitoring convention): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (could not check).
EXIT_UNKNOWN = 3


class OpsError(Exception):
    """An expected failure: shown as one line, exit 1 unless the subclass says otherwise."""

    exit_code = EXIT_FAILED


class BadInput(OpsError):
    """A flag, argument, setting or input file is wrong; nothing was written."""

    exit_code = EXIT_USAGE

    def __init__(self, *problems: str):
        self.problems = [p for p in problems if p]
        super().__init__("; ".join(self.problems))


class ConfigError(BadInput):
    """The configuration (environment, config file, settings table) is wrong."""


class DatabaseUnavailable(OpsError):
    """The database cannot be reached or refused the login."""


class PreconditionFailed(OpsError):
    """The database is not in a state this tool can work on (no schema, wrong database...)."""


class JobFailed(OpsError):
    """A job stopped on a permanent error; the run is recorded as failed."""


class Interrupted(OpsError):
    """A stop signal (SIGTERM, Ctrl-C) ended the run before it finished: recorded as
    interrupted, not failed (no failure alert for a shutdown); the exit is the tool's failed
    exit (a check that did not finish must not read as a pass)."""
