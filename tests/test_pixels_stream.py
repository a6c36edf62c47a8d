"""The routed client's iter_* methods stream: each frame is yielded as its part arrives, not after the body.

A local server sends a multipart frames answer in HTTP chunks and holds back the second frame
until the test has the first one (or 10 s have passed, which fails the test): a client that
read the whole body before yielding would only get the first frame after that timeout. Its
first answer is a 503, so the retry of a streamed request is exercised too.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cohort import Cohort, custom
from cohort.coverage import route
from cohort.pixels import RoutedClient
from cohort.pixels.client import NATIVE_FRAMES
from cohort.retry import RetryPolicy

FRAMES = [bytes(range(256)) * 40, b"\xff\xd8" + b"second frame" * 500 + b"\xff\xd9"]
BOUNDARY = "frames-boundary"


@pytest.fixture()
def gated_server():
    gate, timed_out, statuses = threading.Event(), [], []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def do_GET(self) -> None:
            if not statuses:  # the first request: a 503 the client retries
                statuses.append(503)
                self.send_response(503)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            statuses.append(200)
            parts = [f"--{BOUNDARY}\r\nContent-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
                     f"\r\n\r\n".encode() + frame + b"\r\n" for frame in FRAMES]
            self.send_response(200)
            self.send_header("Content-Type", f'multipart/related; type="application/octet-stream"; boundary={BOUNDARY}')
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(parts[0] + f"--{BOUNDARY}".encode())  # the first part, closed by the next delimiter
            if not gate.wait(10):
                timed_out.append(True)
            self._chunk(parts[1][len(f"--{BOUNDARY}"):] + f"--{BOUNDARY}--\r\n".encode())
            self._chunk(b"")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/dicom-web", gate, timed_out, statuses
    gate.set()
    server.shutdown()
    server.server_close()


def test_iter_instance_frames_yields_each_frame_as_it_arrives(catalog, gated_server):
    url, gate, timed_out, statuses = gated_server
    row = catalog.sql("SELECT StudyInstanceUID, SeriesInstanceUID FROM index WHERE Modality = 'SM' "
                      "ORDER BY SeriesInstanceUID LIMIT 1").to_pylist()[0]
    study, series = row["StudyInstanceUID"], row["SeriesInstanceUID"]
    client = RoutedClient(route(Cohort.from_uids([series], catalog=catalog), custom(url, name="gated")), rate=None,
                          policy=RetryPolicy(backoff_base=0.01, jitter=0))
    frames = client.iter_instance_frames(study, series, "1.2.3.4", [1, 2], media_types=NATIVE_FRAMES)
    first = next(frames)
    assert not timed_out, "the first frame came only after the server had sent the whole body"
    gate.set()
    assert [bytes(first), *map(bytes, frames)] == FRAMES
    assert statuses == [503, 200] and not timed_out
    # the same frames, not streamed, still come whole
    assert [bytes(f) for f in client.retrieve_instance_frames(study, series, "1.2.3.4", [1, 2],
                                                               media_types=NATIVE_FRAMES)] == FRAMES
