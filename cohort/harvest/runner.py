"""Harvest the DICOM metadata of a cohort's series into a Parquet directory.

One WADO-RS "retrieve series metadata" request per series (``GET
{series}/metadata``, ``Accept: application/dicom+json``, the request
dicomweb-client's ``retrieve_series_metadata`` sends), or one "retrieve study
metadata" request for the series of a study wanted whole (:mod:`.tasks`), or with
``light=True`` one QIDO-RS "search for instances" request per series asking only
for the typed columns' attributes. The GET is made here with :func:`cohort.retry.get` rather than
through ``DICOMwebClient``, so that there is one retry layer (ours: Retry-After,
jitter, connection errors, stoppable), a shared rate limit, and the bytes and
a truncated body of each response are seen.

Workers (threads, one requests session each) fetch series and parse each
response as it streams in (:mod:`.stream`), one instance at a time; a series
bigger than a batch has its instances written in bounded parts as they come
(not yet counted). The main thread gathers finished series and commits them in
batches (:mod:`.store`): the small series' rows, then the log part whose
commit makes every part of those series count. So memory is bounded by the
batch size and the number of series being parsed, not by the cohort nor by the
size of one series, and a series cut short (a body truncated mid-stream,
Ctrl-C, ``kill -9``) never counts half.
Ctrl-C stops submitting, drops the series whose responses are still streaming
in (they are not outcomes), writes what is complete and returns a result marked
``interrupted``. Resume is by rerunning into the
same directory: series already complete are skipped.

Each endpoint is probed once (:mod:`.probe`), on a thread of its own beside the
first series' requests (so the probe costs no round trip and takes no worker's
place), and nothing is committed before it passes: a URL that is not a DICOMweb
root, or credentials it refuses, stop the run with a :class:`~cohort.HarvestError`
instead of being logged as the outcome of every series; a 401/403 during the run
stops it the same way. Which series a rerun asks for again is decided by :mod:`.selection` (``retry`` names final statuses
to ask again). Error texts are redacted (:func:`cohort._redact.redact`) before
they are stored.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any

import pyarrow as pa
import requests

from .._redact import redact, session_secrets
from ..endpoints import Endpoint, custom
from ..errors import HarvestError
from ..retry import Attempted, RateLimiter, RetryPolicy, call
from .metadata import LIGHT_TAGS, MalformedMetadata, instance_row
from .probe import ACCEPT_JSON, AUTH_STATUSES, probe, snippet
from .selection import complete, final_statuses, retry_statuses
from .store import INSTANCE_SCHEMA, INSTANCES, LOG_SCHEMA, HarvestStore, Part
from .stream import iter_instances
from .tasks import HarvestResult, SeriesTask, Unit, fetch_units, series_tasks, study_url, whole_studies
from .views import harvest_stores

log = logging.getLogger(__name__)

#: Default request rate (requests a second, retries included) and workers: polite for the IDC proxy.
DEFAULT_RATE = 10.0
DEFAULT_WORKERS = 8
#: Finished series are written once their instances' JSON text reaches this many bytes (bounds memory);
#: a series streaming in writes a part each time its rows reach this many bytes (or ``flush_instances``).
FLUSH_BYTES = 8 * 2**20
#: Once every series is asked for, buffered rows holding this much JSON are written while the last
#: answers arrive (the end of a run then has only the last rows to write); less waits for the commit.
TAIL_BYTES = 2**20
#: Bytes read from the socket at a time while a response streams in.
CHUNK_BYTES = 256 * 2**10
#: Series parsed at once. Parsing holds the GIL, so more would not be faster; fewer parsed
#: series in memory keep the peak RSS independent of the number of workers and series size.
PARSING = 2
@dataclass
class _Streamed:
    """A 200 response read to its end: its last rows (not written yet) and the parts written before them."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    instances: int = 0
    json_bytes: int = 0
    #: Values that did not fit their typed column, over the series' instances (the log's values_dropped).
    values_dropped: int = 0
    #: A study's answer: instances, JSON text length and values dropped of each wanted series in it.
    per_series: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class _Outcome:
    log: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    json_bytes: int = 0
    #: Instances parts already written for this series (a big one); committed with its log row.
    parts: list[Part] = field(default_factory=list)


@dataclass
class _Done:
    """What a worker gives back: the outcomes of its series (committed together), the series to ask for
    one by one instead (a study's answer lacked them), and bytes read that no series' log counts."""

    outcomes: list[_Outcome] = field(default_factory=list)
    again: list[SeriesTask] = field(default_factory=list)
    other_bytes: int = 0


