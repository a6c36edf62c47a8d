"""RetryPolicy, RateLimiter and get() against a real local HTTP server that answers from a script."""

from __future__ import annotations

import email.utils
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from cohort.errors import HarvestError
from cohort.retry import RateLimiter, RetryPolicy, get, parse_retry_after

FAST = RetryPolicy(timeout=2, max_attempts=4, backoff_base=0.01, backoff_max=0.05, retry_after_max=0.2)


class _Scripted(BaseHTTPRequestHandler):
    """Answers each GET with the next (status, headers, body, delay) of the server's script."""

    def do_GET(self):  # noqa: N802
        server = self.server
        with server.lock:
            server.seen.append(self.path)
            status, headers, body, delay = server.script.pop(0) if server.script else (200, {}, b"[]", 0)
        time.sleep(delay)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    httpd.script, httpd.seen, httpd.lock = [], [], threading.Lock()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(httpd, path="/metadata"):
    return f"http://127.0.0.1:{httpd.server_address[1]}{path}"


def test_retries_429_and_503_then_succeeds(server):
    server.script = [(429, {"Retry-After": "0"}, b"slow down", 0), (503, {}, b"busy", 0), (200, {}, b"[1]", 0)]
    result = get(requests.Session(), _url(server), policy=FAST)
    assert result.ok and result.attempts == 3 and result.response.content == b"[1]"
    assert result.bytes == len(b"slow down") + len(b"busy") + len(b"[1]")
    assert len(server.seen) == 3


def test_gives_up_after_max_attempts_with_the_last_response(server):
    server.script = [(503, {}, b"busy", 0)] * 10
    result = get(requests.Session(), _url(server), policy=FAST)
    assert not result.ok and result.attempts == 4 and result.response.status_code == 503
    assert len(server.seen) == 4


def test_404_is_not_retried(server):
    server.script = [(404, {}, b"no", 0)]
    result = get(requests.Session(), _url(server), policy=FAST)
    assert result.attempts == 1 and result.response.status_code == 404


def test_timeout_is_retried_and_reported(server):
    server.script = [(200, {}, b"[]", 1.0)] * 2
    policy = RetryPolicy(timeout=0.2, max_attempts=2, backoff_base=0.01)
    result = get(requests.Session(), _url(server), policy=policy)
    assert isinstance(result.error, requests.Timeout) and result.attempts == 2


def test_connection_refused_is_retried():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = get(requests.Session(), f"http://127.0.0.1:{port}/x", policy=FAST)
    assert isinstance(result.error, requests.ConnectionError) and result.attempts == 4


def test_stop_event_ends_the_retries(server):
    server.script = [(429, {"Retry-After": "100"}, b"", 0)] * 3
    stop = threading.Event()
    stop.set()
    policy = RetryPolicy(max_attempts=3, retry_after_max=100)
    result = get(requests.Session(), _url(server), policy=policy, stop=stop)
    assert result.stopped and result.attempts == 1


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


def test_retry_after_is_capped_and_backoff_bounded():
    policy = RetryPolicy(backoff_base=1, backoff_max=8, jitter=0.5, retry_after_max=60)
    response = requests.Response()
    response.headers["Retry-After"] = "3600"
    assert policy.wait_before_retry(1, response) == 60
    rng = random.Random(1)
    waits = [policy.backoff(n, rng) for n in range(1, 12) for _ in range(20)]
    assert all(0 <= w <= 8 for w in waits)
    assert len({round(w, 6) for w in waits[:20]}) > 1  # jittered
    assert policy.should_retry(None, requests.ConnectionError()) and not policy.should_retry(None, ValueError())


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"max_attempts": 0}, {"jitter": 2}])
def test_bad_policy_is_a_clear_error(kwargs):
    with pytest.raises(HarvestError, match="out of range"):
        RetryPolicy(**kwargs)


def test_rate_limiter_tokens_and_stop():
    limiter = RateLimiter(1000, burst=5)
    assert all(limiter.acquire() for _ in range(20))
    slow = RateLimiter(0.001)
    assert slow.acquire()  # the first token is there
    stop = threading.Event()
    stop.set()
    assert slow.acquire(stop) is False  # would wait 1000 s; the stop event ends the wait
    assert RateLimiter(None).acquire()
    with pytest.raises(HarvestError, match="rate must be"):
        RateLimiter(0)
