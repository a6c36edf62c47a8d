"""Test data for archives: a harvest directory written from DICOM files, and SM/PT series to load.

* ``write_harvest(out_dir, paths)``: a real harvest directory (HarvestStore parts, one log row per
  series) holding the DICOM JSON of the given Part-10 files, as pydicom writes it.
* ``sm_organ_series(records, out_dir, organ)``: a copy of an SM series (``data.sm_series``) with new
  UIDs whose specimen comes from another organ, with other stains and fixative.
* ``pt_series(out_dir)``: a PET series made from pydicom's CT_small (PET class, units, radiopharmaceutical).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from .data import SeriesRecord, records_from_files


def dataset_json(ds: Dataset) -> dict:
    return ds.to_json_dict(bulk_data_threshold=4096, bulk_data_element_handler=lambda e: "http://127.0.0.1/bulk")


def write_harvest(out_dir: Path, paths: Iterable[Path], run: str = "t1", extra: Sequence[dict] = ()) -> Path:
    """A harvest directory holding the instances of ``paths`` (plus ``extra`` DICOM JSON instances)."""
    from cohort.harvest.metadata import instance_row
    from cohort.harvest.store import INSTANCE_SCHEMA, LOG_SCHEMA, HarvestStore

    now = dt.datetime.now(dt.timezone.utc)
    instances = [dataset_json(pydicom.dcmread(p, stop_before_pixels=True)) for p in paths] + list(extra)
    rows, series = [], {}
    for inst in instances:
        study, uid = inst["0020000D"]["Value"][0], inst["0020000E"]["Value"][0]
        row = instance_row(inst, study, uid)
        row.update(endpoint="test", run_id=run, harvested_at=now)
        rows.append(row)
        series[uid] = study
    logs = [dict(StudyInstanceUID=study, SeriesInstanceUID=uid, status="ok", http_status=200, attempts=1,
                 instances=1, bytes=1, seconds=0.0, endpoint="test",
                 url=f"http://127.0.0.1:9/dicom-web/studies/{study}/series/{uid}/metadata", error=None, run_id=run,
                 finished_at=now) for uid, study in series.items()]
    with HarvestStore(out_dir).open() as store:
        store.write(pa.Table.from_pylist(rows, schema=INSTANCE_SCHEMA), pa.Table.from_pylist(logs, schema=LOG_SCHEMA))
    return Path(out_dir)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


ORGANS = {"Lung": ("39607008", "SCT"), "Pancreas": ("15776009", "SCT"), "Liver": ("10200004", "SCT")}


def sm_organ_series(record: SeriesRecord, out_dir: Path, organ: str, objective_power: int = 20) -> SeriesRecord:
    """A copy of SM series ``record`` (new UIDs) whose specimen is from ``organ``, fixed in
    neutral buffered formalin, stained with hematoxylin only, at ``objective_power``."""
    folder = Path(out_dir) / f"sm_{organ.lower()}"
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i, path in enumerate(record.paths):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID = f"SM-{organ.upper()}-1"
        ds.ContainerIdentifier = f"SLIDE-{organ.upper()}"
        specimen = ds.SpecimenDescriptionSequence[0]
        value, scheme = ORGANS[organ]
        specimen.PrimaryAnatomicStructureSequence = [_code(value, scheme, organ)]
        for step in specimen.SpecimenPreparationSequence:
            for item in step.SpecimenPreparationStepContentItemSequence:
                name = item.ConceptNameCodeSequence[0]
                if (name.CodingSchemeDesignator, name.CodeValue) == ("SCT", "430864009"):
                    item.ConceptCodeSequence = [_code("434162003", "SCT", "Neutral Buffered Formalin")]
                if (name.CodingSchemeDesignator, name.CodeValue) == ("SCT", "424361007") \
                        and item.ConceptCodeSequence[0].CodeValue != "12710003":
                    item.ConceptCodeSequence = [_code("12710003", "SCT", "hematoxylin stain")]
        ds.OpticalPathSequence[0].ObjectiveLensPower = objective_power
        out = folder / f"level{i}.dcm"
        ds.save_as(out, enforce_file_format=True)
        paths.append(out)
    return records_from_files(paths, f"sm-{organ}")[0]


def pt_series(out_dir: Path, instances: int = 2) -> SeriesRecord:
    """A PET series from pydicom's CT_small: PET class and modality, Units, SeriesType, a radiopharmaceutical."""
    from pydicom.data import get_testdata_file

    folder = Path(out_dir) / "pt"
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(instances):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.128"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.PatientID = study, series, "PT", "PT-1"
        ds.InstanceNumber = i + 1
        ds.Units, ds.DecayCorrection, ds.SeriesType = "BQML", "START", ["WHOLE BODY", "IMAGE"]
        ds.CorrectedImage = ["DECY", "ATTN"]
        ds.ActualFrameDuration = 120000 + 60000 * i
        ds.NumberOfSlices = instances
        info = Dataset()
        info.Radiopharmaceutical = "Fluorodeoxyglucose"
        info.RadionuclideTotalDose = 370000000.0
        info.RadiopharmaceuticalStartTime = "093000.50"
        info.RadionuclideCodeSequence = [_code("C-111A1", "SRT", "^18^Fluorine")]
        ds.RadiopharmaceuticalInformationSequence = [info]
        out = folder / f"pt{i}.dcm"
        ds.save_as(out)
        paths.append(out)
    return records_from_files(paths, "pt")[0]
