"""The issue's "done when": slides loaded into a real Orthanc, harvested with one command
(`cohort harvest --url URL --all -o DIR`), and `cohort query sm_by_organ -p organ=... --archive DIR`
returning exactly the slides of that organ. Plus QIDO discovery paging, and reruns that harvest only
the new series.
"""

from __future__ import annotations

import csv
import io

import pytest
from click.testing import CliRunner

from cohort.archive.discover import discover_series
from cohort.cli import cli
from cohort.endpoints import custom
from tests.support import data
from tests.support.archive import pt_series, sm_organ_series

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def server(orthanc_factory, tmp_path_factory):
    out = tmp_path_factory.mktemp("archive_orthanc")
    pancreas = data.sm_series(out)[0]
    lung = sm_organ_series(pancreas, out, "Lung")
    records = [pancreas, lung, *data.ct_mr_series(out, series_per_file=1, instances_per_series=2), pt_series(out)]
    server = orthanc_factory()
    loaded = data.load(server, records)
    assert not loaded.skipped
    server.records = {r.source: r for r in loaded.series}
    server.tmp = out
    return server


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout  # without the summaries written to stderr


def test_discovery_pages_within_the_caps(server):
    endpoint = custom(server.dicomweb_url)
    expected = {r.SeriesInstanceUID for r in server.records.values()}
    assert {s.SeriesInstanceUID for s in discover_series(endpoint)} == expected
    assert {s.SeriesInstanceUID for s in discover_series(endpoint, limit=1)} == expected  # paged one by one
    narrowed = discover_series(endpoint, limit=1, max_offset=3)  # the offset cap forces StudyDate ranges
    assert {s.SeriesInstanceUID for s in narrowed} == expected
    assert len(narrowed) == len(expected)


def test_done_when_harvest_all_then_saved_query_on_the_archive(server, tmp_path):
    out = tmp_path / "lab"
    run("harvest", "--all", "--url", server.dicomweb_url, "-o", str(out), "--no-progress", "--no-rate-limit")
    for organ, source in (("Pancreas", "highdicom-sm"), ("lung", "sm-Lung")):
        text = run("query", "sm_by_organ", "-p", f"organ={organ}", "--archive", str(out), "-f", "csv")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [r["SeriesInstanceUID"] for r in rows] == [server.records[source].SeriesInstanceUID]
        assert rows[0]["collection_id"] == "lab"
    sql = run("sql", "--archive", str(out), "-f", "csv",
              "SELECT SliceThickness, PixelSpacing FROM dicom_metadata WHERE Modality = 'CT'")
    assert len(list(csv.DictReader(io.StringIO(sql)))) == server.records["pydicom:CT_small.dcm"].n_instances


def test_rerun_harvests_only_new_series(server, tmp_path):
    out = tmp_path / "lab"
    first = CliRunner().invoke(cli, ["harvest", "--all", "--url", server.dicomweb_url, "-o", str(out),
                                     "--no-progress", "--no-rate-limit"])
    assert first.exit_code == 0, first.output
    n = len(server.records)
    again = CliRunner().invoke(cli, ["harvest", "--all", "--url", server.dicomweb_url, "-o", str(out),
                                     "--no-progress", "--no-rate-limit"])
    assert f"{n:,} series ({n:,} already complete" in again.output
    extra = pt_series(server.tmp / "more")
    data.load(server, [extra])
    third = CliRunner().invoke(cli, ["harvest", "--all", "--url", server.dicomweb_url, "-o", str(out),
                                     "--no-progress", "--no-rate-limit"])
    assert f"{n + 1:,} series ({n:,} already complete; this run: ok 1)" in third.output


def test_a_uid_file_of_series_not_in_idc_is_harvested_with_url(server, tmp_path):
    lung = server.records["sm-Lung"]
    uids = tmp_path / "mine.csv"
    uids.write_text(f"StudyInstanceUID,SeriesInstanceUID\n{lung.StudyInstanceUID},{lung.SeriesInstanceUID}\n")
    out = tmp_path / "one"
    text = CliRunner().invoke(cli, ["harvest", str(uids), "--url", server.dicomweb_url, "-o", str(out),
                                    "--no-progress", "--no-rate-limit"]).output
    assert "ok 1" in text
    rows = run("sql", "--archive", str(out), "-f", "csv", "SELECT SeriesInstanceUID, ObjectiveLensPower FROM sm_index")
    assert list(csv.DictReader(io.StringIO(rows))) == [{"SeriesInstanceUID": lung.SeriesInstanceUID,
                                                         "ObjectiveLensPower": "20"}]


def test_coverage_and_manifest_of_an_archive_use_its_own_server(server, tmp_path):
    out = tmp_path / "lab"
    run("harvest", "--all", "--url", server.dicomweb_url, "-o", str(out), "--no-progress", "--no-rate-limit")
    lung = server.records["sm-Lung"]
    text = run("coverage", "sm_by_organ", "-p", "organ=lung", "--archive", str(out), "--by", "series", "-f", "csv",
               "--verify")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["SeriesInstanceUID"] for r in rows] == [lung.SeriesInstanceUID]
    assert server.dicomweb_url.rstrip("/") in text
    manifest = tmp_path / "lung.csv"
    run("manifest", "sm_by_organ", "-p", "organ=lung", "--archive", str(out), "-o", str(manifest))
    (row,) = list(csv.DictReader(manifest.open()))
    assert row["series_url"] == f"{server.dicomweb_url.rstrip('/')}/studies/{lung.StudyInstanceUID}/series/{lung.SeriesInstanceUID}"
    refused = CliRunner().invoke(cli, ["manifest", "sm_by_organ", "--archive", str(out), "-o", str(tmp_path / "x.s5cmd")])
    assert refused.exit_code == 2 and "no bucket" in refused.output


def test_series_asked_with_their_study_keep_their_own_series_url(orthanc_factory, tmp_path):
    """`--all` asks a study's metadata once for its series: archive_series still gives each series its own
    URL and the server's root (derived from the study URL the log holds)."""
    import duckdb
    from pydicom.uid import generate_uid

    study = generate_uid()
    uids = [(study, generate_uid()) for _ in range(2)]
    server = orthanc_factory()
    server.upload_many([p for r in data.bulk_series(2, 2, tmp_path / "dcm", uids=uids, with_pixels=False)
                        for p in r.paths])
    out = tmp_path / "two"
    run("harvest", "--all", "--url", server.dicomweb_url, "-o", str(out), "--no-progress", "--no-rate-limit")
    logged = duckdb.sql(f"SELECT DISTINCT url FROM read_parquet('{out}/log/*.parquet')").fetchall()
    assert logged == [(f"{server.dicomweb_url}/studies/{study}/metadata",)]  # one request, for the study
    run("sql", "--archive", str(out), "SELECT 1")  # builds the archive
    rows = duckdb.sql(f"SELECT SeriesInstanceUID, series_url, dicomweb_url FROM "
                      f"read_parquet('{out}/archive/archive_series.parquet') ORDER BY 1").fetchall()
    assert rows == sorted((se, f"{server.dicomweb_url}/studies/{study}/series/{se}", server.dicomweb_url)
                          for _, se in uids)
