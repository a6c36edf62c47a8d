"""Writing a cohort as a manifest: s5cmd, CSV, TSV, JSON or Parquet, with its provenance."""

from __future__ import annotations

import csv
import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..citations import Citations, cite
from ..coverage import CoverageReport, route
from ..errors import ManifestError
from .formats import ENDPOINT_URLS, PARQUET_KEY, ManifestFormat, Provider, format_for
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
    fmt = format_for(format, path)
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
