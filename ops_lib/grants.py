"""Database roles and their grants, derived from what each tool declares (ops_lib/catalog.py).

A role's grants are the union of its tools' table privileges and server privileges, spelled for
MariaDB 10.6+ or MySQL 8; a role's user gets the role as its default. `statements` is the plan
(CREATE ROLE / GRANT / CREATE USER, passwords as placeholders), `parse_show_grants` and
`compare` are `--check`: what a user holds against what its role needs.

Standard library only: the statements are text, the server runs them (ops_lib/jobs/db_users.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from .catalog import (
    MONITOR_NEVER_READS,
    PROCESS,
    REPLICA_MONITOR,
    ROLES,
    SCHEMA_DDL,
    SCRATCH_SCHEMAS,
    SELECT,
    TEMPORARY_TABLES,
    TOOLS,
    WHOLE_SCHEMA_READ,
)
from .scratch_schema import SCRATCH_GRANT_PATTERN

MARIADB, MYSQL = "mariadb", "mysql"
FLAVORS = (MARIADB, MYSQL)
DEFAULT_PREFIX = "ops_"
MAX_NAME_LENGTH = 32  # MySQL 8's longest user and role name (MariaDB allows more)
PASSWORD_ENV_PREFIX = "OPS_DB_PASSWORD_"
GLOBAL = "*.*"
# The order GRANT lists privileges in, as the servers print them.
PRIVILEGE_ORDER = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "REFERENCES",
                   "INDEX", "ALTER", "CREATE TEMPORARY TABLES", "PROCESS", "SLAVE MONITOR",
                   "REPLICATION CLIENT", "ALL PRIVILEGES")
# The schema admin's rights on its database: rows, and the tables themselves (no GRANT OPTION,
# no database drop: DROP on `db`.* drops tables; dropping the database needs DROP too, and
# manage_schema never does it).
SCHEMA_ADMIN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP",
                           "REFERENCES", "INDEX", "ALTER")
REPLICA_MONITOR_PRIVILEGE = {MARIADB: "SLAVE MONITOR", MYSQL: "REPLICATION CLIENT"}
# Names MariaDB accepts as synonyms and prints in one spelling.
PRIVILEGE_SYNONYMS = {"REPLICA MONITOR": "SLAVE MONITOR", "ALL": "ALL PRIVILEGES"}


@dataclass(frozen=True, order=True)
class Grant:
    """One privilege on one scope: `*.*`, `` `db`.* `` (a pattern: `_` escaped) or `` `db`.`t` ``."""

    scope: str
    privilege: str

    def __str__(self) -> str:
        return f"{self.privilege} ON {self.scope}"


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def database_scope(database: str) -> str:
    """`db`.* with the LIKE wildcards of a database-level grant escaped (`_` is one)."""
    return quote(database.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")) + ".*"


def table_scope(database: str, table: str) -> str:
    return f"{quote(database)}.{quote(table)}"


def tools_of(role: str) -> list[str]:
    """The tools that run as `role`'s user, by name."""
    return sorted(tool for tool, use in TOOLS.items() if use.role == role)


def created_roles() -> list[str]:
    """The roles this toolkit creates users for (not the administrator's)."""
    return [name for name, role in ROLES.items() if role.created]


def _tools_granted(role: str) -> list[str]:
    """Whose grants `role` holds: its own tools', and for the scheduler every scheduled tool's."""
    from .schedule import SCHEDULE

    tools = set(tools_of(role))
    if ROLES[role].runs_the_schedule:
        tools |= {job.tool for job in SCHEDULE}
    return sorted(tools)


def role_grants(role: str, database: str, flavor: str) -> frozenset[Grant]:
    """Every privilege `role` needs on `database`, without one a broader grant covers."""
    grants: set[Grant] = set()
    for tool in _tools_granted(role):
        grants |= tool_grants(tool, database, flavor)
    if ROLES[role].reads_every_dry_run:
        grants |= {Grant(table_scope(database, table), SELECT) for table in monitored_tables()}
    return frozenset(g for g in grants if not _covered_by_other(g, grants))


def tool_grants(tool: str, database: str, flavor: str) -> set[Grant]:
    """What `tool` itself declares it needs (ops_lib/catalog.py), spelled for `flavor`."""
    use = TOOLS[tool]
    return ({Grant(table_scope(database, table), privilege)
             for privilege, table in use.all_tables()}
            | _server_grants(use.server, database, flavor))


def monitored_tables() -> list[str]:
    """The tables the monitor reads: every table of schema.sql (a dry run of any tool reads
    some of them) but the web app's secrets."""
    from .schema import metadata  # SQLAlchemy: loaded only when grants are computed

    return sorted(set(metadata.tables) - MONITOR_NEVER_READS)


