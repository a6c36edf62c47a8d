"""Reading a manifest back as a cohort: parse, resolve each line's revision, check the provider."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ..catalog import Catalog
from ..cohort import Cohort, Provenance, default_catalog
from ..errors import ManifestError
from .formats import ENDPOINT_URLS, S5CMD_FORM, SHARED_BUCKETS, Provider
from .parse import parse
from .revisions import release, resolve


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
    fmt, refs, header, hints = parse(path)
    if not refs:
        raise ManifestError(f"the manifest lists no series (expected lines like `{S5CMD_FORM}` "
                            "or rows with SeriesInstanceUID or crdc_series_uuid)", path=str(path))
    rows = resolve(path, refs, catalog)
    provider = _provider_of(path, rows, hints) or _header_provider(header)
    result = pa.table({
        "SeriesInstanceUID": pa.array([r["SeriesInstanceUID"] for r in rows], pa.string()),
        "crdc_series_uuid": pa.array([r["crdc_series_uuid"] for r in rows], pa.string()),
        "min_idc_version": pa.array([r["min_idc_version"] for r in rows], pa.int64()),
        "max_idc_version": pa.array([r["max_idc_version"] for r in rows], pa.int64()),
        "series_size_MB": pa.array([r["series_size_MB"] for r in rows], pa.float64()),
        "source_release": pa.array([release(r) for r in rows], pa.string()),
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


def _provider_of(path: Path, rows: list[dict], hints: list[tuple[int, Provider]]) -> Provider | None:
    """AWS or GCS, from the buckets (and any ``--endpoint-url`` in the header); an error when mixed."""
    seen: dict[Provider, tuple[int, str]] = {}
    for line, provider in hints:
        seen.setdefault(provider, (line, f"--endpoint-url {ENDPOINT_URLS[provider]}"))
    for r in rows:
        bucket = r["ref_bucket"]
        if not bucket or bucket in SHARED_BUCKETS:
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
