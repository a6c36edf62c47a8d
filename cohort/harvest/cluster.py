"""A harvest sharded across a Dask cluster (``cohort harvest ... --cluster tcp://scheduler:8786``).

    >>> from dask.distributed import Client
    >>> from cohort.harvest import harvest_on_cluster
    >>> harvest_on_cluster(cohort, "harvest/", cluster=Client("tcp://scheduler:8786"))

The series a run asks for are split into shards by SeriesInstanceUID (the first
8 bytes of its sha256, modulo the number of shards: the same series and number
of shards give the same shards on every run and every machine). Each shard is
an ordinary harvest store, ``DIR/shards/NNNN/``, written by the ordinary
:func:`~cohort.harvest.harvest` in one task on a Dask worker, with the store's
guarantees: a series counts once its instances and log row are committed, one
writer per shard (its lock), resume from its own commit records.

- **Global rate**: at most ``c`` shards run at once (``c`` = the cluster's
  worker threads when the run starts, or fewer shards), each with ``rate / c``
  requests a second, so the requests of the whole cluster stay under ``rate``
  (plus each shard's start-up burst of ``workers`` requests). The coordinator
  (this process) submits a shard only when one of the ``c`` running has ended.
- **A lost worker**: Dask runs its shard again on another worker; the shard's
  lock, left by a process that died, is taken over (same host; see :mod:`.lock`),
  parts it had not committed are deleted and the series it had committed are
  skipped, so no instance is counted twice.
- **No duplicates across shards**: the coordinator asks only for series that
  no store of DIR has settled (DIR itself and every shard, :func:`.selection.final_statuses`);
  only settled (``ok``) series have counted instances, so a rerun with another
  number of shards, which moves unsettled series to other shards, is safe too.
- **Readers** (``open_harvest``, ``harvest_status``, ``cohort sql --harvest``,
  ``harvest-status``) take DIR and its shards together (:func:`.views.harvest_stores`).
- **Credentials** never travel through Dask: endpoints name where their secrets
  are (environment variables, Google's application-default credentials) and
  each worker reads them from its own environment when it makes its sessions.
- **Progress**: a tqdm bar (``tqdm.auto``: a widget in notebooks) of the series
  committed, read from the shards' commit records while the shards run.

The coordinator holds DIR's own lock for the whole run (one sharded run per
directory). Ctrl-C stops submitting shards; shards already running on workers
run to their end (Dask cannot stop a running task), committing as they go.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..endpoints import Endpoint, custom
from ..errors import HarvestError
from ..retry import RetryPolicy
from .fs import Files, is_url, location
from .lock import LEASE_SECONDS, LEASE_NAME, LOCK_NAME
from .runner import DEFAULT_RATE, DEFAULT_WORKERS, harvest
from .tasks import PYTHON_RESUME, HarvestResult, SeriesTask, series_tasks
from .selection import complete, final_statuses, retry_statuses
from .store import COMMITS, SHARDS, HarvestStore
from .views import harvest_stores

log = logging.getLogger(__name__)

#: Shards per worker thread when the number of shards is not given (a lost worker's shard is small to redo,
#: and the last shards to finish leave fewer threads idle).
SHARDS_PER_THREAD = 2
#: Seconds between looks at the shards' commit records (the progress bar) while waiting for shards.
POLL_SECONDS = 1.0
#: Seconds to wait for the cluster's first worker.
WORKER_WAIT = 60.0
_INSTALL = "install it with `pip install 'idc-cohort[dask]'`"


def shard_of(series_uid: str, shards: int) -> int:
    """The shard of a series among ``shards``: stable across runs, processes and machines."""
    return int.from_bytes(hashlib.sha256(series_uid.encode()).digest()[:8], "big") % shards


def shard_dir(out_dir: str | os.PathLike, index: int, shards: int) -> Path | str:
    """``DIR/shards/NNNN`` (4 digits, more when there are more than 10,000 shards); a URL in an object store."""
    name = f"{SHARDS}/{index:0{max(4, len(str(shards - 1)))}d}"
    return f"{os.fspath(out_dir).rstrip('/')}/{name}" if is_url(out_dir) else Path(out_dir) / name


@dataclass(frozen=True)
class ShardResult:
    """What one shard's run did, and whether it resumed after its worker was lost."""

    index: int
    result: HarvestResult
    #: The shard's lock was left by a process that died (its worker was lost): it was taken over and resumed.
    resumed: bool
    #: Requests a second this shard was allowed (the run's rate over the shards running at once).
    rate: float | None


