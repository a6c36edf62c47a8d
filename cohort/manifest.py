"""Cohort manifests: write a cohort to s5cmd, CSV, TSV, JSON or Parquet, and read it back.

Formats
    ``s5cmd``   one ``cp s3://<bucket>/<crdc_series_uuid>/* .`` line per series, the form
                s5cmd, ``idc download`` and the IDC Portal use; GCS manifests use the
                GCS bucket names and ``--endpoint-url https://storage.googleapis.com``.
    ``csv``, ``tsv``, ``json``, ``parquet``
                one row per series with the IDC Portal's columns (PatientID,
                collection_id, StudyInstanceUID, SeriesInstanceUID, crdc_series_uuid,
                source_DOI, licence, size, AWS and GCS URLs) plus the DICOMweb endpoint
                and series URL of the coverage route (:mod:`cohort.coverage`) and a
                viewer URL (Slim for SM, OHIF v3 otherwise).

Provenance (IDC and idc-index-data versions, query, SQL, parameters and their
sha256, times, counts, size, licences, citations) is written as ``# key: value``
header comments (s5cmd, CSV, TSV; readers such as pandas skip them with
``comment="#"``), as ``{"provenance": ..., "series": [...]}`` in JSON, and as the
Parquet schema's key-value metadata.

Reading accepts all of these, IDC Portal manifests (CSV/TSV with a free-text
header, JSON lists or JSON lines) and idc-index s5cmd manifests. Each line is
resolved by ``crdc_series_uuid`` (else SeriesInstanceUID) against ``index`` and
then ``prior_versions_index``, so a manifest of an older release reopens with
exactly the revisions it lists, and the cohort says which releases each came
from. Anything that cannot be resolved is an error naming file:line; nothing is
dropped. A manifest that mixes AWS-only and GCS-only buckets is an error too:
s5cmd runs a manifest against one endpoint, so it could never download in full.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import enum
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._text import skip_whitespace
from .catalog import Catalog
from .citations import Citations, cite
from .cohort import Cohort, Provenance, default_catalog
from .coverage import CoverageReport, route
from .errors import ManifestError


class ManifestFormat(str, enum.Enum):
    S5CMD = "s5cmd"
    CSV = "csv"
    TSV = "tsv"
    JSON = "json"
    PARQUET = "parquet"


class Provider(str, enum.Enum):
    AWS = "aws"
    GCS = "gcs"


ENDPOINT_URLS = {Provider.AWS: "https://s3.amazonaws.com", Provider.GCS: "https://storage.googleapis.com"}
#: GCS bucket of each AWS bucket of the current release (idc-index's ``_replace_aws_with_gcp_buckets``).
GCS_BUCKETS = {
    "idc-open-data": "idc-open-data", "idc-open-data-cr": "idc-open-cr", "idc-open-data-two": "idc-open-idc1",
}
#: GCS buckets of older Portal manifests, and the AWS bucket they mirror.
LEGACY_GCS_BUCKETS = {"public-datasets-idc": "idc-open-data"}
#: Buckets with the same name in AWS and GCS: a line in one of them says nothing about the provider.
_SHARED_BUCKETS = {aws for aws, gcs in GCS_BUCKETS.items() if aws == gcs}
SLIM_URL = "https://viewer.imaging.datacommons.cancer.gov/slim/studies/"
OHIF_URL = "https://viewer.imaging.datacommons.cancer.gov/v3/viewer/?StudyInstanceUIDs="
PARQUET_KEY = b"idc_cohort.provenance"
SUFFIXES = {
    ".s5cmd": ManifestFormat.S5CMD, ".csv": ManifestFormat.CSV, ".tsv": ManifestFormat.TSV,
    ".json": ManifestFormat.JSON, ".jsonl": ManifestFormat.JSON, ".ndjson": ManifestFormat.JSON,
    ".parquet": ManifestFormat.PARQUET,
}
#: The series-level columns of CSV, TSV, JSON and Parquet manifests, in order.
COLUMNS = (
    "PatientID", "collection_id", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "crdc_series_uuid",
    "source_DOI", "license_short_name", "series_size_MB", "instanceCount", "min_idc_version",
    "max_idc_version", "in_current_release", "aws_url", "gcs_url", "dicomweb_endpoint", "dicomweb_series_url",
    "viewer_url",
)
S5CMD_FORM = "cp s3://<bucket>/<crdc_series_uuid>/* <destination>"
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_URL = re.compile(rf"^(?P<scheme>s3|gs)://(?P<bucket>[^/\s]+)/(?P<uuid>{_UUID})(?:/\*?)?$")
_S5CMD_LINE = re.compile(
    r"^(?:(?:cp|sync)(?:\s+--?[\w-]+(?:=\S+)?)*\s+)?(?P<url>s3://[^/\s]+/[^/\s]+/\*)(?P<dest>\s+\S.*)?$"
)
_HEADER = re.compile(r"^#\s*([A-Za-z_][A-Za-z0-9_]*):\s?(.*)$")
_ID_COLUMNS = ("SeriesInstanceUID", "crdc_series_uuid", "series_uuid")


@dataclass(frozen=True)
class ManifestInfo:
    """What :func:`write_manifest` wrote."""

    path: Path
    format: ManifestFormat
    provider: Provider
    series: int
    size_MB: float
    citations: Citations
    #: the provenance written into the manifest
    provenance: dict[str, Any] = field(repr=False)

    @property
    def command(self) -> str:
        """The command that downloads this manifest."""
        return self.provenance["download"]


# -- export -------------------------------------------------------------------
def write_manifest(
    cohort: Cohort,
    path: str | Path,
    format: ManifestFormat | str | None = None,
    provider: Provider | str = Provider.AWS,
    routes: CoverageReport | None = None,
    citations: Citations | bool = True,
) -> ManifestInfo:
    """Write ``cohort`` as a manifest; the format defaults to the file's suffix (else s5cmd).

    ``routes``: the :func:`cohort.coverage.route` report that gives each series' DICOMweb
    endpoint and URL (default: ``route(cohort)``, the default policy). A route applies to
    the revision it names; other revisions of that series get none. Viewer URLs are
    given for current revisions only (the IDC viewer shows the current release).
    ``citations``: True fetches them (cached; skipped offline), False lists the DOIs
    only, or pass :class:`Citations` made with :func:`cohort.citations.cite`.
    """
    path = Path(path)
    fmt = _format(format, path)
    provider = Provider(provider)
    routes = routes or route(cohort)
    table = manifest_table(cohort, provider, routes)
    if not table.num_rows:
        raise ManifestError("the cohort is empty: a manifest needs at least one series", path=str(path))
    dois = [d for d in set(table.column("source_DOI").to_pylist()) if d]
    if not isinstance(citations, Citations):
        citations = cite(dois, fetch=bool(citations))
    provenance = _provenance(cohort, table, fmt, provider, path, citations, routes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt is ManifestFormat.S5CMD:
            _write_s5cmd(path, table, provider, provenance)
        elif fmt in (ManifestFormat.CSV, ManifestFormat.TSV):
            _write_delimited(path, table, provenance, "," if fmt is ManifestFormat.CSV else "\t")
        elif fmt is ManifestFormat.JSON:
            records = table.to_pylist()
            path.write_text(json.dumps({"provenance": provenance, "series": records}, indent=1) + "\n", "utf-8")
        else:
            meta = {PARQUET_KEY: json.dumps(provenance).encode()}
            pq.write_table(table.replace_schema_metadata(meta), path)
    except OSError as exc:
        raise ManifestError(f"cannot write the manifest: {exc.strerror or exc}", path=str(path)) from None
    return ManifestInfo(path, fmt, provider, table.num_rows, provenance["size_MB"], citations, provenance)


def manifest_table(cohort: Cohort, provider: Provider | str = Provider.AWS,
                   routes: CoverageReport | None = None) -> pa.Table:
    """One row per series revision, with :data:`COLUMNS` (the rows every format writes).

    When the cohort's result has a ``crdc_series_uuid`` column (a cohort read from
    a manifest) those exact revisions are written; otherwise each series' current
    revision, or for a series only in ``prior_versions_index`` its newest one.
    """
    provider = Provider(provider)
    result = cohort.result
    uids = result.column("SeriesInstanceUID").cast(pa.string())
    pinned = (
        result.column("crdc_series_uuid").cast(pa.string())
        if "crdc_series_uuid" in result.column_names
        else pa.nulls(result.num_rows, pa.string())
    )
    table = cohort.catalog.sql(
        _EXPORT_SQL,
        {"current": cohort.catalog.idc_version, "slim": SLIM_URL, "ohif": OHIF_URL},
        register={
            "cohort": cohort.to_arrow(),
            "_want": pa.table({"SeriesInstanceUID": uids, "crdc_series_uuid": pinned}),
            "_buckets": _buckets_table(),
            "_routes": (routes or route(cohort)).routes,
        },
    )
    missing = table.filter(pc.is_null(table.column("crdc_series_uuid")))
    if missing.num_rows:
        raise ManifestError(_listing(
            "series with a crdc_series_uuid that is not a revision of that series",
            [f"{r['SeriesInstanceUID']} / {r['wanted_uuid']}" for r in missing.to_pylist()],
            "take crdc_series_uuid from the same index row as the SeriesInstanceUID",
        ))
    if provider is Provider.GCS:
        no_gcs = table.filter(pc.is_null(table.column("gcs_url")))
        if no_gcs.num_rows:
            raise ManifestError(_listing(
                "series in AWS buckets with no known GCS copy",
                [f"{r['SeriesInstanceUID']} (s3 bucket of {r['aws_url']})" for r in no_gcs.to_pylist()],
                "write an AWS manifest (provider='aws') instead",
            ))
    return table.select(list(COLUMNS))


_VERSIONS_SQL = """
versions AS (
    SELECT i.SeriesInstanceUID, i.crdc_series_uuid, i.aws_bucket, b.gcs_bucket, i.series_size_MB,
           i.series_revised_idc_version AS min_idc_version, $current AS max_idc_version,
           true AS in_current_release
    FROM index i LEFT JOIN _buckets b USING (aws_bucket)
    UNION ALL BY NAME
    SELECT SeriesInstanceUID, crdc_series_uuid, aws_bucket, gcs_bucket, series_size_MB,
           min_idc_version, max_idc_version, false AS in_current_release
    FROM prior_versions_index
)"""

_EXPORT_SQL = f"""
WITH {_VERSIONS_SQL},
want AS (SELECT DISTINCT SeriesInstanceUID, crdc_series_uuid AS wanted_uuid FROM _want),
picked AS (
    SELECT w.SeriesInstanceUID, w.wanted_uuid, v.* EXCLUDE (SeriesInstanceUID)
    FROM want w LEFT JOIN versions v
      ON v.SeriesInstanceUID = w.SeriesInstanceUID AND (w.wanted_uuid IS NULL OR v.crdc_series_uuid = w.wanted_uuid)
    QUALIFY row_number() OVER (PARTITION BY w.SeriesInstanceUID, w.wanted_uuid
                               ORDER BY v.max_idc_version DESC NULLS LAST) = 1
)
SELECT s.PatientID, s.collection_id, s.StudyInstanceUID, p.SeriesInstanceUID, s.Modality, p.crdc_series_uuid,
       p.wanted_uuid, s.source_DOI, s.license_short_name, p.series_size_MB,
       CASE WHEN p.in_current_release THEN s.instanceCount END AS instanceCount,
       p.min_idc_version, p.max_idc_version, p.in_current_release,
       's3://' || p.aws_bucket || '/' || p.crdc_series_uuid || '/*' AS aws_url,
       'gs://' || p.gcs_bucket || '/' || p.crdc_series_uuid || '/*' AS gcs_url,
       r.endpoint AS dicomweb_endpoint, r.series_url AS dicomweb_series_url,
       CASE WHEN NOT p.in_current_release THEN NULL
            WHEN s.Modality = 'SM' THEN $slim || s.StudyInstanceUID || '/series/' || p.SeriesInstanceUID
            ELSE $ohif || s.StudyInstanceUID END AS viewer_url
