"""cohort/manifest/revisions.py, every outcome written out: which revision each reference resolves to
(`resolve`), the rows a manifest is written from (`manifest_table`), and their exact errors. Written
for the survivors of a mutation run (bench/mutation.py manifest.revisions): fast, a handful of
series per call.

Expected values come from idc-index-data's own Parquet files read with plain DuckDB SQL (not
through cohort) or are written out by hand; the two faults that the shipped index never shows (an
AWS bucket with no GCS copy) are injected by taking a bucket out of the bucket table.
"""

from __future__ import annotations

import duckdb
import idc_index_data
import pyarrow as pa
import pytest

from cohort import Cohort, ManifestError, Provenance
from cohort.coverage import route
from cohort.manifest import COLUMNS, OHIF_URL, SLIM_URL, manifest_table
from cohort.manifest import formats, revisions
from cohort.manifest.parse import Ref
from cohort.manifest.revisions import _buckets_of, release, resolve

SLIDE = "1.3.6.1.4.1.5962.99.1.3380245274.1362068963.1639762817818.2.0"
SLIDE_V8_UUID = "99171fc7-7652-42df-9254-ad78c685771b"
SLIDE_UUID = "1cac0ac8-f1b1-4566-84e0-37716cf63939"
INDEX = idc_index_data.IDC_INDEX_PARQUET_FILEPATH
PRIOR = idc_index_data.PRIOR_VERSIONS_INDEX_PARQUET_FILEPATH
NO_SUCH_UUID = "00000000-0000-4000-8000-000000000000"


def _current(bucket: str) -> dict:
    """The first current series (by UID) of an AWS bucket: its index row, straight from the Parquet file."""
    return duckdb.sql(f"SELECT * FROM '{INDEX}' WHERE aws_bucket = '{bucket}' ORDER BY SeriesInstanceUID LIMIT 1") \
        .df().to_dict("records")[0]


@pytest.fixture(scope="module")
def series() -> dict[str, dict]:
    slide = duckdb.sql(f"SELECT * FROM '{INDEX}' WHERE SeriesInstanceUID = '{SLIDE}'").df().to_dict("records")[0]
    old = duckdb.sql(f"SELECT * EXCLUDE (min_idc_version, max_idc_version), min(min_idc_version) OVER () AS lo, "
                     f"max(max_idc_version) OVER () AS hi FROM '{PRIOR}' WHERE crdc_series_uuid = '{SLIDE_V8_UUID}'"
                     ).df().to_dict("records")[0]
    return {"slide": slide, "old": old, "cr": _current("idc-open-data-cr"), "two": _current("idc-open-data-two")}


def _cohort(catalog, uids, uuids=None) -> Cohort:
    columns = {"SeriesInstanceUID": pa.array(uids, pa.string())}
    if uuids is not None:
        columns["crdc_series_uuid"] = pa.array(uuids, pa.string())
    return Cohort(pa.table(columns), Provenance.make(catalog, query_name="by hand"), catalog)


# -- the pure parts ----------------------------------------------------------------------------------------


def test_release_and_buckets():
    assert release({"min_idc_version": 25, "max_idc_version": 25}) == "v25"
    assert release({"min_idc_version": 8, "max_idc_version": 9}) == "v8-v9"
    assert release({"min_idc_version": 2, "max_idc_version": 25}) == "v2-v25"
    assert _buckets_of({"aws_bucket": "idc-open-data", "gcs_bucket": "idc-open-data"}) == {
        "idc-open-data", "public-datasets-idc"}
    assert _buckets_of({"aws_bucket": "idc-open-data", "gcs_bucket": "public-datasets-idc"}) == {
        "idc-open-data", "public-datasets-idc"}
    assert _buckets_of({"aws_bucket": "idc-open-data-cr", "gcs_bucket": "idc-open-cr"}) == {
        "idc-open-data-cr", "idc-open-cr"}
    assert _buckets_of({"aws_bucket": "idc-open-data-two", "gcs_bucket": None}) == {"idc-open-data-two"}


# -- resolve --------------------------------------------------------------------------------------------


