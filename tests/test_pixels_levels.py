"""Thumbnails and open_slide on the other kinds of slide image: OVERVIEW instances and TILED_SPARSE levels.

Against a real Orthanc: (A) a TILED_FULL pyramid with an OVERVIEW instance of a different image and
no THUMBNAIL: the thumbnail is made from the OVERVIEW; (B) the same
with a THUMBNAIL too: the THUMBNAIL wins; (C) a one-level TILED_SPARSE image whose frames are stored
out of row order, each placed by its PlanePositionSlideSequence (OrthancWSIDicomizer 1.1 writes one
level in row order and without DimensionOrganizationType, so the file is made with pydicom from the
TILED_FULL writer's): the thumbnail is composed from the frames' own positions and matches the source
scaled down. A region read through open_slide should equal the source: it does not yet (xfail below).
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from cohort import Cohort, custom
from cohort.coverage import route
from cohort.pixels import RoutedClient, fetch_thumbnails, open_slide
from tests.support.data import _sm_instance
from tests.support.slides import _common, slide_image, sm_slide

pytestmark = pytest.mark.orthanc
SIZE = 96
TILE = 128


def mean_abs_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).mean())


def scaled(image: np.ndarray, size: int) -> np.ndarray:
    """The source image scaled to fit ``size`` (from the full-resolution source, not from the code's tiles)."""
    h, w = image.shape[:2]
    scale = min(1, size / max(w, h))
    return np.asarray(Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS))


def overview_file(folder, image: np.ndarray, study: str, series: str):
    """A single-frame OVERVIEW instance of ``image`` in the slide's series (as a scanner's macro photo)."""
    ds = _sm_instance(image, max(image.shape[:2]), 9, _common(study, series, "SLIDE-TEST", 40), 0.05)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OVERVIEW", "NONE"]
    path = folder / series / "overview.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def sparse_file(folder, image: np.ndarray, study: str, series: str, seed: int = 5):
    """A TILED_SPARSE instance of ``image``: its tiles in a shuffled order, each with its position."""
    spacing = 0.00025
    ds = _sm_instance(image, TILE, 0, _common(study, series, "SLIDE-TEST", 40), spacing)
    n, across = int(ds.NumberOfFrames), -(-image.shape[1] // TILE)
    order = np.random.default_rng(seed).permutation(n)
    ds.PixelData = np.frombuffer(ds.PixelData, np.uint8).reshape(n, TILE, TILE, 3)[order].tobytes()
    ds.DimensionOrganizationType = "TILED_SPARSE"
    groups = []
    for k in order:
        column, row = TILE * (int(k) % across), TILE * (int(k) // across)
        position = Dataset()
        position.ColumnPositionInTotalImagePixelMatrix, position.RowPositionInTotalImagePixelMatrix = column + 1, row + 1
        position.XOffsetInSlideCoordinateSystem = 20.0 + column * spacing
        position.YOffsetInSlideCoordinateSystem = 40.0 + row * spacing
        position.ZOffsetInSlideCoordinateSystem = 0.0
        group = Dataset()
        group.PlanePositionSlideSequence = [position]
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = groups
    path = folder / series / "sparse.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def slides(orthanc_factory, catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("levels")
    rows = catalog.sql("SELECT StudyInstanceUID, SeriesInstanceUID FROM index WHERE Modality = 'SM' "
                       "ORDER BY SeriesInstanceUID LIMIT 3 OFFSET 40").to_pylist()
    (study_a, a), (study_b, b), (study_c, c) = [(r["StudyInstanceUID"], r["SeriesInstanceUID"]) for r in rows]
    images = {a: slide_image(11, 512, 384), b: slide_image(12, 512, 384), c: slide_image(13, 640, 448)}
    overviews = {a: slide_image(21, 300, 120), b: slide_image(22, 300, 120)}
    files = sm_slide(out, images[a], study_a, a) + [overview_file(out, overviews[a], study_a, a)]
    files += sm_slide(out, images[b], study_b, b, thumbnail=SIZE) + [overview_file(out, overviews[b], study_b, b)]
    sparse = [sparse_file(out, images[c], study_c, c)]
    files += sparse
    server = orthanc_factory()
    server.upload_many(files)
    client = RoutedClient(route(Cohort.from_uids([a, b, c], catalog=catalog), custom(server.dicomweb_url)), rate=None)
    return client, (a, b, c), images, overviews, sparse


def test_sparse_level_is_really_out_of_row_order(slides):
    *_, sparse = slides
    (path,) = sparse
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.DimensionOrganizationType == "TILED_SPARSE" and ds.NumberOfFrames == 20
    positions = [(int(f.PlanePositionSlideSequence[0].ColumnPositionInTotalImagePixelMatrix),
                  int(f.PlanePositionSlideSequence[0].RowPositionInTotalImagePixelMatrix))
                 for f in ds.PerFrameFunctionalGroupsSequence]
    row_order = [(1 + TILE * (n % 5), 1 + TILE * (n // 5)) for n in range(20)]
    assert sorted(positions) == sorted(row_order) and positions != row_order


def test_thumbnails_from_overview_thumbnail_and_sparse_levels(slides, tmp_path):
    client, (a, b, c), images, overviews, _ = slides
    thumbs = {t.series_uid: t for t in fetch_thumbnails(client, [a, b, c], cache_dir=tmp_path, size=SIZE)}
    assert {uid: (t.kind, t.error) for uid, t in thumbs.items()} == {
        a: ("OVERVIEW", None), b: ("THUMBNAIL", None), c: ("VOLUME", None)}
    assert mean_abs_diff(thumbs[a].image().convert("RGB"), scaled(overviews[a], SIZE)) < 4
    assert mean_abs_diff(thumbs[a].image().convert("RGB"), scaled(images[a][:120, :300], SIZE)) > 15
    assert mean_abs_diff(thumbs[b].image().convert("RGB"), scaled(images[b], SIZE)) < 4
    assert mean_abs_diff(thumbs[c].image().convert("RGB"), scaled(images[c], SIZE)) < 4
    assert thumbs[c].fetched == 20


@pytest.mark.xfail(strict=True, reason="wsidicom 0.36 asks for JPEG baseline frames of uncompressed RGB slides, "
                   "Orthanc transcodes them, and wsidicom returns their YCbCr values as RGB (~40 off); asking it for "
                   "the stored syntax fails in its raw decoder (TypeError, a list for bytes). From disk the same "
                   "files read exactly. README Limitations.")
def test_open_slide_reads_a_sparse_region(slides):
    client, (_, _, c), images, _, _ = slides
    with open_slide(client, c) as slide:
        region = np.asarray(slide.read_region((100, 70), 0, (400, 300)).convert("RGB"))
        assert mean_abs_diff(region, images[c][70:370, 100:500]) < 1  # uncompressed

