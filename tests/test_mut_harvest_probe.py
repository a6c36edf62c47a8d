"""cohort/harvest/probe.py against a small real HTTP server on 127.0.0.1 that answers what each test sets:
every outcome of the probe and its whole message, the request it sends, and the snippet it quotes."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from cohort import HarvestError, custom
from cohort.endpoints import BearerTokenAuth
from cohort.harvest.probe import ACCEPT_JSON, AUTH_STATUSES, probe, snippet
from cohort.retry import RateLimiter, RetryPolicy

FAST = RetryPolicy(timeout=5, max_attempts=2, backoff_base=0.0, backoff_max=0.0, jitter=0.0)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        server = self.server
        server.requests.append((self.path, dict(self.headers)))
        if getattr(server, "delay", 0):
            time.sleep(server.delay)
        code, reason, ctype, body = server.answer
        self.send_response(code, reason)
        if ctype:
            self.send_header("Content-Type", ctype)
        data = body if isinstance(body, bytes) else body.encode()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []
    httpd.handle_error = lambda request, address: None  # a client that timed out and left is not an error here
    httpd.answer = (200, None, "application/dicom+json", "[]")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/dicom-web"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _answer(server, code, body="", ctype="application/json", reason=None):
    server.answer = (code, reason, ctype, body)
    server.requests.clear()


def _probe_error(server, **kw) -> str:
    with pytest.raises(HarvestError) as err:
        probe(custom(server.url, name="pacs", **kw), FAST)
    return str(err.value)


ASKED = "GET {url}/studies?limit=1"
CHECK_URL = ("; check --url: it must be the DICOMweb root, the part before /studies (e.g. "
             "http://127.0.0.1:8042/dicom-web for Orthanc)")


@pytest.mark.parametrize(("code", "body"), [(200, "[]"), (200, '[{"0020000D": {"vr": "UI"}}, {}]'), (204, "")])
def test_a_dicomweb_answer_passes_and_the_request_is_one_qido(server, code, body):
    _answer(server, code, body)
    assert probe(custom(server.url), FAST) is None
    ((path, headers),) = server.requests
    assert path == "/dicom-web/studies?limit=1"
    assert headers["Accept"] == ACCEPT_JSON["Accept"] == "application/dicom+json, application/json"


def test_the_default_policy_is_used_without_one(server):
    _answer(server, 200, "[]")
    assert probe(custom(server.url)) is None and len(server.requests) == 1


@pytest.mark.parametrize(("body", "ctype", "shown"), [
    ('["0a1b", "2c3d"]', "application/json; charset=utf-8", 'application/json: ["0a1b", "2c3d"]'),
    ("<html>\n  <b>Orthanc</b>\n</html>", "text/html", "text/html: <html> <b>Orthanc</b> </html>"),
    ('{"a": 1}', "application/json", 'application/json: {"a": 1}'),
    ("[1, 2]", None, "no content type: [1, 2]"),
])
def test_a_200_that_is_not_dicom_json(server, body, ctype, shown):
    _answer(server, 200, body, ctype)
    url = server.url
    assert _probe_error(server) == (f"pacs does not answer as a DICOMweb service: {ASKED.format(url=url)} answered "
                                    f"HTTP 200 ({shown}){CHECK_URL}")


def test_a_404_quotes_the_reason_when_the_body_is_empty(server):
    _answer(server, 404, "", "text/plain")
    assert _probe_error(server) == (f"pacs does not answer as a DICOMweb service: {ASKED.format(url=server.url)} "
                                    f"answered HTTP 404 (text/plain: Not Found){CHECK_URL}")
    _answer(server, 404, "", "text/plain", reason="")
    assert _probe_error(server) == (f"pacs does not answer as a DICOMweb service: {ASKED.format(url=server.url)} "
                                    f"answered HTTP 404 (text/plain){CHECK_URL}")


def test_a_long_body_is_cut_to_120_characters(server):
    body = "x" * 100 + "  \n " + "y" * 100
    _answer(server, 400, body, "text/plain")
    shown = "x" * 100 + " " + "y" * 19
    assert f"answered HTTP 400 (text/plain: {shown}); check --url" in _probe_error(server)


@pytest.mark.parametrize("code", [401, 403])
def test_refused_credentials(server, code):
    assert AUTH_STATUSES == frozenset({401, 403})
    _answer(server, code, "denied", "text/plain")
    assert _probe_error(server) == (f"authentication failed for pacs: check --auth ({ASKED.format(url=server.url)} "
                                    f"answered HTTP {code}: denied)")
    _answer(server, code, "", "text/plain", reason="")
    assert _probe_error(server) == (f"authentication failed for pacs: check --auth ({ASKED.format(url=server.url)} "
                                    f"answered HTTP {code})")


def test_an_echoed_token_is_redacted_before_the_cut(server, monkeypatch):
    monkeypatch.setenv("PROBE_TOKEN", "s3cr3t-token-value")
    _answer(server, 401, "you sent s3cr3t-token-value", "text/plain")
    message = _probe_error(server, auth=BearerTokenAuth("PROBE_TOKEN"))
    assert "s3cr3t" not in message and message.endswith("answered HTTP 401: you sent [redacted])")
    assert server.requests[0][1]["Authorization"] == "Bearer s3cr3t-token-value"


def test_a_busy_server_is_not_available(server):
    _answer(server, 503, "busy", "text/plain")
    assert _probe_error(server) == (f"pacs is not available: {ASKED.format(url=server.url)} answered HTTP 503 after "
                                    "2 attempts; try again later")
    assert len(server.requests) == 2


def test_credentials_that_cannot_be_made(server, monkeypatch):
    monkeypatch.delenv("PROBE_NO_TOKEN", raising=False)
    _answer(server, 200, "[]")
    message = _probe_error(server, auth=BearerTokenAuth("PROBE_NO_TOKEN"))
    assert message.startswith("authentication failed for pacs: check --auth (") and "PROBE_NO_TOKEN" in message
    assert server.requests == []


def test_an_unreachable_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/dicom-web"
    with pytest.raises(HarvestError) as err:
        probe(custom(url, name="gone"), FAST)
    message = str(err.value)
    assert message.startswith(f"cannot reach gone: GET {url}/studies?limit=1 failed after 2 attempts (ConnectionError: ")
    assert message.endswith("); check --url and that the server is running")


def test_snippet(server):
    _answer(server, 500, "  a\tb\n\nc  ", "text/plain")
    response = requests.get(server.url + "/x", timeout=5)
    assert snippet(response) == "a b c"
    assert snippet(response, 3) == "a b"
    _answer(server, 500, "aaaa\tsekret99 tail", "text/plain")
    response = requests.get(server.url + "/x", timeout=5)
    assert snippet(response, 200, ("sekret99",)) == "aaaa [redacted] tail"
    assert snippet(response, 8, ("sekret99",)) == "aaaa [re"  # redacted, then cut: no half secret
    _answer(server, 500, "", "text/plain")
    assert snippet(requests.get(server.url + "/x", timeout=5)) == "Internal Server Error"
    _answer(server, 500, "", "text/plain", reason="")
    assert snippet(requests.get(server.url + "/x", timeout=5)) == ""
    _answer(server, 500, "z" * 250, "text/plain")
    assert snippet(requests.get(server.url + "/x", timeout=5)) == "z" * 200
    assert json.loads(json.dumps(ACCEPT_JSON)) == {"Accept": "application/dicom+json, application/json"}


# -- what the first mutation run showed untested (bench/MUTATION.md) ----------------------------------
def test_the_probe_takes_a_token_of_the_runs_rate_limiter(server):
    _answer(server, 200, "[]")
    limiter = RateLimiter(1e-6, burst=1)  # one token now, the next in 11 days
    probe(custom(server.url), FAST, limiter)
    stopped = threading.Event()
    stopped.set()
    assert limiter.acquire(stopped) is False  # the probe took the only token
    assert RateLimiter(1e-6, burst=1).acquire(stopped) is True


def test_the_probe_waits_no_longer_than_the_policy_timeout(server):
    _answer(server, 200, "[]")
    server.delay = 3
    try:
        with pytest.raises(HarvestError) as err:
            probe(custom(server.url, name="slow"), RetryPolicy(timeout=0.5, max_attempts=1))
    finally:
        server.delay = 0
    assert "failed after 1 attempts (ReadTimeout: " in str(err.value)


# -- the snippet's decoding, the cut and the redaction on every branch (after the probe's rewrite) -----
@pytest.mark.parametrize(("ctype", "body", "shown"), [
    ("text/plain; charset=latin-1", b"caf\xe9 ferm\xe9", "caf\xe9 ferm\xe9"),  # the declared charset
    ("application/octet-stream", b"bad \xff\xfe bytes", "bad \ufffd\ufffd bytes"),  # none declared: UTF-8, replaced
    ("text/plain; charset=x-nonesuch", b"ok \xff caf\xc3\xa9", "ok \ufffd caf\xe9"),  # unknown charset: UTF-8
    ("text/plain; charset=x-nonesuch", b"", "Internal Server Error"),  # no body: the reason
])
def test_the_snippet_decodes_the_declared_charset_else_utf8(server, ctype, body, shown):
    _answer(server, 500, body, ctype)
    assert snippet(requests.get(server.url + "/x", timeout=5)) == shown


def test_a_long_refusal_is_cut_to_120_characters(server):
    _answer(server, 401, "d" * 300, "text/plain")
    assert _probe_error(server) == (f"authentication failed for pacs: check --auth ({ASKED.format(url=server.url)} "
                                    f"answered HTTP 401: {'d' * 120})")


def test_an_echoed_token_is_redacted_in_a_not_dicomweb_answer(server, monkeypatch):
    monkeypatch.setenv("PROBE_TOKEN", "plain-value-7")  # not shaped like a credential: only the session knows it
    _answer(server, 404, "no route for plain-value-7", "text/plain")
    message = _probe_error(server, auth=BearerTokenAuth("PROBE_TOKEN"))
    assert "plain-value-7" not in message and "(text/plain: no route for [redacted])" in message
