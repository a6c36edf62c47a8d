"""Saved queries: every shipped one runs; headers, parameters and read-only checks give clear errors."""

from __future__ import annotations

import datetime as dt
import json
import re
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


# -- issue 12 item 3: one name per query; a broken file does not hide the others ---------------
def test_a_query_is_found_by_its_header_name_and_listed_by_it(tmp_path, monkeypatch, catalog):
    _write(tmp_path, "-- name: ct_chest\n-- description: chest CT\n"
                     "SELECT SeriesInstanceUID FROM index WHERE Modality = 'CT' AND BodyPartExamined = 'CHEST'",
           name="chest.sql")
    monkeypatch.setenv("COHORT_QUERY_PATH", str(tmp_path))
    assert "ct_chest" in [q.name for q in list_queries()] and "chest" not in [q.name for q in list_queries()]
    q = load_query("ct_chest")
    assert q.name == "ct_chest" and q.path == tmp_path / "chest.sql"
    with pytest.raises(QueryFileError, match=r"chest.sql is named 'ct_chest' by its -- name: header"):
        load_query("chest")  # the stem is not a second name
    expected = catalog.sql("SELECT count(*) FROM index WHERE Modality = 'CT' AND BodyPartExamined = 'CHEST'")
    assert len(Cohort.from_query("ct_chest", catalog=catalog)) == expected.column(0)[0].as_py()


def test_a_broken_query_file_is_listed_with_its_error_and_the_others_work(tmp_path, monkeypatch):
    from cohort.queries import scan_queries

    _write(tmp_path, "-- name: broken_one\n-- param x NUMBER\nSELECT $x AS x\n", name="broken.sql")
    _write(tmp_path, "-- name: bad_sql\nSELECT *\nFORM index\n", name="bad_sql.sql")
    _write(tmp_path, "-- name: fine\nSELECT 1 AS x\n", name="fine.sql")
    (tmp_path / "latin1.sql").write_bytes(b"-- name: latin1\n-- description: caf\xe9\nSELECT 1 AS x\n")
    monkeypatch.setenv("COHORT_QUERY_PATH", str(tmp_path))
    entries = {e.name: e for e in scan_queries()}
    assert entries["broken_one"].error.startswith(f"{tmp_path / 'broken.sql'}:2: parameter type NUMBER")
    assert entries["bad_sql"].error.startswith(f"{tmp_path / 'bad_sql.sql'}:3: the SQL does not parse")
    assert entries["latin1"].error.startswith(f"{tmp_path / 'latin1.sql'}:2: not UTF-8")
    assert entries["fine"].ok and entries["series_by_collection"].ok
    assert "fine" in [q.name for q in list_queries()] and "broken_one" not in [q.name for q in list_queries()]
    with pytest.raises(QueryFileError) as err:  # running it names file:line
        load_query("broken_one")
    assert str(err.value).startswith(f"{tmp_path / 'broken.sql'}:2: ")


def test_cli_queries_flags_the_broken_file_and_exits_0(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cohort.cli import cli

    _write(tmp_path, "-- name: broken_one\n-- param x NUMBER\nSELECT $x AS x\n", name="broken.sql")
    monkeypatch.setenv("COHORT_QUERY_PATH", str(tmp_path))
    r = CliRunner().invoke(cli, ["queries"])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("broken_one"))
    assert "BROKEN" in line and "broken.sql:2:" in line
    assert "sm_by_organ" in r.stdout and "1 query file cannot be read" in r.stderr
    r = CliRunner().invoke(cli, ["query", "broken_one"])
    assert r.exit_code == 1 and "broken.sql:2: parameter type NUMBER" in r.stderr


def test_unused_parameter_names_its_line(tmp_path):
    path = _write(tmp_path, "-- name: q\n-- param a VARCHAR\n-- param b VARCHAR\nSELECT $a AS a\n")
    with pytest.raises(QueryFileError, match="parameter.*b declared but not used") as err:
        load_query(path)
    assert str(err.value).startswith(f"{path}:3: ")


# -- issue 12 item 5: empty answers explain themselves; a repeated -p is not last-wins ----------
def test_empty_answer_names_the_absent_value_and_the_nearest(catalog):
    c = Cohort.from_query("series_by_collection", collection_id="TCGA_PAAD", catalog=catalog)
    assert len(c) == 0
    assert c.why_empty() == ["collection_id 'TCGA_PAAD' is not in index.collection_id; did you mean 'tcga_paad'?"]
    c = Cohort.from_query("series_by_collection", collection_id="tcga_paad", modality="CTT", catalog=catalog)
    assert c.why_empty() == ["Modality 'CTT' is not in index.Modality; did you mean 'CT'?"]
    c = Cohort.from_query("series_by_collection", collection_id="tcga_paad", modality="MG", catalog=catalog)
    (reason,) = c.why_empty()  # both exist: 1,414 tcga_paad series, but none is MG
    assert "collection_id 'tcga_paad' (1,414 rows of index)" in reason and "no row has them all" in reason


def test_empty_answer_over_an_optional_table_and_a_list_column(fixture_catalog):
    c = Cohort.from_query("sm_by_organ", organ="Pancreass", catalog=fixture_catalog)
    assert c.why_empty() == [
        "primaryAnatomicStructure_CodeMeaning 'Pancreass' is not in "
        "sm_index.primaryAnatomicStructure_CodeMeaning; did you mean 'Pancreas'?"]
    c = Cohort.from_query("sm_by_stain_and_power", stain="hematoxylin", catalog=fixture_catalog)
    (reason,) = c.why_empty()
    assert reason.startswith("staining_usingSubstance_CodeMeaning 'hematoxylin' is not in sm_index.")
    assert "'hematoxylin stain'" in reason