class _Stopped(Exception):
    """Ctrl-C while a response was streaming in: the series is not an outcome (its parts are discarded)."""


def harvest(
    source: Any,
    out_dir: str | os.PathLike,
    endpoint: Endpoint | str | None = None,
    *,
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
) -> HarvestResult:
    """Harvest the DICOM metadata of ``source``'s series into ``out_dir`` (created or resumed).

    ``source`` is a :class:`~cohort.Cohort`, a coverage report (``.routes`` and
    ``.endpoints``), an Arrow table or pandas frame with StudyInstanceUID and
    SeriesInstanceUID, or an iterable of ``(study_uid, series_uid)`` pairs.
    With ``endpoint`` (an :class:`~cohort.Endpoint` or a DICOMweb root URL) every
    series is asked from it; a cohort without one is routed with
    :func:`cohort.coverage.route` (``routing`` names its policy).
    ``rate`` caps requests a second over all workers (None: no cap).
    ``retry`` names final statuses (``"not_found"``, ``"empty"``) whose series are asked for again.
    ``by_study``: ask for the metadata of a study once for two or more of its series (:mod:`.tasks`);
    None (the default) does so for the studies a :class:`~cohort.Cohort` holds whole (but asks a study of
    more than :data:`~cohort.harvest.tasks.SPLIT_INSTANCES` instances by series when there would be fewer
    requests than ``workers``), False never,
    True whenever two or more series of a study are asked of one endpoint (instances of other series
    in the answer are dropped). ``light`` asks series by series.

    Raises :class:`~cohort.HarvestError` when an endpoint is not a DICOMweb service or refuses the
    credentials (probed beside the first requests, before anything is committed; and on any 401/403
    during the run).
    """
    policy = policy or RetryPolicy()
    if workers < 1:
        raise HarvestError(f"workers must be at least 1, got {workers}")
    if isinstance(endpoint, str):
        endpoint = custom(endpoint)
    retry = retry_statuses(retry)
    whole = whole_studies(source) if by_study is None and not light else None  # studies a cohort holds whole
    tasks, endpoints = series_tasks(source, endpoint, routing)
    with HarvestStore(out_dir).open() as store:  # one writer per directory, every committed part checked
        final = final_statuses(harvest_stores(out_dir))  # with the shards of a sharded harvest (.cluster)
        todo = [t for t in tasks if not complete(t.endpoint, final.get(t.series_uid), retry)]
        limiter = RateLimiter(rate, burst=max(1, workers))
        probes = _Probes([endpoints[name] for name in sorted({t.endpoint for t in todo
                                                                 if t.url is not None and t.endpoint in endpoints})],
                         policy, limiter)
        run = _Run(store, endpoints, policy, limiter, light, flush_instances, flush_seconds, probes)
        log.info("harvest %s: %d series, %d already complete, run %s", out_dir, len(tasks), len(tasks) - len(todo),
                 run.run_id)
        together = not light and (bool(whole) if by_study is None else by_study)
        run.execute(fetch_units(todo, together, whole, fill=workers), len(todo), workers, progress)
        probes.check()  # a failed probe is the error to report, even when no series was finished
    if run.auth_failure is not None:
        raise HarvestError(run.auth_failure + f"; the series finished before it are kept in {out_dir}")
    return HarvestResult(
        out_dir=store.root, run_id=run.run_id, series=len(tasks), skipped=len(tasks) - len(todo),
        by_status=dict(run.statuses), instances=run.instances, bytes=run.bytes,
        seconds=time.monotonic() - run.started, interrupted=run.interrupted,
    )


class _Probes:
    """Each endpoint's probe (:func:`.probe.probe`), on a thread of its own beside the series' requests, so
    that it costs no round trip and takes no worker's place (on a worker, a cohort of as many series as
    workers took two round trips); nothing is committed before every probe passed."""

    def __init__(self, endpoints: list[Endpoint], policy: RetryPolicy, limiter: RateLimiter) -> None:
        self.endpoints, self.policy, self.limiter = endpoints, policy, limiter
        self._futures: list[Future] = []

    def start(self) -> None:
        if not self.endpoints:
            return
        pool = ThreadPoolExecutor(max_workers=len(self.endpoints), thread_name_prefix="harvest-probe")
        self._futures = [pool.submit(probe, endpoint, self.policy, self.limiter) for endpoint in self.endpoints]
        pool.shutdown(wait=False)  # its threads end with their probe

    def failed(self) -> bool:
        """True once a probe has failed (does not wait)."""
        return any(f.done() and not f.cancelled() and f.exception() is not None for f in self._futures)

    def check(self) -> None:
        """Wait for every probe; raise the failure of the first endpoint (in name order) whose probe failed."""
        for future in self._futures:
            if not future.cancelled():
                future.result()