FROM picked p JOIN cohort s USING (SeriesInstanceUID)
LEFT JOIN _routes r ON r.SeriesInstanceUID = p.SeriesInstanceUID AND r.revision_version = p.min_idc_version
ORDER BY s.collection_id, s.PatientID, s.StudyInstanceUID, p.SeriesInstanceUID, p.max_idc_version
"""


def _buckets_table() -> pa.Table:
    return pa.table({"aws_bucket": list(GCS_BUCKETS), "gcs_bucket": list(GCS_BUCKETS.values())})


def _provenance(cohort: Cohort, table: pa.Table, fmt: ManifestFormat, provider: Provider, path: Path,
                citations: Citations, routes: CoverageReport) -> dict[str, Any]:
    rows = table.to_pylist()
    licences: dict[str, int] = {}
    for r in rows:
        key = r["license_short_name"] or "unknown (earlier release)"
        licences[key] = licences.get(key, 0) + 1
    if fmt is ManifestFormat.S5CMD:
        download = f"s5cmd --no-sign-request --endpoint-url {ENDPOINT_URLS[provider]} run {path.name}"
    else:
        download = f"cohort download {path.name}"
    return {
        **cohort.provenance.to_dict(),
        "manifest_created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "format": fmt.value,
        "provider": provider.value,
        "endpoint_url": ENDPOINT_URLS[provider],
        "download": download,
        "dicomweb_policy": str(routes.policy),
        "series": len({r["SeriesInstanceUID"] for r in rows}),
        "revisions": len(rows),
        "studies": len({r["StudyInstanceUID"] for r in rows}),
        "patients": len({r["PatientID"] for r in rows}),
        "collections": len({r["collection_id"] for r in rows}),
        "size_MB": round(sum(r["series_size_MB"] or 0 for r in rows), 2),
        "licenses": dict(sorted(licences.items())),
        "source_DOIs": sorted({r["source_DOI"] for r in rows if r["source_DOI"]}),
        "citations": citations.to_dict(),
    }


def _header_lines(provenance: dict[str, Any]) -> list[str]:
    """``# key: value`` lines; a value is written as is when that reads back unchanged, else as JSON."""
    lines = []
    for key, value in provenance.items():
        if key == "citations":
            lines.append(f"# citation_status: {value['summary']}")
            for item in value["items"]:
                lines.append(f"# cite: {item['url']}" + (f" {_one_line(item['text'])}" if item["text"] else ""))
            continue
        lines.append(f"# {key}: {_encode(value)}")
    return lines


