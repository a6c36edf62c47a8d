"""The metadata harvester: DICOMweb metadata of a cohort's instances into Parquet.

    >>> from cohort import Cohort, custom
    >>> from cohort.harvest import harvest, open_harvest
    >>> result = harvest(cohort, "harvest/", endpoint=custom("http://127.0.0.1:8042/dicom-web"))
    >>> open_harvest(cohort.catalog, "harvest/")
    >>> cohort.catalog.df("SELECT Modality, count(*) FROM harvest_instances GROUP BY 1")

Modules: :mod:`.metadata` (DICOM JSON → typed row), :mod:`.stream` (a metadata
body read one instance at a time), :mod:`.store` (the Parquet directory, its
commit records, integrity checks and repair), :mod:`.views` (a harvest and its
shards read together: status, committed parts, DuckDB views), :mod:`.lock` (one writer per
directory), :mod:`.probe` (is an endpoint a DICOMweb service that takes our
credentials), :mod:`.selection` (which series a run asks for), :mod:`.tasks` (how:
series by series, or whole studies), :mod:`.runner` (concurrent, polite runs),
:mod:`.cluster` (a run sharded across a Dask cluster).
"""

from .cluster import ShardedResult, ShardResult, harvest_on_cluster, shard_of
from .metadata import COLUMNS, MalformedMetadata, instance_row
from .runner import DEFAULT_RATE, DEFAULT_WORKERS, harvest
from .tasks import HarvestResult, SeriesTask, fetch_units, series_tasks, whole_studies
from .store import FINAL_STATUSES, INSTANCE_SCHEMA, LOG_SCHEMA, STATUSES, HarvestStore
from .stream import iter_instances, parse_body
from .views import harvest_status, harvest_stores, open_harvest, repair_harvest

__all__ = [
    "COLUMNS",
    "DEFAULT_RATE",
    "DEFAULT_WORKERS",
    "FINAL_STATUSES",
    "INSTANCE_SCHEMA",
    "LOG_SCHEMA",
    "STATUSES",
    "HarvestResult",
    "HarvestStore",
    "MalformedMetadata",
    "SeriesTask",
    "ShardResult",
    "ShardedResult",
    "fetch_units",
    "harvest",
    "harvest_on_cluster",
    "harvest_status",
    "harvest_stores",
    "instance_row",
    "iter_instances",
    "open_harvest",
    "parse_body",
    "repair_harvest",
    "series_tasks",
    "shard_of",
    "whole_studies",
]
