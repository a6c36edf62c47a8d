"""The test infrastructure itself: Orthanc starter, generated data, fault-injection proxy.

These check that what the other integration tests build on is real and says what it
claims: the session Orthanc serves every loaded series through QIDO and WADO metadata,
with the instance counts and attributes of the files written by the generators.
"""

from __future__ import annotations

import json
import time

import pydicom
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


# -- FaultProxy ----------------------------------------------------------------------------
def test_proxy_passes_qido_wado_and_stow_through(orthanc, tmp_path):
    from tests.support import data
    from tests.support.proxy import FaultProxy

    sm = _by_source(orthanc, "highdicom-sm")[0]
    with FaultProxy(orthanc.url) as proxy:
        client = DICOMwebClient(proxy.dicomweb_url)
        direct = DICOMwebClient(orthanc.dicomweb_url)
        assert client.search_for_series() == _rewritten(direct.search_for_series(), orthanc, proxy)
        meta = client.retrieve_series_metadata(sm.StudyInstanceUID, sm.SeriesInstanceUID)
        assert len(meta) == 3 and proxy.url.encode() in repr(meta).encode()  # BulkDataURIs lead back through it
        frames = client.retrieve_instance_frames(sm.StudyInstanceUID, sm.SeriesInstanceUID, sm.sop_instance_uids[0],
                                                 [1, 2], media_types=(("application/octet-stream", "*"),))
        assert [len(f) for f in frames] == [128 * 128 * 3] * 2
        # multipart STOW-RS through the proxy, then it is served directly
        (record,) = data.bulk_series(1, 2, tmp_path)
        client.store_instances([pydicom.dcmread(p) for p in record.paths])
        assert len(direct.retrieve_series_metadata(record.StudyInstanceUID, record.SeriesInstanceUID)) == 2
        assert proxy.counts == {"pass": len(proxy.log)}


def _rewritten(items, orthanc, proxy):
    return json.loads(json.dumps(items).replace(orthanc.url, proxy.url))


def test_proxy_forwards_authorization(orthanc_factory):
    from tests.support.proxy import FaultProxy

    server = orthanc_factory(users={"bob": "pw"})
    with FaultProxy(server.url) as proxy:
        assert requests.get(f"{proxy.dicomweb_url}/studies", timeout=5).status_code == 401
        assert requests.get(f"{proxy.dicomweb_url}/studies", auth=("bob", "pw"), timeout=5).status_code == 200
        assert requests.get(f"{proxy.dicomweb_url}/studies", auth=("bob", "no"), timeout=5).status_code == 401


def test_each_fault_kind_does_what_it_says(orthanc):
    from tests.support.proxy import FaultProxy

    target = "/dicom-web/series"
    kinds = ["429", "503", "reset", "truncate", "delay", "pass"]
    with FaultProxy(orthanc.url, schedule={"^/dicom-web/series$": kinds}, delay=0.3, retry_after=7) as proxy:
        url = proxy.url + target
        with requests.Session() as s:
            r = s.get(url, timeout=5)
            assert r.status_code == 429 and r.headers["Retry-After"] == "7"
            assert s.get(url, timeout=5).status_code == 503
            with pytest.raises(requests.ConnectionError):
                s.get(url, timeout=5)
        with requests.Session() as s, pytest.raises(requests.exceptions.ChunkedEncodingError):
            s.get(url, timeout=5).content
        with requests.Session() as s:
            start = time.monotonic()
            assert s.get(url, timeout=5).status_code == 200
            assert time.monotonic() - start >= 0.3
            direct = requests.get(orthanc.dicomweb_url + "/series", timeout=5).json()
            assert s.get(url, timeout=5).json() == _rewritten(direct, orthanc, proxy)
    assert [k for _, _, k in proxy.log] == kinds
    assert proxy.counts == {k: 1 for k in kinds}


def test_latency_is_added_to_every_request(orthanc):
    from tests.support.proxy import FaultProxy

    with FaultProxy(orthanc.url, latency=0.1) as proxy, requests.Session() as s:
        start = time.monotonic()
        for _ in range(5):
            assert s.get(f"{proxy.dicomweb_url}/studies", timeout=5).status_code == 200
        assert time.monotonic() - start >= 0.5
    assert proxy.counts == {"pass": 5}


