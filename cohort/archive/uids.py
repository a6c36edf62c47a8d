"""Series to harvest from one's own server: every series it lists, or a file of Study/Series UIDs.

The IDC index does not know an archive's series, so these are read without
checking them against it (a manifest read by :mod:`cohort.manifest` must
name IDC series).
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from .._text import sql_literal
from ..endpoints import Endpoint
from ..errors import ArchiveError
from .discover import discover_series

_COLUMNS = ("StudyInstanceUID", "SeriesInstanceUID")


def read_series_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(StudyInstanceUID, SeriesInstanceUID) pairs of a CSV, TSV or Parquet file with those columns."""
    path = Path(path)
    reader = "read_parquet" if path.suffix.lower() == ".parquet" else "read_csv"
    options = ", all_varchar = true" + (", delim = '\\t'" if path.suffix.lower() == ".tsv" else "") \
        if reader == "read_csv" else ""
    con = duckdb.connect()
    try:
        rel = con.sql(f"SELECT * FROM {reader}({sql_literal(str(path))}{options})")
    except duckdb.Error as exc:
        raise ArchiveError(f"{path}: cannot read it as a {reader[5:]} table ({str(exc).splitlines()[0]})") from None
    missing = [c for c in _COLUMNS if c not in rel.columns]
    if missing:
        raise ArchiveError(f"{path}: needs the columns {', '.join(_COLUMNS)}; it lacks {', '.join(missing)} "
                           f"(it has {', '.join(rel.columns)})")
    rows = con.sql("SELECT DISTINCT trim(StudyInstanceUID), trim(SeriesInstanceUID) FROM rel "
                   "WHERE SeriesInstanceUID IS NOT NULL").fetchall()
    bad = [i for i, (study, series) in enumerate(rows) if not study or not series]
    if bad:
        raise ArchiveError(f"{path}: {len(bad)} rows lack a StudyInstanceUID or SeriesInstanceUID")
    return [(study, series) for study, series in rows]


def series_source(endpoint: Endpoint, path: str | os.PathLike | None, params: dict | None = None) -> list[tuple[str, str]]:
    """The series to harvest from ``endpoint``: those of the UID file ``path``, or (None) every series it lists."""
    if params:
        raise ArchiveError("-p/--param applies to saved queries, not to --all or a UID file")
    if path is None:
        return [(s.StudyInstanceUID, s.SeriesInstanceUID) for s in discover_series(endpoint)]
    return read_series_file(path)
