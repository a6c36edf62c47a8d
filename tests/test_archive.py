"""Archives: dicom_metadata and the derived idc-index tables, checked against pydicom reads of the same files.

Expected values are computed here from the DICOM files with pydicom, following the
rules of idc-index-data's SQL, not with the code under test. The harvest directories
are real HarvestStore parts holding the files' DICOM JSON (tests/support/archive.py);
test_archive_orthanc.py does the same through a real Orthanc.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pydicom
import pytest

from cohort import Catalog
from cohort.archive import build_archive
from cohort.archive.catalog import open_archive
from cohort.archive.derive import DERIVED, duckdb_type, schema
from tests.support import data
from tests.support.archive import pt_series, sm_organ_series, write_harvest

EMBEDDING, FIXATIVE, STAIN = ("SCT", "430863003"), ("SCT", "430864009"), ("SCT", "424361007")


@pytest.fixture(scope="module")
def files(tmp_path_factory, realdata) -> dict[str, list[Path]]:
    """Part-10 files by kind: generated SM (two organs), CT/MR, PT, and the realdata SM/CT files."""
    out = tmp_path_factory.mktemp("archive_files")
    sm = data.sm_series(out)
    lung = sm_organ_series(sm[0], out, "Lung", objective_power=20)
    ct_mr = data.ct_mr_series(out, series_per_file=1, instances_per_series=2)
    pt = pt_series(out)
    real = [p for p in sorted(realdata.rglob("*.dcm")) if pydicom.misc.is_dicom(p)]
    return {"sm": list(sm[0].paths) + list(lung.paths), "ct_mr": [p for r in ct_mr for p in r.paths],
            "pt": list(pt.paths), "real": real}


@pytest.fixture(scope="module")
def harvest_dir(tmp_path_factory, files) -> Path:
    paths = [p for kind in files.values() for p in kind]
    return write_harvest(tmp_path_factory.mktemp("harvest"), paths)


@pytest.fixture(scope="module")
def archive(harvest_dir):
    return build_archive(harvest_dir, "my_lab")


@pytest.fixture(scope="module")
def con(archive) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for table in ("dicom_metadata", *DERIVED):
        con.execute(f"CREATE VIEW \"{table}\" AS SELECT * FROM read_parquet('{archive.path(table)}')")
    return con


def datasets(files: dict[str, list[Path]]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for kind in files.values() for p in kind]


def by_series(dss) -> dict[str, list]:
    groups = defaultdict(list)
    for ds in dss:
        groups[ds.SeriesInstanceUID].append(ds)
    return groups


# -- dicom_metadata -------------------------------------------------------------------------
def test_every_instance_is_a_row_with_its_uids(con, files):
    dss = datasets(files)
    got = dict(con.execute("SELECT SOPInstanceUID, SeriesInstanceUID FROM dicom_metadata").fetchall())
    assert got == {str(ds.SOPInstanceUID): str(ds.SeriesInstanceUID) for ds in dss}


def test_slice_thickness_query_of_the_issue(con, files):
    expected = sorted((float(ds.SliceThickness), [float(v) for v in ds.PixelSpacing])
                      for ds in datasets(files) if ds.Modality == "CT" and "SliceThickness" in ds)
    got = con.execute("SELECT SliceThickness, PixelSpacing FROM dicom_metadata WHERE Modality = 'CT'").fetchall()
    assert sorted((t, list(s)) for t, s in got) == expected
    assert len(expected) >= 3


def test_values_are_typed_by_vr(con, files):
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE dicom_metadata)").fetchall())
    assert types["SliceThickness"] == "DOUBLE"          # DS
    assert types["PixelSpacing"] == "DOUBLE[]"          # DS, VM 2
    assert types["Rows"] == "BIGINT"                    # US
    assert types["InstanceNumber"] == "BIGINT"          # IS
    assert types["StudyDate"] == "DATE"                 # DA
    assert types["StudyTime"] == "TIME"                 # TM
    assert types["AcquisitionDateTime"] == "TIMESTAMP"  # DT
    assert types["ImageType"] == "VARCHAR[]"            # CS, VM 2-n
    assert types["PatientName"] == "VARCHAR"            # PN: the Alphabetic group
    ct = next(ds for ds in datasets(files) if ds.Modality == "CT" and ds.PatientID == "1CT1")
    row = con.execute("SELECT StudyDate, StudyTime, PatientName, ImageType FROM dicom_metadata WHERE SOPInstanceUID = ?",
                      [str(ct.SOPInstanceUID)]).fetchone()
    assert row[0].strftime("%Y%m%d") == ct.StudyDate
    assert row[1].strftime("%H%M%S") == ct.StudyTime[:6]
    assert row[2] == str(ct.PatientName)
    assert row[3] == list(ct.ImageType)


def test_private_tags_are_columns_named_by_tag(con, files):
    ct = next(ds for ds in datasets(files) if ds.Modality == "CT" and ds.PatientID == "1CT1")
    private = [e for e in ct if e.tag.is_private and e.VR not in ("SQ", "OB", "OW", "UN") and e.value not in (None, "")]
    elem = private[0]
    column = f"x{elem.tag:08X}"
    got = con.execute(f'SELECT "{column}" FROM dicom_metadata WHERE SOPInstanceUID = ?',
                      [str(ct.SOPInstanceUID)]).fetchone()[0]
    values = elem.value if elem.VM > 1 else [elem.value]
    assert [str(v).strip() for v in got] == [str(v).strip() for v in values]


def test_sequences_to_any_depth_from_duckdb_pandas_polars(archive, files):
    import polars as pl

    expected = {}
    for ds in datasets(files):
        if ds.get("SpecimenDescriptionSequence") \
                and ds.SpecimenDescriptionSequence[0].get("PrimaryAnatomicStructureSequence"):
            expected[str(ds.SOPInstanceUID)] = str(ds.SpecimenDescriptionSequence[0].PrimaryAnatomicStructureSequence[0].CodeMeaning)
    path = str(archive.path("dicom_metadata"))
    sql = (f"SELECT SOPInstanceUID, SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].CodeMeaning AS organ "
           f"FROM read_parquet('{path}')")
    got = {k: v for k, v in duckdb.sql(sql).fetchall() if v is not None}
    assert got == expected and {"Pancreas", "Lung"} <= set(got.values())
    frame = pq.read_table(path, columns=["SOPInstanceUID", "SpecimenDescriptionSequence"]).to_pandas()
    from_pandas = {r.SOPInstanceUID: r.SpecimenDescriptionSequence[0]["PrimaryAnatomicStructureSequence"][0]["CodeMeaning"]
                   for r in frame.itertuples() if len(r.SpecimenDescriptionSequence)
                   and len(r.SpecimenDescriptionSequence[0]["PrimaryAnatomicStructureSequence"])}
    assert from_pandas == expected
    lf = pl.scan_parquet(path).filter(pl.col("SpecimenDescriptionSequence").list.len() > 0).select(
        "SOPInstanceUID",
        pl.col("SpecimenDescriptionSequence").list.get(0).struct.field("PrimaryAnatomicStructureSequence")
        .list.get(0, null_on_oob=True).struct.field("CodeMeaning").alias("organ"))
    assert {k: v for k, v in lf.collect().iter_rows() if v is not None} == expected


def test_absent_values_null_and_absent_lists_empty(con, files):
    row = con.execute("SELECT SliceThickness, PixelSpacing, OpticalPathSequence FROM dicom_metadata "
                      "WHERE Modality = 'MR' LIMIT 1").fetchone()
    mr = next(ds for ds in datasets(files) if ds.Modality == "MR")
    assert "OpticalPathSequence" not in mr and row[2] == []
    assert row[0] == float(mr.SliceThickness)


def test_bad_values_are_null_and_never_fail(tmp_path, files):
    ct = pydicom.dcmread(files["ct_mr"][0], stop_before_pixels=True)
    bad = write_harvest(tmp_path / "h", [files["ct_mr"][0]]).joinpath()
    inst = json.loads(json.dumps(ct.to_json_dict()))
    inst["00080018"]["Value"] = ["2.25.1"]
    inst["00180050"] = {"vr": "DS", "Value": ["abc"]}            # not a number
    inst["00080020"] = {"vr": "DA", "Value": ["20241399"]}       # not a date
    inst["00280010"] = {"vr": "US", "Value": ["12"]}             # a number as a string (seen in real servers)
    inst["00091099"] = {"vr": "LO", "Value": [{"odd": "object"}]}  # a private tag holding an object
    write_harvest(tmp_path / "h", [], run="t2", extra=[inst])
    built = build_archive(bad, "x")
    row = duckdb.sql(f"SELECT SliceThickness, StudyDate, \"Rows\" FROM read_parquet('{built.path('dicom_metadata')}') "
                     "WHERE SOPInstanceUID = '2.25.1'").fetchone()
    assert row == (None, None, 12)


def test_schema_is_unified_across_runs(tmp_path, files):
    harvest = write_harvest(tmp_path / "h", files["ct_mr"][:1])
    first = pq.read_schema(build_archive(harvest, "x").path("dicom_metadata"))
    assert "OpticalPathSequence" in first.names  # required by the derived tables, typed by the dictionary
    write_harvest(harvest, files["sm"][:1], run="t2")
    second = pq.read_schema(build_archive(harvest, "x").path("dicom_metadata"))
    assert set(first.names) < set(second.names)  # the slide's attributes added columns
    for name in first.names:  # and the types of the first run only widened (sequences gained fields)
        assert _widens(first.field(name).type, second.field(name).type), name
    assert first.field("SliceThickness").type == second.field("SliceThickness").type


def _widens(old, new) -> bool:
    import pyarrow as pa

    if pa.types.is_list(old) and pa.types.is_list(new):
        return _widens(old.value_type, new.value_type)
    if pa.types.is_struct(old) and pa.types.is_struct(new):
        fields = {f.name: f.type for f in new}
        return all(f.name in fields and _widens(f.type, fields[f.name]) for f in old)
    return old == new


def test_rebuilt_only_when_the_harvest_changes(tmp_path, files):
    harvest = write_harvest(tmp_path / "h", files["ct_mr"][:1])
    assert build_archive(harvest, "x").built
    assert not build_archive(harvest, "x").built
    assert build_archive(harvest, "y").built  # another collection label
    write_harvest(harvest, files["pt"], run="t2")
    assert build_archive(harvest, "y").built


# -- derived tables ----------------------------------------------------------------------------
@pytest.mark.parametrize("table", list(DERIVED))
def test_derived_tables_have_exactly_idc_index_data_columns_and_types(archive, table):
    got = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{archive.path(table)}')").fetchall()
    assert [(name, kind) for name, kind, *_ in got] == [(c["name"], duckdb_type(c)) for c in schema(table)]


def _code_str(item) -> str:
    return f"{item.CodingSchemeDesignator}:{item.CodeValue}"


def _two_sf(x: float) -> float:
    return 0.0 if x == 0 else round(x, 1 - int(math.floor(math.log10(abs(x)))))


def expected_sm_index(dss) -> dict[str, dict]:
    """sm_index rows computed from pydicom Datasets by the rules of idc-index-data's sm_index.sql."""
    out = {}
    for uid, group in by_series([d for d in dss if d.Modality == "SM"]).items():
        spacing = [float(d.PixelSpacing[0]) for d in group if "PixelSpacing" in d]
        fg = [float(d.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0]) for d in group
              if "SharedFunctionalGroupsSequence" in d and "PixelMeasuresSequence" in d.SharedFunctionalGroupsSequence[0]]
        spacing = spacing or fg
        tpmc = [int(d.TotalPixelMatrixColumns) for d in group if "TotalPixelMatrixColumns" in d]
        first = group[0]
        anatomy = (first.SpecimenDescriptionSequence[0].PrimaryAnatomicStructureSequence[0]
                   if "SpecimenDescriptionSequence" in first
                   and first.SpecimenDescriptionSequence[0].get("PrimaryAnatomicStructureSequence") else None)
        prep = defaultdict(set)
        for d in group:
            for step in (d.SpecimenDescriptionSequence[0].get("SpecimenPreparationSequence", [])
                         if "SpecimenDescriptionSequence" in d else []):
                for item in step.SpecimenPreparationStepContentItemSequence:
                    for name in item.get("ConceptNameCodeSequence", []):
                        for code in item.get("ConceptCodeSequence", []):
                            key = (name.CodingSchemeDesignator, name.CodeValue)
                            prep[key].add((code.CodeMeaning, _code_str(code)))
        power = (first.OpticalPathSequence[0].get("ObjectiveLensPower") if "OpticalPathSequence" in first else None)
        out[uid] = {
            "max_TotalPixelMatrixColumns": max(tpmc) if tpmc else max(int(d.Columns) for d in group),
            "min_PixelSpacing_2sf": _two_sf(min(spacing)) if spacing else None,
            "ObjectiveLensPower": int(round(float(power))) if power is not None else None,
            "primaryAnatomicStructure_code_designator_value_str": _code_str(anatomy) if anatomy else None,
            "primaryAnatomicStructure_CodeMeaning": str(anatomy.CodeMeaning) if anatomy else None,
            "embeddingMedium_CodeMeaning": [m for m, _ in sorted(prep[EMBEDDING], key=lambda x: f"{x[0]}:{x[1]}")],
            "tissueFixative_code_designator_value_str": [c for _, c in sorted(prep[FIXATIVE], key=lambda x: f"{x[0]}:{x[1]}")],
            "staining_usingSubstance_CodeMeaning": [m for m, _ in sorted(prep[STAIN], key=lambda x: f"{x[0]}:{x[1]}")],
        }
    return out