def test_resolve_by_uuid_by_uid_and_both(catalog, series, tmp_path):
    slide, old, cr, two = series["slide"], series["old"], series["cr"], series["two"]
    refs = [
        Ref(1, uuid=SLIDE_V8_UUID, bucket="public-datasets-idc"),  # a Portal's legacy GCS bucket
        Ref(2, uid=SLIDE),
        Ref(4, uuid=cr["crdc_series_uuid"], uid=cr["SeriesInstanceUID"], bucket="idc-open-cr"),
        Ref(5, uuid=two["crdc_series_uuid"], bucket="idc-open-data-two"),
        Ref(7, uuid=SLIDE_UUID, uid=SLIDE, bucket="idc-open-data"),
    ]
    rows = resolve(tmp_path / "m.s5cmd", refs, catalog)
    assert [r["line"] for r in rows] == [1, 2, 4, 5, 7]
    assert [(r["ref_uuid"], r["ref_uid"], r["ref_bucket"]) for r in rows] == [
        (SLIDE_V8_UUID, None, "public-datasets-idc"), (None, SLIDE, None),
        (cr["crdc_series_uuid"], cr["SeriesInstanceUID"], "idc-open-cr"),
        (two["crdc_series_uuid"], None, "idc-open-data-two"), (SLIDE_UUID, SLIDE, "idc-open-data")]
    keys = ("SeriesInstanceUID", "crdc_series_uuid", "aws_bucket", "gcs_bucket", "series_size_MB", "min_idc_version",
            "max_idc_version", "in_current_release", "collection_id", "PatientID", "StudyInstanceUID", "Modality")

    def cur(r, gcs):
        return (r["SeriesInstanceUID"], r["crdc_series_uuid"], r["aws_bucket"], gcs, r["series_size_MB"],
                r["series_revised_idc_version"], catalog.idc_version, True, r["collection_id"], r["PatientID"],
                r["StudyInstanceUID"], r["Modality"])

    assert [tuple(r[k] for k in keys) for r in rows] == [
        (SLIDE, SLIDE_V8_UUID, old["aws_bucket"], old["gcs_bucket"], old["series_size_MB"], old["lo"], old["hi"],
         False, old["collection_id"], old["PatientID"], old["StudyInstanceUID"], old["Modality"]),
        cur(slide, "idc-open-data"), cur(cr, "idc-open-cr"), cur(two, "idc-open-idc1"), cur(slide, "idc-open-data")]
    assert (old["lo"], old["hi"], old["gcs_bucket"]) == (8, 9, "public-datasets-idc")


def test_resolve_of_uids_only_and_uuids_only(catalog, series, tmp_path):
    cr, two = series["cr"], series["two"]
    rows = resolve(tmp_path / "m.csv", [Ref(3, uid=cr["SeriesInstanceUID"]), Ref(4, uid=two["SeriesInstanceUID"])],
                   catalog)
    assert [(r["line"], r["crdc_series_uuid"]) for r in rows] == [(3, cr["crdc_series_uuid"]),
                                                                  (4, two["crdc_series_uuid"])]
    rows = resolve(tmp_path / "m.csv", [Ref(2, uuid=two["crdc_series_uuid"])], catalog)
    assert [(r["line"], r["SeriesInstanceUID"]) for r in rows] == [(2, two["SeriesInstanceUID"])]


def test_resolve_errors_name_every_line(catalog, series, tmp_path):
    cr, two = series["cr"], series["two"]
    path = tmp_path / "bad.s5cmd"
    v = catalog.idc_version
    with pytest.raises(ManifestError) as err:
        resolve(path, [Ref(1, uuid=SLIDE_UUID), Ref(2, uuid=NO_SUCH_UUID), Ref(3, uid="1.2.3"),
                       Ref(4, uuid=cr["crdc_series_uuid"], uid="1.2.4")], catalog)
    assert str(err.value) == (
        f"{path}:2: 2 series found in neither index nor prior_versions_index of IDC v{v}: {path}:2: {NO_SUCH_UUID}; "
        f"{path}:3: 1.2.3. To fix: check for typos; a manifest of a newer IDC release needs a newer idc-index-data")
    assert (err.value.path, err.value.line) == (str(path), 2)

    with pytest.raises(ManifestError) as err:
        resolve(path, [Ref(1, uuid=cr["crdc_series_uuid"], uid=cr["SeriesInstanceUID"]),
                       Ref(2, uuid=SLIDE_V8_UUID, uid=cr["SeriesInstanceUID"]), Ref(3, uuid=SLIDE_UUID),
                       Ref(4, uuid=two["crdc_series_uuid"], uid=SLIDE)], catalog)
    assert str(err.value) == (
        f"{path}:2: 2 rows whose crdc_series_uuid belongs to another series: {path}:2: {SLIDE_V8_UUID} is a revision "
        f"of {SLIDE}, not {cr['SeriesInstanceUID']}; {path}:4: {two['crdc_series_uuid']} is a revision of "
        f"{two['SeriesInstanceUID']}, not {SLIDE}. To fix: take SeriesInstanceUID and crdc_series_uuid from the "
        "same index row")
    assert (err.value.path, err.value.line) == (str(path), 2)

    t = two["crdc_series_uuid"]
    with pytest.raises(ManifestError) as err:
        resolve(path, [Ref(1, uuid=cr["crdc_series_uuid"], bucket="idc-open-cr"),
                       Ref(2, uuid=SLIDE_V8_UUID, bucket="idc-open-data-cr"),
                       Ref(3, uuid=t, bucket="public-datasets-idc")], catalog)
    assert str(err.value) == (
        f"{path}:2: 2 lines whose bucket does not hold that series: {path}:2: s3://idc-open-data-cr/{SLIDE_V8_UUID}/* "
        f"should be s3://idc-open-data/{SLIDE_V8_UUID}/* (AWS) or s3://public-datasets-idc/{SLIDE_V8_UUID}/* (GCS); "
        f"{path}:3: s3://public-datasets-idc/{t}/* should be s3://idc-open-data-two/{t}/* (AWS) or "
        f"s3://idc-open-idc1/{t}/* (GCS). To fix: fix the bucket names, or re-export the manifest")
    assert (err.value.path, err.value.line) == (str(path), 2)


