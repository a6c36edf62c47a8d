"""cohort/harvest/cluster.py, every outcome written out, fast: shard assignment and directories, the
jobs a run plans, the lost-run check, the commit counter, the argument and cluster checks, the
failure texts; and one run on an in-process Dask cluster (threads, no TCP) against an endpoint that
refuses every connection. Written for the survivors of a mutation run (bench/mutation.py
harvest.cluster). The harvests of real series on a LocalCluster of worker processes, a killed
worker included, are tests/test_dask_harvest.py (Orthanc; too slow to run per mutant).

The clients and ``distributed`` modules written here are stand-ins for a Dask cluster in the
checks that never reach one (a scheduler that is down, a cluster with no worker).
"""

from __future__ import annotations

import hashlib
import json
import re
import logging
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from cohort.endpoints import custom
from cohort.errors import HarvestError
from cohort.harvest import cluster
from cohort.harvest.cluster import (
    ShardedResult, ShardResult, _client, _CommitCounter, _describe, _distributed, _jobs, _left_by_a_lost_run,
    _slots, harvest_on_cluster, shard_dir, shard_of,
)
from cohort.harvest.fs import LocalFiles, ObjectFiles
from cohort.harvest.tasks import HarvestResult, SeriesTask
from cohort.retry import RetryPolicy
from tests.support.plan_server import PlanServer as _Server

UIDS = [f"1.2.826.0.1.3680043.8.498.{i}" for i in range(40)]


def _documented_shard(uid: str, shards: int) -> int:
    """The module docstring's definition: the first 8 bytes of the UID's sha256 (big-endian) modulo shards."""
    digest = hashlib.sha256(uid.encode("ascii")).hexdigest()
    return int(digest[:16], 16) % shards


def test_shard_of_is_the_documented_hash():
    for n in (1, 2, 3, 7, 1000):
        got = [shard_of(u, n) for u in UIDS]
        assert got == [_documented_shard(u, n) for u in UIDS]
        assert all(0 <= s < n for s in got)
    assert set(shard_of(u, 3) for u in UIDS) == {0, 1, 2}


def test_shard_dir(tmp_path):
    assert shard_dir(tmp_path, 3, 10) == tmp_path / "shards" / "0003"
    assert shard_dir(str(tmp_path), 12, 10_000) == tmp_path / "shards" / "0012"
    assert shard_dir(tmp_path, 12, 10_001) == tmp_path / "shards" / "00012"
    assert shard_dir(tmp_path, 7, 123_457) == tmp_path / "shards" / "000007"
    assert shard_dir("s3://bucket/run/", 3, 10) == "s3://bucket/run/shards/0003"
    assert shard_dir("s3://bucket/run", 3, 10) == "s3://bucket/run/shards/0003"
    assert shard_dir("s3://bucket/runX//", 3, 10) == "s3://bucket/runX/shards/0003"
    assert shard_dir("file:///x", 1, 2) == Path("file:/x/shards/0001")


def _result(**kw) -> HarvestResult:
    base = dict(out_dir="o", run_id="r", series=4, skipped=1, by_status={"ok": 3}, instances=9, bytes=10**6,
                seconds=2.0)
    return HarvestResult(**{**base, **kw})


def test_sharded_result_summary():
    shards = (ShardResult(0, _result(), True, 1.0), ShardResult(1, _result(), False, 1.0),
              ShardResult(2, _result(), True, None))
    result = ShardedResult(**vars(_result()), shards=shards, planned=5, concurrency=2)
    assert result.resumed == 2
    assert result.summary() == f"{_result().summary()} [3 of 5 shard(s) done, 2 at once, 2 resumed after a lost worker]"
    assert result.summary("again!") == f"{_result().summary('again!')} [3 of 5 shard(s) done, 2 at once, 2 resumed " \
                                       "after a lost worker]"
    quiet = ShardedResult(**vars(_result()), shards=shards[1:2], planned=1, concurrency=1)
    assert quiet.resumed == 0 and quiet.summary().endswith(" [1 of 1 shard(s) done, 1 at once]")
    assert ShardedResult(**vars(_result())).resumed == 0


