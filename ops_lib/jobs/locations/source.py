"""Read a location source (file, folder or URL) and refuse a bad one before anything is written.

`read_source` gives a `LocationSource` whose rows are trimmed, typed and checked against each
other; or raises `BadInput` with one line per problem (where, which field, what), every problem
of the source found in one pass. What the source alone cannot show (a parent that only the
database holds, a shrinking level) is the planner's to check. The formats, headers and encoding
rules are documented in docs/locations-source.md.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ...errors import BadInput
from .model import CODE_MAX, LEVELS, NAME_MAX, PARENT_LEVEL, SINGULAR, LocationSource, SourceRow, \
    code_key, too_many

# What `fmt` (the tool's --format) may be; "csv-per-level", the name a LocationSource reports,
# is accepted as a synonym of "csv".
FORMATS = ("csv", "csv-combined", "json")
# A level named in a level column, a JSON key or a file name: singular or plural, any case,
# and "upazilla", the other common spelling.
LEVEL_WORDS = {**{level: level for level in LEVELS},
               **{singular: level for level, singular in SINGULAR.items()},
               "upazilla": "upazilas", "upazillas": "upazilas"}

# Header spellings people export, compared after `_normal_header` (case, spaces, hyphens).
CODE_HEADERS = ("code", "id", "geo_code", "geocode", "bbs_code")
NAME_EN_HEADERS = ("name_en", "name", "english_name", "en_name", "name_english")
NAME_BN_HEADERS = ("name_bn", "bn_name", "bangla_name", "bengali_name", "name_bangla",
                   "name_bengali")
LEVEL_HEADERS = ("level",)
GENERIC_PARENT_HEADERS = ("parent_code", "parent_id", "parent")
PARENT_HEADERS = {
    "divisions": GENERIC_PARENT_HEADERS,  # only to refuse a division that names a parent
    "districts": (*GENERIC_PARENT_HEADERS, "division_id", "division_code"),
    "upazilas": (*GENERIC_PARENT_HEADERS, "district_id", "district_code"),
    "unions": (*GENERIC_PARENT_HEADERS, "upazila_id", "upazilla_id", "upazila_code",
               "upazilla_code"),
}
FIELD_LABELS = {"code": "code", "parent_code": "parent code", "name_en": "English name",
                "name_bn": "Bengali name", "level": "level"}

# What a code may hold. MariaDB's utf8mb4_unicode_ci key holds 'DH' and 'dh', 'ab' and 'ab ',
# '১০' and '10', 'ß' and 'ss' for one code: outside ASCII letters, digits, '_' and '-', Python
# and the database would disagree on which codes are the same.
_CODE = re.compile(r"[0-9A-Za-z_-]+")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_WHITESPACE_RUN = re.compile(r"\s+")  # str patterns: tabs, newlines, no-break spaces too
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]+")  # what surrogateescape makes of bad bytes


@dataclass
class _Table:
    """One list of records: a CSV file, a JSON list, or one level's list in a JSON object."""

    label: str  # for messages and the header mapping: "unions.csv", "locations.json unions"
    level: str | None  # every record's level (file name, JSON key); None: a level column says
    headers: list[str]
    records: list[tuple[str, dict[str, object]]] = field(default_factory=list)  # where, values
    column: str = "column"  # what a header is called in messages: "key" in JSON


