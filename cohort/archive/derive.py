"""idc-index tables derived from ``dicom_metadata``: the shipped BigQuery SQL, ported to DuckDB.

Each table's SQL is a file in ``sql/`` that follows idc-index-data's file of
the same name line by line (its header lists the dialect changes), reading a
``dicom_all`` view: ``dicom_metadata`` plus the columns only IDC knows, as
NULL, and the user's collection label (:func:`dicom_all_sql`). The result is
cast to exactly the columns and types of idc-index-data's ``*_schema.json``
(REPEATED -> a list), so the tables are interchangeable with IDC's.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

#: Table name (as idc-index calls it) -> the idc-index-data file stem of its SQL and schema.
DERIVED = {
    "index": "idc_index",
    "sm_index": "sm_index",
    "sm_instance_index": "sm_instance_index",
    "ct_index": "ct_index",
    "mr_index": "mr_index",
    "pt_index": "pt_index",
}

_BQ_TYPES = {"STRING": "VARCHAR", "FLOAT": "DOUBLE", "FLOAT64": "DOUBLE", "INTEGER": "BIGINT", "INT64": "BIGINT",
             "BOOLEAN": "BOOLEAN", "BOOL": "BOOLEAN", "DATE": "DATE", "TIMESTAMP": "TIMESTAMP"}

#: Columns of IDC's dicom_all that DICOM does not carry: NULL in an archive (collection_id is the user's label).
IDC_ONLY = {
    "analysis_result_id": "VARCHAR", "source_DOI": "VARCHAR", "license_short_name": "VARCHAR",
    "aws_bucket": "VARCHAR", "crdc_series_uuid": "VARCHAR", "crdc_instance_uuid": "VARCHAR",
    "series_aws_url": "VARCHAR", "instance_size": "BIGINT",
}

#: Attribute paths (keywords) the derived SQL reads: dicom_metadata always has them, NULL where absent,
#: so every table derives from any archive, e.g. one without slides.
REQUIRED = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality", "PatientID", "PatientAge",
    "PatientSex", "StudyDate", "StudyDescription", "BodyPartExamined", "TransferSyntaxUID",
    "PhotometricInterpretation", "PixelRepresentation", "Manufacturer", "ManufacturerModelName", "SeriesDate",
    "SeriesDescription", "SeriesNumber", "ContainerIdentifier", "TotalPixelMatrixColumns", "TotalPixelMatrixRows",
    "Columns", "Rows", "PixelSpacing", "ImageType", "SliceThickness", "KVP", "ScanOptions", "ConvolutionKernel",
    "GantryDetectorTilt", "XRayTubeCurrent", "FilterType", "Exposure", "ExposureTime", "DataCollectionDiameter",
    "ReconstructionDiameter", "SpiralPitchFactor", "MagneticFieldStrength", "ScanningSequence", "SequenceVariant",
    "MRAcquisitionType", "EchoTime", "RepetitionTime", "EchoTrainLength", "FlipAngle", "PixelBandwidth",
    "ImagingFrequency", "ImagedNucleus", "InversionTime", "ReceiveCoilName", "SequenceName", "DiffusionBValue",
    "NumberOfTemporalPositions", "SeriesType", "Units", "DecayCorrection", "CorrectedImage",
    "RandomsCorrectionMethod", "ReconstructionMethod", "ActualFrameDuration", "ScatterCorrectionMethod",
    "AttenuationCorrectionMethod", "NumberOfSlices", "NumberOfTimeSlices",
    "OpticalPathSequence.ObjectiveLensPower",
    *(f"OpticalPathSequence.IlluminationTypeCodeSequence.{c}" for c in ("CodingSchemeDesignator", "CodeValue", "CodeMeaning")),
    "SharedFunctionalGroupsSequence.PixelMeasuresSequence.PixelSpacing",
    *(f"SpecimenDescriptionSequence.PrimaryAnatomicStructureSequence.{c}"
      for c in ("CodingSchemeDesignator", "CodeValue", "CodeMeaning")),
    *(f"SpecimenDescriptionSequence.PrimaryAnatomicStructureSequence.PrimaryAnatomicStructureModifierSequence.{c}"
      for c in ("CodingSchemeDesignator", "CodeValue", "CodeMeaning")),
    *(f"SpecimenDescriptionSequence.SpecimenPreparationSequence.SpecimenPreparationStepContentItemSequence.{s}.{c}"
      for s in ("ConceptNameCodeSequence", "ConceptCodeSequence")
      for c in ("CodingSchemeDesignator", "CodeValue", "CodeMeaning")),
    *(f"AdmittingDiagnosesCodeSequence.{c}" for c in ("CodingSchemeDesignator", "CodeValue", "CodeMeaning")),
    "RadiopharmaceuticalInformationSequence.RadionuclideCodeSequence.CodeMeaning",
    "RadiopharmaceuticalInformationSequence.RadionuclideTotalDose",
    "RadiopharmaceuticalInformationSequence.RadiopharmaceuticalStartTime",
    "RadiopharmaceuticalInformationSequence.Radiopharmaceutical",
)


def required_structure() -> dict:
    """:data:`REQUIRED` as a tag tree in the shape :func:`.dicom_metadata.attributes` reads."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tree: dict = {}
    for path in REQUIRED:
        node = tree
        keywords = path.split(".")
        for depth, keyword in enumerate(keywords):
            number = tag_for_keyword(keyword)
            tag = f"{number:08X}"
            element = node.setdefault(tag, {})
            if dictionary_VR(number) == "SQ" and depth < len(keywords) - 1:
                node = element.setdefault("Value", [{}])[0]
            elif dictionary_VR(number) != "SQ":
                element.setdefault("Value", ["VARCHAR"])
    return tree


