"""A real S3-compatible server on loopback for tests: moto in server mode, in its own process.

Usage::

    from tests.support.s3 import MotoS3, require_moto

    require_moto()                         # skips (fails on CI) without moto[server] and s3fs
    with MotoS3() as s3:                   # a free 127.0.0.1 port, stopped by its PID at the end
        s3.make_bucket("harvest")
        env = s3.environment()             # AWS_ENDPOINT_URL_S3 and dummy credentials, for botocore
        fs = s3.filesystem()               # an s3fs filesystem talking to it

The server is ``python -m moto.server`` (what s3fs's own test suite runs); the
library finds it the way it finds any S3 endpoint, through botocore's
environment (``AWS_ENDPOINT_URL_S3``), never through a command-line option.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from .orthanc import HOST, free_port

SKIP_REASON = "moto[server] and s3fs are not installed: pip install -e '.[test,s3]'"
#: Credentials moto accepts (any). Tests that check redaction plant their own.
DUMMY = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def moto_installed() -> bool:
    try:
        import moto.server  # noqa: F401, PLC0415
        import s3fs  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def require_moto() -> None:
    """Skip the calling test without moto[server] and s3fs; on CI (``CI`` set) that is a failure instead."""
    import pytest  # noqa: PLC0415

    if not moto_installed():
        if os.environ.get("CI"):
            pytest.fail(SKIP_REASON)
        pytest.skip(SKIP_REASON)


class MotoS3:
    """One moto server process. Context manager; also ``start()``/``stop()``."""

    def __init__(self, startup_timeout: float = 30.0) -> None:
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def environment(self, **extra: str) -> dict[str, str]:
        """What botocore needs to reach this server: the endpoint and (dummy) credentials."""
        return {**DUMMY, "AWS_ENDPOINT_URL_S3": self.url, "AWS_ENDPOINT_URL": self.url, **extra}

    def start(self) -> MotoS3:
        self._log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False)  # noqa: SIM115
        for _ in range(5):
            self.port = free_port()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **DUMMY}, start_new_session=True,
            )
            if self._wait():
                return self
            self._kill()
        raise RuntimeError(f"moto server did not start; log:\n{self.log[-3000:]}")

    def _wait(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if requests.get(f"{self.url}/moto-api/", timeout=2).status_code < 500:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.2)
        return False

    @property
    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace") if self._log else ""

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API)."""
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def filesystem(self):
        """A fresh s3fs filesystem on this server (no instance cache shared with the code under test)."""
        import s3fs  # noqa: PLC0415

        return s3fs.S3FileSystem(key=DUMMY["AWS_ACCESS_KEY_ID"], secret=DUMMY["AWS_SECRET_ACCESS_KEY"],
                                 client_kwargs={"endpoint_url": self.url, "region_name": "us-east-1"},
                                 skip_instance_cache=True)

    def make_bucket(self, name: str) -> str:
        """Create a bucket (a plain CreateBucket request; moto does not check signatures)."""
        requests.put(f"{self.url}/{name}", timeout=10).raise_for_status()
        return name

    def _kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)  # by its PID: only the process this object started
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        self._kill()
        if self._log is not None:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
            self._log = None

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
