"""Saved queries: ``.sql`` files with a header that names and types their parameters.

A saved query is one SELECT over the idc-index tables, opened by a comment header::

    -- name: sm_by_organ
    -- description: Slide microscopy series whose specimen is from one organ.
    -- param organ VARCHAR = 'Pancreas': CodeMeaning of the primary anatomic structure
    -- param min_power INTEGER = NULL: lowest objective lens power (NULL: any)
    SELECT ... WHERE primaryAnatomicStructure_CodeMeaning = $organ

A parameter is ``-- param NAME TYPE [= DEFAULT][: description]``; TYPE is one of
VARCHAR, INTEGER, BIGINT, DOUBLE, BOOLEAN, DATE, or a list ``VARCHAR[]``. A
parameter with no default is required. DuckDB binds the values (``$name``);
they are never formatted into the SQL text. A default may also name a setting
(``= @newest_google_store``), resolved when the query runs (:data:`SETTINGS`).

A query's name is its ``-- name:`` header when it has one, else its file stem;
listing and lookup use the same name. On the command line a parameter is
``-p NAME=VALUE`` or, typed (for ad-hoc SQL), ``-p NAME:TYPE=VALUE``; a repeated
``-p`` adds values to a list parameter and is an error for any other.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ParameterError, QueryFileError

_HEADER = re.compile(r"^--\s*(name|description|param)\s*:?\s*(.*)$", re.I)
_PARAM = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s+(?P<type>[A-Za-z]+(?:\[\])?)"
    r"(?:\s*=\s*(?P<default>'(?:[^']|'')*'|\[[^\]]*\]|[^:\s]+))?\s*(?::\s*(?P<doc>.*))?$"
)
TYPES = {"VARCHAR", "INTEGER", "BIGINT", "DOUBLE", "BOOLEAN", "DATE"}
#: Other spellings of the types, as written in a cast (``$n::INT``).
_ALIASES = {"INT": "INTEGER", "INT4": "INTEGER", "INT8": "BIGINT", "LONG": "BIGINT", "TEXT": "VARCHAR",
            "STRING": "VARCHAR", "FLOAT8": "DOUBLE", "BOOL": "BOOLEAN"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _newest_google_store() -> int:
    from .releases import default_newest_store  # noqa: PLC0415

    return default_newest_store()


#: Settings a parameter default may name (``-- param newest_store INTEGER = @newest_google_store``):
#: the same values the rest of the package uses, so that a query and ``cohort coverage`` agree.
SETTINGS: dict[str, Callable[[], Any]] = {"newest_google_store": _newest_google_store}


def normalize_type(text: str) -> str | None:
    """``varchar[]`` -> ``VARCHAR[]``, ``int`` -> ``INTEGER``; None when it is not a parameter type."""
    text = text.strip().upper()
    base, suffix = (text[:-2], "[]") if text.endswith("[]") else (text, "")
    base = _ALIASES.get(base, base)
    return base + suffix if base in TYPES else None


@dataclass(frozen=True)
class CommandLineValue:
    """A parameter as given on the command line: ``-p NAME[:TYPE]=VALUE``, perhaps several times."""

    name: str
    texts: tuple[str, ...]
    type: str | None = None

    def __str__(self) -> str:
        typed = f":{self.type}" if self.type else ""
        return " ".join(f"-p {self.name}{typed}={t}" for t in self.texts)


def parse_assignments(items: Iterable[str]) -> dict[str, CommandLineValue]:
    """``["m:VARCHAR[]=CT,MR", "n=3"]`` -> values by name; a repeated name keeps every value."""
    found: dict[str, CommandLineValue] = {}
    for item in items:
        left, sep, text = item.partition("=")
        name, colon, typ = left.partition(":")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ParameterError(f"-p {item!r} is not NAME=VALUE or NAME:TYPE=VALUE (e.g. -p modality=SM, "
                                 "-p m:VARCHAR[]=CT,MR)")
        ptype = None
        if colon:
            ptype = normalize_type(typ)
            if ptype is None:
                raise ParameterError(f"-p {item!r}: type {typ.strip()!r} is not one of {', '.join(sorted(TYPES))} "
                                     "or a list of one (e.g. VARCHAR[])")
        if name in found:
            old = found[name]
            if old.type != ptype:
                raise ParameterError(f"-p {name} is given with two types ({old.type or 'untyped'} and "
                                     f"{ptype or 'untyped'}); give one")
            found[name] = CommandLineValue(name, old.texts + (text,), ptype)
        else:
            found[name] = CommandLineValue(name, (text,), ptype)
    return found




@dataclass(frozen=True)
class Parameter:
    """One named parameter of a saved query."""

    name: str
    type: str
    default: Any = None
    required: bool = True
    description: str = ""
    #: A setting the default comes from (``@newest_google_store``), resolved at bind time.
    setting: str | None = None

    @property
    def is_list(self) -> bool:
        return self.type.endswith("[]")

    def convert(self, value: Any, source: str = "") -> Any:
        """Turn a Python or command-line value into this parameter's type."""
        if value is None:
            return None
        base = self.type[:-2] if self.is_list else self.type
        if isinstance(value, CommandLineValue):
            if value.type and value.type != self.type:
                raise ParameterError(f"{value} gives type {value.type}, but {self.name} is {self.type}; "
                                     f"drop the type (-p {self.name}=...)", source=source or None)
            if len(value.texts) > 1 and not self.is_list:
                raise ParameterError(
                    f"parameter {self.name!r} is given {len(value.texts)} times ({value}); it takes one "
                    f"{self.type} value, so give it once (to ask for several values, run the query once per value)",
                    source=source or None)
            if self.is_list:
                return [self._scalar(base, v, source) for t in value.texts for v in _split_list(t)]
            value = value.texts[0]
        if self.is_list:
            items = value if isinstance(value, (list, tuple, set)) else _split_list(str(value))
            return [self._scalar(base, v, source) for v in items]
        if isinstance(value, (list, tuple, set, dict)):
            raise ParameterError(f"parameter {self.name!r} expects one {self.type} value, got {type(value).__name__} "
                                 f"{value!r}", source=source or None)
        return self._scalar(base, value, source)

    def _scalar(self, base: str, value: Any, source: str) -> Any:
        try:
            if base == "VARCHAR":
                return str(value)
            if base in ("INTEGER", "BIGINT"):
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                return int(value)
            if base == "DOUBLE":
                return float(value)
            if base == "BOOLEAN":
                if isinstance(value, bool):
                    return value
                text = str(value).strip().lower()
                if text in ("true", "1", "yes", "on"):
                    return True
                if text in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            if base == "DATE":
                return value if isinstance(value, _dt.date) else _dt.date.fromisoformat(str(value))
        except (TypeError, ValueError):
            pass
        raise ParameterError(
            f"parameter {self.name!r} expects {self.type}, got {value!r}", source=source or None
        )

    def default_value(self) -> Any:
        """The default, with a setting resolved (``@newest_google_store`` -> 24)."""
        if self.setting is None:
            return self.default
        return self.convert(SETTINGS[self.setting](), f"setting @{self.setting}")

    def describe(self) -> str:
        if self.required:
            default = "required"
        elif self.setting:
            default = f"default @{self.setting}, now {_show(self.default_value())}"
        else:
            default = f"default {_show(self.default)}"
        return f"{self.name} ({self.type}, {default})" + (f": {self.description}" if self.description else "")


