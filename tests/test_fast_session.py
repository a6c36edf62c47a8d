"""Endpoint.fast_session: requests' environment settings read once, and still honoured.

The harvester's sessions skip requests' per-request environment lookups; these tests show that the
proxy, no_proxy, CA-bundle and .netrc settings of the environment still apply, through a real
forward proxy on loopback that records what it is asked.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cohort.endpoints import HeaderAuth, custom


@pytest.fixture()
def forward_proxy():
    """A loopback HTTP forward proxy that answers every request itself with ``[]`` and records its target."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


@pytest.fixture()
def clean_env(monkeypatch, tmp_path):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    return monkeypatch


def test_the_environment_proxy_carries_the_requests(forward_proxy, clean_env):
    proxy_url, seen = forward_proxy
    clean_env.setenv("HTTP_PROXY", proxy_url)
    session = custom("http://dicomweb.example.invalid/dicom-web").fast_session()
    clean_env.delenv("HTTP_PROXY")  # read once, when the session was made
    answer = session.get("http://dicomweb.example.invalid/dicom-web/studies?limit=1", timeout=10)
    assert answer.status_code == 200 and answer.content == b"[]"
    assert seen == ["http://dicomweb.example.invalid/dicom-web/studies?limit=1"]
    assert session.trust_env is False


def test_no_proxy_for_the_endpoint_host_is_honoured(forward_proxy, clean_env):
    proxy_url, seen = forward_proxy
    clean_env.setenv("HTTP_PROXY", proxy_url)
    clean_env.setenv("NO_PROXY", "dicomweb.example.invalid")
    assert custom("http://dicomweb.example.invalid/dicom-web").fast_session().proxies.get("http") is None
    assert custom("http://other.example.invalid/dicom-web").fast_session().proxies["http"] == proxy_url
    assert seen == []


def test_ca_bundle_and_netrc_from_the_environment(clean_env, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    netrc = tmp_path / "netrc"
    netrc.write_text("machine dicomweb.example.invalid login alice password s3cret\n")
    netrc.chmod(0o600)
    clean_env.setenv("NETRC", str(netrc))
    session = custom("https://dicomweb.example.invalid/dicom-web").fast_session()
    assert session.verify == str(bundle)
    assert session.auth == ("alice", "s3cret")
    assert custom("https://elsewhere.example.invalid/x").fast_session().auth is None


def test_the_endpoint_credentials_stay(clean_env):
    clean_env.setenv("SITE_KEY", "k-123")
    session = custom("https://dicomweb.example.invalid/x", auth=HeaderAuth("apikey", "SITE_KEY")).fast_session()
    assert session.headers["apikey"] == "k-123" and session.headers["User-Agent"] == "idc-cohort"
    assert session.auth is None
