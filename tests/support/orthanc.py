"""A real Orthanc DICOMweb server on loopback for tests and benchmarks.

Usage::

    from tests.support.orthanc import Orthanc, require_orthanc

    require_orthanc()                              # skips (fails on CI) without Orthanc
    with Orthanc() as server:                      # or Orthanc(users={"alice": "secret"})
        server.upload_many(paths)
        client = DICOMwebClient(server.dicomweb_url)

``Orthanc`` writes a JSON config into a temp dir (free HTTP port, remote access refused,
no DICOM port, storage in the temp dir, the DICOMweb plugin under ``/dicom-web/``),
starts ``/usr/sbin/Orthanc`` and waits until QIDO answers. It stops with SIGTERM (then
SIGKILL) and removes the temp dir. Orthanc 1.10 listens on all interfaces but refuses
non-local clients; this module only ever connects to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
SKIP_REASON = "Orthanc not installed: run tests/install-orthanc.sh"
HOST = "127.0.0.1"


def find_orthanc() -> Path | None:
    """The Orthanc binary when it and its DICOMweb plugin are installed, else None."""
    binary = shutil.which("Orthanc") or (str(ORTHANC) if ORTHANC.is_file() else None)
    if binary is None or not DICOMWEB_PLUGIN.is_file():
        return None
    return Path(binary)


def require_orthanc() -> None:
    """Skip the calling test when Orthanc is not installed; on CI (``CI`` set) that is a failure instead."""
    import pytest  # noqa: PLC0415 - the server itself is also used by the benchmarks, without pytest

    if find_orthanc() is None:
        if os.environ.get("CI"):
            pytest.fail(SKIP_REASON)
        pytest.skip(SKIP_REASON)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class OrthancError(RuntimeError):
    """Orthanc did not start, or refused an upload; the message quotes its log."""


class Orthanc:
    """One Orthanc process in its own temp dir. Context manager; also ``start()``/``stop()``.

    ``users`` turns on HTTP basic authentication with these ``{user: password}`` pairs.
    ``url`` is the REST root (``http://127.0.0.1:<port>``), ``dicomweb_url`` the DICOMweb root.
    """

    def __init__(self, users: dict[str, str] | None = None, startup_timeout: float = 20.0,
                 stop_timeout: float = 10.0) -> None:
        self.users = dict(users or {})
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port: int | None = None
        self.name = f"idc-cohort-tests-{uuid.uuid4().hex[:12]}"
        self.dir: Path | None = None
        self.process: subprocess.Popen | None = None
        #: What ``load`` put in (``tests.support.data.SeriesRecord``), and (path, reason) it skipped.
        self.series: list = []
        self.skipped: list[tuple[Path, str]] = []
        self.session = requests.Session()
        if self.users:
            self.session.auth = next(iter(self.users.items()))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        path = self.dir / "orthanc.log" if self.dir else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> Orthanc:
        binary = find_orthanc()
        if binary is None:
            raise OrthancError(SKIP_REASON)
        self.dir = Path(tempfile.mkdtemp(prefix="orthanc-"))
        try:
            for _ in range(5):  # a busy port makes Orthanc exit at once: try another
                self.port = free_port()
                if self._launch(binary):
                    return self
            raise OrthancError(f"Orthanc did not start after 5 ports; log:\n{self.log[-3000:]}")
        except BaseException:
            self.stop()
            raise

    def _launch(self, binary: Path) -> bool:
        config = self.dir / "config.json"
        config.write_text(json.dumps(self._config(), indent=2))
        with open(self.dir / "orthanc.log", "ab") as log:
            self.process = subprocess.Popen([str(binary), str(config)], stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.dir, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            try:  # ours (not another server on a port taken meanwhile), and DICOMweb answers
                system = self.session.get(f"{self.url}/system", timeout=0.5)
                if system.ok and system.json().get("Name") == self.name and \
                        self.session.get(f"{self.dicomweb_url}/studies", timeout=5).status_code == 200:
                    return True
            except (requests.RequestException, ValueError):  # not up yet, or another program holds the port
                pass
            time.sleep(0.05)
        self._terminate()
        raise OrthancError(f"Orthanc did not answer within {self.startup_timeout} s; log:\n{self.log[-3000:]}")

    def _config(self) -> dict:
        config = {
            "Name": self.name,
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "DicomServerEnabled": False,
            "StorageDirectory": str(self.dir / "storage"),
            "IndexDirectory": str(self.dir / "storage"),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"{HOST}:{self.port}"},
            "AuthenticationEnabled": bool(self.users),
            "HttpCompressionEnabled": False,
        }
        if self.users:
            config["RegisteredUsers"] = self.users
        return config

    def _terminate(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def stop(self) -> None:
        self._terminate()
        self.session.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- data -------------------------------------------------------------------------
    def upload(self, data: str | os.PathLike | bytes, session: requests.Session | None = None) -> dict:
        """POST one Part-10 file (path or bytes) to ``/instances``; Orthanc's answer
        (``{"ID", "Status": "Success" | "AlreadyStored", ...}``). Raises OrthancError when refused."""
        body = data if isinstance(data, bytes) else Path(data).read_bytes()
        response = (session or self.session).post(f"{self.url}/instances", data=body, timeout=60,
                                                  headers={"Content-Type": "application/dicom"})
        if response.status_code != 200:
            name = "<bytes>" if isinstance(data, bytes) else str(data)
            raise OrthancError(f"Orthanc refused {name}: HTTP {response.status_code} {response.text[:300]}")
        return response.json()

    def upload_many(self, paths: Iterable[str | os.PathLike], threads: int = 4,
                    errors: str = "raise") -> list[dict | OrthancError]:
        """Upload many files (a few threads, one requests Session each); answers in input order.

        ``errors="return"`` puts the OrthancError of a refused file in its place instead of raising.
        """
        paths = list(paths)

        def run(chunk):
            with requests.Session() as s:
                s.auth = self.session.auth
                out = []
                for path in chunk:
                    try:
                        out.append(self.upload(path, s))
                    except OrthancError as e:
                        if errors != "return":
                            raise
                        out.append(e)
                return out

        threads = max(1, min(threads, len(paths) // 8))
        chunks = [paths[i::threads] for i in range(threads)]
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(run, chunks))
        answers = [None] * len(paths)
        for i, chunk_answers in enumerate(results):
            answers[i::threads] = chunk_answers
        return answers

    def load(self, records: Iterable) -> list:
        """Upload ``SeriesRecord``s (``tests.support.data.load``); adds to ``series``/``skipped``; returns the loaded."""
        from .data import load

        result = load(self, records)
        self.series += result.series
        self.skipped += result.skipped
        return result.series

    def series_uids(self) -> set[str]:
        """SeriesInstanceUIDs the server holds (via QIDO, paged)."""
        uids, offset = set(), 0
        while True:
            page = self.session.get(f"{self.dicomweb_url}/series", params={"limit": 1000, "offset": offset},
                                    headers={"Accept": "application/dicom+json"}, timeout=60)
            page.raise_for_status()
            items = page.json()
            uids |= {item["0020000E"]["Value"][0] for item in items}
            if len(items) < 1000:
                return uids
            offset += len(items)
