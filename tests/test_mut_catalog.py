"""The catalog's exact outcomes that the mutation run (``bench/mutation.py catalog``) showed untested:
the sandbox's settings, the views made (and kept when the sandbox is rebuilt), the local copy's
fallback, UID lookups on both paths, every error text in full, and the table-name scanner.

Expected values come from outside the module: plain DuckDB/pyarrow reads of the shipped Parquet
files, DuckDB's own defaults, and messages written out by hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pytest

import cohort.catalog as catalog_module
from cohort import Catalog, QueryError, ReadOnlyError, UnknownTableError
from cohort.errors import ParameterError, TableUnavailableError
from cohort.localcopy import META_TABLE
from cohort.tables import known_tables
from fixtures.index_tables import PANCREAS_SLIDE

SHIPPED = {name: known_tables()[name].bundled_path for name in ("index", "prior_versions_index")}
#: The text every refused statement ends with, written out.
READ_ONLY_TAIL = ("statements are not allowed; queries are read-only (a query may only SELECT; to save results use "
                  "the output options, e.g. `cohort query NAME -o out.parquet`)")


def _setting(con, name: str):
    return con.execute(f"SELECT current_setting('{name}')").fetchone()[0]


@pytest.fixture(scope="module")
def shipped_uids() -> tuple[list[str], list[str]]:
    """(three UIDs of ``index``, three UIDs only in ``prior_versions_index``), read with plain DuckDB."""
    con = duckdb.connect()
    current = [r[0] for r in con.execute(
        "SELECT SeriesInstanceUID FROM read_parquet(?) LIMIT 3", [str(SHIPPED["index"])]
    ).fetchall()]
    prior = [r[0] for r in con.execute(
        "SELECT p.SeriesInstanceUID FROM read_parquet(?) p ANTI JOIN read_parquet(?) c USING (SeriesInstanceUID) "
        "LIMIT 3", [str(SHIPPED["prior_versions_index"]), str(SHIPPED["index"])]
    ).fetchall()]
    assert len(current) == 3 and len(prior) == 3
    return current, prior


@pytest.fixture(scope="module")
def parquet_catalog() -> Catalog:
    """A catalog reading the shipped Parquet files (no local copy, no UID file)."""
    return Catalog(download=False, local_copy=False)


# -- the sandbox -------------------------------------------------------------------------------------
@pytest.mark.parametrize("local", [True, False])
def test_the_sandbox_settings(local, catalog, parquet_catalog):
    con = (catalog if local else parquet_catalog).connection
    assert _setting(con, "enable_external_access") is False
    assert _setting(con, "autoinstall_known_extensions") is False
    assert _setting(con, "autoload_known_extensions") is False
    assert _setting(con, "lock_configuration") is True
    assert _setting(con, "enable_progress_bar") is False
    # "Matches index_scan_max_count" (DuckDB's default, 2048), and set GLOBAL: a cursor sees it too
    assert _setting(con, "dynamic_or_filter_threshold") == _setting(con, "index_scan_max_count") == 2048
    assert _setting(con.cursor(), "dynamic_or_filter_threshold") == 2048


def test_the_shipped_files_are_readable_and_their_neighbours_are_not(parquet_catalog):
    import pyarrow.parquet as pq

    index_file = known_tables()["collections_index"].bundled_path
    got = parquet_catalog.sql(f"SELECT count(*) AS n FROM read_parquet('{index_file}')").column(0).to_pylist()
    assert got == [pq.read_metadata(index_file).num_rows]
    neighbour = index_file.parent / "__init__.py"
    assert neighbour.is_file()
    with pytest.raises(ReadOnlyError, match="Permission Error: Cannot access file"):
        parquet_catalog.sql(f"SELECT * FROM read_text('{neighbour}')")


# -- views and the local copy ------------------------------------------------------------------------
def _views(cat: Catalog) -> dict[str, str]:
    """View name -> its SQL, quotes removed (DuckDB quotes only the names that need it)."""
    rows = cat.connection.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall()
    return {name: sql.replace('"', "") for name, sql in rows}


def test_the_default_catalog_reads_index_and_prior_versions_from_the_local_copy(catalog):
    assert catalog.local_copy is not None and catalog.local_copy.is_file()
    views = _views(catalog)
    for name in ("index", "prior_versions_index"):
        assert views[name] == f"CREATE VIEW {name} AS SELECT * FROM idc_local_copy.main.{name};"
    assert views["collections_index"] == (
        "CREATE VIEW collections_index AS SELECT * FROM "
        f"read_parquet('{known_tables()['collections_index'].bundled_path}');")


def test_without_the_local_copy_every_view_reads_its_parquet_file(parquet_catalog):
    assert parquet_catalog.local_copy is None
    views = _views(parquet_catalog)
    assert views["index"] == f"CREATE VIEW index AS SELECT * FROM read_parquet('{SHIPPED['index']}');"
    assert views["prior_versions_index"] == (
        f"CREATE VIEW prior_versions_index AS SELECT * FROM read_parquet('{SHIPPED['prior_versions_index']}');")
    attached = [r[0] for r in parquet_catalog.connection.execute("SELECT database_name FROM duckdb_databases()").fetchall()]
    assert "idc_local_copy" not in attached


def test_a_copy_that_cannot_be_made_in_the_given_directory_falls_back_to_parquet(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cat = Catalog(download=False, local_copy=blocker / "cache")
    assert cat.local_copy is None
    assert _views(cat)["index"] == f"CREATE VIEW index AS SELECT * FROM read_parquet('{SHIPPED['index']}');"
    row = cat.sql(f"SELECT collection_id FROM index WHERE SeriesInstanceUID = '{PANCREAS_SLIDE}'")
    assert row.column(0).to_pylist() == ["tcga_paad"]


def test_the_views_made_at_once_are_the_tables_on_this_machine(index_dir, tmp_path):
    cat = Catalog(index_dir=index_dir, cache_dir=tmp_path / "cache", download=False)
    made = set(_views(cat))
    shipped = {"index", "prior_versions_index", "collections_index", "analysis_results_index", "version_metadata_index"}
    assert shipped | {"sm_index", "seg_index"} <= made  # the fixture tables, without a query naming them
    assert "ct_index" not in made or (Path(index_dir) / "ct_index.parquet").exists()
    import idc_index_data

    assert repr(cat) == (f"<Catalog IDC v{idc_index_data.__version__.split('.')[0]} (idc-index-data "
                         f"{idc_index_data.__version__}), views: {', '.join(sorted(made))}>")
    assert cat.idc_version == int(idc_index_data.__version__.split(".")[0])
    assert cat.data_version == idc_index_data.__version__


def test_urls_are_kept_as_a_tuple(tmp_path):
    cat = Catalog(cache_dir=tmp_path, download=False, urls=["http://127.0.0.1:9/{name}", "http://127.0.0.1:9/b/{name}"])
    assert cat.store.urls == ("http://127.0.0.1:9/{name}", "http://127.0.0.1:9/b/{name}")
    assert Catalog(cache_dir=tmp_path, download=False).store.urls == catalog_module.TableStore().urls


def test_available_ensure_and_columns(fixture_catalog, tmp_path):
    cat = Catalog(cache_dir=tmp_path, download=False)
    assert cat.available("index") and cat.available("collections_index")
    if not any(p.is_file() for p in cat.store.candidates("sm_index")):
        assert not cat.available("sm_index")
    assert fixture_catalog.available("sm_index")
    with pytest.raises(UnknownTableError, match=r"^unknown table 'sm_indx' \(did you mean sm_index\?\)\. "):
        cat.ensure("sm_indx")
    with pytest.raises(UnknownTableError, match=r"^unknown table 'nope'\. Available now: "):
        cat.columns("nope")
    import pyarrow.parquet as pq

    shipped = pq.read_schema(known_tables()["collections_index"].bundled_path).names
    assert cat.columns("collections_index") == shipped


def test_an_optional_table_is_made_a_view_on_first_use(index_dir, tmp_path):
    import shutil

    local = tmp_path / "dir"
    local.mkdir()
    cat = Catalog(index_dir=local, cache_dir=tmp_path / "cache", download=False)
    assert "sm_index" not in _views(cat)
    shutil.copy(Path(index_dir) / "sm_index.parquet", local / "sm_index.parquet")
    n = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [str(local / "sm_index.parquet")]).fetchone()[0]
    # the file is named in allowed_paths from the start (every candidate place), so it reads once there
    assert cat.sql("SELECT count(*) AS n FROM sm_index").column(0).to_pylist() == [n]
    assert _views(cat)["sm_index"] == f"CREATE VIEW sm_index AS SELECT * FROM read_parquet('{local / 'sm_index.parquet'}');"
    cat.ensure("sm_index")  # already a view: nothing happens
    assert "sm_index" in repr(cat)


def test_a_broken_table_file_message_in_full(tmp_path):
    broken = tmp_path / "seg_index.parquet"
    broken.write_bytes(b"PAR1 but not parquet")
    with pytest.raises(TableUnavailableError) as info:
        Catalog(index_dir=tmp_path, cache_dir=tmp_path / "cache", download=False)
    message = str(info.value)
    assert message.startswith(f"table 'seg_index': {broken} is not a readable Parquet file (")
    assert message.endswith("); delete or replace it (`cohort fetch seg_index` downloads it again once it is gone)")
    assert "\n" not in message
    inner = message[len(f"table 'seg_index': {broken} is not a readable Parquet file ("):-len(
        "); delete or replace it (`cohort fetch seg_index` downloads it again once it is gone)")]
    assert inner and str(broken) in inner


# -- add_view ----------------------------------------------------------------------------------------
def test_add_view_in_a_schema_and_kept_when_the_sandbox_is_rebuilt(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    pq.write_table(pa.table({"x": [1, 2, 3]}), first / "a.parquet")
    pq.write_table(pa.table({"y": [10, 20]}), second / "b.parquet")
    cat = Catalog(download=False)
    cat.add_view("plain", "SELECT 7 AS seven")  # no directory: the sandbox stays
    con = cat.connection
    cat.add_view("h.one", f"SELECT * FROM read_parquet('{first}{os.sep}*.parquet')", allow_dir=first)
    assert cat.connection is not con  # rebuilt to allow the directory
    assert f"{first}{os.sep}" in _setting(cat.connection, "allowed_directories")
    con = cat.connection
    cat.add_view("h.again", f"SELECT sum(x) AS s FROM read_parquet('{first}{os.sep}a.parquet')", allow_dir=first)
    assert cat.connection is con  # the directory was allowed already
    cat.add_view("two", f"SELECT * FROM read_parquet('{second}{os.sep}*.parquet')", allow_dir=second)
    assert {f"{first}{os.sep}", f"{second}{os.sep}"} <= set(_setting(cat.connection, "allowed_directories"))
    # every view survives the rebuilds, in its schema
    assert cat.rows("SELECT * FROM plain") == (["seven"], [(7,)])
    assert cat.rows("SELECT sum(x) AS s FROM h.one") == (["s"], [(6,)])
    assert cat.rows("SELECT s FROM h.again") == (["s"], [(6,)])
    assert cat.rows("SELECT sum(y) AS s FROM two") == (["s"], [(30,)])
    assert cat.rows("SELECT schema_name, view_name FROM duckdb_views() WHERE view_name IN ('one', 'again', 'plain') "
                    "ORDER BY view_name") == (["schema_name", "view_name"], [("h", "again"), ("h", "one"), ("main", "plain")])
    cat.ensure("plain")  # an added view needs nothing
    cat.ensure("h.one")
    with pytest.raises(ReadOnlyError):
        cat.sql(f"SELECT * FROM read_text('{tmp_path}{os.sep}x')")


def test_add_view_through_a_registered_filesystem_survives_a_rebuild(tmp_path):
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs = fsspec.filesystem("memory")
    root = f"memory://h-mutcov-{os.getpid()}-{tmp_path.name}"
    with fs.open(f"{root}/pre/h.parquet", "wb") as out:
        pq.write_table(pa.table({"x": [1, 2]}), out)
    cat = Catalog(download=False)
    cat.add_view("mem", f"SELECT * FROM read_parquet('{root}/pre/*.parquet')", allow_dir=f"{root}/pre", filesystem=fs)
    assert cat.rows("SELECT sum(x) AS s FROM mem") == (["s"], [(3,)])
    local = tmp_path / "d"
    local.mkdir()
    cat.add_view("other", "SELECT 1 AS one", allow_dir=local)  # a rebuild: the filesystem is registered again
    assert cat.rows("SELECT sum(x) AS s FROM mem") == (["s"], [(3,)])
    with pytest.raises(ReadOnlyError):  # only the prefix is allowed
        cat.sql(f"SELECT * FROM read_parquet('{root}/h.parquet')")


# -- UID lookups -------------------------------------------------------------------------------------
ODD = ["1.2.3.not.a.series", "1.2\udcff", "1.2\x00.3", "x'y"]


@pytest.mark.parametrize("local", [True, False])
def test_unknown_uids_in_the_order_given_without_repeats(local, catalog, parquet_catalog, shipped_uids):
    cat = catalog if local else parquet_catalog
    current, prior = shipped_uids
    wanted = [ODD[0], current[0], prior[0], ODD[1], ODD[0], current[1], ODD[2], prior[1], ODD[3], ODD[2]]
    assert cat.unknown_uids(wanted) == [ODD[0], ODD[1], ODD[2], ODD[3]]
    assert cat.unknown_uids(iter([current[2], prior[2]])) == []
    assert cat.unknown_uids([]) == []
    assert cat.unknown_uids(["9.9"]) == ["9.9"]


@pytest.mark.parametrize("local", [True, False])
def test_unknown_uids_that_all_hold_a_nul(local, catalog, parquet_catalog):
    """A NUL cannot be written in a SQL literal: such a list is looked up as an Arrow table."""
    cat = catalog if local else parquet_catalog
    assert cat.unknown_uids(["1.2\x00", "1.3\x00x"]) == ["1.2\x00", "1.3\x00x"]


def test_unknown_uids_beyond_the_literal_list(parquet_catalog, shipped_uids):
    current, prior = shipped_uids
    made_up = [f"1.2.826.0.1.3680043.99999.{i}" for i in range(10_001)]
    wanted = [current[0], *made_up, prior[0]]
    assert parquet_catalog.unknown_uids(wanted) == made_up


# -- queries: results and errors in full ---------------------------------------------------------------
def test_rows_are_names_and_tuples(catalog):
    assert catalog.rows("SELECT 1 AS a, 'x' AS b UNION ALL SELECT 2, NULL ORDER BY a") == (["a", "b"], [(1, "x"), (2, None)])
    assert catalog.rows("SELECT $v AS v", {"v": 5}) == (["v"], [(5,)])


def test_df_converts_as_duckdb_does(fixture_catalog):
    import pyarrow as pa

    df = fixture_catalog.df("SELECT sum(instanceCount) AS n FROM index WHERE SeriesInstanceUID = $u", {"u": PANCREAS_SLIDE})
    assert str(df["n"].dtype) == "float64"
    got = fixture_catalog.df("SELECT count(*) AS n FROM w JOIN index USING (SeriesInstanceUID)",
                             register={"w": pa.table({"SeriesInstanceUID": [PANCREAS_SLIDE, "1.2"]})})
    assert got["n"].tolist() == [1]


def test_a_registered_table_may_shadow_an_index_table_name(tmp_path):
    import pyarrow as pa

    cat = Catalog(cache_dir=tmp_path, download=False)
    if cat.available("sm_index"):
        pytest.skip("sm_index is on this machine: the shadowing would not be seen")  # pragma: no cover
    # sm_index is not here and may not be downloaded: registered under its name, it is not fetched
    got = cat.sql("SELECT count(*) AS n FROM sm_index", register={"sm_index": pa.table({"x": [1, 2, 3]})})
    assert got.column(0).to_pylist() == [3]


def test_a_missing_parameter_is_a_parameter_error_in_full(catalog):
    with pytest.raises(ParameterError) as info:
        catalog.sql("SELECT $a + $b AS s", {"a": 1}, source="sum.sql")
    err = info.value
    assert err.message == ("Invalid Input Error: Values were not provided for the following prepared statement "
                           "parameters: b")
    assert str(err) == err.message + " (in sum.sql; with parameters a=1)"
    assert err.sql == "SELECT $a + $b AS s" and err.source == "sum.sql" and err.params == {"a": 1}


def test_an_unknown_table_in_full(catalog):
    with pytest.raises(UnknownTableError) as info:
        catalog.sql("SELECT * FROM nosuchtable")
    assert str(info.value).startswith("unknown table 'nosuchtable'. Available now: ")
    with pytest.raises(UnknownTableError) as info:
        catalog.sql('SELECT * FROM "version_metadata_indx"')
    assert str(info.value).startswith("unknown table 'version_metadata_indx' (did you mean version_metadata_index?). ")


def test_reading_a_file_is_refused_in_full(catalog):
    with pytest.raises(ReadOnlyError) as info:
        catalog.sql("SELECT * FROM read_csv('/etc/passwd')", source="f.sql")
    assert str(info.value) == ('Permission Error: Cannot access file "/etc/passwd" - file system operations are '
                               "disabled by configuration; saved queries may only read the index tables (in f.sql)")


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT Modalty FROM index",
     'Binder Error: Referenced column "Modalty" not found in FROM clause! Did you mean: Modality?'),
    ("SELECT colection_id FROM index",
     'Binder Error: Referenced column "colection_id" not found in FROM clause! Did you mean: collection_id?'),
    # no table named: the names of every table are searched
    ("SELECT seriesinstanceuidd FROM (SELECT 1 AS a)",
     'Binder Error: Referenced column "seriesinstanceuidd" not found in FROM clause! '
     "Did you mean: SeriesInstanceUID, segmented_SeriesInstanceUID, SOPInstanceUID?"),
    # nothing close: DuckDB's own message on one line, without its LINE diagram
    ("SELECT zzzzzz FROM index",
     'Binder Error: Referenced column "zzzzzz" not found in FROM clause! Candidate bindings: '),
])
def test_an_unknown_column_message(sql, message, catalog):
    with pytest.raises(QueryError) as info:
        catalog.sql(sql)
    text = str(info.value)
    assert text.startswith(message)
    assert "\n" not in text and "LINE 1" not in text
    if "Did you mean" in message:
        assert text == message


def test_an_unknown_column_suggests_at_most_three_names(catalog):
    with pytest.raises(QueryError) as info:
        catalog.sql("SELECT Serie FROM index")
    got = str(info.value).split("Did you mean: ")[1].rstrip("?").split(", ")
    assert 1 <= len(got) <= 3
    assert got[0] in {"Series", "SeriesDate", "SeriesNumber", "SeriesDescription"} or got[0].lower().startswith("serie")


def test_other_duckdb_errors_are_query_errors_on_one_line(catalog):
    with pytest.raises(QueryError) as info:
        catalog.sql("SELECT CAST('x' AS INTEGER) AS v", source="c.sql")
    assert type(info.value) is QueryError
    assert str(info.value) == "Conversion Error: Could not convert string 'x' to INT32 (in c.sql)"


# -- check_read_only -----------------------------------------------------------------------------------
def test_check_read_only_messages_in_full():
    cases = {
        "": "no SQL statement found",
        "SELEC 1": 'SQL does not parse: Parser Error: syntax error at or near "SELEC"',
    }
    for sql, message in cases.items():
        with pytest.raises(QueryError) as info:
            catalog_module.check_read_only(sql, source="q.sql", params={"n": 2})
        assert type(info.value) is QueryError
        assert info.value.message == message
        assert str(info.value) == message + " (in q.sql; with parameters n=2)"
        assert info.value.sql == sql
    with pytest.raises(QueryError) as info:
        catalog_module.check_read_only("SELECT 1; SELECT 2; SELECT 3", source="a.sql", params={"x": 1})
    assert str(info.value) == "3 statements found; a query holds exactly one SELECT (in a.sql; with parameters x=1)"
    assert info.value.sql == "SELECT 1; SELECT 2; SELECT 3"
    catalog_module.check_read_only("SELECT 1")  # a single SELECT passes


@pytest.mark.parametrize(("sql", "source", "where"), [
    ("-- head\n-- more\n\nSET threads=1", "q.sql", "q.sql:4: SET"),
    ("SELECT 1;\n\nCOPY (SELECT 1) TO 'x'", "q.sql", "q.sql:3: COPY"),
    ("SELECT 1; SET threads=1", None, "statement 2: SET"),
    ("CREATE TABLE t AS SELECT 1", None, "statement 1: CREATE"),
])
def test_a_write_is_refused_naming_where(sql, source, where):
    with pytest.raises(ReadOnlyError) as info:
        catalog_module.check_read_only(sql, source=source, params={"p": 1})
    assert info.value.message == f"{where} {READ_ONLY_TAIL}"
    assert str(info.value) == f"{where} {READ_ONLY_TAIL} (with parameters p=1)"  # the place is in the message already
    assert info.value.sql == sql and info.value.source is None


# -- the table-name scanner ------------------------------------------------------------------------------
KNOWN = ("index", "prior_versions_index", "sm_index", "ct_index", "Mixed_Case")


@pytest.mark.parametrize(("sql", "names"), [
    ("SELECT * FROM index POSITIONAL JOIN SM_INDEX", {"index", "sm_index"}),
    ('SELECT * FROM "index" AS i, "sm_index"', {"index", "sm_index"}),
    ("SELECT * FROM archive.sm_index, index", {"index"}),
    ("SELECT * FROM mixed_case", {"Mixed_Case"}),
    # JOIN ... USING makes DuckDB's own scanner fail: words are read instead, without comments, strings,
    # qualified names
    ("SELECT 'sm_index', x FROM index JOIN prior_versions_index USING (SeriesInstanceUID) -- ct_index\n",
     {"index", "prior_versions_index"}),
    ("SELECT 'it''s ct_index' FROM \"index\" JOIN archive.sm_index USING (SeriesInstanceUID)", {"index"}),
    ("SELECT * FROM Index JOIN Mixed_case USING (a)", {"index", "Mixed_Case"}),
])
def test_referenced_tables(sql, names):
    assert catalog_module.referenced_tables(sql, KNOWN) == names


def test_quoted_names_with_spaces_inside():
    assert catalog_module.referenced_tables('SELECT * FROM "my table" AS t', ["my table", "my"]) == {"my table"}
    assert catalog_module.referenced_tables('SELECT * FROM "my table"', ["my table", "my"]) == {"my table"}


def test_quoted_names_with_quotes_inside():
    assert catalog_module.referenced_tables('SELECT * FROM "a""b"', ['a"b', "b"]) == {'a"b'}
    assert catalog_module.referenced_tables('SELECT * FROM "s"."index"', ["index"]) == set()


@pytest.mark.parametrize(("sql", "line"), [
    ("SELECT 1", 1),
    ("\n\nSELECT 1", 3),
    ("-- a comment\n   -- another\n\nSET x = 1", 4),
])
def test_line_of_a_statement(sql, line):
    assert catalog_module._line_of(sql, duckdb.extract_statements(sql)[0].query) == line


def test_line_of_a_statement_not_in_the_text():
    assert catalog_module._line_of("SELECT 1", "SELECT 2") is None


def test_text_helpers():
    assert catalog_module._message("  first\n  second  \n\nLINE 1: x\n ^") == "first second"
    assert catalog_module._message("only\n\n\nmore\n\nLINE") == "only"
    assert catalog_module._first_line("  \n") == "  \n"
    assert catalog_module._first_line("\n a \nb") == "a "
    assert catalog_module._dir_prefix("s3://b/p//") == "s3://b/p/"
    assert catalog_module._dir_prefix("s3://b/p") == "s3://b/p/"
    assert catalog_module._dir_prefix(Path("/tmp/x")) == "/tmp/x" + os.sep
    assert catalog_module._is_url("s3://b/p") and catalog_module._is_url("gs+x.y-z://b")
    assert not catalog_module._is_url("/tmp/s3://x") and not catalog_module._is_url("1s3://b")
    assert not catalog_module._is_url(Path("s3://b")) and not catalog_module._is_url("s3:/b")
    assert catalog_module._create_view("v", "SELECT 1") == 'CREATE OR REPLACE VIEW "v" AS SELECT 1'
    assert catalog_module._create_view("a.b", "SELECT 1") == (
        'CREATE SCHEMA IF NOT EXISTS "a"; CREATE OR REPLACE VIEW "a"."b" AS SELECT 1')
    assert catalog_module._is_utf8("ü.1") and not catalog_module._is_utf8("1.2\udcff")


def test_unqualified():
    assert catalog_module._unqualified('"in""dex" AS i') == 'in"dex'
    assert catalog_module._unqualified("index AS i") == "index"
    assert catalog_module._unqualified("index") == "index"
    assert catalog_module._unqualified("archive.sm_index AS a") is None
    assert catalog_module._unqualified('"a"."b"') is None


# -- what the first mutation run showed untested ---------------------------------------------------------
def test_add_view_resolves_a_relative_directory(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "sub").mkdir()
    pq.write_table(pa.table({"x": [4, 5]}), tmp_path / "sub" / "a.parquet")
    monkeypatch.chdir(tmp_path)
    cat = Catalog(download=False)
    cat.add_view("rel", f"SELECT * FROM read_parquet('{tmp_path}{os.sep}sub{os.sep}a.parquet')", allow_dir="sub")
    assert cat.rows("SELECT sum(x) AS s FROM rel") == (["s"], [(9,)])
    assert f"{tmp_path}{os.sep}sub{os.sep}" in _setting(cat.connection, "allowed_directories")


def test_two_filesystems_stay_registered_through_rebuilds(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from fsspec.implementations.memory import MemoryFileSystem

    class OtherMemory(MemoryFileSystem):  # the same in-memory store under a second protocol
        protocol = "hmutcovmem"

        @classmethod
        def _strip_protocol(cls, path):
            return MemoryFileSystem._strip_protocol(path.replace("hmutcovmem://", "memory://", 1))

    one, two = MemoryFileSystem(), OtherMemory()
    root = f"h-mutcov-{os.getpid()}-{tmp_path.name}"
    with one.open(f"/{root}/a/x.parquet", "wb") as out:
        pq.write_table(pa.table({"x": [1]}), out)
    with one.open(f"/{root}/b/y.parquet", "wb") as out:
        pq.write_table(pa.table({"y": [2]}), out)
    cat = Catalog(download=False)
    cat.add_view("a", f"SELECT * FROM read_parquet('memory://{root}/a/x.parquet')", allow_dir=f"memory://{root}/a",
                 filesystem=one)
    cat.add_view("b", f"SELECT * FROM read_parquet('hmutcovmem://{root}/b/y.parquet')",
                 allow_dir=f"hmutcovmem://{root}/b", filesystem=two)
    assert cat.rows("SELECT x, y FROM a, b") == (["x", "y"], [(1, 2)])


def test_a_file_that_appears_later_is_available_before_its_view(index_dir, tmp_path):
    import shutil

    local = tmp_path / "dir"
    local.mkdir()
    cat = Catalog(index_dir=local, cache_dir=tmp_path / "cache", download=False)
    if cat.available("sm_index"):
        pytest.skip("sm_index is in idc-index's cache on this machine")  # pragma: no cover
    shutil.copy(Path(index_dir) / "sm_index.parquet", local / "sm_index.parquet")
    assert "sm_index" not in _views(cat) and cat.available("sm_index")


def test_rows_and_df_name_the_source_in_errors(catalog):
    for run in (catalog.rows, catalog.df, catalog.sql):
        with pytest.raises(QueryError) as info:
            run("SELECT CAST('x' || $p AS INTEGER) AS v", {"p": "y"}, source="mine.sql")
        assert str(info.value) == ("Conversion Error: Could not convert string 'xy' to INT32 "
                                   "(in mine.sql; with parameters p='y')")
        assert info.value.source == "mine.sql" and info.value.sql == "SELECT CAST('x' || $p AS INTEGER) AS v"
        assert info.value.params == {"p": "y"}


def test_only_a_missing_table_is_an_unknown_table(catalog):
    with pytest.raises(QueryError) as info:
        catalog.sql("SELECT nosuchfunc(1) AS v")
    assert type(info.value) is QueryError
    assert str(info.value).startswith("Catalog Error: Scalar Function with name nosuchfunc does not exist!")
    # a name DuckDB's message cannot delimit (a space in it) is still an unknown table
    with pytest.raises(UnknownTableError) as info:
        catalog.sql('SELECT * FROM "no such"')
    assert str(info.value).startswith("unknown table 'no such'. Available now: ")  # it said '?' before


def test_only_a_parameter_problem_is_a_parameter_error(catalog):
    with pytest.raises(QueryError) as info:
        catalog.sql("SELECT CAST('parameter' AS INTEGER) AS v")
    assert type(info.value) is QueryError


def test_a_refused_read_keeps_sql_and_parameters(catalog):
    sql = "SELECT $x AS x, * FROM read_csv('/etc/passwd')"
    with pytest.raises(ReadOnlyError) as info:
        catalog.sql(sql, {"x": 1}, source="f.sql")
    err = info.value
    assert err.sql == sql and err.params == {"x": 1} and err.source == "f.sql"
    assert str(err).endswith("; saved queries may only read the index tables (in f.sql; with parameters x=1)")


def test_urls_and_prefixes_in_any_case():
    assert catalog_module._is_url("S3://b/p") and catalog_module._is_url("GS://b")
    assert catalog_module._dir_prefix("s3://b/boX/") == "s3://b/boX/"
    assert catalog_module._dir_prefix("s3://b/XX") == "s3://b/XX/"


@pytest.mark.parametrize(("sql", "where"), [
    ("SET threads=1;\nSET threads=1", "q.sql:1: SET"),  # the first of two equal statements
    ("SET threads=1;\n\nSELECT 1", "q.sql:1: SET"),  # lines after the statement do not count
])
def test_a_write_is_placed_at_its_own_line(sql, where):
    with pytest.raises(ReadOnlyError) as info:
        catalog_module.check_read_only(sql, source="q.sql")
    assert info.value.message == f"{where} {READ_ONLY_TAIL}"


def test_a_catalog_made_with_the_defaults_reads_the_local_copy_of_this_version():
    import idc_index_data

    cat = Catalog(download=False)  # made here: a session fixture's construction is mapped to one test only
    assert cat.local_copy is not None and cat.local_copy.is_file()
    assert cat.local_copy.parent.name == idc_index_data.__version__
    with duckdb.connect(str(cat.local_copy), read_only=True) as con:  # the record inside the copy
        record = json.loads(con.execute(f"SELECT record FROM {META_TABLE}").fetchone()[0])
    assert record["idc_index_data"] == idc_index_data.__version__  # what the copy was made from
    assert _views(cat)["index"] == "CREATE VIEW index AS SELECT * FROM idc_local_copy.main.index;"


def test_downloads_are_on_by_default(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{{version}}/{{name}}.parquet"
    import idc_index_data

    tried = url.format(version=idc_index_data.__version__, name="sm_index")
    cat = Catalog(cache_dir=tmp_path, urls=(url,), local_copy=False)
    if cat.available("sm_index"):
        pytest.skip("sm_index is in idc-index's cache on this machine")  # pragma: no cover
    with pytest.raises(TableUnavailableError) as info:
        cat.ensure("sm_index")
    assert str(info.value).startswith(f"table 'sm_index' is not on this machine and could not be fetched (tried {tried}: "
                                      "ConnectionError")
    off = Catalog(cache_dir=tmp_path, urls=(url,), local_copy=False, download=False)
    with pytest.raises(TableUnavailableError, match=r"^table 'sm_index' is not on this machine, nor cached, and "
                                                    r"downloads are off"):
        off.ensure("sm_index")


def test_a_lookup_of_ten_thousand_uids_loads_no_pandas():
    import subprocess
    import sys

    # up to 10,000 UIDs go into a list literal: an Arrow table of them would import pandas (a second, 77 MB)
    code = (
        "import sys; from cohort import Catalog; cat = Catalog(download=False, local_copy=False); "
        "uids = ['1.2.826.0.1.3680043.99999.%d' % i for i in range(10_000)]; "
        "print(cat.unknown_uids(uids) == uids, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


def test_a_refused_write_through_a_query_names_its_source_and_parameters(catalog):
    with pytest.raises(ReadOnlyError) as info:
        catalog.sql("SET threads = 1", {"p": 1}, source="w.sql")
    assert str(info.value) == f"w.sql:1: SET {READ_ONLY_TAIL} (with parameters p=1)"


def test_comments_and_strings_leave_no_words_behind():
    # DuckDB's scanner fails on JOIN ... USING, so the words are read: what replaces a comment or string is no name
    sql = "SELECT 'a' FROM index JOIN b USING (c) -- note"
    assert catalog_module.referenced_tables(sql, ["index", "xx", "XX"]) == {"index"}


def test_a_relative_directory_stays_allowed_after_a_change_of_directory(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name in ("sub", "other", "elsewhere"):
        (tmp_path / name).mkdir()
    pq.write_table(pa.table({"x": [4, 5]}), tmp_path / "sub" / "a.parquet")
    monkeypatch.chdir(tmp_path)
    cat = Catalog(download=False)
    cat.add_view("rel", f"SELECT * FROM read_parquet('{tmp_path}{os.sep}sub{os.sep}a.parquet')", allow_dir="sub")
    monkeypatch.chdir(tmp_path / "elsewhere")
    cat.add_view("two", "SELECT 1 AS one", allow_dir=tmp_path / "other")  # the sandbox is rebuilt here
    assert cat.rows("SELECT sum(x) AS s FROM rel") == (["s"], [(9,)])