def _encode(value: Any) -> str:
    if isinstance(value, str) and "\n" not in value:
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _write_s5cmd(path: Path, table: pa.Table, provider: Provider, provenance: dict) -> None:
    column = "aws_url" if provider is Provider.AWS else "gcs_url"
    urls = ["s3://" + u.split("://", 1)[1] for u in table.column(column).to_pylist()]
    head = [
        "# To download the files in this manifest, first install s5cmd (https://github.com/peak/s5cmd),",
        "# then run the following command:",
        f"# {provenance['download']}",
        f"# or with idc-index: idc download {path.name}",
    ]
    body = [f"cp {u} ." for u in urls]
    path.write_text("\n".join(head + _header_lines(provenance) + body) + "\n", encoding="utf-8")


def _write_delimited(path: Path, table: pa.Table, provenance: dict, delimiter: str) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("\n".join(_header_lines(provenance)) + "\n")
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
        writer.writerow(table.column_names)
        for row in table.to_pylist():
            writer.writerow(["" if v is None else (str(v).lower() if isinstance(v, bool) else v) for v in row.values()])


def _format(format: ManifestFormat | str | None, path: Path) -> ManifestFormat:
    if format is not None:
        try:
            return ManifestFormat(format)
        except ValueError:
            choices = ", ".join(f.value for f in ManifestFormat)
            raise ManifestError(f"unknown manifest format {format!r}; use one of {choices}") from None
    return SUFFIXES.get(path.suffix.lower(), ManifestFormat.S5CMD)


