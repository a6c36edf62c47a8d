"""Real DICOM test data, written by real tools at test time.

Each generator writes Part-10 files into ``out_dir`` and returns ``list[SeriesRecord]``:
what was written (Study/Series/SOP UIDs, Modality, file paths), for tests to compare.

* ``wsi_series(out_dir)``: a 3-level JPEG WSI pyramid from ``OrthancWSIDicomizer``.
* ``sm_series(out_dir)``: an SM pyramid (3 TILED_FULL instances) with a specimen description
  built by highdicom (pancreas; formalin, paraffin, H&E) and a brightfield optical path.
* ``ct_mr_series(out_dir)``: pydicom's CT_small/MR_small rewritten into series with new UIDs.
* ``bulk_series(n_series, instances_per_series, out_dir, uids=None)``: many small CT series
  quickly (for benchmarks and resume tests); ``uids`` gives real IDC (study, series) UIDs.
* ``realdata_series(realdata_dir)``: the Part-10 files of ``../shared/realdata``, grouped by series.
* ``load(server, records)``: upload records into an ``Orthanc``; returns what it holds and
  what it refused or already had (``LoadResult``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, VLWholeSlideMicroscopyImageStorage, generate_uid

DICOMIZER = "OrthancWSIDicomizer"


@dataclass(frozen=True)
class SeriesRecord:
    """One series as written to disk: its UIDs, Modality, files and SOPInstanceUIDs (same order)."""

    StudyInstanceUID: str
    SeriesInstanceUID: str
    Modality: str
    paths: tuple[Path, ...]
    sop_instance_uids: tuple[str, ...]
    source: str = ""  # which generator (or realdata folder) made it

    @property
    def n_instances(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class LoadResult:
    """What ``load`` put into a server: the series it holds, and (path, reason) for files it skipped."""

    series: list[SeriesRecord]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def records_from_files(paths: Iterable[Path], source: str = "") -> list[SeriesRecord]:
    """Group Part-10 files by series (read with pydicom, header only)."""
    groups: dict[str, list] = {}
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        groups.setdefault(ds.SeriesInstanceUID, []).append((path, ds))
    return [
        SeriesRecord(items[0][1].StudyInstanceUID, uid, str(items[0][1].Modality),
                     tuple(Path(p) for p, _ in items), tuple(str(ds.SOPInstanceUID) for _, ds in items), source)
        for uid, items in groups.items()
    ]


# -- OrthancWSIDicomizer ------------------------------------------------------------
def wsi_series(out_dir: Path, width: int = 1024, height: int = 768, tile: int = 256) -> list[SeriesRecord]:
    """A JPEG pyramid (levels down to one tile) of a gradient+noise image, via OrthancWSIDicomizer."""
    from PIL import Image

    out_dir = Path(out_dir)
    folder = out_dir / "wsi"
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(0).integers(0, 256, (height, width))
    rgb = np.stack([x * 255 // width, y * 255 // height, noise], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(out_dir / "wsi.jpg", quality=90)
    dataset = {
        "PatientID": "WSI-DICOMIZER-1", "PatientName": "Dicomizer^Test", "StudyID": "WSI1",
        "StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid(), "SeriesNumber": "1",
        "SeriesDescription": "OrthancWSIDicomizer pyramid", "ImageType": "DERIVED\\PRIMARY\\VOLUME\\NONE",
        "Manufacturer": "idc-cohort tests", "ContainerIdentifier": "WSI-SLIDE-1",
    }
    (out_dir / "wsi.json").write_text(json.dumps(dataset))
    binary = shutil.which(DICOMIZER)
    if binary is None:
        raise FileNotFoundError(f"{DICOMIZER} not found: run tests/install-orthanc.sh")
    subprocess.run([binary, "--pyramid=1", "--compression=jpeg", f"--tile-width={tile}", f"--tile-height={tile}",
                    "--max-size=0", f"--dataset={out_dir / 'wsi.json'}", f"--folder={folder}",
                    str(out_dir / "wsi.jpg")], check=True, capture_output=True, timeout=120)
    return records_from_files(sorted(folder.glob("*.dcm")), "OrthancWSIDicomizer")


# -- SM with highdicom specimen content ------------------------------------------------
def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def specimen_description(specimen_id: str = "SPECIMEN-1") -> Dataset:
    """Pancreas tissue, fixed in formalin, embedded in paraffin, stained with H&E (highdicom TID 8001)."""
    import highdicom as hd
    from pydicom.sr.coding import Code

    steps = [
        hd.SpecimenPreparationStep(specimen_id, hd.SpecimenCollection(codes.SCT.Excision)),
        hd.SpecimenPreparationStep(specimen_id, hd.SpecimenProcessing(codes.SCT.SpecimenProcessing),
                                   fixative=codes.SCT.Formalin, embedding_medium=codes.SCT.ParaffinWax),
        hd.SpecimenPreparationStep(specimen_id, hd.SpecimenStaining([
            Code("12710003", "SCT", "hematoxylin stain"), Code("36879007", "SCT", "water soluble eosin stain")])),
    ]
    return hd.SpecimenDescription(
        specimen_id=specimen_id, specimen_uid=generate_uid(), specimen_preparation_steps=steps,
        primary_anatomic_structures=[codes.SCT.Pancreas], specimen_type=codes.SCT.TissueSection)


def optical_path(identifier: str = "1", objective_power: int = 20) -> Dataset:
    """A brightfield, full-spectrum optical path."""
    path = Dataset()
    path.OpticalPathIdentifier = identifier
    path.OpticalPathDescription = "Brightfield"
    path.IlluminationTypeCodeSequence = [_code("111744", "DCM", "Brightfield illumination")]
    path.IlluminationColorCodeSequence = [_code("414298005", "SCT", "Full Spectrum")]
    path.ObjectiveLensPower = objective_power
    return path


def _sm_instance(pixels: np.ndarray, tile: int, level: int, common: dict, spacing_mm: float) -> Dataset:
    rows, cols = pixels.shape[:2]
    tiles_down, tiles_across = -(-rows // tile), -(-cols // tile)
    padded = np.zeros((tiles_down * tile, tiles_across * tile, 3), np.uint8)
    padded[:rows, :cols] = pixels
    frames = padded.reshape(tiles_down, tile, tiles_across, tile, 3).swapaxes(1, 2).reshape(-1, tile, tile, 3)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = VLWholeSlideMicroscopyImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword, value in common.items():
        setattr(ds, keyword, value)
    ds.SOPClassUID = VLWholeSlideMicroscopyImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = level + 1
    ds.ImageType = ["ORIGINAL" if level == 0 else "DERIVED", "PRIMARY", "VOLUME", "NONE" if level == 0 else "RESAMPLED"]
    ds.Rows = ds.Columns = tile
    ds.NumberOfFrames = len(frames)
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = cols, rows
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.ImagedVolumeWidth, ds.ImagedVolumeHeight, ds.ImagedVolumeDepth = cols * spacing_mm, rows * spacing_mm, 0.004
    measures = Dataset()
    measures.PixelSpacing = [spacing_mm, spacing_mm]
    measures.SliceThickness = 0.004
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.TotalPixelMatrixOriginSequence = [Dataset()]
    ds.TotalPixelMatrixOriginSequence[0].XOffsetInSlideCoordinateSystem = 20.0
    ds.TotalPixelMatrixOriginSequence[0].YOffsetInSlideCoordinateSystem = 40.0
    ds.PixelData = frames.tobytes()
    return ds


def sm_series(out_dir: Path, width: int = 512, height: int = 384, levels: int = 3, tile: int = 128,
              objective_power: int = 40) -> list[SeriesRecord]:
    """One SM series: a ``levels``-level TILED_FULL pyramid (one instance per level, RGB, uncompressed)."""
    folder = Path(out_dir) / "sm"
    folder.mkdir(parents=True, exist_ok=True)
    common = {
        "PatientID": "SM-HIGHDICOM-1", "PatientName": "Highdicom^Test", "PatientBirthDate": "", "PatientSex": "",
        "StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid(), "FrameOfReferenceUID": generate_uid(),
        "StudyID": "SM1", "StudyDate": "20240101", "StudyTime": "120000", "AccessionNumber": "",
        "ReferringPhysicianName": "", "Modality": "SM", "SeriesNumber": 1, "SeriesDescription": "highdicom specimen SM",
        "Manufacturer": "idc-cohort tests", "ContainerIdentifier": "SLIDE-1", "SpecimenLabelInImage": "NO",
        "BurnedInAnnotation": "NO", "FocusMethod": "AUTO", "ExtendedDepthOfField": "NO", "VolumetricProperties": "VOLUME",
        "AcquisitionDateTime": "20240101120000", "ContentDate": "20240101", "ContentTime": "120000",
        "LossyImageCompression": "00", "PositionReferenceIndicator": "SLIDE_CORNER",
        "IssuerOfTheContainerIdentifierSequence": [], "ContainerTypeCodeSequence": [_code("433466003", "SCT",
                                                                                           "Microscope slide")],
        "AcquisitionContextSequence": [], "SpecimenDescriptionSequence": [specimen_description()],
        "OpticalPathSequence": [optical_path(objective_power=objective_power)], "NumberOfOpticalPaths": 1,
    }
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x ^ y) & 0xFF], axis=-1).astype(np.uint8)
    paths = []
    for level in range(levels):
        step = 2 ** level
        ds = _sm_instance(image[::step, ::step], tile, level, common, 0.00025 * step)
        path = folder / f"level{level}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return records_from_files(paths, "highdicom-sm")


# -- pydicom test files ------------------------------------------------------------------
def _rewrite(template: Dataset, out: Path, study: str, series: str, patient_id: str, number: int) -> str:
    template.StudyInstanceUID, template.SeriesInstanceUID = study, series
    template.PatientID, template.InstanceNumber = patient_id, number
    template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    template.save_as(out)
    return template.SOPInstanceUID


def ct_mr_series(out_dir: Path, series_per_file: int = 2, instances_per_series: int = 3,
                 names: Sequence[str] = ("CT_small.dcm", "MR_small.dcm")) -> list[SeriesRecord]:
    """pydicom's small CT/MR files rewritten into new series (new Study/Series/SOP UIDs)."""
    from pydicom.data import get_testdata_file

    folder = Path(out_dir) / "ct_mr"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for name in names:
        template = pydicom.dcmread(get_testdata_file(name))
        for s in range(series_per_file):
            study, series, patient = generate_uid(), generate_uid(), f"PYDICOM-{Path(name).stem}-{s}"
            paths, sops = [], []
            for n in range(instances_per_series):
                path = folder / f"{Path(name).stem}_{s}_{n}.dcm"
                sops.append(_rewrite(template, path, study, series, patient, n + 1))
                paths.append(path)
            records.append(SeriesRecord(study, series, str(template.Modality), tuple(paths), tuple(sops),
                                        f"pydicom:{name}"))
    return records


