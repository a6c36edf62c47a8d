"""Manifest parsers: s5cmd, CSV/TSV, JSON (document or lines) and Parquet, to series references.

Each parser returns one :class:`Ref` per line (or row) that names a series, with its
line number, and the provenance header the file carries; nothing is resolved here
(see :mod:`.revisions`). A line that cannot name a series is an error naming file:line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .._text import skip_whitespace
from ..errors import ManifestError
from .formats import (
    COLUMNS, ENDPOINT_URLS, ID_COLUMNS, PARQUET_KEY, S5CMD_FORM, S5CMD_LINE, SERIES_URL, UUID_PATTERN,
    ManifestFormat, Provider, sidecar,
)

_HEADER = re.compile(r"^#\s*([A-Za-z_][A-Za-z0-9_]*):\s?(.*)$")


@dataclass(frozen=True)
class Ref:
    """One manifest line (or row) that names a series."""

    line: int
    uuid: str | None = None
    uid: str | None = None
    bucket: str | None = None


def parse(path: Path) -> tuple[ManifestFormat, list[Ref], dict, list[tuple[int, Provider]]]:
    """The file's format, its series references, its provenance header and its provider hints
    (``--endpoint-url`` in an s5cmd header, by line)."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
        if magic == b"PAR1":
            refs, header = _parse_parquet(path)
            return ManifestFormat.PARQUET, refs, header, []
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not a text manifest (not UTF-8 at byte {exc.start}) and not Parquet",
                            path=str(path)) from None
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest ({exc.strerror or exc}); check its permissions",
                            path=str(path)) from None
    lines = _physical_lines(text)
    first = next((ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    if first.startswith(("{", "[")):
        refs, header = _parse_json(path, text)
        return ManifestFormat.JSON, refs, header, []
    if path.suffix.lower() in (".s5cmd", ".txt") or S5CMD_LINE.match(first) or first.startswith(("cp ", "sync ")):
        return (ManifestFormat.S5CMD, *_parse_s5cmd(path, lines))
    tsv = path.suffix.lower() == ".tsv" or "\t" in first
    refs, header = _parse_delimited(path, text, "\t" if tsv else ",")
    header = _sidecar_header(path) or header
    return (ManifestFormat.TSV if tsv else ManifestFormat.CSV), refs, header, []


def _sidecar_header(path: Path) -> dict:
    """The provenance in ``PATH.provenance.json`` beside a CSV/TSV manifest, if there is one."""
    side = sidecar(path)
    if not side.is_file():
        return {}
    try:
        header = json.loads(side.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"the provenance file {side.name} is not readable JSON ({exc}); delete it or write "
                            "the manifest again", path=str(path)) from None
    return header if isinstance(header, dict) else {}


def _parse_s5cmd(path: Path, lines: list[str]) -> tuple[list[Ref], dict, list[tuple[int, Provider]]]:
    refs, header, hints = [], {}, []
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            _header_item(header, line)
            for provider, url in ENDPOINT_URLS.items():
                if f"--endpoint-url {url}" in line:
                    hints.append((no, provider))
            continue
        m = S5CMD_LINE.match(line)
        if not m or (line.startswith(("cp", "sync")) and not m.group("dest")):
            raise ManifestError(f"not an s5cmd copy line: {line[:120]!r}; expected `{S5CMD_FORM}`",
                                path=str(path), line=no)
        url = SERIES_URL.match(m.group("url"))
        if not url:
            raise ManifestError(f"{m.group('url')!r} does not name a series folder; expected `{S5CMD_FORM}` "
                                "where <crdc_series_uuid> is a UUID", path=str(path), line=no)
        refs.append(Ref(no, uuid=url["uuid"].lower(), bucket=url["bucket"]))
    return refs, header, hints


def _decode(text: str) -> Any:
    """A header value: JSON when it parses as JSON, else the text itself (see ``write._encode``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _header_item(header: dict, line: str) -> None:
    m = _HEADER.match(line)
    if not m:
        return
    key, value = m.group(1), _decode(m.group(2).strip())
    if key == "cite":
        header.setdefault(key, []).append(value)
    else:
        header[key] = value


def _physical_lines(text: str) -> list[str]:
    """The file's lines as an editor numbers them: split at CR, LF or CRLF only (not at U+2028,
    U+0085 and the other separators ``str.splitlines`` also breaks at, which may sit inside a field)."""
    return [ln.rstrip("\r\n") for ln in io.StringIO(text, newline="")]


def _parse_delimited(path: Path, text: str, delimiter: str) -> tuple[list[Ref], dict]:
    """CSV/TSV read as CSV over the whole text, so a quoted field may hold a newline; ``#`` lines
    and blank lines count only between rows. Errors name the physical line where the row starts."""
    header: dict[str, Any] = {}
    preamble = []
    columns: list[str] | None = None
    head_no = 0
    refs = []
    kind = "TSV" if delimiter == chr(9) else "CSV"
    state = {"no": 0, "start": 0, "between": True}

    def feed() -> Iterator[str]:
        for raw in io.StringIO(text, newline=""):
            state["no"] += 1
            if state["between"]:  # not inside a quoted field of the row being read
                if not raw.strip():
                    continue
                if raw.lstrip().startswith("#"):
                    _header_item(header, raw.strip())
                    continue
                state["start"], state["between"] = state["no"], False
            yield raw
        if not state["between"]:  # the reader still wants lines: a quoted field never closed
            state["open"] = True

    reader = csv.reader(feed(), delimiter=delimiter)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. "field larger than field limit (131072)"
            raise ManifestError(f"cannot read this row as {kind}: {exc}; a manifest row holds one series' "
                                "columns (check for an unclosed quote or a file that is not a manifest)",
                                path=str(path), line=state["start"]) from None
        no, state["between"] = state["start"], True
        if state.get("open"):
            raise ManifestError(f"a quoted field of this row is never closed (the row runs to the end of the file, "
                                f"line {state['no']}); close the quote or double a quote inside the field (\"\")",
                                path=str(path), line=no)
        if columns is None:
            if any(f.strip() in ID_COLUMNS for f in fields):
                columns, head_no = [f.strip() for f in fields], no
            else:
                preamble.append(delimiter.join(fields).strip())  # the IDC Portal's header: cohort name, filters, date, count
            continue
        if len(fields) != len(columns):
            span = f" (the row runs to line {state['no']}: is a quote left open?)" if state["no"] > no else ""
            raise ManifestError(f"{len(fields)} fields, but the column header (line {head_no}) has {len(columns)}"
                                f"{span}; quote values that contain "
                                f"{'a tab' if delimiter == chr(9) else 'commas'}", path=str(path), line=no)
        refs.append(_row_ref(path, no, dict(zip(columns, fields))))
    if columns is None:
        raise ManifestError(f"no column header row naming {' or '.join(ID_COLUMNS)} found; a series manifest "
                            f"has a header row such as `{delimiter.join(COLUMNS[:6])}`", path=str(path), line=1)
    if preamble:
        header["preamble"] = preamble
    return refs, header


def _row_ref(path: Path, no: int, row: dict[str, Any]) -> Ref:
    """A series reference from a CSV/TSV/JSON/Parquet row (``no``: its line; for Parquet, its row number)."""
    def get(name: str) -> str | None:
        value = row.get(name)
        return None if value is None else (str(value).strip() or None)

    uid = get("SeriesInstanceUID")
    uuid = get("crdc_series_uuid") or get("series_uuid")
    for column in ("aws_url", "gcs_url", "series_aws_url"):
        url = get(column)
        if url and not uuid:
            m = SERIES_URL.match(url)
            if not m:
                raise ManifestError(f"{column} {url!r} does not name a series folder; expected "
                                    "s3://<bucket>/<crdc_series_uuid>/*", path=str(path), line=no)
            uuid = m["uuid"]
    if uuid and not re.fullmatch(UUID_PATTERN, uuid):
        raise ManifestError(f"crdc_series_uuid {uuid!r} is not a UUID (e.g. 1cac0ac8-f1b1-4566-84e0-37716cf63939)",
                            path=str(path), line=no)
    if not uid and not uuid:
        raise ManifestError("this row has neither SeriesInstanceUID nor crdc_series_uuid; every row needs one",
                            path=str(path), line=no)
    return Ref(no, uuid=uuid.lower() if uuid else None, uid=uid)


def _parse_json(path: Path, text: str) -> tuple[list[Ref], dict]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        records = _json_lines(path, text, exc)
        return [_row_ref(path, no, rec) for no, rec in records], {}
    header: dict = {}
    if isinstance(doc, dict) and isinstance(doc.get("series"), list):
        header = doc.get("provenance") or {}
        start = _member_start(text, "series")
    elif isinstance(doc, list):
        start = skip_whitespace(text, 0)
    elif isinstance(doc, dict) and set(doc) & {*ID_COLUMNS, "aws_url", "gcs_url", "series_aws_url"}:
        return [_row_ref(path, 1, doc)], {}  # JSON Lines with a single series object
    else:
        raise ManifestError('a JSON manifest is a list of series objects or {"provenance": ..., "series": [...]}',
                            path=str(path), line=1)
    refs = []
    for no, rec in _array_records(text, start):
        if not isinstance(rec, dict):
            raise ManifestError(f"expected a series object, found {type(rec).__name__}", path=str(path), line=no)
        refs.append(_row_ref(path, no, rec))
    return refs, header


def _array_records(text: str, pos: int) -> Iterator[tuple[int, Any]]:
    """The items of the JSON array starting at ``text[pos] == '['``, each with its line number."""
    decoder = json.JSONDecoder()
    pos += 1
    while True:
        pos = skip_whitespace(text, pos, " \t\r\n,")
        if text[pos] == "]":
            return
        item, end = decoder.raw_decode(text, pos)
        yield text.count("\n", 0, pos) + 1, item
        pos = end


def _member_start(text: str, key: str) -> int:
    """Where the value of the top-level object's ``key`` starts."""
    decoder = json.JSONDecoder()
    pos = skip_whitespace(text, 0) + 1
    while True:
        name, pos = decoder.raw_decode(text, skip_whitespace(text, pos, " \t\r\n,"))
        pos = skip_whitespace(text, pos, " \t\r\n:")
        if name == key:
            return pos
        _, pos = decoder.raw_decode(text, pos)


def _json_lines(path: Path, text: str, error: json.JSONDecodeError) -> list[tuple[int, dict]]:
    """JSON Lines (one object per line), as BigQuery-style exports write; else the parse error."""
    records: list[tuple[int, dict]] = []
    for no, line in enumerate(_physical_lines(text), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if not records:  # not JSON Lines either: report the document's own error
                raise ManifestError(f"invalid JSON: {error.msg} (column {error.colno})", path=str(path),
                                    line=error.lineno) from None
            raise ManifestError(f"invalid JSON line: {exc.msg} (column {exc.colno})", path=str(path),
                                line=no) from None
        if not isinstance(rec, dict):
            raise ManifestError("expected one series object per line", path=str(path), line=no)
        records.append((no, rec))
    return records


def _parse_parquet(path: Path) -> tuple[list[Ref], dict]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"unreadable Parquet: {exc}", path=str(path)) from None
    meta = table.schema.metadata or {}
    try:
        header = json.loads(meta[PARQUET_KEY]) if PARQUET_KEY in meta else {}
    except ValueError as exc:
        raise ManifestError(f"the Parquet metadata {PARQUET_KEY.decode()} is not JSON ({exc}); "
                            "remove that key or re-export the manifest", path=str(path)) from None
    wanted = [c for c in ("SeriesInstanceUID", "crdc_series_uuid", "series_uuid", "aws_url", "gcs_url",
                          "series_aws_url") if c in table.column_names]
    if not set(wanted) & set(ID_COLUMNS):
        raise ManifestError(f"no {' or '.join(ID_COLUMNS)} column; columns are {', '.join(table.column_names)}",
                            path=str(path))
    rows = table.select(wanted).to_pylist()
    return [_row_ref(path, i, row) for i, row in enumerate(rows, 1)], header

