"""Deterministic faults for Dask workers (tests and benchmarks of the sharded harvest).

    from tests.support.dask_faults import ExitAfterCommits

    plan = ExitAfterCommits(shard="0001", commits=1, marker=tmp_path / "died")
    client.register_plugin(plan)          # every worker process, and each one started later
    harvest_on_cluster(..., cluster=client)
    client.unregister_worker_plugin(plan.name)

The worker process that commits the ``commits``-th batch of shard ``shard`` (a store at
``.../shards/<shard>``, a directory or an object-store prefix) writes its PID into ``marker`` and ends at once with ``os._exit``
(no cleanup, no lock release: the kernel drops its flock as for ``kill -9``). It happens
once: a worker started after the marker exists (the nanny's replacement) runs clean, so
the shard's retry completes.
"""

from __future__ import annotations

import os
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin


class ExitAfterCommits(WorkerPlugin):
    """End the worker process running shard ``shard`` right after its ``commits``-th commit, once."""

    def __init__(self, shard: str, commits: int, marker: str | os.PathLike) -> None:
        self.shard, self.commits, self.marker = shard, commits, str(marker)
        self.name = f"exit-after-commits-{shard}-{commits}"
        self._real = None

    def setup(self, worker) -> None:
        from cohort.harvest.store import HarvestStore

        if Path(self.marker).exists():
            return
        plan, real, count = self, HarvestStore.commit, [0]

        def commit(store, log_table, instance_parts=()):
            result = real(store, log_table, instance_parts)
            if str(store.root).rstrip("/").split("/")[-2:] == ["shards", plan.shard]:  # a Path or an s3:// URL
                count[0] += 1
                if count[0] >= plan.commits and not Path(plan.marker).exists():
                    Path(plan.marker).write_text(str(os.getpid()))
                    os._exit(17)
            return result

        self._real = real
        HarvestStore.commit = commit

    def teardown(self, worker) -> None:
        if self._real is not None:
            from cohort.harvest.store import HarvestStore

            HarvestStore.commit = self._real
            self._real = None


class ShortLeases(WorkerPlugin):
    """Object-store leases of ``seconds`` instead of 5 minutes in every worker process (a lost worker's lease
    expires, and its shard's retry takes it over, within the test's time)."""

    name = "short-leases"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def setup(self, worker) -> None:
        from cohort.harvest.lock import ObjectLease

        ObjectLease.__init__.__defaults__ = (self.seconds,)
