"""Headless Chromium (Debian's ``chromium``, installed by tests/install-browser.sh) for page checks.

``screenshot(html_path, png_path, width, height)`` renders a local page at device scale 1 in a
fresh profile, with networking features off, and returns the screenshot's path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SKIP_REASON = "chromium not installed: run tests/install-browser.sh"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--run-all-compositor-stages-before-draw")


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """The browser's path; skips the test without it (fails on CI, where it must be installed)."""
    import pytest

    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(SKIP_REASON)
        pytest.skip(SKIP_REASON)
    return binary


def screenshot(html_path: Path, png_path: Path, width: int, height: int, timeout: float = 90) -> Path:
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError(SKIP_REASON)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        # (a window narrower than ~300 px renders nothing in headless mode: keep pages wider)
        run = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                              f"--screenshot={png_path}", Path(html_path).resolve().as_uri()],
                             capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if run.returncode != 0 or not Path(png_path).exists():
        raise RuntimeError(f"chromium failed ({run.returncode}): {run.stderr[-2000:]}")
    return Path(png_path)
