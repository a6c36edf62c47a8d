"""Browsing like idc-index: collections, patients, studies, series, viewer URLs, against independent SQL."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cohort import CohortInputError
from cohort.browse import collections, patients, series, studies, viewer_url
from cohort.cli import cli
from fixtures.index_tables import PANCREAS_SLIDE

PAAD_STUDY = "2.25.25332367070577326639024635995523878122"  # the pancreas slide's study
VIEWER = "https://viewer.imaging.datacommons.cancer.gov"


def test_collections_has_every_collection_with_counts(catalog):
    df = collections(catalog)
    assert len(df) == 179  # IDC v25
    paad = df.set_index("collection_id").loc["tcga_paad"]
    assert (paad.patients, paad.studies, paad.series, paad.instances) == (185, 185, 1414, 3868)
    assert str(df["instances"].dtype) == "int64"  # not float


def test_patients_of_a_collection(catalog):
    df = patients("tcga_paad", catalog)
    assert len(df) == 185 and df["series"].sum() == 1414 and df["instances"].sum() == 3868
    assert list(df.columns[:3]) == ["PatientID", "PatientSex", "PatientAge"]  # as idc-index's get_patients
    both = patients(["tcga_paad", "cmb_aml"], catalog)
    assert set(both.collection_id) == {"tcga_paad", "cmb_aml"}
    with pytest.raises(CohortInputError, match=r"'TCGA_PAAD' \(did you mean 'tcga_paad'\?\)"):
        patients("TCGA_PAAD", catalog)


def test_studies_and_series_down_to_the_pancreas_slide(catalog):
    expected = catalog.sql("SELECT PatientID, StudyInstanceUID FROM index WHERE SeriesInstanceUID = $s",
                           {"s": PANCREAS_SLIDE}).to_pylist()[0]
    st = studies(expected["PatientID"], catalog)
    assert expected["StudyInstanceUID"] in set(st.StudyInstanceUID)
    n = catalog.sql("SELECT count(*) FROM index WHERE PatientID = $p", {"p": expected["PatientID"]}).column(0)[0]
    assert st["series"].sum() == n.as_py()
    se = series(expected["StudyInstanceUID"], catalog)
    assert PANCREAS_SLIDE in set(se.SeriesInstanceUID)
    assert {"Modality", "SeriesDescription", "instanceCount", "series_size_MB"} <= set(se.columns)
    with pytest.raises(CohortInputError, match="a SeriesInstanceUID is not a study"):
        series(PANCREAS_SLIDE, catalog)


def test_viewer_urls_match_idc_index(catalog):
    assert viewer_url(series_uid=PANCREAS_SLIDE, catalog=catalog) == \
        f"{VIEWER}/slim/studies/{PAAD_STUDY}/series/{PANCREAS_SLIDE}"
    assert viewer_url(study_uid=PAAD_STUDY, catalog=catalog) == f"{VIEWER}/slim/studies/{PAAD_STUDY}"
    ct = catalog.sql("SELECT StudyInstanceUID, SeriesInstanceUID FROM index WHERE collection_id = 'nlst' "
                     "AND Modality = 'CT' ORDER BY 2 LIMIT 1").to_pylist()[0]
    assert viewer_url(series_uid=ct["SeriesInstanceUID"], catalog=catalog) == (
        f"{VIEWER}/v3/viewer/?StudyInstanceUIDs={ct['StudyInstanceUID']}"
        f"&initialSeriesInstanceUID={ct['SeriesInstanceUID']}")
    assert viewer_url(study_uid=ct["StudyInstanceUID"], viewer="ohif_v2", catalog=catalog) == \
        f"{VIEWER}/viewer/{ct['StudyInstanceUID']}"
    with pytest.raises(CohortInputError, match="is a StudyInstanceUID, not a SeriesInstanceUID"):
        viewer_url(series_uid=PAAD_STUDY, catalog=catalog)
    with pytest.raises(CohortInputError, match="unknown viewer 'volview'"):
        viewer_url(series_uid=PANCREAS_SLIDE, viewer="volview", catalog=catalog)


def test_cli_listings():
    r = CliRunner().invoke(cli, ["collections", "-f", "csv"])
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip().splitlines()) == 1 + 179
    r = CliRunner().invoke(cli, ["patients", "tcga_paad", "--max-rows", "-1"])
    assert r.exit_code == 0 and len(r.stdout.strip().splitlines()) == 1 + 185
    r = CliRunner().invoke(cli, ["viewer", PANCREAS_SLIDE])
    assert r.stdout.strip() == f"{VIEWER}/slim/studies/{PAAD_STUDY}/series/{PANCREAS_SLIDE}"
    r = CliRunner().invoke(cli, ["patients", "TCGA_PAAD"])
    assert r.exit_code == 1 and "did you mean 'tcga_paad'" in r.stderr


# -- clinical_index: idc-index's fetch_index("clinical_index"), here a table like any other --------
def _clinical_index(directory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = pa.array([[{"option_code": "M", "option_description": "male"}], []],
                      pa.list_(pa.struct([("option_code", pa.string()), ("option_description", pa.string())])))
    table = pa.table({"collection_id": ["tcga_paad", "nlst"], "table_name": ["t1", "t2"],
                      "short_table_name": ["clinical", "prsn"], "column": ["gender", "age"],
                      "column_label": ["Gender", "Age"], "values": values})
    pq.write_table(table, directory / "clinical_index.parquet")


def test_sql_over_clinical_index_when_present_and_a_clear_error_when_not(tmp_path):
    from cohort import Catalog, TableUnavailableError

    with pytest.raises(TableUnavailableError, match=r"table 'clinical_index' is not on this machine, nor cached"):
        Catalog(cache_dir=tmp_path / "cache", download=False).sql("SELECT * FROM clinical_index")
    here = tmp_path / "index_dir"
    here.mkdir()
    _clinical_index(here)
    r = CliRunner().invoke(cli, ["--index-dir", str(here), "sql", "-f", "json", "-p", "c=tcga_paad",
                                 "SELECT short_table_name, \"column\", len(\"values\") AS n FROM clinical_index "
                                 "WHERE collection_id = $c"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().startswith("[") and '"short_table_name":"clinical"' in r.stdout.replace(" ", "")
