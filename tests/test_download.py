"""`cohort download` by selection (collection, patient, study, series) as well as by manifest: the plan lists
exactly the index's series (counted here with pyarrow over the shipped index Parquet), the disk-space check
runs before anything starts, idc-index's failures become a DownloadError and exit 3. No network here, so the
idc-index call itself is replaced by one that fails the way it fails."""

from __future__ import annotations

import logging
import shutil
from collections import namedtuple

import idc_index
import idc_index_data
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cohort import CohortError, DiskSpaceError, DownloadError
from cohort.cli import cli
from cohort.manifest import plan_selection
from cohort.manifest import download

COLUMNS = ["collection_id", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "series_size_MB"]


@pytest.fixture(scope="module")
def index():
    return pq.read_table(idc_index_data.IDC_INDEX_PARQUET_FILEPATH, columns=COLUMNS)


def _series(table):
    return set(table.column("SeriesInstanceUID").to_pylist())


def test_selection_plan_is_exactly_the_index_series(catalog, index, tmp_path):
    paad = index.filter(pc.equal(index["collection_id"], "tcga_paad"))
    plan = plan_selection(tmp_path / "dl", collection="tcga_paad", catalog=catalog)
    assert plan.series == len(_series(paad)) == paad.num_rows
    assert set(plan.cohort.series_uids) == _series(paad)
    assert plan.size_MB == pytest.approx(pc.sum(paad["series_size_MB"]).as_py(), abs=0.01)
    assert not (tmp_path / "dl").exists()  # planning makes nothing

    # two patients of the collection, and a study of a third patient: values of one kind add up ...
    patients = sorted(set(paad.column("PatientID").to_pylist()))[:2]
    by_patients = paad.filter(pc.is_in(paad["PatientID"], pa.array(patients)))
    plan = plan_selection(tmp_path, collection=["tcga_paad"], patient=patients, catalog=catalog)
    assert set(plan.cohort.series_uids) == _series(by_patients)
    # ... different kinds narrow each other: a study and a series of it
    study = by_patients.column("StudyInstanceUID")[0].as_py()
    in_study = index.filter(pc.equal(index["StudyInstanceUID"], study))
    assert set(plan_selection(tmp_path, study=study, catalog=catalog).cohort.series_uids) == _series(in_study)
    one = in_study.column("SeriesInstanceUID")[0].as_py()
    plan = plan_selection(tmp_path, patient=patients, study=study, series=[one], catalog=catalog)
    assert plan.cohort.series_uids == [one]


def test_selection_errors_name_the_value(catalog, index, tmp_path):
    with pytest.raises(DownloadError, match=r"not in the index.*TCGA_PAAD.*lower case"):
        plan_selection(tmp_path, collection="TCGA_PAAD", catalog=catalog)
    patient = index.filter(pc.equal(index["collection_id"], "tcga_paad")).column("PatientID")[0].as_py()
    with pytest.raises(DownloadError, match=f"collection=nlst; patient={patient} has no series"):
        plan_selection(tmp_path, collection="nlst", patient=patient, catalog=catalog)
    with pytest.raises(DownloadError, match="nothing selected"):
        plan_selection(tmp_path, catalog=catalog)


def test_cli_dry_run_by_collection(index, tmp_path):
    # the smallest collection of more than 10 series, so that the real free-space check passes here
    sizes = index.group_by("collection_id").aggregate([("series_size_MB", "sum"), ("SeriesInstanceUID", "count")])
    sizes = sizes.filter(pc.greater(sizes["SeriesInstanceUID_count"], 10)).sort_by("series_size_MB_sum")
    collection, n = sizes.column("collection_id")[0].as_py(), sizes.column("SeriesInstanceUID_count")[0].as_py()
    result = CliRunner().invoke(cli, ["download", "--collection", collection, "-d", str(tmp_path / "dl"),
                                      "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"would download {n:,} series, ")
    assert "bytes free" in result.stderr
    result = CliRunner().invoke(cli, ["download", "--collection", collection, "--dry-run", __file__])
    assert result.exit_code == 2 and "not both" in result.output
    result = CliRunner().invoke(cli, ["download", "--dry-run"])
    assert result.exit_code == 2 and "nothing to download" in result.output


Usage = namedtuple("Usage", "total used free")


def test_disk_space_checked_before_start(catalog, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 5000, 5000))
    plan = plan_selection(tmp_path / "dl", collection="tcga_paad", catalog=catalog)
    called = []

    class Client:  # must never be reached
        def download_from_manifest(self, **kw):
            called.append(kw)

    with pytest.raises(DiskSpaceError) as err:
        download(plan, Client())
    assert called == [] and not (tmp_path / "dl").exists()
    assert err.value.free_bytes == 5000 and err.value.needed_bytes == plan.needed_bytes
    text = str(err.value)
    assert f"need {plan.needed_bytes:,} bytes" in text and "only 5,000 bytes" in text and "--dest" in text
    result = CliRunner().invoke(cli, ["download", "--collection", "tcga_paad", "-d", str(tmp_path / "dl")])
    assert result.exit_code == 1
    assert "Error: not enough free space" in result.output and "5,000 bytes" in result.output


class _FailingClient:
    """Stands in for IDCClient (whose constructor loads the 3 GB index and needs no network, but whose
    download does): raises what idc-index raises, or logs a failed s5cmd run as idc-index does."""

    def __init__(self, exc=None):
        self.exc = exc
        self.manifests = []

    def download_from_manifest(self, manifestFile, downloadDir, dirTemplate):
        with open(manifestFile) as f:
            self.manifests.append((f.read(), downloadDir, dirTemplate))
        if self.exc is not None:
            raise self.exc
        logging.getLogger("idc_index.index").error("Download process return non-zero exit code: 1")


@pytest.mark.parametrize("exc", [ValueError("Download directory does not exist"),
                                 idc_index.index.IDCClientInsufficientDiskSpaceError("1 GB", "1 MB"),
                                 None])
def test_idc_index_failures_are_wrapped(catalog, tmp_path, exc):
    plan = plan_selection(tmp_path / "dl", series=_paad_series(catalog), catalog=catalog, dir_template="%PatientID")
    client = _FailingClient(exc)
    with pytest.raises(DownloadError, match="incomplete") as err:
        download(plan, client)
    assert isinstance(err.value, CohortError) and (exc is None or err.value.__cause__ is exc)
    text, dest, template = client.manifests[0]
    assert text.count("cp s3://") == 1 and dest == str(tmp_path / "dl") and template == "%PatientID"


def _paad_series(catalog):
    return catalog.sql("SELECT min(SeriesInstanceUID) FROM index WHERE collection_id = 'tcga_paad'").column(0)[0].as_py()


def test_cli_failed_download_exits_3(catalog, tmp_path, monkeypatch):
    monkeypatch.setattr(idc_index, "IDCClient", lambda: _FailingClient(RuntimeError("s5cmd: connection reset")))
    result = CliRunner().invoke(cli, ["download", "--series", _paad_series(catalog), "-d", str(tmp_path)])
    assert result.exit_code == 3, result.output
    assert "Incomplete: idc-index failed" in result.output and "connection reset" in result.output
    assert "run the same download again" in result.output
    monkeypatch.setattr(idc_index, "IDCClient", lambda: _FailingClient(None))  # s5cmd failed, logged only
    result = CliRunner().invoke(cli, ["download", "--series", _paad_series(catalog), "-d", str(tmp_path),
                                      "--dir-template", ""])
    assert result.exit_code == 3 and "non-zero exit code: 1" in result.output
