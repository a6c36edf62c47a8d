"""The harvest directory's invariant: an instances part counts only when its log part exists."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from cohort import Catalog
from cohort.errors import HarvestError
from cohort.harvest import INSTANCE_SCHEMA, LOG_SCHEMA, HarvestStore, harvest_status, instance_row, open_harvest
from cohort.harvest.store import part_name

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _batch(series: str, sops: list[str], status: str = "ok"):
    rows = [{**instance_row({"00080018": {"vr": "UI", "Value": [sop]}}, "1.2", series),
             "endpoint": "e", "run_id": "r", "harvested_at": NOW} for sop in sops]
    log = [{"StudyInstanceUID": "1.2", "SeriesInstanceUID": series, "status": status, "attempts": 1,
            "instances": len(rows), "bytes": 10, "seconds": 0.1, "endpoint": "e", "run_id": "r", "finished_at": NOW}]
    return pa.Table.from_pylist(rows, schema=INSTANCE_SCHEMA), pa.Table.from_pylist(log, schema=LOG_SCHEMA)


def test_orphan_instances_part_is_ignored_then_removed(tmp_path):
    store = HarvestStore(tmp_path).open()
    store.write(part_name("r", 0), *_batch("1.2.1", ["1.2.1.1", "1.2.1.2"]))
    store.write(part_name("r", 1), *_batch("1.2.2", [], status="http_error"))
    # a run killed between its two renames leaves an instances part without its log part
    instances, _ = _batch("1.2.3", ["1.2.3.1"])
    store._write_atomic(store.instances_dir / part_name("r", 2), instances)
    (store.log_dir / "part-x.parquet.tmp").write_bytes(b"half a file")

    assert [p.name for p in store.orphans()] == [part_name("r", 2)]
    assert sorted(store.read_instances(["SOPInstanceUID"]).column(0).to_pylist()) == ["1.2.1.1", "1.2.1.2"]
    assert store.completed() == {"1.2.1"}  # http_error is not final: a rerun asks again
    catalog = Catalog(download=False)
    open_harvest(catalog, tmp_path)
    assert catalog.sql("SELECT count(*) AS n FROM harvest_instances").to_pylist() == [{"n": 2}]
    assert catalog.sql("SELECT count(*) AS n FROM harvest_series").to_pylist() == [{"n": 2}]
    status = {r["status"]: r for r in harvest_status(tmp_path).to_pylist()}
    assert (status["ok"]["series"], status["ok"]["instances"], status["http_error"]["complete"]) == (1, 2, False)

    HarvestStore(tmp_path).open()  # what a rerun does first
    assert not store.orphans() and not list(store.log_dir.glob("*.tmp"))


def test_other_schema_and_empty_directory_are_clear_errors(tmp_path):
    with pytest.raises(HarvestError, match="no harvest"):
        open_harvest(Catalog(download=False), tmp_path)
    store = HarvestStore(tmp_path).open()
    store._write_atomic(store.log_dir / "part-old.parquet", pa.table({"x": [1]}))
    with pytest.raises(HarvestError, match="another schema"):
        HarvestStore(tmp_path).open()
    (tmp_path / "file").write_text("")
    with pytest.raises(HarvestError, match="is a file"):
        HarvestStore(tmp_path / "file").open()


def test_unusable_directory_and_unreadable_part_are_harvest_errors(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(HarvestError, match="cannot use .* as a harvest directory"):
        HarvestStore(afile / "out").open()
    (tmp_path / "h" / "log").mkdir(parents=True)
    (tmp_path / "h" / "log" / part_name("r", 0)).write_bytes(b"junk")
    with pytest.raises(HarvestError, match="is not a readable Parquet part"):
        HarvestStore(tmp_path / "h").open()


def test_a_part_that_cannot_be_written_is_a_harvest_error(tmp_path):
    import shutil

    store = HarvestStore(tmp_path / "h").open()
    shutil.rmtree(store.log_dir)
    store.log_dir.write_text("not a directory")
    with pytest.raises(HarvestError, match="cannot write part .* run the same command again to resume"):
        store.write(part_name("r", 0), *_batch("1.2.1", ["1.2.1.1"]))
