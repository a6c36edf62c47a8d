"""The harvest store in S3: a real S3-compatible server (moto in server mode, its own process on 127.0.0.1).

No rename in an object store: parts are PUT under their final unique names, the commit record
last. Checked here against the objects themselves, read back with a separate s3fs client:
what counts, what a killed run leaves and the next one cleans (ours only), one writer (the
lease, conditional PUTs), integrity (a deleted or truncated object is named, then repaired),
and that credentials planted in the environment never show in output or in any object.
The Orthanc harvests into S3 are in test_objstore_orthanc.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import subprocess
import sys
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cohort import Catalog
from cohort.errors import HarvestError
from cohort.harvest import INSTANCE_SCHEMA, LOG_SCHEMA, HarvestStore, harvest_status, instance_row, open_harvest
from cohort.harvest.lock import LEASE_NAME, ObjectLease
from cohort.harvest.store import INSTANCES, LOG
from cohort.harvest.views import repair_harvest
from tests.support.s3 import MotoS3, require_moto

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
COHORT = [sys.executable, "-m", "cohort.cli"]


@pytest.fixture(scope="session")
def moto_s3():
    require_moto()
    with MotoS3() as server:
        yield server


@pytest.fixture
def s3(moto_s3, monkeypatch):
    """The server, reached the usual botocore way (environment), and a fresh bucket: (server, bucket)."""
    import s3fs

    for name, value in moto_s3.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = moto_s3.make_bucket(f"b-{uuid.uuid4().hex[:10]}")
    yield moto_s3, bucket
    s3fs.S3FileSystem.clear_instance_cache()


def _batch(series: str, sops: list[str], status: str = "ok"):
    rows = [{**instance_row({"00080018": {"vr": "UI", "Value": [sop]}}, "1.2", series),
             "endpoint": "e", "run_id": "r", "harvested_at": NOW} for sop in sops]
    log = [{"StudyInstanceUID": "1.2", "SeriesInstanceUID": series, "status": status, "attempts": 1,
            "instances": len(rows), "bytes": 10, "seconds": 0.1, "endpoint": "e", "run_id": "r", "finished_at": NOW}]
    return pa.Table.from_pylist(rows, schema=INSTANCE_SCHEMA), pa.Table.from_pylist(log, schema=LOG_SCHEMA)


def _three_commits(url):
    with HarvestStore(url).open() as store:
        return [store.write(*_batch("1.2.1", ["1.2.1.1", "1.2.1.2"])),
                store.write(*_batch("1.2.2", [], status="http_error")),
                store.write(*_batch("1.2.3", ["1.2.3.1", "1.2.3.2", "1.2.3.3"]))]


def _keys(server, bucket, prefix="h"):
    fs = server.filesystem()
    return sorted(k.split("/", 2)[2] for k in fs.find(f"{bucket}/{prefix}"))


def _sops(url):
    return sorted(HarvestStore(url).read_instances(["SOPInstanceUID"]).column(0).to_pylist())


# -- the commit protocol, seen from the objects ------------------------------------------------
def test_parts_are_put_under_final_names_and_the_commit_record_lists_them_with_their_sha256(s3):
    server, bucket = s3
    url = f"s3://{bucket}/h"
    commits = _three_commits(url)
    keys = _keys(server, bucket)
    assert not [k for k in keys if k.endswith(".tmp")]  # no temp names: a PUT is all-or-nothing
    assert LEASE_NAME not in keys  # released at close
    fs = server.filesystem()
    for commit in commits:
        record = json.loads(fs.cat_file(f"{bucket}/h/commits/{commit.name}.json"))
        assert [p["path"] for p in record["parts"]] == [p.path for p in commit.parts]
        for part in record["parts"]:  # sizes and digests of the objects as the server holds them
            data = fs.cat_file(f"{bucket}/h/{part['path']}")
            assert (len(data), hashlib.sha256(data).hexdigest()) == (part["bytes"], part["sha256"])
            assert pq.read_table(pa.BufferReader(data)).num_rows == part["rows"]
    assert _sops(url) == ["1.2.1.1", "1.2.1.2", "1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert HarvestStore(url).completed() == {"1.2.1", "1.2.3"}
    status = {r["status"]: r["series"] for r in harvest_status(url).to_pylist()}
    assert status == {"ok": 2, "http_error": 1}


def test_uncommitted_parts_do_not_count_and_the_next_run_deletes_only_its_own(s3, caplog):
    server, bucket = s3
    url = f"s3://{bucket}/h"
    _three_commits(url)
    fs = server.filesystem()
    with HarvestStore(url).open() as store:  # a run killed before its commit record was PUT
        orphan = store.write_part(INSTANCES, _batch("1.2.4", ["1.2.4.1"])[0])
        orphan_log = store.write_part(LOG, _batch("1.2.4", ["1.2.4.1"])[1])
    fs.pipe_file(f"{bucket}/h/instances/someone-elses.parquet", b"not ours")
    assert _sops(url) == ["1.2.1.1", "1.2.1.2", "1.2.3.1", "1.2.3.2", "1.2.3.3"]  # readers never see them
    assert "1.2.4" not in HarvestStore(url).completed()
    with caplog.at_level(logging.WARNING, logger="cohort.harvest"), HarvestStore(url).open():
        pass
    keys = _keys(server, bucket)
    assert orphan.path not in keys and orphan_log.path not in keys
    assert "instances/someone-elses.parquet" in keys  # not ours: left alone, with a warning
    assert "someone-elses.parquet is not a part this harvester wrote" in caplog.text


# -- one writer ------------------------------------------------------------------------------
def test_a_second_writer_is_refused_and_an_expired_lease_is_taken_over(s3, caplog):
    server, bucket = s3
    url = f"s3://{bucket}/h"
    first = HarvestStore(url).open()
    assert first.files.atomic_create, "this s3fs/moto should write the lease with If-None-Match: *"
    try:
        with pytest.raises(HarvestError, match=rf"another harvest is writing to {url}: .*run {first.run_id}"):
            HarvestStore(url).open()
        with pytest.raises(HarvestError, match=f"another harvest is writing to {url}"):
            HarvestStore(url).repair()  # repairing is writing too
    finally:
        first._lock._stop.set()  # the first run "dies": it stops renewing, its lease stays
        first._lock._thread.join()
    fs = server.filesystem()
    lease = json.loads(fs.cat_file(f"{bucket}/h/{LEASE_NAME}"))
    assert lease["run_id"] == first.run_id
    lease["expires_epoch"] = 0  # ... and its lease expired
    fs.pipe_file(f"{bucket}/h/{LEASE_NAME}", json.dumps(lease).encode())
    with caplog.at_level(logging.WARNING, logger="cohort.harvest"), HarvestStore(url).open() as second:
        assert f"taking over the expired harvest lease {url}/{LEASE_NAME}" in caplog.text
        assert json.loads(fs.cat_file(f"{bucket}/h/{LEASE_NAME}"))["run_id"] == second.run_id
        # the first run wakes up: its lease is gone, so it commits nothing
        with pytest.raises(HarvestError, match="lost its write lease"):
            first.write(*_batch("1.2.9", ["1.2.9.1"]))
        second.write(*_batch("1.2.1", ["1.2.1.1"]))
    assert HarvestStore(url).completed() == {"1.2.1"}
    assert _sops(url) == ["1.2.1.1"]


def test_the_lease_is_created_conditionally(s3):
    """Two leases racing for one store: the conditional PUT lets exactly one win."""
    _server, bucket = s3
    from cohort.harvest.fs import location

    files = location(f"s3://{bucket}/h")
    assert files.create("x.json", b"1") is True
    assert files.create("x.json", b"2") is False
    assert files.get("x.json") == b"1"
    a, b = ObjectLease(files, "run-a"), ObjectLease(files, "run-b")
    a.acquire()
    try:
        with pytest.raises(HarvestError, match="run-a"):
            b.acquire()
        a.renew()  # renewal is conditional on a's own last version
        a.check()
    finally:
        a.release()
    b.acquire().release()


# -- integrity -------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["missing", "truncated"])
def test_a_deleted_or_truncated_object_is_named_then_repaired_into_quarantine(s3, how):
    server, bucket = s3
    url = f"s3://{bucket}/h"
    commits = _three_commits(url)
    bad = commits[2].parts[0]
    fs = server.filesystem()
    key = f"{bucket}/h/{bad.path}"
    if how == "missing":
        fs.rm_file(key)
    else:
        fs.pipe_file(key, fs.cat_file(key)[: bad.bytes // 2])
    for reader in (lambda: HarvestStore(url).open(), lambda: harvest_status(url),
                   lambda: open_harvest(Catalog(download=False, local_copy=False), url)):
        with pytest.raises(HarvestError, match=rf"{bad.path}: {how}.*harvest-status {url} --repair"):
            reader()
    moved = repair_harvest(url)
    assert all(str(m).startswith(f"{url}/quarantine/") for m in moved)
    assert HarvestStore(url).completed() == {"1.2.1"}  # the next run asks for 1.2.3 again
    assert _sops(url) == ["1.2.1.1", "1.2.1.2"]
    assert f"commits/{commits[2].name}.json" in [k.split("/", 2)[2] for k in _keys(server, bucket, "h/quarantine")]


def test_an_altered_object_is_found_by_its_sha256_and_unchanged_ones_are_not_read_again(s3):
    server, bucket = s3
    url = f"s3://{bucket}/h"
    commits = _three_commits(url)
    HarvestStore(url).check()
    fs = server.filesystem()
    remembered = json.loads(fs.cat_file(f"{bucket}/h/verified.json"))
    assert set(remembered) == {p.path for c in commits for p in c.parts}
    part = commits[0].parts[0]
    data = bytearray(fs.cat_file(f"{bucket}/h/{part.path}"))
    data[len(data) // 2] ^= 0xFF  # same size, new ETag
    fs.pipe_file(f"{bucket}/h/{part.path}", bytes(data))
    assert [str(p) for p in HarvestStore(url).problems()] == [
        f"{part.path}: altered: its sha256 differs from the committed one"]


# -- query in place --------------------------------------------------------------------------
def test_catalog_and_cli_query_the_store_in_place(s3):
    server, bucket = s3
    url = f"s3://{bucket}/h"
    _three_commits(url)
    catalog = Catalog(download=False, local_copy=False)
    open_harvest(catalog, url)
    got = catalog.sql("SELECT SeriesInstanceUID, count(*) AS n FROM harvest_instances GROUP BY 1 ORDER BY 1")
    assert got.to_pylist() == [{"SeriesInstanceUID": "1.2.1", "n": 2}, {"SeriesInstanceUID": "1.2.3", "n": 3}]
    assert catalog.sql("SELECT count(*) AS n FROM harvest_series WHERE status = 'ok'").to_pylist() == [{"n": 2}]
    # the sandbox still holds: the view's prefix is readable, the rest of the bucket is not
    server.filesystem().pipe_file(f"{bucket}/other/x.parquet", b"x")
    from cohort.errors import QueryError

    with pytest.raises(QueryError):
        catalog.sql(f"SELECT * FROM read_parquet('s3://{bucket}/other/x.parquet')")
    result = subprocess.run([*COHORT, "sql", "--harvest", url, "-f", "csv",
                             "SELECT status, count(*) AS n FROM harvest_series GROUP BY 1 ORDER BY 1"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["status,n", "http_error,1", "ok,2"]


# -- credentials -----------------------------------------------------------------------------
SECRET = "PLANTEDsecretKEY0123456789abcdefghijklmn"
TOKEN = "PLANTEDsessionTOKENxyz0123456789"


def test_credentials_planted_in_the_environment_never_show(s3, monkeypatch, caplog):
    server, bucket = s3
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    url = f"s3://{bucket}/h"
    texts = []
    with caplog.at_level(logging.INFO):
        _three_commits(url)
        texts.append(json.dumps(harvest_status(url).to_pylist(), default=str))
        for bad in (f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/h", f"s3://AKIA:{SECRET}@{bucket}/h"):
            with pytest.raises(HarvestError) as err:
                HarvestStore(bad).open()
            texts.append(str(err.value))
    texts.append(caplog.text)
    for args in (["harvest-status", url], ["sql", "--harvest", url, "SELECT * FROM harvest_log"],
                 ["harvest-status", f"s3://AKIA:{SECRET}@{bucket}/h"],
                 ["sql", "--harvest", f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/h", "SELECT 1"]):
        result = subprocess.run([*COHORT, *args], capture_output=True, text=True, timeout=900)
        texts += [result.stdout, result.stderr]
    assert "no-such-bucket" in texts[1] and "credentials in a URL are refused" in texts[2]
    fs = server.filesystem()
    objects = [fs.cat_file(k) for k in fs.find(bucket)]
    assert len(objects) >= 7  # 6 parts, 3 records, verified.json
    for secret in (SECRET, TOKEN):
        assert not [t for t in texts if secret in t]
        assert not [o for o in objects if secret.encode() in o]


# -- any fsspec filesystem ---------------------------------------------------------------------
def test_any_fsspec_filesystem_holds_a_store_and_duckdb_reads_it_in_place():
    """fsspec's in-memory filesystem: no S3 specifics (no ETag, no If-Match), the same protocol."""
    import fsspec

    url = f"memory://store-{uuid.uuid4().hex[:8]}/h"
    fs = fsspec.filesystem("memory")
    root = url[len("memory://"):]
    with pytest.raises(HarvestError, match="does not exist"):
        HarvestStore(url).open()
    fs.mkdir(root.split("/")[0])
    _three_commits(url)
    catalog = Catalog(download=False, local_copy=False)
    open_harvest(catalog, url)
    assert catalog.sql("SELECT count(*) AS n FROM harvest_instances").to_pylist() == [{"n": 5}]
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{root}/commits")) == \
        sorted(f"{c.name}.json" for c in HarvestStore(url).commits())
    assert _sops(url) == ["1.2.1.1", "1.2.1.2", "1.2.3.1", "1.2.3.2", "1.2.3.3"]
    part = HarvestStore(url).commits()[0].parts[0]
    data = bytearray(fs.cat_file(f"{root}/{part.path}"))
    data[len(data) // 2] ^= 0xFF  # same size, and this filesystem keeps no ETag: found all the same
    fs.pipe_file(f"{root}/{part.path}", bytes(data))
    assert [str(p) for p in HarvestStore(url).problems()] == [
        f"{part.path}: altered: its sha256 differs from the committed one"]
    fs.rm(root.split("/")[0], recursive=True)
