"""The harvest directory: parts count only once committed, one writer at a time, integrity checked, repair.

No server here: batches are written through the store's own API (the runner's path is in
test_harvest_crash.py); faults are injected into the files themselves.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import subprocess
import sys

import pyarrow as pa
import pytest
from click.testing import CliRunner

from cohort import Catalog
from cohort.cli import cli
from cohort.errors import HarvestError
from cohort.harvest import INSTANCE_SCHEMA, LOG_SCHEMA, HarvestStore, harvest_status, instance_row, open_harvest
from cohort.harvest.lock import LOCK_NAME
from cohort.harvest.store import INSTANCES, LOG

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _batch(series: str, sops: list[str], status: str = "ok"):
    rows = [{**instance_row({"00080018": {"vr": "UI", "Value": [sop]}}, "1.2", series),
             "endpoint": "e", "run_id": "r", "harvested_at": NOW} for sop in sops]
    log = [{"StudyInstanceUID": "1.2", "SeriesInstanceUID": series, "status": status, "attempts": 1,
            "instances": len(rows), "bytes": 10, "seconds": 0.1, "endpoint": "e", "run_id": "r", "finished_at": NOW}]
    return pa.Table.from_pylist(rows, schema=INSTANCE_SCHEMA), pa.Table.from_pylist(log, schema=LOG_SCHEMA)


def _three_commits(root):
    """Series 1.2.1 (2 instances, ok), 1.2.2 (http_error), 1.2.3 (3 instances, ok): one commit each."""
    with HarvestStore(root).open() as store:
        commits = [store.write(*_batch("1.2.1", ["1.2.1.1", "1.2.1.2"])),
                   store.write(*_batch("1.2.2", [], status="http_error")),
                   store.write(*_batch("1.2.3", ["1.2.3.1", "1.2.3.2", "1.2.3.3"]))]
    return commits


def _sops(root):
    return sorted(HarvestStore(root).read_instances(["SOPInstanceUID"]).column(0).to_pylist())


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- commits ----------------------------------------------------------------------
def test_only_committed_parts_count_and_only_ours_are_cleaned(tmp_path, caplog):
    _three_commits(tmp_path)
    with HarvestStore(tmp_path).open() as store:  # a run killed before its commit record was written
        uncommitted = store.write_part(INSTANCES, _batch("1.2.4", ["1.2.4.1"])[0])
        uncommitted_log = store.write_part(LOG, _batch("1.2.4", ["1.2.4.1"])[1])
    (tmp_path / "log" / "part-20260101T000000-abcdef-00009.parquet.tmp").write_bytes(b"half a file")
    user_file = tmp_path / "instances" / "aaa.parquet"  # a user's file, with a valid schema even
    pa.parquet.write_table(_batch("1.2.9", ["1.2.9.1"])[0], user_file)

    assert _sops(tmp_path) == ["1.2.1.1", "1.2.1.2", "1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert HarvestStore(tmp_path).completed() == {"1.2.1", "1.2.3"}  # http_error is not final: asked again
    catalog = Catalog(download=False)
    open_harvest(catalog, tmp_path)
    assert catalog.sql("SELECT count(*) AS n FROM harvest_instances").to_pylist() == [{"n": 5}]
    assert catalog.sql("SELECT count(*) AS n FROM harvest_series").to_pylist() == [{"n": 3}]
    status = {r["status"]: r for r in harvest_status(tmp_path).to_pylist()}
    assert (status["ok"]["series"], status["ok"]["instances"], status["http_error"]["complete"]) == (2, 5, False)

    with caplog.at_level(logging.WARNING):
        HarvestStore(tmp_path).open().close()  # what a rerun does first
    assert not (tmp_path / uncommitted.path).exists() and not (tmp_path / uncommitted_log.path).exists()
    assert not list(tmp_path.glob("*/*.tmp"))
    assert user_file.exists() and "aaa.parquet is not a part this harvester wrote" in caplog.text
    assert _sops(tmp_path) == ["1.2.1.1", "1.2.1.2", "1.2.3.1", "1.2.3.2", "1.2.3.3"]


def test_final_statuses_give_each_series_latest_outcome_and_endpoint(tmp_path):
    with HarvestStore(tmp_path).open() as store:
        store.write(*_batch("1.2.1", [], status="not_found"))
        later = _batch("1.2.1", ["1.2.1.1"])
        later_log = later[1].set_column(LOG_SCHEMA.get_field_index("finished_at"), "finished_at",
                                        pa.array([NOW + dt.timedelta(hours=1)], LOG_SCHEMA.field("finished_at").type))
        store.write(later[0], later_log)
        store.write(*_batch("1.2.2", [], status="timeout"))
    assert HarvestStore(tmp_path).final_statuses() == {"1.2.1": ("ok", "e"), "1.2.2": ("timeout", "e")}


def test_other_schema_older_layout_and_empty_directory_are_clear_errors(tmp_path):
    with pytest.raises(HarvestError, match="no harvest"):
        open_harvest(Catalog(download=False), tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(HarvestError, match="is a file"):
        HarvestStore(tmp_path / "file").open()
    old = tmp_path / "old" / "log"  # an older idc-cohort's directory: log parts, no commits/
    old.mkdir(parents=True)
    pa.parquet.write_table(_batch("1.2.1", [])[1], old / "part-20250101T000000-abcdef-00000.parquet")
    for attempt in (lambda: HarvestStore(old.parent).open(), lambda: harvest_status(old.parent)):
        with pytest.raises(HarvestError, match="older idc-cohort"):
            attempt()
    assert list(old.iterdir())  # nothing deleted


def test_unusable_directory_is_a_harvest_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(HarvestError, match="cannot use .* as a harvest directory"):
        HarvestStore(afile / "out").open()


def test_a_part_that_cannot_be_written_is_a_harvest_error(tmp_path):
    import shutil

    with HarvestStore(tmp_path / "h").open() as store:
        shutil.rmtree(store.log_dir)
        store.log_dir.write_text("not a directory")
        with pytest.raises(HarvestError, match="cannot write .* run the same command again to resume"):
            store.write(*_batch("1.2.1", ["1.2.1.1"]))


# -- one writer per directory ------------------------------------------------------
_HOLD = """
import sys
from cohort.harvest import HarvestStore
with HarvestStore(sys.argv[1]).open():
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path):
    with HarvestStore(tmp_path).open() as first:
        lock = json.loads((tmp_path / LOCK_NAME).read_text())
        assert (lock["pid"], lock["host"], lock["run_id"]) == (os.getpid(), socket.gethostname(), first.run_id)
        with pytest.raises(HarvestError, match=rf"PID {os.getpid()} on host .* holds .*{LOCK_NAME}"):
            HarvestStore(tmp_path).open()
    assert not (tmp_path / LOCK_NAME).exists()  # released at exit

    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(HarvestError, match=rf"another harvest is writing .* PID {holder.pid} "):
            HarvestStore(tmp_path).open()
        result = _cli("harvest-status", tmp_path, "--repair")  # repairing is writing too
        assert result.exit_code == 1 and f"PID {holder.pid}" in result.output
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0
    HarvestStore(tmp_path).open().close()  # free again


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_message(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()  # kill -9: the lock file stays, naming a process that is gone
    holder.wait()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid
    with caplog.at_level(logging.WARNING), HarvestStore(tmp_path).open():
        assert f"taking over the harvest lock {tmp_path / LOCK_NAME} left by PID {holder.pid}" in caplog.text
    # a lock file written by hand, naming a PID that is not running on this host
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
    with HarvestStore(tmp_path).open() as store:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["run_id"] == store.run_id


def test_a_lock_naming_another_host_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(HarvestError, match=rf"PID 1 on host elsewhere.example .* delete {tmp_path / LOCK_NAME}"):
        HarvestStore(tmp_path).open()


# -- integrity and repair -----------------------------------------------------------
def _damage(tmp_path, how):
    commits = _three_commits(tmp_path)
    second = commits[2].parts[0] if how != "log" else commits[1].parts[-1]  # not the first part
    path = tmp_path / second.path
    data = bytearray(path.read_bytes())
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # one byte changed in the middle: same size
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    return commits, second


@pytest.mark.parametrize("how, what", [("missing", "missing"), ("truncated", "truncated"),
                                       ("altered", "altered"), ("log", "altered")])
def test_a_damaged_part_is_named_everywhere_then_repaired_into_quarantine(tmp_path, how, what):
    commits, bad = _damage(tmp_path, how)
    named = rf"{bad.path}: {what}.*harvest-status .* --repair"
    for reader in (lambda: HarvestStore(tmp_path).open(), lambda: harvest_status(tmp_path),
                   lambda: open_harvest(Catalog(download=False), tmp_path)):
        with pytest.raises(HarvestError, match=named):
            reader()
    for args in (["harvest-status", tmp_path], ["sql", "--harvest", tmp_path, "SELECT 1"]):
        result = _cli(*args)
        assert result.exit_code == 1 and result.exception.__class__ is SystemExit, result.output
        assert f"{bad.path}: {what}" in result.output and "Traceback" not in result.output

    result = _cli("harvest-status", tmp_path, "--repair", "-f", "csv")
    assert result.exit_code == 0, result.output
    damaged = commits[2] if how != "log" else commits[1]
    moved = sorted(p.relative_to(tmp_path).as_posix().split("/", 2)[2] for p in (tmp_path / "quarantine").rglob("*")
                   if p.is_file())
    assert moved == sorted([f"commits/{damaged.name}.json", *(p.path for p in damaged.parts if how != "missing"
                                                              or p != bad)])
    assert "quarantine" in result.output
    store = HarvestStore(tmp_path)
    store.check()  # healthy again
    lost = {"1.2.3"} if how != "log" else set()
    assert store.completed() == {"1.2.1", "1.2.3"} - lost  # the next run asks for the quarantined series again
    assert _sops(tmp_path) == ["1.2.1.1", "1.2.1.2"] + ([] if lost else ["1.2.3.1", "1.2.3.2", "1.2.3.3"])


def test_an_unreadable_commit_record_is_named_and_repaired(tmp_path):
    commits = _three_commits(tmp_path)
    record = tmp_path / "commits" / f"{commits[0].name}.json"
    record.write_text(record.read_text()[:40])
    with pytest.raises(HarvestError, match=rf"commits/{commits[0].name}.json: unreadable commit record"):
        harvest_status(tmp_path)
    assert HarvestStore(tmp_path).problems()[0].commit == commits[0].name
    result = _cli("harvest-status", tmp_path, "--repair")
    assert result.exit_code == 0, result.output
    assert HarvestStore(tmp_path).completed() == {"1.2.3"}
    with HarvestStore(tmp_path).open():  # the record's instances part, listed by nothing now, is cleaned
        pass
    assert _sops(tmp_path) == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert not (tmp_path / commits[0].parts[0].path).exists()


def test_repair_of_a_healthy_directory_moves_nothing(tmp_path):
    _three_commits(tmp_path)
    result = _cli("harvest-status", tmp_path, "--repair")
    assert result.exit_code == 0 and "nothing to repair" in result.output
    assert not (tmp_path / "quarantine").exists()


# -- directory names -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["h[1]", "h*x", "it's [a] *"])
def test_glob_characters_in_the_directory_name(tmp_path, name):
    root = tmp_path / name
    (tmp_path / "h1").mkdir()  # what the glob h[1] would match instead
    _three_commits(root)
    catalog = Catalog(download=False)
    open_harvest(catalog, root)
    assert catalog.sql("SELECT count(*) AS n FROM harvest_instances").to_pylist() == [{"n": 5}]
    result = _cli("sql", "--harvest", root, "-f", "csv", "SELECT count(*) AS n FROM harvest_log")
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["n", "3"]


def test_unchanged_parts_are_not_hashed_again_but_repair_hashes_all(tmp_path):
    commits = _three_commits(tmp_path)
    HarvestStore(tmp_path).check()
    remembered = json.loads((tmp_path / "verified.json").read_text())
    assert set(remembered) == {p.path for c in commits for p in c.parts}
    # a byte changed with size and mtime put back: only a full check (repair's) can see it
    path = tmp_path / commits[0].parts[0].path
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(path, "r+b") as fh:  # same inode
        fh.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert HarvestStore(tmp_path).problems() == []
    assert [str(p) for p in HarvestStore(tmp_path).problems(full=True)] == [
        f"{commits[0].parts[0].path}: altered: its sha256 differs from the committed one"]
    assert HarvestStore(tmp_path).repair()
    assert HarvestStore(tmp_path).completed() == {"1.2.3"}