def test_jobs_one_per_shard_with_its_series(tmp_path):
    endpoints = {"a": custom("http://127.0.0.1:1/a"), "b": custom("http://127.0.0.1:1/b"),
                 "c": custom("http://127.0.0.1:1/c")}
    todo = [SeriesTask(f"9.{i}", u, "a" if i % 2 else "b", f"http://x/{i}", f"why {i}" if i % 3 else None)
            for i, u in enumerate(UIDS[:9])]
    todo.append(SeriesTask("9.99", UIDS[20], None, None, "no endpoint serves it"))
    options = {"workers": 2, "retry": []}
    jobs = _jobs(todo, endpoints, 4, tmp_path, options)
    expected: dict[int, list[SeriesTask]] = {}
    for t in todo:
        expected.setdefault(_documented_shard(t.series_uid, 4), []).append(t)
    assert [j.index for j in jobs] == sorted(expected)
    for job in jobs:
        mine = expected[job.index]
        assert job.out_dir == str(tmp_path / "shards" / f"{job.index:04d}")
        assert job.source.routes.schema == pa.schema([("StudyInstanceUID", pa.string()),
                                                      ("SeriesInstanceUID", pa.string()), ("endpoint", pa.string()),
                                                      ("series_url", pa.string()), ("reason", pa.string())])
        assert job.source.routes.to_pylist() == [
            {"StudyInstanceUID": t.study_uid, "SeriesInstanceUID": t.series_uid, "endpoint": t.endpoint,
             "series_url": t.url, "reason": t.reason} for t in mine]
        assert job.source.endpoints == {k: e for k, e in endpoints.items() if k in {t.endpoint for t in mine}}
        assert job.options == options and job.options is not options
    assert len({id(j.options) for j in jobs}) == len(jobs)
    assert _jobs([], endpoints, 4, tmp_path, options) == []
    nulls = _jobs([SeriesTask("9", "1", None, None, None)], {}, 1, "s3://b/r", {})
    assert nulls[0].out_dir == "s3://b/r/shards/0000" and nulls[0].source.routes.num_rows == 1
    assert nulls[0].source.routes.schema == pa.schema([
        ("StudyInstanceUID", pa.string()), ("SeriesInstanceUID", pa.string()), ("endpoint", pa.string()),
        ("series_url", pa.string()), ("reason", pa.string())])  # string columns even when all null


def test_a_lost_run_left_its_lock_or_lease(tmp_path, monkeypatch, caplog):
    local = LocalFiles(tmp_path)
    assert _left_by_a_lost_run(local) is False
    (tmp_path / "harvest.lock").write_text("")
    assert _left_by_a_lost_run(local) is True

    files = ObjectFiles(f"memory://b{uuid.uuid4().hex[:10]}/shard")
    slept = []
    monkeypatch.setattr(cluster.time, "sleep", slept.append)
    assert _left_by_a_lost_run(files) is False
    for text in ("{not json", "[1, 2]", json.dumps({"run_id": "r0"}), json.dumps({"expires_epoch": time.time() - 5})):
        files.put("harvest.lease", text.encode())
        assert _left_by_a_lost_run(files) is True, text
    assert slept == []
    files.put("harvest.lease", json.dumps({"run_id": "r1", "expires_epoch": time.time() + 100}).encode())
    with caplog.at_level(logging.WARNING, logger="cohort.harvest.cluster"):
        assert _left_by_a_lost_run(files) is True
    assert len(slept) == 1 and 99 < slept[0] <= 101
    assert [r.getMessage() for r in caplog.records if r.name == "cohort.harvest.cluster"] == [
        f"shard {files.url}: waiting 100 s for the lease of run r1 to expire (its worker was lost)"]
    files.put("harvest.lease", json.dumps({"run_id": "r3", "expires_epoch": time.time() + 0.5}).encode())
    assert _left_by_a_lost_run(files) is True and 1.0 < slept[-1] <= 1.5  # under a second left: waited too
    files.put("harvest.lease", json.dumps({"run_id": "r2", "expires_epoch": time.time() + 10**6}).encode())
    assert _left_by_a_lost_run(files) is True and slept[-1] == 301.0  # at most one lease period and a second

    class Unreadable:
        local = False

        def get(self, rel):
            raise PermissionError(rel)

    assert _left_by_a_lost_run(Unreadable()) is True


