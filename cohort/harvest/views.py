"""A harvest as a whole: the store in a directory and the stores of its shards, read together.

A sharded harvest (:mod:`.cluster`) writes each shard as a store of its own under ``DIR/shards/NNNN``;
everything that reads a harvest (its status, its committed parts, its DuckDB views, its repair, the
runner's choice of what to ask again) takes them together through :func:`harvest_stores`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pyarrow as pa

from .._text import sql_list, sql_literal
from ..errors import HarvestError
from .fs import Files, LocalFiles, ObjectFiles
from .store import COMMITS, FINAL_STATUSES, INSTANCES, LOG, SHARDS, HarvestStore

if TYPE_CHECKING:
    from ..catalog import Catalog

_FINAL_SQL = "(" + ", ".join(sql_literal(s) for s in sorted(FINAL_STATUSES)) + ")"


def harvest_stores(out_dir: str | os.PathLike) -> list[HarvestStore]:
    """The stores of a harvest: DIR itself, then each shard ``DIR/shards/NNNN`` of a sharded harvest.

    A sharded harvest (:mod:`.cluster`) writes each shard as a store of its own; every reader
    (:func:`open_harvest`, :func:`harvest_status`, the runner's choice of what to ask again) takes them together.
    """
    root = HarvestStore(out_dir)
    shards = sorted(name for name, stat in root._list(SHARDS).items() if stat is None and name.isdigit())
    return [root, *(HarvestStore(root.files.path(f"{SHARDS}/{name}")) for name in shards)]


def harvest_status(out_dir: str | os.PathLike) -> pa.Table:
    """Series, instances and bytes per status, counting each series' latest outcome (``cohort harvest-status``).

    A final status wins a tie of ``finished_at`` (as in the ``harvest_series`` view); rows come most series first,
    then by status.

    Raises a HarvestError naming the damaged parts, if any (repair with :meth:`HarvestStore.repair`).
    """
    import duckdb

    columns = ["SeriesInstanceUID", "status", "instances", "bytes", "finished_at"]
    con = duckdb.connect()
    con.register("log", pa.concat_tables(store.read_log(columns) for store in _existing(out_dir)))
    return con.execute(
        "WITH last AS (SELECT * FROM log QUALIFY row_number() OVER (PARTITION BY SeriesInstanceUID "
        f"ORDER BY finished_at DESC, status IN {_FINAL_SQL} DESC) = 1) "
        f"SELECT status, status IN {_FINAL_SQL} AS complete, count(*) AS series, "
        "sum(instances)::BIGINT AS instances, sum(bytes)::BIGINT AS bytes FROM last GROUP BY ALL "
        "ORDER BY series DESC, status"
    ).to_arrow_table()


def committed_parts(out_dir: str | os.PathLike, kind: str = INSTANCES) -> list:
    """The committed parts of ``kind`` of a harvest store and its shards (after checking every one): what
    external tables read."""
    return [part for store in _existing(out_dir) for part in store.parts(kind)]


def repair_harvest(out_dir: str | os.PathLike) -> list:
    """Quarantine the damaged commits of a harvest store and its shards (see :meth:`HarvestStore.repair`)."""
    stores = [store for store in harvest_stores(out_dir)
              if (store.commits_dir.is_dir() if isinstance(store.files, LocalFiles) else store._list(COMMITS))]
    if not stores:
        raise HarvestError(f"{out_dir} holds no harvest (no commits/): nothing to repair")
    return [path for store in stores for path in store.repair()]


def _existing(out_dir: str | os.PathLike) -> list[HarvestStore]:
    stores = harvest_stores(out_dir)
    for store in stores:
        store.check()
    if not any(store.parts(LOG) for store in stores):
        raise HarvestError(f"{out_dir} holds no harvest (no committed log part): "
                           f"run `cohort harvest ... -o {out_dir}` first")
    return stores


def open_harvest(catalog: Catalog, out_dir: str | os.PathLike) -> None:
    """Add a harvest directory's tables to ``catalog`` as views (after checking every committed part).

    ``harvest_instances`` (counted instances), ``harvest_log`` (every attempt
    outcome) and ``harvest_series`` (the latest outcome per series); join
    them with ``index`` on SeriesInstanceUID. The views read the committed
    parts by name (no glob, so any directory name works); parts committed
    after this call are not in them: call it again to see them.
    """
    stores = _existing(out_dir)
    where, filesystem = duckdb_source(stores[0].files)

    def files(kind: str) -> str:
        return sql_list(duckdb_source(store.files)[0](rel) for store in stores for rel in store.part_names(kind))

    catalog.add_view("harvest_log", f"SELECT * FROM read_parquet({files(LOG)})",
                     allow_dir=where(""), filesystem=filesystem)
    catalog.add_view("harvest_instances", f"SELECT * FROM read_parquet({files(INSTANCES)})")
    catalog.add_view(
        "harvest_series",
        "SELECT * FROM harvest_log QUALIFY row_number() OVER (PARTITION BY SeriesInstanceUID "
        f"ORDER BY finished_at DESC, status IN {_FINAL_SQL} DESC) = 1",
    )


def duckdb_source(files: Files):
    """(rel -> what DuckDB's read_parquet takes, the fsspec filesystem to register with DuckDB or None).

    Locally: absolute paths. In an object store: the store's URLs, read by DuckDB through the fsspec
    filesystem (registered with the connection), so the credentials stay botocore's / google-auth's.
    """
    if isinstance(files, LocalFiles):
        root = files.root.resolve()
        return (lambda rel: str(root / rel) if rel else str(root)), None
    assert isinstance(files, ObjectFiles)
    return files.path, files.fs
