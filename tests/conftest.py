"""Shared fixtures. Real things only: the installed index, a real Orthanc, real files."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"../shared/realdata not found at {REALDATA} (only present on the project's machines)")
    return REALDATA