def test_cli_empty_query_says_why(catalog):
    from click.testing import CliRunner

    from cohort.cli import cli

    r = CliRunner().invoke(cli, ["query", "series_by_collection", "-p", "collection_id=TCGA_PAAD", "--summary"])
    assert r.exit_code == 0, r.output
    assert ("no rows: collection_id 'TCGA_PAAD' is not in index.collection_id; did you mean 'tcga_paad'?"
            in r.stderr)


def test_repeated_parameter_is_an_error_for_a_scalar_and_a_list_for_a_list(catalog):
    from cohort.queries import parse_assignments

    twice = parse_assignments(["modality=SM", "modality=CT", "collection_id=tcga_paad"])
    with pytest.raises(ParameterError, match=r"'modality' is given 2 times \(-p modality=SM -p modality=CT\)"):
        load_query("series_by_collection").bind(twice)
    patients = parse_assignments(["patient_ids=TCGA-F2-A7TX", "patient_ids=TCGA-2J-AAB1,TCGA-2J-AAB4"])
    bound = load_query("series_by_patient").bind(patients)
    assert bound["patient_ids"] == ["TCGA-F2-A7TX", "TCGA-2J-AAB1", "TCGA-2J-AAB4"]
    with pytest.raises(ParameterError, match="expects one VARCHAR value, got list"):
        load_query("series_by_collection").bind({"collection_id": ["tcga_paad", "tcga_luad"]})


def test_sql_naming_series_not_in_idc_says_so(tmp_path, catalog):
    from click.testing import CliRunner

    from cohort.cli import cli

    uids = [f"1.2.826.0.1.3680043.99.{i}" for i in range(12)]
    path = _write(tmp_path, "SELECT unnest(" + str(uids) + ") AS SeriesInstanceUID\n", name="elsewhere.sql")
    c = Cohort.from_query(path, catalog=catalog)
    assert str(c.unknown_series).startswith("12 of 12 rows name series that are not in IDC v25")
    r = CliRunner().invoke(cli, ["query", str(path), "--summary"])
    assert r.exit_code == 0, r.output
    assert "12 of 12 rows name series that are not in IDC v25" in r.stderr
    assert not Cohort.from_query("series_by_collection", collection_id="tcga_paad", catalog=catalog).unknown_series


# -- issue 12 item 6: typed parameters in ad-hoc SQL; the silent cases are refused --------------
def _modality_counts(catalog, *modalities):
    rows = catalog.sql("SELECT Modality, count(*) AS n FROM index WHERE list_contains($m, Modality) GROUP BY 1",
                       {"m": list(modalities)}).to_pylist()
    return {r["Modality"]: r["n"] for r in rows}


def test_typed_list_parameter_in_adhoc_sql(catalog):
    from click.testing import CliRunner

    from cohort.cli import cli

    expected = _modality_counts(catalog, "CT", "MR")
    assert expected == {"CT": 270830, "MR": 128143}  # IDC v25
    for sql, p in [("SELECT Modality, count(*) AS n FROM index WHERE Modality IN $m GROUP BY 1 ORDER BY 1",
                    "m:VARCHAR[]=CT,MR"),
                   ("SELECT Modality, count(*) AS n FROM index WHERE list_contains($m::VARCHAR[], Modality) "
                    "GROUP BY 1 ORDER BY 1", "m=CT,MR"),  # the cast gives the type
                   ("SELECT Modality, count(*) AS n FROM index WHERE Modality IN $m GROUP BY 1 ORDER BY 1",
                    "m:varchar[]=CT, MR")]:
        r = CliRunner().invoke(cli, ["sql", "-p", p, "-f", "json", sql])
        assert r.exit_code == 0, r.output
        assert {row["Modality"]: row["n"] for row in json.loads(r.stdout)} == expected
    r = CliRunner().invoke(cli, ["sql", "-p", "n:INTEGER=1000", "-f", "json",
                                 "SELECT count(*) AS n FROM index WHERE instanceCount > $n"])
    assert json.loads(r.stdout)[0]["n"] == catalog.sql(
        "SELECT count(*) FROM index WHERE instanceCount > 1000").column(0)[0].as_py()


@pytest.mark.parametrize("params, sql, match", [
    (["m=CT,MR"], "SELECT count(*) FROM index WHERE Modality IN $m", r"tests for a substring.*-p m:VARCHAR\[\]=CT,MR"),
    (["m=CT,MR"], "SELECT count(*) FROM index WHERE Modality IN ($m)", r"compares with the one text 'CT,MR'"),
    (["m=CT", "m=MR"], "SELECT count(*) FROM index WHERE Modality = $m", r"given 2 times.*-p m:VARCHAR\[\]=CT,MR"),
    (["m:NUMBER=3"], "SELECT $m", "type 'NUMBER' is not one of"),
    (["n:INTEGER=many"], "SELECT $n", "'n' expects INTEGER, got 'many'"),
])
def test_silent_adhoc_parameter_cases_are_refused(params, sql, match):
    from click.testing import CliRunner

    from cohort.cli import cli

    r = CliRunner().invoke(cli, ["sql", *[x for p in params for x in ("-p", p)], sql])
    assert r.exit_code == 1, r.output
    assert re.search(match, r.stderr), r.stderr


def test_from_sql_refuses_text_in_IN_too(catalog):
    with pytest.raises(ParameterError, match="tests for a substring"):
        Cohort.from_sql("SELECT SeriesInstanceUID FROM index WHERE Modality IN $m", m="CT,MR", catalog=catalog)
