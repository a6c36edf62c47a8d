"""What a manifest is made of: its formats, providers and buckets, columns and line forms."""

from __future__ import annotations

import enum
import re
from pathlib import Path

import pyarrow as pa

from ..errors import ManifestError


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
SHARED_BUCKETS = {aws for aws, gcs in GCS_BUCKETS.items() if aws == gcs}
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
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
#: A series folder URL: ``s3://<bucket>/<crdc_series_uuid>/*`` (or ``gs://``).
SERIES_URL = re.compile(rf"^(?P<scheme>s3|gs)://(?P<bucket>[^/\s]+)/(?P<uuid>{UUID_PATTERN})(?:/\*?)?$")
S5CMD_LINE = re.compile(
    r"^(?:(?:cp|sync)(?:\s+--?[\w-]+(?:=\S+)?)*\s+)?(?P<url>s3://[^/\s]+/[^/\s]+/\*)(?P<dest>\s+\S.*)?$"
)
#: The columns that name a series in a CSV/TSV/JSON/Parquet manifest.
ID_COLUMNS = ("SeriesInstanceUID", "crdc_series_uuid", "series_uuid")


def format_for(format: ManifestFormat | str | None, path: Path) -> ManifestFormat:
    """The format asked for, else the one of the file's suffix (else s5cmd)."""
    if format is not None:
        try:
            return ManifestFormat(format)
        except ValueError:
            choices = ", ".join(f.value for f in ManifestFormat)
            raise ManifestError(f"unknown manifest format {format!r}; use one of {choices}") from None
    return SUFFIXES.get(path.suffix.lower(), ManifestFormat.S5CMD)


def sidecar(path: Path) -> Path:
    """The provenance file beside a CSV/TSV manifest: ``PATH.provenance.json``."""
    return path.with_name(path.name + ".provenance.json")


def buckets_table() -> pa.Table:
    """The AWS bucket and GCS bucket of each current bucket, for SQL joins."""
    return pa.table({"aws_bucket": list(GCS_BUCKETS), "gcs_bucket": list(GCS_BUCKETS.values())})


def listing(what: str, items: list[str], fix: str) -> str:
    """One line: the count, the first ten items, the fix."""
    shown = "; ".join(items[:10]) + (f"; and {len(items) - 10} more" if len(items) > 10 else "")
    return f"{len(items)} {what}: {shown}. To fix: {fix}"
