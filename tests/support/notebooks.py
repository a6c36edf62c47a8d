"""A local stand-in for IDC that the example notebooks run against (tests and ``notebooks/render.py --local``).

The real IDC endpoints are not reachable from the project's machines, so the notebooks' tagged
``parameters`` cell (whose defaults are what a user would use: IDC itself) is overridden with:

* ``index_dir``: the sm_index/seg_index fixtures (real UIDs, made-up values; tests/fixtures/README.md);
* ``dicomweb_url``/``archive_url``: one real Orthanc on 127.0.0.1 holding
  - a generated slide (``tests.support.slides.sm_slide``, a known image per series) under the real
    UIDs of every Pancreas series of the sm_index fixture, half of them with a THUMBNAIL instance;
  - small CT series (pydicom's CT_small, no pixels) under the real UIDs of cmb_aml's CT series.

``local_idc(tmp_dir, catalog)`` is a context manager yielding a :class:`LocalIDC`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ORGAN = "Pancreas"
COLLECTION, MODALITY = "cmb_aml", "CT"
CT_INSTANCES = 3


@dataclass
class LocalIDC:
    """What the notebooks get pointed at, and what was put there (for the tests' own counts)."""

    index_dir: Path
    dicomweb_url: str
    server: object
    #: SeriesInstanceUID -> the source image of its slide (level 0)
    slides: dict[str, np.ndarray] = field(default_factory=dict)
    #: SeriesInstanceUID of each CT series loaded, with its instance count
    ct_series: dict[str, int] = field(default_factory=dict)

    @property
    def parameters(self) -> dict[str, object]:
        """Values for the notebooks' parameters cells (each notebook takes the ones it defines)."""
        return {"index_dir": str(self.index_dir), "dicomweb_url": self.dicomweb_url,
                "archive_url": self.dicomweb_url}


@contextlib.contextmanager
def local_idc(tmp_dir: Path, catalog) -> Iterator[LocalIDC]:
    """Start and load the stand-in (needs Orthanc: see tests/install-orthanc.sh); stop it on exit."""
    from fixtures.index_tables import write_fixture_tables

    from .data import bulk_series, load, records_from_files
    from .orthanc import Orthanc
    from .slides import slide_image, sm_slide

    tmp_dir = Path(tmp_dir)
    index_dir = write_fixture_tables(tmp_dir / "index_dir", catalog)
    slides = _slide_rows(index_dir)
    ct = catalog.sql("SELECT StudyInstanceUID, SeriesInstanceUID FROM index WHERE collection_id = $c AND Modality = $m "
                     "ORDER BY SeriesInstanceUID", {"c": COLLECTION, "m": MODALITY}).to_pylist()
    files: list[Path] = []
    images = {}
    for n, row in enumerate(slides):
        uid = row["SeriesInstanceUID"]
        images[uid] = slide_image(n)
        files += sm_slide(tmp_dir / "slides", images[uid], row["StudyInstanceUID"], uid, levels=2,
                          thumbnail=96 if n % 2 == 0 else None, patient=row["PatientID"],
                          objective_power=int(row["ObjectiveLensPower"] or 20))
    records = records_from_files(files, "notebook-slides") + bulk_series(
        len(ct), CT_INSTANCES, tmp_dir / "ct", uids=[(r["StudyInstanceUID"], r["SeriesInstanceUID"]) for r in ct],
        with_pixels=False)
    with Orthanc() as server:
        result = load(server, records)
        if result.skipped:
            raise RuntimeError(f"Orthanc refused test files: {result.skipped[:3]}")
        yield LocalIDC(index_dir, server.dicomweb_url, server, images,
                       {r.SeriesInstanceUID: r.n_instances for r in result.series if r.Modality == MODALITY})


def _slide_rows(index_dir: Path) -> list[dict]:
    """The fixture's sm_index rows of ORGAN, with study and patient from the index."""
    from cohort import Catalog

    fixture = Catalog(index_dir=index_dir, download=False)
    return fixture.sql(
        "SELECT i.StudyInstanceUID, s.SeriesInstanceUID, i.PatientID, s.ObjectiveLensPower "
        "FROM sm_index s JOIN index i USING (SeriesInstanceUID) "
        "WHERE lower(s.primaryAnatomicStructure_CodeMeaning) = lower($organ) ORDER BY s.SeriesInstanceUID",
        {"organ": ORGAN}).to_pylist()