@dataclass(frozen=True)
class ShardedResult(HarvestResult):
    """A :class:`HarvestResult` over every shard of a run (counts of this run), and each shard's own."""

    shards: tuple[ShardResult, ...] = ()
    #: Shards the run had to harvest, and how many ran at once.
    planned: int = 0
    concurrency: int = 0

    @property
    def resumed(self) -> int:
        """Shards that resumed after their worker was lost."""
        return sum(s.resumed for s in self.shards)

    def summary(self, resume: str = PYTHON_RESUME) -> str:
        lost = f", {self.resumed} resumed after a lost worker" if self.resumed else ""
        return (f"{super().summary(resume)} [{len(self.shards)} of {self.planned} shard(s) done, "
                f"{self.concurrency} at once{lost}]")


@dataclass(frozen=True)
class _Routes:
    """The series of one shard in the shape :func:`harvest` takes from a coverage report."""

    routes: pa.Table
    endpoints: dict[str, Endpoint]


@dataclass(frozen=True)
class _ShardJob:
    """What a worker gets: one shard's series, its directory and the run's options (never a secret)."""

    index: int
    out_dir: str
    source: _Routes
    options: dict[str, Any] = field(default_factory=dict)


def harvest_on_cluster(
    source: Any,
    out_dir: str | os.PathLike,
    endpoint: Endpoint | str | None = None,
    *,
    cluster: Any,
    shards: int | None = None,
    workers: int = DEFAULT_WORKERS,
    rate: float | None = DEFAULT_RATE,
    policy: RetryPolicy | None = None,
    light: bool = False,
    progress: bool = True,
    routing: str | None = None,
    flush_instances: int = 5000,
    flush_seconds: float = 10.0,
    retry: Iterable[str] = (),
    by_study: bool | None = None,
) -> ShardedResult:
    """Harvest ``source`` into ``out_dir`` in shards on a Dask cluster (see the module docstring).

    ``cluster`` is a ``dask.distributed.Client``, a cluster object (``LocalCluster``, ...) or a
    scheduler address (``"tcp://host:8786"``). ``shards`` is the number of shards (default: twice
    the cluster's worker threads, at most one a series). ``workers`` are the concurrent requests of
    each shard and ``rate`` the requests a second of the whole cluster. Every other argument is
    :func:`~cohort.harvest.harvest`'s, but a study's series fall in different shards (by their UIDs' hash),
    so a shard asks for a study's metadata only for two or more of its series in that shard and only with
    ``by_study=True``. Raises :class:`~cohort.HarvestError` when a shard fails
    (the series committed before are kept: run again to resume).
    """
    distributed = _distributed()
    policy = policy or RetryPolicy()
    if workers < 1:
        raise HarvestError(f"workers must be at least 1, got {workers}")
    if shards is not None and shards < 1:
        raise HarvestError(f"shards must be at least 1, got {shards}")
    if isinstance(endpoint, str):
        endpoint = custom(endpoint)
    retry = retry_statuses(retry)
    tasks, endpoints = series_tasks(source, endpoint, routing)  # routing needs the index: here, not on a worker
    started = time.monotonic()
    client, own = _client(cluster, distributed)
    try:
        slots = _slots(client)
        with HarvestStore(out_dir).open() as root:  # DIR's lock: one coordinator per directory
            final = final_statuses(harvest_stores(out_dir))
            todo = [t for t in tasks if not complete(t.endpoint, final.get(t.series_uid), retry)]
            n = shards or max(1, min(len(todo), SHARDS_PER_THREAD * slots))
            options = {"workers": workers, "policy": policy, "light": light, "flush_instances": flush_instances,
                       "flush_seconds": flush_seconds, "retry": sorted(retry), "by_study": bool(by_study)}
            jobs = _jobs(todo, endpoints, n, out_dir, options)
            concurrency = min(len(jobs), slots)
            for job in jobs:  # the cluster's rate, shared by the shards that run at once
                job.options["rate"] = None if rate is None else rate / concurrency
            log.info("harvest %s on %s: %d series, %d already complete, %d shard(s) of %d, %d at once",
                     out_dir, client.scheduler.address, len(tasks), len(tasks) - len(todo), len(jobs), n,
                     concurrency)
            done, interrupted, errors = _Coordinator(client, progress).run(
                jobs, concurrency, len(todo))
    finally:
        if own:
            client.close()
    if errors:
        first = errors[0]
        raise HarvestError(f"{len(errors)} of {len(jobs)} shard(s) failed, e.g. shard {first[0]}: {first[1]}; "
                           f"the series committed before are kept in {out_dir}: run again to resume")
    by_status: Counter[str] = Counter()
    for shard in done:
        by_status.update(shard.result.by_status)
    return ShardedResult(
        out_dir=root.root, run_id=f"sharded-{uuid.uuid4().hex[:6]}", series=len(tasks),
        skipped=len(tasks) - len(todo) + sum(s.result.skipped for s in done), by_status=dict(by_status),
        instances=sum(s.result.instances for s in done), bytes=sum(s.result.bytes for s in done),
        seconds=time.monotonic() - started, interrupted=interrupted or any(s.result.interrupted for s in done),
        shards=tuple(sorted(done, key=lambda s: s.index)), planned=len(jobs), concurrency=concurrency,
    )


