"""Saved queries: every shipped one runs; headers, parameters and read-only checks give clear errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cohort import (
    Cohort,
    ParameterError,
    QueryFileError,
    ReadOnlyError,
    SavedQuery,
    list_queries,
    load_query,
)
from cohort.queries import queries_dir
from fixtures.index_tables import PANCREAS_SLIDE

#: Sample values for parameters without a default, by parameter name.
SAMPLES = {
    "collection_id": "tcga_paad",
    "modality": "SM",
    "patient_ids": ["TCGA-F2-A7TX"],
    "since": 24,
    "organ": "Pancreas",
}
SHIPPED = sorted(p.stem for p in queries_dir().glob("*.sql"))


def _write(tmp_path: Path, text: str, name: str = "q.sql") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_query_parses_lists_and_runs_with_defaults(name, fixture_catalog):
    q = load_query(name)
    assert q.name == name and q.description and q.path == queries_dir() / f"{name}.sql"
    assert name in [x.name for x in list_queries()]
    missing = [p.name for p in q.parameters if p.required and p.name not in SAMPLES]
    assert not missing, f"add sample values for {missing} to SAMPLES in {__file__}"
    params = {p.name: SAMPLES[p.name] for p in q.parameters if p.required}
    result = fixture_catalog.sql(q.sql, q.bind(params), source=q.source)
    assert result.num_rows > 0
    if "SeriesInstanceUID" not in result.column_names:
        assert "report" in q.description  # e.g. collection_summary: one row per collection
    else:
        cohort = Cohort.from_query(q, params, catalog=fixture_catalog)
        assert len(cohort) == result.num_rows  # one row per series


def test_sm_by_organ_finds_the_pancreas_slide(fixture_catalog):
    c = Cohort.from_query("sm_by_organ", catalog=fixture_catalog)  # default organ: Pancreas
    assert PANCREAS_SLIDE in c
    assert set(c.result.column("primaryAnatomicStructure_CodeMeaning").to_pylist()) == {"Pancreas"}
    lung = Cohort.from_query("sm_by_organ", organ="LUNG", catalog=fixture_catalog)  # case-insensitive
    assert len(lung) == 6 and PANCREAS_SLIDE not in lung


def test_sm_by_stain_and_power(fixture_catalog):
    every = Cohort.from_query("sm_by_stain_and_power", catalog=fixture_catalog)
    at_20 = Cohort.from_query("sm_by_stain_and_power", power=20, catalog=fixture_catalog)
    assert len(every) == 30
    assert 0 < len(at_20) < 30
    assert set(at_20.result.column("ObjectiveLensPower").to_pylist()) == {20}
    none = Cohort.from_query("sm_by_stain_and_power", stain="Giemsa stain", catalog=fixture_catalog)
    assert len(none) == 0


def test_series_with_segmentation_counts_segmentations_per_image_series(fixture_catalog):
    df = Cohort.from_query("series_with_segmentation", modality="CT", catalog=fixture_catalog).result.to_pandas()
    expected = fixture_catalog.df(
        "SELECT segmented_SeriesInstanceUID AS s, count(*) AS n FROM seg_index "
        "JOIN index ON segmented_SeriesInstanceUID = index.SeriesInstanceUID WHERE index.Modality = 'CT' GROUP BY 1"
    )
    assert dict(zip(df.SeriesInstanceUID, df.segmentations)) == dict(zip(expected.s, expected.n))
    assert set(df.Modality) == {"CT"} and df.segmentations.max() == 6


def test_values_are_bound_by_duckdb(catalog):
    c = Cohort.from_query("series_by_patient", patient_ids=["O'Brien", "x') OR 1=1 --"], catalog=catalog)
    assert len(c) == 0
    c = Cohort.from_query("series_by_collection", collection_id="tcga_paad' OR '1'='1", catalog=catalog)
    assert len(c) == 0


def test_list_parameter_from_the_command_line_form(catalog):
    q = load_query("series_by_patient")
    assert q.bind({"patient_ids": "TCGA-F2-A7TX, TCGA-2J-AAB1"})["patient_ids"] == ["TCGA-F2-A7TX", "TCGA-2J-AAB1"]
    c = Cohort.from_query(q, {"patient_ids": "TCGA-F2-A7TX,TCGA-2J-AAB1"}, catalog=catalog)
    assert set(c.result.column("PatientID").to_pylist()) == {"TCGA-F2-A7TX", "TCGA-2J-AAB1"}


def test_missing_parameter_names_it_and_its_type():
    with pytest.raises(ParameterError, match=r"missing parameter 'collection_id' \(VARCHAR\)") as err:
        load_query("series_by_collection").bind({})
    assert "series_by_collection.sql" in str(err.value)


def test_unknown_parameter_lists_the_known_ones():
    with pytest.raises(ParameterError, match="unknown parameter.*colection_id") as err:
        load_query("series_by_collection").bind({"colection_id": "tcga_paad"})
    assert "collection_id (VARCHAR, required)" in str(err.value)


@pytest.mark.parametrize("value", ["twenty", 2.5, True])
def test_mistyped_parameter_names_it_and_its_type(value):
    with pytest.raises(ParameterError, match=r"parameter 'since' expects INTEGER, got"):
        load_query("series_revised_since").bind({"since": value})


def test_parameter_types_convert():
    q = SavedQuery.parse(
        "-- param d DATE\n-- param b BOOLEAN = false\n-- param x DOUBLE = 1.5\n-- param names VARCHAR[] = ['a', 'b']\n"
        "SELECT $d AS d, $b AS b, $x AS x, $names AS names"
    )
    assert q.bind({"d": "2024-05-01", "b": "yes"}) == {
        "d": dt.date(2024, 5, 1), "b": True, "x": 1.5, "names": ["a", "b"]
    }
    with pytest.raises(ParameterError, match="'d' expects DATE"):
        q.bind({"d": "May 1st"})


@pytest.mark.parametrize("line, match", [
    ("-- param power NUMBER = 3", "parameter type NUMBER is not one of"),
    ("-- param = 3", "cannot read parameter line"),
    ("-- param power INTEGER = many", "default many of parameter power is not a INTEGER"),
])
def test_malformed_header_gives_file_and_line(tmp_path, line, match):
    path = _write(tmp_path, f"-- name: q\n-- description: test\n{line}\nSELECT $power AS p\n")
    with pytest.raises(QueryFileError, match=match) as err:
        load_query(path)
    assert str(err.value).startswith(f"{path}:3: ")


def test_undeclared_and_unused_parameters(tmp_path):
    path = _write(tmp_path, "-- name: q\n\nSELECT *\nFROM index\nWHERE PatientID = $patient\n")
    with pytest.raises(QueryFileError, match=r"uses \$patient but the header declares no such parameter") as err:
        load_query(path)
    assert str(err.value).startswith(f"{path}:5: ")
    path = _write(tmp_path, "-- param patient VARCHAR\nSELECT 1 AS x\n")
    with pytest.raises(QueryFileError, match="patient declared but not used"):
        load_query(path)


def test_query_file_that_writes_is_refused_with_file_and_line(tmp_path, catalog):
    out = tmp_path / "out.csv"
    path = _write(tmp_path, (
        "-- name: sneaky\n-- description: looks like a query\n-- param organ VARCHAR = 'Pancreas'\n\n"
        f"COPY (SELECT * FROM index WHERE BodyPartExamined = $organ) TO '{out}'\n"
    ))
    with pytest.raises(ReadOnlyError, match="COPY statements are not allowed") as err:
        Cohort.from_query(path, catalog=catalog)
    assert str(err.value).startswith(f"{path}:5: ")
    assert not out.exists()


def test_a_users_own_query_file_runs(tmp_path, catalog):
    path = _write(tmp_path, "SELECT SeriesInstanceUID FROM index WHERE collection_id = 'tcga_paad' AND Modality = 'SM'",
                  name="my_paad.sql")
    c = Cohort.from_query(str(path), catalog=catalog)
    assert c.provenance.query_name == "my_paad"
    assert len(c) == catalog.sql(
        "SELECT count(*) AS n FROM index WHERE collection_id = 'tcga_paad' AND Modality = 'SM'"
    ).column("n")[0].as_py()


def test_cohort_query_path_comes_first(tmp_path, monkeypatch):
    _write(tmp_path, "-- description: mine\nSELECT 1 AS x", name="series_by_collection.sql")
    _write(tmp_path, "-- description: new\nSELECT 2 AS x", name="only_mine.sql")
    monkeypatch.setenv("COHORT_QUERY_PATH", str(tmp_path))
    assert load_query("series_by_collection").description == "mine"
    names = [q.name for q in list_queries()]
    assert "only_mine" in names and names.count("series_by_collection") == 1


def test_unknown_query_name_suggests():
    with pytest.raises(QueryFileError, match="no saved query named 'sm_by_organs'; did you mean sm_by_organ"):
        load_query("sm_by_organs")
    with pytest.raises(QueryFileError, match="does not exist"):
        load_query("nowhere/q.sql")