@dataclass(frozen=True)
class SavedQuery:
    """A parsed ``.sql`` file: its header and SQL."""

    name: str
    description: str
    sql: str
    parameters: tuple[Parameter, ...] = ()
    path: Path | None = None

    @property
    def source(self) -> str:
        return str(self.path) if self.path else f"<query {self.name}>"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def bind(self, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Check and convert parameter values; fill defaults. Raises ParameterError."""
        values = dict(values or {})
        known = {p.name: p for p in self.parameters}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ParameterError(
                f"unknown parameter(s) {', '.join(unknown)}; {self.name} takes "
                + (", ".join(p.describe() for p in self.parameters) or "no parameters"),
                source=self.source,
            )
        bound = {}
        for p in self.parameters:
            if p.name in values:
                bound[p.name] = p.convert(values[p.name], self.source)
            elif p.required:
                raise ParameterError(
                    f"missing parameter {p.name!r} ({p.type}); pass it as -p {p.name}=VALUE "
                    f"or {p.name}=... in Python",
                    source=self.source,
                )
            else:
                bound[p.name] = p.default_value()
        return bound

    @classmethod
    def parse(cls, text: str, path: Path | None = None, name: str | None = None) -> SavedQuery:
        where = str(path) if path else "<sql>"
        meta: dict[str, str] = {}
        params: list[Parameter] = []
        param_lines: dict[str, int] = {}
        for lineno, m in _header_matches(text):
            key, rest = m.group(1).lower(), m.group(2).strip()
            if key == "param":
                param = _parse_param(rest, f"{where}:{lineno}")
                if param.name in param_lines:
                    raise QueryFileError(f"{where}:{lineno}: parameter {param.name} is declared twice "
                                         f"(first on line {param_lines[param.name]}); keep one")
                params.append(param)
                param_lines[param.name] = lineno
            else:
                if key == "name" and not _NAME.match(rest):
                    raise QueryFileError(f"{where}:{lineno}: query name {rest!r} is not a name (letters, digits, "
                                         "_ . -, starting with a letter or _), e.g. `-- name: ct_chest`")
                meta[key] = rest
        default_name = path.stem if path else "sql"
        code = _strip_comments_and_strings(text)
        used = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", code))
        declared = {p.name for p in params}
        if used - declared:
            missing = sorted(used - declared)
            line = code.count("\n", 0, code.index(f"${missing[0]}")) + 1
            raise QueryFileError(
                f"{where}:{line}: the SQL uses ${', $'.join(missing)} but the header declares no such "
                f"parameter; add a line like `-- param {missing[0]} VARCHAR` to the header"
            )
        if declared - used:
            unused = sorted(declared - used, key=param_lines.get)
            raise QueryFileError(
                f"{where}:{param_lines[unused[0]]}: parameter(s) {', '.join(unused)} declared but not used "
                "in the SQL; use it as $" + unused[0] + " or delete the line"
            )
        _check_syntax(text, where)
        return cls(
            name=name or meta.get("name") or default_name,
            description=meta.get("description", ""),
            sql=text,
            parameters=tuple(params),
            path=path,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> SavedQuery:
        path = Path(path)
        return cls.parse(_read(path), path)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise QueryFileError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                             "save the file as UTF-8") from None
    except OSError as exc:
        raise QueryFileError(f"cannot read query file {path}: {exc.strerror or exc}") from None


def _check_syntax(text: str, where: str) -> None:
    """A query that DuckDB cannot parse is a file error with its line (DuckDB counts lines from the file's start)."""
    import duckdb  # noqa: PLC0415 - only when a query file is read

    try:
        duckdb.extract_statements(text)
    except duckdb.Error as exc:
        message = str(exc)
        m = re.search(r"LINE (\d+):", message)
        first = message.strip().splitlines()[0]
        raise QueryFileError(f"{where}:{m.group(1) if m else 1}: the SQL does not parse: {first}") from None


def _parse_param(rest: str, where: str) -> Parameter:
    m = _PARAM.match(rest)
    if not m:
        raise QueryFileError(
            f"{where}: cannot read parameter line {rest!r}; the form is "
            "`-- param NAME TYPE [= DEFAULT][: description]`, e.g. `-- param organ VARCHAR = 'Pancreas'`"
        )
    ptype = m.group("type").upper()
    if ptype.rstrip("[]") not in TYPES:
        raise QueryFileError(f"{where}: parameter type {ptype} is not one of {', '.join(sorted(TYPES))} (or a list, e.g. VARCHAR[])")
    raw = m.group("default")
    p = Parameter(m.group("name"), ptype, None, raw is None, (m.group("doc") or "").strip())
    if raw is None or raw.upper() == "NULL":
        return p
    if raw.startswith("@"):
        if raw[1:] not in SETTINGS:
            raise QueryFileError(f"{where}: default {raw} names no setting; settings are "
                                 + ", ".join(f"@{k}" for k in sorted(SETTINGS)))
        return Parameter(p.name, ptype, None, False, p.description, setting=raw[1:])
    value: Any
    if raw.startswith("'"):
        value = raw[1:-1].replace("''", "'")
    elif raw.startswith("["):
        value = json.loads(raw.replace("'", '"'))
    else:
        value = raw
    try:
        converted = p.convert(value, where)
    except ParameterError:
        raise QueryFileError(f"{where}: default {raw} of parameter {p.name} is not a {ptype}") from None
    return Parameter(p.name, ptype, converted, False, p.description)


def _split_list(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("["):
        try:
            return list(json.loads(text))
        except json.JSONDecodeError:
            pass
    return [t.strip() for t in text.split(",") if t.strip()]


def _strip_comments_and_strings(sql: str) -> str:
    """Blank out comments and string literals, keeping line breaks (for line numbers)."""
    return re.sub(r"--[^\n]*|'(?:[^']|'')*'", lambda m: re.sub(r"[^\n]", " ", m.group()), sql)


def _show(value: Any) -> str:
    return "NULL" if value is None else repr(value)


# -- parameters of ad-hoc SQL ---------------------------------------------------
def bind_sql(sql: str, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Convert the parameters of ad-hoc SQL (no header declares them) and refuse the silent mistakes.

    A command-line value is converted to its given type (``-p m:VARCHAR[]=CT,MR``), else to the
    type of a cast in the SQL (``$m::VARCHAR[]``), else left as text. Refused, with a hint:
    text used as ``x IN $m`` (DuckDB then tests for a substring: ``'T' IN 'CT,MR'`` is true),
    text with a comma used as ``x IN (..., $m)`` (one value, not several), and a repeated ``-p``
    of a parameter that is not a list.
    """
    code = _strip_comments_and_strings(sql)
    bound: dict[str, Any] = {}
    for name, value in dict(values or {}).items():
        ref = re.escape(f"${name}")
        if isinstance(value, CommandLineValue):
            cast = re.search(rf"{ref}\b\s*::\s*([A-Za-z0-9]+(?:\s*\[\])?)", code)
            ptype = value.type or (normalize_type(cast.group(1).replace(" ", "")) if cast else None)
            if ptype is None and len(value.texts) > 1:
                raise ParameterError(f"parameter {name!r} is given {len(value.texts)} times ({value}); for a list "
                                     f"give its type once: -p {name}:VARCHAR[]={','.join(value.texts)}", sql=sql)
            value = Parameter(name, ptype).convert(value) if ptype else value.texts[0]
        if isinstance(value, str):
            if re.search(rf"\bIN\s+{ref}\b", code, re.I):
                raise ParameterError(
                    f"`IN ${name}` with the text {value!r} tests for a substring in DuckDB (so 'T' IN 'CT,MR' "
                    f"is true); pass a list: -p {name}:VARCHAR[]={value} (Python: a list), or write `= ${name}`",
                    sql=sql)
            if "," in value and re.search(rf"\bIN\s*\([^()]*{ref}\b", code, re.I):
                raise ParameterError(
                    f"`IN (${name})` compares with the one text {value!r}, commas included; for several values "
                    f"pass a list, -p {name}:VARCHAR[]={value}, and write `IN ${name}` or list_contains(${name}, x)",
                    sql=sql)
        bound[name] = value
    return bound


# -- the library of saved queries ---------------------------------------------
def queries_dir() -> Path:
    """The shipped queries: inside the wheel, or ``queries/`` of a source checkout."""
    inside = Path(__file__).parent / "queries"
    return inside if inside.is_dir() else Path(__file__).resolve().parent.parent / "queries"


def search_path() -> list[Path]:
    """Directories searched for saved queries by name: ``$COHORT_QUERY_PATH`` (os.pathsep-separated), then the shipped ones."""
    extra = [Path(p) for p in os.environ.get("COHORT_QUERY_PATH", "").split(os.pathsep) if p]
    return extra + [queries_dir()]


@dataclass(frozen=True)
class QueryEntry:
    """One ``.sql`` file on the search path: its name, and the query or why it cannot be read."""

    name: str
    path: Path
    query: SavedQuery | None = None
    #: The file's error (``file:line: ...``) when it is malformed; the other queries still work.
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def query_name(path: Path) -> str:
    """A query file's name: its ``-- name:`` header when it has a valid one, else the file stem.

    Read leniently (a file whose header is otherwise broken still has a name to list and run it by).
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return path.stem
    for _, m in _header_matches(text):
        if m.group(1).lower() == "name" and _NAME.match(m.group(2).strip()):
            return m.group(2).strip()
    return path.stem


def _header_matches(text: str) -> Iterator[tuple[int, re.Match[str]]]:
    """(line number, match) of each ``-- name|description|param`` line of the header (the leading comments)."""
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            return
        m = _HEADER.match(stripped)
        if m:
            yield lineno, m


def _files() -> list[tuple[str, Path]]:
    """(name, path) of every query file on the search path; the first file of a name wins."""
    seen: dict[str, Path] = {}
    for directory in search_path():
        for path in sorted(directory.glob("*.sql")):
            seen.setdefault(query_name(path), path)
    return sorted(seen.items())


def scan_queries() -> list[QueryEntry]:
    """Every saved query on the search path, broken ones included (with their error), by name."""
    entries = []
    for name, path in _files():
        try:
            entries.append(QueryEntry(name, path, SavedQuery.from_file(path)))
        except QueryFileError as exc:
            entries.append(QueryEntry(name, path, error=str(exc)))
    return entries


def list_queries() -> list[SavedQuery]:
    """Every readable saved query on the search path (first one of a name wins); see :func:`scan_queries`."""
    return [e.query for e in scan_queries() if e.query is not None]


def load_query(name_or_path: str | os.PathLike) -> SavedQuery:
    """A saved query by name (``sm_by_organ``) or by the path of a ``.sql`` file."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix == ".sql" or os.sep in text or path.is_file():
        if not path.is_file():
            raise QueryFileError(f"query file {path} does not exist")
        return SavedQuery.from_file(path)
    files = _files()
    for name, candidate in files:
        if name == text:
            return SavedQuery.from_file(candidate)
    names = [name for name, _ in files]
    renamed = [f"{p} is named {n!r} by its -- name: header" for n, p in files if p.stem == text]
    close = difflib.get_close_matches(text, names, n=3)
    raise QueryFileError(
        f"no saved query named {text!r}"
        + (f" ({'; '.join(renamed)}: run it by that name)" if renamed else "")
        + (f"; did you mean {', '.join(close)}?" if close else "")
        + f" Available: {', '.join(names)} (see `cohort queries`), or pass a path to a .sql file"
    )
