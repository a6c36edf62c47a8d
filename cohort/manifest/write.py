"""Writing a cohort as a manifest: s5cmd, CSV, TSV, JSON or Parquet, with its provenance."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._text import sql_literal
from ..citations import Citations, cite
from ..coverage import CoverageReport, route
from ..errors import ManifestError
from .formats import ENDPOINT_URLS, PARQUET_KEY, ManifestFormat, Provider, format_for, sidecar
from .revisions import manifest_table

if TYPE_CHECKING:
    from ..cohort import Cohort


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


def write_manifest(
    cohort: Cohort,
    path: str | Path,
    format: ManifestFormat | str | None = None,
    provider: Provider | str = Provider.AWS,
    routes: CoverageReport | None = None,
    citations: Citations | bool = True,
    comments: bool = False,
) -> ManifestInfo:
    """Write ``cohort`` as a manifest; the format defaults to the file's suffix (else s5cmd).

    ``routes``: the :func:`cohort.coverage.route` report that gives each series' DICOMweb
    endpoint and URL (default: ``route(cohort)``, the default policy). A route applies to
    the revision it names; other revisions of that series get none. Viewer URLs are
    given for current revisions only (the IDC viewer shows the current release).
    ``citations``: True fetches them (cached; skipped offline), False lists the DOIs
    only, or pass :class:`Citations` made with :func:`cohort.citations.cite`.

    CSV and TSV manifests are plain tables (``pandas.read_csv(path)`` and DuckDB's
    ``read_csv`` read them with no options); their provenance goes to the sidecar file
    ``PATH.provenance.json``. ``comments=True`` also writes it as ``# key: value`` lines
    above the table, as IDC Portal exports do (then readers need ``comment="#"``).
    """
    path = Path(path)
    fmt = format_for(format, path)
    provider = Provider(provider)
    routes = routes or route(cohort)
    table = manifest_table(cohort, provider, routes)
    if not table.num_rows:
        raise ManifestError("the cohort is empty: a manifest needs at least one series", path=str(path))
    if not isinstance(citations, Citations):
        citations = cite(_distinct(table, "source_DOI"), fetch=bool(citations))
    provenance = _provenance(cohort, table, fmt, provider, path, citations, routes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _replacing(path) as tmp:
            if fmt is ManifestFormat.S5CMD:
                _write_s5cmd(tmp, path.name, table, provider, provenance)
            elif fmt in (ManifestFormat.CSV, ManifestFormat.TSV):
                _write_delimited(tmp, table, provenance, "," if fmt is ManifestFormat.CSV else "\t", comments)
                with _replacing(sidecar(path)) as side:
                    side.write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
            elif fmt is ManifestFormat.JSON:
                _write_json(tmp, table, provenance)
            else:
                pq.write_table(table.replace_schema_metadata({PARQUET_KEY: json.dumps(provenance).encode()}), tmp)
    except (OSError, duckdb.IOException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise ManifestError(f"cannot write the manifest: {reason}", path=str(path)) from None
    return ManifestInfo(path, fmt, provider, table.num_rows, provenance["size_MB"], citations, provenance)


def _provenance(cohort: Cohort, table: pa.Table, fmt: ManifestFormat, provider: Provider, path: Path,
                citations: Citations, routes: CoverageReport) -> dict[str, Any]:
    licences = pc.value_counts(pc.fill_null(table.column("license_short_name"), "unknown (earlier release)"))
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
        "series": len(_distinct(table, "SeriesInstanceUID")),
        "revisions": table.num_rows,
        "studies": len(_distinct(table, "StudyInstanceUID")),
        "patients": len(_distinct(table, "PatientID")),
        "collections": len(_distinct(table, "collection_id")),
        "size_MB": round(pc.sum(table.column("series_size_MB")).as_py() or 0, 2),
        "licenses": dict(sorted((v["values"], v["counts"]) for v in licences.to_pylist())),
        "source_DOIs": _distinct(table, "source_DOI"),
        "citations": citations.to_dict(),
    }


def _distinct(table: pa.Table, column: str) -> list:
    """The column's distinct non-null values, sorted."""
    return sorted(pc.unique(table.column(column).drop_null()).to_pylist())


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


def _one_line(text: str) -> str:
    return " ".join(text.split())


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it once written: a failed write leaves no partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _copy(table: pa.Table, path: Path, options: str) -> None:
    """DuckDB's ``COPY`` of an Arrow table to a file (its CSV writer quotes a field only when it must)."""
    con = duckdb.connect()  # not the catalog's connection: that one may not write files
    try:
        con.register("_rows", table)
        con.execute(f"COPY _rows TO {sql_literal(str(path))} ({options})")
    finally:
        con.close()


def _write_s5cmd(path: Path, name: str, table: pa.Table, provider: Provider, provenance: dict) -> None:
    urls = table.column("aws_url" if provider is Provider.AWS else "gcs_url")
    lines = pc.binary_join_element_wise("cp ", pc.replace_substring_regex(urls, "^gs://", "s3://"), " .", "")
    head = [
        "# To download the files in this manifest, first install s5cmd (https://github.com/peak/s5cmd),",
        "# then run the following command:",
        f"# {provenance['download']}",
        f"# or with idc-index: idc download {name}",
    ]
    path.write_text("\n".join(head + _header_lines(provenance) + lines.to_pylist()) + "\n", encoding="utf-8")


def _write_delimited(path: Path, table: pa.Table, provenance: dict, delimiter: str, comments: bool) -> None:
    options = f"HEADER, DELIMITER {sql_literal(delimiter)}"
    if not comments:
        _copy(table, path, options)
        return
    body = path.with_name(path.name + ".body")
    try:
        _copy(table, body, options)
        with path.open("w", encoding="utf-8", newline="") as out, body.open(encoding="utf-8", newline="") as rows:
            out.write("\n".join(_header_lines(provenance)) + "\n")
            shutil.copyfileobj(rows, out)
    finally:
        body.unlink(missing_ok=True)


def _write_json(path: Path, table: pa.Table, provenance: dict) -> None:
    """``{"provenance": {...}, "series": [...]}``, one series object a line."""
    body = path.with_name(path.name + ".body")
    try:
        _copy(table, body, "FORMAT json, ARRAY true")
        with path.open("w", encoding="utf-8") as out, body.open(encoding="utf-8") as rows:
            out.write('{"provenance": ' + json.dumps(provenance, indent=1) + ',\n"series": ')
            shutil.copyfileobj(rows, out)
            out.write("}\n")
    finally:
        body.unlink(missing_ok=True)
