"""Every shipped saved query returns exactly the rows the index holds, counted here without DuckDB.

The expected rows are worked out with pyarrow straight from idc-index-data's Parquet file (and, for
the queries over the optional tables, from the fixture sm_index/seg_index Parquet), so a query that
drops a condition, flips a comparison or joins the wrong column returns a different set of series.
"""

from __future__ import annotations

from collections import defaultdict

import idc_index_data
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cohort import Cohort, load_query

COLUMNS = ["collection_id", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "instanceCount",
           "series_revised_idc_version", "aws_bucket"]
INDEX = pq.read_table(idc_index_data.IDC_INDEX_PARQUET_FILEPATH, columns=COLUMNS)
RELEASE = int(idc_index_data.__version__.split(".")[0])


def _where(mask) -> list[dict]:
    """Index rows (as dicts) where the pyarrow boolean ``mask`` holds."""
    return INDEX.filter(mask).to_pylist()


def _col(name):
    return INDEX[name]


def _uids(rows) -> list[str]:
    return [r["SeriesInstanceUID"] for r in rows]


def _run(catalog, name, **params):
    q = load_query(name)
    return catalog.sql(q.sql, q.bind(params), source=q.source).to_pylist()


@pytest.mark.parametrize("modality", [None, "SM"])
def test_series_by_collection(catalog, modality):
    got = _run(catalog, "series_by_collection", collection_id="tcga_paad", modality=modality)
    want = [r for r in _where(pc.equal(_col("collection_id"), "tcga_paad")) if modality in (None, r["Modality"])]
    assert len(want) == (1414 if modality is None else 466)  # tcga_paad in IDC v25
    assert sorted(_uids(got)) == sorted(_uids(want))
    keys = [(r["PatientID"], r["StudyInstanceUID"], r["SeriesInstanceUID"]) for r in got]
    assert keys == sorted(keys)  # ORDER BY PatientID, StudyInstanceUID, SeriesInstanceUID


def test_series_by_patient(catalog):
    patients = ["TCGA-F2-A7TX", "TCGA-2J-AAB1"]
    got = _run(catalog, "series_by_patient", patient_ids=patients)
    want = _where(pc.is_in(_col("PatientID"), value_set=pa.array(patients)))
    assert len(want) > 2 and sorted(_uids(got)) == sorted(_uids(want))
    sm = _run(catalog, "series_by_patient", patient_ids=patients, modality="SM")
    assert sorted(_uids(sm)) == sorted(_uids(r for r in want if r["Modality"] == "SM"))


@pytest.mark.parametrize(("since", "collection"), [(24, None), (RELEASE, None), (20, "tcga_paad")])
def test_series_revised_since(catalog, since, collection):
    got = _run(catalog, "series_revised_since", since=since, collection_id=collection)
    want = [r for r in _where(pc.greater_equal(_col("series_revised_idc_version"), since))
            if collection in (None, r["collection_id"])]
    assert sorted(_uids(got)) == sorted(_uids(want))
    versions = [r["series_revised_idc_version"] for r in got]
    assert versions == sorted(versions, reverse=True)