class _Run:
    """One run: workers fetch and parse, the main thread counts, shows progress and writes batches."""

    def __init__(self, store: HarvestStore, endpoints: dict[str, Endpoint], policy: RetryPolicy,
                 limiter: RateLimiter, light: bool, flush_instances: int, flush_seconds: float,
                 probes: _Probes) -> None:
        self.store, self.endpoints, self.policy, self.limiter, self.light = store, endpoints, policy, limiter, light
        self.probes = probes
        self.flush_instances, self.flush_seconds = flush_instances, flush_seconds
        assert store.run_id is not None, "the store must be open"
        self.run_id = store.run_id
        self.stop = threading.Event()
        self.parsing = threading.Semaphore(PARSING)
        self.local = threading.local()
        self.lock = threading.Lock()
        #: Set by the first 401/403 (the run stops; :func:`harvest` raises it).
        self.auth_failure: str | None = None
        self.statuses: Counter[str] = Counter()
        self.instances = self.bytes = self.parts = 0
        self.interrupted = False
        self.started = time.monotonic()
        self._rows: list[dict[str, Any]] = []
        self._logs: list[dict[str, Any]] = []
        self._parts: list[Part] = []
        self._buffered_bytes = 0
        self._last_flush = time.monotonic()

    # -- main thread ------------------------------------------------------
    def execute(self, units: list[Unit], series: int, workers: int, progress: bool) -> None:
        bar = _progress_bar(series) if progress else None
        queue: deque[Unit] = deque(units)
        pending: set[Future] = set()
        # finished futures arrive here, each once (a done callback): the main thread wakes per series
        # without scanning every pending future as concurrent.futures.wait does
        done: SimpleQueue[Future] = SimpleQueue()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="harvest")
        self.probes.start()
        try:
            try:
                self._fill(pool, queue, pending, done, 2 * workers)
                while pending:
                    for future in _finished(done, timeout=0.5):
                        pending.discard(future)
                        queue.extendleft(reversed(self._take(future.result(), bar)))
                    self._fill(pool, queue, pending, done, 2 * workers)
                    if self.probes.failed() or self._due():
                        self.flush()
                    elif not queue and self._buffered_bytes >= TAIL_BYTES and done.empty():
                        self._write_rows()  # while the last series are in flight, not after them
            except KeyboardInterrupt:
                self.interrupted = True
                self.stop.set()
                for future in pending:
                    future.cancel()
                for future in wait(pending).done:
                    if not future.cancelled():
                        self._take(future.result(), bar)
        finally:
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            try:
                self.flush()
            finally:
                if bar is not None:
                    bar.close()

    def _fill(self, pool: ThreadPoolExecutor, queue: deque[Unit], pending: set[Future],
              done: SimpleQueue[Future], limit: int) -> None:
        while len(pending) < limit and not self.stop.is_set():
            if not queue:
                return
            unit = queue.popleft()
            future = pool.submit(self._harvest_study if isinstance(unit, tuple) else self._harvest_series, unit)
            future.add_done_callback(done.put)
            pending.add(future)

    def _take(self, done: _Done | None, bar: Any) -> list[SeriesTask]:
        """Buffer a worker's outcomes for the next commit; return the series to ask for one by one."""
        if done is None:  # stopped before it finished: not an outcome of its series
            return []
        self.bytes += done.other_bytes
        for outcome in done.outcomes:
            status = outcome.log["status"]
            self.statuses[status] += 1
            self.instances += outcome.log["instances"] or 0
            self.bytes += outcome.log["bytes"] or 0
            self._rows.extend(outcome.rows)
            self._logs.append(outcome.log)
            self._parts.extend(outcome.parts)
            self._buffered_bytes += outcome.json_bytes
        if bar is not None and done.outcomes:
            others = {s: n for s, n in sorted(self.statuses.items()) if s != "ok"}  # not_found, http_error, ...
            bar.set_postfix(instances=self.instances, **others, refresh=False)
            bar.update(len(done.outcomes))
        return done.again

    def _due(self) -> bool:
        return bool(self._logs) and (
            len(self._rows) >= self.flush_instances
            or self._buffered_bytes >= FLUSH_BYTES
            or time.monotonic() - self._last_flush >= self.flush_seconds
        )

    def _write_rows(self) -> None:
        """Write the buffered rows as a part of the next commit (it makes them count with their series)."""
        with _interrupt_deferred():  # a Ctrl-C between the two would have the next commit write the rows twice
            table = pa.Table.from_pylist(self._rows, schema=INSTANCE_SCHEMA)
            self._parts.append(self.store.write_part(INSTANCES, table))
            self._rows, self._buffered_bytes = [], 0

    def flush(self) -> None:
        """Commit the finished series: their buffered rows' part, then the log part (see :mod:`.store`)."""
        if not self._logs and not self.probes.failed():
            return
        try:
            self.probes.check()
        except BaseException:  # nothing of this run counts: the endpoint is not what the user meant
            self.stop.set()
            self.store.discard(self._parts)
            self._rows, self._logs, self._parts, self._buffered_bytes = [], [], [], 0
            raise
        if not self._logs:
            return
        # Ctrl-C waits until the commit and the emptying of the buffers are both done: between the two,
        # the flush that follows an interrupt would commit the same series a second time
        with _interrupt_deferred():
            parts = list(self._parts)
            if self._rows or not parts:
                table = pa.Table.from_pylist(self._rows, schema=INSTANCE_SCHEMA)
                parts.append(self.store.write_part(INSTANCES, table))
            self.store.commit(pa.Table.from_pylist(self._logs, schema=LOG_SCHEMA), parts)
            self.parts += 1
            self._rows, self._logs, self._parts, self._buffered_bytes = [], [], [], 0
        pa.default_memory_pool().release_unused()  # hand Arrow's cached buffers back between batches
        self._last_flush = time.monotonic()

    # -- worker threads ---------------------------------------------------
    def _session(self, name: str) -> requests.Session:
        sessions = self.local.__dict__.setdefault("sessions", {})
        if name not in sessions:
            sessions[name] = self.endpoints[name].fast_session()
            sessions[name].headers.update(ACCEPT_JSON)  # every request of the harvest asks for DICOM JSON
        return sessions[name]

    def _base(self, task: SeriesTask) -> dict[str, Any]:
        """A log row of ``task`` before its request."""
        return {
            "StudyInstanceUID": task.study_uid, "SeriesInstanceUID": task.series_uid, "endpoint": task.endpoint,
            "url": None, "http_status": None, "attempts": 0, "instances": 0, "values_dropped": 0, "bytes": 0,
            "seconds": 0.0,
            "error": None, "run_id": self.run_id,
        }

    def _harvest_series(self, task: SeriesTask) -> _Done | None:
        base = self._base(task)
        if task.url is None or task.endpoint not in self.endpoints:
            return _Done([_Outcome({**base, "status": "not_found", "finished_at": _now(),
                                    "error": f"no endpoint serves this series: {task.reason or 'not routed'}"})])
        if self.light:  # PS3.18 8.3.4.3: one includefield parameter per attribute (Orthanc ignores a joined list)
            url = task.url.rstrip("/") + "/instances"
            params = [("includefield", tag) for tag in LIGHT_TAGS]
        else:
            url, params = task.url.rstrip("/") + "/metadata", None
        got = self._get(task.endpoint, url, params,
                        lambda response, streamed: self._stream(task, response, streamed))
        if got is None:
            return None
        result, parsed, streamed = got
        base.update(url=url, attempts=result.attempts, bytes=result.bytes + streamed,
                    seconds=round(result.seconds, 4),
                    http_status=result.response.status_code if result.response is not None else None)
        outcome = self._classify(result, parsed or _Streamed(), base)
        if outcome.log["status"] != "ok" and isinstance(parsed, _Streamed):  # parts of a series that does not count
            self.store.discard(parsed.parts)
        outcome.log["error"] = self._redact(task.endpoint, outcome.log["error"])
        return _Done([outcome])

    def _harvest_study(self, tasks: tuple[SeriesTask, ...]) -> _Done | None:
        """Two or more series of one study from one ``GET {study}/metadata`` (see :mod:`.tasks`).

        Instances of other series in the answer are dropped. Each wanted series the answer holds is
        logged ok with the study's URL, attempts and seconds, its own instances, and as bytes the length
        of its instances' JSON text (the rest of the answer counts only in the run's bytes). The series
        it lacks, and all of them when the answer is not a 200 with a DICOM JSON array of instances that
        each name their series (a 404, a server without study metadata, a body cut short on every
        attempt, a malformed instance), are asked for one by one: each ends as it would have alone.
        """
        first = tasks[0]
        assert first.url is not None, "fetch_units groups only series with a URL"
        url, wanted = study_url(first.url), {t.series_uid for t in tasks}
        got = self._get(first.endpoint, url, None,
                        lambda response, streamed: self._stream(first, response, streamed, wanted))
        if got is None:
            return None
        result, parsed, streamed = got
        read = result.bytes + streamed
        if not isinstance(parsed, _Streamed) or result.error is not None:
            return _Done(again=list(tasks), other_bytes=read)
        rows: dict[str, list[dict[str, Any]]] = {}
        for row in parsed.rows:
            rows.setdefault(row["SeriesInstanceUID"], []).append(row)
        outcomes, again = [], []
        for task in tasks:
            counts = parsed.per_series.get(task.series_uid)
            if counts is None:
                again.append(task)
                continue
            instances, text, dropped = counts
            log = {**self._base(task), "url": url, "http_status": 200, "attempts": result.attempts,
                   "instances": instances, "values_dropped": dropped, "bytes": text,
                   "seconds": round(result.seconds, 4), "status": "ok", "finished_at": _now()}
            first_one = not outcomes  # the study's parts and unwritten bytes go with its first series
            outcomes.append(_Outcome(log, rows.get(task.series_uid, []), parsed.json_bytes if first_one else 0,
                                     parsed.parts if first_one else []))
        return _Done(outcomes, again, read - sum(o.log["bytes"] for o in outcomes))

    def _get(self, endpoint: str, url: str, params: list[tuple[str, str]] | None,
             parse: Any) -> tuple[Attempted, _Streamed | MalformedMetadata | None, int] | None:
        """GET ``url`` under the run's policy, limiter and stop, ``parse(response, streamed)`` reading a 200
        as it streams in: the result, what the last attempt answered 200 parsed to, and the bytes read by
        streaming over all attempts. None when the run stopped meanwhile, or when the endpoint refused the
        credentials (then the run stops: the series is asked for again once they work)."""
        session = self._session(endpoint)
        parsed: list[_Streamed | MalformedMetadata] = []  # of the last attempt answered 200
        streamed = [0]  # body bytes read by streaming, over all attempts

        def attempt() -> requests.Response:
            response = session.get(url, params=params, timeout=self.policy.timeout, stream=True)
            with self.parsing:  # a body waits in the socket, not in memory, until it can be parsed
                parsed.clear()
                if response.status_code != 200:
                    _ = response.content  # an error's body, for its message; a body cut short raises, and is retried
                    return response
                parsed.append(parse(response, streamed))  # cut short: raises, and is retried
            return response

        try:
            result = call(attempt, policy=self.policy, limiter=self.limiter, stop=self.stop)
        except _Stopped:
            return None
        if result.stopped:
            self.store.discard(p for s in parsed if isinstance(s, _Streamed) for p in s.parts)
            return None
        if result.response is not None and result.response.status_code in AUTH_STATUSES:
            answer = snippet(result.response, 120, self._secrets(endpoint))
            with self.lock:
                if self.auth_failure is None:
                    self.auth_failure = (f"authentication failed for {endpoint}: check --auth (GET {url} "
                                         f"answered HTTP {result.response.status_code}: {answer})")
            self.stop.set()
            return None
        return result, (parsed[0] if parsed else None), streamed[0]

    def _secrets(self, endpoint: str | None) -> tuple[str, ...]:
        return session_secrets(self._session(endpoint)) if endpoint in self.endpoints else ()

    def _redact(self, endpoint: str | None, text: str | None) -> str | None:
        """``text`` without the endpoint's secrets or anything shaped like a credential."""
        return None if text is None else redact(text, self._secrets(endpoint))

    def _stream(self, task: SeriesTask, response: requests.Response, streamed: list[int],
                wanted: set[str] | None = None) -> _Streamed | MalformedMetadata:
        """Parse a 200 response as it arrives; write a part each time the rows reach a batch.

        With ``wanted`` the response is ``task``'s study's: each instance is of the series it names,
        kept (and counted in ``per_series``) if that series is wanted, dropped if not.
        Parts written before an error are deleted (they were never committed); a body cut
        short raises its requests exception (retried by :func:`cohort.retry.call`).
        """
        out, now = _Streamed(), _now()

        def chunks() -> Iterator[bytes]:
            for chunk in response.iter_content(CHUNK_BYTES):
                streamed[0] += len(chunk)
                yield chunk

        try:
            for instance, text in iter_instances(chunks()):
                row = instance_row(instance, task.study_uid, task.series_uid if wanted is None else None, text)
                if wanted is not None:
                    series = row["SeriesInstanceUID"]
                    if series not in wanted:
                        if series is None:
                            raise MalformedMetadata("an instance of the study has no SeriesInstanceUID (0020000E)")
                        if self.stop.is_set():
                            raise _Stopped
                        continue  # a series of the study not asked for
                    counts = out.per_series.setdefault(series, [0, 0, 0])
                    counts[:] = counts[0] + 1, counts[1] + len(text), counts[2] + row["values_dropped"]
                out.values_dropped += row.pop("values_dropped")
                out.rows.append({**row, "endpoint": task.endpoint, "run_id": self.run_id, "harvested_at": now})
                out.instances += 1
                out.json_bytes += len(text)
                if len(out.rows) >= self.flush_instances or out.json_bytes >= FLUSH_BYTES:
                    batch = pa.Table.from_pylist(out.rows, schema=INSTANCE_SCHEMA)
                    out.rows.clear()
                    out.parts.append(self.store.write_part(INSTANCES, batch))
                    out.json_bytes = 0
                    del batch
                if self.stop.is_set():
                    raise _Stopped
        except MalformedMetadata as exc:
            self.store.discard(out.parts)
            return exc
        except (ValueError, TypeError, LookupError, ArithmeticError, RecursionError, pa.ArrowException) as exc:
            # no body may stop the run: the series is logged malformed (a cut body is a requests error: retried)
            self.store.discard(out.parts)
            log.debug("series %s: unreadable metadata", task.series_uid, exc_info=True)
            return MalformedMetadata(f"unreadable metadata ({type(exc).__name__}: {str(exc)[:200]})")
        except BaseException:
            self.store.discard(out.parts)
            raise
        finally:
            response.close()
            response._content = b""  # read by streaming (cohort.retry.call counts the bytes of .content)
        return out

    def _classify(self, result: Attempted, streamed: _Streamed | MalformedMetadata,
                  base: dict[str, Any]) -> _Outcome:
        def outcome(status: str, error: str | None = None, rows: _Streamed | None = None) -> _Outcome:
            rows = rows or _Streamed()
            return _Outcome({**base, "status": status, "error": error, "instances": rows.instances,
                             "values_dropped": rows.values_dropped, "finished_at": _now()},
                            rows.rows, rows.json_bytes, rows.parts)

        if result.error is not None:
            error = f"{type(result.error).__name__}: {result.error}"
            if isinstance(result.error, requests.Timeout):
                return outcome("timeout", error)
            if isinstance(result.error, requests.exceptions.ChunkedEncodingError):
                return outcome("malformed", f"truncated body: {error}")
            return outcome("http_error", error)
        response = result.response
        assert response is not None
        secrets = self._secrets(base["endpoint"])
        if response.status_code in (404, 410):
            return outcome("not_found", f"HTTP {response.status_code}: {snippet(response, secrets=secrets)}")
        if response.status_code == 204:
            return outcome("empty")
        if not response.ok:
            return outcome("http_error", f"HTTP {response.status_code}: {snippet(response, secrets=secrets)}")
        if isinstance(streamed, MalformedMetadata):
            return outcome("malformed", str(streamed))
        return outcome("ok" if streamed.instances else "empty", rows=streamed)


def _progress_bar(total: int) -> Any:
    """A tqdm bar (a widget in notebooks); tqdm is imported only when progress is shown."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, unit="series", desc="harvest", dynamic_ncols=True)


def _finished(done: SimpleQueue[Future], timeout: float) -> list[Future]:
    """The futures finished so far: waits up to ``timeout`` for the first, then takes what else is there."""
    try:
        finished = [done.get(timeout=timeout)]
    except Empty:
        return []
    with contextlib.suppress(Empty):
        while True:
            finished.append(done.get_nowait())
    return finished


@contextlib.contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until its end (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are only delivered to the main thread
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)
