"""cohort/harvest/store.py: exact files, records, messages and tables, for a local directory and fsspec's
in-memory object store (no server, no subprocess: each test takes a fraction of a second).

Expectations are computed here independently of the store: sizes and sha256 of the files read back with
``hashlib``, rows read back with ``pyarrow.parquet``, names matched against the documented layout, the
messages written out whole. Faults are injected into the files (cut, grown, altered, removed) or through an
in-memory filesystem whose chosen operation raises.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from cohort import Catalog
from cohort.errors import HarvestError
from cohort.harvest import INSTANCE_SCHEMA, LOG_SCHEMA, HarvestStore, harvest_status, instance_row, open_harvest
from cohort.harvest.fs import LocalFiles, ObjectFiles
from cohort.harvest.lock import LEASE_NAME, LOCK_NAME
from cohort.harvest.store import INSTANCES, LOG, Commit, Part, Problem, new_run_id, part_name
from cohort.harvest.views import committed_parts, duckdb_source, harvest_stores, repair_harvest

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
RUN = "20260101T000000-abcdef"


def _batch(series: str, sops: list[str], status: str = "ok", finished: dt.datetime = NOW, endpoint: str = "e"):
    rows = [{**instance_row({"00080018": {"vr": "UI", "Value": [sop]}}, "1.2", series),
             "endpoint": endpoint, "run_id": "r", "harvested_at": NOW} for sop in sops]
    log = [{"StudyInstanceUID": "1.2", "SeriesInstanceUID": series, "status": status, "attempts": 1,
            "instances": len(rows), "bytes": 10 * len(rows), "seconds": 0.1, "endpoint": endpoint, "run_id": "r",
            "finished_at": finished}]
    return pa.Table.from_pylist(rows, schema=INSTANCE_SCHEMA), pa.Table.from_pylist(log, schema=LOG_SCHEMA)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _memory_url() -> tuple[str, MemoryFileSystem, str]:
    fs = fsspec.filesystem("memory")
    bucket = f"b{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    return f"memory://{bucket}/h", fs, f"{bucket}/h"


# -- names ------------------------------------------------------------------------------------------------
def test_run_ids_and_part_names_follow_the_documented_pattern(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Etc/GMT+5")  # five hours west of UTC: run ids are in UTC all the same
    time.tzset()
    try:
        before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        run = new_run_id()
        after = dt.datetime.now(dt.timezone.utc)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", run)
    stamp = dt.datetime.strptime(run[:15], "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc)
    assert before <= stamp <= after
    assert len({new_run_id()[16:] for _ in range(20)}) > 1  # random, not constant
    assert part_name(RUN, 0) == "part-20260101T000000-abcdef-00000.parquet"
    assert part_name(RUN, 123456) == "part-20260101T000000-abcdef-123456.parquet"
    assert Part("instances/x.parquet", 1, 2, "s").kind == "instances"
    assert Part("log/a/b.parquet", 1, 2, "s").kind == "log"
    assert str(Problem("c", "log/p.parquet", "missing")) == "log/p.parquet: missing"


# -- writing -------------------------------------------------------------------------------------------------
def test_parts_and_the_commit_record_hold_what_was_written(tmp_path):
    instances, log_ = _batch("1.2.1", ["1.2.1.1", "1.2.1.2"])
    assert HarvestStore(tmp_path).run_id is None
    with HarvestStore(tmp_path).open(RUN) as store:
        assert store.run_id == RUN
        assert store.commit(log_.slice(0, 0)) is None and store.write(instances, log_.slice(0, 0)) is None
        commit = store.write(instances, log_)
        other = store.commit(_batch("1.2.2", [])[1])  # no instances part given: an empty one is written
    names = [f"part-{RUN}-0000{i}.parquet" for i in range(4)]
    assert commit == Commit(names[1].removesuffix(".parquet"), commit.parts)
    assert [p.path for p in commit.parts] == [f"instances/{names[0]}", f"log/{names[1]}"]
    assert [p.path for p in other.parts] == [f"instances/{names[2]}", f"log/{names[3]}"]
    for part, rows in zip(commit.parts + other.parts, (2, 1, 0, 1)):
        data = (tmp_path / part.path).read_bytes()
        assert (part.rows, part.bytes, part.sha256) == (rows, len(data), _sha(data))
        assert pq.read_table(tmp_path / part.path).num_rows == rows
    assert pq.read_table(tmp_path / commit.parts[0].path).column("SOPInstanceUID").to_pylist() == ["1.2.1.1", "1.2.1.2"]
    assert pq.read_schema(tmp_path / commit.parts[0].path).equals(INSTANCE_SCHEMA, check_metadata=False)
    assert pq.read_schema(tmp_path / commit.parts[1].path).equals(LOG_SCHEMA, check_metadata=False)
    assert "zstd" in str(pq.ParquetFile(tmp_path / commit.parts[0].path).metadata.row_group(0).column(0).compression).lower()
    record = json.loads((tmp_path / "commits" / f"part-{RUN}-00001.json").read_text())
    committed = dt.datetime.fromisoformat(record.pop("committed_at"))
    assert committed.tzinfo is not None and abs(committed - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
    assert record == {"format": 1, "run_id": RUN, "series": 1, "parts": [
        {"path": p.path, "rows": p.rows, "bytes": p.bytes, "sha256": p.sha256} for p in commit.parts]}
    assert sorted(p.name for p in (tmp_path / "commits").iterdir()) == [f"part-{RUN}-00001.json",
                                                                        f"part-{RUN}-00003.json"]
    assert not list(tmp_path.rglob("*.tmp"))
    assert HarvestStore(tmp_path).commits() == [commit, other]


def test_written_commits_are_added_to_a_listing_already_read(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        assert store.commits() == []
        first = store.write(*_batch("1.2.1", ["1.2.1.1"]))
        assert store.commits() == [first]
        assert store.part_names(LOG) == [first.parts[1].path]
        assert store.parts(INSTANCES) == [tmp_path / first.parts[0].path]


def test_a_store_not_open_refuses_to_write_and_open_twice_is_one_open(tmp_path):
    store = HarvestStore(tmp_path)
    with pytest.raises(HarvestError) as err:
        store.write_part(INSTANCES, _batch("1.2.1", ["1.2.1.1"])[0])
    assert str(err.value) == f"{tmp_path} is not open for writing: call HarvestStore.open() first"
    store.open(RUN)
    try:
        assert store.__enter__() is store and store.run_id == RUN  # already open: not opened again
    finally:
        store.close()
    store.close()  # twice: nothing
    store.run_id = RUN
    with pytest.raises(HarvestError, match="is not open for writing"):
        store.write_part(INSTANCES, _batch("1.2.1", ["1.2.1.1"])[0])


def test_an_unencodable_table_is_a_harvest_error_naming_the_part(tmp_path):
    with HarvestStore(tmp_path).open(RUN) as store:
        with pytest.raises(HarvestError) as err:
            store.write_part(LOG, pa.table({"status": pa.array([1, 2])}))
    assert str(err.value).startswith(f"cannot encode part part-{RUN}-00000.parquet (")
    assert str(err.value).endswith("): this is a bug, please report it")
    assert not list((tmp_path / LOG).iterdir())


def test_one_writer_at_a_time_in_one_process_and_the_lock_is_released(tmp_path):
    with HarvestStore(tmp_path).open(RUN):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["run_id"] == RUN
        with pytest.raises(HarvestError, match=f"another harvest is writing to {re.escape(str(tmp_path))}"):
            HarvestStore(tmp_path).open()
    with HarvestStore(tmp_path).open() as again:  # released at exit
        assert again.run_id != RUN
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_failed_check_at_open_releases_the_lock(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        commit = store.write(*_batch("1.2.1", ["1.2.1.1"]))
    (tmp_path / commit.parts[0].path).unlink()
    for _ in range(2):  # the lock of the first failed open is not left held
        with pytest.raises(HarvestError, match="damaged part"):
            HarvestStore(tmp_path).open()
    assert not (tmp_path / LOCK_NAME).exists()
    assert [p.name for p in HarvestStore(tmp_path).repair()] == [f"{commit.name}.json", Path(commit.parts[1].path).name]


def test_discard_deletes_the_parts_given(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        parts = [store.write_part(INSTANCES, _batch("1.2.1", [f"1.2.1.{i}"])[0]) for i in range(3)]
        store.discard(parts[:2])
        store.discard(parts[:1])  # gone already: nothing
    assert sorted(p.name for p in (tmp_path / INSTANCES).iterdir()) == [Path(parts[2].path).name]


def test_a_write_that_fails_is_a_harvest_error_and_leaves_no_temp_file(tmp_path):
    with HarvestStore(tmp_path).open(RUN) as store:
        (tmp_path / INSTANCES / f"part-{RUN}-00000.parquet").mkdir()  # the rename onto a directory fails
        with pytest.raises(HarvestError) as err:
            store.write_part(INSTANCES, _batch("1.2.1", ["1.2.1.1"])[0])
    assert str(err.value) == (f"cannot write part-{RUN}-00000.parquet in {tmp_path} (Is a directory); free space "
                              "or fix the directory and run the same command again to resume")
    # the written temp file stays behind under the name the next run recognises as its own, and deletes
    assert sorted(p.name for p in (tmp_path / INSTANCES).iterdir()) == [f"part-{RUN}-00000.parquet",
                                                                       f"part-{RUN}-00000.parquet.tmp"]
    (tmp_path / INSTANCES / f"part-{RUN}-00000.parquet").rmdir()
    HarvestStore(tmp_path).open().close()
    assert list((tmp_path / INSTANCES).iterdir()) == []


# -- opening: cleaning, refusing ------------------------------------------------------------------------------
def test_open_deletes_only_our_uncommitted_files_and_warns_about_others(tmp_path, caplog):
    with HarvestStore(tmp_path).open() as store:
        kept = store.write(*_batch("1.2.1", ["1.2.1.1"]))
        lost = [store.write_part(INSTANCES, _batch("1.2.2", ["1.2.2.1"])[0]),
                store.write_part(LOG, _batch("1.2.2", ["1.2.2.1"])[1])]
    ours = {"instances": "part-20250101T000000-a1b2c3-00007.parquet.tmp",
            "log": "part-20250101T000000-a1b2c3-12345.parquet",
            "commits": "part-20250101T000000-a1b2c3-00008.json.tmp"}
    theirs = {"instances": "notes.txt", "log": "part-2025-a1b2c3-00001.parquet", "commits": "part-x.json"}
    for sub, name in {**ours}.items():
        (tmp_path / sub / name).write_bytes(b"x")
    for sub, name in theirs.items():
        (tmp_path / sub / name).write_bytes(b"x")
    (tmp_path / "log" / "part-20250101T000000-a1b2c3-00009.parquet").mkdir()  # ours by name, but a directory
    with caplog.at_level(logging.WARNING, logger="cohort.harvest.store"):
        HarvestStore(tmp_path).open().close()
    left = {sub: sorted(p.name for p in (tmp_path / sub).iterdir()) for sub in ("instances", "log", "commits")}
    assert left == {
        "instances": sorted([Path(kept.parts[0].path).name, "notes.txt"]),
        "log": sorted([Path(kept.parts[1].path).name, "part-2025-a1b2c3-00001.parquet",
                       "part-20250101T000000-a1b2c3-00009.parquet"]),
        "commits": sorted([f"{kept.name}.json", "part-x.json"]),
    }
    assert not any((tmp_path / p.path).exists() for p in lost)
    warned = sorted(r.getMessage() for r in caplog.records)
    expected = [f"{tmp_path / sub / name} is not a part this harvester wrote: left alone (and not read); move it out "
                f"of {tmp_path / sub}" for sub, name in [*theirs.items(),
                                                         ("log", "part-20250101T000000-a1b2c3-00009.parquet")]]
    assert warned == sorted(expected)


def test_a_file_or_unwritable_place_is_refused_with_the_fix(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(HarvestError) as err:
        HarvestStore(tmp_path / "f").open()
    assert str(err.value) == f"harvest output {tmp_path / 'f'} is a file; give a directory (it is created if missing)"
    with pytest.raises(HarvestError) as err:
        HarvestStore(tmp_path / "f" / "sub").open()
    assert str(err.value) == (f"cannot use {tmp_path / 'f' / 'sub'} as a harvest directory (Not a directory); "
                              "give a directory you can write to")
    store = HarvestStore(tmp_path / "new" / "deeper")
    store.open().close()
    assert sorted(p.name for p in (tmp_path / "new" / "deeper").iterdir()) == ["commits", "instances", "log"]


def test_an_older_layout_is_refused_and_a_log_dir_without_parquet_is_not(tmp_path):
    old = tmp_path / "old"
    (old / "log").mkdir(parents=True)
    (old / "log" / "notes.txt").write_text("")
    HarvestStore(old).open().close()  # no parquet in log/: a fresh directory
    new = tmp_path / "new"
    (new / "log").mkdir(parents=True)
    pq.write_table(_batch("1.2.1", [])[1], new / "log" / "a.parquet")
    with pytest.raises(HarvestError) as err:
        HarvestStore(new).open()
    assert str(err.value) == (f"{new} has log parts but no commits/: it was written by an older idc-cohort; "
                              "harvest into a new directory (or move the old one away)")
    with pytest.raises(HarvestError, match="older idc-cohort"):
        HarvestStore(new).check()
    assert not (new / "commits").exists()


# -- commit records -----------------------------------------------------------------------------------------------
def test_commit_records_that_cannot_be_read_are_problems_with_their_reason(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        good = store.write(*_batch("1.2.1", ["1.2.1.1"]))
    commits = tmp_path / "commits"
    bad = {
        "part-20260101T000001-aaaaaa-00001.json": (b"{not json", "unreadable commit record (JSONDecodeError: "),
        "part-20260101T000001-aaaaaa-00002.json": (b'{"format": 1}', "unreadable commit record (KeyError: 'parts')"),
        "part-20260101T000001-aaaaaa-00003.json": (json.dumps({"format": 2, "parts": []}).encode(),
                                                   "commit record of another format (2); harvest into a new directory"),
        "part-20260101T000001-aaaaaa-00004.json": (json.dumps({"parts": []}).encode(),
                                                   "commit record of another format (None); harvest into a new directory"),
        "part-20260101T000001-aaaaaa-00005.json": (json.dumps({"format": 1, "parts": [{"path": "x"}]}).encode(),
                                                   "unreadable commit record (KeyError: 'rows')"),
        "part-20260101T000001-aaaaaa-00006.json": (b"\xff\xfe", "unreadable commit record (UnicodeDecodeError: "),
        "part-20260101T000001-aaaaaa-00007.json": (json.dumps({"format": 1, "parts": [
            {"path": "x", "rows": "many", "bytes": 1, "sha256": "s"}]}).encode(),
            "unreadable commit record (ValueError: invalid literal for int() with base 10: 'many')"),
        "part-20260101T000001-aaaaaa-00008.json": (b"[]", "unreadable commit record (TypeError: "),
    }
    for name, (data, _) in bad.items():
        (commits / name).write_bytes(data)
    (commits / "part-20260101T000001-aaaaaa-00009.parquet").write_bytes(b"x")  # not a record: not read
    (commits / "notes.json").write_text("{}")  # not ours: not read
    (commits / "part-20260101T000001-aaaaaa-00010.json").mkdir()  # a directory: not read
    store = HarvestStore(tmp_path)
    assert store.commits() == [good]
    problems = store.problems()
    assert [(p.commit, p.path) for p in problems] == [(n.removesuffix(".json"), f"commits/{n}") for n in bad]
    for problem, (_, what) in zip(problems, bad.values()):
        assert problem.what.startswith(what), (problem.what, what)
    assert all(p.what.endswith(")") or "format" in p.what for p in problems)
    with pytest.raises(HarvestError) as err:
        HarvestStore(tmp_path).check()
    shown = "; ".join(str(p) for p in problems[:5])
    assert str(err.value) == (f"{tmp_path} has 8 damaged part(s): {shown}; and 3 more. Run `cohort harvest-status "
                              f"{tmp_path} --repair` to move them into quarantine/; the next harvest fetches their "
                              "series again")
    moved = HarvestStore(tmp_path).repair()
    assert sorted(p.name for p in moved) == sorted(bad)  # no log part of theirs exists: only the records move
    assert HarvestStore(tmp_path).problems() == [] and HarvestStore(tmp_path).commits() == [good]


def test_up_to_five_problems_are_named_without_a_count_of_more(tmp_path):
    commits = []
    with HarvestStore(tmp_path).open() as store:
        for i in range(5):
            commits.append(store.write(*_batch(f"1.2.{i}", [f"1.2.{i}.1"])))
    for c in commits:
        (tmp_path / c.parts[0].path).unlink()
    with pytest.raises(HarvestError) as err:
        HarvestStore(tmp_path).check()
    shown = "; ".join(f"{c.parts[0].path}: missing" for c in commits)
    assert str(err.value) == (f"{tmp_path} has 5 damaged part(s): {shown}. Run `cohort harvest-status {tmp_path} "
                              "--repair` to move them into quarantine/; the next harvest fetches their series again")


# -- integrity ------------------------------------------------------------------------------------------------------
def test_each_kind_of_damage_is_named_exactly(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        commits = [store.write(*_batch(f"1.2.{i}", [f"1.2.{i}.1"])) for i in range(4)]
    cut, grown, altered, gone = (c.parts[0] for c in commits)
    data = (tmp_path / cut.path).read_bytes()
    (tmp_path / cut.path).write_bytes(data[:1000])
    (tmp_path / grown.path).write_bytes((tmp_path / grown.path).read_bytes() + b"\0" * 2000)
    flipped = bytearray((tmp_path / altered.path).read_bytes())
    flipped[7] ^= 1
    (tmp_path / altered.path).write_bytes(bytes(flipped))
    (tmp_path / gone.path).unlink()
    problems = HarvestStore(tmp_path).problems()
    assert [(p.commit, str(p)) for p in problems] == [
        (commits[0].name, f"{cut.path}: truncated: 1,000 bytes, committed {cut.bytes:,}"),
        (commits[1].name, f"{grown.path}: grown: {grown.bytes + 2000:,} bytes, committed {grown.bytes:,}"),
        (commits[2].name, f"{altered.path}: altered: its sha256 differs from the committed one"),
        (commits[3].name, f"{gone.path}: missing"),
    ]
    assert cut.bytes > 1000  # so that the thousands separator is shown


def test_verified_json_remembers_what_matched_and_a_change_is_hashed_again(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        commit = store.write(*_batch("1.2.1", ["1.2.1.1"]))
    store = HarvestStore(tmp_path)
    assert store.problems() == []
    remembered = json.loads((tmp_path / "verified.json").read_text())
    expected = {}
    for part in commit.parts:
        st = (tmp_path / part.path).stat()
        expected[part.path] = [st.st_size, st.st_mtime_ns, st.st_ino, part.sha256]
    assert remembered == expected
    assert not list(tmp_path.glob("verified.json.*"))  # the temp file was renamed
    # same size, same mtime and inode: not hashed again, so an in-place change keeping them is not seen ...
    path = tmp_path / commit.parts[0].path
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[9] ^= 1
    with open(path, "r+b") as fh:
        fh.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert HarvestStore(tmp_path).problems() == []
    # ... but full=True hashes every part, and so does repair
    assert [str(p) for p in HarvestStore(tmp_path).problems(full=True)] == [
        f"{commit.parts[0].path}: altered: its sha256 differs from the committed one"]
    # a remembered entry that does not match the file any more is not trusted
    remembered[commit.parts[0].path][1] += 1
    (tmp_path / "verified.json").write_text(json.dumps(remembered))
    assert [p.path for p in HarvestStore(tmp_path).problems()] == [commit.parts[0].path]
    # a bad or unreadable verified.json is as none
    (tmp_path / "verified.json").write_text("{bad")
    assert [p.path for p in HarvestStore(tmp_path).problems()] == [commit.parts[0].path]
    assert json.loads((tmp_path / "verified.json").read_text()) == {commit.parts[1].path: expected[commit.parts[1].path]}


def test_a_store_that_cannot_save_verified_json_still_checks(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        store.write(*_batch("1.2.1", ["1.2.1.1"]))
    (tmp_path / "verified.json").mkdir()  # cannot be replaced by a file
    assert HarvestStore(tmp_path).problems() == []


def test_check_names_a_part_of_another_schema_or_one_that_is_not_parquet(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        commit = store.write(*_batch("1.2.1", ["1.2.1.1"]))
    record_path = tmp_path / "commits" / f"{commit.name}.json"
    record = json.loads(record_path.read_text())

    def replace(kind_index: int, data: bytes) -> Path:
        path = tmp_path / record["parts"][kind_index]["path"]
        path.write_bytes(data)
        record["parts"][kind_index].update(bytes=len(data), sha256=_sha(data))
        record_path.write_text(json.dumps(record))
        return path

    sink = pa.BufferOutputStream()
    pq.write_table(_batch("1.2.1", ["1.2.1.1"])[1], sink)  # a log table where the instances part should be
    path = replace(0, sink.getvalue().to_pybytes())
    with pytest.raises(HarvestError) as err:
        HarvestStore(tmp_path).check()
    assert str(err.value) == (f"{path} has another schema than this version of idc-cohort writes; harvest into a "
                              "new directory (or move the old one away)")
    good = _batch("1.2.1", ["1.2.1.1"])[0]
    sink = pa.BufferOutputStream()
    pq.write_table(good, sink)
    replace(0, sink.getvalue().to_pybytes())
    sink = pa.BufferOutputStream()
    pq.write_table(good, sink)  # now the log part has the instances schema
    path = replace(1, sink.getvalue().to_pybytes())
    with pytest.raises(HarvestError) as err:
        HarvestStore(tmp_path).check()
    assert str(err.value).startswith(f"{path} has another schema")
    path = replace(1, b"not parquet at all")
    with pytest.raises(HarvestError) as err:
        HarvestStore(tmp_path).check()
    assert str(err.value).startswith(f"cannot read {path} (")
    assert str(err.value).endswith(f"); run `cohort harvest-status {tmp_path}` to find the damaged part")
    with pytest.raises(HarvestError) as err:
        HarvestStore(tmp_path).read_log()
    assert str(err.value).startswith(f"cannot read the log parts of {tmp_path} (ArrowInvalid: ")
    assert str(err.value).endswith(f"); run `cohort harvest-status {tmp_path}` to find the damaged part")


# -- reading ------------------------------------------------------------------------------------------------------
def test_reading_an_empty_store_gives_empty_tables_of_the_schema(tmp_path):
    store = HarvestStore(tmp_path)
    assert store.read_log().schema.equals(LOG_SCHEMA) and store.read_log().num_rows == 0
    assert store.read_instances().schema.equals(INSTANCE_SCHEMA)
    assert store.read_log(["status", "SeriesInstanceUID"]).column_names == ["status", "SeriesInstanceUID"]
    assert store.completed() == set() and store.final_statuses() == {}


def test_completed_and_final_statuses_take_the_latest_outcome(tmp_path):
    later = NOW + dt.timedelta(hours=1)
    with HarvestStore(tmp_path).open() as store:
        store.write(*_batch("1.2.1", [], status="timeout", finished=later))  # written first, finished later
        store.write(*_batch("1.2.1", [], status="not_found", finished=NOW, endpoint="a"))
        store.write(*_batch("1.2.2", [], status="empty", finished=later, endpoint="b"))
        store.write(*_batch("1.2.2", ["1.2.2.1"], status="ok", finished=NOW))
        for status in ("http_error", "malformed"):
            store.write(*_batch(f"1.2.{status}", [], status=status))
    store = HarvestStore(tmp_path)
    assert store.completed() == {"1.2.1", "1.2.2"}  # some final row counts, whenever it was
    assert store.final_statuses() == {"1.2.1": ("timeout", "e"), "1.2.2": ("empty", "b"),
                                      "1.2.http_error": ("http_error", "e"), "1.2.malformed": ("malformed", "e")}
    status = sorted(harvest_status(tmp_path).to_pylist(), key=lambda r: r["status"])  # one series each: ties
    assert status == [
        {"status": "empty", "complete": True, "series": 1, "instances": 0, "bytes": 0},
        {"status": "http_error", "complete": False, "series": 1, "instances": 0, "bytes": 0},
        {"status": "malformed", "complete": False, "series": 1, "instances": 0, "bytes": 0},
        {"status": "timeout", "complete": False, "series": 1, "instances": 0, "bytes": 0},
    ]


def test_harvest_status_counts_each_series_latest_outcome(tmp_path):
    later = NOW + dt.timedelta(hours=1)
    with HarvestStore(tmp_path).open() as store:
        store.write(*_batch("1.2.1", [], status="http_error"))
        store.write(*_batch("1.2.1", ["1.2.1.1", "1.2.1.2"], finished=later))
        store.write(*_batch("1.2.2", ["1.2.2.1"]))
        store.write(*_batch("1.2.3", [], status="not_found"))
    assert harvest_status(tmp_path).to_pylist() == [
        {"status": "ok", "complete": True, "series": 2, "instances": 3, "bytes": 30},
        {"status": "not_found", "complete": True, "series": 1, "instances": 0, "bytes": 0},
    ]


def test_open_harvest_views_read_the_committed_parts_of_the_store_and_its_shards(tmp_path):
    with pytest.raises(HarvestError) as err:
        committed_parts(tmp_path)
    assert str(err.value) == (f"{tmp_path} holds no harvest (no committed log part): run `cohort harvest ... -o "
                              f"{tmp_path}` first")
    with HarvestStore(tmp_path).open() as store:
        root_commit = store.write(*_batch("1.2.1", ["1.2.1.1"], status="ok"))
    with HarvestStore(tmp_path / "shards" / "0001").open() as shard:
        shard_commit = shard.write(*_batch("1.2.2", ["1.2.2.1", "1.2.2.2"]))
        shard.write(*_batch("1.2.1", [], status="timeout", finished=NOW + dt.timedelta(hours=1)))
    (tmp_path / "shards" / "notes").mkdir()  # not a shard
    (tmp_path / "shards" / "0002").write_text("")  # a file, not a shard
    stores = harvest_stores(tmp_path)
    assert [s.root for s in stores] == [tmp_path, tmp_path / "shards" / "0001"]
    assert committed_parts(tmp_path) == [tmp_path / root_commit.parts[0].path,
                                         tmp_path / "shards" / "0001" / shard_commit.parts[0].path,
                                         tmp_path / "shards" / "0001" / "instances" /
                                         HarvestStore(tmp_path / "shards" / "0001").commits()[1].parts[0].path.split("/")[1]]
    assert committed_parts(tmp_path, LOG)[0] == tmp_path / root_commit.parts[1].path
    catalog = Catalog(download=False)
    open_harvest(catalog, tmp_path)
    rows = catalog.sql("SELECT SOPInstanceUID FROM harvest_instances ORDER BY 1").column(0).to_pylist()
    assert rows == ["1.2.1.1", "1.2.2.1", "1.2.2.2"]
    series = catalog.sql("SELECT SeriesInstanceUID, status FROM harvest_series ORDER BY 1").to_pylist()
    assert series == [{"SeriesInstanceUID": "1.2.1", "status": "timeout"}, {"SeriesInstanceUID": "1.2.2", "status": "ok"}]
    assert catalog.sql("SELECT count(*) AS n FROM harvest_log").to_pylist() == [{"n": 3}]
    assert catalog.columns("harvest_log") == LOG_SCHEMA.names == catalog.columns("harvest_series")
    assert catalog.columns("harvest_instances") == INSTANCE_SCHEMA.names
    assert harvest_status(tmp_path).to_pylist() == [
        {"status": "ok", "complete": True, "series": 1, "instances": 2, "bytes": 20},
        {"status": "timeout", "complete": False, "series": 1, "instances": 0, "bytes": 0}]


def test_a_final_status_wins_a_tie_in_harvest_series(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        store.write(*_batch("1.2.1", [], status="timeout"))
        store.write(*_batch("1.2.1", ["1.2.1.1"]))
        store.write(*_batch("1.2.2", [], status="not_found"))
        store.write(*_batch("1.2.2", [], status="http_error"))
    catalog = Catalog(download=False)
    open_harvest(catalog, tmp_path)
    series = catalog.sql("SELECT SeriesInstanceUID, status FROM harvest_series ORDER BY 1").to_pylist()
    assert series == [{"SeriesInstanceUID": "1.2.1", "status": "ok"},
                      {"SeriesInstanceUID": "1.2.2", "status": "not_found"}]


def test_harvest_status_lets_a_final_status_win_a_tie_and_orders_ties_by_status(tmp_path):
    # Half the series write the final outcome first, half last, at the same finished_at: whichever order the
    # log is read in, counting the non-final one for any series is wrong.
    with HarvestStore(tmp_path).open() as store:
        for i in range(8):
            pair = [("timeout", []), ("ok", [f"1.2.{i}.1"])]
            for status, instances in (pair if i % 2 else pair[::-1]):
                store.write(*_batch(f"1.2.{i}", instances, status=status))
        for i, status in enumerate(["timeout", "http_error", "not_found", "malformed", "empty"]):
            store.write(*_batch(f"1.3.{i}", [], status=status))
    assert harvest_status(tmp_path).to_pylist() == [
        {"status": "ok", "complete": True, "series": 8, "instances": 8, "bytes": 80},
        {"status": "empty", "complete": True, "series": 1, "instances": 0, "bytes": 0},
        {"status": "http_error", "complete": False, "series": 1, "instances": 0, "bytes": 0},
        {"status": "malformed", "complete": False, "series": 1, "instances": 0, "bytes": 0},
        {"status": "not_found", "complete": True, "series": 1, "instances": 0, "bytes": 0},
        {"status": "timeout", "complete": False, "series": 1, "instances": 0, "bytes": 0},
    ]


def test_duckdb_reads_local_parts_by_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    to_source, filesystem = duckdb_source(LocalFiles("rel"))
    assert filesystem is None
    assert to_source("") == str(tmp_path / "rel") and to_source("log/p") == str(tmp_path / "rel" / "log" / "p")


# -- repair ---------------------------------------------------------------------------------------------------------
def test_repair_moves_each_bad_commit_whole_into_a_dated_quarantine(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        good = store.write(*_batch("1.2.1", ["1.2.1.1"]))
        bad = store.write(*_batch("1.2.2", ["1.2.2.1"]))
        worse = store.write(*_batch("1.2.3", ["1.2.3.1"]))
    (tmp_path / bad.parts[1].path).write_bytes(b"x")
    (tmp_path / worse.parts[0].path).unlink()
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    moved = repair_harvest(tmp_path)
    after = dt.datetime.now(dt.timezone.utc)
    stamp = moved[0].relative_to(tmp_path / "quarantine").parts[0]
    assert before <= dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc) <= after
    q = tmp_path / "quarantine" / stamp
    assert moved == [q / "commits" / f"{bad.name}.json", q / bad.parts[0].path, q / bad.parts[1].path,
                     q / "commits" / f"{worse.name}.json", q / worse.parts[1].path]
    assert all(p.exists() for p in moved)
    assert HarvestStore(tmp_path).commits() == [good] and HarvestStore(tmp_path).problems() == []
    assert not (tmp_path / LOCK_NAME).exists()
    assert repair_harvest(tmp_path) == []  # healthy now


def test_repair_of_a_store_with_an_unreadable_record_moves_its_log_part(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        commit = store.write(*_batch("1.2.1", ["1.2.1.1"]))
    (tmp_path / "commits" / f"{commit.name}.json").write_text("{")
    store = HarvestStore(tmp_path)
    moved = store.repair()
    q = moved[0].parent.parent
    assert moved == [q / "commits" / f"{commit.name}.json", q / commit.parts[1].path]
    assert (tmp_path / commit.parts[0].path).exists()  # not named by a readable record: left (cleaned by a run)
    assert store.commits() == []  # the listing is read again


def test_repair_inside_an_open_run_uses_its_lock_and_keeps_it(tmp_path):
    with HarvestStore(tmp_path).open(RUN) as store:
        commit = store.write(*_batch("1.2.1", ["1.2.1.1"]))
        (tmp_path / commit.parts[0].path).unlink()
        assert [p.name for p in store.repair()] == [f"{commit.name}.json", Path(commit.parts[1].path).name]
        assert json.loads((tmp_path / LOCK_NAME).read_text())["run_id"] == RUN  # still held by the run
        store.write(*_batch("1.2.2", ["1.2.2.1"]))  # and the run goes on writing
    with pytest.raises(HarvestError, match="another harvest is writing"):
        with HarvestStore(tmp_path).open():
            HarvestStore(tmp_path).repair()


def test_repair_harvest_refuses_a_directory_without_a_harvest(tmp_path):
    with pytest.raises(HarvestError) as err:
        repair_harvest(tmp_path)
    assert str(err.value) == f"{tmp_path} holds no harvest (no commits/): nothing to repair"
    url, fs, _ = _memory_url()
    with pytest.raises(HarvestError) as err:
        repair_harvest(url)
    assert str(err.value) == f"{url} holds no harvest (no commits/): nothing to repair"


def test_repair_harvest_repairs_the_shards_too(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        store.write(*_batch("1.2.1", ["1.2.1.1"]))
    shard_dir = tmp_path / "shards" / "0000"
    with HarvestStore(shard_dir).open() as shard:
        commit = shard.write(*_batch("1.2.2", ["1.2.2.1"]))
    (shard_dir / commit.parts[0].path).write_bytes(b"")
    moved = repair_harvest(tmp_path)
    assert [p.relative_to(shard_dir).parts[0] for p in moved] == ["quarantine"] * 3
    assert [p.name for p in moved] == [f"{commit.name}.json", *(Path(p.path).name for p in commit.parts)]


# -- an object store: fsspec's in-memory filesystem ---------------------------------------------------------------
def test_an_object_store_holds_the_same_layout_written_directly_under_final_names():
    url, fs, root = _memory_url()
    with HarvestStore(url).open(RUN) as store:
        assert fs.exists(f"{root}/{LEASE_NAME}")
        commit = store.write(*_batch("1.2.1", ["1.2.1.1", "1.2.1.2"]))
        assert store.root == url and store.parts(LOG) == [f"{url}/{commit.parts[1].path}"]
    assert not fs.exists(f"{root}/{LEASE_NAME}")
    for part in commit.parts:
        data = fs.cat_file(f"{root}/{part.path}")
        assert (part.bytes, part.sha256) == (len(data), _sha(data))
    record = json.loads(fs.cat_file(f"{root}/commits/{commit.name}.json"))
    assert [p["path"] for p in record["parts"]] == [p.path for p in commit.parts]
    assert not [k for k in fs.find(root) if k.endswith(".tmp")]
    assert sorted(HarvestStore(url).read_instances(["SOPInstanceUID"]).column(0).to_pylist()) == ["1.2.1.1", "1.2.1.2"]
    assert HarvestStore(url).problems() == []
    verified = json.loads(fs.cat_file(f"{root}/verified.json"))
    assert sorted(verified) == sorted(p.path for p in commit.parts)
    assert all(v[-1] == p.sha256 for p, v in zip(commit.parts, (verified[p.path] for p in commit.parts)))
    catalog = Catalog(download=False, local_copy=False)
    open_harvest(catalog, url)
    assert catalog.sql("SELECT count(*) AS n FROM harvest_instances").to_pylist() == [{"n": 2}]
    to_source, filesystem = duckdb_source(HarvestStore(url).files)
    assert filesystem is HarvestStore(url).files.fs and to_source("log/x") == f"{url}/log/x"
    fs.rm(root.split("/")[0], recursive=True)


def test_an_object_store_cleans_only_its_own_uncommitted_objects(caplog):
    url, fs, root = _memory_url()
    with HarvestStore(url).open() as store:
        kept = store.write(*_batch("1.2.1", ["1.2.1.1"]))
        lost = store.write_part(INSTANCES, _batch("1.2.2", ["1.2.2.1"])[0])
    fs.pipe_file(f"{root}/log/mine.parquet", b"x")
    with caplog.at_level(logging.WARNING, logger="cohort.harvest.store"):
        HarvestStore(url).open().close()
    assert not fs.exists(f"{root}/{lost.path}") and fs.exists(f"{root}/log/mine.parquet")
    assert all(fs.exists(f"{root}/{p.path}") for p in kept.parts)
    assert f"{url}/log/mine.parquet is not a part this harvester wrote" in caplog.text
    fs.rm(root.split("/")[0], recursive=True)


def test_an_object_store_that_is_missing_or_an_object_is_refused():
    url, fs, root = _memory_url()
    missing = f"memory://nobucket{uuid.uuid4().hex[:8]}/h"
    with pytest.raises(HarvestError) as err:
        HarvestStore(missing).open()
    bucket = missing.split("/")[2]
    assert str(err.value) == (f"{missing}: bucket {bucket!r} does not exist (or these credentials cannot see it); "
                              "create it first, or check AWS_PROFILE / the Google account")
    fs.pipe_file(root, b"an object")
    with pytest.raises(HarvestError) as err:
        HarvestStore(url).open()
    assert str(err.value) == (f"harvest output {url} is an object, not a prefix; give a prefix (as in "
                              "s3://bucket/harvest)")
    fs.rm(root.split("/")[0], recursive=True)


class _Failing(MemoryFileSystem):
    """fsspec's memory filesystem whose operations named in ``fail`` raise an OSError (a store's outage)."""

    fail: set[str] = set()

    def _maybe(self, op: str) -> None:
        if op in self.fail:
            raise OSError(f"injected failure of {op}")

    def exists(self, path, **kw):
        self._maybe("exists")
        return super().exists(path, **kw)

    def pipe_file(self, path, value, mode="overwrite", **kw):
        if not str(path).endswith(LEASE_NAME):
            self._maybe("pipe_file")
        return super().pipe_file(path, value, mode=mode, **kw)

    def info(self, path, **kw):
        self._maybe("info")
        return super().info(path, **kw)

    def rm_file(self, path):
        self._maybe("rm_file")
        return super().rm_file(path)

    def ls(self, path, detail=True, **kw):
        self._maybe("ls")
        return super().ls(path, detail=detail, **kw)

    def _open(self, path, mode="rb", **kw):
        if "r" in mode:
            self._maybe("open")
        return super()._open(path, mode=mode, **kw)

    def copy(self, path1, path2, **kw):
        self._maybe("copy")
        return super().copy(path1, path2, **kw)


def _failing_store() -> tuple[HarvestStore, _Failing, str, str]:
    fs = _Failing(skip_instance_cache=True)
    fs.fail = set()
    bucket = f"f{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    url = f"memory://{bucket}/h"
    return HarvestStore(ObjectFiles(url, fs)), fs, url, f"{bucket}/h"


def test_object_store_failures_are_harvest_errors_saying_what_failed_where():
    store, fs, url, root = _failing_store()
    fs.fail = {"exists"}
    with pytest.raises(HarvestError) as err:
        store.open()
    assert str(err.value) == (f"cannot use {url} as a harvest store (OSError: injected failure of exists); check "
                              "the bucket name and your credentials (environment or profile, never the command line)")
    fs.fail = set()
    store.open(RUN)
    try:
        fs.fail = {"pipe_file"}
        with pytest.raises(HarvestError) as err:
            store.write_part(INSTANCES, _batch("1.2.1", ["1.2.1.1"])[0])
        assert str(err.value) == (f"cannot write instances/part-{RUN}-00000.parquet to {url} (OSError: injected "
                                  "failure of pipe_file); check the bucket and your credentials, then run the same "
                                  "command again to resume")
        fs.fail = set()
        part = store.write_part(INSTANCES, _batch("1.2.1", ["1.2.1.1"])[0])
        fs.fail = {"rm_file"}
        with pytest.raises(HarvestError) as err:
            store.discard([part])
        assert str(err.value) == (f"cannot delete {part.path} in {url} (OSError: injected failure of rm_file); check "
                                  "the bucket and your credentials, then run the same command again to resume")
    finally:
        fs.fail = set()
        store.close()
    fs.fail = {"ls"}
    with pytest.raises(HarvestError) as err:
        HarvestStore(ObjectFiles(url, fs)).open()
    assert str(err.value) == (f"cannot list instances/ in {url} (OSError: injected failure of ls); check the bucket "
                              "and your credentials, then run the same command again to resume")
    fs.fail = set()
    assert not fs.exists(f"{root}/{LEASE_NAME}")  # released after the failed open
    # a store whose verified.json cannot be written is still checked
    with HarvestStore(ObjectFiles(url, fs)).open() as writer:
        commit = writer.write(*_batch("1.2.2", ["1.2.2.1"]))
    fs.fail = {"pipe_file"}
    assert HarvestStore(ObjectFiles(url, fs)).problems() == []
    fs.fail = {"open"}  # a part whose listing is fine but whose bytes cannot be read
    assert [str(p) for p in HarvestStore(ObjectFiles(url, fs)).problems(full=True)] == [
        f"{p.path}: cannot be read (OSError: injected failure of open)" for p in commit.parts]
    fs.fail = set()
    data = fs.cat_file(f"{root}/{commit.parts[1].path}")
    fs.rm_file(f"{root}/{commit.parts[1].path}")
    fs.fail = {"info"}  # not listed, and asking for it fails otherwise than "not found"
    assert [str(p) for p in HarvestStore(ObjectFiles(url, fs)).problems(full=True)] == [
        f"{commit.parts[1].path}: cannot be read (OSError: injected failure of info)"]
    fs.fail = set()
    fs.pipe_file(f"{root}/{commit.parts[1].path}", data)
    fs.fail = set()
    fs.rm_file(f"{root}/{commit.parts[0].path}")
    fs.fail = {"copy"}
    with pytest.raises(HarvestError) as err:
        HarvestStore(ObjectFiles(url, fs)).repair()
    assert str(err.value).startswith(f"cannot move commits/{commit.name}.json into quarantine/ in {url} (OSError: "
                                     "injected failure of copy)")
    fs.fail = set()
    moved = HarvestStore(ObjectFiles(url, fs)).repair()
    assert [m.rsplit("/", 2)[-2:] for m in moved] == [["commits", f"{commit.name}.json"],
                                                      ["log", commit.parts[1].path.split("/")[1]]]
    assert all(m.startswith(f"{url}/quarantine/") for m in moved)


# -- what the first mutation run showed untested -------------------------------------------------------------------
def test_repair_hashes_every_part_even_one_whose_size_mtime_and_inode_are_unchanged(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        commit = store.write(*_batch("1.2.1", ["1.2.1.1"]))
    assert HarvestStore(tmp_path).problems() == []  # remembered in verified.json
    path = tmp_path / commit.parts[0].path
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[9] ^= 1
    with open(path, "r+b") as fh:
        fh.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    moved = HarvestStore(tmp_path).repair()
    assert [p.name for p in moved] == [f"{commit.name}.json", *(Path(p.path).name for p in commit.parts)]


def test_the_quarantine_is_named_in_utc_whatever_the_local_zone(tmp_path, monkeypatch):
    import time

    with HarvestStore(tmp_path).open() as store:
        commit = store.write(*_batch("1.2.1", ["1.2.1.1"]))
    (tmp_path / commit.parts[0].path).unlink()
    monkeypatch.setenv("TZ", "Etc/GMT-9")  # nine hours east of UTC
    time.tzset()
    try:
        before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0, tzinfo=None)
        moved = HarvestStore(tmp_path).repair()
        after = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    stamp = dt.datetime.strptime(moved[0].relative_to(tmp_path / "quarantine").parts[0], "%Y%m%dT%H%M%S")
    assert before <= stamp <= after


class _Watching(LocalFiles):
    """A local directory that, when repair moves its first file, records what a second writer is told."""

    told: list[str]

    def move(self, rel, dest):
        if not self.told:
            try:
                HarvestStore(self.root).open()
            except HarvestError as exc:
                self.told.append(str(exc))
        return super().move(rel, dest)


def test_repair_holds_the_lock_under_a_run_id_of_its_own_while_it_moves(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        commit = store.write(*_batch("1.2.1", ["1.2.1.1"]))
    (tmp_path / commit.parts[0].path).unlink()
    files = _Watching(tmp_path)
    files.told = []
    assert len(HarvestStore(files).repair()) == 2
    [told] = files.told
    assert re.search(rf"another harvest is writing to .*: PID {os.getpid()} on host .* \(run \d{{8}}T\d{{6}}-[0-9a-f]{{6}}, ",
                     told), told
    assert not (tmp_path / LOCK_NAME).exists()


def test_repair_harvest_takes_an_empty_commits_directory_as_a_harvest(tmp_path):
    HarvestStore(tmp_path).open().close()  # commits/ made, nothing committed
    assert repair_harvest(tmp_path) == []
    url, fs, root = _memory_url()
    fs.pipe_file(f"{root}/notes.txt", b"x")  # something at the prefix, but no commits/
    with pytest.raises(HarvestError, match="holds no harvest"):
        repair_harvest(url)
    fs.rm(root.split("/")[0], recursive=True)


def test_a_commits_directory_that_cannot_be_synced_warns_and_the_commit_stands(tmp_path, monkeypatch, caplog):
    import cohort.harvest.store as store_module

    real = store_module._fsync_dir

    def failing(path):  # injected: syncing commits/ fails (the instances/ and log/ syncs before it work)
        if Path(path).name == "commits":
            raise OSError("injected: fsync failed")
        real(path)

    monkeypatch.setattr(store_module, "_fsync_dir", failing)
    with caplog.at_level(logging.WARNING, logger="cohort.harvest.store"), HarvestStore(tmp_path).open() as store:
        commit = store.write(*_batch("1.2.1", ["1.2.1.1"]))
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot sync {tmp_path / 'commits'} (injected: fsync failed): the last commit may be lost by a power cut"]
    assert HarvestStore(tmp_path).commits() == [commit]


# -- what the mutation run of the store after the views' move showed untested --------------------------------
def test_entering_an_unopened_store_opens_it_and_leaving_closes_it(tmp_path):
    with HarvestStore(tmp_path) as store:
        assert (tmp_path / LOCK_NAME).is_file()  # the one-writer lock is held inside the block
        store.write(*_batch("1.2.1", ["1.2.1.1"]))
    assert not (tmp_path / LOCK_NAME).exists()
    assert HarvestStore(tmp_path).completed() == {"1.2.1"}


def test_an_object_store_lease_names_the_run(tmp_path):
    url, fs, root = _memory_url()
    store = HarvestStore(url).open(run_id=RUN)
    try:
        lease = json.loads(fs.cat_file(f"{root}/{LEASE_NAME}"))
        assert lease["run_id"] == RUN
    finally:
        store.close()


def test_a_leftover_part_that_cannot_be_deleted_is_named_in_the_error(monkeypatch):
    url, fs, root = _memory_url()
    with HarvestStore(url).open() as store:
        store.write(*_batch("1.2.1", ["1.2.1.1"]))
    leftover = f"{INSTANCES}/{part_name(RUN, 7)}"  # a killed run's part: no commit lists it
    fs.pipe_file(f"{root}/{leftover}", b"x")

    def refuse(self, rel):
        raise PermissionError("no delete for you")

    monkeypatch.setattr(ObjectFiles, "delete", refuse)
    with pytest.raises(HarvestError) as err:
        HarvestStore(url).open()
    assert str(err.value) == (f"cannot delete {leftover} in {url} (PermissionError: no delete for you); check the "
                              "bucket and your credentials, then run the same command again to resume")


def test_six_problems_name_five_and_count_one_more(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        commits = [store.write(*_batch(f"1.2.{i}", [f"1.2.{i}.1"])) for i in range(6)]
    for c in commits:
        (tmp_path / c.parts[0].path).unlink()
    with pytest.raises(HarvestError) as err:
        HarvestStore(tmp_path).check()
    assert str(err.value).startswith(f"{tmp_path} has 6 damaged part(s): ")
    assert "; and 1 more. Run `cohort harvest-status" in str(err.value)
    assert str(err.value).count(": missing") == 5


def test_a_part_whose_schema_cannot_be_read_is_named_with_the_cause(tmp_path, monkeypatch):
    with HarvestStore(tmp_path).open() as store:
        commit = store.write(*_batch("1.2.1", ["1.2.1.1"]))

    def unreadable(*args, **kwargs):
        raise OSError("disk said no")

    monkeypatch.setattr(pq, "read_schema", unreadable)
    with pytest.raises(HarvestError) as err:
        HarvestStore(tmp_path).check()
    assert str(err.value) == (f"cannot read {tmp_path / commit.parts[0].path} (OSError: disk said no); run `cohort "
                              f"harvest-status {tmp_path}` to find the damaged part")
