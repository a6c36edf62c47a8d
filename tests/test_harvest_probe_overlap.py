"""The endpoint probe runs beside the first series' requests: nothing counts before it passed.

A loopback DICOMweb stand-in whose ``/studies`` (the probe) and ``.../metadata`` (the series) answers
and delays are set per test, and which counts what it was asked.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cohort.errors import HarvestError
from cohort.harvest import HarvestStore, harvest
from cohort.retry import RetryPolicy

ONE = RetryPolicy(timeout=10, max_attempts=1)


class _Server:
    def __init__(self, probe_status: int, probe_delay: float, series_delay: float, gate: int = 0) -> None:
        self.asked: list[str] = []
        lock = threading.Lock()
        owner = self
        # with a gate, the probe answers once `gate` series requests are in flight together (or after 5 s),
        # and each series once the probe has answered (or after 5 s)
        self.in_flight, self.all_in, self.probe_done, self.probe_saw_all = 0, threading.Event(), threading.Event(), None

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                with lock:
                    owner.asked.append(path)
                if path.endswith("/studies"):
                    if gate:
                        owner.probe_saw_all = owner.all_in.wait(5)
                        owner.probe_done.set()
                    time.sleep(probe_delay)
                    status, kind, body = probe_status, "application/dicom+json", b"[]"
                    if probe_status != 200:
                        kind, body = "text/html", b"<html>not here</html>"
                else:
                    if gate:
                        with lock:
                            owner.in_flight += 1
                            if owner.in_flight >= gate:
                                owner.all_in.set()
                        owner.probe_done.wait(5)
                        with lock:
                            owner.in_flight -= 1
                    time.sleep(series_delay)
                    series = path.split("/series/")[1].split("/")[0]
                    instance = {"00080018": {"vr": "UI", "Value": [series + ".1"]},
                                "0020000E": {"vr": "UI", "Value": [series]}}
                    status, kind, body = 200, "application/dicom+json", json.dumps([instance]).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/dicom-web"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def series_asked(self) -> int:
        return sum(1 for p in self.asked if p.endswith("/metadata"))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def server_factory():
    made: list[_Server] = []

    def make(probe_status=200, probe_delay=0.0, series_delay=0.0, gate=0) -> _Server:
        made.append(_Server(probe_status, probe_delay, series_delay, gate))
        return made[-1]

    yield make
    for server in made:
        server.close()


PAIRS = [("1.2.3", f"1.2.3.{i}") for i in range(1, 61)]


def _nothing_logged(out: Path) -> None:
    assert not list((out / "log").glob("*.parquet")), "nothing may be committed when the probe fails"


def test_a_failed_probe_stops_the_run_early_and_nothing_counts(server_factory, tmp_path):
    server = server_factory(probe_status=404, series_delay=0.05)
    with pytest.raises(HarvestError, match="does not answer as a DICOMweb service"):
        harvest(PAIRS, tmp_path, server.url, workers=2, rate=None, policy=ONE, progress=False)
    assert server.asked.count("/dicom-web/studies") == 1
    # 60 series at 50 ms on 2 workers would take 1.5 s; the probe fails at once and the run stops
    assert server.series_asked() < 20, server.series_asked()
    _nothing_logged(tmp_path)


def test_no_commit_waits_less_than_the_probe(server_factory, tmp_path):
    # the series answer at once and every series is due for a commit; the probe answers 404 after 0.6 s
    server = server_factory(probe_status=404, probe_delay=0.6)
    with pytest.raises(HarvestError, match="does not answer as a DICOMweb service"):
        harvest(PAIRS[:10], tmp_path, server.url, workers=2, rate=None, policy=ONE, progress=False,
                flush_instances=1, flush_seconds=0)
    assert server.series_asked() >= 1
    _nothing_logged(tmp_path)


def test_a_slow_probe_that_passes_holds_nothing_back(server_factory, tmp_path):
    server = server_factory(probe_delay=0.3)
    result = harvest(PAIRS[:10], tmp_path, server.url, workers=2, rate=None, policy=ONE, progress=False,
                     flush_instances=1, flush_seconds=0)
    assert result.by_status == {"ok": 10} and result.instances == 10
    log = HarvestStore(tmp_path).read_log().to_pylist()
    assert sorted(r["SeriesInstanceUID"] for r in log) == sorted(s for _, s in PAIRS[:10])
    assert server.asked.count("/dicom-web/studies") == 1


@pytest.mark.parametrize("workers", [1, 4])
def test_the_probe_takes_no_workers_place(server_factory, tmp_path, workers):
    """A cohort of exactly as many series as workers is one round of requests, not two: the probe answers only
    once every worker has a series request in flight beside it (it ran on a worker's thread once, and such a
    cohort took two round trips)."""
    server = server_factory(gate=workers)
    result = harvest(PAIRS[:workers], tmp_path, server.url, workers=workers, rate=None, policy=ONE, progress=False)
    assert result.by_status == {"ok": workers}
    assert server.probe_saw_all is True, "the probe was answered before every worker had a series in flight"
