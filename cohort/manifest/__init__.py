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

Modules: :mod:`.formats` (formats, providers, buckets, columns), :mod:`.write`,
:mod:`.parse` (the five parsers), :mod:`.revisions` (which revision a line names),
:mod:`.read`, :mod:`.download`.
"""

from .download import DEFAULT_DIR_TEMPLATE, DownloadPlan, download, plan_download, plan_selection
from .formats import (
    COLUMNS, ENDPOINT_URLS, GCS_BUCKETS, LEGACY_GCS_BUCKETS, OHIF_URL, PARQUET_KEY, SLIM_URL, SUFFIXES,
    ManifestFormat, Provider,
)
from .read import manifest_provider, read_manifest
from .revisions import manifest_table
from .write import ManifestInfo, write_manifest

__all__ = [
    "COLUMNS",
    "DEFAULT_DIR_TEMPLATE",
    "ENDPOINT_URLS",
    "GCS_BUCKETS",
    "LEGACY_GCS_BUCKETS",
    "OHIF_URL",
    "PARQUET_KEY",
    "SLIM_URL",
    "SUFFIXES",
    "DownloadPlan",
    "ManifestFormat",
    "ManifestInfo",
    "Provider",
    "download",
    "manifest_provider",
    "manifest_table",
    "plan_download",
    "plan_selection",
    "read_manifest",
    "write_manifest",
]