@dataclass
class _Reading:
    """What reading collects on the way: problems and warnings in source order."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    header_mapping: list[tuple[str, str, str]] = field(default_factory=list)
    # Every code read at each level, also of a row with a problem: its children are not
    # reported again as orphans.
    codes: dict[str, set[str]] = field(default_factory=dict)


def read_source(source: str | os.PathLike, fmt: str | None = None, *, timeout: float = 30,
                max_bytes: int = 50_000_000) -> LocationSource:
    """The locations `source` holds (a file, a folder of one file per level, an http(s) URL).

    `fmt` ("csv", "csv-combined" or "json") overrides detection. Raises BadInput with one line
    per problem (at most MAX_PROBLEMS_SHOWN, then a count) when the source is bad.
    """
    from ...settings import mask_http_url

    if fmt is not None and fmt not in (*FORMATS, "csv-per-level"):
        raise BadInput(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    source = os.fspath(source)
    reading = _Reading()
    if _URL.match(source):
        if not source.lower().startswith(("http://", "https://")):
            raise BadInput(f"{mask_http_url(source)}: only http and https URLs can be read")
        description = mask_http_url(source)
        data, content_type = _download(source, description, timeout, max_bytes)
        name = PurePosixPath(_url_path(source)).name or "download"
        tables, fmt_name = _read_file(name, data, fmt, content_type, reading)
    else:
        description = source
        path = Path(source)
        if path.is_dir():
            tables, fmt_name = _read_folder(path, fmt, max_bytes, reading)
        elif path.is_file():
            tables, fmt_name = _read_file(path.name, _read_bytes(path, max_bytes), fmt, None,
                                          reading)
        else:
            raise BadInput(f"{source}: no such file or folder")
    rows = _rows(tables, reading)
    if not reading.problems and not any(rows.values()):
        reading.problems.append(f"{description} holds no locations")
    if reading.problems:
        raise BadInput(*too_many(reading.problems))
    return LocationSource(description=description,
                          rows={level: rows[level] for level in LEVELS if rows.get(level)},
                          header_mapping=reading.header_mapping, warnings=reading.warnings,
                          format=fmt_name)


def level_named(text: str) -> str | None:
    """The level a word names ("Union", "upazillas", "districts"), or None."""
    return LEVEL_WORDS.get(text.strip().casefold())


# -- getting the bytes ---------------------------------------------------------------------------


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise BadInput(f"{path}: {size:,} bytes, more than the size cap of {max_bytes:,}")
        return path.read_bytes()
    except OSError as error:
        raise BadInput(f"{path}: cannot read: {error.strerror or error}") from None


def _url_path(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).path)


def _download(url: str, shown: str, timeout: float, max_bytes: int) -> tuple[bytes, str]:
    """The whole body of a 200 answer, or BadInput: never a partial read.

    `timeout` is one deadline for the whole download (connecting, redirects, the answer and
    every read): a server that trickles a byte at a time cannot stretch it. A password in the
    URL is sent as Basic authentication, never shown.
    """
    import base64
    import http.client
    import time
    import urllib.error
    import urllib.request
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    headers = {"Accept-Encoding": "identity", "User-Agent": "ops-toolkit location import"}
    authorization = None
    if parts.username is not None or parts.password is not None:
        credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        netloc = parts.hostname or ""
        if ":" in netloc:  # an IPv6 address
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
        url = urlunsplit(parts._replace(netloc=netloc))
    deadline = time.monotonic() + timeout
    received = 0
    try:
        request = urllib.request.Request(url, headers=headers)
        if authorization:  # not sent on to wherever a redirect points
            request.add_unredirected_header("Authorization", authorization)
        opener = urllib.request.build_opener(*_deadline_handlers(deadline))
        with opener.open(request, timeout=timeout) as response:
            if response.status != 200:
                raise BadInput(f"{shown}: HTTP {response.status} {response.reason}, "
                               f"not 200: nothing read")
            if response.headers.get_content_type() == "text/html":
                raise BadInput(f"{shown}: the server sent an HTML page (a login or error "
                               f"page?), not a location file: nothing read")
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise BadInput(f"{shown}: the server sent it {encoding}-encoded; "
                               f"only an unencoded body is read")
            announced = response.headers.get("Content-Length")
            expected = int(announced) if announced and announced.strip().isdigit() else None
            if expected is None and not response.chunked:
                # The body would end where the connection ends, and so would a cut one.
                raise BadInput(f"{shown}: the server gave no length (no Content-Length, not "
                               f"chunked), so a cut download cannot be told from a whole one: "
                               f"nothing read")
            if expected is not None and expected > max_bytes:
                raise BadInput(f"{shown}: {expected:,} bytes announced, more than the size cap "
                               f"of {max_bytes:,}")
            chunks = []
            while chunk := response.read1(65536):
                received += len(chunk)
                if received > max_bytes:
                    raise BadInput(f"{shown}: more than the size cap of {max_bytes:,} bytes")
                chunks.append(chunk)
                if time.monotonic() >= deadline:
                    raise TimeoutError("the download's deadline passed")
            if expected is not None and received != expected:
                raise BadInput(f"{shown}: short read: the connection closed after "
                               f"{received:,} of the {expected:,} bytes announced")
            return b"".join(chunks), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        raise BadInput(f"{shown}: HTTP {error.code} {error.reason}: nothing read") from None
    except TimeoutError:
        raise BadInput(_too_slow(shown, timeout, received)) from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise BadInput(_too_slow(shown, timeout, received)) from None
        raise BadInput(f"{shown}: cannot download: {error.reason}") from None
    except http.client.IncompleteRead as error:
        raise BadInput(f"{shown}: short read: the connection closed after "
                       f"{received + len(error.partial):,} bytes") from None
    except (http.client.HTTPException, OSError, ValueError) as error:
        raise BadInput(f"{shown}: cannot download: {error.__class__.__name__}: "
                       f"{str(error).replace(url, shown)}") from None


def _too_slow(shown: str, timeout: float, received: int) -> str:
    return (f"{shown}: not complete within the timeout of {timeout:g} s (after {received:,} "
            f"bytes): nothing read")


def _deadline_handlers(deadline: float) -> list:
    """urllib handlers whose connections wait at most until `deadline` (time.monotonic())
    in all: connecting, and every read of the answer, its headers and its body."""
    import http.client
    import io
    import socket
    import time
    import urllib.request

    def time_left() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the download's deadline passed")
        return left

    class DeadlineReader(io.RawIOBase):
        """The socket's reader, each wait capped at the time left."""

        def __init__(self, raw: io.RawIOBase, sock: socket.socket):
            super().__init__()
            self.raw, self.sock = raw, sock

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int | None:
            self.sock.settimeout(time_left())
            return self.raw.readinto(buffer)

        def close(self) -> None:
            self.raw.close()
            super().close()

    class DeadlineResponse(http.client.HTTPResponse):
        def __init__(self, sock, *args, **kwargs):
            super().__init__(sock, *args, **kwargs)
            # Nothing is read yet: the same socket reader, behind the deadline.
            self.fp = io.BufferedReader(DeadlineReader(self.fp.detach(), sock))

    class DeadlineHTTP(http.client.HTTPConnection):
        response_class = DeadlineResponse

        def connect(self):
            self.timeout = time_left()
            super().connect()

    class DeadlineHTTPS(http.client.HTTPSConnection):
        response_class = DeadlineResponse

        def connect(self):
            self.timeout = time_left()
            super().connect()

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, request):
            return self.do_open(DeadlineHTTP, request)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, request):
            return self.do_open(DeadlineHTTPS, request)

    return [HTTPHandler(), HTTPSHandler()]