class _Copies:
    """Part-10 copies of one dataset that differ only in the ``VARYING`` elements.

    The rest is encoded once; each copy encodes only its file meta and the varying elements,
    giving the same bytes as ``Dataset.save_as`` about 3x faster (a test compares the two).
    """

    VARYING = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "InstanceNumber", "SOPInstanceUID")

    def __init__(self, ds: Dataset) -> None:
        from pydicom.datadict import dictionary_VR, tag_for_keyword
        from pydicom.filewriter import write_dataset

        self.ds = ds
        self.encodings = ds._character_set
        #: (tag, keyword, VR) of the varying elements, in tag order
        self.varying = sorted((tag_for_keyword(k), k, dictionary_VR(k)) for k in self.VARYING)
        tags = [tag for tag, _, _ in self.varying]
        groups = [Dataset() for _ in range(len(tags) + 1)]
        for elem in ds:
            if elem.tag not in tags:
                groups[sum(elem.tag > t for t in tags)].add(elem)
        self.chunks = []
        for group in groups:
            fp = self._io()
            write_dataset(fp, group, self.encodings)
            self.chunks.append(fp.getvalue())

    @staticmethod
    def _io():
        from pydicom.filebase import DicomBytesIO

        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        return fp

    def write(self, path: Path, **values) -> None:
        from pydicom.dataelem import DataElement
        from pydicom.filewriter import write_data_element, write_file_meta_info

        fp = self._io()
        fp.write(self.ds.preamble or b"\0" * 128)
        fp.write(b"DICM")
        file_meta = FileMetaDataset(self.ds.file_meta)
        file_meta.MediaStorageSOPInstanceUID = values["SOPInstanceUID"]
        write_file_meta_info(fp, file_meta, enforce_standard=True)
        fp.write(self.chunks[0])
        for (tag, keyword, vr), chunk in zip(self.varying, self.chunks[1:]):
            write_data_element(fp, DataElement(tag, vr, values[keyword]), self.encodings)
            fp.write(chunk)
        Path(path).write_bytes(fp.getvalue())