# -- import -------------------------------------------------------------------
@dataclass(frozen=True)
class _Ref:
    """One manifest line (or row) that names a series."""

    line: int
    uuid: str | None = None
    uid: str | None = None
    bucket: str | None = None


def read_manifest(path: str | Path, catalog: Catalog | None = None) -> Cohort:
    """The cohort a manifest lists (any format written by :func:`write_manifest`, IDC Portal
    CSV/TSV/JSON manifests, idc-index and Portal s5cmd manifests).

    The cohort's result has one row per manifest line: SeriesInstanceUID,
    crdc_series_uuid, min_idc_version, max_idc_version, series_size_MB, source_release
    (``"v8-v9"``), in_current_release (of that revision) and manifest_line.
    """
    path = Path(path)
    catalog = catalog or default_catalog()
    if not path.is_file():
        raise ManifestError("no such file; give the path of an s5cmd, CSV, TSV, JSON or Parquet manifest",
                            path=str(path))
    fmt, refs, header, hints = _parse(path)
    if not refs:
        raise ManifestError(f"the manifest lists no series (expected lines like `{S5CMD_FORM}` "
                            "or rows with SeriesInstanceUID or crdc_series_uuid)", path=str(path))
    rows = _resolve(path, refs, catalog)
    provider = _provider(path, rows, hints) or _header_provider(header)
    result = pa.table({
        "SeriesInstanceUID": pa.array([r["SeriesInstanceUID"] for r in rows], pa.string()),
        "crdc_series_uuid": pa.array([r["crdc_series_uuid"] for r in rows], pa.string()),
        "min_idc_version": pa.array([r["min_idc_version"] for r in rows], pa.int64()),
        "max_idc_version": pa.array([r["max_idc_version"] for r in rows], pa.int64()),
        "series_size_MB": pa.array([r["series_size_MB"] for r in rows], pa.float64()),
        "source_release": pa.array([_release(r) for r in rows], pa.string()),
        "in_current_release": pa.array([r["in_current_release"] for r in rows], pa.bool_()),
        "manifest_line": pa.array([r["line"] for r in rows], pa.int64()),
    })
    params = {"manifest": str(path), "format": fmt.value, "provider": provider.value if provider else None,
              "lines": len(rows)}
    if header:
        params["manifest_provenance"] = header
    prov = Provenance.make(catalog, query_name=f"manifest {path.name}", params=params, source=str(path))
    return Cohort(result, prov, catalog)