def test_sm_index_equals_values_computed_with_pydicom(con, files):
    expected = expected_sm_index(datasets(files))
    columns = list(next(iter(expected.values())))
    rows = con.execute(f"SELECT SeriesInstanceUID, {', '.join(columns)} FROM sm_index").fetchall()
    got = {r[0]: dict(zip(columns, r[1:])) for r in rows}
    assert got.keys() == expected.keys()
    for uid in expected:
        for c in columns:
            want, have = expected[uid][c], got[uid][c]
            if isinstance(want, float):
                assert have == pytest.approx(want), (uid, c)
            else:
                assert have == want, (uid, c)
    organs = {v["primaryAnatomicStructure_CodeMeaning"] for v in expected.values()}
    assert {"Pancreas", "Lung"} <= organs


def test_sm_index_value_formats_match_idc(con):
    """As in IDC's own sm_index (../shared/realdata/idc-tutorials-notebook-outputs): code strings
    SCHEME:VALUE, lists for the preparation arrays ([] when absent), None for an absent code."""
    rows = con.execute("SELECT * FROM sm_index").df()
    lung = rows[rows.primaryAnatomicStructure_CodeMeaning == "Lung"].iloc[0]
    assert lung.primaryAnatomicStructure_code_designator_value_str == "SCT:39607008"
    assert list(lung.tissueFixative_CodeMeaning) == ["Neutral Buffered Formalin"]
    assert list(lung.tissueFixative_code_designator_value_str) == ["SCT:434162003"]
    assert list(lung.staining_usingSubstance_code_designator_value_str) == ["SCT:12710003"]
    assert lung.primaryAnatomicStructureModifier_CodeMeaning is None
    assert lung.illuminationType_code_designator_value_str == "DCM:111744"
    bare = rows[rows.embeddingMedium_CodeMeaning.map(len) == 0]
    assert len(bare) >= 1  # the CMU-1 conversions carry no specimen description: [] not None
    assert all(list(v) == [] for v in bare.staining_usingSubstance_CodeMeaning)