def _server_grants(needs: Iterable[str], database: str, flavor: str) -> set[Grant]:
    schema = database_scope(database)
    spelled = {
        TEMPORARY_TABLES: [Grant(schema, "CREATE TEMPORARY TABLES")],
        PROCESS: [Grant(GLOBAL, "PROCESS")],
        REPLICA_MONITOR: [Grant(GLOBAL, REPLICA_MONITOR_PRIVILEGE[flavor])],
        SCRATCH_SCHEMAS: [Grant(quote(SCRATCH_GRANT_PATTERN) + ".*", "ALL PRIVILEGES")],
        # REFERENCES too: MariaDB shows a table's foreign keys (REFERENTIAL_CONSTRAINTS) only
        # to a user with a privilege beyond SELECT on it; without, the drift check would report
        # every foreign key missing. It lets no one write or create anything.
        WHOLE_SCHEMA_READ: [Grant(schema, "SELECT"), Grant(schema, "REFERENCES")],
        SCHEMA_DDL: [Grant(schema, privilege) for privilege in SCHEMA_ADMIN_PRIVILEGES],
    }
    return {grant for need in needs for grant in spelled[need]}


def _database_of(scope: str) -> str | None:
    match = re.fullmatch(r"`((?:[^`]|``)*)`\.(?:\*|`(?:[^`]|``)*`)", scope)
    return match.group(1).replace("``", "`") if match else None


