"""cohort/manifest/read.py, every outcome written out: the cohort's columns, types and values, its
provenance, the provider (from buckets, an ``--endpoint-url`` header or our own header) and the
exact errors. Written for the survivors of a mutation run (bench/mutation.py manifest.read): fast,
one small manifest per read.

Expected values are the shipped index's own rows (idc-index-data's Parquet read here with plain
DuckDB SQL, not through cohort), or written out by hand.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import duckdb
import idc_index_data
import pyarrow as pa
import pytest

from cohort import ManifestError
from cohort.manifest import Provider, manifest_provider, read_manifest
from cohort.manifest.read import _header_provider, _provider_of

#: The DICOMweb tutorial's pancreas slide: current revision since v10, an older one (v8-v9).
SLIDE = "1.3.6.1.4.1.5962.99.1.3380245274.1362068963.1639762817818.2.0"
SLIDE_V8_UUID = "99171fc7-7652-42df-9254-ad78c685771b"
SLIDE_UUID = "1cac0ac8-f1b1-4566-84e0-37716cf63939"
INDEX = idc_index_data.IDC_INDEX_PARQUET_FILEPATH
PRIOR = idc_index_data.PRIOR_VERSIONS_INDEX_PARQUET_FILEPATH
GCS_URL = "https://storage.googleapis.com"


def _current(bucket: str) -> dict:
    """The first current series (by UID) in an AWS bucket, from the index file itself."""
    return duckdb.sql(f"SELECT SeriesInstanceUID, crdc_series_uuid, series_size_MB, series_revised_idc_version "
                      f"FROM '{INDEX}' WHERE aws_bucket = '{bucket}' ORDER BY SeriesInstanceUID LIMIT 1").df() \
        .to_dict("records")[0]


def _slide_rows() -> tuple[dict, dict]:
    cur = duckdb.sql(f"SELECT crdc_series_uuid, series_size_MB, series_revised_idc_version FROM '{INDEX}' "
                     f"WHERE SeriesInstanceUID = '{SLIDE}'").df().to_dict("records")[0]
    old = duckdb.sql(f"SELECT series_size_MB, min(min_idc_version) AS lo, max(max_idc_version) AS hi FROM '{PRIOR}' "
                     f"WHERE crdc_series_uuid = '{SLIDE_V8_UUID}' GROUP BY ALL").df().to_dict("records")[0]
    return cur, old


# -- the pure parts: which provider ---------------------------------------------------------------------


def _row(line, bucket, aws):
    return {"line": line, "ref_bucket": bucket, "aws_bucket": aws}


def test_provider_from_buckets_and_hints(tmp_path):
    path = tmp_path / "m.s5cmd"
    assert _provider_of(path, [], []) is None
    # no bucket, or a bucket of the same name in AWS and GCS: says nothing
    assert _provider_of(path, [_row(1, None, "idc-open-data-cr"), _row(2, "idc-open-data", "idc-open-data")], []) is None
    assert _provider_of(path, [_row(1, "idc-open-data-cr", "idc-open-data-cr")], []) is Provider.AWS
    assert _provider_of(path, [_row(1, "idc-open-cr", "idc-open-data-cr")], []) is Provider.GCS
    assert _provider_of(path, [], [(1, Provider.GCS)]) is Provider.GCS
    assert _provider_of(path, [], [(1, Provider.AWS), (2, Provider.AWS)]) is Provider.AWS
    assert _provider_of(path, [_row(2, "idc-open-cr", "idc-open-data-cr")], [(1, Provider.GCS)]) is Provider.GCS
    assert _provider_of(path, [_row(2, "idc-open-data", "idc-open-data"), _row(3, "idc-open-data-two",
                                                                              "idc-open-data-two")], []) is Provider.AWS


def test_mixed_providers_name_the_first_line_of_each(tmp_path):
    path = tmp_path / "m.s5cmd"
    tail = (" s5cmd runs a manifest against one endpoint; re-export it for one provider "
            "(cohort manifest MANIFEST -o NEW --provider aws)")
    rows = [_row(2, "idc-open-data", "idc-open-data"), _row(3, "idc-open-cr", "idc-open-data-cr"),
            _row(5, "idc-open-data-two", "idc-open-data-two"), _row(6, "idc-open-idc1", "idc-open-data-two"),
            _row(9, "idc-open-data-cr", "idc-open-data-cr")]
    with pytest.raises(ManifestError) as err:
        _provider_of(path, rows, [])
    assert str(err.value) == (f"{path}:5: the manifest mixes providers: line 5 uses AWS bucket idc-open-data-two, "
                              f"line 3 uses GCS bucket idc-open-cr." + tail)
    assert (err.value.path, err.value.line) == (str(path), 5)
    # the header's --endpoint-url comes first; the line is the later of the two
    with pytest.raises(ManifestError) as err:
        _provider_of(path, rows[4:], [(1, Provider.GCS), (4, Provider.GCS)])
    assert str(err.value) == (f"{path}:9: the manifest mixes providers: line 9 uses AWS bucket idc-open-data-cr, "
                              f"line 1 uses --endpoint-url {GCS_URL}." + tail)
    assert err.value.line == 9
    with pytest.raises(ManifestError) as err:
        _provider_of(path, [_row(7, "idc-open-idc1", "idc-open-data-two")], [(2, Provider.AWS)])
    assert str(err.value) == (f"{path}:7: the manifest mixes providers: line 2 uses --endpoint-url "
                              "https://s3.amazonaws.com, line 7 uses GCS bucket idc-open-idc1." + tail)
    assert err.value.line == 7


def test_header_provider_and_manifest_provider():
    assert _header_provider({"provider": "gcs"}) is Provider.GCS
    assert _header_provider({"provider": "aws"}) is Provider.AWS
    assert _header_provider({"provider": "azure"}) is None
    assert _header_provider({"provider": None}) is None
    assert _header_provider({}) is None

    def made(params):
        return SimpleNamespace(provenance=SimpleNamespace(params=params))

    assert manifest_provider(made({"provider": "gcs"})) is Provider.GCS
    assert manifest_provider(made({"provider": "aws"})) is Provider.AWS
    assert manifest_provider(made({"provider": None})) is None
    assert manifest_provider(made({})) is None


# -- read_manifest against the shipped index ---------------------------------------------------------------


def test_a_csv_reads_as_the_exact_cohort(catalog, tmp_path):
    cur, old = _slide_rows()
    path = tmp_path / "two.csv"
    path.write_text(f"SeriesInstanceUID,crdc_series_uuid\n{SLIDE},\n,{SLIDE_V8_UUID}\n", encoding="utf-8")
    cohort = read_manifest(path, catalog)
    assert cohort.catalog is catalog
    assert cohort.result.schema == pa.schema([
        ("SeriesInstanceUID", pa.string()), ("crdc_series_uuid", pa.string()), ("min_idc_version", pa.int64()),
        ("max_idc_version", pa.int64()), ("series_size_MB", pa.float64()), ("source_release", pa.string()),
        ("in_current_release", pa.bool_()), ("manifest_line", pa.int64()),
    ])
    assert cohort.result.to_pylist() == [
        {"SeriesInstanceUID": SLIDE, "crdc_series_uuid": cur["crdc_series_uuid"],
         "min_idc_version": cur["series_revised_idc_version"], "max_idc_version": catalog.idc_version,
         "series_size_MB": cur["series_size_MB"],
         "source_release": f"v{cur['series_revised_idc_version']}-v{catalog.idc_version}",
         "in_current_release": True, "manifest_line": 2},
        {"SeriesInstanceUID": SLIDE, "crdc_series_uuid": SLIDE_V8_UUID, "min_idc_version": old["lo"],
         "max_idc_version": old["hi"], "series_size_MB": old["series_size_MB"],
         "source_release": f"v{old['lo']}-v{old['hi']}", "in_current_release": False, "manifest_line": 3},
    ]
    assert cur["crdc_series_uuid"] == SLIDE_UUID and (old["lo"], old["hi"]) == (8, 9)
    prov = cohort.provenance
    assert prov.query_name == "manifest two.csv"
    assert prov.source == str(path)
    assert prov.params == {"manifest": str(path), "format": "csv", "provider": None, "lines": 2}
    assert manifest_provider(cohort) is None


def test_s5cmd_provider_and_header_in_the_provenance(catalog, tmp_path):
    cr = _current("idc-open-data-cr")
    aws = tmp_path / "aws.s5cmd"
    aws.write_text(f"cp s3://idc-open-data-cr/{cr['crdc_series_uuid']}/* .\n", encoding="utf-8")
    cohort = read_manifest(str(aws), catalog)  # a str path too
    assert cohort.provenance.params == {"manifest": str(aws), "format": "s5cmd", "provider": "aws", "lines": 1}
    assert manifest_provider(cohort) is Provider.AWS
    assert cohort.result.to_pylist() == [{
        "SeriesInstanceUID": cr["SeriesInstanceUID"], "crdc_series_uuid": cr["crdc_series_uuid"],
        "min_idc_version": cr["series_revised_idc_version"], "max_idc_version": catalog.idc_version,
        "series_size_MB": cr["series_size_MB"],
        "source_release": (f"v{catalog.idc_version}" if cr["series_revised_idc_version"] == catalog.idc_version
                           else f"v{cr['series_revised_idc_version']}-v{catalog.idc_version}"),
        "in_current_release": True, "manifest_line": 1}]

    gcs = tmp_path / "gcs.s5cmd"
    gcs.write_text(f"# s5cmd --no-sign-request --endpoint-url {GCS_URL} run gcs.s5cmd\n"
                   f"cp s3://idc-open-data/{SLIDE_UUID}/* .\n", encoding="utf-8")
    cohort = read_manifest(gcs, catalog)
    params = cohort.provenance.params
    assert {k: params[k] for k in ("format", "provider", "lines")} == {"format": "s5cmd", "provider": "gcs", "lines": 1}
    assert manifest_provider(cohort) is Provider.GCS
    assert cohort.result.column("manifest_line").to_pylist() == [2]


def test_our_own_header_names_the_provider_when_no_bucket_does(catalog, tmp_path):
    path = tmp_path / "ours.csv"
    path.write_text(f"SeriesInstanceUID\n{SLIDE}\n", encoding="utf-8")
    header = {"provider": "gcs", "series": 1, "query_name": "by hand"}
    (tmp_path / "ours.csv.provenance.json").write_text(json.dumps(header), encoding="utf-8")
    cohort = read_manifest(path, catalog)
    assert cohort.provenance.params == {"manifest": str(path), "format": "csv", "provider": "gcs", "lines": 1,
                                        "manifest_provenance": header}
    assert manifest_provider(cohort) is Provider.GCS
    # the bucket wins over the header
    cr = _current("idc-open-data-cr")
    both = tmp_path / "both.s5cmd"
    both.write_text(f"# provider: gcs\ncp s3://idc-open-data-cr/{cr['crdc_series_uuid']}/* .\n", encoding="utf-8")
    params = read_manifest(both, catalog).provenance.params
    assert (params["provider"], params["manifest_provenance"]) == ("aws", {"provider": "gcs"})


def test_missing_file_and_empty_manifest_errors(catalog, tmp_path):
    for where in (tmp_path / "nothing.s5cmd", tmp_path):
        with pytest.raises(ManifestError) as err:
            read_manifest(where, catalog)
        assert str(err.value) == (f"{where}: no such file; give the path of an s5cmd, CSV, TSV, JSON or Parquet "
                                  "manifest")
        assert (err.value.path, err.value.line) == (str(where), None)
    empty = tmp_path / "empty.s5cmd"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ManifestError) as err:
        read_manifest(empty, catalog)
    assert str(err.value) == (f"{empty}: the manifest lists no series (expected lines like "
                              "`cp s3://<bucket>/<crdc_series_uuid>/* <destination>` or rows with SeriesInstanceUID "
                              "or crdc_series_uuid)")
    assert err.value.path == str(empty)


def test_errors_of_a_read_name_the_file(catalog, tmp_path):
    v = catalog.idc_version
    unknown = tmp_path / "unknown.s5cmd"
    none = "00000000-0000-4000-8000-000000000000"
    unknown.write_text(f"cp s3://idc-open-data/{none}/* .\n", encoding="utf-8")
    with pytest.raises(ManifestError) as err:
        read_manifest(unknown, catalog)
    assert str(err.value) == (f"{unknown}:1: 1 series found in neither index nor prior_versions_index of IDC v{v}: "
                              f"{unknown}:1: {none}. To fix: check for typos; a manifest of a newer IDC release "
                              "needs a newer idc-index-data")
    cr, two = _current("idc-open-data-cr"), _current("idc-open-data-two")
    mixed = tmp_path / "mixed.s5cmd"
    mixed.write_text(f"cp s3://idc-open-data-cr/{cr['crdc_series_uuid']}/* .\n"
                     f"cp s3://idc-open-idc1/{two['crdc_series_uuid']}/* .\n", encoding="utf-8")
    with pytest.raises(ManifestError) as err:
        read_manifest(mixed, catalog)
    assert str(err.value).startswith(f"{mixed}:2: the manifest mixes providers: line 1 uses AWS bucket "
                                     "idc-open-data-cr, line 2 uses GCS bucket idc-open-idc1. ")
    assert (err.value.path, err.value.line) == (str(mixed), 2)
