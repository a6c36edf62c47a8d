"""Build an archive from a harvest directory: ``dicom_metadata`` and the derived idc-index tables, as Parquet.

Layout (beside the harvest's ``instances/`` and ``log/``; in an object store under the same prefix)::

    DIR/archive/dicom_metadata.parquet     one row per counted instance (see .dicom_metadata)
    DIR/archive/<table>.parquet            index, sm_index, sm_instance_index, ct_index, mr_index, pt_index
    DIR/archive/archive_series.parquet     series -> endpoint and DICOMweb series URL (where it was harvested)
    DIR/archive/state.json                 the instances parts and the label the files were built from

The archive is rebuilt, whole, when the harvest's counted parts or the
collection label differ from ``state.json``; files are written to a
temporary directory and moved into place, ``state.json`` last, so a killed
build leaves the previous archive (or none) and the next open builds again.
A harvest in an object store (``s3://bucket/prefix``) is built in a local
temporary directory from the parts read in place, and each table is PUT to
``PREFIX/archive/``, ``state.json`` last: its tables can then be read in place
by DuckDB, Spark or BigQuery like the harvest's own.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from .._text import sql_list, sql_literal
from ..errors import ArchiveError
from . import derive
from .dicom_metadata import attributes, merge_structure, representatives_sql, select_sql

ARCHIVE = "archive"
STATE = "state.json"
DICOM_METADATA = "dicom_metadata"
SERIES = "archive_series"
#: Harvest columns that stand in for an attribute an instance's JSON lacks (partial tag sets, metadata
#: without the file meta group): the harvester filled them from the request's UIDs or the JSON it had.
FALLBACKS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "TransferSyntaxUID")
#: Every table an archive holds, by its catalog name.
TABLES = (DICOM_METADATA, *derive.DERIVED, SERIES)


@dataclass(frozen=True)
class Archive:
    """A built archive: where its tables are, what it was built from, and how big it is.

    ``harvest_dir`` and ``directory`` are Paths, or URLs (str) for a harvest in an object store.
    """

    harvest_dir: Path | str
    directory: Path | str
    collection_id: str
    instances: int
    attributes: int
    built: bool  # False when the files on disk were already up to date
    seconds: float

    def path(self, table: str) -> Path | str:
        if isinstance(self.directory, str):
            return f"{self.directory}/{table}.parquet"
        return self.directory / f"{table}.parquet"

    def __str__(self) -> str:
        what = f"built in {self.seconds:,.1f} s" if self.built else "up to date"
        return (f"archive {self.directory} ({what}): {self.instances:,} instances, {self.attributes:,} "
                f"top-level attributes; collection_id {self.collection_id!r}")


def counted_parts(harvest_dir: Path) -> list[Path]:
    """The harvest's instances parts that count (a commit lists them), via the store's reading API."""
    from ..harvest.store import INSTANCES, LOG
    from ..harvest.views import harvest_stores

    stores = harvest_stores(harvest_dir)  # the directory and the shards of a sharded harvest
    if not any(store.parts(LOG) for store in stores):
        raise ArchiveError(f"{harvest_dir} holds no harvest (no committed log part): run "
                           f"`cohort harvest ... -o {harvest_dir}` (or `cohort harvest --url URL --all`) first")
    return [part for store in stores for part in store.parts(INSTANCES)]  # committed parts only


def build_archive(harvest_dir: str | os.PathLike, collection_id: str | None = None, *, force: bool = False) -> Archive:
    """Build (or reuse) the archive of ``harvest_dir``; ``collection_id`` labels its series (default: the directory name)."""
    from ..harvest.fs import is_url  # noqa: PLC0415

    if is_url(harvest_dir):
        return _build_remote(str(harvest_dir), collection_id, force)
    started = time.monotonic()
    root = Path(harvest_dir).resolve()
    label = collection_id if collection_id is not None else root.name
    parts = counted_parts(root)
    directory = root / ARCHIVE
    state = {"parts": [p.name for p in parts], "collection_id": label, "version": 1}
    old = _read_state(directory)
    if not force and old is not None and {k: old.get(k) for k in state} == state \
            and all((directory / f"{t}.parquet").is_file() for t in TABLES):
        return Archive(root, directory, label, old.get("instances", 0), old.get("attributes", 0), False,
                       time.monotonic() - started)
    tmp = directory / f".build-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        instances, n_attributes = _build(root, parts, tmp, label)
        for table in TABLES:
            os.replace(tmp / f"{table}.parquet", directory / f"{table}.parquet")
        state.update(instances=instances, attributes=n_attributes)
        (tmp / STATE).write_text(json.dumps(state, indent=1))
        os.replace(tmp / STATE, directory / STATE)
    except OSError as exc:
        raise ArchiveError(f"cannot write the archive in {directory} ({exc.strerror or exc}); free space or fix "
                           "the directory's permissions and open it again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Archive(root, directory, label, instances, n_attributes, True, time.monotonic() - started)


def _read_state(directory: Path) -> dict | None:
    try:
        return json.loads((directory / STATE).read_text())
    except (OSError, ValueError):
        return None


def _build_remote(url: str, collection_id: str | None, force: bool) -> Archive:
    """The archive of a harvest in an object store: built locally from the parts read in place, then PUT."""
    import tempfile  # noqa: PLC0415

    from ..harvest.fs import describe  # noqa: PLC0415
    from ..harvest.store import INSTANCES, LOG  # noqa: PLC0415
    from ..harvest.views import harvest_stores  # noqa: PLC0415

    started = time.monotonic()
    stores = harvest_stores(url)  # the store and the shards of a sharded harvest
    files = stores[0].files
    label = collection_id if collection_id is not None else files.url.rstrip("/").rsplit("/", 1)[-1]
    log_parts = [store.files.path(p) for store in stores for p in store.part_names(LOG)]
    if not log_parts:
        raise ArchiveError(f"{files.url} holds no harvest (no committed log part): run "
                           f"`cohort harvest ... -o {files.url}` first")
    parts = [store.files.path(p) for store in stores for p in store.part_names(INSTANCES)]
    directory = files.path(ARCHIVE)
    state = {"parts": [p.rsplit("/", 1)[-1] for p in parts], "collection_id": label, "version": 1}
    try:
        old = json.loads(files.get(f"{ARCHIVE}/{STATE}"))
    except (OSError, ValueError):
        old = None
    have = files.list(ARCHIVE)
    if not force and isinstance(old, dict) and {k: old.get(k) for k in state} == state \
            and all(f"{t}.parquet" in have for t in TABLES):
        return Archive(files.url, directory, label, old.get("instances", 0), old.get("attributes", 0), False,
                       time.monotonic() - started)
    try:
        with tempfile.TemporaryDirectory(prefix="cohort-archive-") as tmp:
            con = quiet_connection(files.fs)
            instances, n_attributes = _build(files.url, parts, Path(tmp), label, con, log_parts)
            for table in TABLES:  # one PUT each: a table is whole or absent; state.json last
                files.put(f"{ARCHIVE}/{table}.parquet", (Path(tmp) / f"{table}.parquet").read_bytes())
            state.update(instances=instances, attributes=n_attributes)
            files.put(f"{ARCHIVE}/{STATE}", json.dumps(state, indent=1).encode())
    except OSError as exc:
        raise ArchiveError(f"cannot write the archive to {directory} ({describe(exc)}); check the bucket and your "
                           "credentials, then open it again") from None
    return Archive(files.url, directory, label, instances, n_attributes, True, time.monotonic() - started)


def quiet_connection(filesystem=None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection without a progress bar, reading through ``filesystem`` (fsspec) if given.
    In Jupyter without ipywidgets DuckDB refuses to change that setting at all (it shows no bar
    there either), so the refusal is ignored."""
    con = duckdb.connect()
    if filesystem is not None:  # the parts are read in place, through fsspec
        con.register_filesystem(filesystem)
    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.InvalidInputException:
        pass
    return con