def test_random_plan_is_reproducible_under_concurrency(orthanc):
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.proxy import FaultProxy

    targets = [f"/dicom-web/series?limit=1&offset={i}" for i in range(60)] * 2

    def run():
        plan = {"429": 0.2, "503": 0.2, "reset": 0.1}
        with FaultProxy(orthanc.url, rates=plan, match="/series", seed=3, retry_after=0) as proxy:
            def get(target):
                try:
                    return target, str(requests.get(proxy.url + target, timeout=5).status_code)
                except requests.ConnectionError:
                    return target, "reset"

            with ThreadPoolExecutor(8) as pool:
                results = sorted(pool.map(get, targets))
        return results, proxy.counts

    (first, counts), (second, _) = run(), run()
    assert first == second
    assert set(counts) == {"pass", "429", "503", "reset"} and sum(counts.values()) == len(targets)
    assert {status for _, status in first} == {"200", "429", "503", "reset"}


def test_bad_fault_plan_is_refused(orthanc):
    from tests.support.proxy import FaultProxy

    with pytest.raises(ValueError, match="unknown fault kind 'boom'"):
        FaultProxy(orthanc.url, rates={"boom": 0.1})
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("http://example.org:8042")


@pytest.mark.parametrize("with_pixels", [True, False])
def test_bulk_series_files_equal_pydicom_save_as(tmp_path, with_pixels):
    from tests.support import data

    uids = [("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"), ("1.2.3", "1.2.3.4")]
    records = data.bulk_series(2, 3, tmp_path / "bulk", uids=uids, with_pixels=with_pixels)
    assert [(r.StudyInstanceUID, r.SeriesInstanceUID, r.n_instances) for r in records] == [(*u, 3) for u in uids]
    for record in records:
        for n, (path, sop) in enumerate(zip(record.paths, record.sop_instance_uids)):
            ds = pydicom.dcmread(path)
            assert (ds.SOPInstanceUID, ds.file_meta.MediaStorageSOPInstanceUID, ds.InstanceNumber) == (sop, sop, n + 1)
            assert ("PixelData" in ds) == with_pixels
            ds.save_as(tmp_path / "again.dcm")
            assert (tmp_path / "again.dcm").read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match="n_series=3 but 2 uids"):
        data.bulk_series(3, 1, tmp_path, uids=uids)


def test_orthanc_retries_on_a_busy_port(monkeypatch):
    import socket

    from tests.support import orthanc as module

    module.require_orthanc()
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        ports = iter([busy.getsockname()[1]])
        real_free_port = module.free_port
        monkeypatch.setattr(module, "free_port", lambda: next(ports, None) or real_free_port())
        with module.Orthanc(stop_timeout=10) as server:
            assert server.port != busy.getsockname()[1]
            assert requests.get(f"{server.dicomweb_url}/studies", timeout=5).json() == []
            assert "port" in server.log.lower()


def test_per_target_plan_gives_every_kind_whatever_the_interleaving(orthanc):
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.proxy import FaultProxy

    plan = [["429", "503"], ["reset"], ["truncate"], ["delay"]]
    targets = [f"/dicom-web/series?limit=1&offset={i}" for i in range(10)] * 3
    with FaultProxy(orthanc.url, per_target=plan, match="/series", delay=0.01, retry_after=0) as proxy:
        def get(target):
            try:
                with requests.Session() as s:
                    return str(s.get(proxy.url + target, timeout=5).status_code)
            except requests.RequestException:
                return "failed"

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(get, targets))
        assert requests.get(proxy.url + "/dicom-web/studies", timeout=5).ok  # not matched: passes
    assert proxy.counts == {"429": 1, "503": 1, "reset": 1, "truncate": 1, "delay": 1, "pass": len(targets) - 4}
    assert sorted(proxy.targets.values()) == list(range(10))