# -- from bytes to tables ------------------------------------------------------------------------


def _read_folder(folder: Path, fmt: str | None, max_bytes: int,
                 reading: _Reading) -> tuple[list[_Table], str]:
    if fmt == "csv-combined":
        raise BadInput(f"{folder}: a folder holds one file per level; --format csv-combined "
                       f"reads one file: give the file")
    found: dict[str, dict[str, list[Path]]] = {".csv": {}, ".json": {}}
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if suffix in found and path.is_file():
            level = level_named(path.stem)
            if level is None:
                reading.warnings.append(f"{path}: ignored (not named after a level)")
            else:
                found[suffix].setdefault(level, []).append(path)
    if fmt is None:
        kinds = [suffix for suffix, files in found.items() if files]
        if len(kinds) > 1:
            raise BadInput(f"{folder}: holds both .csv and .json level files: "
                           f"pass --format csv or --format json")
        suffix = kinds[0] if kinds else ".csv"
    else:
        suffix = ".json" if fmt == "json" else ".csv"
    files = found[suffix]
    if not files:
        names = ", ".join(f"{level}{suffix}" for level in LEVELS)
        raise BadInput(f"{folder}: no level file ({names})")
    tables: list[_Table] = []
    for level in LEVELS:
        paths = files.get(level, [])
        if len(paths) > 1:
            reading.problems.append(f"{folder}: {' and '.join(p.name for p in paths)} "
                                    f"are both {level}: keep one")
        elif paths:
            data = _read_bytes(paths[0], max_bytes)
            if suffix == ".json":
                tables += _json_tables(paths[0].name, data, level, reading)
            else:
                tables += _csv_tables(paths[0].name, data, level, reading, combined=False)
    return tables, "json" if suffix == ".json" else "csv-per-level"


