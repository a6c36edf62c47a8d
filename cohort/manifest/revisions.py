"""Which revision of a series a manifest names: chosen for export, resolved on import.

A series revised in a later release gets a new ``crdc_series_uuid``; the old one is
listed in ``prior_versions_index``. Export writes each series' current revision (or a
pinned one); import resolves each line's ``crdc_series_uuid`` exactly, and a line
that names only a SeriesInstanceUID to that series' current revision (else its newest).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from ..coverage import CoverageReport, route
from ..errors import ManifestError
from .formats import COLUMNS, LEGACY_GCS_BUCKETS, OHIF_URL, SLIM_URL, Provider, buckets_table, listing

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..cohort import Cohort
    from .parse import Ref


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
            "_want": pa.table({"SeriesInstanceUID": uids, "crdc_series_uuid": pinned}),
            "_buckets": buckets_table(),
            "_routes": (routes or route(cohort)).routes,
        },
    )
    found = table.column("found")
    if pc.all(found).as_py() is False:  # None for an empty cohort: written as "the cohort is empty"
        missing = table.filter(pc.invert(found)).select(["SeriesInstanceUID", "wanted_uuid"]).to_pylist()
        unknown = [r["SeriesInstanceUID"] for r in missing if r["wanted_uuid"] is None]
        if unknown:
            raise ManifestError(listing(
                f"series in neither index nor prior_versions_index of IDC v{cohort.catalog.idc_version}",
                unknown, "check for typos, or make the cohort with Cohort.from_uids, which checks them"))
        raise ManifestError(listing(
            "series with a crdc_series_uuid that is not a revision of that series",
            [f"{r['SeriesInstanceUID']} / {r['wanted_uuid']}" for r in missing],
            "take crdc_series_uuid from the same index row as the SeriesInstanceUID",
        ))
    if provider is Provider.GCS:
        no_gcs = table.filter(pc.is_null(table.column("gcs_url")))
        if no_gcs.num_rows:
            raise ManifestError(listing(
                "series in AWS buckets with no known GCS copy",
                [f"{r['SeriesInstanceUID']} (s3 bucket of {r['aws_url']})" for r in no_gcs.to_pylist()],
                "write an AWS manifest (provider='aws') instead",
            ))
    return table.select(list(COLUMNS))


def _revisions(restrict: str = "") -> str:
    """The CTEs ``cur`` (current revisions), ``prior`` (earlier ones), ``versions`` (both) and
    ``newest`` (each series' current revision, else its newest), with the same columns.

    ``prior_versions_index`` lists some revisions twice (the same crdc_series_uuid with the
    GCS bucket of v19 and of v20-v21): ``prior`` has one row per revision, spanning them all,
    with the newest row's buckets. ``restrict``: a WHERE clause on SeriesInstanceUID.
    """
    return f"""
cur AS MATERIALIZED (
    SELECT i.SeriesInstanceUID, i.crdc_series_uuid, i.collection_id, i.PatientID, i.StudyInstanceUID, i.Modality,
           i.aws_bucket, b.gcs_bucket, i.series_size_MB, i.series_revised_idc_version AS min_idc_version,
           $current AS max_idc_version, true AS in_current_release, i.instanceCount, i.source_DOI,
           i.license_short_name
    FROM index i LEFT JOIN _buckets b USING (aws_bucket) {restrict}
),
prior AS MATERIALIZED (
    SELECT p.SeriesInstanceUID, p.crdc_series_uuid, p.collection_id, p.PatientID, p.StudyInstanceUID, p.Modality,
           p.aws_bucket, p.gcs_bucket, p.series_size_MB,
           min(p.min_idc_version) OVER (PARTITION BY p.crdc_series_uuid) AS min_idc_version,
           p.max_idc_version, false AS in_current_release
    FROM prior_versions_index p {restrict}
    QUALIFY row_number() OVER (PARTITION BY p.crdc_series_uuid ORDER BY p.max_idc_version DESC) = 1
),
versions AS (SELECT * FROM cur UNION ALL BY NAME SELECT * FROM prior),
newest AS (
    SELECT * FROM cur
    UNION ALL BY NAME
    SELECT * FROM (
        SELECT * FROM prior ANTI JOIN cur USING (SeriesInstanceUID)
        QUALIFY row_number() OVER (PARTITION BY SeriesInstanceUID ORDER BY max_idc_version DESC) = 1
    )
)"""


# Plain equi-joins only (hash joins): a series' revision is picked by joining on
# SeriesInstanceUID alone (unpinned: ``newest``) or on SeriesInstanceUID and the pinned
# crdc_series_uuid; a pinned uuid that is not found keeps its row, with found = false.
_EXPORT_SQL = f"""
WITH want AS (SELECT DISTINCT SeriesInstanceUID, crdc_series_uuid AS wanted_uuid FROM _want),
{_revisions("WHERE SeriesInstanceUID IN (SELECT SeriesInstanceUID FROM want)")},
picked AS (
    SELECT w.SeriesInstanceUID, w.wanted_uuid, n.* EXCLUDE (SeriesInstanceUID)
    FROM (SELECT * FROM want WHERE wanted_uuid IS NULL) w LEFT JOIN newest n USING (SeriesInstanceUID)
    UNION ALL BY NAME
    SELECT w.SeriesInstanceUID, w.wanted_uuid, v.* EXCLUDE (SeriesInstanceUID)
    FROM (SELECT * FROM want WHERE wanted_uuid IS NOT NULL) w
    LEFT JOIN versions v ON v.SeriesInstanceUID = w.SeriesInstanceUID AND v.crdc_series_uuid = w.wanted_uuid
)
SELECT p.PatientID, p.collection_id, p.StudyInstanceUID, p.SeriesInstanceUID, p.Modality, p.crdc_series_uuid,
       p.wanted_uuid, p.crdc_series_uuid IS NOT NULL AS found, c.source_DOI, c.license_short_name,
       p.series_size_MB, p.instanceCount, p.min_idc_version, p.max_idc_version, p.in_current_release,
       's3://' || p.aws_bucket || '/' || p.crdc_series_uuid || '/*' AS aws_url,
       'gs://' || p.gcs_bucket || '/' || p.crdc_series_uuid || '/*' AS gcs_url,
       r.endpoint AS dicomweb_endpoint, r.series_url AS dicomweb_series_url,
       CASE WHEN NOT p.in_current_release THEN NULL
            WHEN p.Modality = 'SM' THEN $slim || p.StudyInstanceUID || '/series/' || p.SeriesInstanceUID
            ELSE $ohif || p.StudyInstanceUID END AS viewer_url
FROM picked p LEFT JOIN cur c USING (SeriesInstanceUID)
LEFT JOIN _routes r ON r.SeriesInstanceUID = p.SeriesInstanceUID AND r.revision_version = p.min_idc_version
ORDER BY p.collection_id, p.PatientID, p.StudyInstanceUID, p.SeriesInstanceUID, p.max_idc_version
"""


def release(row: dict) -> str:
    """The releases a resolved revision was in: ``"v25"`` or ``"v8-v9"``."""
    lo, hi = row["min_idc_version"], row["max_idc_version"]
    return f"v{hi}" if lo == hi else f"v{lo}-v{hi}"


#: A revision named by its crdc_series_uuid; a series named only by its UID: its current revision, else its newest.
_BY_UUID = "SELECT r.line, v.* FROM _refs r JOIN versions v ON v.crdc_series_uuid = r.ref_uuid"
_BY_UID = "SELECT r.line, n.* FROM _refs r JOIN newest n ON n.SeriesInstanceUID = r.ref_uid WHERE r.ref_uuid IS NULL"


def resolve(path: Path, refs: list[Ref], catalog: Catalog) -> list[dict]:
    """Each reference's revision: from ``index`` or ``prior_versions_index``, in one query."""
    refs_table = pa.table({
        "line": pa.array([r.line for r in refs], pa.int64()),
        "ref_uuid": pa.array([r.uuid for r in refs], pa.string()),
        "ref_uid": pa.array([r.uid for r in refs], pa.string()),
        "ref_bucket": pa.array([r.bucket for r in refs], pa.string()),
    })
    matches = [sql for sql, needed in ((_BY_UUID, any(r.uuid for r in refs)), (_BY_UID, any(not r.uuid for r in refs)))
               if needed]  # each join scans the whole index: run only those the manifest needs
    sql = (f"WITH {_revisions()}, m AS ({' UNION ALL BY NAME '.join(matches)}) "
           "SELECT r.*, m.* EXCLUDE (line) FROM _refs r LEFT JOIN m USING (line) ORDER BY r.line")
    rows = catalog.sql(sql, {"current": catalog.idc_version},
                       register={"_refs": refs_table, "_buckets": buckets_table()}).to_pylist()
    where = f"index nor prior_versions_index of IDC v{catalog.idc_version}"
    unknown = [r for r in rows if r["crdc_series_uuid"] is None]
    if unknown:
        raise ManifestError(listing(
            f"series found in neither {where}",
            [f"{path}:{r['line']}: {r['ref_uuid'] or r['ref_uid']}" for r in unknown],
            "check for typos; a manifest of a newer IDC release needs a newer idc-index-data",
        ), path=str(path), line=unknown[0]["line"])
    wrong = [r for r in rows if r["ref_uid"] and r["ref_uuid"] and r["ref_uid"] != r["SeriesInstanceUID"]]
    if wrong:
        raise ManifestError(listing(
            "rows whose crdc_series_uuid belongs to another series",
            [f"{path}:{r['line']}: {r['ref_uuid']} is a revision of {r['SeriesInstanceUID']}, "
             f"not {r['ref_uid']}" for r in wrong],
            "take SeriesInstanceUID and crdc_series_uuid from the same index row",
        ), path=str(path), line=wrong[0]["line"])
    misplaced = [r for r in rows if r["ref_bucket"] and r["ref_bucket"] not in _buckets_of(r)]
    if misplaced:
        raise ManifestError(listing(
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