@pytest.mark.parametrize("newest_store", [None, 20])
def test_not_in_google_store(catalog, newest_store):
    newest = RELEASE if newest_store is None else newest_store
    got = _run(catalog, "not_in_google_store", newest_store=newest_store)
    want = _where(pc.or_(pc.not_equal(_col("aws_bucket"), "idc-open-data"),
                         pc.greater(_col("series_revised_idc_version"), newest)))
    assert sorted(_uids(got)) == sorted(_uids(want))
    reasons = {r["SeriesInstanceUID"]: r["reason"] for r in got}
    for r in want[:: max(1, len(want) // 200)]:
        if r["aws_bucket"] != "idc-open-data":
            assert reasons[r["SeriesInstanceUID"]] == f"bucket {r['aws_bucket']} is not replicated to the Google store"
        else:
            assert reasons[r["SeriesInstanceUID"]] == (
                f"revised in v{r['series_revised_idc_version']}, newest Google store is v{newest}")


@pytest.mark.parametrize("modality", [None, "SM"])
def test_collection_summary(catalog, modality):
    got = {r["collection_id"]: r for r in _run(catalog, "collection_summary", modality=modality)}
    table = INDEX if modality is None else INDEX.filter(pc.equal(_col("Modality"), modality))
    grouped = table.group_by("collection_id").aggregate([
        ("SeriesInstanceUID", "count"), ("PatientID", "count_distinct"), ("instanceCount", "sum"),
        ("Modality", "distinct")]).to_pylist()
    assert len(grouped) == len(got) and len(got) > (100 if modality is None else 10)
    for g in grouped:
        row = got[g["collection_id"]]
        assert (row["series"], row["patients"], row["instances"]) == (
            g["SeriesInstanceUID_count"], g["PatientID_count_distinct"], g["instanceCount_sum"]), g["collection_id"]
        assert row["modalities"] == ",".join(sorted(g["Modality_distinct"]))


def _fixture_table(index_dir, name):
    return pq.read_table(index_dir / f"{name}.parquet").to_pylist()


@pytest.mark.parametrize("organ", ["Pancreas", "lung", "Heart"])
def test_sm_by_organ(fixture_catalog, index_dir, organ):
    sm_modality = set(INDEX.filter(pc.equal(_col("Modality"), "SM"))["SeriesInstanceUID"].to_pylist())
    want = [r for r in _fixture_table(index_dir, "sm_index")
            if (r["primaryAnatomicStructure_CodeMeaning"] or "").lower() == organ.lower()
            and r["SeriesInstanceUID"] in sm_modality]
    got = _run(fixture_catalog, "sm_by_organ", organ=organ)
    assert len(want) == {"pancreas": 8, "lung": 6, "heart": 0}[organ.lower()]  # tests/fixtures/index_tables.py
    assert sorted(_uids(got)) == sorted(_uids(want))


@pytest.mark.parametrize(("stain", "power"), [("hematoxylin stain", None), ("WATER SOLUBLE EOSIN STAIN", 20),
                                              ("hematoxylin stain", 40), ("Giemsa stain", None)])
def test_sm_by_stain_and_power(fixture_catalog, index_dir, stain, power):
    sm_index = _fixture_table(index_dir, "sm_index")
    uids = pa.array([r["SeriesInstanceUID"] for r in sm_index])
    in_index = set(INDEX.filter(pc.is_in(_col("SeriesInstanceUID"), value_set=uids))["SeriesInstanceUID"].to_pylist())
    want = [r for r in sm_index
            if any(s.lower() == stain.lower() for s in r["staining_usingSubstance_CodeMeaning"] or [])
            and power in (None, r["ObjectiveLensPower"]) and r["SeriesInstanceUID"] in in_index]
    got = _run(fixture_catalog, "sm_by_stain_and_power", stain=stain, power=power)
    assert sorted(_uids(got)) == sorted(_uids(want))


@pytest.mark.parametrize("modality", [None, "CT", "MR"])
def test_series_with_segmentation(fixture_catalog, index_dir, modality):
    seg_index = _fixture_table(index_dir, "seg_index")
    targets = pa.array({r["segmented_SeriesInstanceUID"] for r in seg_index})
    by_uid = {r["SeriesInstanceUID"]: r for r in _where(pc.is_in(_col("SeriesInstanceUID"), value_set=targets))}
    segs = defaultdict(set)
    for r in seg_index:
        target = by_uid.get(r["segmented_SeriesInstanceUID"])
        if target and modality in (None, target["Modality"]):
            segs[target["SeriesInstanceUID"]].add(r["SeriesInstanceUID"])
    got = _run(fixture_catalog, "series_with_segmentation", modality=modality)
    assert {r["SeriesInstanceUID"]: r["segmentations"] for r in got} == {k: len(v) for k, v in segs.items()}
    assert segs  # the fixture segments CT and MR series


def test_cohort_from_a_query_has_the_same_series(catalog):
    """The Cohort wrapper keeps one row per series of the query (no join fan-out, no loss)."""
    c = Cohort.from_query("series_by_collection", collection_id="cmb_aml", catalog=catalog)
    want = _where(pc.equal(_col("collection_id"), "cmb_aml"))
    assert sorted(c.series_uids) == sorted(_uids(want))
    assert c.counts.instances == sum(r["instanceCount"] for r in want)
    assert c.counts.patients == len({r["PatientID"] for r in want})