def _pattern_matches(pattern: str, name: str) -> bool:
    """A database-level grant's name (LIKE: `_`, `%`, backslash escapes) against a database."""
    regex, escaped = "", False
    for char in pattern:
        if escaped:
            regex += re.escape(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            regex += ".*"
        elif char == "_":
            regex += "."
        else:
            regex += re.escape(char)
    return re.fullmatch(regex, name, re.S) is not None


def _covers(broad: Grant, grant: Grant) -> bool:
    """Whether `broad` gives what `grant` asks for (and is not the same grant)."""
    if broad == grant or broad.privilege not in (grant.privilege, "ALL PRIVILEGES"):
        return False
    if broad.scope == GLOBAL:
        return True
    if not broad.scope.endswith(".*") or grant.scope == GLOBAL:
        return False
    pattern, database = _database_of(broad.scope), _database_of(grant.scope)
    if pattern is None or database is None:
        return False
    if grant.scope.endswith(".*"):  # a database pattern covers a narrower one only if equal
        return pattern == database and broad.privilege == "ALL PRIVILEGES"
    return _pattern_matches(pattern, database)


def _covered_by_other(grant: Grant, grants: Iterable[Grant]) -> bool:
    return any(_covers(other, grant) for other in grants)


# ---- the statements ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RoleAccounts:
    """The names of one role's server role and user."""

    role: str
    role_name: str
    user: str
    host: str

    @property
    def account(self) -> str:
        return f"{quote(self.user)}@{quote(self.host)}"

    @property
    def password_env(self) -> str:
        return PASSWORD_ENV_PREFIX + self.role.upper()

    @property
    def placeholder(self) -> str:
        # Unquoted on purpose: the printed file fails at this statement unless someone puts a
        # quoted password here, so no account ever gets a placeholder for a password.
        return f"<{self.password_env}>"


def accounts(role: str, prefix: str, host: str) -> RoleAccounts:
    return RoleAccounts(role, f"{prefix}{role}_role", f"{prefix}{role}", host)


def check_names(roles: Iterable[str], prefix: str, host: str) -> list[str]:
    """Problems with the names the statements would use, found before connecting."""
    problems = []
    if not re.fullmatch(r"[A-Za-z0-9_]*", prefix):
        problems.append(f"--prefix {prefix!r}: use letters, digits and '_'")
    if not host or not re.fullmatch(r"[A-Za-z0-9_.%:-]+", host):
        problems.append(f"--user-host {host!r}: a host name, an IP address or a pattern with "
                        "% (e.g. 10.0.0.% or localhost)")
    for role in roles:
        names = accounts(role, prefix, host)
        longest = max((names.role_name, names.user), key=len)
        if len(longest) > MAX_NAME_LENGTH:
            problems.append(f"--prefix {prefix!r}: {longest!r} is longer than "
                            f"{MAX_NAME_LENGTH} characters (MySQL 8's limit)")
            break
    return problems


def grant_statements(grants: Iterable[Grant], grantee: str) -> list[str]:
    """GRANT statements, one per scope, privileges in the servers' order."""
    by_scope: dict[str, list[str]] = {}
    for grant in sorted(grants):
        by_scope.setdefault(grant.scope, []).append(grant.privilege)
    order = {name: index for index, name in enumerate(PRIVILEGE_ORDER)}

    def scope_key(scope: str) -> tuple[int, str]:
        return (0 if scope == GLOBAL else 1 if scope.endswith(".*") else 2, scope.replace("`", ""))

    return [f"GRANT {', '.join(sorted(privileges, key=lambda p: (order.get(p, 99), p)))} "
            f"ON {scope} TO {grantee}"
            for scope, privileges in sorted(by_scope.items(), key=lambda item: scope_key(item[0]))]


def role_statements(names: RoleAccounts, database: str, flavor: str,
                    password: str | None = None) -> list[str]:
    """The statements that create `names.role`'s role and user; `password` None: placeholder.

    IF NOT EXISTS throughout, and GRANT adds: running them again changes nothing a first run
    did not (a privilege granted by hand stays; `--check` shows it). An existing user's
    password is not changed by CREATE USER IF NOT EXISTS.
    """
    role = quote(names.role_name)
    secret = names.placeholder if password is None else sql_string(password)
    default_role = "FOR" if flavor == MARIADB else "TO"
    return [
        f"CREATE ROLE IF NOT EXISTS {role}",
        *grant_statements(role_grants(names.role, database, flavor), role),
        f"CREATE USER IF NOT EXISTS {names.account} IDENTIFIED BY {secret}",
        f"GRANT {role} TO {names.account}",
        f"SET DEFAULT ROLE {role} {default_role} {names.account}",
    ]


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


# ---- --check ----------------------------------------------------------------------------------

@dataclass
class HeldGrants:
    """What SHOW GRANTS lists for one account or role."""

    grants: set[Grant] = field(default_factory=set)
    roles: list[str] = field(default_factory=list)  # roles granted to it, unquoted


def _split_outside(text: str, separator: str) -> list[str]:
    """Split on `separator` outside backquotes and parentheses."""
    parts, depth, in_quote, start, index = [], 0, False, 0, 0
    while index < len(text):
        char = text[index]
        if char == "`":
            in_quote = not in_quote
        elif not in_quote and char == "(":
            depth += 1
        elif not in_quote and char == ")":
            depth -= 1
        elif not in_quote and depth == 0 and text.startswith(separator, index):
            parts.append(text[start:index])
            index += len(separator)
            start = index
            continue
        index += 1
    parts.append(text[start:])
    return parts


def _unquote_role(text: str) -> str:
    name = text.strip().split("@")[0].strip()
    return name[1:-1].replace("``", "`") if name.startswith("`") else name.strip("'")


def parse_show_grants(lines: Iterable[str]) -> HeldGrants:
    """The privileges and granted roles of SHOW GRANTS lines (MariaDB and MySQL 8)."""
    held = HeldGrants()
    for line in lines:
        if not line.startswith("GRANT "):
            continue  # SET DEFAULT ROLE, REVOKE lines of partial revokes
        body = line[len("GRANT "):]
        with_grant_option = " WITH GRANT OPTION" in body
        head = _split_outside(body, " TO ")[0]
        on = _split_outside(head, " ON ")
        if len(on) == 1:  # GRANT `role` TO `user`@`host`
            held.roles += [_unquote_role(name) for name in _split_outside(head, ",")]
            continue
        privileges, scope = on[0], on[1].strip()
        for privilege in _split_outside(privileges, ","):
            privilege = " ".join(privilege.split())
            privilege = PRIVILEGE_SYNONYMS.get(privilege, privilege)
            if privilege != "USAGE":
                held.grants.add(Grant(scope, privilege))
        if with_grant_option:
            held.grants.add(Grant(scope, "GRANT OPTION"))
    return held


@dataclass(frozen=True)
class CheckReport:
    """What an account lacks and what it holds beyond its role."""

    missing: tuple[Grant, ...]
    beyond: tuple[Grant, ...]

    @property
    def matches(self) -> bool:
        return not self.missing and not self.beyond


def compare(expected: Iterable[Grant], held: Iterable[Grant]) -> CheckReport:
    """Missing: an expected privilege nothing held gives. Beyond: a held privilege the role does
    not need (one covered by a broader expected grant is not beyond)."""
    expected, held = set(expected), set(held)
    missing = [g for g in expected if g not in held and not _covered_by_other(g, held)]
    beyond = [g for g in held if g not in expected and not _covered_by_other(g, expected)]
    return CheckReport(tuple(sorted(missing)), tuple(sorted(beyond)))