def test_sm_instance_index_one_row_per_sm_instance(con, files):
    dss = [d for d in datasets(files) if d.Modality == "SM"]
    got = dict(con.execute("SELECT SOPInstanceUID, TotalPixelMatrixColumns FROM sm_instance_index").fetchall())
    assert got == {str(d.SOPInstanceUID): (int(d.TotalPixelMatrixColumns) if "TotalPixelMatrixColumns" in d else None)
                   for d in dss}


def test_ct_mr_pt_index_equal_values_computed_with_pydicom(con, files):
    dss = datasets(files)
    ct = {uid: g for uid, g in by_series(dss).items() if g[0].SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"}
    got = {r[0]: r[1:] for r in con.execute(
        "SELECT SeriesInstanceUID, KVP, SliceThickness, XRayTubeCurrent_min, XRayTubeCurrent_max, ConvolutionKernel "
        "FROM ct_index").fetchall()}
    assert got.keys() == ct.keys()
    for uid, g in ct.items():
        currents = [float(d.XRayTubeCurrent) for d in g if d.get("XRayTubeCurrent") is not None]
        kernel = g[0].get("ConvolutionKernel")
        assert got[uid][0] == (float(g[0].KVP) if g[0].get("KVP") is not None else None)
        assert got[uid][1] == float(g[0].SliceThickness)
        assert got[uid][2:4] == ((min(currents), max(currents)) if currents else (None, None))
        assert got[uid][4] == ([] if kernel is None else [str(k) for k in (kernel if kernel.__class__ is not str
                                                                          and hasattr(kernel, "__iter__") else [kernel])])
    mr = {uid: g for uid, g in by_series(dss).items() if g[0].SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"}
    got = {r[0]: r[1:] for r in con.execute("SELECT SeriesInstanceUID, EchoTime, ScanningSequence, DiffusionBValue "
                                             "FROM mr_index").fetchall()}
    assert got.keys() == mr.keys()
    for uid, g in mr.items():
        assert got[uid][0] == sorted({float(d.EchoTime) for d in g})
        assert got[uid][1] == [str(g[0].ScanningSequence)]
        assert got[uid][2] == []
    pt = by_series([pydicom.dcmread(p) for p in files["pt"]])
    got = {r[0]: r[1:] for r in con.execute(
        "SELECT SeriesInstanceUID, SeriesType, Units, CorrectedImage, ActualFrameDuration, RadionuclideCodeMeaning, "
        "RadionuclideTotalDose, RadiopharmaceuticalStartTime, NumberOfSlices FROM pt_index").fetchall()}
    (uid, g), = pt.items()
    info = g[0].RadiopharmaceuticalInformationSequence[0]
    assert got == {uid: ("/".join(g[0].SeriesType), "BQML", list(g[0].CorrectedImage),
                         sorted(float(d.ActualFrameDuration) for d in g), info.RadionuclideCodeSequence[0].CodeMeaning,
                         float(info.RadionuclideTotalDose), "09:30:00.5", len(g))}


def test_index_carries_what_dicom_carries(con, files):
    dss = datasets(files)
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT SeriesInstanceUID, collection_id, PatientID, StudyInstanceUID, Modality, instanceCount, "
        "license_short_name, aws_bucket, series_size_MB FROM index").fetchall()}
    groups = by_series(dss)
    assert rows.keys() == groups.keys()
    for uid, g in groups.items():
        assert rows[uid] == ("my_lab", g[0].get("PatientID"), str(g[0].StudyInstanceUID), str(g[0].Modality), len(g),
                             None, None, None)


