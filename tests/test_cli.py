"""The `cohort` command: queries, query (formats, -o, --summary, own .sql), tables, and one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cohort import Cohort, list_queries
from cohort.cli import cli
from fixtures.index_tables import PANCREAS_SLIDE

PAAD_SM = ["query", "series_by_collection", "-p", "collection_id=tcga_paad", "-p", "modality=SM"]


def run(*args: str, index_dir=None):
    options = ["--index-dir", str(index_dir)] if index_dir else []
    return CliRunner().invoke(cli, [*options, *args], catch_exceptions=True)


@pytest.fixture(scope="module")
def paad_sm(catalog) -> Cohort:
    return Cohort.from_query("series_by_collection", collection_id="tcga_paad", modality="SM", catalog=catalog)


def test_queries_lists_every_saved_query():
    r = run("queries")
    assert r.exit_code == 0, r.stderr
    for q in list_queries():
        assert q.name in r.stdout
    assert "-p collection_id (VARCHAR, required)" in r.stdout
    assert "-p organ (VARCHAR, default 'Pancreas')" in r.stdout


def test_query_as_table(paad_sm):
    r = run(*PAAD_SM, "--max-rows", "5")
    assert r.exit_code == 0, r.stderr
    assert f"[{len(paad_sm):,} rows]" in r.stdout
    assert "SeriesInstanceUID" in r.stdout.splitlines()[0]


def test_query_as_csv_tsv_and_json(paad_sm):
    csv = pd.read_csv(io.StringIO(run(*PAAD_SM, "-f", "csv").stdout))
    assert set(csv.SeriesInstanceUID) == set(paad_sm.series_uids)
    tsv = pd.read_csv(io.StringIO(run(*PAAD_SM, "-f", "tsv").stdout), sep="\t")
    assert tsv.shape == csv.shape
    rows = json.loads(run(*PAAD_SM, "-f", "json").stdout)
    assert {r["SeriesInstanceUID"] for r in rows} == set(paad_sm.series_uids)
    assert rows[0]["collection_id"] == "tcga_paad"


@pytest.mark.parametrize("suffix", ["parquet", "csv", "json"])
def test_query_to_a_file_by_suffix(suffix, paad_sm, tmp_path):
    out = tmp_path / f"cohort.{suffix}"
    r = run(*PAAD_SM, "-o", str(out))
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""
    assert r.stderr.strip() == f"wrote {len(paad_sm):,} rows to {out}"
    read = {"parquet": lambda p: pq.read_table(p).to_pandas(), "csv": pd.read_csv, "json": pd.read_json}[suffix]
    assert sorted(read(out).SeriesInstanceUID) == sorted(paad_sm.series_uids)


def test_list_columns_in_csv_are_json_arrays(index_dir):
    r = run("query", "sm_by_organ", "-f", "csv", index_dir=index_dir)
    assert r.exit_code == 0, r.stderr
    df = pd.read_csv(io.StringIO(r.stdout))
    assert PANCREAS_SLIDE in set(df.SeriesInstanceUID)
    stains = json.loads(df.staining_usingSubstance_CodeMeaning[0])
    assert sorted(stains) == ["hematoxylin stain", "water soluble eosin stain"]


def test_summary(paad_sm):
    r = run(*PAAD_SM, "--summary")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"series_by_collection on IDC v25: {paad_sm.counts}"
    assert lines[2].split()[:2] == ["tcga_paad", str(paad_sm.counts.series)]


def test_a_users_own_sql_file(tmp_path, index_dir):
    path = tmp_path / "mine.sql"
    path.write_text(
        "-- param organ VARCHAR: CodeMeaning\n"
        "SELECT index.SeriesInstanceUID, collection_id FROM sm_index JOIN index USING (SeriesInstanceUID)\n"
        "WHERE primaryAnatomicStructure_CodeMeaning = $organ\n"
    )
    r = run("query", str(path), "-p", "organ=Pancreas", "-f", "json", index_dir=index_dir)
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert PANCREAS_SLIDE in {row["SeriesInstanceUID"] for row in rows}
    assert {row["collection_id"] for row in rows} == {"tcga_paad"}


def test_tables(index_dir):
    r = run("tables", "-f", "csv", "--paths", index_dir=index_dir)
    assert r.exit_code == 0, r.stderr
    df = pd.read_csv(io.StringIO(r.stdout)).set_index("table")
    assert df.loc["index", "status"] == "shipped"
    assert df.loc["sm_index", "status"] == "local"
    assert df.loc["sm_index", "path"] == str(index_dir / "sm_index.parquet")
    assert df.loc["clinical_index", "status"] == "on first use"


@pytest.mark.parametrize("args, message", [
    (["query", "series_by_collection"], "Error: missing parameter 'collection_id' (VARCHAR)"),
    (["query", "series_by_collection", "-p", "collection_id=x", "-p", "since=3"], "Error: unknown parameter(s) since"),
    (["query", "series_revised_since", "-p", "since=last"], "Error: parameter 'since' expects INTEGER, got 'last'"),
    (["query", "sm_by_organs"], "Error: no saved query named 'sm_by_organs'; did you mean sm_by_organ?"),
    (["sql", "SELECT Modalty FROM index"], "Error: Binder Error: Referenced column \"Modalty\" not found"),
    (["sql", "SELECT * FROM read_csv('/etc/passwd')"], "Error: Permission Error"),
    (["sql", "SELECT * FROM sm_indx"], "Error: unknown table 'sm_indx'"),
])
def test_errors_are_one_line_and_exit_1(args, message):
    r = run(*args)
    assert r.exit_code == 1
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(message)
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_an_output_file_that_cannot_be_written_is_one_line(tmp_path, suffix):
    target = tmp_path / "missing-dir" / f"out.{suffix}"
    r = run("sql", "SELECT 1 AS a", "-o", str(target))
    assert r.exit_code == 1
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"Error: Could not open file '{target}'")
    assert "directory exists" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("target", ["x.csv", "ABSOLUTE"])
def test_a_query_file_that_writes_is_refused(tmp_path, monkeypatch, target):
    monkeypatch.chdir(tmp_path)  # a relative 'x.csv' would be written here, where the test looks
    target = str(tmp_path / "abs.csv") if target == "ABSOLUTE" else target
    path = tmp_path / "w.sql"
    path.write_text(f"-- name: w\nCOPY (SELECT 1 AS one) TO '{target}'\n")
    r = run("query", str(path))
    assert r.exit_code == 1
    assert r.stderr.startswith(f"Error: {path}:2: COPY statements are not allowed")
    assert list(tmp_path.iterdir()) == [path]  # nothing written


def test_verbose_shows_the_traceback():
    cmd = [sys.executable, "-c", "from cohort.cli import main; main()", "-v", "query", "series_by_collection"]
    quiet = subprocess.run([*cmd[:3], *cmd[4:]], capture_output=True, text=True)
    loud = subprocess.run(cmd, capture_output=True, text=True)
    assert quiet.returncode == loud.returncode == 1
    assert "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in loud.stderr
    assert "cohort.errors.ParameterError: missing parameter 'collection_id'" in loud.stderr


def test_parquet_to_stdout_is_a_usage_error():
    r = run(*PAAD_SM, "-f", "parquet")
    assert r.exit_code == 2
    assert "--format parquet needs -o PATH" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["harvest", "q", "-o", "out", "--url", "http://127.0.0.1:1/dicom-web", "--policy", "proxy"],
     "give either --url or --policy"),
    (["harvest", "q", "-o", "out", "--auth", "bearer"], "--auth applies to --url"),
    (["coverage", "q", "--auth", "bearer"], "--auth applies to --url"),
])
def test_dicomweb_options_that_contradict_are_usage_errors(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(*args)
    assert r.exit_code == 2
    assert message in r.stderr
    assert not (tmp_path / "out").exists()


# -- issue 12 item 10: small things ----------------------------------------------------------------
def test_wrote_one_row_is_singular(tmp_path):
    out = tmp_path / "one.csv"
    r = run("sql", "SELECT 1 AS x", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    assert r.stderr.strip() == f"wrote 1 row to {out}"


def test_summary_of_one_collection_is_singular(paad_sm):
    r = run(*PAAD_SM, "--summary")
    assert "466 series, 185 studies, 185 patients, 1 collection, 2,191 instances" in r.stdout.splitlines()[0]


def test_collection_summary_instances_are_integers():
    r = run("query", "collection_summary", "-p", "modality=SM", "-f", "csv")
    assert r.exit_code == 0, r.stderr
    paad = next(line for line in r.stdout.splitlines() if line.startswith("tcga_paad,"))
    assert paad.split(",")[4] == "2191"  # not 2191.0
    table = run("query", "collection_summary", "--max-rows", "3")
    assert " 21480654 " in table.stdout  # nlst's instances, not 2.148065e+07


def test_max_rows_minus_one_shows_every_row(paad_sm):
    r = run(*PAAD_SM, "--max-rows", "-1")
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1 + len(paad_sm) and "rows]" not in r.stdout
    assert run(*PAAD_SM, "--max-rows", "-2").exit_code == 2


def test_tables_fit_a_terminal(monkeypatch, index_dir):
    monkeypatch.setenv("COLUMNS", "100")
    r = run("tables", index_dir=index_dir)
    assert r.exit_code == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 100


def test_fetch_help_lists_the_tables():
    r = run("fetch", "--help")
    assert r.exit_code == 0
    for name in ("sm_index", "seg_index", "clinical_index", "sm_instance_index", "ann_index"):
        assert name in r.stdout