def _jobs(todo: list[SeriesTask], endpoints: Mapping[str, Endpoint], n: int, out_dir: str | os.PathLike,
          options: dict[str, Any]) -> list[_ShardJob]:
    """One job a shard that has series to ask for, in shard order."""
    by_shard: dict[int, list[SeriesTask]] = {}
    for task in todo:
        by_shard.setdefault(shard_of(task.series_uid, n), []).append(task)
    jobs = []
    for index in sorted(by_shard):
        mine = by_shard[index]
        routes = pa.table({
            "StudyInstanceUID": [t.study_uid for t in mine], "SeriesInstanceUID": [t.series_uid for t in mine],
            "endpoint": pa.array([t.endpoint for t in mine], pa.string()),
            "series_url": pa.array([t.url for t in mine], pa.string()),
            "reason": pa.array([t.reason for t in mine], pa.string()),
        })
        used = {t.endpoint for t in mine}
        jobs.append(_ShardJob(index, str(shard_dir(out_dir, index, n)),
                              _Routes(routes, {k: e for k, e in endpoints.items() if k in used}), dict(options)))
    return jobs


def _harvest_shard(job: _ShardJob) -> ShardResult:
    """Run on a worker: the ordinary harvest of one shard's directory (resumed if it has commits)."""
    resumed = _left_by_a_lost_run(location(job.out_dir))
    result = harvest(job.source, job.out_dir, progress=False, **job.options)
    return ShardResult(job.index, result, resumed, job.options.get("rate"))


def _left_by_a_lost_run(files: Files) -> bool:
    """Whether a run that died left the shard's lock (local) or lease (object store); waits for such a lease.

    A lock file is deleted when its run ends, so one still there was left by a process that died; the
    kernel has dropped its flock and the harvest takes it over at once. A lease lasts until it expires
    (:data:`.lock.LEASE_SECONDS` after its last renewal): the retry of a lost worker's shard waits for that,
    and the harvest then takes it over (a holder still alive renews it, and the harvest says so).
    """
    if files.local:
        return files.path(LOCK_NAME).exists()
    try:
        holder = json.loads(files.get(LEASE_NAME))
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True
    wait = float(holder.get("expires_epoch", 0)) - time.time() if isinstance(holder, dict) else 0.0
    if wait > 0:
        log.warning("shard %s: waiting %.0f s for the lease of run %s to expire (its worker was lost)",
                    files.url, wait, holder.get("run_id"))
        time.sleep(min(wait + 1.0, LEASE_SECONDS + 1.0))
    return True


