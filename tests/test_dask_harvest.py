"""The harvest sharded across a real Dask LocalCluster (2 worker processes) against a real Orthanc.

One cluster and one Orthanc (with basic auth) for the module: a LocalCluster with worker
processes takes seconds to start. The credentials are planted in the environment before
the workers start (they read them from their own environment, as on a real cluster) and
must never appear in any output: results, errors, CLI output, worker and scheduler logs,
or the files of the harvest. A worker is killed deterministically
(:class:`tests.support.dask_faults.ExitAfterCommits`: ``os._exit`` right after a shard's
k-th commit), and the dataset must equal an uninterrupted reference and the generated
files (same SOPInstanceUIDs, no duplicates).
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections import Counter

import pytest

pytest.importorskip("distributed", reason="Dask is an optional extra: pip install 'idc-cohort[dask]'")

import distributed  # noqa: E402
import psutil  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from cohort import Catalog, custom  # noqa: E402
from cohort.cli import cli  # noqa: E402
from cohort.endpoints import BasicAuth  # noqa: E402
from cohort.errors import HarvestError  # noqa: E402
from cohort.harvest import HarvestStore, harvest, harvest_on_cluster, harvest_status, harvest_stores, shard_of  # noqa: E402
from cohort.harvest.cluster import shard_dir  # noqa: E402
from cohort.retry import RetryPolicy  # noqa: E402
from tests.support.dask_faults import ExitAfterCommits  # noqa: E402

pytestmark = pytest.mark.orthanc

FAST = RetryPolicy(timeout=10, max_attempts=4, backoff_base=0.01, backoff_max=0.05, retry_after_max=0.1)
USER_VAR, PASSWORD_VAR = "COHORT_TEST_DASK_USER", "COHORT_TEST_DASK_PASSWORD"
USER, PASSWORD = "dask-reader", f"pw-{uuid.uuid4().hex}"
AUTH = BasicAuth(USER_VAR, PASSWORD_VAR)
N_SERIES, PER_SERIES = 12, 3
SHARDS = 3
#: Study i is UID_ROOT.i, its one series UID_ROOT.i.1: 2, 2 and 8 of them in shards 0, 1 and 2.
UID_ROOT = "1.2.826.0.1.3680043.8.498.7433"


@pytest.fixture(scope="module")
def server(orthanc_factory, tmp_path_factory):
    """An Orthanc with basic auth holding N_SERIES generated series of PER_SERIES instances, under fixed UIDs
    (random ones left a shard empty in about one run of 40: 3 x (2/3)^12)."""
    from tests.support import data

    server = orthanc_factory(users={USER: PASSWORD})
    uids = [(f"{UID_ROOT}.{i}", f"{UID_ROOT}.{i}.1") for i in range(N_SERIES)]
    server.load(data.bulk_series(N_SERIES, PER_SERIES, tmp_path_factory.mktemp("dask_data"), uids=uids,
                                 with_pixels=False))
    return server


@pytest.fixture(scope="module")
def credentials():
    """The basic-auth user and password planted in the environment (the workers inherit it)."""
    planted = {USER_VAR: USER, PASSWORD_VAR: PASSWORD}
    saved = {k: os.environ.get(k) for k in planted}
    os.environ.update(planted)
    yield planted
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def client(credentials):
    """A LocalCluster of 2 worker processes (1 thread each) on loopback; the credentials in their environment."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0", worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture(scope="module")
def pairs(server):
    return [(r.StudyInstanceUID, r.SeriesInstanceUID) for r in server.series]


@pytest.fixture(scope="module")
def expected_sops(server):
    """The SOPInstanceUIDs written into the generated files (independent of any harvest)."""
    return {sop for r in server.series for sop in r.sop_instance_uids}


@pytest.fixture(scope="module")
def reference(server, pairs, tmp_path_factory, credentials):
    """An uninterrupted single-process harvest of the same series."""
    out = tmp_path_factory.mktemp("reference")
    result = harvest(pairs, out, custom(server.dicomweb_url, AUTH), workers=2, rate=None, policy=FAST,
                     progress=False)
    assert result.ok == N_SERIES
    return out