def _read_file(name: str, data: bytes, fmt: str | None, content_type: str | None,
               reading: _Reading) -> tuple[list[_Table], str]:
    suffix = PurePosixPath(name).suffix.lower()
    given = fmt
    if fmt is None:
        head = data.lstrip(codecs.BOM_UTF8 + b" \t\r\n")[:1]
        if suffix == ".json" or content_type == "application/json":
            fmt = "json"
        elif suffix == ".csv" or content_type == "text/csv":
            fmt = "csv"
        elif head in (b"[", b"{"):
            fmt = "json"
        else:
            raise BadInput(f"{name}: cannot tell its format (not .csv or .json): "
                           f"pass --format {', '.join(FORMATS)}")
    level = level_named(PurePosixPath(name).stem)
    if fmt == "json":
        return _json_tables(name, data, level, reading), "json"
    combined = {"csv-combined": True, "csv": False, "csv-per-level": False}.get(given)
    tables = _csv_tables(name, data, level, reading, combined=combined)
    combined = any(table.level is None for table in tables)
    return tables, "csv-combined" if combined else "csv-per-level"


def _decode(name: str, data: bytes, reading: _Reading) -> str | None:
    """The text of a UTF-8 file (a BOM is fine), or None with the problems recorded."""
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        reading.problems.append(f"{name} is UTF-32; save it as UTF-8")
        return None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        reading.problems.append(f"{name} is UTF-16; save it as UTF-8")
        return None
    text = data.decode("utf-8", "surrogateescape")
    # Byte offsets count from 0 at the start of the file, as a hex editor shows them.
    offset = previous = 0
    line = 1
    bad = False
    for run in _ESCAPED_BYTES.finditer(text):
        offset += len(text[previous:run.start()].encode("utf-8", "surrogateescape"))
        line += text.count("\n", previous, run.start())
        previous = run.start()
        first = ord(run.group()[0]) - 0xDC00
        reading.problems.append(f"{name}: not UTF-8 at line {line}, byte {offset} "
                                f"(0x{first:02X})")
        bad = True
    if bad:
        return None
    if "\x00" in text:
        at = len(text[:text.index("\x00")].encode("utf-8"))
        reading.problems.append(f"{name}: a NUL byte at byte {at}: is it UTF-16 without a BOM? "
                                f"save it as UTF-8")
        return None
    return text.removeprefix("\ufeff")


def _csv_tables(name: str, data: bytes, level: str | None, reading: _Reading,
                combined: bool | None = None) -> list[_Table]:
    """The file as one table. `combined`: True a level column is needed, False the file's name
    gives the level, None (detect) a level column decides."""
    text = _decode(name, data, reading)
    if text is None:
        return []
    if not text.strip():
        reading.problems.append(f"{name} is empty")
        return []
    first_line = text.lstrip("\r\n").split("\n", 1)[0]
    # Spreadsheets in some locales export ';' or tabs: the header line tells which.
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    headers: list[str] | None = None
    table: _Table | None = None
    row_number = 0  # as a spreadsheet counts: the header is row 1
    data_rows = 0
    try:
        for row_number, record in enumerate(reader, start=1):
            if not any(value.strip() for value in record):
                continue
            if headers is None:
                headers = record
                has_level = any(_normal_header(h) in LEVEL_HEADERS for h in headers)
                if combined is None:
                    combined = has_level
                if combined and not has_level:
                    _missing_column(reading, name, "level", LEVEL_HEADERS, headers)
                    return []
                if not combined and level is None:
                    reading.problems.append(
                        f"{name}: no level column, and its name does not say the level "
                        f"({', '.join(f'{lv}.csv' for lv in LEVELS)}): rename it or add a "
                        f"level column")
                    return []
                table = _Table(name, None if combined else level, headers)
                continue
            where = f"{name} row {row_number}"
            data_rows += 1
            if len(record) != len(headers):
                reading.problems.append(f"{where}: {len(record)} fields, the header has "
                                        f"{len(headers)}")
                continue
            table.records.append((where, dict(zip(headers, record))))
    except csv.Error as error:
        reading.problems.append(f"{name} row {row_number + 1}: not readable as CSV ({error}); "
                                f"the rest of the file is not read")
        return []
    if table is not None and not data_rows and table.level is not None:
        reading.problems.append(f"{name} has a header but no rows")
    return [table] if table is not None else []


