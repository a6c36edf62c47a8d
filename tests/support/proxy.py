"""A fault-injecting, latency-adding HTTP reverse proxy on 127.0.0.1, for tests and benchmarks.

Usage::

    from tests.support.proxy import FaultProxy

    with FaultProxy(orthanc.url, rates={"429": 0.1, "reset": 0.05}, seed=1) as proxy:
        harvest(..., custom(proxy.dicomweb_url))
        proxy.counts          # Counter({"pass": 180, "429": 14, "reset": 6})

    with FaultProxy(orthanc.url, latency=0.1) as proxy: ...          # +100 ms on every request
    with FaultProxy(orthanc.url, schedule={"/metadata": ["503", "reset"]}) as proxy: ...
    with FaultProxy(orthanc.url, per_target=[["429", "503"], ["reset"]], match="/metadata") as proxy: ...

Fault kinds (``KINDS``):

* ``"pass"``: forward unchanged.
* ``"429"``: answer 429 with ``Retry-After: <retry_after>`` (not forwarded).
* ``"503"``: answer 503 Service Unavailable (not forwarded).
* ``"reset"``: close the connection without any response (clients see a ConnectionError).
* ``"delay"``: wait ``delay`` seconds, then forward (for client timeouts).
* ``"truncate"``: forward, send the full Content-Length but only half the body, then close.
* ``"401"``: answer 401 Unauthorized with ``WWW-Authenticate`` (credentials refused mid-run; not forwarded).

Which fault a request gets: first ``schedule`` (regex on the path+query -> kinds for the 1st,
2nd, ... matching request), then ``per_target`` (for the 1st, 2nd, ... distinct target matching
``match``, in order of first arrival: the kinds of its 1st, 2nd, ... request; later requests of it
pass), then ``rates`` (kind -> probability) for requests whose path+query matches ``match`` (all
when None). ``per_target`` is the deterministic plan: whatever the number of requests and the
thread interleaving, as soon as ``len(per_target)`` targets have been asked for (each as often as
its list is long), every kind in it has occurred exactly as often as it is listed. The random draw depends only on (seed, method, target, how
many times that target was seen), so a plan is reproducible whatever the thread interleaving.
``latency`` seconds are added before every request. Headers (Accept, Authorization, ...) and
bodies (multipart STOW, frames) are forwarded byte for byte; JSON/XML bodies have the upstream
host:port rewritten to the proxy's, so BulkDataURI/RetrieveURL lead back through the proxy.
"""

from __future__ import annotations

import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests

KINDS = ("pass", "429", "503", "reset", "delay", "truncate", "401")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}


class FaultProxy:
    """A reverse proxy in front of ``upstream`` (e.g. ``Orthanc.url``) with a fault plan.

    ``url`` is the proxy's root (mirrors ``upstream``), ``dicomweb_url`` its ``/dicom-web``.
    ``counts`` counts the kinds injected; ``log`` lists (method, target, kind) per request.
    """

    def __init__(self, upstream: str, *, latency: float = 0.0, rates: Mapping[str, float] | None = None,
                 schedule: Mapping[str, Sequence[str]] | None = None,
                 per_target: Sequence[Sequence[str]] | None = None, match: str | None = None, seed: int = 0,
                 delay: float = 1.0, retry_after: int = 1, rewrite_urls: bool = True,
                 timeout: float = 60.0) -> None:
        planned = [*(schedule or {}).values(), *(per_target or [])]
        for kind in [*(rates or {}), *(k for kinds in planned for k in kinds)]:
            if kind not in KINDS:
                raise ValueError(f"FaultProxy: unknown fault kind {kind!r}; use one of {', '.join(KINDS)}")
        if sum((rates or {}).values()) > 1:
            raise ValueError(f"FaultProxy: rates add up to more than 1: {dict(rates)}")
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"FaultProxy: upstream must be on loopback, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self.latency, self.delay, self.retry_after, self.timeout = latency, delay, retry_after, timeout
        self.rates = dict(rates or {})
        self.schedule = {re.compile(p): list(k) for p, k in (schedule or {}).items()}
        self.match = re.compile(match) if match else None
        self.per_target = [list(kinds) for kinds in (per_target or [])]
        #: target -> the index in ``per_target`` it was given (targets in order of first arrival).
        self.targets: dict[str, int] = {}
        self.seed, self.rewrite_urls = seed, rewrite_urls
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[str, str, str]] = []
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> FaultProxy:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="FaultProxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def decide(self, method: str, target: str) -> str:
        """The fault kind for this request (and count it)."""
        with self._lock:
            seen = self._seen[f"{method} {target}"]
            self._seen[f"{method} {target}"] += 1
            kind = None
            for pattern, kinds in self.schedule.items():
                if kinds and pattern.search(target):
                    kind = kinds.pop(0)
                    break
            matches = self.match is None or self.match.search(target)
            if kind is None and self.per_target and matches:
                index = self.targets.setdefault(f"{method} {target}", len(self.targets))
                plan = self.per_target[index] if index < len(self.per_target) else []
                kind = plan[seen] if seen < len(plan) else "pass"
            if kind is None:
                kind = "pass"
                if self.rates and matches:
                    draw = random.Random(f"{self.seed}|{method}|{target}|{seen}").random()
                    for candidate, rate in self.rates.items():
                        draw -= rate
                        if draw < 0:
                            kind = candidate
                            break
            self.counts[kind] += 1
            self.log.append((method, target, kind))
            return kind


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    upstream_netloc = urlsplit(proxy.upstream).netloc.encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            self.upstream = requests.Session()

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                self.upstream.close()

        def log_message(self, format, *args) -> None:  # quiet: the proxy keeps its own log
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _answer(self, status: int, headers: Mapping[str, str], body: bytes, send: bytes | None = None) -> None:
            self.send_response_only(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if send is None else send)

        def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            response = self.upstream.request(self.command, proxy.upstream + self.path, headers=headers,
                                             data=body or None, stream=True, allow_redirects=False,
                                             timeout=proxy.timeout)
            content = response.raw.read(decode_content=False)
            out_headers = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
            kind = out_headers.get("Content-Type", "").lower()
            if proxy.rewrite_urls and ("json" in kind or "xml" in kind) and upstream_netloc in content:
                host, port = self.server.server_address[:2]
                content = content.replace(upstream_netloc, f"{host}:{port}".encode())
            return response.status_code, out_headers, content

        def _handle(self) -> None:
            body = self._read_body()
            kind = proxy.decide(self.command, self.path)
            if proxy.latency:
                time.sleep(proxy.latency)
            if kind == "reset":  # no response at all: RST instead of FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            if kind == "429":
                self._answer(429, {"Retry-After": str(proxy.retry_after), "Content-Type": "text/plain"},
                             b"429 Too Many Requests (injected by FaultProxy)\n")
                return
            if kind == "401":
                self._answer(401, {"WWW-Authenticate": 'Basic realm="FaultProxy"', "Content-Type": "text/plain"},
                             b"401 Unauthorized (injected by FaultProxy)\n")
                return
            if kind == "503":
                self._answer(503, {"Content-Type": "text/plain"}, b"503 Service Unavailable (injected by FaultProxy)\n")
                return
            if kind == "delay":
                time.sleep(proxy.delay)
            try:
                status, headers, content = self._forward(body)
            except requests.RequestException as e:
                self._answer(502, {"Content-Type": "text/plain"}, f"FaultProxy: upstream failed: {e}\n".encode())
                return
            if kind == "truncate":
                self._answer(status, headers, content, send=content[: len(content) // 2])
                self.close_connection = True
                return
            self._answer(status, headers, content)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

    return Handler
