"""What the harvester asks and how it reads the answers: the endpoint probe, authentication, which
series a rerun asks for again (--retry, another endpoint), --light's include fields, and secrets
kept out of every stored or printed text.

Against a real Orthanc (the session one, empty ones, one with basic auth) and, for secrets, a small
local server that echoes the request headers into its error bodies.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cohort import EndpointError, HarvestError, custom
from cohort.endpoints import BasicAuth, BearerTokenAuth
from cohort.harvest import HarvestStore, harvest
from cohort.retry import RetryPolicy

FAST = RetryPolicy(timeout=10, max_attempts=2, backoff_base=0.01, backoff_max=0.05, retry_after_max=0.1)
UNKNOWN = "1.2.826.0.1.3680043.9.7433.3.999999"


def _pairs(orthanc, n=None):
    return [(r.StudyInstanceUID, r.SeriesInstanceUID) for r in orthanc.series[:n]]


def _no_log(out: Path) -> None:
    assert not list((out / "log").glob("*.parquet")), "nothing may be logged when the probe fails"


# -- item 1: probe, authentication, re-asking -----------------------------------------------------
@pytest.mark.orthanc
@pytest.mark.parametrize("root", ["/dicomweb", "", "/dicom-web/studies/1.2.3"],
                         ids=["wrong-root", "rest-api-root", "below-the-root"])
def test_a_url_that_is_not_a_dicomweb_root_fails_at_the_probe(orthanc, tmp_path, root):
    with pytest.raises(HarvestError, match=r"does not answer as a DICOMweb service: GET .*/studies\?limit=1 "
                                           r"answered HTTP \d+.*check --url"):
        harvest(_pairs(orthanc, 2), tmp_path, orthanc.url + root, rate=None, policy=FAST, progress=False)
    _no_log(tmp_path)


@pytest.mark.orthanc
@pytest.mark.parametrize("user", [None, "alice"], ids=["no-credentials", "wrong-password"])
def test_refused_credentials_fail_at_the_probe(orthanc_factory, tmp_path, monkeypatch, user):
    server = orthanc_factory(users={"alice": "right-password-123"})
    monkeypatch.setenv("T_USER", "alice")
    monkeypatch.setenv("T_PASS", "wrong-password-456")
    endpoint = custom(server.dicomweb_url, BasicAuth("T_USER", "T_PASS") if user else None)
    with pytest.raises(HarvestError) as caught:
        harvest([("1.2.3", "1.2.3.4")], tmp_path, endpoint, rate=None, policy=FAST, progress=False)
    message = str(caught.value)
    assert message.startswith(f"authentication failed for {server.dicomweb_url}: check --auth")
    assert "HTTP 401" in message and "run" not in message.split("check --auth")[1]
    assert "wrong-password-456" not in message and "right-password" not in message
    _no_log(tmp_path)


@pytest.mark.orthanc
def test_a_401_during_the_run_stops_it_and_is_not_a_series_outcome(orthanc, tmp_path):
    from tests.support.proxy import FaultProxy

    series = _pairs(orthanc)
    with FaultProxy(orthanc.url, per_target=[[], [], ["401"]], match="/metadata$") as proxy:
        with pytest.raises(HarvestError, match=r"^authentication failed for .*: check --auth .*HTTP 401") as caught:
            harvest(series, tmp_path, proxy.dicomweb_url, workers=1, rate=None, policy=FAST, progress=False)
    assert "run the same" not in str(caught.value)
    refused = next(t for t, i in proxy.targets.items() if i == 2).split("/series/")[1].split("/")[0]
    log = HarvestStore(tmp_path).read_log().to_pylist()
    assert refused not in {r["SeriesInstanceUID"] for r in log}  # not logged: asked for again
    assert {r["status"] for r in log} <= {"ok"} and len(log) == 2  # the two before it were kept
    again = harvest(series, tmp_path, orthanc.dicomweb_url, rate=None, policy=FAST, progress=False)
    assert again.skipped == 2 and again.by_status == {"ok": len(series) - 2}


@pytest.mark.orthanc
def test_not_found_elsewhere_is_asked_again_and_retry_reasks(orthanc, orthanc_factory, tmp_path):
    empty = orthanc_factory()
    series = _pairs(orthanc, 3) + [(orthanc.series[0].StudyInstanceUID, UNKNOWN)]
    first = harvest(series, tmp_path, empty.dicomweb_url, rate=None, policy=FAST, progress=False)
    assert first.by_status == {"not_found": 4}  # WADO 404 at a server that has none of them
    same = harvest(series, tmp_path, empty.dicomweb_url, rate=None, policy=FAST, progress=False)
    assert same.skipped == 4 and same.by_status == {}
    moved = harvest(series, tmp_path, orthanc.dicomweb_url, rate=None, policy=FAST, progress=False)
    assert moved.skipped == 0 and moved.by_status == {"ok": 3, "not_found": 1}  # not found *there*: asked here
    settled = harvest(series, tmp_path, orthanc.dicomweb_url, rate=None, policy=FAST, progress=False)
    assert settled.skipped == 4 and settled.by_status == {}
    retried = harvest(series, tmp_path, orthanc.dicomweb_url, rate=None, policy=FAST, progress=False,
                      retry=("not_found", "empty"))
    assert retried.skipped == 3 and retried.by_status == {"not_found": 1}
    sops = HarvestStore(tmp_path).read_instances(["SOPInstanceUID"]).column(0).to_pylist()
    assert len(sops) == len(set(sops)) == sum(r.n_instances for r in orthanc.series[:3])


@pytest.mark.parametrize("retry, message", [
    (("ok",), "ok series are never asked for again"),
    ("http_error", "is not final"),
    (("gone",), "unknown status 'gone'"),
])
def test_retry_takes_only_final_statuses_without_instances(tmp_path, retry, message):
    with pytest.raises(HarvestError, match=message):
        harvest([("1.2", "1.2.3")], tmp_path, "http://127.0.0.1:9/dicom-web", retry=retry, progress=False)


# -- item 6: --light asks for every attribute the typed columns read ----------------------------
#: Orthanc 1.10's QIDO never returns sequences (its DICOM map holds no sequence values), so these
#: columns, read from OpticalPathSequence and SpecimenDescriptionSequence, stay null in light mode there.
ORTHANC_QIDO_CANNOT = {"OpticalPathIdentifier", "ObjectiveLensPower", "IlluminationType", "SpecimenIdentifier",
                       "PrimaryAnatomicStructure"}


@pytest.mark.orthanc
def test_light_fills_every_column_that_full_fills(orthanc, tmp_path):
    series = _pairs(orthanc)
    kwargs = dict(rate=None, policy=FAST, progress=False, workers=4)
    full = harvest(series, tmp_path / "full", orthanc.dicomweb_url, **kwargs)
    light = harvest(series, tmp_path / "light", orthanc.dicomweb_url, light=True, **kwargs)
    assert full.by_status == light.by_status == {"ok": len(series)}
    full_rows = {r["SOPInstanceUID"]: r for r in HarvestStore(tmp_path / "full").read_instances().to_pylist()}
    light_rows = {r["SOPInstanceUID"]: r for r in HarvestStore(tmp_path / "light").read_instances().to_pylist()}
    assert set(full_rows) == set(light_rows)
    from cohort.harvest.metadata import COLUMNS, DERIVED_FIELDS

    typed = [c.keyword for c in COLUMNS] + [f.name for f in DERIVED_FIELDS if f.name not in ("issues", "json")]
    missing, checked = {}, set()
    for sop, row in full_rows.items():
        top_level_spacing = "00280030" in json.loads(row["json"])  # else from the functional groups (a sequence)
        for column in typed:
            if row[column] in (None, []) or column in ORTHANC_QIDO_CANNOT:
                continue
            if column == "PixelSpacing" and not top_level_spacing:
                continue
            checked.add(column)
            if light_rows[sop][column] != row[column]:
                missing.setdefault(column, []).append(sop)
    assert not missing, {c: len(s) for c, s in missing.items()}
    # what the comma-joined include list used to lose, now checked on real SM/WSI and CT/MR series
    assert {"ImageType", "Manufacturer", "TotalPixelMatrixColumns", "TotalPixelMatrixRows", "NumberOfOpticalPaths",
            "PixelSpacing", "SamplesPerPixel", "PhotometricInterpretation"} <= checked


# -- item 8: secrets ------------------------------------------------------------------------------
TOKEN = "tok-3f9a1c77e2b04d5aa1"
PASSWORD = "pw-7d0e2b19c3"


class _EchoServer:
    """A DICOMweb look-alike on 127.0.0.1 that puts every request header into its error bodies:
    ``/studies`` answers ``[]`` (the probe passes), ``*/metadata`` 404/400/500 with the headers echoed,
    and ``X-Upstream`` headers of its own, shaped like credentials, that no one configured."""

    def __init__(self, probe_status: int = 200) -> None:
        probe = probe_status

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                echoed = f"refused Authorization={self.headers.get('Authorization')}; " + \
                    "\n".join(f"{k}: {v}" for k, v in self.headers.items())
                echoed += "\nX-Upstream-Authorization: Bearer upstream.9f8e7d6c5b4a\nsigned: ?X-Amz-Signature=abc123def"
                if self.path.startswith("/dicom-web/studies?"):
                    status, body = (probe, b"[]") if probe == 200 else (probe, echoed.encode())
                else:
                    status = {"1": 404, "2": 400}.get(self.path.split("/series/")[1][0], 500)
                    body = echoed.encode() + json.dumps({"request_headers": dict(self.headers)}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _secret_forms() -> list[str]:
    return [TOKEN, PASSWORD, base64.b64encode(f"bob:{PASSWORD}".encode()).decode(), "upstream.9f8e7d6c5b4a",
            "abc123def"]


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_echoed_credentials_never_reach_the_log_or_the_screen(tmp_path, monkeypatch, auth, capsys):
    monkeypatch.setenv("T_TOKEN", TOKEN)
    monkeypatch.setenv("T_USER", "bob")
    monkeypatch.setenv("T_PASS", PASSWORD)
    series = [("1.2", "1.2.1"), ("1.2", "2.2.2"), ("1.2", "3.3.3")]  # 404, 400 and 500 with headers echoed
    with _EchoServer() as server:
        credentials = BearerTokenAuth("T_TOKEN") if auth == "bearer" else BasicAuth("T_USER", "T_PASS")
        result = harvest(series, tmp_path, custom(server.url, credentials), rate=None, policy=FAST, progress=True)
    assert result.by_status == {"not_found": 1, "http_error": 2}
    log = HarvestStore(tmp_path).read_log().to_pylist()
    assert all("[redacted]" in r["error"] for r in log)
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*.parquet"))
    texts = " ".join(r["error"] for r in log) + str(result) + "".join(capsys.readouterr())
    for secret in _secret_forms():
        assert secret not in texts, secret
        assert secret.encode() not in stored, secret


def test_an_echoed_credential_in_the_probe_error_is_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("T_TOKEN", TOKEN)
    with _EchoServer(probe_status=403) as server, pytest.raises(HarvestError) as caught:
        harvest([("1.2", "1.2.1")], tmp_path, custom(server.url, BearerTokenAuth("T_TOKEN")), progress=False)
    message = str(caught.value)
    assert message.startswith("authentication failed for") and "[redacted]" in message
    assert not any(secret in message for secret in _secret_forms())


@pytest.mark.parametrize("query", ["access_token=abc123", "Token=abc123", "X-Amz-Signature=abc123&X-Amz-Date=1",
                                   "key=abc123", "sig=abc123"])
def test_a_url_carrying_a_credential_is_refused(query):
    with pytest.raises(EndpointError, match="carries a credential in its query string.*--auth bearer") as caught:
        custom(f"http://127.0.0.1:8042/dicom-web?{query}")
    assert "abc123" not in str(caught.value)


def test_the_python_result_says_how_to_resume_from_python():
    from cohort.harvest import HarvestResult

    result = HarvestResult(out_dir=Path("h"), run_id="r", series=5, skipped=1, by_status={"ok": 2, "timeout": 2},
                           instances=4, bytes=10, seconds=1.0, interrupted=True)
    assert result.remaining == 2 and result.failed == 2
    assert "2 series left: call harvest() again with the same directory to resume" in str(result)
    assert "command" not in str(result)
    assert result.summary(resume="run the same command again to resume").endswith("run the same command again to resume")