def _json_tables(name: str, data: bytes, level: str | None, reading: _Reading) -> list[_Table]:
    text = _decode(name, data, reading)
    if text is None:
        return []
    repeated: list[str] = []

    def no_repeated_keys(pairs):
        keys = [key for key, _ in pairs]
        repeated.extend(sorted({key for key in keys if keys.count(key) > 1}))
        return dict(pairs)

    try:
        document = json.loads(text, object_pairs_hook=no_repeated_keys)
    except json.JSONDecodeError as error:
        reading.problems.append(f"{name} is not valid JSON: {error.msg} at line {error.lineno}, "
                                f"column {error.colno}")
        return []
    for key in dict.fromkeys(repeated):
        reading.problems.append(f"{name}: key {key!r} twice in one object (one would be lost)")
    if isinstance(document, list):
        return [_json_table(name, name + " ", level, document, reading)]
    if not isinstance(document, dict):
        reading.problems.append(f"{name}: a JSON list of objects or an object with one list per "
                                f"level is needed, not {_a(_json_type(document))}")
        return []
    tables = []
    by_level: dict[str, str] = {}
    for key, items in document.items():
        key_level = level_named(key)
        if key_level is None:
            reading.problems.append(f"{name}: key {key!r} is not a level (division, district, "
                                    f"upazila or union)")
        elif key_level in by_level:
            reading.problems.append(f"{name}: keys {by_level[key_level]!r} and {key!r} are both "
                                    f"{key_level}: keep one")
        elif level is not None and key_level != level:
            reading.problems.append(f"{name}: key {key!r} in a file of {level}")
        elif not isinstance(items, list):
            reading.problems.append(f"{name} {key}: a list is needed, not {_a(_json_type(items))}")
        else:
            by_level[key_level] = key
            tables.append(_json_table(f"{name} {key}", f"{name} {key}", key_level, items,
                                      reading))
    return tables


def _json_table(label: str, prefix: str, level: str | None, items: list,
                reading: _Reading) -> _Table:
    table = _Table(label, level, [], column="key")
    if not items and level is not None:
        reading.problems.append(f"{label} is an empty list")
    keys: dict[str, None] = {}
    for index, item in enumerate(items):
        where = f"{prefix}[{index}]"
        if not isinstance(item, dict):
            reading.problems.append(f"{where}: an object is needed, not {_a(_json_type(item))}")
            continue
        keys.update(dict.fromkeys(item))
        table.records.append((where, item))
    table.headers = list(keys)
    return table


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), "number")


# -- from tables to rows -------------------------------------------------------------------------


def _normal_header(header: str) -> str:
    return re.sub(r"[\s\-]+", "_", header.strip().casefold())


def _missing_column(reading: _Reading, label: str, field_name: str, aliases: tuple[str, ...],
                    headers: list[str], level: str | None = None, column: str = "column") -> None:
    of = f" of {level}" if level else ""
    has = ", ".join(repr(h) for h in headers) or "none"
    reading.problems.append(f"{label}: no {FIELD_LABELS[field_name]} {column}{of} (one of "
                            f"{', '.join(aliases)}); its {'keys' if column == 'key' else 'headers'}"
                            f": {has}")


