"""The sharded harvest into S3 (moto's server mode on loopback) through a Dask LocalCluster of 2 worker processes.

Done when (issue 16): a harvest to a local S3-compatible server through a local Dask
cluster completes, survives a killed worker, and is queried in place with ``cohort sql``.
The server's endpoint and the credentials are in the environment before the workers
start (each worker reads them, as on a real cluster); the planted secret must appear in
no output, no object and no log. Leases last 8 s in the workers (:class:`ShortLeases`)
so that the killed worker's lease expires, and its shard's retry takes it over, in time.
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
from click.testing import CliRunner  # noqa: E402

from cohort import custom  # noqa: E402
from cohort.cli import cli  # noqa: E402
from cohort.harvest import HarvestStore, harvest_on_cluster, harvest_stores, shard_of  # noqa: E402
from cohort.harvest.cluster import shard_dir  # noqa: E402
from cohort.retry import RetryPolicy  # noqa: E402
from tests.support.dask_faults import ExitAfterCommits, ShortLeases  # noqa: E402
from tests.support.s3 import MotoS3, require_moto  # noqa: E402

pytestmark = pytest.mark.orthanc

FAST = RetryPolicy(timeout=10, max_attempts=4, backoff_base=0.01, backoff_max=0.05, retry_after_max=0.1)
SECRET = f"planted-{uuid.uuid4().hex}"
SHARDS = 3


@pytest.fixture(scope="module")
def s3():
    """The moto server, its endpoint and a planted secret key in this process's environment (the workers'
    too: they start after it); the environment is restored at the end."""
    require_moto()
    import s3fs

    with MotoS3() as server:
        planted = server.environment(AWS_SECRET_ACCESS_KEY=SECRET)
        saved = {k: os.environ.get(k) for k in [*planted, "AWS_PROFILE"]}
        os.environ.update(planted)
        os.environ.pop("AWS_PROFILE", None)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def client(s3):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0", worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        client.register_plugin(ShortLeases(8.0))
        yield client


def test_a_sharded_harvest_into_s3_survives_a_killed_worker_and_is_queried_in_place(orthanc, s3, client,
                                                                                     tmp_path):
    records = [r for r in orthanc.series if r.n_instances >= 1][:9]
    pairs = [(r.StudyInstanceUID, r.SeriesInstanceUID) for r in records]
    expected = sorted(sop for r in records for sop in r.sop_instance_uids)
    bucket = s3.make_bucket(f"b-{uuid.uuid4().hex[:10]}")
    url = f"s3://{bucket}/lab"
    sizes = Counter(shard_of(s, SHARDS) for _, s in pairs)
    victim = max(sizes, key=lambda k: (sizes[k], -k))
    assert sizes[victim] >= 2
    marker = tmp_path / "died"
    plan = ExitAfterCommits(shard=str(shard_dir("x", victim, SHARDS)).rsplit("/", 1)[-1], commits=1, marker=marker)
    client.register_plugin(plan)
    try:
        result = harvest_on_cluster(pairs, url, custom(orthanc.dicomweb_url), cluster=client, shards=SHARDS,
                                    workers=1, rate=None, policy=FAST, progress=False, flush_seconds=0)
    finally:
        client.unregister_worker_plugin(plan.name)
    assert marker.exists(), "the worker was not killed"
    assert [s.index for s in result.shards if s.resumed] == [victim]
    assert str(result.out_dir) == url
    stores = harvest_stores(url)
    assert [str(s.root) for s in stores[1:]] == [shard_dir(url, i, SHARDS) for i in sorted(sizes)]
    assert len({c.name.rsplit("-", 1)[0] for c in HarvestStore(shard_dir(url, victim, SHARDS)).commits()}) == 2

    # queried in place: cohort sql --harvest s3://... reads every shard through fsspec
    runner = CliRunner()
    sql = runner.invoke(cli, ["sql", "--harvest", url, "-f", "csv", "SELECT SOPInstanceUID FROM harvest_instances"])
    assert sql.exit_code == 0, sql.output
    sops = [r["SOPInstanceUID"] for r in csv.DictReader(io.StringIO(sql.stdout))]
    assert sorted(sops) == expected  # every source instance, none twice
    # nothing anywhere holds the planted secret: the objects, the outputs, the cluster's logs
    fs = s3.filesystem()
    blobs = b"".join(fs.cat_file(key) for key in fs.find(bucket))
    logs = "\n".join(line for lines in client.get_worker_logs().values() for _, line in lines)
    logs += "\n".join(line for _, line in client.get_scheduler_logs())
    for text in (blobs, str(result).encode(), sql.output.encode(), logs.encode()):
        assert SECRET.encode() not in text
