"""Compare an archive's derived table with IDC's own (e.g. a downloaded ``sm_index.parquet``), series by series.

One row per difference: a series only one side has, or a column whose values
differ. Lists are compared as sorted lists (IDC's preparation arrays come in no
fixed order), doubles to 9 significant digits; NULL equals NULL.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa

from .._text import sql_literal
from ..errors import ArchiveError
from .build import build_archive, quiet_connection
from .derive import DERIVED, duckdb_type, schema

#: The columns that identify a row of each table.
KEYS = {"index": "SeriesInstanceUID", "sm_index": "SeriesInstanceUID", "sm_instance_index": "SOPInstanceUID",
        "ct_index": "SeriesInstanceUID", "mr_index": "SeriesInstanceUID", "pt_index": "SeriesInstanceUID"}
#: Columns IDC fills from its own records (buckets, UUIDs, sizes, versions): not comparable with DICOM.
IDC_ONLY = {"collection_id", "analysis_result_id", "source_DOI", "license_short_name", "series_init_idc_version",
            "series_revised_idc_version", "aws_bucket", "crdc_series_uuid", "series_aws_url", "series_size_MB",
            "instance_size", "crdc_instance_uuid"}


def _normal(column: dict, ref: str) -> str:
    kind = duckdb_type(column)
    if kind.endswith("[]"):
        return f"list_sort(CAST({ref} AS {kind}))"
    if kind == "DOUBLE":
        return f"CAST(round(CAST({ref} AS DOUBLE), 9 - CAST(ceil(log10(abs(nullif(CAST({ref} AS DOUBLE), 0)))) AS INTEGER)) AS VARCHAR)"
    return f"CAST({ref} AS {kind})"


def compare(harvest_dir: str | os.PathLike, reference: str | os.PathLike, table: str = "sm_index",
            only_common: bool = False) -> pa.Table:
    """Differences between the archive's ``table`` and the Parquet file ``reference`` of IDC's.

    Columns: key (SeriesInstanceUID or SOPInstanceUID), ``column``, ``archive``, ``reference``, ``status``
    (``differs``, ``only_in_archive``, ``only_in_reference``). ``only_common`` leaves out series one side lacks
    (a reference of all IDC against an archive of a few slides).
    """
    if table not in DERIVED:
        raise ArchiveError(f"no derived table {table!r}; compare one of {', '.join(DERIVED)}")
    path = Path(reference)
    if not path.is_file():
        raise ArchiveError(f"reference {path} is not a file; give IDC's {table}.parquet "
                           f"(`cohort fetch {table}` downloads it)")
    archive = build_archive(harvest_dir)
    key = KEYS[table]
    con = quiet_connection()
    con.execute(f"CREATE VIEW a AS SELECT * FROM read_parquet({sql_literal(str(archive.path(table)))})")
    try:
        con.execute(f"CREATE VIEW r AS SELECT * FROM read_parquet({sql_literal(str(path))})")
        ref_columns = {name for name, *_ in con.execute("DESCRIBE r").fetchall()}
    except duckdb.Error as exc:
        raise ArchiveError(f"reference {path} is not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    if key not in ref_columns:
        raise ArchiveError(f"reference {path} has no {key} column; is it IDC's {table}?")
    parts = []
    for column in schema(table):
        name = column["name"]
        if name == key or name in IDC_ONLY or name not in ref_columns:
            continue
        left, right = _normal(column, f'a."{name}"'), _normal(column, f'r."{name}"')
        parts.append(f"SELECT {key}, '{name}' AS \"column\", CAST(a.\"{name}\" AS VARCHAR) AS archive, "
                     f"CAST(r.\"{name}\" AS VARCHAR) AS reference, 'differs' AS status "
                     f"FROM a JOIN r USING ({key}) WHERE {left} IS DISTINCT FROM {right}")
    if not only_common:
        parts.append(f"SELECT {key}, NULL, NULL, NULL, 'only_in_archive' FROM a WHERE {key} NOT IN (SELECT {key} FROM r)")
        parts.append(f"SELECT {key}, NULL, NULL, NULL, 'only_in_reference' FROM r "
                     f"WHERE {key} NOT IN (SELECT {key} FROM a)")
    if not parts:
        return pa.table({key: pa.array([], pa.string())})
    return con.execute(" UNION ALL ".join(parts) + f" ORDER BY {key}, 2").to_arrow_table()