def _build(root: Path | str, parts: list, out: Path, label: str, con: duckdb.DuckDBPyConnection | None = None,
           log_parts: list | None = None) -> tuple[int, int]:
    con = con or quiet_connection()
    if parts:
        source = f"read_parquet({sql_list(str(p) for p in parts)})"
    else:  # a harvest whose series all came back empty: an archive with no rows
        source = "(SELECT NULL::VARCHAR AS json, " + ", ".join(f"NULL::VARCHAR AS {c}" for c in FALLBACKS) + " WHERE false)"
    metadata = out / f"{DICOM_METADATA}.parquet"
    try:
        n_attributes = write_dicom_metadata(con, source, metadata)
    except duckdb.Error as exc:
        raise ArchiveError(f"building dicom_metadata from {root} failed: {str(exc).splitlines()[0]}") from None
    con.execute(f"CREATE VIEW dicom_metadata AS SELECT * FROM read_parquet({sql_literal(str(metadata))})")
    con.execute(f"CREATE VIEW dicom_all AS {derive.dicom_all_sql('dicom_metadata', label)}")
    con.execute(f"CREATE VIEW auxiliary_metadata AS {derive.AUXILIARY_SQL}")
    for table in derive.DERIVED:
        target = sql_literal(str(out / f"{table}.parquet"))
        con.execute(f"COPY ({derive.derived_sql(table)}) TO {target} (FORMAT parquet, COMPRESSION zstd)")
    _write_series(con, root, out, log_parts)
    instances = con.execute("SELECT count(*) FROM dicom_metadata").fetchone()[0]
    return instances, n_attributes


