"""A harvest directory: Parquet parts that count only once committed, checked on every open.

Layout::

    DIR/harvest.lock                       the writer's lock (:mod:`.lock`): one run at a time
    DIR/instances/part-<run>-<n>.parquet   one row per instance (INSTANCE_SCHEMA)
    DIR/log/part-<run>-<n>.parquet         one row per series attempt outcome (LOG_SCHEMA)
    DIR/commits/part-<run>-<n>.json        a commit: the parts it makes count, with rows, size and sha256
    DIR/quarantine/...                     parts moved away by :meth:`HarvestStore.repair`
    DIR/verified.json                      size, mtime, inode of each part when its sha256 last matched
    DIR/shards/NNNN/...                    a sharded harvest (:mod:`.cluster`): each shard a store like DIR;
                                           readers take DIR and its shards together (:func:`.views.harvest_stores`)

Every file is written to a ``.tmp`` name, flushed to disk and renamed into
place. A commit record is written last, after every part it lists (the
instances parts of its series, then its log part) is durable. The invariant:

    a part counts only when a commit record lists it; a series is complete
    when a counted log row gives it a final status (:data:`FINAL_STATUSES`).

So a series counts only when all its instances and its log row are on disk:
a big series is written in several instances parts as its response streams
in, and its log row is committed after the last of them. A run killed at any
moment leaves parts that no commit lists; readers never see them (they read
the committed file list, never a glob), and the next run deletes them, and
only them: files not named like the harvester's own are left alone with a
warning. A rerun skips complete series and asks again for the others, so no
instance is counted twice.

Integrity is checked, not assumed: :meth:`HarvestStore.problems` compares each
committed part with its record (present, same size, same sha256; the sha256 is
computed again only for a part whose size, mtime or inode changed since it last
matched, and always by repair). ``harvest``, ``harvest-status`` and
``open_harvest`` stop with a :class:`~cohort.errors.HarvestError` naming the bad
parts; :meth:`HarvestStore.repair` (``cohort harvest-status DIR --repair``)
moves each bad commit (its record and all its parts) into ``quarantine/`` and
the next run asks for its series again.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..errors import HarvestError
from .fs import Files, LocalFiles, ObjectFiles, Stat, describe, iter_chunks, location
from .lock import DirectoryLock, ObjectLease
from .metadata import ROW_SCHEMA


log = logging.getLogger(__name__)

#: A series with one of these statuses is complete: a rerun does not ask for it again.
FINAL_STATUSES = frozenset({"ok", "empty", "not_found"})
#: Every status a log row can have.
STATUSES = ("ok", "empty", "not_found", "http_error", "timeout", "malformed")

_TS = pa.timestamp("us", tz="UTC")

INSTANCE_SCHEMA = pa.schema(
    [f for f in ROW_SCHEMA if f.name != "json"]
    + [pa.field("endpoint", pa.string()), pa.field("run_id", pa.string()),
       pa.field("harvested_at", _TS), ROW_SCHEMA.field("json")]
)

LOG_SCHEMA = pa.schema([
    pa.field("StudyInstanceUID", pa.string()),
    pa.field("SeriesInstanceUID", pa.string()),
    pa.field("status", pa.string()),
    pa.field("http_status", pa.int32()),
    pa.field("attempts", pa.int32()),
    pa.field("instances", pa.int64()),
    #: Values of the series' instances that did not fit their typed column (null there; kept in the JSON).
    pa.field("values_dropped", pa.int64()),
    pa.field("bytes", pa.int64()),
    pa.field("seconds", pa.float64()),
    pa.field("endpoint", pa.string()),
    pa.field("url", pa.string()),
    pa.field("error", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("finished_at", _TS),
])

INSTANCES, LOG, COMMITS, QUARANTINE, SHARDS = "instances", "log", "commits", "quarantine", "shards"
#: Size, mtime and inode of each part when its sha256 last matched (so unchanged parts are not hashed again).
VERIFIED = "verified.json"
_SCHEMAS = {INSTANCES: INSTANCE_SCHEMA, LOG: LOG_SCHEMA}
#: The names this harvester writes (run ids from :func:`new_run_id`); nothing else is ever deleted.
_OWN_NAME = re.compile(r"part-\d{8}T\d{6}-[0-9a-f]{6}-\d{5,}\.(parquet|json)(\.tmp)?")
_COMMIT_FORMAT = 1
#: FINAL_STATUSES as a SQL list, for the views and the status report.

@dataclass(frozen=True)
class Part:
    """One written part: its path relative to the harvest directory, rows, size and sha256."""

    path: str
    rows: int
    bytes: int
    sha256: str

    @property
    def kind(self) -> str:
        return self.path.split("/", 1)[0]


@dataclass(frozen=True)
class Commit:
    """A commit record: the parts that count together (instances parts, then the log part)."""

    name: str
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Problem:
    """A committed part (or commit record) that is not what its commit says."""

    commit: str
    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


class HarvestStore:
    """Writes and reads one harvest directory (see the module docstring for the invariant).

    Reading needs no lock; writing needs :meth:`open` (which takes the directory's lock)
    and ends with :meth:`close` (or use the store as a context manager).
    """

    def __init__(self, out_dir: str | os.PathLike | Files) -> None:
        self.files = out_dir if isinstance(out_dir, Files) else location(out_dir)
        #: The directory (a Path) or the object-store URL (a str) of the store.
        self.root = self.files.path()
        self.instances_dir = self.files.path(INSTANCES)
        self.log_dir = self.files.path(LOG)
        self.commits_dir = self.files.path(COMMITS)
        self.run_id: str | None = None
        self._lock: DirectoryLock | ObjectLease | None = None
        self._counter = 0
        self._counter_lock = threading.Lock()
        self._commits: list[Commit] | None = None

    # -- opening for a run ------------------------------------------------------
    def open(self, run_id: str | None = None) -> HarvestStore:
        """Lock the store, check every committed part, then delete what no commit lists (ours only)."""
        self._prepare()
        self.run_id = run_id or new_run_id()
        self._lock = self._new_lock(self.run_id).acquire()
        try:
            self.check()
            self._clean()
        except BaseException:
            self.close()
            raise
        return self

    def _prepare(self) -> None:
        """Make the directory (locally) or check the bucket (object stores) before the first write."""
        files = self.files
        if isinstance(files, LocalFiles):
            if self.root.exists() and not self.root.is_dir():
                raise HarvestError(f"harvest output {self.root} is a file; give a directory (it is created if missing)")
            self._refuse_legacy()
            try:
                for sub in (self.instances_dir, self.log_dir, self.commits_dir):
                    sub.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HarvestError(f"cannot use {self.root} as a harvest directory ({exc.strerror or exc}); "
                                   "give a directory you can write to") from None
            return
        assert isinstance(files, ObjectFiles)
        try:
            if not files.exists():
                raise HarvestError(f"{files.url}: bucket {files.bucket!r} does not exist (or these credentials "
                                   "cannot see it); create it first, or check AWS_PROFILE / the Google account")
            if files.is_file():
                raise HarvestError(f"harvest output {files.url} is an object, not a prefix; give a prefix "
                                   "(as in s3://bucket/harvest)")
        except OSError as exc:
            raise HarvestError(f"cannot use {files.url} as a harvest store ({describe(exc)}); check the bucket "
                               "name and your credentials (environment or profile, never the command line)") from None

    def _new_lock(self, run_id: str) -> DirectoryLock | ObjectLease:
        if isinstance(self.files, LocalFiles):
            return DirectoryLock(self.root, run_id)
        return ObjectLease(self.files, run_id)

    def close(self) -> None:
        """Release the directory's lock."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> HarvestStore:
        return self if self._lock is not None else self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _clean(self) -> None:
        """Delete our own files that no commit lists (a killed run's); warn about anyone else's."""
        listed = {part.path for commit in self.commits() for part in commit.parts}
        listed |= {f"{COMMITS}/{c.name}.json" for c in self.commits()}
        for sub in (INSTANCES, LOG, COMMITS):
            for name, stat in self._list(sub).items():
                rel = f"{sub}/{name}"
                if rel in listed:
                    continue
                if _OWN_NAME.fullmatch(name) and stat is not None:
                    self._io(f"delete {rel}", self.files.delete, rel)
                else:
                    log.warning("%s is not a part this harvester wrote: left alone (and not read); "
                                "move it out of %s", self.files.path(rel), self.files.path(sub))

    def _list(self, sub: str) -> dict:
        return self._io(f"list {sub}/", self.files.list, sub)

    def _io(self, what: str, fn, *args):
        """Run one backend call; an object store's error becomes a HarvestError (credentials redacted)."""
        if isinstance(self.files, LocalFiles):
            return fn(*args)
        try:
            return fn(*args)
        except (OSError, ValueError) as exc:
            raise HarvestError(f"cannot {what} in {self.files.url} ({describe(exc)}); check the bucket and your "
                               "credentials, then run the same command again to resume") from None

    # -- reading ----------------------------------------------------------------
    def commits(self) -> list[Commit]:
        """The commit records, oldest first (unreadable ones are :meth:`problems`, not listed)."""
        if self._commits is None:
            self._commits = [c for c in (self._read_commit(p) for p in self._commit_files()) if isinstance(c, Commit)]
        return self._commits

    def _commit_files(self) -> list[str]:
        """The names of the commit records (``part-....json``), oldest first."""
        return [n for n, st in self._list(COMMITS).items()
                if st is not None and n.endswith(".json") and _OWN_NAME.fullmatch(n)]

    def _read_commit(self, name: str) -> Commit | str:
        """The commit record ``commits/NAME``, or what is wrong with it."""
        try:
            data = json.loads(self.files.get(f"{COMMITS}/{name}").decode("utf-8"))
            parts = tuple(Part(p["path"], int(p["rows"]), int(p["bytes"]), str(p["sha256"])) for p in data["parts"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"unreadable commit record ({describe(exc)})"
        if data.get("format") != _COMMIT_FORMAT:
            return f"commit record of another format ({data.get('format')!r}); harvest into a new directory"
        return Commit(name.removesuffix(".json"), parts)

    def parts(self, kind: str) -> list:
        """The committed parts of ``kind`` (``"instances"`` or ``"log"``), in commit order: Paths locally,
        URLs in an object store."""
        return [self.files.path(rel) for rel in self.part_names(kind)]

    def part_names(self, kind: str) -> list[str]:
        """The committed parts of ``kind`` relative to the store (``instances/part-....parquet``)."""
        return [p.path for c in self.commits() for p in c.parts if p.kind == kind]

    def problems(self, full: bool = False) -> list[Problem]:
        """Every committed part that is missing, truncated or altered, and every unreadable commit record.

        A part's sha256 is computed again when its size, mtime or inode changed since it last
        matched (``DIR/verified.json`` remembers them), or always with ``full``.
        """
        try:
            cache = json.loads(self.files.get(VERIFIED)) if not full else {}
        except (OSError, ValueError):
            cache = {}
        verified, found, readable = {}, [], []
        # one listing per kind, not one request per part (an object store answers 1,000 names a LIST)
        listed = {f"{sub}/{n}": st for sub in (INSTANCES, LOG) for n, st in self._list(sub).items() if st}
        for name in self._commit_files():
            commit = self._read_commit(name)
            if not isinstance(commit, Commit):
                found.append(Problem(name.removesuffix(".json"), f"{COMMITS}/{name}", commit))
                continue
            readable.append(commit)
            for part in commit.parts:
                what, seen = _check_part(self.files, part, cache.get(part.path), listed.get(part.path))
                if what:
                    found.append(Problem(commit.name, part.path, what))
                else:
                    verified[part.path] = seen
        self._commits = readable  # what commits() would read again
        if verified != cache:
            self._save_verified(verified)
        return found

    def _save_verified(self, verified: dict) -> None:
        """Remember what matched (a speed-up only: a store we may not write to is checked in full each time)."""
        data = json.dumps(verified).encode()
        try:
            if isinstance(self.files, LocalFiles):
                tmp = self.root / f"{VERIFIED}.{os.getpid()}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, self.root / VERIFIED)
            else:
                self.files.put(VERIFIED, data)
        except (OSError, ValueError):
            pass

    def check(self) -> None:
        """Raise a HarvestError naming each bad part (see :meth:`problems`); check the parts' schemas."""
        self._commits = None
        self._refuse_legacy()
        bad = self.problems()
        if bad:
            shown = "; ".join(str(p) for p in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise HarvestError(
                f"{self.root} has {len(bad)} damaged part(s): {shown}. Run `cohort harvest-status {self.root} "
                "--repair` to move them into quarantine/; the next harvest fetches their series again"
            )
        filesystem, to_path = self.files.arrow()
        for kind, schema in _SCHEMAS.items():
            first = next(iter(self.part_names(kind)), None)
            if first is None:
                continue
            try:
                found = pq.read_schema(to_path(first), filesystem=filesystem)
            except (pa.ArrowException, OSError) as exc:
                raise HarvestError(f"cannot read {self.files.path(first)} ({describe(exc)}); run `cohort "
                                   f"harvest-status {self.root}` to find the damaged part") from None
            if not found.equals(schema, check_metadata=False):
                raise HarvestError(f"{self.files.path(first)} has another schema than this version of idc-cohort "
                                   "writes; harvest into a new directory (or move the old one away)")

    def _refuse_legacy(self) -> None:
        """Refuse a directory of the format before commit records (object stores never had one)."""
        if not isinstance(self.files, LocalFiles):
            return
        if not self.commits_dir.exists() and self.log_dir.is_dir() and any(self.log_dir.glob("*.parquet")):
            raise HarvestError(f"{self.root} has log parts but no commits/: it was written by an older idc-cohort; "
                               "harvest into a new directory (or move the old one away)")

    def completed(self) -> set[str]:
        """SeriesInstanceUIDs that some counted log row gives a final status."""
        log_ = self.read_log(columns=["SeriesInstanceUID", "status"])
        mask = pc.is_in(log_.column("status"), pa.array(sorted(FINAL_STATUSES)))
        return set(log_.filter(mask).column("SeriesInstanceUID").to_pylist())

    def final_statuses(self) -> dict[str, tuple[str, str | None]]:
        """SeriesInstanceUID -> (status, endpoint) of each series' latest counted outcome.

        For deciding what to ask again (``--retry STATUS``, a series not found at another endpoint).
        """
        table = self.read_log(columns=["SeriesInstanceUID", "status", "endpoint", "finished_at"])
        latest: dict[str, tuple[str, str | None]] = {}
        order = pc.sort_indices(table, [("finished_at", "ascending")])
        for row in table.take(order).select(["SeriesInstanceUID", "status", "endpoint"]).to_pylist():
            latest[row["SeriesInstanceUID"]] = (row["status"], row["endpoint"])
        return latest

    def read_log(self, columns: list[str] | None = None) -> pa.Table:
        return self._read(LOG, LOG_SCHEMA, columns)

    def read_instances(self, columns: list[str] | None = None) -> pa.Table:
        """Counted instances (parts no commit lists are left out)."""
        return self._read(INSTANCES, INSTANCE_SCHEMA, columns)

    def _read(self, kind: str, schema: pa.Schema, columns: list[str] | None) -> pa.Table:
        parts = self.part_names(kind)
        if not parts:
            return schema.empty_table().select(columns or schema.names)
        filesystem, to_path = self.files.arrow()
        try:
            return ds.dataset([to_path(p) for p in parts], schema=schema, format="parquet",
                              filesystem=filesystem).to_table(columns=columns)
        except (pa.ArrowException, OSError) as exc:
            raise HarvestError(f"cannot read the {kind} parts of {self.root} ({describe(exc)}); run `cohort harvest-status "
                               f"{self.root}` to find the damaged part") from None

    # -- writing ----------------------------------------------------------------
    def write_part(self, kind: str, table: pa.Table) -> Part:
        """Write one part (not yet counted: :meth:`commit` makes it count). Safe from several threads."""
        if self._lock is None or self.run_id is None:
            raise HarvestError(f"{self.root} is not open for writing: call HarvestStore.open() first")
        with self._counter_lock:
            name = part_name(self.run_id, self._counter)
            self._counter += 1
        sink = pa.BufferOutputStream()
        try:
            pq.write_table(table.cast(_SCHEMAS[kind]), sink, compression="zstd")
        except (pa.ArrowException, ValueError) as exc:
            raise HarvestError(f"cannot encode part {name} ({exc}): this is a bug, please report it") from None
        data = sink.getvalue().to_pybytes()
        self._put(f"{kind}/{name}", data)
        return Part(f"{kind}/{name}", table.num_rows, len(data), hashlib.sha256(data).hexdigest())

    def commit(self, log_table: pa.Table, instance_parts: Iterable[Part] = ()) -> Commit | None:
        """Make ``instance_parts`` and the log rows count: log part, then the commit record, each durable."""
        if log_table.num_rows == 0:
            return None
        # at least one instances part a commit, empty or not: readers always have a file of each kind
        instance_parts = list(instance_parts) or [self.write_part(INSTANCES, INSTANCE_SCHEMA.empty_table())]
        log_part = self.write_part(LOG, log_table)
        local = isinstance(self.files, LocalFiles)
        if local:
            _fsync_dir(self.instances_dir)
            _fsync_dir(self.log_dir)
        else:  # the last moment to find that another writer took the lease over (see .lock.ObjectLease)
            self._lock.check()
        record = {
            "format": _COMMIT_FORMAT, "run_id": self.run_id, "series": log_table.num_rows,
            "committed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "parts": [vars(p) for p in [*instance_parts, log_part]],
        }
        name = Path(log_part.path).stem
        self._put(f"{COMMITS}/{name}.json", json.dumps(record, indent=1).encode())
        try:  # the commit is in place: a failure to sync its directory must not make the caller commit again
            if local:
                _fsync_dir(self.commits_dir)
        except OSError as exc:
            log.warning("cannot sync %s (%s): the last commit may be lost by a power cut", self.commits_dir, exc)
        commit = Commit(name, (*instance_parts, log_part))
        if self._commits is not None:
            self._commits.append(commit)
        return commit

    def write(self, instances: pa.Table, log_table: pa.Table) -> Commit | None:
        """Write and commit one batch: its instances part, then its log part."""
        if log_table.num_rows == 0:
            return None
        return self.commit(log_table, [self.write_part(INSTANCES, instances)])

    def discard(self, parts: Iterable[Part]) -> None:
        """Delete parts that will never be committed (a series whose response failed half-way)."""
        for part in parts:
            self._io(f"delete {part.path}", self.files.delete, part.path)

    def _put(self, rel: str, data: bytes) -> None:
        """Write one file: locally to a temp name, fsync'ed and renamed; in an object store one PUT, its final name."""
        if isinstance(self.files, LocalFiles):
            self._write_atomic(self.root / rel, data)
            return
        try:
            self.files.put(rel, data)
        except (OSError, ValueError) as exc:  # the series of this batch are harvested again
            raise HarvestError(f"cannot write {rel} to {self.files.url} ({describe(exc)}); check the bucket and "
                               "your credentials, then run the same command again to resume") from None

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:  # disk full, directory removed: the series of this batch are harvested again
            raise HarvestError(f"cannot write {path.name} in {self.root} ({exc.strerror or exc}); free space "
                               "or fix the directory and run the same command again to resume") from None

    # -- repair -----------------------------------------------------------------
    def repair(self) -> list[Path]:
        """Move each commit with a bad part (its record and every part it lists) into quarantine/.

        Nothing is deleted. Returns the moved files' new paths; the next run asks for their series again.
        Takes the directory's lock (no harvest may run meanwhile).
        """
        own = self._lock is None
        if own:
            self._lock = self._new_lock(new_run_id()).acquire()
        try:
            bad = {p.commit for p in self.problems(full=True)}
            if not bad:
                return []
            dest = f"{QUARANTINE}/{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%S')}"
            moved = []
            for name in sorted(bad):
                commit = self._read_commit(f"{name}.json")
                paths = [p.path for p in commit.parts] if isinstance(commit, Commit) else [f"{LOG}/{name}.parquet"]
                for rel in [f"{COMMITS}/{name}.json", *paths]:  # the record first: its parts stop counting at once
                    try:
                        self.files.stat(rel)
                    except FileNotFoundError:
                        continue
                    moved.append(self._io(f"move {rel} into {QUARANTINE}/", self.files.move, rel, f"{dest}/{rel}"))
            self._commits = None
            return moved
        finally:
            if own:
                self.close()


def _check_part(files: Files, part: Part, last: list | None, st: Stat | None = None) -> tuple[str | None, list]:
    """What is wrong with a committed part (None: nothing), and what identifies it if intact.

    That is [size, mtime_ns, inode, sha256] locally, [size, ETag, sha256] in an object store;
    ``last`` is what it was when it last matched: unchanged, the sha256 is not computed again.
    ``st`` is the part's entry in a listing (None: not listed, so it is asked for).
    """
    try:
        st = st or files.stat(part.path)
    except FileNotFoundError:
        return "missing", []
    except OSError as exc:
        return f"cannot be read ({exc.strerror or describe(exc)})", []
    if st.size != part.bytes:
        size = st.size
        return f"{'truncated' if size < part.bytes else 'grown'}: {size:,} bytes, committed {part.bytes:,}", []
    seen = [*st.identity, part.sha256]
    if last == seen:
        return None, seen
    digest = hashlib.sha256()
    try:
        with files.open(part.path) as fh:
            for chunk in iter_chunks(fh):
                digest.update(chunk)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or describe(exc)})", []
    if digest.hexdigest() != part.sha256:
        return "altered: its sha256 differs from the committed one", []
    return None, seen


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_run_id() -> str:
    """A sortable, unique run id: UTC time and 6 random hex digits."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def part_name(run_id: str, n: int) -> str:
    return f"part-{run_id}-{n:05d}.parquet"

