"""Fast harvester tests that replay vcrpy cassettes recorded from a real Orthanc (no server needed).

The cassette holds the WADO-RS series metadata of two real files (pydicom's
CT_small.dcm and highdicom's sm_image.dcm, MIT; in ../shared/realdata/highdicom),
a QIDO light pass of the SM series, and a 404 for a series Orthanc does not have.
The expected values below are those files' attributes as pydicom reads them.

Requests are matched on the Accept header too, so a harvester that stops asking for DICOM JSON
no longer replays. Each replay test has a live twin (``-m orthanc``) that makes the same requests to
a real Orthanc holding the same two files and asserts the same outcome, so a recording cannot hide
a change of behaviour on either side.

Re-record (needs Orthanc and ../shared/realdata)::

    COHORT_RECORD_CASSETTES=1 pytest tests/test_harvest_cassettes.py -m orthanc
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import vcr
from urllib3.connectionpool import HTTPConnectionPool

from cohort import custom
from cohort.harvest import HarvestStore, harvest
from cohort.retry import RetryPolicy

CASSETTE = Path(__file__).parent / "cassettes" / "harvest_metadata.yaml"
#: Recorded URLs are rewritten to this root, so replay does not depend on the recording port.
ROOT = "http://orthanc.invalid/dicom-web"
CT = ("1.3.6.1.4.1.5962.1.2.1.20040119072730.12322", "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322")
SM = ("1.2.826.0.1.3680043.9.7433.3.82970457260936734119270346325882945",
      "1.2.826.0.1.3680043.9.7433.3.57084118109582350083572639456817453")
MISSING = (CT[0], "1.2.826.0.1.3680043.9.7433.3.999")
RECORD = bool(os.environ.get("COHORT_RECORD_CASSETTES"))


@pytest.fixture(autouse=True)
def _one_connection_made_at_a_time(monkeypatch):
    """vcrpy makes each connection with the connection classes unpatched for a moment, in the whole process
    (``vcr.patch.force_reset`` in ``VCRConnection.__init__``): a connection made meanwhile on another thread
    (the harvest's probe runs beside its workers) is a real one, and fails on orthanc.invalid (vcrpy is not
    thread-safe: kevin1024/vcrpy#849). Here connections are made one at a time; requests still overlap."""
    new_conn, lock = HTTPConnectionPool._new_conn, threading.Lock()

    def one_at_a_time(self):
        with lock:
            return new_conn(self)

    monkeypatch.setattr(HTTPConnectionPool, "_new_conn", one_at_a_time)


def _recorder(real_root: str | None = None) -> vcr.VCR:
    def scrub_request(request):
        if real_root:
            request.uri = request.uri.replace(real_root, ROOT)
        return request

    def scrub_response(response):
        if real_root:
            body = response["body"]["string"].replace(real_root.encode(), ROOT.encode())
            response["body"]["string"] = body
            response["headers"] = {k: v for k, v in response["headers"].items() if k.lower() != "content-length"}
            response["headers"]["Content-Length"] = [str(len(body))]
        return response

    recorder = vcr.VCR(
        serializer="yaml",
        record_mode="all" if real_root else "none",
        filter_headers=["authorization", "cookie"],
        before_record_request=scrub_request,
        before_record_response=scrub_response,
        match_on=["method", "scheme", "host", "port", "path", "query", "accept"],
    )
    recorder.register_matcher("accept", _same_accept)
    return recorder


def _accept(request) -> str | None:
    return next((v for k, v in request.headers.items() if k.lower() == "accept"), None)


def _same_accept(r1, r2) -> None:
    """vcrpy matcher: the Accept header (the media type asked for) must be the recorded one."""
    assert _accept(r1) == _accept(r2), f"Accept {_accept(r1)!r} != recorded {_accept(r2)!r}"


def _harvest_all(root: str, out: Path):
    endpoint = custom(root)
    policy = RetryPolicy(max_attempts=1)
    full = harvest([CT, SM, MISSING], out / "full", endpoint, workers=1, rate=None, policy=policy, progress=False)
    light = harvest([SM], out / "light", endpoint, workers=1, rate=None, policy=policy, light=True, progress=False)
    return full, light


@pytest.mark.orthanc
@pytest.mark.skipif(not RECORD, reason="records cassettes only with COHORT_RECORD_CASSETTES=1")
def test_record(orthanc, realdata, tmp_path):
    from pydicom.data import get_testdata_file

    for path in (get_testdata_file("CT_small.dcm"), realdata / "highdicom" / "sm_image.dcm"):
        orthanc.upload(Path(path))
    CASSETTE.parent.mkdir(exist_ok=True)
    CASSETTE.unlink(missing_ok=True)
    with _recorder(orthanc.dicomweb_url).use_cassette(str(CASSETTE)):
        _harvest_all(orthanc.dicomweb_url, tmp_path)
    assert "orthanc.invalid" in CASSETTE.read_text()


def _assert_full_and_light(full, light, out: Path, root: str) -> None:
    """What harvesting CT, SM and MISSING (full) and SM (light) from ``root`` must give."""
    assert full.by_status == {"ok": 2, "not_found": 1} and full.instances == 2
    rows = {r["Modality"]: r for r in HarvestStore(out / "full").read_instances().to_pylist()}
    ct, sm = rows["CT"], rows["SM"]
    assert (ct["SeriesInstanceUID"], ct["Rows"], ct["Columns"], ct["NumberOfFrames"]) == (CT[1], 128, 128, None)
    assert ct["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert (sm["TotalPixelMatrixColumns"], sm["TotalPixelMatrixRows"], sm["NumberOfFrames"], sm["Rows"]) == (50, 50, 25, 10)
    assert sm["ImageType"] == ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    assert sm["OpticalPathIdentifier"] and sm["SpecimenIdentifier"]
    assert json.loads(sm["json"])["7FE00010"]["BulkDataURI"].startswith(root)  # kept as a URI, never followed
    log = {r["SeriesInstanceUID"]: r for r in HarvestStore(out / "full").read_log().to_pylist()}
    assert log[MISSING[1]]["http_status"] == 404 and "inexistent" in log[MISSING[1]]["error"]
    assert log[SM[1]]["bytes"] > 1000 and log[SM[1]]["attempts"] == 1
    assert light.by_status == {"ok": 1}
    lrow = HarvestStore(out / "light").read_instances().to_pylist()[0]
    assert (lrow["SOPInstanceUID"], lrow["Rows"]) == (sm["SOPInstanceUID"], 10)
    # includefield sent once per attribute: Orthanc answers them all (a comma-joined list was ignored)
    assert (lrow["ImageType"], lrow["TotalPixelMatrixColumns"]) == (sm["ImageType"], 50)


def _assert_resumed(again, out: Path) -> None:
    assert again.skipped == 3 and again.by_status == {} and again.instances == 0
    assert len(HarvestStore(out / "full").read_instances(["SOPInstanceUID"])) == 2


@pytest.fixture(scope="module")
def live_root(orthanc, realdata):
    """The session Orthanc, holding the two recorded files (uploading again is harmless)."""
    from pydicom.data import get_testdata_file

    for path in (get_testdata_file("CT_small.dcm"), realdata / "highdicom" / "sm_image.dcm"):
        orthanc.upload(Path(path))
    return orthanc.dicomweb_url


@pytest.mark.skipif(RECORD, reason="recording")
def test_replay_full_and_light(tmp_path):
    with _recorder().use_cassette(str(CASSETTE)):
        full, light = _harvest_all(ROOT, tmp_path)
    _assert_full_and_light(full, light, tmp_path, ROOT)


@pytest.mark.orthanc
def test_live_full_and_light(live_root, tmp_path):
    full, light = _harvest_all(live_root, tmp_path)
    _assert_full_and_light(full, light, tmp_path, live_root)


@pytest.mark.skipif(RECORD, reason="recording")
def test_replay_resume_skips_complete_series(tmp_path):
    with _recorder().use_cassette(str(CASSETTE), allow_playback_repeats=True):
        _harvest_all(ROOT, tmp_path)
        again, _ = _harvest_all(ROOT, tmp_path)
    _assert_resumed(again, tmp_path)


@pytest.mark.orthanc
def test_live_resume_skips_complete_series(live_root, tmp_path):
    _harvest_all(live_root, tmp_path)
    again, _ = _harvest_all(live_root, tmp_path)
    _assert_resumed(again, tmp_path)


@pytest.mark.skipif(RECORD, reason="recording")
def test_replay_refuses_a_request_with_another_accept_header(tmp_path):
    """The Accept header is part of the match: asking for XML metadata finds no recording."""
    import requests
    from vcr.errors import CannotOverwriteExistingCassetteException

    url = f"{ROOT}/studies/{CT[0]}/series/{CT[1]}/metadata"
    with _recorder().use_cassette(str(CASSETTE)):
        assert requests.get(url, headers={"Accept": "application/dicom+json, application/json"}).status_code == 200
        with pytest.raises(CannotOverwriteExistingCassetteException):
            requests.get(url, headers={"Accept": "multipart/related; type=\"application/dicom+xml\""})


def test_unavailable_series_are_logged_without_a_request(tmp_path, catalog):
    """A cohort pinned to IDC v1 where none of its series existed yet: no request is made."""
    from cohort import Cohort
    from cohort.coverage import route

    cohort = Cohort.from_query("series_by_collection", {"collection_id": "cmb_aml", "modality": "CT"}, catalog=catalog)
    with _recorder().use_cassette(str(tmp_path / "none.yaml")):  # replay mode, empty: any request would fail
        result = harvest(route(cohort, 1), tmp_path / "h", progress=False)
    assert result.by_status == {"not_found": 40}
    log = HarvestStore(tmp_path / "h").read_log().to_pylist()
    assert {r["endpoint"] for r in log} == {"unavailable"}
    assert all(r["error"].startswith("no endpoint serves this series: not in IDC v1") for r in log)
