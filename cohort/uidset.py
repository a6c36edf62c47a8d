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

import mmap
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
    table = pa.table({"h": _arrow(hashes[order], pa.uint32()), "uid": pa.array(uids, pa.string()).take(_arrow(order, pa.int64()))})
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, table.schema) as writer:
        writer.write_table(table)
    return table.num_rows


class UidSet:
    """The UIDs of a file written by :func:`write`, memory-mapped (pages are read as they are searched)."""

    _hashes: np.ndarray  # uint32, sorted
    _offsets: np.ndarray  # int32: UID i is _data[_offsets[i]:_offsets[i + 1]]
    _data: memoryview

    def __init__(self, path: str | os.PathLike, rows: int) -> None:
        """Open ``path``; raises OSError (or an Arrow error) unless it holds ``rows`` sorted rows of ours."""
        import numpy as np  # noqa: PLC0415
        import pyarrow as pa  # noqa: PLC0415

        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if hasattr(mapped, "madvise"):  # a lookup reads a few bytes here and there: no read-ahead
            mapped.madvise(mmap.MADV_RANDOM)
        table = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(mapped))).read_all()
        if (table.num_rows != rows or table.schema.names != ["h", "uid"]
                or table.schema.types != [pa.uint32(), pa.string()] or table.column("h").num_chunks != 1):
            raise OSError(f"{path} is not a UID file of {rows} rows")
        hashes = table.column("h").chunk(0)
        if hashes.null_count:
            raise OSError(f"{path} has missing hashes")
        # (np.frombuffer, not Array.to_numpy, which imports pandas: a second on a cold start)
        self._hashes = np.frombuffer(hashes.buffers()[1], dtype=np.uint32, count=len(hashes), offset=hashes.offset * 4)
        strings = table.column("uid").chunk(0)
        if strings.null_count:
            raise OSError(f"{path} has missing UIDs")
        _, offsets, data = strings.buffers()
        self._offsets = np.frombuffer(offsets, dtype=np.int32, count=len(strings) + 1, offset=strings.offset * 4)
        self._data = memoryview(data).cast("B")  # bytes, so that == with bytes is a memcmp
        if rows and (self._hashes[0] > self._hashes[-1] or self._offsets[-1] > len(self._data)
                     or zlib.crc32(self._data[int(self._offsets[0]):int(self._offsets[1])]) != int(self._hashes[0])):
            raise OSError(f"{path} is not a sorted UID file")

    def __len__(self) -> int:
        return len(self._hashes)

    def known(self, uids: Sequence[str]) -> list[bool]:
        """For each UID, whether the file holds exactly that string."""
        import numpy as np  # noqa: PLC0415

        if not uids or not len(self._hashes):
            return [False] * len(uids)
        encoded = [u.encode("utf-8", "surrogatepass") for u in uids]
        wanted = np.fromiter(map(zlib.crc32, encoded), dtype=np.uint32, count=len(encoded))
        at = np.searchsorted(self._hashes, wanted)
        at[at == len(self._hashes)] = 0  # past the end: compared below, never equal unless it is the same UID
        hit = (self._hashes[at] == wanted).tolist()
        # the stored bytes, read through the offsets (Array.take would import pyarrow.compute: 0.3-0.7 s cold)
        starts, ends = self._offsets[at].tolist(), self._offsets[at + 1].tolist()
        data = self._data
        found = [h and data[s:e] == b for h, s, e, b in zip(hit, starts, ends, encoded)]
        for i in [i for i, (h, f) in enumerate(zip(hit, found)) if h and not f]:
            j = int(at[i]) + 1  # another UID with the same hash came first: look at the next ones
            while j < len(self._hashes) and self._hashes[j] == wanted[i]:
                if data[int(self._offsets[j]):int(self._offsets[j + 1])] == encoded[i]:
                    found[i] = True
                    break
                j += 1
        return found


def _arrow(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A numpy array as an Arrow array of ``type_`` (pa.array(ndarray) would import pandas: a second on a cold start)."""
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415

    data = np.ascontiguousarray(values, dtype=np.uint32 if type_ == pa.uint32() else np.int64)
    return pa.Array.from_buffers(type_, len(data), [None, pa.py_buffer(data)])