def test_commit_counter_counts_new_commit_records(tmp_path):
    one, two, missing = tmp_path / "s1", tmp_path / "s2", tmp_path / "none"
    (one / "commits").mkdir(parents=True)
    (one / "commits" / "old.json").write_text(json.dumps({"series": 5}))
    counter = _CommitCounter([str(one), str(two), str(missing)])
    assert counter.new() == 0
    (two / "commits").mkdir(parents=True)
    (one / "commits" / "a.json").write_text(json.dumps({"series": 3}))
    (two / "commits" / "b.json").write_text(json.dumps({"series": "2"}))
    (two / "commits" / "broken.json").write_text("{half")
    (two / "commits" / "notes.txt").write_text(json.dumps({"series": 100}))
    (two / "commits" / "odd.json").write_text(json.dumps({"runs": 1}))
    (two / "commits" / "dir.json").mkdir()
    assert counter.new() == 5
    assert counter.new() == 0
    (two / "commits" / "broken.json").write_text(json.dumps({"series": 4}))  # retried until it reads
    (two / "commits" / "odd.json").write_text(json.dumps({"series": 1}))
    assert counter.new() == 5 and counter.new() == 0

    class Failing:
        def __init__(self, exc):
            self.exc = exc

        def list(self, sub):
            raise self.exc

    assert _CommitCounter._names(Failing(OSError("gone"))) == []
    assert _CommitCounter._names(Failing(ValueError("bad"))) == []


def test_distributed_client_and_slots(monkeypatch):
    import distributed

    assert _distributed() is distributed

    class Client:
        made = []

        def __init__(self, address, timeout, set_as_default):
            if address.startswith("tcp://down"):
                raise self.failure
            Client.made.append((address, timeout, set_as_default))

    fake = SimpleNamespace(Client=Client)
    mine = Client("tcp://given:1", 1, True)
    assert _client(mine, fake) == (mine, False)
    client, own = _client("tcp://h:8786", fake)
    assert own is True and Client.made[-1] == ("tcp://h:8786", 30, False)
    client, own = _client(SimpleNamespace(scheduler_address="tcp://c:1"), fake)
    assert own is True and Client.made[-1] == ("tcp://c:1", 30, False)
    for bad, name in ((42, "int"), ("", "str"), (SimpleNamespace(scheduler_address=None), "SimpleNamespace")):
        with pytest.raises(HarvestError) as err:
            _client(bad, fake)
        assert str(err.value) == ("cluster must be a dask.distributed Client, a cluster or a scheduler address such as "
                                  f"tcp://127.0.0.1:8786, got {name}")
    for failure in (OSError("refused"), TimeoutError("slow"), ValueError("bad address")):
        Client.failure = failure
        with pytest.raises(HarvestError) as err:
            _client("tcp://down:1", fake)
        assert str(err.value) == (f"cannot reach the Dask scheduler at tcp://down:1 ({type(failure).__name__}: "
                                  f"{failure}); start it (`dask scheduler`) or check the address")
        assert err.value.__cause__ is None and err.value.__suppress_context__

    class Cluster:
        def __init__(self, threads, wait_fails=False):
            self.threads, self.wait_fails, self.waits = threads, wait_fails, []
            self.scheduler = SimpleNamespace(address="tcp://s:9")

        def wait_for_workers(self, n, timeout):
            self.waits.append((n, timeout))
            if self.wait_fails:
                raise TimeoutError("none")

        def nthreads(self):
            return self.threads

    c = Cluster({"w1": 2, "w2": 3})
    assert _slots(c) == 5 and c.waits == [(1, 60.0)]
    assert _slots(Cluster({})) == 1
    with pytest.raises(HarvestError) as err:
        _slots(Cluster({"w": 1}, wait_fails=True))
    assert str(err.value) == ("the Dask cluster at tcp://s:9 has no worker after 60 s: start workers "
                              "(`dask worker ADDRESS`) with idc-cohort installed")
    assert err.value.__cause__ is None and err.value.__suppress_context__

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(HarvestError) as err:
        _distributed()
    assert str(err.value) == ("a harvest on a cluster needs Dask's distributed scheduler: install it with "
                              "`pip install 'idc-cohort[dask]'`")


