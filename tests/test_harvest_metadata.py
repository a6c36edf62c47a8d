"""DICOM JSON → typed rows on real DICOM JSON written by others (../shared/realdata, see its PROVENANCE.md).

Sources: dicom-microscopy-viewer test data (MIT; nested BulkDataURIs), dicomweb-client
data (MIT; US values as strings), EZ-WSI-DICOMweb test data (Apache-2.0; partial tag
sets, AT without Value, concatenations).
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from cohort.harvest import INSTANCE_SCHEMA, MalformedMetadata, instance_row, parse_body
from cohort.harvest.metadata import ROW_SCHEMA
from cohort.harvest.stream import split_body


def _load(realdata, rel):
    return json.loads((realdata / rel).read_text())


def test_microscopy_viewer_wrapper_nested_bulkdata(realdata):
    """CPTAC slide C3N-01016-22: 5 SM instances; values from PROVENANCE.md."""
    images = _load(realdata, "dicom-microscopy-viewer/C3N-01016-22.json")["images"]
    rows = [instance_row(i) for i in images]
    assert {r["SeriesInstanceUID"] for r in rows} == {"1.3.6.1.4.1.5962.99.1.2447135355.1068687300.1625944806011.2.0"}
    assert sorted(r["NumberOfFrames"] for r in rows) == [1, 1, 169, 2450, 39200]
    assert max(r["TotalPixelMatrixColumns"] for r in rows) == 47807
    assert max(r["TotalPixelMatrixRows"] for r in rows) == 47007
    assert sorted(r["ImageType"][2] for r in rows) == ["OVERVIEW", "THUMBNAIL", "VOLUME", "VOLUME", "VOLUME"]
    base = next(r for r in rows if r["NumberOfFrames"] == 39200)
    # PixelSpacing comes from SharedFunctionalGroupsSequence > PixelMeasuresSequence
    assert base["PixelSpacing"] == pytest.approx([0.0004942, 0.0004942])
    assert base["PrimaryAnatomicStructure"] == "SCT:39607008"
    assert base["ObjectiveLensPower"] == 20.0
    assert base["OpticalPathIdentifier"] == ["1"]
    assert base["Manufacturer"] == "Leica Biosystems"
    # the nested BulkDataURI (ICC profile) is noted, kept as it was, and never followed
    assert any("BulkDataURI is a JSON dict (nested)" in issue for issue in base["issues"])
    assert json.loads(base["json"]) == next(i for i in images if i["00080018"]["Value"][0] == base["SOPInstanceUID"])


def test_microscopy_viewer_every_file_parses_into_the_schema(realdata):
    rows = []
    for path in sorted((realdata / "dicom-microscopy-viewer").glob("*.json")):
        data = json.loads(path.read_text())
        data = {"images": data} if isinstance(data, list) else data
        for key in ("images", "segmentations", "maps", "annotations"):
            for item in data.get(key, []):
                for instance in item if isinstance(item, list) else [item]:
                    rows.append(instance_row(instance))
    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    assert table.num_rows == 7 + 9 + 5 + 1  # per PROVENANCE.md: C3N 5 SM + SEG + map, HTA9 9, TCGA 4 + ANN, synthetic 1
    assert table.column("SOPInstanceUID").null_count == 0
    htan = [r for r in rows if r["SeriesInstanceUID"] and r["OpticalPathIdentifier"]
            and r["OpticalPathIdentifier"][0] in ("0", "1", "3") and r["PatientID"] == "HTA9_1_BA_L"]
    assert {r["OpticalPathIdentifier"][0] for r in htan} == {"0", "1", "3"}


def test_dicomweb_client_numbers_as_strings(realdata):
    instances = parse_body((realdata / "dicomweb-client/retrieve_instance_metadata.json").read_bytes())
    row = instance_row(instances[0])
    assert (row["Rows"], row["Columns"], row["SamplesPerPixel"], row["BitsAllocated"]) == (10, 10, 3, 8)
    assert "00280010: US value sent as string" in row["issues"]
    assert row["Modality"] == "SM"


def test_ez_wsi_partial_tags_uids_from_the_request(realdata):
    item = _load(realdata, "ez-wsi-dicomweb/sample_instances.json")["test_data"][0]
    parts = item["path"].split("/")
    study, series = parts[parts.index("studies") + 1], parts[parts.index("series") + 1]
    row = instance_row(item["dicom_tags"], study, series)
    assert (row["StudyInstanceUID"], row["SeriesInstanceUID"]) == (study, series)
    assert "SeriesInstanceUID missing: taken from the request URL" in row["issues"]
    assert row["TotalPixelMatrixColumns"] == 98816
    assert row["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert row["Modality"] is None


def test_ez_wsi_concatenation(realdata):
    data = _load(realdata, "ez-wsi-dicomweb/concatenation_instance_test.json")
    instances = [d["dicom_tags"] if "dicom_tags" in d else d for d in data.get("test_data", data)] \
        if isinstance(data, dict) else data
    rows = [instance_row(i, "1.2.3", "1.2.3.4") for i in instances]
    assert len({r["ConcatenationUID"] for r in rows}) == 1
    assert sorted(r["InConcatenationNumber"] for r in rows) == [1, 2]


def test_missing_value_and_odd_values_are_noted_not_fatal():
    instance = {
        "00080018": {"vr": "UI", "Value": ["1.2.3.4.5"]},
        "00280009": {"vr": "AT"},
        "00280010": {"vr": "US"},
        "00280011": {"vr": "US", "Value": ["abc"]},
        "00280008": {"vr": "IS", "Value": ["12"]},
        "00080008": {"vr": "CS", "Value": ["ORIGINAL", None, "VOLUME"]},
        "00080060": "SM",
        "7FE00010": {"BulkDataURI": "http://x/bulk"},
    }
    row = instance_row(instance, "1.2", "1.2.3")
    assert row["Rows"] is None and row["Columns"] is None and row["Modality"] is None
    assert row["NumberOfFrames"] == 12
    assert row["ImageType"] == ["ORIGINAL", None, "VOLUME"]
    issues = "\n".join(row["issues"])
    assert "00280010 Rows: present without Value" in issues
    assert "cannot read 'abc'" in issues
    assert "00080060 Modality: element is a JSON str" in issues
    assert "7FE00010: no vr" in issues
    pa.Table.from_pylist([{**row, "endpoint": "e", "run_id": "r", "harvested_at": None}], schema=INSTANCE_SCHEMA)


@pytest.mark.parametrize("body, message", [
    (b'[{"00080018": {"vr": "UI", "Value": ["1.2"]}}, {"0008', "truncated body"),
    (b"<html>busy</html>", "invalid JSON"),
    (b'{"a": 1}', None),
    (b'"text"', "expected a JSON array"),
    (b"[1, 2]", "item 0 of the array is a JSON int"),
    (b'[{"00080018": {"vr": "UI", "Value": ["1.2"]}} {}]', "invalid JSON"),
    (b'[{"00080018": {"vr": "UI", "Value": ["1.2"]}}] x', "extra text after the JSON array"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_malformed_bodies(body, message):
    if message is None:  # a lone object is accepted as one instance, but has no SOPInstanceUID
        with pytest.raises(MalformedMetadata, match="no SOPInstanceUID"):
            instance_row(parse_body(body)[0])
        return
    with pytest.raises(MalformedMetadata, match=message):
        parse_body(body)


def test_split_body_keeps_each_instance_text_as_sent():
    body = '[\n {"00080018": {"vr": "UI", "Value": ["1.2"]}} ,\n\t{"00080018" : {"vr":"UI","Value":["1.3"]}}\n]\n'
    split = split_body(body.encode())
    assert [text for _, text in split] == ['{"00080018": {"vr": "UI", "Value": ["1.2"]}}',
                                           '{"00080018" : {"vr":"UI","Value":["1.3"]}}']
    assert instance_row(*split[1][:1], text=split[1][1])["json"] == split[1][1]


def test_empty_bodies():
    assert parse_body(b"") == [] and parse_body(b"[]") == [] and parse_body(" \n") == []