def test_a_bucket_with_no_gcs_copy(catalog, series, tmp_path, monkeypatch):
    """Injected: the GCS copy of idc-open-data-cr unknown (every bucket of the shipped index has one)."""
    cr, slide = series["cr"], series["slide"]
    no_cr = pa.table({"aws_bucket": ["idc-open-data", "idc-open-data-two"],
                      "gcs_bucket": ["idc-open-data", "idc-open-idc1"]})
    monkeypatch.setattr(revisions, "buckets_table", lambda: no_cr)
    path = tmp_path / "m.s5cmd"
    u = cr["crdc_series_uuid"]
    with pytest.raises(ManifestError) as err:
        resolve(path, [Ref(1, uuid=u, bucket="idc-open-cr")], catalog)
    assert str(err.value) == (f"{path}:1: 1 lines whose bucket does not hold that series: {path}:1: "
                              f"s3://idc-open-cr/{u}/* should be s3://idc-open-data-cr/{u}/* (AWS). "
                              "To fix: fix the bucket names, or re-export the manifest")
    cohort = _cohort(catalog, [cr["SeriesInstanceUID"], SLIDE])
    routes = route(cohort, "proxy")
    with pytest.raises(ManifestError) as err:
        manifest_table(cohort, "gcs", routes)
    assert str(err.value) == (f"1 series in AWS buckets with no known GCS copy: {cr['SeriesInstanceUID']} (s3 bucket "
                              f"of s3://idc-open-data-cr/{u}/*). To fix: write an AWS manifest (provider='aws') instead")
    aws = {r["SeriesInstanceUID"]: r for r in manifest_table(cohort, "aws", routes).to_pylist()}
    assert aws[cr["SeriesInstanceUID"]]["gcs_url"] is None
    assert aws[SLIDE]["gcs_url"] == f"gs://idc-open-data/{slide['crdc_series_uuid']}/*"
    assert formats.buckets_table().num_rows == 3  # the module's own table is untouched


# -- manifest_table ---------------------------------------------------------------------------------------


def _expected(r: dict, catalog, gcs: str, endpoint, series_url) -> dict:
    """A current series' manifest row, from its index row."""
    viewer = (SLIM_URL + r["StudyInstanceUID"] + "/series/" + r["SeriesInstanceUID"] if r["Modality"] == "SM"
              else OHIF_URL + r["StudyInstanceUID"])
    return {"PatientID": r["PatientID"], "collection_id": r["collection_id"], "StudyInstanceUID": r["StudyInstanceUID"],
            "SeriesInstanceUID": r["SeriesInstanceUID"], "Modality": r["Modality"],
            "crdc_series_uuid": r["crdc_series_uuid"], "source_DOI": r["source_DOI"],
            "license_short_name": r["license_short_name"], "series_size_MB": r["series_size_MB"],
            "instanceCount": r["instanceCount"], "min_idc_version": r["series_revised_idc_version"],
            "max_idc_version": catalog.idc_version, "in_current_release": True,
            "aws_url": f"s3://{r['aws_bucket']}/{r['crdc_series_uuid']}/*",
            "gcs_url": f"gs://{gcs}/{r['crdc_series_uuid']}/*", "dicomweb_endpoint": endpoint,
            "dicomweb_series_url": series_url, "viewer_url": viewer}