def test_describe_a_shard_failure():
    class KilledWorker(Exception):
        pass

    assert _describe(KilledWorker("task x")) == (
        "its workers died each time it ran (task x); see the workers' logs (memory? a crash?), then run again: it "
        "resumes from its commits")
    assert _describe(ModuleNotFoundError("no", name="cohort")) == (
        "a worker cannot import 'cohort': install idc-cohort[dask] on every worker (the same version)")
    assert _describe(ValueError("v")) == "ValueError: v"
    assert _describe(None) == "NoneType: None"


def test_arguments_are_checked_before_any_cluster(tmp_path):
    pairs = [("1.2", "1.2.3")]
    url = "http://127.0.0.1:1/dicom-web"
    for kw, message in (({"workers": 0}, "workers must be at least 1, got 0"),
                        ({"shards": 0}, "shards must be at least 1, got 0"),
                        ({"shards": -2}, "shards must be at least 1, got -2")):
        with pytest.raises(HarvestError) as err:
            harvest_on_cluster(pairs, tmp_path, url, cluster=42, **kw)
        assert str(err.value) == message
    # the smallest valid values pass on to the cluster check
    with pytest.raises(HarvestError, match="^cluster must be a dask.distributed Client"):
        harvest_on_cluster(pairs, tmp_path, url, cluster=42, workers=1, shards=1)
    assert list(tmp_path.iterdir()) == []


# -- runs on an in-process Dask cluster (threads, no TCP): series no endpoint serves, and an endpoint that refuses --


@pytest.fixture(scope="module")
def dask_client():
    """An in-process LocalCluster. Its offload thread pool is made afresh: in a process forked after an earlier
    cluster (as mutmut runs each mutant) the module's pool still lists a thread that the fork did not copy, and
    every connection waits on it forever."""
    from concurrent.futures import ThreadPoolExecutor

    import distributed
    import distributed.utils

    saved = distributed.utils._offload_executor
    distributed.utils._offload_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="Dask-Offload")
    try:
        yield from _local_client(distributed)
    finally:
        distributed.utils._offload_executor.shutdown(wait=False)
        distributed.utils._offload_executor = saved


def _local_client(distributed):
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address="127.0.0.1:0") as local, \
            distributed.Client(local, set_as_default=False) as client:
        yield client


def _unserved(pairs) -> cluster._Routes:
    """A coverage report's shape in which no endpoint serves any series: a harvest logs them without a request."""
    return cluster._Routes(pa.table({
        "StudyInstanceUID": [s for s, _ in pairs], "SeriesInstanceUID": [u for _, u in pairs],
        "endpoint": pa.array([None] * len(pairs), pa.string()), "series_url": pa.array([None] * len(pairs), pa.string()),
        "reason": ["no endpoint serves it"] * len(pairs)}), {})


