"""The database users and grants each tool needs (support tool; run by the server's administrator).

The plan is the SQL (ops_lib/grants.py): per role a CREATE ROLE, its GRANTs, a CREATE USER with
a placeholder for the password, the role granted to the user as its default. `--execute` runs
it, each new user's password from `OPS_DB_PASSWORD_<ROLE>` or generated into a file only the
operator can read (mode 0600), never printed. `--check USER` compares what SHOW GRANTS says the
user holds (its roles' grants included) with what its role needs.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Mapping

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from .. import grants
from ..catalog import ROLES
from ..db import describe_db_error
from ..errors import EXIT_FAILED, BadInput, JobFailed, PreconditionFailed
from ..result import DONE, DRY_RUN, JobResult
from ..runtime import RunContext

CHECKED = "checked"


def role_of_user(user: str, prefix: str, role: str | None) -> str | None:
    """The role `--check USER` compares with: --role, else the one the user's name says."""
    if role:
        return role
    name = user.removeprefix(prefix) if user.startswith(prefix) else None
    return name if name in grants.created_roles() else None


def validate(roles: tuple[str, ...], user_host: str, prefix: str, check_user: str | None,
             password_file: str | None, execute: bool,
             environ: Mapping[str, str] = os.environ) -> list[str]:
    """Every problem the options show, before connecting (exit 2)."""
    chosen = list(roles) or grants.created_roles()
    problems = grants.check_names(chosen, prefix, user_host)
    if check_user is not None:
        if execute:
            problems.append("--check changes nothing: leave out --execute")
        if len(roles) > 1:
            problems.append("--check compares one user with one role: give one --role")
        elif role_of_user(check_user, prefix, roles[0] if roles else None) is None:
            problems.append(f"--check {check_user}: say which role it should have (--role; "
                            f"its name is not {prefix}<role>)")
        return problems
    if execute:
        unset = [variable for variable in (grants.accounts(role, prefix, user_host).password_env
                                           for role in chosen)
                 if not environ.get(variable)]
        if unset and not password_file:
            problems.append(f"--execute needs each new user's password: set {', '.join(unset)}, "
                            "or give --password-file FILE to have them generated there")
        if password_file and Path(password_file).exists():
            problems.append(f"--password-file {password_file}: it exists already (never "
                            "overwritten: move it away or name a new file)")
    return problems


def run(ctx: RunContext, roles: tuple[str, ...] = (), user_host: str = "",
        prefix: str = grants.DEFAULT_PREFIX, for_server: str | None = None,
        database: str | None = None, check_user: str | None = None,
        password_file: str | None = None,
        environ: Mapping[str, str] = os.environ) -> JobResult:
    on_server = ctx.db.caps.is_mysql
    if not on_server and not (ctx.dry_run and check_user is None and for_server and database):
        raise BadInput("database users and grants are MySQL's and MariaDB's: this database is "
                       "SQLite (give --database-url of the server, or, to print the "
                       "statements only, --for-server and --database)")
    database = database or make_url(ctx.db.url).database
    if not database:
        raise BadInput("the database URL names no database: give --database NAME")
    detected = (grants.MARIADB if ctx.db.caps.is_mariadb else grants.MYSQL) if on_server else None
    flavor = for_server or detected
    chosen = list(roles) or grants.created_roles()
    if check_user is not None:
        role = role_of_user(check_user, prefix, roles[0] if roles else None)
        return _check(ctx, check_user, user_host, role, database, flavor)
    if not ctx.dry_run and flavor != detected:
        raise BadInput(f"--for-server {flavor}: the server is {detected}; --execute runs the "
                       f"statements for the server it is connected to")
    names = [grants.accounts(role, prefix, user_host) for role in chosen]
    existing = None
    if on_server:
        with ctx.db.engine.connect() as conn:
            existing = _existing_accounts(conn, names)
    result = JobResult(ctx.tool, ctx.dry_run)
    result.section("Roles", [
        {"role": n.role, "server_role": n.role_name, "user": f"{n.user}@{n.host}",
         "user_exists": "unknown" if existing is None else
         ("yes" if (n.user, n.host) in existing else "no"),
         "tools": ", ".join(grants.tools_of(n.role)) or "-", "password": n.password_env}
        for n in names], columns=["role", "server_role", "user", "user_exists", "tools",
                                  "password"])
    if existing is None and on_server:
        result.notes.append("this login may not read mysql.user: whether each user exists "
                            "is unknown")
    if ctx.dry_run:
        per_role = {n.role: grants.role_statements(n, database, flavor) for n in names}
        result.text = _sql_document(ctx, names, database, flavor, per_role)
        result.statements = [s for n in names for s in per_role[n.role]]
        result.stop_reason = DRY_RUN
        return result
    if existing is None:  # a generated password would be written for a user that keeps its own
        raise PreconditionFailed("--execute needs a login that may read mysql.user and create "
                                 "users: run it as the server's administrator")
    _apply(ctx, result, names, existing, database, flavor, password_file, environ)
    result.stop_reason = DONE
    return result


def _existing_accounts(conn: Connection, names) -> set[tuple[str, str]] | None:
    """The (user, host) pairs among `names` that exist; None when mysql.user is not readable."""
    try:
        rows = conn.execute(text("SELECT User, Host FROM mysql.user")).all()
    except DBAPIError:
        return None
    wanted = {(n.user, n.host) for n in names}
    return {(user, host) for user, host in rows if (user, host) in wanted}


