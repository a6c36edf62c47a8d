"""The catalog: idc-index's table names and answers, read-only queries, helpful errors."""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from cohort import Catalog, QueryError, ReadOnlyError, UnknownTableError
from cohort.tables import known_tables
from fixtures.index_tables import PANCREAS_SLIDE

#: The seed's query, as written for IDCClient.sql_query.
SEED_PANCREAS_SQL = (
    "SELECT index.StudyInstanceUID, sm_index.SeriesInstanceUID FROM sm_index "
    "JOIN index ON sm_index.SeriesInstanceUID = index.SeriesInstanceUID "
    "WHERE Modality = 'SM' AND primaryAnatomicStructure_CodeMeaning = 'Pancreas'"
)

#: SQL written for idc-index, compared row for row with IDCClient.sql_query.
SAME_AS_IDC_INDEX = {
    "group_by_over_index": (
        "SELECT collection_id, Modality, count(*) AS series, sum(instanceCount) AS instances, "
        "round(sum(series_size_MB), 3) AS size_MB FROM index GROUP BY collection_id, Modality"
    ),
    "join_with_prior_versions_index": (
        "SELECT p.SeriesInstanceUID, p.crdc_series_uuid, p.min_idc_version, p.max_idc_version, "
        "index.series_revised_idc_version FROM prior_versions_index p "
        "JOIN index ON p.SeriesInstanceUID = index.SeriesInstanceUID WHERE index.collection_id = 'tcga_paad'"
    ),
    "collections_index": "SELECT collection_id, collection_name, subjects, cancer_types, species FROM collections_index",
    "where_on_a_uid": f"SELECT * FROM index WHERE SeriesInstanceUID = '{PANCREAS_SLIDE}'",
    "seed_pancreas_query": SEED_PANCREAS_SQL,
}


@pytest.fixture(scope="module")
def idc_client(index_dir):
    """idc-index's IDCClient (~15 s, 3 GB: made once), with the same sm_index fixture as our catalog."""
    import idc_index
    client = idc_index.IDCClient()
    client.fetch_index("collections_index")  # shipped: loaded from the wheel, not downloaded
    client.sm_index = pd.read_parquet(index_dir / "sm_index.parquet")  # what fetch_index("sm_index") would set
    return client


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    lists = [c for c in df.columns if len(df) and isinstance(df[c].iloc[0], (list, np.ndarray))]
    df = df.assign(**{c: df[c].map(lambda v: repr(list(v))) for c in lists})  # sortable
    return df.sort_values(list(df.columns)).reset_index(drop=True)


@pytest.mark.parametrize("name", SAME_AS_IDC_INDEX)
def test_same_rows_as_idc_index(name, idc_client, fixture_catalog):
    sql = SAME_AS_IDC_INDEX[name]
    ours = fixture_catalog.df(sql)
    theirs = idc_client.sql_query(sql)
    assert len(ours) > 0
    pdt.assert_frame_equal(_sorted(ours), _sorted(theirs))


def test_seed_pancreas_query_runs_unchanged(fixture_catalog):
    df = fixture_catalog.df(SEED_PANCREAS_SQL)
    assert list(df.columns) == ["StudyInstanceUID", "SeriesInstanceUID"]
    assert PANCREAS_SLIDE in set(df.SeriesInstanceUID)
    study = df.loc[df.SeriesInstanceUID == PANCREAS_SLIDE, "StudyInstanceUID"].item()
    assert study == "2.25.25332367070577326639024635995523878122"


def test_every_idc_index_table_has_its_idc_index_name(catalog):
    import idc_index_data

    stems = set(idc_index_data.INDEX_METADATA)
    assert set(catalog.tables) == (stems - {"idc_index"}) | {"index"}
    shipped = {n for n, t in catalog.tables.items() if t.bundled}
    assert shipped == {"index", "prior_versions_index", "collections_index", "analysis_results_index",
                       "version_metadata_index"}
    for name in shipped:
        assert catalog.available(name)
    assert catalog.columns("index")[:4] == ["collection_id", "analysis_result_id", "PatientID", "SeriesInstanceUID"]
    assert known_tables()["sm_index"].column_names[0] == "SeriesInstanceUID"


