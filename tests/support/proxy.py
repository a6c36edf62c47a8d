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

The proxy is one asyncio event loop in a thread of its own, with keep-alive connections to
the upstream: the latency is a timer, not a sleeping thread, and a request costs a fraction
of a millisecond of CPU, so that in a benchmark the proxy stands for the network and not
for a third busy program on the machine.

``raw_frames=True`` answers WADO-RS frame requests (``.../instances/SOP/frames/1,2``, Accept
``application/octet-stream`` with ``transfer-syntax=*`` or none) from Orthanc's own REST API
(``/instances/ID/frames/N/raw``), in the multipart/related body Orthanc's DICOMweb plugin
writes (same part headers, same frame bytes). That plugin (1.7, Orthanc 1.10) copies and
parses the whole instance for every frame: 16-20 ms of CPU a frame of a 2.9 MB instance
(perf: half of it in memmove), 0.3 ms through the REST API, which keeps its last parsed
instances in a cache. A cloud DICOMweb service does not share the client's CPUs; on a
2-core machine the plugin would be the benchmark's bottleneck.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
import threading
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

KINDS = ("pass", "429", "503", "reset", "delay", "truncate", "401")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}
REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable"}
FRAMES = re.compile(r"^(?P<base>/[^?]*)/studies/(?P<study>[^/?]+)/series/(?P<series>[^/?]+)/instances/"
                    r"(?P<sop>[^/?]+)/frames/(?P<numbers>[0-9]+(?:,[0-9]+)*)$")
_HEAD_LIMIT = 1 << 20


class _UpstreamError(Exception):
    """The upstream could not be reached or its answer could not be read (answered 502)."""


