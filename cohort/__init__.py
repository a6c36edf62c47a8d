"""idc-cohort: find, check and assemble cohorts of NCI Imaging Data Commons series.

    >>> from cohort import Cohort
    >>> c = Cohort.from_query("series_by_collection", collection_id="tcga_paad", modality="SM")
    >>> c.counts
"""

import logging

from .catalog import Catalog
from .cohort import Cohort, Counts, Provenance, default_catalog
from .errors import (
    ArchiveError,
    CatalogError,
    CohortError,
    CohortInputError,
    CoverageError,
    DiskSpaceError,
    DownloadError,
    EndpointError,
    HarvestError,
    ManifestError,
    ParameterError,
    PixelError,
    QueryError,
    QueryFileError,
    ReadOnlyError,
    TableUnavailableError,
    UnknownTableError,
)
from .queries import Parameter, SavedQuery, list_queries, load_query

logging.getLogger(__name__).addHandler(logging.NullHandler())

#: Imported on first use, to keep ``import cohort`` light: DuckDB, but not requests, pandas or pyarrow
#: (the harvester is ``cohort.harvest``).
_LAZY = {
    "ManifestInfo": "manifest", "plan_download": "manifest", "plan_selection": "manifest",
    "download": "manifest", "read_manifest": "manifest", "write_manifest": "manifest",
    "CoverageReport": "coverage", "Policy": "coverage", "route": "coverage",
    "Endpoint": "endpoints", "EndpointKind": "endpoints", "custom": "endpoints", "google_store": "endpoints",
    "idc_proxy": "endpoints",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ArchiveError",
    "Catalog",
    "CatalogError",
    "Cohort",
    "CohortError",
    "CohortInputError",
    "Counts",
    "CoverageError",
    "CoverageReport",
    "DiskSpaceError",
    "DownloadError",
    "Endpoint",
    "EndpointError",
    "EndpointKind",
    "HarvestError",
    "ManifestError",
    "ManifestInfo",
    "Parameter",
    "ParameterError",
    "PixelError",
    "Policy",
    "Provenance",
    "QueryError",
    "QueryFileError",
    "ReadOnlyError",
    "SavedQuery",
    "TableUnavailableError",
    "UnknownTableError",
    "custom",
    "default_catalog",
    "download",
    "google_store",
    "idc_proxy",
    "list_queries",
    "load_query",
    "plan_download",
    "plan_selection",
    "read_manifest",
    "route",
    "write_manifest",
]
