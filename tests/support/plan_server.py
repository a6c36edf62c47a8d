"""A DICOMweb server on 127.0.0.1 that answers from a deterministic plan (a thread of the test process),
and DICOM JSON bodies made by pydicom from its own test files (CT_small.dcm, MR_small.dcm).

The server answers each path below its root from a plan (the 1st, 2nd, ... request of a path get the 1st,
2nd, ... answer; the last repeats). A "gate" holds an answer until the harvest directory holds a given number
of commits, so that when a run commits is observable without timing.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pydicom
from pydicom.data import get_testdata_file

from cohort.harvest import HarvestStore
from cohort.retry import RetryPolicy

#: Retries at once: the plans decide what each attempt gets.
NOW_RETRY = RetryPolicy(timeout=10, max_attempts=2, backoff_base=0, backoff_max=0, jitter=0, retry_after_max=0)
ONCE = RetryPolicy(timeout=10, max_attempts=1)
#: How long the test server holds an answer for a condition at most (a gate that opens late fails its test). Long:
#: under mutmut on a loaded machine a fork can be starved for seconds.
HOLD = 20


def dicom_json(ds) -> dict:
    return ds.to_json_dict(bulk_data_threshold=256, bulk_data_element_handler=lambda _: "http://127.0.0.1:9/bulk")


CT = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
MR = pydicom.dcmread(get_testdata_file("MR_small.dcm"))


@functools.cache
def instance_json(name: str) -> str:
    return json.dumps(dicom_json(CT if name == "CT" else MR))


def instance(name: str = "CT", series: str | None = None, sop: str | None = None, number: int | None = None) -> dict:
    """The DICOM JSON of CT_small.dcm or MR_small.dcm as pydicom writes it, with other UIDs if given."""
    instance = json.loads(instance_json(name))
    for tag, value in (("0020000E", series), ("00080018", sop), ("00200013", number)):
        if value is not None:
            instance[tag]["Value"] = [value]
    return instance


def sop(instance: dict) -> str:
    return instance["00080018"]["Value"][0]


def body(instances) -> bytes:
    return json.dumps(instances).encode()


def ct_series(series: str, n: int) -> list[dict]:
    """A series of n copies of CT_small.dcm, numbered 1..n, with SOPInstanceUIDs SERIES.1 .. SERIES.n."""
    return [instance("CT", series, f"{series}.{i + 1}", i + 1) for i in range(n)]


STUDY = CT.StudyInstanceUID


class PlanServer:
    """DICOMweb on 127.0.0.1: ``plan`` maps a path below the root to answers for its 1st, 2nd, ... request.

    An answer is ``(status, body)``, ``(status, body, headers)``, ``("cut", body, n[, status])`` (Content-Length of
    the whole body, n bytes sent, connection closed), ``("reset",)`` (the connection closed without an answer), ``("slow", seconds, answer)``, ``("gate", commits, answer)``
    (held until the harvest directory ``gate_dir`` holds that many commit records, at most HOLD s) or
    ``("event", threading.Event, answer)`` (held until the test sets the event, at most HOLD s) or
    ``("until", condition, answer)`` (held until ``condition()`` is true, at most HOLD s). ``/studies`` (the
    probe) answers ``[]`` unless the plan says otherwise.
    """

    def __init__(self, plan: dict[str, list], gate_dir: Path | None = None) -> None:
        self.plan, self.gate_dir = plan, gate_dir
        self.requests: list[tuple[str, list[tuple[str, str]], str | None]] = []
        self.count: dict[str, int] = {}
        self.gates_timed_out = 0
        self.echo: str | None = None  # a header whose value replaces "{echo}" in the bodies sent
        self.echoed: str | None = None
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if server.echo:  # the configured header's value in the body: the server leaks what it was sent
                    server.echoed = self.headers.get(server.echo)
                parts = urlsplit(self.path)
                path = parts.path.removeprefix("/dicom-web")
                with server.lock:
                    server.requests.append((path, parse_qsl(parts.query), self.headers.get("Accept")))
                    n = server.count[path] = server.count.get(path, 0) + 1
                if path == "/studies" and path not in server.plan:  # the probe passes unless planned
                    return self._send(200, b"[]", {})
                answers = server.plan.get(path, [(404, b"")])
                self._answer(answers[min(n, len(answers)) - 1])

            def _answer(self, answer):
                if answer[0] == "slow":
                    time.sleep(answer[1])
                    return self._answer(answer[2])
                if answer[0] == "until":  # held until the test's condition holds (at most HOLD s)
                    deadline = time.monotonic() + HOLD
                    while not answer[1]():
                        if time.monotonic() > deadline:
                            server.gates_timed_out += 1
                            break
                        time.sleep(0.01)
                    return self._answer(answer[2])
                if answer[0] == "event":  # held until the test sets the event (at most HOLD s)
                    if not answer[1].wait(HOLD):
                        server.gates_timed_out += 1
                    return self._answer(answer[2])
                if answer[0] == "gate":
                    deadline = time.monotonic() + HOLD
                    while len(list((server.gate_dir / "commits").glob("*.json"))) < answer[1]:
                        if time.monotonic() > deadline:
                            server.gates_timed_out += 1
                            break
                        time.sleep(0.01)
                    return self._answer(answer[2])
                if answer[0] == "reset":  # no answer at all: the connection is closed
                    self.close_connection = True
                    return
                if answer[0] == "cut":  # ("cut", body, n) or ("cut", body, n, status)
                    body = answer[1]
                    self.send_response(answer[3] if len(answer) > 3 else 200)
                    self.send_header("Content-Type", "application/dicom+json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:answer[2]])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                body = answer[1].replace(b"{echo}", (server.echoed or "").encode()) if server.echo else answer[1]
                self._send(answer[0], body, answer[2] if len(answer) > 2 else {})

            def _send(self, status, body, headers):
                self.send_response(status)
                self.send_header("Content-Type", "application/dicom+json")
                for k, v in headers.items():
                    self.send_header(k, v)
                if status != 204:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if status != 204:
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def paths(self) -> list[str]:
        """The paths asked for, in order (the probe's ``/studies`` among them)."""
        return [path for path, _, _ in self.requests]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/dicom-web"

    def series_path(self, series: str, study: str = STUDY) -> str:
        return f"/studies/{study}/series/{series}/metadata"

    def __enter__(self) -> PlanServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def log_rows(out) -> dict[str, dict]:
    return {r["SeriesInstanceUID"]: r for r in HarvestStore(out).read_log().to_pylist()}