@pytest.mark.parametrize("running_before", [False, True], ids=["service-started-by-install", "service-running-before"])
def test_install_script_stops_only_the_service_it_started(tmp_path, running_before):
    """tests/install-orthanc.sh against a fake system: apt-get checks that policy-rc.d refuses service starts
    while it installs, then starts the "service" anyway; only that one is stopped, by its init script."""
    import os
    import signal
    import subprocess
    from pathlib import Path

    script = Path(__file__).parent / "install-orthanc.sh"
    assert "pkill" not in script.read_text() and "killall" not in script.read_text()
    shim, record = tmp_path / "bin", tmp_path / "record"
    shim.mkdir()
    policy, pidfile, init = tmp_path / "policy-rc.d", tmp_path / "orthanc.pid", tmp_path / "init-orthanc"
    policy.write_text("#!/bin/sh\n# the machine's own\nexit 0\n")
    policy.chmod(0o755)
    (shim / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (shim / "apt-get").write_text(f'''#!/bin/sh
if [ "$1" = install ] || [ "$3" = install ] || echo "$@" | grep -q install; then
  "{policy}" orthanc start; echo "policy $?" >> "{record}"
  [ -e "{pidfile}" ] || {{ nohup sleep 300 >/dev/null 2>&1 & echo $! > "{pidfile}"; }}
fi
''')
    init.write_text(f'#!/bin/sh\necho "init $1" >> "{record}"\nkill "$(cat "{pidfile}")"\n')
    for f in (shim / "sudo", shim / "apt-get", init):
        f.chmod(0o755)
    others = [subprocess.Popen(["sleep", "300"])]  # another user's Orthanc, say
    if running_before:
        others.append(subprocess.Popen(["sleep", "300"]))
        pidfile.write_text(str(others[-1].pid))
    env = {**os.environ, "PATH": f"{shim}:/usr/bin:/bin", "POLICY_RC_D": str(policy), "ORTHANC_PIDFILE": str(pidfile),
           "ORTHANC_INIT": str(init), "SYSTEMD_RUN_DIR": str(tmp_path / "no-systemd")}
    try:
        run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        lines = record.read_text().splitlines()
        assert lines[0] == "policy 101"  # refused while installing
        assert policy.read_text() == "#!/bin/sh\n# the machine's own\nexit 0\n"  # put back afterwards
        assert all(p.poll() is None for p in others)  # nothing the script did not start was stopped
        if running_before:
            assert lines == ["policy 101"]
        else:
            assert lines == ["policy 101", "init stop"]
            started = int(pidfile.read_text())
            stat = Path(f"/proc/{started}/stat")
            deadline = time.monotonic() + 5
            while stat.exists() and stat.read_text().split(")")[1].split()[0] != "Z" and time.monotonic() < deadline:
                time.sleep(0.05)  # gone, or a zombie nobody reaps yet: stopped
            assert not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z"
    finally:
        for p in others:
            p.send_signal(signal.SIGTERM)
            p.wait(5)


def test_raw_frames_answer_as_the_dicomweb_plugin_does(orthanc_factory, tmp_path):
    """``raw_frames=True`` serves WADO-RS frames from Orthanc's REST API: the same frames, part headers and
    statuses as the plugin's own answer, faults still injected first."""
    from dicomweb_client.api import DICOMwebClient
    from pydicom.uid import generate_uid

    from tests.support.proxy import FaultProxy
    from tests.support.slides import dicomizer_slide, slide_image

    server = orthanc_factory()
    study, series = generate_uid(), generate_uid()
    server.upload_many(dicomizer_slide(tmp_path, slide_image(1, 600, 500), study, series, tile=256))
    direct = DICOMwebClient(server.dicomweb_url)
    level0 = max(direct.search_for_instances(study, series, fields=["NumberOfFrames", "TotalPixelMatrixColumns"]),
                 key=lambda i: i["00480006"]["Value"][0])
    sop, n = level0["00080018"]["Value"][0], level0["00280008"]["Value"][0]
    assert n == 6
    media = (("application/octet-stream", "*"),)
    path = f"/studies/{study}/series/{series}/instances/{sop}/frames/"
    accept = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    with FaultProxy(server.url, raw_frames=True, schedule={"/frames/2$": ["pass", "503"]}) as proxy:
        routed = DICOMwebClient(proxy.dicomweb_url)
        for numbers in ([1], [2], [6, 1, 3]):
            assert routed.retrieve_instance_frames(study, series, sop, numbers, media_types=media) == \
                direct.retrieve_instance_frames(study, series, sop, numbers, media_types=media)
        assert requests.get(proxy.dicomweb_url + path + "2", headers=accept, timeout=5).status_code == 503
        for numbers in ("7", "1,7"):  # out of range: 400 from both
            ours = requests.get(proxy.dicomweb_url + path + numbers, headers=accept, timeout=5)
            theirs = requests.get(server.dicomweb_url + path + numbers, headers=accept, timeout=5)
            assert ours.status_code == theirs.status_code == 400
        ours = requests.get(proxy.dicomweb_url + path + "3", headers=accept, timeout=5)
        theirs = requests.get(server.dicomweb_url + path + "3", headers=accept, timeout=5)
        part_headers = [r.content.split(b"\r\n\r\n")[0].split(b"\r\n")[2:] for r in (ours, theirs)]
        assert part_headers[0] == part_headers[1]  # Content-Type (image/jpeg; transfer-syntax=...), Length, MIME
        assert ours.headers["Content-Type"].split("; boundary=")[0] == theirs.headers["Content-Type"].split(
            "; boundary=")[0]
    assert [k for _, t, k in proxy.log if t.endswith("/frames/2")] == ["pass", "503"]
    assert sum(1 for _, t, _ in proxy.log if "/frames/" in t) == 7
