"""The local DuckDB copy of index and prior_versions_index: same rows as the shipped files, made once,
made again when the shipped files change, safe to make from several threads at once, and skipped
(the Parquet files are read) where it cannot be made."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cohort import Catalog
from cohort.localcopy import ALIAS, LocalCopy
from cohort.tables import data_version, known_tables
from fixtures.index_tables import PANCREAS_SLIDE

SHIPPED = {name: known_tables()[name].bundled_path for name in ("index", "prior_versions_index")}


@pytest.fixture(scope="module")
def parquet_catalog() -> Catalog:
    return Catalog(download=False, local_copy=False)


def test_the_default_catalog_reads_the_local_copy(catalog):
    assert catalog.local_copy is not None and catalog.local_copy.is_file()
    plan = catalog.connection.execute(
        f"EXPLAIN ANALYZE SELECT * FROM index WHERE SeriesInstanceUID = '{PANCREAS_SLIDE}'").fetchall()[0][1]
    assert "Index Scan" in plan


@pytest.mark.parametrize("table", ["index", "prior_versions_index"])
def test_the_copy_has_the_shipped_columns_types_and_rows_in_order(table, catalog, parquet_catalog):
    ours = catalog.connection.execute(f'DESCRIBE "{table}"').fetchall()
    shipped = pq.read_schema(SHIPPED[table])
    assert [r[0] for r in ours] == shipped.names
    assert ours == parquet_catalog.connection.execute(f'DESCRIBE "{table}"').fetchall()
    # every value, in file order: a digest per column over (row number, value)
    sql = f'SELECT count(*), bit_xor(hash(n, *COLUMNS(* EXCLUDE n))) FROM (SELECT row_number() OVER () AS n, * FROM "{table}")'
    assert catalog.sql(sql).to_pylist() == parquet_catalog.sql(sql).to_pylist()
    assert catalog.sql(f'SELECT count(*) AS n FROM "{table}"').column(0)[0].as_py() == pq.read_metadata(
        SHIPPED[table]).num_rows


def test_lookups_agree_with_the_parquet_files(catalog, parquet_catalog):
    uids = parquet_catalog.sql("SELECT SeriesInstanceUID FROM index USING SAMPLE 300 ROWS (reservoir, 7)")
    wanted = uids.column(0).to_pylist() + [PANCREAS_SLIDE, "1.2.3.not.a.series"]
    sql = "SELECT * FROM index WHERE SeriesInstanceUID IN (SELECT SeriesInstanceUID FROM w) ORDER BY SeriesInstanceUID"
    w = pa.table({"SeriesInstanceUID": wanted})
    assert catalog.sql(sql, register={"w": w}).equals(parquet_catalog.sql(sql, register={"w": w}))


# -- making the copy: on small tables cut from the shipped ones (milliseconds instead of a minute) --------
@pytest.fixture
def small_sources(tmp_path, parquet_catalog) -> dict[str, Path]:
    out = {}
    for name in ("index", "prior_versions_index"):
        path = tmp_path / "shipped" / f"{name}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(parquet_catalog.sql(f'SELECT * FROM "{name}" LIMIT 500'), path)
        out[name] = path
    return out


def _attach(copy: LocalCopy) -> duckdb.DuckDBPyConnection | None:
    con = duckdb.connect()
    return con if copy.attach(con) else None


def _made(caplog) -> int:
    return sum("made the local index copy" in r.getMessage() for r in caplog.records)


def test_made_once_then_reused(tmp_path, small_sources, caplog):
    caplog.set_level(logging.INFO, logger="cohort.localcopy")
    copy = LocalCopy(tmp_path / "cache", small_sources, data_version())
    con = _attach(copy)
    assert con is not None and _made(caplog) == 1
    n = con.execute(f'SELECT count(*) FROM {ALIAS}."index"').fetchone()[0]
    assert n == pq.read_metadata(small_sources["index"]).num_rows == 500
    assert _attach(LocalCopy(tmp_path / "cache", small_sources, data_version())) is not None
    assert _made(caplog) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.suffix != ".lock") == sorted(
        [copy.path.name, "sources.json", copy.uid_file.name])


def test_made_again_when_the_shipped_file_changes(tmp_path, small_sources, parquet_catalog):
    copy = LocalCopy(tmp_path / "cache", small_sources, data_version())
    assert _attach(copy) is not None
    pq.write_table(parquet_catalog.sql("SELECT * FROM index LIMIT 20"), small_sources["index"])
    con = _attach(LocalCopy(tmp_path / "cache", small_sources, data_version()))
    assert con.execute(f'SELECT count(*) FROM {ALIAS}."index"').fetchone()[0] == 20


def test_made_again_for_another_idc_index_data_version(tmp_path, small_sources, caplog):
    caplog.set_level(logging.INFO, logger="cohort.localcopy")
    assert _attach(LocalCopy(tmp_path / "cache", small_sources, "25.0.5")) is not None
    assert _attach(LocalCopy(tmp_path / "cache", small_sources, "26.0.0")) is not None
    assert _made(caplog) == 2


def test_a_broken_copy_is_made_again(tmp_path, small_sources):
    copy = LocalCopy(tmp_path / "cache", small_sources, data_version())
    copy.directory.mkdir(parents=True)
    copy.path.write_bytes(b"half a database")
    con = _attach(copy)
    assert con is not None
    assert con.execute(f'SELECT count(*) FROM {ALIAS}.prior_versions_index').fetchone()[0] == 500


def test_threads_making_it_at_once_make_it_once(tmp_path, small_sources, caplog):
    caplog.set_level(logging.INFO, logger="cohort.localcopy")
    results: list[bool] = []
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        results.append(_attach(LocalCopy(tmp_path / "cache", small_sources, data_version())) is not None)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4
    assert _made(caplog) == 1
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]


def test_an_unwritable_cache_falls_back_to_the_parquet_files(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    caplog.set_level(logging.WARNING, logger="cohort.localcopy")
    cat = Catalog(download=False, local_copy=blocker / "cache")
    assert cat.local_copy is None
    assert "reading the shipped Parquet files" in caplog.text
    row = cat.sql(f"SELECT collection_id FROM index WHERE SeriesInstanceUID = '{PANCREAS_SLIDE}'")
    assert row.column(0).to_pylist() == ["tcga_paad"]


def test_the_copy_is_read_only_in_the_sandbox(catalog):
    from cohort import ReadOnlyError

    with pytest.raises(ReadOnlyError):
        catalog.sql(f'DELETE FROM {ALIAS}."index"')
    with pytest.raises(ReadOnlyError):
        catalog.sql("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(duckdb.Error, match="read-only"):  # attached read-only, even past our SELECT check
        catalog.connection.execute(f'DELETE FROM {ALIAS}."index"')
