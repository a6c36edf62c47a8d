"""Bring your own archive: any DICOMweb server's metadata as IDC's tables.

    >>> from cohort.archive import build_archive, open_archive
    >>> build_archive("harvest/", collection_id="my_lab")      # dicom_metadata + derived idc-index tables
    >>> open_archive(catalog, "harvest/")                       # the saved queries now run on the archive

Modules: :mod:`.dicom_metadata` (every attribute a typed column, as Google's
BigQuery export), :mod:`.derive` (idc-index-data's SQL ported to DuckDB, in
``sql/``), :mod:`.build` (the Parquet files beside a harvest),
:mod:`.catalog` (views in a :class:`~cohort.Catalog`), :mod:`.discover`
(every study and series of a server through QIDO-RS), :mod:`.uids` (what to
harvest from one's own server), :mod:`.compare` (derived rows against a real
IDC table).
"""

from .build import TABLES, Archive, build_archive
from .catalog import open_archive
from .compare import compare
from .discover import DiscoveredSeries, discover_series

__all__ = ["TABLES", "Archive", "DiscoveredSeries", "build_archive", "compare", "discover_series", "open_archive"]
