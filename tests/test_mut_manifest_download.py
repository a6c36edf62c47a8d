"""cohort/manifest/download.py, every outcome written out: the plan's text, bytes and free-space
check, the s5cmd manifest handed to idc-index, the selection's values and errors, and how idc-index's
failures are reported. Written for the survivors of a mutation run (bench/mutation.py
manifest.download).

idc-index's IDCClient is stood in for by a recording client (its download needs the network); its
failures are injected: an exception, or an ERROR record on its logger as it logs a failed s5cmd
run. Expected series and sizes come from idc-index-data's Parquet read with plain DuckDB SQL.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

import duckdb
import idc_index_data
import pyarrow as pa
import pytest

from cohort import Cohort, DiskSpaceError, DownloadError, ManifestError, Provenance
from cohort.manifest import DEFAULT_DIR_TEMPLATE, DownloadPlan, Provider, download, plan_download, plan_selection
from cohort.manifest.download import _describe, _Errors, _gb, _size_MB, _values

SLIDE = "1.3.6.1.4.1.5962.99.1.3380245274.1362068963.1639762817818.2.0"
SLIDE_UUID = "1cac0ac8-f1b1-4566-84e0-37716cf63939"
SLIDE_V8_UUID = "99171fc7-7652-42df-9254-ad78c685771b"
INDEX = idc_index_data.IDC_INDEX_PARQUET_FILEPATH


def _plan(dest, provider=None, series=1234, size_MB=5678.9, cohort=None, **kw) -> DownloadPlan:
    return DownloadPlan(None, Path(dest), provider, series, size_MB, cohort, **kw)


# -- the pure parts ----------------------------------------------------------------------------------------


def test_plan_text_bytes_and_defaults(tmp_path):
    dest = tmp_path / "dl"
    assert str(_plan(dest)) == f"1,234 series, 5.68 GB from AWS or GCS into {dest}"
    assert str(_plan(dest, Provider.AWS, 1, 0.004)) == f"1 series, 0.00 GB from AWS into {dest}"
    assert str(_plan(dest, Provider.GCS, 12, 12345.0)) == f"12 series, 12.35 GB from GCS into {dest}"
    assert str(_plan("rel", Provider.GCS)) == f"1,234 series, 5.68 GB from GCS into {Path.cwd() / 'rel'}"
    assert _plan(dest, size_MB=0.0000026).needed_bytes == 3  # rounded, not cut
    assert _plan(dest, size_MB=1.5).needed_bytes == 1_500_000
    plan = _plan(dest)
    assert (plan.is_s5cmd, plan.dir_template, plan.manifest) == (False, DEFAULT_DIR_TEMPLATE, None)
    assert DEFAULT_DIR_TEMPLATE == "%collection_id/%PatientID/%StudyInstanceUID/%Modality_%SeriesInstanceUID"
    assert _gb(1_234_567_890) == "1.23 GB" and _gb(12_345_678_901_234) == "12,345.68 GB"
    assert _gb(1_255_000_001) == "1.26 GB"  # a GB is exactly 10^9 bytes
    result = SimpleNamespace(result=pa.table({"series_size_MB": [1.004, None, 2.0031]}))
    assert _size_MB(result) == 3.01
    assert _describe({"collection": ["a"], "patient": ["p1", "p2", "p3", "p4"]}) == \
        "collection=a; patient=p1,p2,p3..."
    assert _describe({"study": ["s1", "s2", "s3"]}) == "study=s1,s2,s3"


def test_free_bytes_of_the_nearest_existing_parent(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    got = _plan(deep).free_bytes()
    st = os.statvfs(tmp_path)
    assert abs(got - st.f_bavail * st.f_frsize) < 256 * 2**20  # the shared machine's disk moves a little
    assert not (tmp_path / "a").exists()
    assert abs(_plan(tmp_path).free_bytes() - st.f_bavail * st.f_frsize) < 256 * 2**20


def test_check_disk_space_message(tmp_path, monkeypatch):
    dest = tmp_path / "dl"
    plan = _plan(dest, series=2, size_MB=1.5)
    monkeypatch.setattr(DownloadPlan, "free_bytes", lambda self: 1_500_000)
    assert plan.check_disk_space() == 1_500_000  # exactly enough
    monkeypatch.setattr(DownloadPlan, "free_bytes", lambda self: 1_499_999)
    with pytest.raises(DiskSpaceError) as err:
        plan.check_disk_space()
    assert str(err.value) == (
        f"not enough free space in {dest}: the 2 series need 1,500,000 bytes (0.00 GB) but only 1,499,999 bytes "
        "(0.00 GB) are free; free 1 bytes there, choose another --dest, or download fewer series (a narrower "
        "selection or manifest)")
    assert (err.value.needed_bytes, err.value.free_bytes, err.value.dest) == (1_500_000, 1_499_999, str(dest))


def test_values_of_a_selection_option():
    assert _values(None, "collection") == []
    assert _values("tcga_paad", "collection") == ["tcga_paad"]
    assert _values(" tcga_paad ", "collection") == ["tcga_paad"]
    assert _values(["b", " a", "", "  ", "b ", "a"], "patient") == ["b", "a"]
    assert _values((v for v in ("x", "y")), "study") == ["x", "y"]
    assert _values([], "series") == []
    with pytest.raises(DownloadError) as err:
        _values(["a", 7, None], "patient")
    assert str(err.value) == "patient takes strings (one or a list); got int 7"


def test_errors_handler_collects_error_records():
    handler = _Errors()
    assert handler.level == logging.ERROR and handler.messages == []
    log = logging.getLogger("test_mut_manifest_download")
    log.addHandler(handler)
    try:
        log.warning("not this")
        log.error("s5cmd %s", "failed")
        log.critical("and this")
    finally:
        log.removeHandler(handler)
    assert handler.messages == ["s5cmd failed", "and this"]


# -- plans of the shipped index --------------------------------------------------------------------------------


def _index(sql: str) -> list[tuple]:
    return duckdb.sql(sql.replace("INDEX", f"'{INDEX}'")).fetchall()


def test_plan_selection_of_the_shipped_index(catalog, tmp_path):
    patients = [p for (p,) in _index("SELECT DISTINCT PatientID FROM INDEX WHERE collection_id = 'tcga_paad' "
                                     "ORDER BY 1 LIMIT 2")]
    want = _index("SELECT SeriesInstanceUID, series_size_MB FROM INDEX WHERE collection_id = 'tcga_paad' AND "
                  f"PatientID IN ('{patients[0]}', '{patients[1]}') "
                  "ORDER BY collection_id, PatientID, StudyInstanceUID, SeriesInstanceUID")
    plan = plan_selection(tmp_path / "dl", collection=["tcga_paad", "tcga_paad"], patient=patients + [" "],
                          catalog=catalog, provider="gcs", dir_template=None)
    assert plan.cohort.series_uids == [u for u, _ in want]
    assert (plan.manifest, plan.dest, plan.provider, plan.series, plan.is_s5cmd, plan.dir_template) == (
        None, tmp_path / "dl", Provider.GCS, len(want), False, None)
    assert plan.size_MB == round(sum(s for _, s in want), 2)
    plan = plan_selection(series=SLIDE, catalog=catalog)
    assert (plan.dest, plan.provider, plan.series, plan.dir_template) == (Path("."), Provider.AWS, 1,
                                                                          DEFAULT_DIR_TEMPLATE)
    study = _index(f"SELECT StudyInstanceUID FROM INDEX WHERE SeriesInstanceUID = '{SLIDE}'")[0][0]
    n = _index(f"SELECT count(*) FROM INDEX WHERE StudyInstanceUID = '{study}'")[0][0]
    assert plan_selection(study=study, catalog=catalog).series == n


def test_plan_selection_errors(catalog, tmp_path):
    v = catalog.idc_version
    with pytest.raises(DownloadError) as err:
        plan_selection(tmp_path, collection=["", " "], catalog=catalog)
    assert str(err.value) == ("nothing selected: give at least one collection, patient, study or series "
                              "(--collection, --patient, --study, --series), or a manifest")
    with pytest.raises(DownloadError) as err:
        plan_selection(tmp_path, collection=["TCGA_PAAD", "tcga_paad"], catalog=catalog)
    assert str(err.value) == (f"1 collection value(s) not in the index of IDC v{v}: TCGA_PAAD; check the --collection "
                              "values (collection_ids are lower case, e.g. tcga_paad; `cohort collections` lists them)")
    bad = [f"p{i}" for i in range(6)]
    with pytest.raises(DownloadError) as err:
        plan_selection(tmp_path, patient=bad, catalog=catalog)
    assert str(err.value) == (f"6 patient value(s) not in the index of IDC v{v}: p0, p1, p2, p3, p4 ...; check the "
                              "--patient values")
    with pytest.raises(DownloadError) as err:
        plan_selection(tmp_path, study=["1.2.3", "1.2.4"], catalog=catalog)
    assert str(err.value) == f"2 study value(s) not in the index of IDC v{v}: 1.2.3, 1.2.4; check the --study values"
    with pytest.raises(DownloadError) as err:
        plan_selection(tmp_path, series=["1.2.3"], catalog=catalog)
    assert str(err.value).startswith(f"1 series value(s) not in the index of IDC v{v}: 1.2.3; check the --series")
    with pytest.raises(DownloadError) as err:
        plan_selection(tmp_path, collection="nlst", series=SLIDE, catalog=catalog)
    assert str(err.value) == (f"the selection collection=nlst; series={SLIDE} has no series: each value exists, but "
                              "not together (e.g. a patient of another collection); drop or correct one of the options")


def test_plan_download_and_its_s5cmd_manifest(catalog, tmp_path):
    s5cmd = tmp_path / "old.s5cmd"
    s5cmd.write_text(f"cp s3://idc-open-data/{SLIDE_V8_UUID}/* .\n", encoding="utf-8")
    gcs = tmp_path / "gcs.s5cmd"
    gcs.write_text(f"cp s3://public-datasets-idc/{SLIDE_V8_UUID}/* .\n", encoding="utf-8")
    assert plan_download(gcs, catalog=catalog).provider is Provider.GCS
    plan = plan_download(str(s5cmd), str(tmp_path / "dl"), catalog, dir_template="%PatientID")
    size = _index(f"SELECT series_size_MB FROM '{idc_index_data.PRIOR_VERSIONS_INDEX_PARQUET_FILEPATH}' "
                  f"WHERE crdc_series_uuid = '{SLIDE_V8_UUID}'")[0][0]
    assert (plan.manifest, plan.dest, plan.provider, plan.series, plan.size_MB, plan.is_s5cmd, plan.dir_template) == (
        s5cmd, tmp_path / "dl", None, 1, round(size, 2), True, "%PatientID")  # idc-open-data: in AWS and GCS
    with plan.s5cmd_manifest() as path:
        assert path == s5cmd
    assert s5cmd.exists()

    csv_path = tmp_path / "two.csv"
    csv_path.write_text(f"SeriesInstanceUID,crdc_series_uuid\n{SLIDE},{SLIDE_V8_UUID}\n{SLIDE},{SLIDE_UUID}\n")
    plan = plan_download(csv_path, catalog=catalog)
    assert (plan.dest, plan.provider, plan.series, plan.is_s5cmd, plan.dir_template) == (
        Path("."), None, 1, False, DEFAULT_DIR_TEMPLATE)  # one series (in two revisions)
    both = _index(f"SELECT series_size_MB FROM '{INDEX}' WHERE SeriesInstanceUID = '{SLIDE}'")[0][0] + size
    assert plan.size_MB == round(both, 2)
    with plan.s5cmd_manifest() as path:
        assert path.name == "two.s5cmd" and path.parent.name.startswith("idc-cohort-")
        lines = path.read_text().splitlines()
        assert sorted(ln for ln in lines if not ln.startswith("#")) == sorted(
            f"cp s3://idc-open-data/{u}/* ." for u in (SLIDE_V8_UUID, SLIDE_UUID))
        assert "# s5cmd --no-sign-request --endpoint-url https://s3.amazonaws.com run two.s5cmd" in lines
    assert not path.parent.exists()

    cohort = Cohort(pa.table({"SeriesInstanceUID": [SLIDE]}), Provenance.make(catalog), catalog)
    plan = DownloadPlan(None, tmp_path, Provider.GCS, 1, 1.0, cohort)
    with plan.s5cmd_manifest() as path:
        assert path.name == "selection.s5cmd"
        assert "--endpoint-url https://storage.googleapis.com run selection.s5cmd" in path.read_text()
    plan = DownloadPlan(s5cmd, tmp_path, Provider.AWS, 1, 1.0, cohort, is_s5cmd=False)
    with plan.s5cmd_manifest() as path:
        assert path.name == "old.s5cmd" and path != s5cmd


# -- download ----------------------------------------------------------------------------------------------------


class _Client:
    """Records what download() hands idc-index; raises, or logs ERROR records, as told."""

    def __init__(self, exc=None, errors=()):
        self.exc, self.errors, self.calls = exc, errors, []

    def download_from_manifest(self, **kw):
        self.calls.append({**kw, "text": Path(kw["manifestFile"]).read_text()})
        for message in self.errors:
            logging.getLogger("idc_index.index").error(message)
        if self.exc is not None:
            raise self.exc


def test_download_hands_over_and_reports_failures(catalog, tmp_path, monkeypatch):
    s5cmd = tmp_path / "one.s5cmd"
    s5cmd.write_text(f"cp s3://idc-open-data/{SLIDE_UUID}/* .\n", encoding="utf-8")
    dest = tmp_path / "a" / "dl"
    plan = plan_download(s5cmd, dest, catalog, dir_template="%Modality")
    monkeypatch.setattr(DownloadPlan, "free_bytes", lambda self: 10**15)
    handlers = list(logging.getLogger("idc_index").handlers)

    client = _Client()
    assert download(plan, client) is None
    assert client.calls == [{"manifestFile": str(s5cmd), "downloadDir": str(dest), "dirTemplate": "%Modality",
                             "text": s5cmd.read_text()}]
    assert dest.is_dir()

    client = _Client(errors=["  s5cmd exited with 1 ", "second"])
    with pytest.raises(DownloadError) as err:
        download(plan, client)
    assert str(err.value) == (f"idc-index reported a failed download of {plan}: s5cmd exited with 1 | second; the "
                              "download is incomplete. Check the network and run the same download again")
    long = _Client(errors=["x" * 1500])
    with pytest.raises(DownloadError) as err:
        download(plan, long)
    assert str(err.value) == (f"idc-index reported a failed download of {plan}: {'x' * 1000}; the download is "
                              "incomplete. Check the network and run the same download again")

    cause = ValueError("Download directory does not exist")
    with pytest.raises(DownloadError) as err:
        download(plan, _Client(cause))
    assert str(err.value) == (
        f"idc-index failed downloading {plan}: ValueError: Download directory does not exist; the download is "
        "incomplete. Fix the cause above (network, --dir-template, disk) and run the same download again: files "
        f"already in {dest} are fetched again or skipped by s5cmd")
    assert err.value.__cause__ is cause
    for own in (ManifestError("ours"), KeyboardInterrupt()):
        with pytest.raises(type(own)) as err:
            download(plan, _Client(own))
        assert err.value is own
    assert logging.getLogger("idc_index").handlers == handlers  # the collector is always taken off

    monkeypatch.setattr(DownloadPlan, "free_bytes", lambda self: 0)
    fresh = tmp_path / "never"
    client = _Client()
    with pytest.raises(DiskSpaceError):
        download(DownloadPlan(plan.manifest, fresh, plan.provider, 1, 1.0, plan.cohort, True), client)
    assert client.calls == [] and not fresh.exists()


def test_free_bytes_of_another_file_system(tmp_path):
    """DEST on a file system other than / (tmpfs /dev/shm here): its own free space, not that of /."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == Path("/").stat().st_dev:
        shm = tmp_path  # no separate file system here: the check below still holds
    st = os.statvfs(shm)
    got = _plan(shm / f"dest-{os.getpid()}").free_bytes()
    assert abs(got - st.f_bavail * st.f_frsize) < 64 * 2**20