def manifest_provider(cohort: Cohort) -> Provider | None:
    """The provider a cohort read from a manifest was listed for (None: either, or not from a manifest)."""
    value = cohort.provenance.params.get("provider")
    return Provider(value) if value else None


def _release(row: dict) -> str:
    lo, hi = row["min_idc_version"], row["max_idc_version"]
    return f"v{hi}" if lo == hi else f"v{lo}-v{hi}"


def _parse(path: Path) -> tuple[ManifestFormat, list[_Ref], dict, list[tuple[int, Provider]]]:
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
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    if first.startswith(("{", "[")):
        refs, header = _parse_json(path, text)
        return ManifestFormat.JSON, refs, header, []
    if path.suffix.lower() in (".s5cmd", ".txt") or _S5CMD_LINE.match(first) or first.startswith(("cp ", "sync ")):
        return (ManifestFormat.S5CMD, *_parse_s5cmd(path, lines))
    tsv = path.suffix.lower() == ".tsv" or "\t" in first
    refs, header = _parse_delimited(path, lines, "\t" if tsv else ",")
    return (ManifestFormat.TSV if tsv else ManifestFormat.CSV), refs, header, []


def _parse_s5cmd(path: Path, lines: list[str]) -> tuple[list[_Ref], dict, list[tuple[int, Provider]]]:
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
        m = _S5CMD_LINE.match(line)
        if not m or (line.startswith(("cp", "sync")) and not m.group("dest")):
            raise ManifestError(f"not an s5cmd copy line: {line[:120]!r}; expected `{S5CMD_FORM}`",
                                path=str(path), line=no)
        url = _URL.match(m.group("url"))
        if not url:
            raise ManifestError(f"{m.group('url')!r} does not name a series folder; expected `{S5CMD_FORM}` "
                                "where <crdc_series_uuid> is a UUID", path=str(path), line=no)
        refs.append(_Ref(no, uuid=url["uuid"].lower(), bucket=url["bucket"]))
    return refs, header, hints