def _sql_document(ctx: RunContext, names, database: str, flavor: str,
                  per_role: dict[str, list[str]]) -> str:
    lines = [
        f"-- {ctx.tool} run={ctx.run_id} dry_run=yes: the roles and users of database "
        f"{database} ({flavor}); nothing was applied.",
        "-- Each <OPS_DB_PASSWORD_...> placeholder must become a quoted password before this "
        "file runs (it fails there otherwise);",
        "-- or let --execute take them from the environment or generate them "
        "(docs/tools/manage_db_users.md).",
    ]
    for n in names:
        tools = ", ".join(grants.tools_of(n.role))
        lines += ["", f"-- {n.role}: {ROLES[n.role].description}", f"-- tools: {tools}"]
        lines += [f"{statement};" for statement in per_role[n.role]]
    return "\n".join(lines) + "\n"


def _apply(ctx: RunContext, result: JobResult, names, existing: set[tuple[str, str]],
           database: str, flavor: str, password_file: str | None,
           environ: Mapping[str, str]) -> None:
    """Run each role's statements; a new user's password from the environment or generated
    into `password_file` (written first, mode 0600: a run that fails later leaves no user whose
    password nobody has)."""
    passwords: dict[str, str] = {}
    generated: list[grants.RoleAccounts] = []
    for n in names:
        given = environ.get(n.password_env)
        if given:
            passwords[n.role] = given
        elif (n.user, n.host) not in existing:
            passwords[n.role] = secrets.token_urlsafe(24)
            generated.append(n)
    if generated:
        _write_password_file(Path(password_file or ""), generated, passwords, database)
        result.notes.append(f"generated passwords of {len(generated)} new users written to "
                            f"{password_file} (mode 0600)")
    done = 0
    with ctx.db.engine.connect() as conn:
        cursor = conn.connection.cursor()  # DB-API: no parameters, so `%` in a host is literal
        for n in names:
            statements = grants.role_statements(n, database, flavor,
                                                password=passwords.get(n.role, ""))
            if (n.user, n.host) in existing:
                statements = [s for s in statements if not s.startswith("CREATE USER")]
                if n.role in passwords:
                    statements.append(f"ALTER USER {n.account} IDENTIFIED BY "
                                      f"{grants.sql_string(passwords[n.role])}")
            for statement in statements:
                try:
                    cursor.execute(statement)
                except conn.dialect.loaded_dbapi.Error as exc:
                    raise JobFailed(
                        f"{n.role}: {_redacted(statement, passwords)} failed: "
                        f"{describe_db_error(exc)}; {done} statements before it were applied "
                        "(running again is safe)") from exc
                done += 1
            result.add("roles")
        cursor.close()
    result.add("statements", done)


def _redacted(statement: str, passwords: Mapping[str, str]) -> str:
    for password in passwords.values():
        statement = statement.replace(grants.sql_string(password), "'***'")
    return statement


def _write_password_file(path: Path, generated, passwords: Mapping[str, str],
                         database: str) -> None:
    lines = [f"# ops-toolkit database users of {database}; one line per user created with a "
             "generated password"]
    for n in generated:
        lines.append(f"# {n.user}@{n.host} (role {n.role_name})")
        lines.append(f"{n.password_env}='{passwords[n.role]}'")
    # O_EXCL: never overwrite a file of earlier passwords; 0600 from the start, not after.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("\n".join(lines) + "\n")


def _check(ctx: RunContext, user: str, host: str, role: str, database: str,
           flavor: str) -> JobResult:
    account = f"{grants.quote(user)}@{grants.quote(host)}"
    with ctx.db.engine.connect() as conn:
        held = _held_grants(conn, account)
    expected = grants.role_grants(role, database, flavor)
    report = grants.compare(expected, held.grants)
    result = JobResult(ctx.tool, ctx.dry_run)
    result.section("Missing", [{"privilege": g.privilege, "on": g.scope} for g in report.missing],
                   columns=["privilege", "on"])
    result.section("Beyond the role", [{"privilege": g.privilege, "on": g.scope}
                                       for g in report.beyond], columns=["privilege", "on"])
    result.counts.update(missing=len(report.missing), beyond=len(report.beyond),
                         expected=len(expected))
    result.notes.append(f"{user}@{host} against role {role} ({', '.join(grants.tools_of(role))}); "
                        f"roles it holds: {', '.join(held.roles) or 'none'}")
    if report.matches:
        result.notes.append(f"{user}@{host} holds what role {role} needs, and nothing more")
    result.exit_code = 0 if report.matches else EXIT_FAILED
    result.stop_reason = (f"{CHECKED}: {len(report.missing)} missing, {len(report.beyond)} "
                          "beyond the role")
    return result


def _held_grants(conn: Connection, account: str) -> grants.HeldGrants:
    """SHOW GRANTS of the account and, recursively, of the roles it holds."""
    held, seen = grants.HeldGrants(), set()
    pending = [account]
    while pending:
        grantee = pending.pop()
        cursor = conn.connection.cursor()  # DB-API, no parameters: `%` in a host is literal
        try:
            cursor.execute(f"SHOW GRANTS FOR {grantee}")
            lines = [row[0] for row in cursor.fetchall()]
        except conn.dialect.loaded_dbapi.Error as exc:
            raise BadInput(f"--check: cannot read the grants of {grantee}: "
                           f"{describe_db_error(exc)}") from exc
        finally:
            cursor.close()
        found = grants.parse_show_grants(lines)
        held.grants |= found.grants
        for role in found.roles:
            if role not in seen:
                seen.add(role)
                held.roles.append(role)
                pending.append(grants.quote(role))
    return held
