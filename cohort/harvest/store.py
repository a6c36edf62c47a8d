"""A harvest directory: Parquet parts of instances and log, written so that a kill never duplicates a row.

Layout::

    DIR/instances/part-<run>-<n>.parquet   one row per instance (INSTANCE_SCHEMA)
    DIR/log/part-<run>-<n>.parquet         one row per series attempt outcome (LOG_SCHEMA)

Each flush writes one pair of parts with the same name: the instances part
first, then the log part, each to a ``.tmp`` file renamed into place (an
atomic rename on one file system). The invariant:

    an instances part counts only when the log part of the same name exists.

So after ``kill -9`` between the two renames, the lone instances part is an
orphan: :meth:`HarvestStore.open` deletes it (and stray ``.tmp`` files) before
a run, and :func:`open_harvest`'s views ignore it. A series is *complete* when
some log row gives it a final status (:data:`FINAL_STATUSES`: ok, empty,
not_found); a rerun skips complete series and harvests the others again, so a
series' instances are in exactly one counted part.

Every part has the same explicit schema, whatever the batch holds (empty
parts included), so DuckDB, pandas, polars and pyarrow read the directory as
one table.
"""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .._text import sql_literal
from ..catalog import Catalog
from ..errors import HarvestError
from .metadata import ROW_SCHEMA

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
    pa.field("bytes", pa.int64()),
    pa.field("seconds", pa.float64()),
    pa.field("endpoint", pa.string()),
    pa.field("url", pa.string()),
    pa.field("error", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("finished_at", _TS),
])

INSTANCES, LOG = "instances", "log"
#: FINAL_STATUSES as a SQL list, for the views and the status report.
_FINAL_SQL = "(" + ", ".join(sql_literal(s) for s in sorted(FINAL_STATUSES)) + ")"