def _header_item(header: dict, line: str) -> None:
    m = _HEADER.match(line)
    if not m:
        return
    key, value = m.group(1), _decode(m.group(2).strip())
    if key == "cite":
        header.setdefault(key, []).append(value)
    else:
        header[key] = value


def _parse_delimited(path: Path, lines: list[str], delimiter: str) -> tuple[list[_Ref], dict]:
    header: dict[str, Any] = {}
    preamble = []
    columns: list[str] | None = None
    head_no = 0
    refs = []
    for no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        if raw.lstrip().startswith("#"):
            _header_item(header, raw.strip())
            continue
        fields = next(csv.reader([raw], delimiter=delimiter))
        if columns is None:
            if any(f.strip() in _ID_COLUMNS for f in fields):
                columns, head_no = [f.strip() for f in fields], no
            else:
                preamble.append(raw.strip())  # the IDC Portal's header: cohort name, filters, date, count
            continue
        if len(fields) != len(columns):
            raise ManifestError(f"{len(fields)} fields, but the column header (line {head_no}) has {len(columns)}; "
                                f"quote values that contain {'a tab' if delimiter == chr(9) else 'commas'}",
                                path=str(path), line=no)
        refs.append(_row_ref(path, no, dict(zip(columns, fields))))
    if columns is None:
        raise ManifestError(f"no column header row naming {' or '.join(_ID_COLUMNS)} found; a series manifest "
                            f"has a header row such as `{delimiter.join(COLUMNS[:6])}`", path=str(path), line=1)
    if preamble:
        header["preamble"] = preamble
    return refs, header


def _row_ref(path: Path, no: int, row: dict[str, Any]) -> _Ref:
    """A series reference from a CSV/TSV/JSON/Parquet row (``no``: its line; for Parquet, its row number)."""
    def get(name: str) -> str | None:
        value = row.get(name)
        return None if value is None else (str(value).strip() or None)

    uid = get("SeriesInstanceUID")
    uuid = get("crdc_series_uuid") or get("series_uuid")
    for column in ("aws_url", "gcs_url", "series_aws_url"):
        url = get(column)
        if url and not uuid:
            m = _URL.match(url)
            if not m:
                raise ManifestError(f"{column} {url!r} does not name a series folder; expected "
                                    "s3://<bucket>/<crdc_series_uuid>/*", path=str(path), line=no)
            uuid = m["uuid"]
    if uuid and not re.fullmatch(_UUID, uuid):
        raise ManifestError(f"crdc_series_uuid {uuid!r} is not a UUID (e.g. 1cac0ac8-f1b1-4566-84e0-37716cf63939)",
                            path=str(path), line=no)
    if not uid and not uuid:
        raise ManifestError("this row has neither SeriesInstanceUID nor crdc_series_uuid; every row needs one",
                            path=str(path), line=no)
    return _Ref(no, uuid=uuid.lower() if uuid else None, uid=uid)


def _parse_json(path: Path, text: str) -> tuple[list[_Ref], dict]:
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
    for no, line in enumerate(text.splitlines(), 1):
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


def _parse_parquet(path: Path) -> tuple[list[_Ref], dict]:
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
    if not set(wanted) & set(_ID_COLUMNS):
        raise ManifestError(f"no {' or '.join(_ID_COLUMNS)} column; columns are {', '.join(table.column_names)}",
                            path=str(path))
    rows = table.select(wanted).to_pylist()
    return [_row_ref(path, i, row) for i, row in enumerate(rows, 1)], header