def test_plans_use_the_catalog_given(catalog, tmp_path):
    s5cmd = tmp_path / "one.s5cmd"
    s5cmd.write_text(f"cp s3://idc-open-data/{SLIDE_UUID}/* .\n", encoding="utf-8")
    assert plan_download(s5cmd, catalog=catalog).cohort.catalog is catalog
    plan = plan_selection(series=[SLIDE], catalog=catalog)
    assert plan.cohort.catalog is catalog
    assert plan.cohort.result.column_names == ["SeriesInstanceUID", "collection_id", "PatientID", "StudyInstanceUID",
                                               "Modality", "crdc_series_uuid", "series_size_MB"]
    with pytest.raises(DownloadError) as err:
        plan_selection(patient=["p", 7], catalog=catalog)
    assert str(err.value) == "patient takes strings (one or a list); got int 7"
    with pytest.raises(DownloadError) as err:
        plan_selection(study=[f"9.{i}" for i in range(5)], catalog=catalog)
    assert str(err.value) == (f"5 study value(s) not in the index of IDC v{catalog.idc_version}: 9.0, 9.1, 9.2, 9.3, "
                              "9.4; check the --study values")


def test_download_builds_idc_index_client_and_hears_only_idc_index(catalog, tmp_path, monkeypatch):
    import idc_index

    s5cmd = tmp_path / "one.s5cmd"
    s5cmd.write_text(f"cp s3://idc-open-data/{SLIDE_UUID}/* .\n", encoding="utf-8")
    plan = plan_download(s5cmd, tmp_path / "dl", catalog)
    monkeypatch.setattr(DownloadPlan, "free_bytes", lambda self: 10**15)

    class Noisy(_Client):
        def download_from_manifest(self, **kw):
            logging.getLogger("urllib3.connectionpool").error("another library's error")
            super().download_from_manifest(**kw)

    made = []
    monkeypatch.setattr(idc_index, "IDCClient", lambda: made.append(Noisy()) or made[-1])
    assert download(plan) is None  # no client given: idc-index's own is made; other loggers' errors are not ours
    assert len(made) == 1 and made[0].calls[0]["manifestFile"] == str(s5cmd)