class _Coordinator:
    """Submits shards (at most ``concurrency`` at once), gathers their results and shows progress."""

    def __init__(self, client: Any, progress: bool) -> None:
        self.client, self.progress = client, progress
        self.token = uuid.uuid4().hex[:8]

    def run(self, jobs: list[_ShardJob], concurrency: int,
            total: int) -> tuple[list[ShardResult], bool, list[tuple[int, str]]]:
        from tqdm.auto import tqdm

        done: list[ShardResult] = []
        errors: list[tuple[int, str]] = []
        queue = list(jobs)
        running: dict[Any, _ShardJob] = {}
        commits = _CommitCounter([j.out_dir for j in jobs])
        bar = tqdm(total=total, unit="series", desc="harvest (sharded)", disable=not self.progress,
                   dynamic_ncols=True)
        interrupted = False
        ended = threading.Event()  # set by a shard's end (Dask calls back from its own thread)
        try:
            while queue or running:
                while queue and len(running) < concurrency and not errors:
                    job = queue.pop(0)
                    future = self.client.submit(_harvest_shard, job, pure=False,
                                                key=f"harvest-shard-{job.index:04d}-{self.token}")
                    running[future] = job
                    future.add_done_callback(lambda _: ended.set())
                if not running:
                    break
                ended.wait(POLL_SECONDS)
                ended.clear()
                for future in [f for f in running if f.done()]:
                    job = running.pop(future)
                    if future.status == "finished":
                        done.append(future.result())
                    else:
                        errors.append((job.index, _describe(future.exception())))
                    future.release()
                bar.update(min(commits.new(), total - bar.n))
                bar.set_postfix(shards=f"{len(done)}/{len(jobs)}", refresh=False)
        except KeyboardInterrupt:
            interrupted = True
            self.client.cancel(list(running))  # not yet started ones stop; running ones end on their workers
        finally:
            bar.close()
        return done, interrupted, errors


class _CommitCounter:
    """Series committed in some shard stores since it was made (read from their commit records)."""

    def __init__(self, dirs: list[str]) -> None:
        self.stores = [location(d) for d in dirs]
        self.seen = [set(self._names(files)) for files in self.stores]

    @staticmethod
    def _names(files: Files) -> list[str]:
        try:
            return [name for name, stat in files.list(COMMITS).items() if stat is not None and name.endswith(".json")]
        except (OSError, ValueError):
            return []

    def new(self) -> int:
        series = 0
        for files, seen in zip(self.stores, self.seen):
            for name in set(self._names(files)) - seen:
                try:
                    series += int(json.loads(files.get(f"{COMMITS}/{name}"))["series"])
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # being moved to quarantine, or not ours: the bar is only a bar
                seen.add(name)
        return series


def _distributed():
    try:
        import distributed  # noqa: PLC0415 - an optional extra
    except ImportError:
        raise HarvestError(f"a harvest on a cluster needs Dask's distributed scheduler: {_INSTALL}") from None
    return distributed


def _client(cluster: Any, distributed: Any) -> tuple[Any, bool]:
    """A Client for ``cluster`` and whether it is ours to close."""
    if isinstance(cluster, distributed.Client):
        return cluster, False
    address = cluster if isinstance(cluster, str) else getattr(cluster, "scheduler_address", None)
    if not address:
        raise HarvestError(f"cluster must be a dask.distributed Client, a cluster or a scheduler address such as "
                           f"tcp://127.0.0.1:8786, got {type(cluster).__name__}")
    try:
        return distributed.Client(address, timeout=30, set_as_default=False), True
    except (OSError, TimeoutError, ValueError) as exc:
        raise HarvestError(f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {exc}); "
                           "start it (`dask scheduler`) or check the address") from None


def _slots(client: Any) -> int:
    """The cluster's worker threads (waiting for a first worker a while)."""
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT)
    except TimeoutError:
        raise HarvestError(f"the Dask cluster at {client.scheduler.address} has no worker after {WORKER_WAIT:.0f} s: "
                           "start workers (`dask worker ADDRESS`) with idc-cohort installed") from None
    return max(1, sum(client.nthreads().values()))


def _describe(exc: BaseException | None) -> str:
    """A shard's failure in one line (a KilledWorker says the shard killed its workers again and again)."""
    name = type(exc).__name__
    if name == "KilledWorker":
        return (f"its workers died each time it ran ({exc}); see the workers' logs (memory? a crash?), "
                "then run again: it resumes from its commits")
    if isinstance(exc, ModuleNotFoundError):
        return f"a worker cannot import {exc.name!r}: install idc-cohort[dask] on every worker (the same version)"
    return f"{name}: {exc}"