def test_a_sharded_run_on_an_in_process_cluster(dask_client, tmp_path, caplog):
    from cohort.harvest import harvest

    pairs = [(f"9.{i}", u) for i, u in enumerate(UIDS[:5])]
    reference = harvest(_unserved(pairs), tmp_path / "reference", progress=False)  # one process, no cluster
    assert reference.series == 5 and sum(reference.by_status.values()) == 5
    out = tmp_path / "sharded"
    before = time.monotonic()
    with caplog.at_level(logging.INFO, logger="cohort.harvest.cluster"):
        result = harvest_on_cluster(_unserved(pairs), out, cluster=dask_client, shards=3, workers=1, rate=6.0,
                                    progress=False, flush_seconds=0)
    took = time.monotonic() - before
    planned = len({_documented_shard(u, 3) for _, u in pairs})
    assert [r.getMessage() for r in caplog.records if r.name == "cohort.harvest.cluster"] == [
        f"harvest {out} on {dask_client.scheduler.address}: 5 series, 0 already complete, {planned} shard(s) of 3, "
        "2 at once"]
    assert 0 < result.seconds <= took
    shards = sorted({_documented_shard(u, 3) for _, u in pairs})
    assert isinstance(result, ShardedResult)
    assert (result.series, result.skipped, result.instances, result.bytes, result.interrupted) == (5, 0, 0, 0, False)
    assert result.by_status == reference.by_status
    assert result.out_dir == out and result.run_id.startswith("sharded-") and len(result.run_id) == 14
    assert (result.planned, result.concurrency) == (len(shards), 2)
    assert [s.index for s in result.shards] == shards
    assert all(s.rate == 3.0 and s.resumed is False for s in result.shards)
    assert sum(s.result.series for s in result.shards) == 5
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"{i:04d}" for i in shards]
    assert result.summary().endswith(f" [{len(shards)} of {len(shards)} shard(s) done, 2 at once]")
    assert result.seconds > 0

    # again: the series are settled, nothing is planned
    again = harvest_on_cluster(_unserved(pairs), out, cluster=dask_client, workers=1, progress=False)
    assert (again.series, again.skipped, again.planned, again.concurrency, again.shards) == (5, 5, 0, 0, ())
    assert again.by_status == {} and again.out_dir == out

    # no shards given: two a worker thread (2 threads: 4), at most one a series
    fresh = tmp_path / "fresh"
    four = harvest_on_cluster(_unserved(pairs), fresh, cluster=dask_client, workers=1, rate=None, progress=False)
    assert four.planned == len({_documented_shard(u, 4) for _, u in pairs})
    assert all(s.rate is None for s in four.shards)
    assert sorted(p.name for p in (fresh / "shards").iterdir()) == sorted(
        f"{i:04d}" for i in {_documented_shard(u, 4) for _, u in pairs})
    odd = next(u for u in UIDS if _documented_shard(u, 2) == 1)  # would be shard 1 of 2
    two = harvest_on_cluster(_unserved([("9", odd)]), tmp_path / "one", cluster=dask_client, workers=1, progress=False)
    assert two.planned == 1 and [s.index for s in two.shards] == [0]  # one series: one shard


