"""schema.sql, read one way in one place: its statements, split where MySQL itself would split them.

The split uses sqlglot's MySQL tokenizer, not its parser: the tokenizer knows MySQL's quoting
(strings, backquoted names, `--`, `#` and `/* */` comments), so a `;` inside a DEFAULT, a COMMENT
or a name never ends a statement, while the parser still misreads some MySQL DDL (generated
columns, named primary keys). The server itself reads each statement.

Not supported: MySQL's versioned comments (`/*!40101 SET NAMES utf8 */`, `/*!80016 ... */`),
which the client runs as SQL; the tokenizer drops them as comments, so schema.sql must not rely
on one (write the statement itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import BadInput
from .settings import REPO_ROOT

SCHEMA_SQL = REPO_ROOT / "schema.sql"


@dataclass(frozen=True)
class Statement:
    text: str
    line: int
    table: str | None = None  # the table a CREATE TABLE makes


def split_statements(sql: str) -> list[Statement]:
    """The statements of a MySQL script, comments between them dropped, each with its first line."""
    from sqlglot.dialects.mysql import MySQL  # lazy: sqlglot costs ~0.1 s to import
    from sqlglot.errors import TokenError
    from sqlglot.tokens import TokenType

    try:
        tokens = MySQL().tokenize(sql)
    except TokenError as error:
        raise BadInput(f"schema SQL cannot be read: {error}") from None
    statements, current = [], []
    for token in [*tokens, None]:
        if token is not None and token.token_type != TokenType.SEMICOLON:
            current.append(token)
            continue
        if current:
            statements.append(Statement(sql[current[0].start:current[-1].end + 1],
                                        current[0].line, _created_table(current)))
        current = []
    return statements


def _created_table(tokens) -> str | None:
    words = [t.text.upper() for t in tokens[:6]]
    if words[:2] != ["CREATE", "TABLE"]:
        return None
    at = 5 if words[2:5] == ["IF", "NOT", "EXISTS"] else 2
    return tokens[at].text if len(tokens) > at else None


def execute_statements(conn, statements: list[Statement]) -> None:
    """Run each statement as the server reads it: a `%` in it is text, not a placeholder."""
    # no_parameters: SQLAlchemy calls cursor.execute(sql) with no arguments, so no driver
    # (PyMySQL's format paramstyle included) reads `%` as a placeholder. Per call: a
    # Connection's execution_options() would change the connection itself.
    for statement in statements:
        conn.exec_driver_sql(statement.text, execution_options={"no_parameters": True})


@lru_cache(maxsize=4)
def _read(path: Path, mtime_ns: int) -> tuple[Statement, ...]:
    return tuple(split_statements(path.read_text(encoding="utf-8")))


def schema_statements(path: Path = SCHEMA_SQL) -> list[Statement]:
    """The statements of schema.sql (read once per change of the file)."""
    try:
        return list(_read(path, path.stat().st_mtime_ns))
    except OSError as error:
        raise BadInput(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise BadInput(f"{path} is not UTF-8 at byte {error.start}") from None