def test_manifest_table_rows_of_current_series(catalog, series):
    slide, cr, two = series["slide"], series["cr"], series["two"]
    cohort = _cohort(catalog, [two["SeriesInstanceUID"], SLIDE, cr["SeriesInstanceUID"]])
    routes = route(cohort, "proxy")
    by_uid = {r["SeriesInstanceUID"]: r for r in routes.routes.to_pylist()}
    table = manifest_table(cohort, "gcs", routes)
    assert table.column_names == list(COLUMNS)
    expected = [_expected(r, catalog, gcs, by_uid[r["SeriesInstanceUID"]]["endpoint"],
                          by_uid[r["SeriesInstanceUID"]]["series_url"])
                for r, gcs in ((slide, "idc-open-data"), (cr, "idc-open-cr"), (two, "idc-open-idc1"))]
    expected.sort(key=lambda e: (e["collection_id"], e["PatientID"], e["StudyInstanceUID"], e["SeriesInstanceUID"]))
    assert table.to_pylist() == expected
    assert {r["Modality"] for r in expected} >= {"SM"} and len({r["Modality"] for r in expected}) > 1
    assert all(r["dicomweb_series_url"] for r in expected)


def test_manifest_table_pinned_revisions_follow_their_own_route(catalog, series):
    slide, old = series["slide"], series["old"]
    cohort = _cohort(catalog, [SLIDE, SLIDE], [SLIDE_V8_UUID, SLIDE_UUID])
    table = manifest_table(cohort, routes=route(cohort, 9))
    rows = {r["crdc_series_uuid"]: r for r in table.to_pylist()}
    assert [r["crdc_series_uuid"] for r in table.to_pylist()] == [SLIDE_V8_UUID, SLIDE_UUID]  # older first
    assert rows[SLIDE_V8_UUID] == {
        "PatientID": old["PatientID"], "collection_id": old["collection_id"], "StudyInstanceUID": old["StudyInstanceUID"],
        "SeriesInstanceUID": SLIDE, "Modality": "SM", "crdc_series_uuid": SLIDE_V8_UUID,
        "source_DOI": slide["source_DOI"], "license_short_name": slide["license_short_name"],
        "series_size_MB": old["series_size_MB"], "instanceCount": None, "min_idc_version": 8, "max_idc_version": 9,
        "in_current_release": False, "aws_url": f"s3://idc-open-data/{SLIDE_V8_UUID}/*",
        "gcs_url": f"gs://public-datasets-idc/{SLIDE_V8_UUID}/*", "dicomweb_endpoint": "idc-store-v9",
        "dicomweb_series_url": rows[SLIDE_V8_UUID]["dicomweb_series_url"], "viewer_url": None}
    assert rows[SLIDE_V8_UUID]["dicomweb_series_url"].endswith(f"/dicomStores/idc-store-v9/dicomWeb/studies/"
                                                                f"{old['StudyInstanceUID']}/series/{SLIDE}")
    assert (rows[SLIDE_UUID]["dicomweb_endpoint"], rows[SLIDE_UUID]["in_current_release"]) == (None, True)
    # no routes given: the default policy's, which serves the current revision
    default = {r["crdc_series_uuid"]: r for r in manifest_table(cohort).to_pylist()}
    assert default[SLIDE_V8_UUID]["dicomweb_endpoint"] is None
    assert default[SLIDE_UUID]["dicomweb_endpoint"] is not None


def test_manifest_table_errors_and_the_empty_cohort(catalog, series):
    two = series["two"]
    v = catalog.idc_version
    unknown = _cohort(catalog, ["1.2.4", SLIDE, "1.2.3"])
    with pytest.raises(ManifestError) as err:
        manifest_table(unknown, routes=route(_cohort(catalog, [SLIDE]), "proxy"))
    assert str(err.value) == (f"2 series in neither index nor prior_versions_index of IDC v{v}: 1.2.3; 1.2.4. "
                              "To fix: check for typos, or make the cohort with Cohort.from_uids, which checks them")
    # an unknown series wins over a wrong revision
    mixed = _cohort(catalog, [SLIDE, "1.2.3"], [two["crdc_series_uuid"], None])
    with pytest.raises(ManifestError, match=r"^1 series in neither index nor prior_versions_index of IDC v\d+: 1\.2\.3\."):
        manifest_table(mixed, routes=route(_cohort(catalog, [SLIDE]), "proxy"))
    wrong = _cohort(catalog, [SLIDE, SLIDE], [two["crdc_series_uuid"], SLIDE_V8_UUID])
    with pytest.raises(ManifestError) as err:
        manifest_table(wrong, routes=route(_cohort(catalog, [SLIDE]), "proxy"))
    assert str(err.value) == (f"1 series with a crdc_series_uuid that is not a revision of that series: {SLIDE} / "
                              f"{two['crdc_series_uuid']}. To fix: take crdc_series_uuid from the same index row as "
                              "the SeriesInstanceUID")
    empty = manifest_table(_cohort(catalog, []), routes=route(_cohort(catalog, [SLIDE]), "proxy"))
    assert (empty.num_rows, empty.column_names) == (0, list(COLUMNS))
