"""The test infrastructure itself: Orthanc starter, generated data, fault-injection proxy.

These check that what the other integration tests build on is real and says what it
claims: the session Orthanc serves every loaded series through QIDO and WADO metadata,
with the instance counts and attributes of the files written by the generators.
"""

from __future__ import annotations

import pytest
import requests
from dicomweb_client import DICOMwebClient

pytestmark = pytest.mark.orthanc


def _by_source(orthanc, source):
    return [r for r in orthanc.series if r.source == source]


def test_qido_serves_every_loaded_series(orthanc):
    client = DICOMwebClient(orthanc.dicomweb_url)
    found = {s["0020000E"]["Value"][0] for s in client.search_for_series()}
    assert found == {r.SeriesInstanceUID for r in orthanc.series}
    for r in orthanc.series:
        instances = client.search_for_instances(r.StudyInstanceUID, r.SeriesInstanceUID)
        assert {i["00080018"]["Value"][0] for i in instances} == set(r.sop_instance_uids)


def test_dicomizer_pyramid_metadata(orthanc):
    (wsi,) = _by_source(orthanc, "OrthancWSIDicomizer")
    meta = DICOMwebClient(orthanc.dicomweb_url).retrieve_series_metadata(wsi.StudyInstanceUID, wsi.SeriesInstanceUID)
    assert len(meta) == wsi.n_instances == 3
    assert sorted(m["00480006"]["Value"][0] for m in meta) == [256, 512, 1024]  # TotalPixelMatrixColumns
    assert all(m["00080060"]["Value"] == ["SM"] for m in meta)
    assert all(m["00080008"]["Value"] == ["DERIVED", "PRIMARY", "VOLUME", "NONE"] for m in meta)


def test_sm_specimen_and_optical_path_metadata(orthanc):
    (sm,) = _by_source(orthanc, "highdicom-sm")
    meta = DICOMwebClient(orthanc.dicomweb_url).retrieve_series_metadata(sm.StudyInstanceUID, sm.SeriesInstanceUID)
    assert len(meta) == sm.n_instances == 3
    assert sorted(m["00480006"]["Value"][0] for m in meta) == [128, 256, 512]
    for m in meta:
        (specimen,) = m["00400560"]["Value"]  # SpecimenDescriptionSequence
        assert specimen["00400551"]["Value"] == ["SPECIMEN-1"]
        (structure,) = specimen["00082228"]["Value"]  # PrimaryAnatomicStructureSequence
        assert structure["00080100"]["Value"] == ["15776009"]  # SCT Pancreas
        steps = specimen["00400610"]["Value"]  # SpecimenPreparationSequence
        codes = {item["0040A168"]["Value"][0]["00080100"]["Value"][0]
                 for step in steps for item in step["00400612"]["Value"] if "0040A168" in item}
        assert {"12710003", "36879007", "311731000", "431510009"} <= codes  # H, E, paraffin, formalin
        (path,) = m["00480105"]["Value"]  # OpticalPathSequence
        assert path["00480112"]["Value"] == [40]  # ObjectiveLensPower
        assert path["00220016"]["Value"][0]["00080100"]["Value"] == ["111744"]  # brightfield


def test_ct_mr_series_counts(orthanc):
    records = [r for r in orthanc.series if r.source.startswith("pydicom:")]
    assert sorted(r.Modality for r in records) == ["CT", "CT", "MR", "MR"]
    client = DICOMwebClient(orthanc.dicomweb_url)
    for r in records:
        assert len(client.retrieve_series_metadata(r.StudyInstanceUID, r.SeriesInstanceUID)) == r.n_instances == 3


def test_realdata_loaded_or_reported(orthanc, realdata):
    loaded = {p for r in _by_source(orthanc, "realdata") for p in r.paths}
    skipped = {p for p, _ in orthanc.skipped}
    assert loaded and loaded.isdisjoint(skipped)
    assert loaded | skipped == {p for p in realdata.rglob("*.dcm")}
    assert all("AlreadyStored" in reason or "HTTP" in reason for _, reason in orthanc.skipped)


def test_factory_server_with_authentication(orthanc_factory, tmp_path):
    from tests.support import data

    server = orthanc_factory(users={"alice": "s3cret"})
    assert requests.get(f"{server.dicomweb_url}/studies", timeout=5).status_code == 401
    (record,) = server.load(data.bulk_series(1, 2, tmp_path))
    session = requests.Session()
    session.auth = ("alice", "s3cret")
    client = DICOMwebClient(server.dicomweb_url, session=session)
    assert len(client.retrieve_series_metadata(record.StudyInstanceUID, record.SeriesInstanceUID)) == 2