def bulk_series(n_series: int, instances_per_series: int, out_dir: Path,
                uids: Sequence[tuple[str, str]] | None = None, template: str = "CT_small.dcm",
                with_pixels: bool = True) -> list[SeriesRecord]:
    """Many small series quickly: ``template`` (a pydicom test file) saved with new UIDs.

    ``uids``: (StudyInstanceUID, SeriesInstanceUID) pairs to use instead of new ones (e.g. real IDC
    series from the index); then ``n_series`` must equal ``len(uids)``. ``with_pixels=False`` drops
    PixelData (40 KB -> 6 KB a file) for benchmarks that only read metadata.
    """
    from pydicom.data import get_testdata_file

    if uids is not None and len(uids) != n_series:
        raise ValueError(f"bulk_series: n_series={n_series} but {len(uids)} uids were given")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(get_testdata_file(template))
    if not with_pixels:
        del ds.PixelData
    copies = _Copies(ds)
    records = []
    patients: dict[str, str] = {}  # one patient a study, as in real data (Orthanc splits a study of two patients)
    for s in range(n_series):
        study, series = uids[s] if uids is not None else (generate_uid(), generate_uid())
        patient = patients.setdefault(study, f"BULK-{len(patients):05d}")
        paths, sops = [], []
        for n in range(instances_per_series):
            path = folder / f"s{s:05d}_i{n:04d}.dcm"
            sops.append(generate_uid())
            copies.write(path, PatientID=patient, StudyInstanceUID=study, SeriesInstanceUID=series,
                         InstanceNumber=n + 1, SOPInstanceUID=sops[-1])
            paths.append(path)
        records.append(SeriesRecord(study, series, str(ds.Modality), tuple(paths), tuple(sops), "bulk"))
    return records


