"""A local DuckDB copy of the shipped ``index`` and ``prior_versions_index``, for fast UID lookups.

idc-index-data ships ``idc_index.parquet`` as one row group, so every query that
looks up a SeriesInstanceUID reads all 1 M UIDs (~90 ms warm). The copy holds
the same tables, rows in the same order and the same column types, in a DuckDB
database file with an ART index on ``SeriesInstanceUID``: a lookup is an index
scan (a few ms), and whole-table scans are no slower than over the Parquet file.
Strings are stored without FSST compression: the copy is half again as big, but
takes half the CPU to make, and a row fetched by an index scan is not decoded.
Beside it, a file of every UID sorted by hash (:mod:`cohort.uidset`) answers
"which of these UIDs exist" without a query.

The copy is made once per installed idc-index-data and DuckDB version, in the
user cache (``platformdirs.user_cache_dir("idc-cohort")/<version>/``):

* made in a temporary file next to it and renamed into place, so that no
  reader ever sees half a copy; while one process makes it, others wait on a
  lock file (``fcntl.flock`` where there is one) and then use its result;
* it records the idc-index-data version and the size and sha256 of each shipped
  file it was made from; a copy whose record does not match the installed files
  is made again. The sha256 of an installed file is computed once per path,
  size and mtime and remembered in ``sources.json`` beside the copy, so every
  open is a cheap check, and several environments with the same idc-index-data
  installed share one copy instead of making it again in turn;
* where the cache directory cannot be written, or the copy cannot be made or
  read, the catalog reads the shipped Parquet files as before (and says so in
  the log at WARNING level); where the UID file is missing or damaged, lookups
  ask the copy instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import duckdb

from . import uidset
from ._text import sql_literal

log = logging.getLogger(__name__)

#: The tables copied, each with the column its ART index is on.
COPIED = {"index": "SeriesInstanceUID", "prior_versions_index": "SeriesInstanceUID"}
#: The copy's own layout; bump it when what is stored changes.
FORMAT = 2
#: Name under which the copy is attached to a catalog's connection.
ALIAS = "idc_local_copy"
META_TABLE = "_idc_cohort_copy"
#: Temporary files older than this (seconds) are left over from a killed process.
STALE_TEMP_SECONDS = 3600
#: Where the sha256 of each installed source file is remembered, keyed by path, size and mtime.
FINGERPRINTS = "sources.json"


def file_name() -> str:
    """The copy's file name: DuckDB's version is part of it (an older DuckDB cannot read a newer file)."""
    return f"index-copy-f{FORMAT}-duckdb{duckdb.__version__}.duckdb"


def source_record(fingerprints: Mapping[str, dict], data_version: str) -> dict:
    """What a copy made from files with these fingerprints (table name -> size and sha256) records."""
    return {"format": FORMAT, "duckdb": duckdb.__version__, "idc_index_data": data_version,
            "files": {name: dict(fingerprints[name]) for name in sorted(fingerprints)}}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(recorded: dict | None, expected: dict) -> bool:
    """True when a copy's record is for these files (the UID file's entry aside)."""
    try:
        return {k: v for k, v in recorded.items() if k != "uid_file"} == expected  # type: ignore[union-attr]
    except AttributeError:  # no record, or not one of ours
        return False


class LocalCopy:
    """The copy of the shipped tables in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, sources: Mapping[str, Path], data_version: str) -> None:
        self.directory = Path(directory)
        self.sources = {name: Path(sources[name]) for name in COPIED}
        self.data_version = data_version
        self.path = self.directory / file_name()
        self._uid_file: dict | None = None  # the record's entry for the UID file, once attached
        self._uid_set: uidset.UidSet | bool | None = None  # opened on first use; False: not usable

    def fingerprints(self) -> dict[str, dict]:
        """Size and sha256 of each source file; a sha256 is remembered in :data:`FINGERPRINTS`, keyed by
        the file's path, size and mtime, so that it is computed once per installed file."""
        remembered_at = self.directory / FINGERPRINTS
        try:
            remembered = json.loads(remembered_at.read_text(encoding="utf-8"))
            if not isinstance(remembered, dict):
                remembered = {}
        except (OSError, ValueError):
            remembered = {}
        out, changed = {}, False
        for name, path in sorted(self.sources.items()):
            st = path.stat()
            entry = remembered.get(str(path))
            if not (isinstance(entry, dict) and entry.get("size") == st.st_size
                    and entry.get("mtime_ns") == st.st_mtime_ns and isinstance(entry.get("sha256"), str)):
                entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256(path)}
                remembered[str(path)] = entry
                changed = True
            out[name] = {"size": entry["size"], "sha256": entry["sha256"]}
        if changed:
            with contextlib.suppress(OSError):  # not remembered: computed again next time
                self.directory.mkdir(parents=True, exist_ok=True)
                tmp = remembered_at.with_name(f".{FINGERPRINTS}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
                tmp.write_text(json.dumps(remembered, sort_keys=True), encoding="utf-8")
                os.replace(tmp, remembered_at)
        return out

    def attach(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Attach the copy (read-only) to ``con`` as :data:`ALIAS`, making it first if needed.

        Returns False, having logged why, when neither an existing copy nor a new one can be used.
        """
        try:
            expected = source_record(self.fingerprints(), self.data_version)
        except OSError as exc:
            log.warning("reading the shipped Parquet files: cannot read them to check the local index copy (%s)", exc)
            return False
        if self._attach_if_current(con, expected):
            return True
        try:
            with self._lock():
                if not self._attach_if_current(con, expected):  # another process may have made it meanwhile
                    self.build()
                    if not self._attach_if_current(con, expected):
                        raise OSError(f"the copy just made at {self.path} does not read back")
        except (OSError, duckdb.Error) as exc:
            log.warning("reading the shipped Parquet files: could not make the local index copy in %s (%s)",
                        self.directory, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return False
        return True

    def _attach_if_current(self, con: duckdb.DuckDBPyConnection, expected: dict) -> bool:
        if not self.path.is_file():
            return False
        try:
            con.execute(f"ATTACH {sql_literal(str(self.path))} AS {ALIAS} (READ_ONLY)")
        except duckdb.Error as exc:
            log.info("local index copy %s is not readable (%s); making it again", self.path, exc)
            return False
        try:
            row = con.execute(f"SELECT record FROM {ALIAS}.{META_TABLE}").fetchone()
            recorded = json.loads(row[0]) if row else None
        except (duckdb.Error, ValueError):
            recorded = None
        if _matches(recorded, expected):
            self._uid_file = recorded.get("uid_file") if isinstance(recorded.get("uid_file"), dict) else None
            self._uid_set = None
            return True
        con.execute(f"DETACH {ALIAS}")
        log.info("local index copy %s is out of date (the installed idc-index-data changed); making it again",
                 self.path)
        return False

    def build(self) -> Path:
        """Make the copy and its UID file from the shipped files: into temporary files, then renamed into
        place (the UID file first, so that a copy in place always has its own UID file beside it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps()
        before = {name: path.stat() for name, path in self.sources.items()}
        record = source_record(self.fingerprints(), self.data_version)  # after `before`: see the check below
        build_id = uuid.uuid4().hex[:12]
        tmp = self.directory / f".{self.path.name}.{os.getpid()}.{build_id}.tmp"
        uid_name = f"{self.path.stem}.uids-{build_id}.arrow"
        uid_tmp = self.directory / f".{uid_name}.tmp"
        start = time.perf_counter()
        log.info("making the local index copy %s (once per idc-index-data version)", self.path)
        try:
            con = duckdb.connect(str(tmp))
            try:
                # without FSST: half the CPU to make the copy, and no string to decode when an index scan fetches a row
                con.execute("SET disabled_compression_methods = 'fsst'")
                with contextlib.suppress(duckdb.InvalidInputException):  # Jupyter without ipywidgets refuses it
                    con.execute("SET enable_progress_bar = false")  # the copy must not draw on a CSV on stdout
                for name, column in COPIED.items():
                    source = sql_literal(str(self.sources[name]))
                    con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM read_parquet({source})')
                    con.execute(f'CREATE INDEX "{name}_{column}" ON "{name}" ("{column}")')
                rows = uidset.write(con, " UNION ALL ".join(
                    f'SELECT "{column}" FROM "{name}"' for name, column in COPIED.items()), uid_tmp)
                record["uid_file"] = {"name": uid_name, "rows": rows}
                con.execute(f"CREATE TABLE {META_TABLE} (record VARCHAR)")
                con.execute(f"INSERT INTO {META_TABLE} VALUES ({sql_literal(json.dumps(record, sort_keys=True))})")
                con.execute("CHECKPOINT")
            finally:
                con.close()
            # a file replaced while it was read makes a copy of neither version: refuse it
            if any(_changed(before[name], path.stat()) for name, path in self.sources.items()):
                raise OSError("the shipped index files changed while the copy was being made")
            os.replace(uid_tmp, self.directory / uid_name)
            os.replace(tmp, self.path)
        finally:
            for leftover in (tmp, Path(str(tmp) + ".wal"), uid_tmp):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        self._remove_other_uid_files(uid_name)
        log.info("made the local index copy in %.1f s", time.perf_counter() - start)
        return self.path

    @property
    def uid_file(self) -> Path | None:
        """The attached copy's UID file (None before attaching, or when the copy records none)."""
        name = (self._uid_file or {}).get("name")
        return self.directory / str(name) if name else None

    def uid_set(self) -> uidset.UidSet | None:
        """The attached copy's UID file, opened on first use (None, logged once, if it is missing or damaged:
        lookups then ask the copy)."""
        if self._uid_set is None:
            self._uid_set = False
            entry = self._uid_file
            try:
                if not entry or "/" in str(entry.get("name")) or os.sep in str(entry.get("name")):
                    raise OSError("the copy records no UID file")
                self._uid_set = uidset.UidSet(self.directory / str(entry["name"]), int(entry["rows"]))
            except Exception as exc:  # noqa: BLE001 - any damage means: do not use it
                log.info("not using the UID file of %s (%s); UID lookups ask the copy", self.path, exc)
        return self._uid_set or None

    def _remove_other_uid_files(self, keep: str) -> None:
        """UID files of earlier copies of this name (a process still reading one has it mapped)."""
        for other in self.directory.glob(f"{self.path.stem}.uids-*.arrow"):
            if other.name != keep:
                with contextlib.suppress(OSError):
                    other.unlink()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """An exclusive lock on ``<copy>.lock`` while the copy is checked and made (no-op without fcntl)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl  # noqa: PLC0415 - POSIX only
        except ImportError:  # Windows: two processes may both make it; each renames a complete file
            yield
            return
        with open(self.directory / f"{self.path.name}.lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _remove_stale_temps(self) -> None:
        now = time.time()
        for leftover in [*self.directory.glob(f".{self.path.stem}.*.tmp*"), *self.directory.glob(f".{FINGERPRINTS}.*.tmp")]:
            with contextlib.suppress(OSError):
                if now - leftover.stat().st_mtime > STALE_TEMP_SECONDS:
                    leftover.unlink()


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ino) != (after.st_size, after.st_mtime_ns, after.st_ino)