def _sops(out) -> list[str]:
    """Every counted SOPInstanceUID of a harvest directory (its shards too), read through open_harvest."""
    from cohort.harvest import open_harvest

    catalog = Catalog(download=False, local_copy=False)  # the index is not needed: no local copy of it
    open_harvest(catalog, out)
    return [r[0] for r in catalog.connection.execute("SELECT SOPInstanceUID FROM harvest_instances").fetchall()]


def _files_text(root) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def _no_secret(*texts) -> None:
    for text in texts:
        data = text if isinstance(text, bytes) else str(text).encode()
        assert PASSWORD.encode() not in data


def _sharded(pairs, out, url, client, **kw):
    options = dict(shards=SHARDS, workers=1, rate=None, policy=FAST, progress=False, flush_seconds=0)
    return harvest_on_cluster(pairs, out, custom(url, AUTH), cluster=client, **{**options, **kw})


def test_shards_are_stable_and_spread(pairs):
    uids = [s for _, s in pairs]
    first = [shard_of(u, SHARDS) for u in uids]
    assert first == [shard_of(u, SHARDS) for u in uids]  # same shards on a rerun
    assert set(first) == set(range(SHARDS))  # the fixed UIDs of `server`: each shard gets some
    assert str(shard_dir("o", 7, 3)).endswith("shards/0007") and str(shard_dir("o", 7, 12345)).endswith("shards/00007")


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(server, pairs, expected_sops, reference, client,
                                                              tmp_path):
    # the shard to kill: one with at least 2 series, so that its worker dies after 1 commit with work left
    sizes = Counter(shard_of(s, SHARDS) for _, s in pairs)
    victim = max(sizes, key=lambda k: (sizes[k], -k))
    assert sizes[victim] >= 2
    name = shard_dir(tmp_path, victim, SHARDS).name
    marker = tmp_path / "died"
    pids_before = set(client.run(os.getpid).values())
    plan = ExitAfterCommits(shard=name, commits=1, marker=marker)
    client.register_plugin(plan)
    try:
        result = _sharded(pairs, tmp_path / "out", server.dicomweb_url, client)
    finally:
        client.unregister_worker_plugin(plan.name)
        client.wait_for_workers(2, timeout=120)  # the nanny's replacement of the killed worker
    # the fault happened: a worker process that ran the shard is gone, and the shard resumed elsewhere
    dead = int(marker.read_text())
    assert dead in pids_before and not psutil.pid_exists(dead)
    resumed = [s.index for s in result.shards if s.resumed]
    assert resumed == [victim], result
    assert result.by_status == {"ok": N_SERIES} or (
        # the commit that preceded the death is not redone: the retry skips its series
        result.ok + sum(s.result.skipped for s in result.shards) == N_SERIES)
    sops = _sops(tmp_path / "out")
    assert len(sops) == len(set(sops)), "duplicate instances"
    assert set(sops) == set(_sops(reference)) == expected_sops
    # each shard is an ordinary store with its own commits; the killed one resumed from its own
    stores = harvest_stores(tmp_path / "out")
    assert [s.root.name for s in stores[1:]] == sorted(shard_dir(tmp_path, i, SHARDS).name for i in sizes)
    killed = HarvestStore(shard_dir(tmp_path / "out", victim, SHARDS))
    assert len({c.name.rsplit("-", 1)[0] for c in killed.commits()}) == 2  # two runs: the killed one, the retry
    assert not (killed.root / "harvest.lock").exists()  # the retry took over the dead worker's lock and released it
    status = {r["status"]: r for r in harvest_status(tmp_path / "out").to_pylist()}
    assert status["ok"]["series"] == N_SERIES and status["ok"]["instances"] == N_SERIES * PER_SERIES
    _no_secret(result, _files_text(tmp_path / "out"))

    # a rerun, sharded or not, asks for nothing (the shards' series count for the directory)
    again = _sharded(pairs, tmp_path / "out", server.dicomweb_url, client)
    assert again.skipped == N_SERIES and again.by_status == {} and again.shards == ()
    plain = harvest(pairs, tmp_path / "out", custom(server.dicomweb_url, AUTH), rate=None, policy=FAST,
                    progress=False)
    assert plain.skipped == N_SERIES and plain.by_status == {}
    assert sorted(_sops(tmp_path / "out")) == sorted(sops)


