"""Shared fixtures. Real things only: the installed index, a real Orthanc, real files."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cohort import Catalog

REPO = Path(__file__).resolve().parent.parent
#: Real DICOM files and DICOM JSON written by others (see its PROVENANCE.md); absent in a user's clone.
REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """A catalog over the installed idc-index-data; optional tables are never downloaded."""
    return Catalog(download=False)


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory, catalog) -> Path:
    """A directory with fixture sm_index/seg_index Parquet (real UIDs, made-up values; tests/fixtures/README.md)."""
    from fixtures.index_tables import write_fixture_tables

    return write_fixture_tables(tmp_path_factory.mktemp("index_dir"), catalog)


@pytest.fixture(scope="session")
def fixture_catalog(index_dir, tmp_path_factory) -> Catalog:
    """A catalog whose optional tables sm_index and seg_index are the fixtures (never downloaded)."""
    return Catalog(index_dir=index_dir, cache_dir=tmp_path_factory.mktemp("cache"), download=False)


#: Skips that CI allows: the cassette re-recorder runs only when asked to.
CI_ALLOWED_SKIPS = ("COHORT_RECORD_CASSETTES",)


def require_realdata() -> Path:
    """../shared/realdata, or a skip saying where it was looked for; on CI (``CI`` set) a failure instead."""
    if not REALDATA.is_dir():
        reason = f"../shared/realdata not found at {REALDATA} (only present on the project's machines)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the tests that read it")
        pytest.skip(reason)
    return REALDATA


@pytest.fixture(scope="session")
def realdata() -> Path:
    return require_realdata()


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line at the end naming every reason tests were skipped, so no skip goes unseen."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if r.when in ("setup", "call")]
    if not skipped:
        return
    reasons = Counter(_skip_reason(r) for r in skipped)
    terminalreporter.write_line(
        f"{len(skipped)} skipped: " + "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common()),
        yellow=True, bold=True)


def pytest_sessionfinish(session, exitstatus):
    """On CI, a skip other than the cassette re-recorder fails the run (a required thing was missing)."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    bad = [r for r in reporter.stats.get("skipped", [])
           if not any(allowed in _skip_reason(r) for allowed in CI_ALLOWED_SKIPS)]
    if bad and session.exitstatus == 0:
        reporter.ensure_newline()
        reporter.write_line(f"CI: {len(bad)} test(s) skipped that must run on CI, e.g. {bad[0].nodeid}: "
                            f"{_skip_reason(bad[0])}", red=True, bold=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """One Orthanc for the session, loaded with generated data and (when present) ../shared/realdata.

    ``.url`` (REST root), ``.dicomweb_url``, ``.series`` (``tests.support.data.SeriesRecord``: UIDs,
    Modality, n_instances, paths, sop_instance_uids, source), ``.skipped`` ((path, reason) not loaded).
    """
    from tests.support import data
    from tests.support.orthanc import Orthanc, require_orthanc

    require_orthanc()

    out = tmp_path_factory.mktemp("orthanc_data")
    records = data.wsi_series(out) + data.sm_series(out) + data.ct_mr_series(out)
    if REALDATA.is_dir() or os.environ.get("CI"):
        records += data.realdata_series(require_realdata())
    with Orthanc() as server:
        server.load(records)
        yield server


@pytest.fixture(scope="module")
def orthanc_factory():
    """``orthanc_factory(users=None)`` starts an empty Orthanc (basic auth when ``users`` is given);
    every server it started stops at the end of the module (module scope so module fixtures can use it)."""
    from tests.support.orthanc import Orthanc, require_orthanc

    require_orthanc()

    servers = []

    def start(users: dict[str, str] | None = None) -> Orthanc:
        server = Orthanc(users=users).start()
        servers.append(server)
        return server

    yield start
    with ThreadPoolExecutor() as pool:  # each takes ~2.5 s to stop: stop them together
        list(pool.map(lambda server: server.stop(), servers))