class FaultProxy:
    """A reverse proxy in front of ``upstream`` (e.g. ``Orthanc.url``) with a fault plan.

    ``url`` is the proxy's root (mirrors ``upstream``), ``dicomweb_url`` its ``/dicom-web``.
    ``counts`` counts the kinds injected; ``log`` lists (method, target, kind) per request.
    """

    def __init__(self, upstream: str, *, latency: float = 0.0, rates: Mapping[str, float] | None = None,
                 schedule: Mapping[str, Sequence[str]] | None = None,
                 per_target: Sequence[Sequence[str]] | None = None, match: str | None = None, seed: int = 0,
                 delay: float = 1.0, retry_after: int = 1, rewrite_urls: bool = True,
                 timeout: float = 60.0, raw_frames: bool = False) -> None:
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
        self._up_host, self._up_port, self._up_netloc = "127.0.0.1", parts.port or 80, parts.netloc
        self.latency, self.delay, self.retry_after, self.timeout = latency, delay, retry_after, timeout
        self.rates = dict(rates or {})
        self.schedule = {re.compile(p): list(k) for p, k in (schedule or {}).items()}
        self.match = re.compile(match) if match else None
        self.per_target = [list(kinds) for kinds in (per_target or [])]
        #: target -> the index in ``per_target`` it was given (targets in order of first arrival).
        self.targets: dict[str, int] = {}
        self.seed, self.rewrite_urls, self.raw_frames = seed, rewrite_urls, raw_frames
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[str, str, str]] = []
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._clients: set[asyncio.StreamWriter] = set()
        #: SOP Instance UID -> (Orthanc ID, transfer syntax UID), for ``raw_frames``.
        self._instances: dict[str, tuple[str, str] | None] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> FaultProxy:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="FaultProxy", daemon=True)
        self._thread.start()

        async def serve() -> asyncio.AbstractServer:
            return await asyncio.start_server(self._client, "127.0.0.1", 0, limit=_HEAD_LIMIT)

        self._server = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            self._server.close()
            for writer in [*self._clients, *(w for _, w in self._idle)]:
                writer.transport.abort()
            self._idle.clear()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()
            self._loop = self._server = None

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

    # -- one client connection: requests one after another (HTTP/1.1 keep-alive) ---------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._clients.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                method, target, version, headers = _parse_head(head)
                body = await _read_body(reader, headers)
                keep = await self._handle(method, target, headers, body, writer)
                if not keep or version == "HTTP/1.0" or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        except asyncio.CancelledError:  # stop(): the task ends quietly (asyncio logs a cancelled handler)
            return
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _handle(self, method: str, target: str, headers: dict[str, str], body: bytes,
                      writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must be closed after it."""
        kind = self.decide(method, target)
        if self.latency:
            await asyncio.sleep(self.latency)
        if kind == "reset":  # no response at all: RST instead of FIN
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if kind == "429":
            return await _answer(writer, 429, [("Retry-After", str(self.retry_after)), ("Content-Type", "text/plain")],
                                 b"429 Too Many Requests (injected by FaultProxy)\n")
        if kind == "401":
            return await _answer(writer, 401, [("WWW-Authenticate", 'Basic realm="FaultProxy"'),
                                               ("Content-Type", "text/plain")],
                                 b"401 Unauthorized (injected by FaultProxy)\n")
        if kind == "503":
            return await _answer(writer, 503, [("Content-Type", "text/plain")],
                                 b"503 Service Unavailable (injected by FaultProxy)\n")
        if kind == "delay":
            await asyncio.sleep(self.delay)
        try:
            frames = FRAMES.match(target) if self.raw_frames and method == "GET" else None
            if frames and _any_syntax(headers.get("accept", "")):
                status, out_headers, content = await asyncio.wait_for(self._frames(frames, headers), self.timeout)
            else:
                status, out_headers, content = await asyncio.wait_for(
                    self._forward(method, target, headers, body), self.timeout)
        except (_UpstreamError, asyncio.TimeoutError, OSError, asyncio.IncompleteReadError) as e:
            return await _answer(writer, 502, [("Content-Type", "text/plain")],
                                 f"FaultProxy: upstream failed: {type(e).__name__}: {e}\n".encode())
        kind_header = next((v for k, v in out_headers if k.lower() == "content-type"), "").lower()
        if self.rewrite_urls and ("json" in kind_header or "xml" in kind_header) \
                and self._up_netloc.encode() in content:
            content = content.replace(self._up_netloc.encode(), f"127.0.0.1:{self._port}".encode())
        if kind == "truncate":
            await _answer(writer, status, out_headers, content, send=content[: len(content) // 2])
            return False
        return await _answer(writer, status, out_headers, content)

    # -- upstream ------------------------------------------------------------------------------
    async def _forward(self, method: str, target: str, headers: Mapping[str, str],
                       body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._up_netloc}"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k not in HOP_BY_HOP]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        for fresh in (False, True):  # a kept-alive connection the upstream closed meanwhile: once more, anew
            reader, writer, reused = await self._connection(fresh)
            status_line = None
            try:
                writer.write(request)
                status_line = await reader.readuntil(b"\r\n")
                return await self._response(reader, writer, method, status_line)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
                writer.transport.abort()
                if reused and status_line is None and not isinstance(e, ValueError):
                    continue
                raise _UpstreamError(str(e) or type(e).__name__) from None
            except BaseException:  # cancelled (a timeout, stop()): the connection is in an unknown state
                writer.transport.abort()
                raise
        raise _UpstreamError("no connection")

    async def _connection(self, fresh: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        while self._idle and not fresh:
            reader, writer = self._idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer, True
            writer.transport.abort()
        reader, writer = await asyncio.open_connection(self._up_host, self._up_port, limit=_HEAD_LIMIT)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer, False

    async def _response(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str,
                        status_line: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        version, status = status_line.decode("latin-1").split(" ", 2)[:2]
        lines = []
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            lines.append(line)
        pairs = _header_pairs(b"".join(lines))
        headers = {k.lower(): v for k, v in pairs}
        status_code = int(status)
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if method == "HEAD" or status_code in (204, 304) or 100 <= status_code < 200:
            content = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            content = await _read_chunked(reader)
        elif "content-length" in headers:
            content = await reader.readexactly(int(headers["content-length"]))
        else:  # until the upstream closes
            content, keep = await reader.read(), False
        if keep:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return status_code, [(k, v) for k, v in pairs if k.lower() not in HOP_BY_HOP], content

    async def _frames(self, match: re.Match, headers: Mapping[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        """A WADO-RS frames answer built from Orthanc's REST raw frames (see the module's docstring)."""
        auth = {k: v for k, v in headers.items() if k == "authorization"}
        sop = match["sop"]
        if sop not in self._instances:
            status, out, content = await self._forward("POST", "/tools/lookup", auth, sop.encode())
            if status != 200:
                return status, out, content
            found = [item["ID"] for item in _json(content) if item.get("Type") == "Instance"]
            syntax = None
            if found:
                status, out, content = await self._forward("GET", f"/instances/{found[0]}/metadata/TransferSyntax", auth, b"")
                if status != 200:
                    return status, out, content
                syntax = content.decode().strip()
            self._instances[sop] = (found[0], syntax) if found else None
        known = self._instances[sop]
        if known is None:
            return 404, [("Content-Type", "text/plain")], f"FaultProxy: no instance {sop}\n".encode()
        orthanc_id, syntax = known
        boundary = f"{uuid.uuid4()}-{uuid.uuid4()}"[:73]
        location = f"http://127.0.0.1:{self._port}{match.group(0)}"
        parts, media = [], None
        for number in match["numbers"].split(","):
            if int(number) < 1:
                return 400, [("Content-Type", "text/plain")], b"FaultProxy: frame numbers start at 1\n"
            status, out, content = await self._forward("GET", f"/instances/{orthanc_id}/frames/{int(number) - 1}/raw", auth,
                                                         b"")
            if status != 200:
                return status, out, content
            media = next((v for k, v in out if k.lower() == "content-type"), "application/octet-stream")
            parts.append(f"--{boundary}\r\nContent-Location: {location}\r\nContent-Type: {media}; transfer-syntax="
                         f"{syntax}\r\nContent-Length: {len(content)}\r\nMIME-Version: 1.0\r\n\r\n".encode() + content
                         + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        kind = f'multipart/related; type="{media}; transfer-syntax={syntax}"; boundary={boundary}'
        return 200, [("Content-Type", kind)], body


def _any_syntax(accept: str) -> bool:
    """Whether an Accept header of a frames request takes the stored transfer syntax (octet-stream, ``*``)."""
    accept = accept.lower()
    return "application/octet-stream" in accept and ("transfer-syntax=*" in accept or "transfer-syntax" not in accept)


def _json(content: bytes):
    import json

    return json.loads(content)


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    request_line, _, rest = head.partition(b"\r\n")
    method, target, version = request_line.decode("latin-1").split(" ", 2)
    return method, target, version.strip(), {k.lower(): v for k, v in _header_pairs(rest)}


def _header_pairs(block: bytes) -> list[tuple[str, str]]:
    pairs = []
    for line in block.decode("latin-1").split("\r\n"):
        if ":" in line:
            name, _, value = line.partition(":")
            pairs.append((name.strip(), value.strip()))
    return pairs


async def _read_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return await _read_chunked(reader)
    return await reader.readexactly(int(headers.get("content-length") or 0))


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        chunks.append(await reader.readexactly(size))
        await reader.readuntil(b"\r\n")
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):  # trailers
        pass
    return b"".join(chunks)


async def _answer(writer: asyncio.StreamWriter, status: int, headers: Sequence[tuple[str, str]], body: bytes,
                  send: bytes | None = None) -> bool:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"] + [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    writer.write(body if send is None else send)
    await writer.drain()
    return True