def test_parameters_are_bound_not_formatted(catalog):
    rows = catalog.sql("SELECT count(*) AS n FROM index WHERE PatientID = $p", {"p": "O'Brien' OR 1=1 --"})
    assert rows.column("n")[0].as_py() == 0
    got = catalog.sql("SELECT $p AS v", {"p": "O'Brien"}).column("v")[0].as_py()
    assert got == "O'Brien"


def test_missing_parameter_is_named(catalog):
    with pytest.raises(QueryError, match="collection"):
        catalog.sql("SELECT count(*) FROM index WHERE collection_id = $collection")


WRITES = {
    "copy": "COPY (SELECT 1 AS x) TO '{out}'",
    "attach": "ATTACH '{out}' AS other",
    "set": "SET threads = 1",
    "create": "CREATE TABLE t AS SELECT 1 AS x",
    "install": "INSTALL httpfs",
    "export": "EXPORT DATABASE '{out}'",
}


@pytest.mark.parametrize("kind", WRITES)
def test_statements_other_than_select_are_refused(kind, catalog, tmp_path):
    out = tmp_path / "written"
    with pytest.raises(ReadOnlyError, match="not allowed; queries are read-only"):
        catalog.sql(WRITES[kind].format(out=out))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM 'https://example.com/x.parquet'",
])
def test_reading_other_files_is_refused(sql, catalog):
    with pytest.raises(ReadOnlyError, match="may only read the index tables"):
        catalog.sql(sql)


def test_settings_cannot_be_changed(catalog):
    with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
        catalog.connection.execute("SET enable_external_access = true")
    assert catalog.sql("SELECT current_setting('enable_external_access') AS v").column("v")[0].as_py() is False


def test_several_statements_are_refused(catalog):
    with pytest.raises(QueryError, match="2 statements found"):
        catalog.sql("SELECT 1; SELECT 2")


def test_unknown_column_suggests_nearest_names(catalog):
    with pytest.raises(QueryError, match=r"Did you mean: Modality") as err:
        catalog.sql("SELECT Modalty FROM index")
    assert "Modalty" in str(err.value)


def test_unknown_table_lists_available_and_downloadable(catalog):
    with pytest.raises(UnknownTableError) as err:
        catalog.sql("SELECT * FROM sm_indx")
    msg = str(err.value)
    assert "unknown table 'sm_indx' (did you mean sm_index?)" in msg
    available, fetched = msg.split("fetched on first use:")
    assert "index" in available and "prior_versions_index" in available
    assert "sm_index" in fetched and "seg_index" in fetched


def test_add_view_reads_an_allowed_directory(tmp_path, catalog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"SeriesInstanceUID": [PANCREAS_SLIDE], "ok": [True]}), tmp_path / "h.parquet")
    cat = Catalog(download=False)
    cat.add_view("harvest", f"SELECT * FROM read_parquet('{tmp_path}{os.sep}*.parquet')", allow_dir=tmp_path)
    joined = cat.sql("SELECT index.collection_id FROM harvest JOIN index USING (SeriesInstanceUID)")
    assert joined.column(0).to_pylist() == ["tcga_paad"]
    with pytest.raises(ReadOnlyError):
        cat.sql("SELECT * FROM read_csv('/etc/passwd')")


def test_catalog_is_cheap_and_loads_nothing_into_pandas():
    import subprocess
    import sys

    code = (
        "import sys, cohort; cohort.Catalog(download=False); "
        "print(sorted(m for m in ('pandas', 'numpy', 'idc_index', 'idc_index_data') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_table_names_are_case_insensitive_as_in_duckdb(fixture_catalog):
    n = fixture_catalog.sql("SELECT count(*) AS n FROM SM_INDEX JOIN Index USING (SeriesInstanceUID)")
    assert n.column("n")[0].as_py() == 30


def test_a_broken_table_file_is_a_catalog_error_naming_it(tmp_path):
    from cohort import TableUnavailableError

    (tmp_path / "sm_index.parquet").write_bytes(b"not parquet")
    with pytest.raises(TableUnavailableError) as info:
        Catalog(index_dir=tmp_path, cache_dir=tmp_path / "cache", download=False)
    message = str(info.value)
    assert f"{tmp_path / 'sm_index.parquet'} is not a readable Parquet file" in message
    assert "delete or replace it" in message