class HarvestStore:
    """Writes and reads one harvest directory (see the module docstring for the invariant)."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.root = Path(out_dir)
        self.instances_dir = self.root / INSTANCES
        self.log_dir = self.root / LOG

    def open(self) -> HarvestStore:
        """Create the directories, drop leftovers of a killed run, check existing parts' schemas."""
        if self.root.exists() and not self.root.is_dir():
            raise HarvestError(f"harvest output {self.root} is a file; give a directory (it is created if missing)")
        try:
            for sub in (self.instances_dir, self.log_dir):
                sub.mkdir(parents=True, exist_ok=True)
                for tmp in sub.glob("*.tmp"):
                    tmp.unlink()
            for orphan in self.orphans():
                orphan.unlink()
        except OSError as exc:
            raise HarvestError(f"cannot use {self.root} as a harvest directory ({exc.strerror or exc}); "
                               "give a directory you can write to") from None
        for sub, schema in ((self.instances_dir, INSTANCE_SCHEMA), (self.log_dir, LOG_SCHEMA)):
            first = next(iter(sorted(sub.glob("*.parquet"))), None)
            try:
                found = pq.read_schema(first) if first is not None else None
            except (pa.ArrowException, OSError) as exc:
                raise HarvestError(f"{first} is not a readable Parquet part ({exc}); "
                                   "move it away, or harvest into a new directory") from None
            if found is not None and not found.equals(schema, check_metadata=False):
                raise HarvestError(
                    f"{first} has another schema than this version of idc-cohort writes; "
                    "harvest into a new directory (or move the old one away)"
                )
        return self

    def orphans(self) -> list[Path]:
        """Instances parts whose log part is missing (a run killed between the two renames)."""
        logged = {p.name for p in self.log_dir.glob("*.parquet")}
        return sorted(p for p in self.instances_dir.glob("*.parquet") if p.name not in logged)

    def parts(self, kind: str) -> list[Path]:
        return sorted((self.root / kind).glob("*.parquet"))

    def completed(self) -> set[str]:
        """SeriesInstanceUIDs that some log row gives a final status."""
        log = self.read_log(columns=["SeriesInstanceUID", "status"])
        mask = pc.is_in(log.column("status"), pa.array(sorted(FINAL_STATUSES)))
        return set(log.filter(mask).column("SeriesInstanceUID").to_pylist())

    def read_log(self, columns: list[str] | None = None) -> pa.Table:
        parts = self.parts(LOG)
        if not parts:
            return LOG_SCHEMA.empty_table().select(columns or LOG_SCHEMA.names)
        return ds.dataset(parts, schema=LOG_SCHEMA, format="parquet").to_table(columns=columns)

    def read_instances(self, columns: list[str] | None = None) -> pa.Table:
        """Counted instances (orphan parts left out)."""
        orphans = set(self.orphans())
        parts = [p for p in self.parts(INSTANCES) if p not in orphans]
        if not parts:
            return INSTANCE_SCHEMA.empty_table().select(columns or INSTANCE_SCHEMA.names)
        return ds.dataset(parts, schema=INSTANCE_SCHEMA, format="parquet").to_table(columns=columns)

    def write(self, name: str, instances: pa.Table, log: pa.Table) -> None:
        """Write one pair of parts: instances, then the log that makes them count."""
        if log.num_rows == 0:
            return
        try:
            self._write_atomic(self.instances_dir / name, instances.cast(INSTANCE_SCHEMA))
            self._write_atomic(self.log_dir / name, log.cast(LOG_SCHEMA))
        except OSError as exc:  # disk full, directory removed: the series of this batch are harvested again
            raise HarvestError(f"cannot write part {name} in {self.root} ({exc.strerror or exc}); free space "
                               "or fix the directory and run the same command again to resume") from None

    @staticmethod
    def _write_atomic(path: Path, table: pa.Table) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def harvest_status(out_dir: str | os.PathLike) -> pa.Table:
    """Series, instances and bytes per status, counting each series' latest outcome (``cohort harvest-status``)."""
    store = _existing(out_dir)
    con = duckdb.connect()
    con.register("log", store.read_log(["SeriesInstanceUID", "status", "instances", "bytes", "finished_at"]))
    return con.execute(
        "WITH last AS (SELECT * FROM log QUALIFY row_number() OVER (PARTITION BY SeriesInstanceUID "
        "ORDER BY finished_at DESC) = 1) "
        f"SELECT status, status IN {_FINAL_SQL} AS complete, count(*) AS series, "
        "sum(instances)::BIGINT AS instances, sum(bytes)::BIGINT AS bytes FROM last GROUP BY ALL ORDER BY series DESC"
    ).to_arrow_table()


def _existing(out_dir: str | os.PathLike) -> HarvestStore:
    store = HarvestStore(out_dir)
    if not store.parts(LOG):
        raise HarvestError(f"{out_dir} holds no harvest (no log/*.parquet): run `cohort harvest ... -o {out_dir}` first")
    return store


def new_run_id() -> str:
    """A sortable, unique run id: UTC time and 6 random hex digits."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def part_name(run_id: str, n: int) -> str:
    return f"part-{run_id}-{n:05d}.parquet"


def open_harvest(catalog: Catalog, out_dir: str | os.PathLike) -> None:
    """Add a harvest directory's tables to ``catalog`` as views.

    ``harvest_instances`` (counted instances), ``harvest_log`` (every attempt
    outcome) and ``harvest_series`` (the latest outcome per series); join
    them with ``index`` on SeriesInstanceUID.
    """
    store = _existing(out_dir)
    root = store.root.resolve()
    log_glob = sql_literal(str(root / LOG / "*.parquet"))
    instances_glob = sql_literal(str(root / INSTANCES / "*.parquet"))
    catalog.add_view("harvest_log", f"SELECT * FROM read_parquet({log_glob})", allow_dir=root)
    catalog.add_view(
        "harvest_instances",
        f"SELECT * EXCLUDE (filename) FROM read_parquet({instances_glob}, filename = true) "
        f"WHERE parse_filename(filename) IN (SELECT parse_filename(filename) FROM read_parquet({log_glob}, filename = true))",
    )
    catalog.add_view(
        "harvest_series",
        "SELECT * FROM harvest_log QUALIFY row_number() OVER (PARTITION BY SeriesInstanceUID "
        f"ORDER BY finished_at DESC, status IN {_FINAL_SQL} DESC) = 1",
    )