#: A revision named by its crdc_series_uuid; a series named only by its UID: its newest revision.
_BY_UUID = "SELECT r.line, v.* FROM _refs r JOIN versions v ON v.crdc_series_uuid = r.ref_uuid"
_BY_UID = """SELECT r.line, v.* FROM _refs r JOIN versions v ON v.SeriesInstanceUID = r.ref_uid
    WHERE r.ref_uuid IS NULL
    QUALIFY row_number() OVER (PARTITION BY r.line ORDER BY v.max_idc_version DESC) = 1"""


def _resolve(path: Path, refs: list[_Ref], catalog: Catalog) -> list[dict]:
    """Each reference's revision: from ``index`` or ``prior_versions_index``, in one query."""
    refs_table = pa.table({
        "line": pa.array([r.line for r in refs], pa.int64()),
        "ref_uuid": pa.array([r.uuid for r in refs], pa.string()),
        "ref_uid": pa.array([r.uid for r in refs], pa.string()),
        "ref_bucket": pa.array([r.bucket for r in refs], pa.string()),
    })
    matches = [sql for sql, needed in ((_BY_UUID, any(r.uuid for r in refs)), (_BY_UID, any(not r.uuid for r in refs)))
               if needed]  # each join scans the whole index: run only those the manifest needs
    sql = (f"WITH {_VERSIONS_SQL}, m AS ({' UNION ALL BY NAME '.join(matches)}) "
           "SELECT r.*, m.* EXCLUDE (line) FROM _refs r LEFT JOIN m USING (line) ORDER BY r.line")
    rows = catalog.sql(sql, {"current": catalog.idc_version},
                       register={"_refs": refs_table, "_buckets": _buckets_table()}).to_pylist()
    where = f"index nor prior_versions_index of IDC v{catalog.idc_version}"
    unknown = [r for r in rows if r["crdc_series_uuid"] is None]
    if unknown:
        raise ManifestError(_listing(
            f"series found in neither {where}",
            [f"{path}:{r['line']}: {r['ref_uuid'] or r['ref_uid']}" for r in unknown],
            "check for typos; a manifest of a newer IDC release needs a newer idc-index-data",
        ), path=str(path), line=unknown[0]["line"])
    wrong = [r for r in rows if r["ref_uid"] and r["ref_uuid"] and r["ref_uid"] != r["SeriesInstanceUID"]]
    if wrong:
        raise ManifestError(_listing(
            "rows whose crdc_series_uuid belongs to another series",
            [f"{path}:{r['line']}: {r['ref_uuid']} is a revision of {r['SeriesInstanceUID']}, "
             f"not {r['ref_uid']}" for r in wrong],
            "take SeriesInstanceUID and crdc_series_uuid from the same index row",
        ), path=str(path), line=wrong[0]["line"])
    misplaced = [r for r in rows if r["ref_bucket"] and r["ref_bucket"] not in _buckets_of(r)]
    if misplaced:
        raise ManifestError(_listing(
            "lines whose bucket does not hold that series",
            [f"{path}:{r['line']}: s3://{r['ref_bucket']}/{r['ref_uuid']}/* should be "
             f"s3://{r['aws_bucket']}/{r['ref_uuid']}/* (AWS)"
             + (f" or s3://{r['gcs_bucket']}/{r['ref_uuid']}/* (GCS)" if r["gcs_bucket"] else "")
             for r in misplaced],
            "fix the bucket names, or re-export the manifest",
        ), path=str(path), line=misplaced[0]["line"])
    return rows


def _buckets_of(row: dict) -> set[str]:
    buckets = {row["aws_bucket"], row["gcs_bucket"]} - {None}
    return buckets | {legacy for legacy, aws in LEGACY_GCS_BUCKETS.items() if aws in buckets}