def _columns(table: _Table, reading: _Reading) -> dict[tuple[str, str | None], str] | None:
    """Which header holds each field: (field, level or None) -> header; None if unusable."""
    problems_before = len(reading.problems)
    found: dict[tuple[str, str | None], str] = {}

    def find(field_name: str, aliases: tuple[str, ...], level: str | None,
             required: bool) -> None:
        matches = [h for h in table.headers if _normal_header(h) in aliases]
        if len(matches) > 1:
            of = f" of {level}" if level and field_name == "parent_code" else ""
            reading.problems.append(
                f"{table.label}: {table.column}s {', '.join(repr(h) for h in matches)} are all the "
                f"{FIELD_LABELS[field_name]}{of}: keep one")
        elif matches:
            found[field_name, level] = matches[0]
        elif required:
            _missing_column(reading, table.label, field_name, aliases, table.headers,
                            level if field_name == "parent_code" else None, table.column)

    find("code", CODE_HEADERS, None, True)
    find("name_en", NAME_EN_HEADERS, None, True)
    find("name_bn", NAME_BN_HEADERS, None, True)
    if table.level is None:
        find("level", LEVEL_HEADERS, None, True)
        present = {_record_level(values, found.get(("level", None))) for _, values in
                   table.records}
    else:
        find("level", LEVEL_HEADERS, None, False)
        present = {table.level}
    for level in LEVELS:
        if level in present:
            find("parent_code", PARENT_HEADERS[level], level, required=level != "divisions")
    if len(reading.problems) > problems_before:
        return None
    used = set(found.values())
    parent_headers = {header for (name, _), header in found.items() if name == "parent_code"}
    order = {header: position for position, header in enumerate(table.headers)}
    for (field_name, level), header in sorted(found.items(), key=lambda item: order[item[1]]):
        # One parent column for every level is "parent_code"; per-level ones say their level.
        target = field_name
        if level is not None and table.level is None and len(parent_headers) > 1:
            target = f"{field_name} of {level}"
        entry = (table.label, header, target)
        if entry not in reading.header_mapping:
            reading.header_mapping.append(entry)
    ignored = [h for h in table.headers if h not in used and h.strip()]
    if ignored:
        reading.warnings.append(f"{table.label}: {table.column}s ignored: "
                                f"{', '.join(repr(h) for h in ignored)}")
    return found


def _record_level(values: dict[str, object], header: str | None) -> str | None:
    value = values.get(header) if header else None
    return level_named(value) if isinstance(value, str) else None


@dataclass
class _Numbers:
    """JSON numbers read as codes, per table: one warning each, not one per row."""

    count: int = 0
    example: str = ""


def _rows(tables: list[_Table], reading: _Reading) -> dict[str, list[SourceRow]]:
    rows: dict[str, list[SourceRow]] = {level: [] for level in LEVELS}
    for table in tables:
        if not table.records:  # nothing to map (an empty level is reported where it is read)
            continue
        columns = _columns(table, reading)
        if columns is None:
            continue
        numbers = _Numbers()
        for where, values in table.records:
            row = _row(table, where, values, columns, numbers, reading)
            if row is not None:
                rows[row.level].append(row)
        if numbers.count:
            reading.warnings.append(
                f"{table.label}: {numbers.count} codes were JSON numbers, read as text (e.g. "
                f"{numbers.example!r}); a leading zero lost before cannot come back")
    _check_across_rows(rows, reading)
    return rows


