"""A local DuckDB copy of the shipped ``index`` and ``prior_versions_index``, for fast UID lookups.

idc-index-data ships ``idc_index.parquet`` as one row group, so every query that
looks up a SeriesInstanceUID reads all 1 M UIDs (~90 ms warm). The copy holds
the same tables, rows in the same order and the same column types, in a DuckDB
database file with an ART index on ``SeriesInstanceUID``: a lookup is an index
scan (a few ms), and whole-table scans are no slower than over the Parquet file.

The copy is made once per installed idc-index-data and DuckDB version, in the
user cache (``platformdirs.user_cache_dir("idc-cohort")/<version>/``):

* made in a temporary file next to it and renamed into place, so that no
  reader ever sees half a copy; while one process makes it, others wait on a
  lock file (``fcntl.flock`` where there is one) and then use its result;
* it records the version, size, mtime and sha256 of each shipped file it was
  made from; a copy whose record does not match the installed files (size,
  mtime or version: a cheap check at every open) is made again;
* where the cache directory cannot be written, or the copy cannot be made or
  read, the catalog reads the shipped Parquet files as before (and says so in
  the log at WARNING level).
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

from ._text import sql_literal

log = logging.getLogger(__name__)

#: The tables copied, each with the column its ART index is on.
COPIED = {"index": "SeriesInstanceUID", "prior_versions_index": "SeriesInstanceUID"}
#: The copy's own layout; bump it when what is stored changes.
FORMAT = 1
#: Name under which the copy is attached to a catalog's connection.
ALIAS = "idc_local_copy"
META_TABLE = "_idc_cohort_copy"
#: Temporary files older than this (seconds) are left over from a killed process.
STALE_TEMP_SECONDS = 3600


def file_name() -> str:
    """The copy's file name: DuckDB's version is part of it (an older DuckDB cannot read a newer file)."""
    return f"index-copy-f{FORMAT}-duckdb{duckdb.__version__}.duckdb"


def source_record(sources: Mapping[str, Path], data_version: str, sha256: bool = False) -> dict:
    """What a copy made from ``sources`` (table name -> shipped Parquet file) records about them."""
    files = {}
    for name, path in sorted(sources.items()):
        st = path.stat()
        files[name] = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if sha256:
            files[name]["sha256"] = _sha256(path)
    return {"format": FORMAT, "duckdb": duckdb.__version__, "idc_index_data": data_version, "files": files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(recorded: dict | None, expected: dict) -> bool:
    """True when a copy's record is for these files (sha256 is kept for the record, not compared at open)."""
    try:
        return _without_sha(recorded) == expected
    except (TypeError, KeyError, AttributeError):  # no record, or not one of ours
        return False


class LocalCopy:
    """The copy of the shipped tables in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, sources: Mapping[str, Path], data_version: str) -> None:
        self.directory = Path(directory)
        self.sources = {name: Path(sources[name]) for name in COPIED}
        self.data_version = data_version
        self.path = self.directory / file_name()

    def attach(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Attach the copy (read-only) to ``con`` as :data:`ALIAS`, making it first if needed.

        Returns False, having logged why, when neither an existing copy nor a new one can be used.
        """
        expected = source_record(self.sources, self.data_version)
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
            return True
        con.execute(f"DETACH {ALIAS}")
        log.info("local index copy %s is out of date (the installed idc-index-data changed); making it again",
                 self.path)
        return False

    def build(self) -> Path:
        """Make the copy from the shipped files: into a temporary file, then renamed into place."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps()
        record = source_record(self.sources, self.data_version, sha256=True)
        tmp = self.directory / f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        start = time.perf_counter()
        log.info("making the local index copy %s (once per idc-index-data version)", self.path)
        try:
            con = duckdb.connect(str(tmp))
            try:
                for name, column in COPIED.items():
                    source = sql_literal(str(self.sources[name]))
                    con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM read_parquet({source})')
                    con.execute(f'CREATE INDEX "{name}_{column}" ON "{name}" ("{column}")')
                con.execute(f"CREATE TABLE {META_TABLE} (record VARCHAR)")
                con.execute(f"INSERT INTO {META_TABLE} VALUES ({sql_literal(json.dumps(record, sort_keys=True))})")
                con.execute("CHECKPOINT")
            finally:
                con.close()
            # the record was taken before reading: a file replaced meanwhile makes a copy that never matches
            if source_record(self.sources, self.data_version) != _without_sha(record):
                raise OSError("the shipped index files changed while the copy was being made")
            os.replace(tmp, self.path)
        finally:
            for leftover in (tmp, Path(str(tmp) + ".wal")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        log.info("made the local index copy in %.1f s", time.perf_counter() - start)
        return self.path

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
        for leftover in self.directory.glob(f".{self.path.name}.*.tmp*"):
            with contextlib.suppress(OSError):
                if now - leftover.stat().st_mtime > STALE_TEMP_SECONDS:
                    leftover.unlink()


def _without_sha(record: dict) -> dict:
    return {**record, "files": {n: {k: v for k, v in f.items() if k != "sha256"} for n, f in record["files"].items()}}