def _provider(path: Path, rows: list[dict], hints: list[tuple[int, Provider]]) -> Provider | None:
    """AWS or GCS, from the buckets (and any ``--endpoint-url`` in the header); an error when mixed."""
    seen: dict[Provider, tuple[int, str]] = {}
    for line, provider in hints:
        seen.setdefault(provider, (line, f"--endpoint-url {ENDPOINT_URLS[provider]}"))
    for r in rows:
        bucket = r["ref_bucket"]
        if not bucket or bucket in _SHARED_BUCKETS:
            continue
        if bucket == r["aws_bucket"]:
            seen.setdefault(Provider.AWS, (r["line"], f"AWS bucket {bucket}"))
        else:
            seen.setdefault(Provider.GCS, (r["line"], f"GCS bucket {bucket}"))
    if len(seen) > 1:
        (la, wa), (lg, wg) = seen[Provider.AWS], seen[Provider.GCS]
        raise ManifestError(
            f"the manifest mixes providers: line {la} uses {wa}, line {lg} uses {wg}. s5cmd runs a manifest "
            "against one endpoint; re-export it for one provider (cohort manifest MANIFEST -o NEW --provider aws)",
            path=str(path), line=max(la, lg))
    return next(iter(seen), None)


def _header_provider(header: dict) -> Provider | None:
    """The provider our own CSV/TSV/JSON/Parquet manifests record (they carry both URLs)."""
    value = header.get("provider")
    return Provider(value) if value in {p.value for p in Provider} else None


def _listing(what: str, items: list[str], fix: str) -> str:
    """One line: the count, the first ten items, the fix."""
    shown = "; ".join(items[:10]) + (f"; and {len(items) - 10} more" if len(items) > 10 else "")
    return f"{len(items)} {what}: {shown}. To fix: {fix}"


# -- download -----------------------------------------------------------------
@dataclass(frozen=True)
class DownloadPlan:
    """What ``cohort download`` would fetch, and where; idc-index's s5cmd downloader does the work."""

    manifest: Path
    dest: Path
    provider: Provider | None
    series: int
    size_MB: float
    cohort: Cohort = field(repr=False, compare=False)
    is_s5cmd: bool = False

    def __str__(self) -> str:
        where = {None: "AWS or GCS", Provider.AWS: "AWS", Provider.GCS: "GCS"}[self.provider]
        return (f"{self.series:,} series, {self.size_MB / 1000:,.2f} GB from {where} "
                f"into {self.dest.resolve()}")

    @contextlib.contextmanager
    def s5cmd_manifest(self) -> Iterator[Path]:
        """The s5cmd manifest to hand to idc-index: the file itself, or a temporary export of it."""
        if self.is_s5cmd:
            yield self.manifest
            return
        with tempfile.TemporaryDirectory(prefix="idc-cohort-") as tmp:
            target = Path(tmp) / f"{self.manifest.stem}.s5cmd"
            write_manifest(self.cohort, target, ManifestFormat.S5CMD, self.provider or Provider.AWS, citations=False)
            yield target


def plan_download(manifest: str | Path, dest: str | Path = ".", catalog: Catalog | None = None) -> DownloadPlan:
    """Read and check a manifest, and size its download from the catalog (no download, no network)."""
    manifest = Path(manifest)
    cohort = read_manifest(manifest, catalog)
    size = round(sum(v or 0 for v in cohort.result.column("series_size_MB").to_pylist()), 2)  # as idc-index sums
    return DownloadPlan(manifest, Path(dest), manifest_provider(cohort), len(cohort), size, cohort,
                        cohort.provenance.params["format"] == ManifestFormat.S5CMD.value)


def download(plan: DownloadPlan, client: Any = None) -> None:
    """Download a planned manifest with idc-index (``IDCClient.download_from_manifest``, s5cmd)."""
    if client is None:
        from idc_index import IDCClient  # noqa: PLC0415 - loads the whole index (~15 s, 3 GB)

        client = IDCClient()
    plan.dest.mkdir(parents=True, exist_ok=True)
    with plan.s5cmd_manifest() as manifest_file:
        client.download_from_manifest(manifestFile=str(manifest_file), downloadDir=str(plan.dest))
