"""Endpoints make the sessions they say they make: Google credentials through a real google-auth flow
against a local token server, the headers a DICOMweb server sees, and the exact error texts.

The Google test writes a service-account key file (an RSA key made here) whose ``token_uri`` is a
token server on 127.0.0.1; google-auth signs a JWT, posts it there and gets an access token, and a
second local server records what the session then sends. Nothing leaves the machine.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cohort import EndpointError, custom, google_store, idc_proxy
from cohort.endpoints import (
    GOOGLE_SCOPES,
    BasicAuth,
    BearerTokenAuth,
    Endpoint,
    EndpointKind,
    GoogleAuth,
    NoAuth,
    auth_from_name,
    google_credentials_available,
)

TOKEN = "ya29.local-test-token"


class _Recorder(BaseHTTPRequestHandler):
    """Token endpoint (POST) answering server.token_status; any GET is recorded and answered []."""

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.server.posts.append(parse_qs(body))
        status, answer = self.server.token_answer
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/slow"):
            time.sleep(1.5)
        self.server.gets.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *args):
        pass


@pytest.fixture
def local():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.posts, httpd.gets = [], []
    httpd.token_answer = (200, {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"})
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def service_account(tmp_path, local, monkeypatch):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {
        "type": "service_account", "project_id": "local-test", "private_key_id": "k1", "private_key": pem,
        "client_email": "tester@local-test.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": local.url + "/token",
    }
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(info))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    return path


def _jwt_claims(assertion: str) -> dict:
    payload = assertion.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_google_auth_gets_a_token_for_the_healthcare_scope_and_sends_it(local, service_account):
    assert google_credentials_available()
    endpoint = Endpoint("store", local.url + "/dicomWeb", EndpointKind.GOOGLE, 24, GoogleAuth())
    session = endpoint.session()
    assert len(local.posts) == 1  # the token was fetched when the session was made, not on first use
    claims = _jwt_claims(local.posts[0]["assertion"][0])
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-healthcare" == GOOGLE_SCOPES[0]
    session.get(endpoint.url + "/studies", timeout=10)
    (path, headers), = local.gets
    assert path == "/dicomWeb/studies"
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["user-agent"] == "idc-cohort"  # the base session's headers are kept
    assert TOKEN not in repr(endpoint) and TOKEN not in repr(endpoint.auth)


def test_google_token_refused_is_a_clear_error(local, service_account):
    local.token_answer = (400, {"error": "invalid_grant", "error_description": "no"})
    with pytest.raises(EndpointError) as err:
        google_store(24).session()
    assert str(err.value) == (
        "could not get a Google access token (RefreshError): run `gcloud auth application-default login` "
        "again, or use the IDC proxy instead")


def test_no_google_credentials_message(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(EndpointError) as err:
        GoogleAuth().apply(None)
    assert str(err.value) == (
        "no Google credentials found: run `gcloud auth application-default login` or set "
        "GOOGLE_APPLICATION_CREDENTIALS, or use the IDC proxy instead (DefaultCredentialsError)")


def test_credentials_file_named_by_the_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    (tmp_path / "application_default_credentials.json").write_text("{}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    assert not google_credentials_available()  # the variable names a missing file: gcloud's is not used
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "application_default_credentials.json"))
    assert google_credentials_available()


def test_sessions_send_the_user_agent_and_credentials(local, monkeypatch):
    monkeypatch.setenv("T_VAR", "tok-123")
    for auth, expected in ((NoAuth(), None), (BearerTokenAuth("T_VAR"), "Bearer tok-123")):
        local.gets.clear()
        custom(local.url, auth).session().get(local.url + "/studies", timeout=10)
        (_, headers), = local.gets
        assert headers["user-agent"] == "idc-cohort" and headers.get("authorization") == expected


def test_dicomweb_client_uses_the_endpoint_session(local, monkeypatch):
    monkeypatch.setenv("T_VAR", "tok-456")
    client = custom(local.url + "/dicom-web", BearerTokenAuth("T_VAR")).client(timeout=7)
    assert client.search_for_studies() == []
    (path, headers), = local.gets
    assert path.startswith("/dicom-web/studies") and headers["authorization"] == "Bearer tok-456"


def test_dicomweb_client_timeout_is_passed_on(local):
    import requests

    client = custom(local.url + "/slow").client(timeout=0.3)
    client.set_http_retry_params(retry=False)  # dicomweb-client's own retries would take 30 s
    with pytest.raises(requests.Timeout):
        client.search_for_studies()
    own = requests.Session()
    assert custom(local.url).client(session=own)._session is own  # a session given is used as it is


def test_basic_auth_needs_a_user_but_allows_an_empty_password(monkeypatch):
    monkeypatch.setenv("U_VAR", "alice")
    monkeypatch.setenv("P_VAR", "")
    assert custom("http://127.0.0.1:1", BasicAuth("U_VAR", "P_VAR")).session().auth == ("alice", "")
    monkeypatch.delenv("P_VAR")
    with pytest.raises(EndpointError) as err:
        custom("http://127.0.0.1:1", BasicAuth("U_VAR", "P_VAR")).session()
    assert str(err.value) == "basic authentication needs the environment variables U_VAR and P_VAR"
    monkeypatch.setenv("P_VAR", "pw")
    monkeypatch.setenv("U_VAR", "")
    with pytest.raises(EndpointError, match="U_VAR and P_VAR"):
        custom("http://127.0.0.1:1", BasicAuth("U_VAR", "P_VAR")).session()


def test_bearer_token_message(monkeypatch):
    monkeypatch.setenv("EMPTY_TOKEN", "")
    with pytest.raises(EndpointError) as err:
        custom("http://127.0.0.1:1", BearerTokenAuth("EMPTY_TOKEN")).session()
    assert str(err.value) == (
        "bearer-token authentication needs the environment variable EMPTY_TOKEN; set it to the token "
        "(it is never printed or stored)")


@pytest.mark.parametrize("name, expected", [
    ("basic:U", BasicAuth("U", "DICOMWEB_PASSWORD")), ("basic::P", BasicAuth("DICOMWEB_USER", "P")),
    ("bearer:", BearerTokenAuth("DICOMWEB_TOKEN")),
])
def test_auth_from_name_partial_forms(name, expected):
    assert auth_from_name(name) == expected


def test_auth_from_name_unknown_message():
    with pytest.raises(EndpointError) as err:
        auth_from_name("kerberos:x")
    assert str(err.value) == (
        "unknown authentication 'kerberos:x': use none, google, bearer[:ENV_VAR], basic[:USER_VAR:PASSWORD_VAR] "
        "or header:NAME:ENV_VAR")


def test_endpoint_values():
    proxy = idc_proxy()
    assert (proxy.name, proxy.url) == (
        "idc-proxy",
        "https://proxy.imaging.datacommons.cancer.gov/current/viewer-only-no-downloads-see-tinyurl-dot-com-slash-3j3d9jyp/dicomWeb")
    store = google_store(21)
    assert (store.name, store.kind, store.idc_version) == ("idc-store-v21", EndpointKind.GOOGLE, 21)
    assert store.url == ("https://healthcare.googleapis.com/v1/projects/nci-idc-data/locations/us-central1/"
                         "datasets/idc/dicomStores/idc-store-v21/dicomWeb")
    assert google_store(1).idc_version == 1
    own = google_store(5, auth=NoAuth())
    assert isinstance(own.auth, NoAuth)
    named = custom("https://example.org/dicom-web//", name="mine")
    assert (named.name, named.url, named.kind, named.idc_version) == (
        "mine", "https://example.org/dicom-web", EndpointKind.CUSTOM, None)
    assert custom("http://h/x").name == "http://h/x"
    assert custom("http://h/dicomX/").url == "http://h/dicomX"  # only slashes are stripped
    assert named.series_url("1.2", "3.4") == "https://example.org/dicom-web/studies/1.2/series/3.4"


def test_endpoint_refusals_are_exact():
    with pytest.raises(EndpointError) as err:
        custom("ftp://h/x", name="mine")
    assert str(err.value) == "endpoint 'mine': URL 'ftp://h/x' must start with http:// or https://"
    with pytest.raises(EndpointError) as err:
        google_store(0)
    assert str(err.value) == "IDC release must be 1 or later, got 0"
    for url, name in (("http://u:p@h/x", "ok"), ("http://h/x", "http://u:p@h/x")):
        with pytest.raises(EndpointError) as err:
            Endpoint(name, url)
        assert str(err.value) == (
            "endpoint URL carries credentials (user:password@host); give the URL without them and use basic "
            "auth from the environment (--auth basic:USER_VAR:PASSWORD_VAR)")