def _row(table: _Table, where: str, values: dict[str, object],
         columns: dict[tuple[str, str | None], str], numbers: _Numbers,
         reading: _Reading) -> SourceRow | None:
    problems = reading.problems
    before = len(problems)
    level = table.level
    level_header = columns.get(("level", None))
    if level_header is not None:
        raw = values.get(level_header)
        named = level_named(raw) if isinstance(raw, str) else None
        if named is None:
            problems.append(f"{where}: level {raw!r} is not a level (division, district, "
                            f"upazila or union)")
            return None
        if level is not None and named != level:
            problems.append(f"{where}: level {raw!r} in a table of {level}")
            return None
        level = named

    def text(field_name: str, level_key: str | None = None) -> str:
        header = columns.get((field_name, level_key))
        value = values.get(header) if header is not None else None
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if field_name in ("code", "parent_code") and type(value) is int:
            numbers.count += 1
            numbers.example = numbers.example or str(value)
            return str(value)
        problems.append(f"{where}: {FIELD_LABELS[field_name]} is a JSON {_json_type(value)} "
                        f"({value!r}), not text")
        return ""

    code = text("code").strip()
    if code:
        reading.codes.setdefault(level, set()).add(code_key(code))
    parent_code = text("parent_code", level).strip() or None
    name_en = _tidy(text("name_en"), where, "English name", reading.warnings)
    name_bn = _tidy(text("name_bn"), where, "Bengali name", reading.warnings) or None
    if len(problems) > before:  # a value that is not text: "is empty" would only repeat it
        return None
    if not code:
        problems.append(f"{where}: code is empty")
    elif len(code) > CODE_MAX:
        shown = code if len(code) <= 40 else code[:40] + "..."
        problems.append(f"{where}: code {shown!r} is {len(code)} characters, more than "
                        f"{CODE_MAX}")
    elif not _CODE.fullmatch(code):
        problems.append(_not_a_code(where, "code", code))
    if level == "divisions":
        if parent_code is not None:
            problems.append(f"{where}: parent code {parent_code!r} given, but a division has no "
                            f"parent")
    elif parent_code is None:
        problems.append(f"{where}: parent code is empty (the {SINGULAR[PARENT_LEVEL[level]]} "
                        f"it belongs to)")
    elif len(parent_code) > CODE_MAX:
        problems.append(f"{where}: parent code is {len(parent_code)} characters, more than "
                        f"{CODE_MAX}")
    elif not _CODE.fullmatch(parent_code):
        problems.append(_not_a_code(where, "parent code", parent_code))
    if not name_en:
        problems.append(f"{where}: English name is empty")
    for label, name in (("English name", name_en), ("Bengali name", name_bn or "")):
        if len(name) > NAME_MAX:
            problems.append(f"{where}: {label} is {len(name)} characters, more than {NAME_MAX}")
    for label, value in (("code", code), ("parent code", parent_code or ""),
                         ("English name", name_en), ("Bengali name", name_bn or "")):
        if _SURROGATE.search(value):
            problems.append(f"{where}: {label} holds a lone surrogate escape (\\udXXX): not "
                            f"valid Unicode text")
    if len(problems) > before:
        return None
    return SourceRow(level, code, parent_code, name_en, name_bn, where)


def _not_a_code(where: str, label: str, code: str) -> str:
    return (f"{where}: {label} {code!r} holds other characters than ASCII letters, digits, "
            f"'_' and '-' (the database would match it to another code)")


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _tidy(name: str, where: str, label: str, warnings: list[str]) -> str:
    """The name trimmed, inner runs of whitespace one space; a fix is a warning."""
    tidy = _WHITESPACE_RUN.sub(" ", name).strip()
    if tidy != name and tidy:
        warnings.append(f"{where}: {label} {name!r} trimmed to {tidy!r}")
    return tidy


def _check_across_rows(rows: dict[str, list[SourceRow]], reading: _Reading) -> None:
    for level in LEVELS:
        first_at: dict[str, SourceRow] = {}
        for row in rows[level]:
            first = first_at.get(code_key(row.code))
            if first is None:
                first_at[code_key(row.code)] = row
            elif first.code == row.code:
                reading.problems.append(f"{row.where}: code {row.code!r} is already at "
                                        f"{first.where} ({level})")
            else:
                reading.problems.append(f"{row.where}: code {row.code!r} is already at "
                                        f"{first.where} as {first.code!r} ({level}; codes "
                                        f"differing only in case are one code)")
        parent_level = PARENT_LEVEL.get(level)
        # A parent level the source does not hold is in the database: the planner checks it.
        if parent_level and parent_level in reading.codes:
            parents = reading.codes[parent_level]
            for row in rows[level]:
                if code_key(row.parent_code) not in parents:
                    reading.problems.append(
                        f"{row.where}: parent code {row.parent_code!r} is not "
                        f"{_a(SINGULAR[parent_level])} in the source")
        named: dict[tuple[str | None, str], list[SourceRow]] = {}
        for row in rows[level]:
            named.setdefault((row.parent_code, row.name_en.casefold()), []).append(row)
        for (parent_code, _), same in named.items():
            if len(same) > 1:
                under = (f" under {SINGULAR[parent_level]} {parent_code!r}" if parent_level
                         else "")
                reading.warnings.append(
                    f"{', '.join(row.where for row in same)}: {len(same)} {level} named "
                    f"{same[0].name_en!r}{under} (codes tell them apart)")
