"""Open an archive in a :class:`~cohort.Catalog`: its tables under idc-index's names, and in a schema.

    >>> catalog = Catalog()
    >>> open_archive(catalog, "harvest/")                  # index, sm_index, ... are now the archive's
    >>> catalog.df("SELECT * FROM sm_index")               # every saved query runs unchanged on it
    >>> open_archive(catalog, "harvest/", replace=False)   # only archive.index, archive.sm_index, ...
    >>> catalog.df("SELECT * FROM archive.sm_index a JOIN sm_index USING (SeriesInstanceUID)")  # beside IDC's

The tables are always in the schema (``archive`` by default), so one query can
combine the archive's series with IDC's; with ``replace=True`` (the CLI's
``--archive``) they also take the plain names, so saved queries read them.
Tables the archive does not derive (``prior_versions_index``, ``seg_index``, ...)
stay IDC's.
"""

from __future__ import annotations

import os

from .._text import sql_literal
from ..catalog import Catalog
from .build import SERIES, TABLES, Archive, build_archive

SCHEMA = "archive"


def open_archive(catalog: Catalog, harvest_dir: str | os.PathLike, *, replace: bool = True,
                 schema: str = SCHEMA, collection_id: str | None = None) -> Archive:
    """Build the archive of ``harvest_dir`` if needed, and add its tables to ``catalog`` (see the module docstring)."""
    archive = build_archive(harvest_dir, collection_id)
    filesystem = None
    if isinstance(archive.directory, str):  # in an object store: DuckDB reads it through fsspec
        from ..harvest.fs import location  # noqa: PLC0415

        filesystem = location(archive.directory).fs
    for table in TABLES:
        select = f"SELECT * FROM read_parquet({sql_literal(str(archive.path(table)))})"
        catalog.add_view(f"{schema}.{table}", select, allow_dir=archive.directory, filesystem=filesystem)
        if replace:
            catalog.add_view(table, select)
    return archive


def archive_endpoints(catalog: Catalog, schema: str = SCHEMA) -> list[str]:
    """The DICOMweb roots the opened archive's series were harvested from."""
    rows = catalog.sql(f'SELECT DISTINCT dicomweb_url FROM "{schema}"."{SERIES}" WHERE dicomweb_url IS NOT NULL '
                       "ORDER BY 1")
    return rows.column(0).to_pylist()


def archive_manifest(catalog: Catalog, series_uids: list[str], schema: str = SCHEMA):
    """The manifest rows of an archive cohort: its series with their DICOMweb URLs (an archive has no bucket)."""
    import pyarrow as pa

    uids = pa.table({"SeriesInstanceUID": pa.array(series_uids, pa.string())})
    return catalog.sql(
        f'SELECT i.collection_id, i.PatientID, i.StudyInstanceUID, i.SeriesInstanceUID, i.Modality, i.instanceCount, '
        f's.series_url, s.dicomweb_url FROM _uids u JOIN "{schema}"."index" i USING (SeriesInstanceUID) '
        f'LEFT JOIN "{schema}"."{SERIES}" s USING (SeriesInstanceUID) ORDER BY i.PatientID, i.StudyInstanceUID, '
        "i.SeriesInstanceUID", register={"_uids": uids})
