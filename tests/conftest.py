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
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"../shared/realdata not found at {REALDATA} (only present on the project's machines)")
    return REALDATA