def test_failed_shards_fail_the_run_naming_one(dask_client, tmp_path):
    pairs = [(f"9.{i}", u) for i, u in enumerate(UIDS[:5])]
    refused = custom("http://127.0.0.1:1/dicom-web")  # port 1: every connection refused at once
    policy = RetryPolicy(timeout=2, max_attempts=1, backoff_base=0.01, backoff_max=0.01, retry_after_max=0.01)
    shards = sorted({_documented_shard(u, 3) for _, u in pairs})
    with pytest.raises(HarvestError) as err:
        harvest_on_cluster(pairs, tmp_path, refused, cluster=dask_client, shards=3, workers=1, policy=policy,
                           progress=False)
    text = str(err.value)
    # two shards run at once; once one has failed no other is started
    m = re.match(r"2 of (\d+) shard\(s\) failed, e\.g\. shard (\d+): HarvestError: cannot reach "
                 r"http://127\.0\.0\.1:1/dicom-web: ", text)
    assert m and int(m.group(1)) == len(shards) and int(m.group(2)) in shards[:2], text
    assert text.endswith(f"; the series committed before are kept in {tmp_path}: run again to resume")
    assert "failed after 1 attempts" in text  # the run's retry policy reached the shards
    with pytest.raises(HarvestError) as err:  # one shard, one failure: it is the one named
        harvest_on_cluster(pairs, tmp_path / "one", refused, cluster=dask_client, shards=1, workers=1, policy=policy,
                           progress=False)
    assert str(err.value).startswith("1 of 1 shard(s) failed, e.g. shard 0: HarvestError: cannot reach ")


def test_summary_says_how_to_resume():
    left = ShardedResult(**vars(_result(by_status={"ok": 1})), shards=(), planned=2, concurrency=1)
    assert left.remaining == 2
    assert left.summary("run it again") == (f"{_result(by_status={'ok': 1}).summary('run it again')} "
                                            "[0 of 2 shard(s) done, 1 at once]")
    assert "2 series left: run it again" in left.summary("run it again")


def test_shards_run_with_the_run_options_quietly_under_their_own_keys(dask_client, tmp_path, capsys):
    import distributed

    pairs = [(f"9.{i}", u) for i, u in enumerate(UIDS[:4])]
    status = next(iter(harvest_on_cluster(_unserved(pairs), tmp_path, cluster=dask_client, shards=2, workers=1,
                                          progress=False).by_status))
    with distributed.get_task_stream(client=dask_client) as stream:
        # the series are settled; asked again for their status, the shards ask again too (the run's options travel)
        again = harvest_on_cluster(_unserved(pairs), tmp_path, cluster=dask_client, shards=2, workers=1,
                                   progress=False, retry=[status])
        third = harvest_on_cluster(_unserved(pairs), tmp_path, cluster=dask_client, shards=2, workers=1,
                                   progress=False, retry=[status])
    assert (again.skipped, again.by_status) == (0, {status: 4})
    assert sum(s.result.skipped for s in again.shards) == 0 and third.by_status == {status: 4}
    keys = [t["key"] for t in stream.data]
    assert len(keys) == 2 * again.planned
    tokens = set()
    for key in keys:
        m = re.fullmatch(r"harvest-shard-(\d{4})-([0-9a-f]{8})", key)
        assert m, key
        tokens.add(m.group(2))
    assert len(tokens) == 2  # one a run: a second run on the cluster never meets the first one's tasks
    err = capsys.readouterr().err
    assert "%|" not in err  # no progress bar from the shards' harvests, nor from the coordinator


def test_the_coordinator_bar_counts_committed_series(dask_client, tmp_path, capsys):
    pairs = [(f"9.{i}", u) for i, u in enumerate(UIDS[:3])]
    planned = len({_documented_shard(u, 2) for _, u in pairs})
    harvest_on_cluster(_unserved(pairs), tmp_path, cluster=dask_client, shards=2, workers=1)  # progress by default
    lines = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if ln.strip()]
    last = lines[-1]
    assert last.startswith("harvest (sharded): 100%|"), lines
    assert " 3/3 [" in last and "series/s" in last and last.endswith(f", shards={planned}/{planned}]"), last
    assert all(ln.startswith("harvest (sharded):") for ln in lines if "%|" in ln)  # the shards' own bars stay off


