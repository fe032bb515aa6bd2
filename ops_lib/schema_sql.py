"""schema.sql, read one way in one place: its statements, split where MySQL itself would split them.

The split uses sqlglot's MySQL tokenizer, not its parser: the tokenizer knows MySQL's quoting
(strings, backquoted names, `--`, `#` and `/* */` comments), so a `;` inside a DEFAULT, a COMMENT
or a name never ends a statement, while the parser still misreads some MySQL DDL (generated
columns, named primary keys). The server itself reads each statement.

The split is cached (var/cache/schema-sql-<sha256>.json, written atomically): a tool that only
needs the statements then imports no sqlglot and runs no tokenizer, which took most of a drift
check's CPU time. The cache is keyed by the SHA-256 of the file's bytes, and an entry is used
only if each statement is found, in order, at its line in the text just read; an absent, stale,
damaged or unwritable cache only means the file is split again.

Not supported: MySQL's versioned comments (`/*!40101 SET NAMES utf8 */`, `/*!80016 ... */`),
which the client runs as SQL; the tokenizer drops them as comments, so schema.sql must not rely
on one (write the statement itself).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import BadInput
from .settings import DEFAULT_VAR_DIR, REPO_ROOT

SCHEMA_SQL = REPO_ROOT / "schema.sql"
SPLIT_CACHE_DIR = DEFAULT_VAR_DIR / "cache"
# Part of every cache entry: a change to how statements are split (or to Statement) bumps it,
# so no entry written by an older split is used.
SPLIT_CACHE_FORMAT = 1

_log = logging.getLogger("ops")


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


def cached_split(data: bytes, cache_dir: Path | None = None) -> list[Statement]:
    """The statements of a UTF-8 MySQL script's bytes, from the cache in `cache_dir` when it
    holds this very text's split, else split and written there for the next run."""
    sql = data.decode("utf-8")
    cache_file = (cache_dir or SPLIT_CACHE_DIR) / f"schema-sql-{hashlib.sha256(data).hexdigest()}.json"
    statements = _load_cached(cache_file, sql)
    if statements is not None:
        return statements
    statements = split_statements(sql)
    _write_cache(cache_file, statements)
    return statements


def _load_cached(cache_file: Path, sql: str) -> list[Statement] | None:
    try:
        entry = json.loads(cache_file.read_text(encoding="utf-8"))
        if entry["format"] != SPLIT_CACHE_FORMAT:
            return None
        statements = [Statement(text, line, table) for text, line, table in entry["statements"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        _log.debug("split cache %s not used: %s", cache_file, error)
        return None
    # The name says the file's bytes are these; still, an entry is trusted only where it agrees
    # with the text: each statement found in order, at its line.
    position = 0
    for statement in statements:
        found = sql.find(statement.text, position) if statement.text else -1
        if found < 0 or sql.count("\n", 0, found) + 1 != statement.line:
            _log.debug("split cache %s does not match the file: split again", cache_file)
            return None
        position = found + len(statement.text)
    return statements


def _write_cache(cache_file: Path, statements: list[Statement]) -> None:
    from .files import write_atomically

    entry = {"format": SPLIT_CACHE_FORMAT,
             "statements": [[s.text, s.line, s.table] for s in statements]}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cache_file, json.dumps(entry))
    except OSError as error:  # a read-only install: split each run
        _log.debug("split cache %s not written: %s", cache_file, error)


@lru_cache(maxsize=4)
def _read(path: Path, mtime_ns: int, size: int) -> tuple[Statement, ...]:
    return tuple(cached_split(path.read_bytes()))


def schema_statements(path: Path = SCHEMA_SQL) -> list[Statement]:
    """The statements of schema.sql (split once per change of the file; see the module's cache)."""
    try:
        stat = path.stat()
        return list(_read(path, stat.st_mtime_ns, stat.st_size))
    except OSError as error:
        raise BadInput(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise BadInput(f"{path} is not UTF-8 at byte {error.start}") from None