# -- catalog ---------------------------------------------------------------------------------
def test_saved_queries_run_unchanged_on_the_archive(harvest_dir, files):
    catalog = Catalog(download=False)
    open_archive(catalog, harvest_dir, collection_id="my_lab")
    expected = {uid for uid, v in expected_sm_index(datasets(files)).items()
                if v["primaryAnatomicStructure_CodeMeaning"] == "Lung"}
    got = catalog.sql("SELECT SeriesInstanceUID FROM sm_index").num_rows
    assert got == len(expected_sm_index(datasets(files)))
    from cohort import Cohort

    lung = Cohort.from_query("sm_by_organ", {"organ": "lung"}, catalog=catalog)
    assert set(lung.series_uids) == expected
    summary = catalog.df(Path("queries/collection_summary.sql").read_text(), {"modality": None})
    assert list(summary.collection_id) == ["my_lab"]


def test_archive_beside_the_idc_index(harvest_dir, files):
    catalog = Catalog(download=False)
    open_archive(catalog, harvest_dir, replace=False)
    assert catalog.sql("SELECT count(*) FROM index").column(0)[0].as_py() > 1_000_000  # IDC's
    ours = catalog.sql("SELECT count(*) FROM archive.index").column(0)[0].as_py()
    assert ours == len(by_series(datasets(files)))
    # the TCIA CT localizer in ../shared/realdata is in IDC too: one query sees both
    both = catalog.sql("SELECT a.SeriesInstanceUID, i.collection_id FROM archive.index a "
                       "JOIN index i USING (SeriesInstanceUID)").to_pylist()
    assert [r["collection_id"] for r in both] == ["cptac_ccrcc"] or len(both) == 1