def test_ctrl_c_stops_the_coordinator_and_says_interrupted(dask_client, tmp_path, monkeypatch):
    pairs = [(f"9.{i}", u) for i, u in enumerate(UIDS[:4])]

    def interrupt(self):  # Ctrl-C while the coordinator looks at the commit records (injected)
        raise KeyboardInterrupt

    monkeypatch.setattr(_CommitCounter, "new", interrupt)
    result = harvest_on_cluster(_unserved(pairs), tmp_path, cluster=dask_client, shards=4, workers=1, progress=False)
    assert result.interrupted is True  # the shards that ended before the interrupt still count
    assert len(result.shards) <= result.planned and all(not s.result.interrupted for s in result.shards)
    assert (result.series, result.skipped, result.instances) == (4, 0, 0)
    assert result.summary().startswith("interrupted: 4 series ")


# -- what the run after the tqdm-lock fix showed untested: series a DICOMweb server on 127.0.0.1 answers -----------

STUDY = "1.2.826.0.1.3680043.8.498.1"


def _metadata(series: str, sop: str) -> bytes:
    """One instance's DICOM JSON: its UIDs and modality, written by hand."""
    return json.dumps([{"0020000D": {"vr": "UI", "Value": [STUDY]}, "0020000E": {"vr": "UI", "Value": [series]},
                        "00080018": {"vr": "UI", "Value": [sop]}, "00080060": {"vr": "CS", "Value": ["CT"]}}]).encode()


ONCE = RetryPolicy(timeout=5, max_attempts=1)


def test_a_served_series_is_asked_for_its_full_metadata_by_default(dask_client, tmp_path):
    series = UIDS[30]
    path = f"/studies/{STUDY}/series/{series}/metadata"
    with _Server({path: [(200, _metadata(series, series + ".1"))]}) as server:
        result = harvest_on_cluster([(STUDY, series)], tmp_path, server.url, cluster=dask_client, shards=1,
                                    workers=1, policy=ONCE, progress=False)
        asked = [p for p in server.paths if p != "/studies"]
    assert asked == [path]  # /metadata (not the light /instances?includefield=... search)
    assert (result.by_status, result.instances, result.skipped) == ({"ok": 1}, 1, 0)
    from cohort.harvest import HarvestStore

    rows = HarvestStore(tmp_path / "shards" / "0000").read_instances(columns=["SOPInstanceUID", "Modality"])
    assert rows.to_pylist() == [{"SOPInstanceUID": series + ".1", "Modality": "CT"}]


@pytest.mark.parametrize("by_study", [None, True])
def test_a_shard_asks_for_a_study_once_only_with_by_study(dask_client, tmp_path, by_study):
    series = UIDS[32:34]
    plan = {f"/studies/{STUDY}/series/{s}/metadata": [(200, _metadata(s, s + ".1"))] for s in series}
    plan[f"/studies/{STUDY}/metadata"] = [(200, b"[" + b",".join(_metadata(s, s + ".1")[1:-1] for s in series) + b"]")]
    with _Server(plan) as server:
        result = harvest_on_cluster([(STUDY, s) for s in series], tmp_path, server.url, cluster=dask_client,
                                    shards=1, workers=1, policy=ONCE, progress=False, by_study=by_study)
        asked = [p for p in server.paths if p != "/studies"]
    assert sorted(asked) == ([f"/studies/{STUDY}/metadata"] if by_study else
                             [f"/studies/{STUDY}/series/{s}/metadata" for s in sorted(series)])
    assert (result.by_status, result.instances) == ({"ok": 2}, 2)


def test_a_series_not_found_at_its_endpoint_is_not_asked_again_there(dask_client, tmp_path):
    series = UIDS[31]
    path = f"/studies/{STUDY}/series/{series}/metadata"
    with _Server({path: [(404, b"no such series")]}) as server:
        first = harvest_on_cluster([(STUDY, series)], tmp_path, server.url, cluster=dask_client, shards=1,
                                   workers=1, policy=ONCE, progress=False)
        again = harvest_on_cluster([(STUDY, series)], tmp_path, server.url, cluster=dask_client, shards=1,
                                   workers=1, policy=ONCE, progress=False)
        asked = [p for p in server.paths if p != "/studies"]
    assert first.by_status == {"not_found": 1}
    assert (again.skipped, again.planned, again.by_status) == (1, 0, {})
    assert asked == [path]  # once