def test_the_rate_is_shared_by_the_shards_that_run_at_once(server, pairs, client, tmp_path):
    client.wait_for_workers(2, timeout=120)
    result = _sharded(pairs, tmp_path, server.dicomweb_url, client, shards=4, rate=8.0)
    assert result.ok == N_SERIES and result.concurrency == 2  # 2 worker threads in the cluster
    assert {s.rate for s in result.shards} == {4.0}


def test_cli_cluster_then_sql_status_and_archive_over_the_shards(server, client, tmp_path, expected_sops):
    out = tmp_path / "lab"
    runner = CliRunner()
    env = {USER_VAR: USER, PASSWORD_VAR: PASSWORD}
    harvested = runner.invoke(cli, ["harvest", "--all", "--url", server.dicomweb_url, "--auth",
                                    f"basic:{USER_VAR}:{PASSWORD_VAR}", "-o", str(out), "--cluster",
                                    client.scheduler.address, "--shards", "3", "--no-progress", "--no-rate-limit"],
                              env=env)
    assert harvested.exit_code == 0, harvested.output
    assert f"{N_SERIES:,} series" in harvested.output and "3 of 3 shard(s) done, 2 at once" in harvested.output
    assert (out / "shards").is_dir() and not list((out / "instances").iterdir())  # all in the shards
    sql = runner.invoke(cli, ["sql", "--harvest", str(out), "-f", "csv",
                              "SELECT SOPInstanceUID FROM harvest_instances"])
    assert sql.exit_code == 0, sql.output
    rows = [r["SOPInstanceUID"] for r in csv.DictReader(io.StringIO(sql.stdout))]
    assert sorted(rows) == sorted(expected_sops)
    status = runner.invoke(cli, ["harvest-status", str(out), "-f", "csv"])
    assert status.exit_code == 0, status.output
    assert next(csv.DictReader(io.StringIO(status.stdout)))["series"] == str(N_SERIES)
    archive = runner.invoke(cli, ["sql", "--archive", str(out), "-f", "csv",
                                  "SELECT count(DISTINCT SOPInstanceUID) AS n FROM dicom_metadata"])
    assert archive.exit_code == 0, archive.output
    assert next(csv.DictReader(io.StringIO(archive.stdout)))["n"] == str(len(expected_sops))
    # --shards alone is a usage error
    alone = runner.invoke(cli, ["harvest", "--all", "--url", server.dicomweb_url, "-o", str(tmp_path / "x"),
                                "--shards", "2"])
    assert alone.exit_code == 2 and "--shards needs --cluster" in alone.output
    _no_secret(harvested.output, sql.output, status.output, _files_text(out))


def test_workers_without_the_credentials_fail_the_run_naming_the_variables_only(server, pairs, client, tmp_path):
    auth = BasicAuth("COHORT_TEST_DASK_UNSET_USER", PASSWORD_VAR)
    with pytest.raises(HarvestError) as caught:
        harvest_on_cluster(pairs, tmp_path, custom(server.dicomweb_url, auth), cluster=client, shards=2,
                           rate=None, policy=FAST, progress=False)
    message = str(caught.value)
    assert "shard(s) failed" in message and "COHORT_TEST_DASK_UNSET_USER" in message
    _no_secret(message)


def test_no_secret_in_the_cluster_logs(client, server, pairs, tmp_path):
    """Run last: the workers' and scheduler's logs of every test above hold no credential."""
    _sharded(pairs, tmp_path, server.dicomweb_url, client)
    logs = client.get_worker_logs()
    text = "\n".join(line for lines in logs.values() for _, line in lines)
    text += "\n".join(line for _, line in client.get_scheduler_logs())
    assert "harvest" in text or logs  # the logs were read
    _no_secret(text)


def test_a_cluster_that_is_not_one_is_refused(pairs, tmp_path):
    with pytest.raises(HarvestError, match="cluster must be a dask.distributed Client"):
        harvest_on_cluster(pairs, tmp_path, "http://127.0.0.1:1/dicom-web", cluster=42)