def write_dicom_metadata(con: duckdb.DuckDBPyConnection, source: str, path: Path) -> int:
    """Write ``dicom_metadata`` of the harvest instances in ``source`` (SQL) to ``path``; the number of columns."""
    tree: dict = {}
    for (text,) in con.execute(representatives_sql(source)).fetchall():
        try:
            dataset = json.loads(text)
        except ValueError:
            continue
        if isinstance(dataset, dict):
            merge_structure(tree, dataset)
    _merge_tree(tree, derive.required_structure())
    attrs = attributes(tree)
    # the harvest's own columns stand in for FALLBACKS attributes an instance's JSON lacks
    inner = select_sql(attrs, source, extra=[f'"{c}" AS "h_{c}"' for c in FALLBACKS])
    outer = ", ".join(f'coalesce("{a.name}", "h_{a.name}") AS "{a.name}"' if a.name in FALLBACKS else f'"{a.name}"'
                      for a in attrs)
    con.execute(f"COPY (SELECT {outer} FROM ({inner})) TO {sql_literal(str(path))} (FORMAT parquet, COMPRESSION zstd)")
    return len(attrs)


def _merge_tree(tree: dict, extra: dict) -> None:
    """Add the tags of structure ``extra`` that ``tree`` lacks (recursively into sequence items)."""
    for tag, node in extra.items():
        mine = tree.setdefault(tag, {})
        for key, value in node.items():
            if key == "Value" and isinstance(value[0], dict):
                target = mine.setdefault("Value", [{}])
                if isinstance(target[0], dict):
                    _merge_tree(target[0], value[0])
            else:
                mine.setdefault(key, value)


def _write_series(con: duckdb.DuckDBPyConnection, root: Path | str, out: Path, log_parts: list | None = None) -> None:
    """archive_series: each series' endpoint and DICOMweb URL, from its latest successful log row (the URL
    asked: the series' metadata or instances, or its study's metadata when it was asked with its study)."""
    from ..harvest.store import LOG
    from ..harvest.views import harvest_stores

    if log_parts is None:  # the directory and the shards of a sharded harvest
        log_parts = [p for store in harvest_stores(root) for p in store.parts(LOG)]
    log = f"read_parquet({sql_list(str(p) for p in log_parts)})"
    target = sql_literal(str(out / f"{SERIES}.parquet"))
    con.execute(f"""COPY (
        SELECT StudyInstanceUID, SeriesInstanceUID, endpoint,
               CASE WHEN regexp_matches(url, '/series/[^/]+/(metadata|instances)$')
                    THEN regexp_replace(url, '/(metadata|instances)$', '')
                    ELSE regexp_replace(url, '/metadata$', '') || '/series/' || SeriesInstanceUID END AS series_url,
               regexp_replace(url, '/studies/[^/]+(/series/[^/]+)?/(metadata|instances)$', '') AS dicomweb_url,
               finished_at AS harvested_at
        FROM {log}
        WHERE status = 'ok' AND url IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY SeriesInstanceUID ORDER BY finished_at DESC, endpoint, url) = 1
        ORDER BY StudyInstanceUID, SeriesInstanceUID
    ) TO {target} (FORMAT parquet, COMPRESSION zstd)""")
