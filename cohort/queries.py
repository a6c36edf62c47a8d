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
they are never formatted into the SQL text.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping
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


@dataclass(frozen=True)
class Parameter:
    """One named parameter of a saved query."""

    name: str
    type: str
    default: Any = None
    required: bool = True
    description: str = ""

    def convert(self, value: Any, source: str = "") -> Any:
        """Turn a Python or command-line value into this parameter's type."""
        if value is None:
            return None
        base, is_list = (self.type[:-2], True) if self.type.endswith("[]") else (self.type, False)
        if is_list:
            items = value if isinstance(value, (list, tuple, set)) else _split_list(str(value))
            return [self._scalar(base, v, source) for v in items]
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

    def describe(self) -> str:
        default = "required" if self.required else f"default {_show(self.default)}"
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
                bound[p.name] = p.default
        return bound

    @classmethod
    def parse(cls, text: str, path: Path | None = None, name: str | None = None) -> SavedQuery:
        where = str(path) if path else "<sql>"
        meta: dict[str, str] = {}
        params: list[Parameter] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not stripped:
                continue
            if not stripped.startswith("--"):
                break
            m = _HEADER.match(stripped)
            if not m:
                continue
            key, rest = m.group(1).lower(), m.group(2).strip()
            if key == "param":
                params.append(_parse_param(rest, f"{where}:{lineno}"))
            else:
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
            raise QueryFileError(
                f"{where}: parameter(s) {', '.join(sorted(declared - used))} declared but not used in the SQL"
            )
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
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise QueryFileError(f"cannot read query file {path}: {exc.strerror or exc}") from None
        return cls.parse(text, path)


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


# -- the library of saved queries ---------------------------------------------
def queries_dir() -> Path:
    """The shipped queries: inside the wheel, or ``queries/`` of a source checkout."""
    inside = Path(__file__).parent / "queries"
    return inside if inside.is_dir() else Path(__file__).resolve().parent.parent / "queries"


def search_path() -> list[Path]:
    """Directories searched for saved queries by name: ``$COHORT_QUERY_PATH`` (os.pathsep-separated), then the shipped ones."""
    extra = [Path(p) for p in os.environ.get("COHORT_QUERY_PATH", "").split(os.pathsep) if p]
    return extra + [queries_dir()]


def list_queries() -> list[SavedQuery]:
    """Every saved query on the search path (first one of a name wins)."""
    seen: dict[str, SavedQuery] = {}
    for directory in search_path():
        for path in sorted(directory.glob("*.sql")):
            q = SavedQuery.from_file(path)
            seen.setdefault(q.name, q)
    return sorted(seen.values(), key=lambda q: q.name)


def load_query(name_or_path: str | os.PathLike) -> SavedQuery:
    """A saved query by name (``sm_by_organ``) or by the path of a ``.sql`` file."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix == ".sql" or os.sep in text or path.is_file():
        if not path.is_file():
            raise QueryFileError(f"query file {path} does not exist")
        return SavedQuery.from_file(path)
    for directory in search_path():
        candidate = directory / f"{text}.sql"
        if candidate.is_file():
            return SavedQuery.from_file(candidate)
    names = [q.name for q in list_queries()]
    close = difflib.get_close_matches(text, names, n=3)
    raise QueryFileError(
        f"no saved query named {text!r}"
        + (f"; did you mean {', '.join(close)}?" if close else "")
        + f" Available: {', '.join(names)} (see `cohort queries`), or pass a path to a .sql file"
    )