@lru_cache(maxsize=None)
def schema(name: str) -> list[dict]:
    """idc-index-data's column list (name, type, mode) of the table ``name``."""
    import idc_index_data

    path = Path(idc_index_data.__file__).parent / f"{DERIVED[name]}_schema.json"
    return json.loads(path.read_text())["columns"]


def duckdb_type(column: dict) -> str:
    base = _BQ_TYPES[column["type"].upper()]
    return base + "[]" if column.get("mode", "").upper() == "REPEATED" else base


def ported_sql(name: str) -> str:
    """The DuckDB port of idc-index-data's SQL for table ``name``, as shipped in ``sql/``."""
    return (Path(__file__).parent / "sql" / f"{name}.sql").read_text(encoding="utf-8")


def derived_sql(name: str) -> str:
    """:func:`ported_sql` cast to exactly the columns and types of idc-index-data's schema."""
    columns = ", ".join(f'CAST("{c["name"]}" AS {duckdb_type(c)}) AS "{c["name"]}"' for c in schema(name))
    body = ported_sql(name).rstrip().rstrip(";")
    return f"SELECT {columns} FROM (\n{body}\n)"


def dicom_all_sql(dicom_metadata: str, collection_id: str | None) -> str:
    """The ``dicom_all`` the ported SQL reads: ``dicom_metadata`` with IDC's own columns (NULL) and the label."""
    from .._text import sql_literal

    label = "NULL::VARCHAR" if collection_id is None else sql_literal(collection_id)
    extra = ", ".join([f"{label} AS collection_id"] + [f"NULL::{t} AS {c}" for c, t in IDC_ONLY.items()])
    return f"SELECT *, {extra} FROM {dicom_metadata}"


#: IDC's auxiliary_metadata (release versions of each series): empty in an archive.
AUXILIARY_SQL = ("SELECT NULL::VARCHAR AS SeriesInstanceUID, NULL::BIGINT AS series_init_idc_version, "
                 "NULL::BIGINT AS series_revised_idc_version WHERE false")
