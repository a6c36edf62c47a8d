"""The one exception tree of idc-cohort.

    CohortError                      base: catch this to catch everything we raise
    ├── CatalogError                 the index catalog
    │   ├── UnknownTableError        a table name that no index table has
    │   └── TableUnavailableError    an optional table that is neither cached nor downloadable
    ├── QueryError                   a query failed: carries the SQL, its source and the bound parameters
    │   ├── QueryFileError           a saved query file is malformed (file:line)
    │   ├── ParameterError           a missing, unknown or mistyped parameter
    │   └── ReadOnlyError            a query tried to write, attach or change settings
    ├── CohortInputError             bad UIDs or other input that builds a cohort
    ├── EndpointError                a DICOMweb endpoint cannot be used (auth, URL)
    ├── CoverageError                routing a cohort to endpoints failed
    ├── HarvestError                 the metadata harvester could not run
    ├── PixelError                   slides, frames or thumbnails could not be read (routed client, wsidicom)
    ├── ArchiveError                 a harvest directory cannot be opened as an archive (dicom_metadata, derived tables)
    ├── ManifestError                a manifest could not be written or read (file:line)
    └── DownloadError                a download could not start or did not finish
        └── DiskSpaceError           the destination has less free space than the download needs

Every message says what was wrong, where, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class CohortError(Exception):
    """Base class of every error raised by idc-cohort."""


class CatalogError(CohortError):
    """The index catalog cannot serve a table."""


class UnknownTableError(CatalogError):
    """A query named a table that no idc-index table has."""


class TableUnavailableError(CatalogError):
    """An optional index table is neither cached nor downloadable."""


class QueryError(CohortError):
    """A query failed. Carries the SQL text, where it came from and the bound parameters."""

    def __init__(
        self,
        message: str,
        *,
        sql: str | None = None,
        source: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.sql = sql
        self.source = source
        self.params = dict(params or {})
        where = []
        if source:
            where.append(f"in {source}")
        if self.params:
            bound = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
            where.append(f"with parameters {bound}")
        super().__init__(message + (f" ({'; '.join(where)})" if where else ""))
        self.message = message


class QueryFileError(QueryError):
    """A saved query file is malformed."""


class ParameterError(QueryError):
    """A query parameter is missing, unknown or of the wrong type."""


class ReadOnlyError(QueryError):
    """A query tried to write files, attach databases or change settings."""


class CohortInputError(CohortError):
    """Input that builds a cohort is wrong (unknown UIDs, missing columns)."""


class EndpointError(CohortError):
    """A DICOMweb endpoint cannot be used (bad URL, missing credentials)."""


class CoverageError(CohortError):
    """Routing a cohort to DICOMweb endpoints failed."""


class HarvestError(CohortError):
    """The metadata harvester could not run."""


class PixelError(CohortError):
    """Pixels could not be read: a series outside the routed cohort, a missing optional extra,
    frames an endpoint would not serve or that cannot be decoded."""


class ArchiveError(CohortError):
    """A harvest directory cannot be built or opened as an archive, or its discovery failed."""


class ManifestError(CohortError):
    """A manifest could not be written or read."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(where + message)


class DownloadError(CohortError):
    """A download could not start (nothing selected) or idc-index / s5cmd failed during it."""


class DiskSpaceError(DownloadError):
    """The destination has less free space than the series to download need (checked before starting)."""

    def __init__(self, message: str, *, needed_bytes: int, free_bytes: int, dest: str) -> None:
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes
        self.dest = dest
        super().__init__(message)