def test_series_a_shard_finds_settled_in_its_own_store_count_as_skipped(dask_client, tmp_path):
    """Shard 0 of 1 logged a series not found; a later run of 2 shards (asking not-found series again) logged an
    HTTP 500 in shard 1; a run of 1 shard then plans it (its latest outcome is not final) and shard 0 skips it."""
    series = next(u for u in UIDS if _documented_shard(u, 2) == 1)
    path = f"/studies/{STUDY}/series/{series}/metadata"
    run = dict(cluster=dask_client, workers=1, policy=ONCE, progress=False)
    with _Server({path: [(404, b"no"), (500, b"busy")]}) as server:
        assert harvest_on_cluster([(STUDY, series)], tmp_path, server.url, shards=1, **run).by_status == {
            "not_found": 1}
        assert harvest_on_cluster([(STUDY, series)], tmp_path, server.url, shards=2, retry=["not_found"],
                                  **run).by_status == {"http_error": 1}
        third = harvest_on_cluster([(STUDY, series)], tmp_path, server.url, shards=1, **run)
        asked = [p for p in server.paths if p != "/studies"]
    assert asked == [path, path]
    assert (third.planned, [s.index for s in third.shards], third.shards[0].result.skipped) == (1, [0], 1)
    assert (third.series, third.skipped, third.by_status) == (1, 1, {})


def test_the_routing_policy_reaches_the_router(tmp_path, monkeypatch):
    """A cohort (no endpoint given) is routed with the run's policy; the router is a stand-in recording it."""
    from cohort.harvest import tasks as runner

    asked = []

    def route(cohort, policy):
        asked.append(policy)
        return _unserved([("9", UIDS[0])])

    monkeypatch.setattr(runner, "route", route)
    cohort = SimpleNamespace(series_uids=lambda: [UIDS[0]], to_arrow=lambda: None)
    for routing in ("proxy", None):
        with pytest.raises(HarvestError, match="^cluster must be"):  # routed before the cluster is looked at
            harvest_on_cluster(cohort, tmp_path, cluster=42, routing=routing)
    assert asked == ["proxy", None]


def test_one_unreadable_commit_record_does_not_hide_the_others(tmp_path):
    commits = tmp_path / "s" / "commits"
    commits.mkdir(parents=True)
    counter = _CommitCounter([str(tmp_path / "s")])
    for i in range(10):
        (commits / f"good{i}.json").write_text(json.dumps({"series": 1}))
        (commits / f"half{i}.json").write_text("{half")
    assert counter.new() == 10  # whatever order the names come in


def test_a_series_of_5001_instances_is_written_in_parts_of_5000_by_default(dask_client, tmp_path):
    """harvest's default flush of 5000 instances reaches the shards: a part of 5000 rows, then one of 1."""
    series = UIDS[32]
    one = {"0020000D": {"vr": "UI", "Value": [STUDY]}, "0020000E": {"vr": "UI", "Value": [series]}}
    body = json.dumps([{**one, "00080018": {"vr": "UI", "Value": [f"{series}.{i}"]}} for i in range(5001)]).encode()
    with _Server({f"/studies/{STUDY}/series/{series}/metadata": [(200, body)]}) as server:
        result = harvest_on_cluster([(STUDY, series)], tmp_path, server.url, cluster=dask_client, shards=1,
                                    workers=1, policy=ONCE, progress=False)
    assert (result.by_status, result.instances) == ({"ok": 1}, 5001)
    from cohort.harvest import HarvestStore

    [commit] = HarvestStore(tmp_path / "shards" / "0000").commits()
    assert [(p.kind, p.rows) for p in commit.parts] == [("instances", 5000), ("instances", 1), ("log", 1)]
