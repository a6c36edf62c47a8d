"""Harvests from a real Orthanc into S3 (moto in server mode): whole, after injected PUT faults, from the CLI.

What counts is compared with the source files' SOPInstanceUIDs (``tests.support.data``
records, read from the files by pydicom), never with the harvester's own output.
Fault plans as in test_harvest_crash.py: the k-th PUT of a run fails (the store answers
500 after botocore's retries), or the process dies right after it (no PUT after it, and
its lease is left behind to expire); then a rerun completes with no duplicates.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter

import pyarrow.parquet as pq
import pytest

from cohort import custom
from cohort.errors import HarvestError
from cohort.harvest import HarvestStore, harvest
from cohort.harvest.fs import ObjectFiles
from cohort.harvest.lock import LEASE_NAME, ObjectLease
from cohort.retry import RetryPolicy
from tests.support.s3 import MotoS3, require_moto

pytestmark = pytest.mark.orthanc

FAST = RetryPolicy(timeout=10, max_attempts=8, backoff_base=0.01, backoff_max=0.05, retry_after_max=0.1)
COHORT = [sys.executable, "-m", "cohort.cli"]


class _Died(BaseException):
    """The process died right after a PUT (nothing after it is written)."""


@pytest.fixture(scope="module")
def moto_s3():
    require_moto()
    with MotoS3() as server:
        yield server


@pytest.fixture
def s3(moto_s3, monkeypatch):
    import s3fs

    for name, value in moto_s3.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    yield moto_s3, moto_s3.make_bucket(f"b-{uuid.uuid4().hex[:10]}")
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def three_instance_series(orthanc):
    records = [r for r in orthanc.series if r.n_instances == 3][:2]
    assert len(records) == 2
    return ([(r.StudyInstanceUID, r.SeriesInstanceUID) for r in records],
            {r.SeriesInstanceUID: set(r.sop_instance_uids) for r in records})


def _run(pairs, out, url, **kw):
    return harvest(pairs, out, custom(url), workers=1, rate=None, policy=FAST, progress=False,
                   flush_instances=2, flush_seconds=0, **kw)


def _plan(monkeypatch, k, mode):
    """The k-th PUT of a part or record fails ("fail") or is the last one before the process dies ("die")."""
    real = ObjectFiles.put
    calls = Counter()

    def put(self, rel, data):
        calls["n"] += 1
        if calls["n"] == k and mode == "fail":
            raise OSError(5, f"injected: PUT {rel} answered 500 InternalError after 5 attempts")
        if k and calls["n"] > k and mode == "die":  # dead: nothing after the k-th PUT reaches the store
            raise _Died(rel)
        real(self, rel, data)
        if calls["n"] == k and mode == "die":
            raise _Died(rel)

    monkeypatch.setattr(ObjectFiles, "put", put)
    if mode == "die":  # a dead process releases nothing: its lease stays until it expires
        monkeypatch.setattr(ObjectLease, "release", lambda self: (self._stop.set(), self._thread and
                                                                  self._thread.join()) and None)
    return calls


def _check_counted(url, expected):
    store = HarvestStore(url)
    store.check()
    done = store.completed()
    rows = store.read_instances(["SeriesInstanceUID", "SOPInstanceUID"]).to_pylist()
    sops = [r["SOPInstanceUID"] for r in rows]
    assert len(sops) == len(set(sops)), "duplicate instances"
    by_series: dict[str, set] = {}
    for r in rows:
        by_series.setdefault(r["SeriesInstanceUID"], set()).add(r["SOPInstanceUID"])
    assert set(by_series) <= done, "instances of a series that is not complete are counted"
    for series in done:
        assert by_series.get(series) == expected[series], series
    return done


def _expire_lease(server, bucket, prefix):
    fs = server.filesystem()
    key = f"{bucket}/{prefix}/{LEASE_NAME}"
    if fs.exists(key):
        lease = json.loads(fs.cat_file(key))
        lease["expires_epoch"] = 0
        fs.pipe_file(key, json.dumps(lease).encode())


def test_a_harvest_into_s3_holds_exactly_the_source_instances(orthanc, s3):
    server, bucket = s3
    records = orthanc.series[:8]
    url = f"s3://{bucket}/aml"
    result = harvest([(r.StudyInstanceUID, r.SeriesInstanceUID) for r in records], url,
                     custom(orthanc.dicomweb_url), workers=4, rate=None, policy=FAST, progress=False)
    assert result.by_status == {"ok": len(records)}, result
    assert str(result.out_dir) == url
    expected = {r.SeriesInstanceUID: set(r.sop_instance_uids) for r in records}
    assert _check_counted(url, expected) == set(expected)
    # a rerun asks for nothing
    again = harvest([(r.StudyInstanceUID, r.SeriesInstanceUID) for r in records], url,
                    custom(orthanc.dicomweb_url), workers=4, rate=None, policy=FAST, progress=False)
    assert again.skipped == len(records) and not again.by_status
    # every object under the prefix is one of ours, and every Parquet part has a schema Spark and BigQuery take
    fs = server.filesystem()
    for key in fs.find(f"{bucket}/aml"):
        if key.endswith(".parquet"):
            with fs.open(key, "rb") as fh:
                _check_external_schema(pq.ParquetFile(fh).schema, key)


@pytest.mark.parametrize("mode", ["fail", "die"])
def test_every_put_of_a_run_failing_leaves_only_whole_series_and_a_rerun_completes(
        orthanc, three_instance_series, s3, monkeypatch, mode):
    server, bucket = s3
    pairs, expected = three_instance_series
    calls = _plan(monkeypatch, 0, mode)
    _run(pairs, f"s3://{bucket}/clean", orthanc.dicomweb_url)
    puts = calls["n"]
    assert puts in (5, 8), puts  # as on disk: 2 instances parts a series, log part, commit record
    monkeypatch.undo()
    for k in range(1, puts + 1):
        url = f"s3://{bucket}/k{k}"
        calls = _plan(monkeypatch, k, mode)
        with pytest.raises((HarvestError, _Died)) as err:
            _run(pairs, url, orthanc.dicomweb_url)
        monkeypatch.undo()
        if mode == "fail":
            assert "run the same command again to resume" in str(err.value), err.value
        done = _check_counted(url, expected)
        if mode == "die" and k <= 4:
            assert not done, (k, done)
        if mode == "die":
            with pytest.raises(HarvestError, match="another harvest is writing"):  # its lease is still live
                _run(pairs, url, orthanc.dicomweb_url)
            _expire_lease(server, bucket, f"k{k}")
        rerun = _run(pairs, url, orthanc.dicomweb_url)
        assert rerun.skipped == len(done) and rerun.failed == 0, (k, rerun)
        assert _check_counted(url, expected) == set(expected), k
        store = HarvestStore(url)
        listed = {k_.split("/", 2)[2] for k_ in server.filesystem().find(f"{bucket}/k{k}")}
        committed = {p.path for c in store.commits() for p in c.parts} | \
            {f"commits/{c.name}.json" for c in store.commits()}
        assert listed - {"verified.json"} == committed, (k, listed - committed)  # the leftovers are gone


def test_cli_harvest_into_s3_then_sql_and_archive_in_place(orthanc, s3):
    server, bucket = s3
    records = [r for r in orthanc.series if r.Modality in ("CT", "MR")][:4]
    url = f"s3://{bucket}/lab"
    csv = "\n".join(["StudyInstanceUID,SeriesInstanceUID"] +
                    [f"{r.StudyInstanceUID},{r.SeriesInstanceUID}" for r in records]) + "\n"
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as fh:
        fh.write(csv)
    run = subprocess.run([*COHORT, "harvest", fh.name, "--url", orthanc.dicomweb_url, "-o", url, "--no-progress",
                          "--no-rate-limit"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert url in run.stderr
    n = sum(r.n_instances for r in records)
    sql = subprocess.run([*COHORT, "sql", "--harvest", url, "-f", "csv",
                          "SELECT count(*) AS n, count(DISTINCT SOPInstanceUID) AS d FROM harvest_instances"],
                         capture_output=True, text=True, timeout=300)
    assert sql.returncode == 0, sql.stderr
    assert sql.stdout.split() == ["n,d", f"{n},{n}"]
    arch = subprocess.run([*COHORT, "sql", "--archive", url, "-f", "csv",
                           "SELECT count(*) AS n FROM index"], capture_output=True, text=True, timeout=600)
    assert arch.returncode == 0, arch.stderr
    assert arch.stdout.split() == ["n", str(len(records))]
    fs = server.filesystem()
    tables = [k for k in fs.find(f"{bucket}/lab/archive") if k.endswith(".parquet")]
    assert any(k.endswith("/index.parquet") for k in tables) and any(k.endswith("/dicom_metadata.parquet")
                                                                    for k in tables)
    for key in tables:
        with fs.open(key, "rb") as fh:
            _check_external_schema(pq.ParquetFile(fh).schema, key)
    parts = subprocess.run([*COHORT, "harvest-status", url, "--parts", "instances"], capture_output=True, text=True,
                           timeout=300)
    assert parts.returncode == 0, parts.stderr
    listed = parts.stdout.split()
    assert listed and all(p.startswith(f"{url}/instances/part-") for p in listed)
    assert set(listed) == {f"s3://{k}" for k in fs.find(f"{bucket}/lab/instances")}


#: Parquet logical types that Spark (3.x) or BigQuery external tables refuse or misread.
_REFUSED = ("UINT", "NANOS", "TIME(", "INTERVAL", "FLOAT16", "UUID", "UNKNOWN")


def _check_external_schema(schema, where: str) -> None:
    """Column names and types that Spark and BigQuery external tables accept (the Parquet schema itself)."""
    import re

    for i in range(len(schema)):
        column = schema.column(i)
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", column.path), (where, column.path)
        logical = str(column.logical_type)
        assert not any(bad in logical for bad in _REFUSED), (where, column.path, logical)
        assert column.physical_type in ("BOOLEAN", "INT32", "INT64", "FLOAT", "DOUBLE", "BYTE_ARRAY",
                                        "FIXED_LEN_BYTE_ARRAY"), (where, column.path, column.physical_type)
