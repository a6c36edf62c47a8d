"""A file of every SeriesInstanceUID of the index, for checking 1,000 UIDs in about a millisecond.

DuckDB answers "which of these 1,000 UIDs exist?" in tens of milliseconds even with an ART
index (a join per query, then a row fetched per UID). This file answers it with a binary
search in memory-mapped arrays: an Arrow IPC file with two columns,

* ``h``: the CRC-32 of each UID's UTF-8 bytes (``zlib.crc32``), sorted;
* ``uid``: the UID itself, in the same order.

A UID is known when its hash is found *and* a UID stored under that hash is the same string, so
a hash collision (a few hundred pairs among a million UIDs) can never make an unknown UID known. The file is written next to the local copy
(:mod:`cohort.localcopy`), from the copy's own tables, and checked when it is opened (row count,
column types, sorted hashes at both ends); a file that fails the check is not used.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pyarrow as pa


def uid_hash(uid: str) -> int:
    """The CRC-32 of the UID's UTF-8 bytes."""
    return zlib.crc32(uid.encode("utf-8", "surrogatepass"))


def write(con: duckdb.DuckDBPyConnection, uids_sql: str, path: Path) -> int:
    """Write the UIDs that ``uids_sql`` (one column) returns to ``path``; return the row count."""
    import numpy as np  # noqa: PLC0415 - keeps `import cohort` light
    import pyarrow as pa  # noqa: PLC0415

    uids = list(dict.fromkeys(con.execute(uids_sql).to_arrow_table().column(0).to_pylist()))  # each UID once
    hashes = np.fromiter((uid_hash(u) for u in uids), dtype=np.uint32, count=len(uids))
    order = np.argsort(hashes, kind="stable")
    table = pa.table({"h": pa.array(hashes[order], pa.uint32()), "uid": pa.array(uids, pa.string()).take(pa.array(order))})
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, table.schema) as writer:
        writer.write_table(table)
    return table.num_rows


class UidSet:
    """The UIDs of a file written by :func:`write`, memory-mapped (pages are read as they are searched)."""

    _hashes: np.ndarray
    _uids: pa.Array

    def __init__(self, path: str | os.PathLike, rows: int) -> None:
        """Open ``path``; raises OSError (or an Arrow error) unless it holds ``rows`` sorted rows of ours."""
        import pyarrow as pa  # noqa: PLC0415

        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        if (table.num_rows != rows or table.schema.names != ["h", "uid"]
                or table.schema.types != [pa.uint32(), pa.string()] or table.column("h").num_chunks != 1):
            raise OSError(f"{path} is not a UID file of {rows} rows")
        self._hashes = table.column("h").chunk(0).to_numpy()
        self._uids = table.column("uid").chunk(0)
        ends = self._hashes[[0, -1]] if rows else self._hashes
        if rows and (ends[0] > ends[1] or uid_hash(self._uids[0].as_py()) != int(ends[0])):
            raise OSError(f"{path} is not sorted by hash")

    def __len__(self) -> int:
        return len(self._hashes)

    def known(self, uids: Sequence[str]) -> list[bool]:
        """For each UID, whether the file holds exactly that string."""
        import numpy as np  # noqa: PLC0415
        import pyarrow as pa  # noqa: PLC0415

        if not uids or not len(self._hashes):
            return [False] * len(uids)
        wanted = np.fromiter((uid_hash(u) for u in uids), dtype=np.uint32, count=len(uids))
        at = np.searchsorted(self._hashes, wanted)
        at[at == len(self._hashes)] = 0  # past the end: compared below, never equal unless it is the same UID
        hit = (self._hashes[at] == wanted).tolist()
        stored = self._uids.take(pa.array(at)).to_pylist()
        found = [h and s == u for h, s, u in zip(hit, stored, uids)]
        for i in [i for i, (h, f) in enumerate(zip(hit, found)) if h and not f]:
            j = int(at[i]) + 1  # another UID with the same hash came first: look at the next ones
            while j < len(self._hashes) and self._hashes[j] == wanted[i]:
                if self._uids[j].as_py() == uids[i]:
                    found[i] = True
                    break
                j += 1
        return found