# -- ../shared/realdata -------------------------------------------------------------------
def realdata_series(realdata_dir: Path) -> list[SeriesRecord]:
    """The Part-10 files under ``realdata_dir`` (see its PROVENANCE.md), grouped by series."""
    paths = sorted(p for p in Path(realdata_dir).rglob("*.dcm") if pydicom.misc.is_dicom(p))
    return [replace(r, source="realdata") for r in records_from_files(paths)]


# -- loading ----------------------------------------------------------------------------
def load(server, records: Iterable[SeriesRecord], threads: int = 4) -> LoadResult:
    """Upload every file of ``records`` into ``server`` (an ``Orthanc``).

    Files Orthanc refuses, or already holds (same SOPInstanceUID as an earlier file), are
    left out of the returned records and listed in ``skipped`` with the reason.
    """
    from .orthanc import OrthancError

    records = list(records)
    files = [p for r in records for p in r.paths]
    answers = dict(zip(files, server.upload_many(files, threads=threads, errors="return")))
    kept, skipped = [], []
    for r in records:
        keep = []
        for path, sop in zip(r.paths, r.sop_instance_uids):
            answer = answers[path]
            if isinstance(answer, OrthancError):
                skipped.append((path, str(answer)))
            elif answer.get("Status") != "Success":
                skipped.append((path, f"Orthanc answered {answer.get('Status')} (SOPInstanceUID {sop})"))
            else:
                keep.append((path, sop))
        if keep:
            kept.append(replace(r, paths=tuple(p for p, _ in keep), sop_instance_uids=tuple(s for _, s in keep)))
    return LoadResult(kept, skipped)