# -- compare with IDC's own table ---------------------------------------------------------------
def test_compare_reports_series_by_series(harvest_dir, archive, tmp_path):
    import pandas as pd

    from cohort.archive.compare import compare

    ours = pd.read_parquet(archive.path("sm_index"))
    reference = ours.copy()
    lung = reference.index[reference.primaryAnatomicStructure_CodeMeaning == "Lung"][0]
    reference.loc[lung, "ObjectiveLensPower"] = 40                       # a real difference
    reference.at[lung, "staining_usingSubstance_CodeMeaning"] = list(reversed(
        reference.at[lung, "staining_usingSubstance_CodeMeaning"]))      # order only: not a difference
    gone = reference.SeriesInstanceUID.iloc[-1] if reference.index[-1] != lung else reference.SeriesInstanceUID.iloc[0]
    reference = reference[reference.SeriesInstanceUID != gone]
    extra = reference.iloc[:1].assign(SeriesInstanceUID="2.25.999")
    pd.concat([reference, extra]).to_parquet(tmp_path / "sm_index.parquet")
    report = compare(harvest_dir, tmp_path / "sm_index.parquet").to_pylist()
    assert sorted((r["SeriesInstanceUID"], r["column"], r["status"]) for r in report) == sorted([
        (ours.SeriesInstanceUID[lung], "ObjectiveLensPower", "differs"),
        (gone, None, "only_in_archive"),
        ("2.25.999", None, "only_in_reference"),
    ])
