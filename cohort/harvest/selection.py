"""Which series a harvest run asks for: the series of the cohort minus those already settled.

A series is settled when its latest final outcome is ``ok``, or ``not_found``/``empty`` *at the
endpoint asked now* (not found there says nothing about another endpoint) and its status is not
named in ``retry``. Series without a final status (``http_error``, ``timeout``, ``malformed``) are
always asked for again. ``ok`` series never are: their instances are in the directory.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import HarvestError
from .store import FINAL_STATUSES, STATUSES, HarvestStore

#: Final statuses that ``retry`` may name: those without instances (an ``ok`` series is never asked
#: for again: its instances are in the directory, and asking again would duplicate them).
RETRYABLE = ("not_found", "empty")


def retry_statuses(retry: Iterable[str]) -> frozenset[str]:
    """The statuses ``retry`` names (a list, or a comma-separated string), checked."""
    if isinstance(retry, str):
        retry = [s for s in retry.split(",") if s.strip()]
    statuses = frozenset(s.strip() for s in retry if s.strip())
    for status in sorted(statuses - set(RETRYABLE)):
        if status == "ok":
            why = "ok series are never asked for again (their instances are kept; harvest into a new directory)"
        elif status in STATUSES:
            why = f"{status} is not final: such series are asked for again on every run anyway"
        else:
            why = f"unknown status {status!r}"
        raise HarvestError(f"retry: {why}; retry takes {' and/or '.join(RETRYABLE)}")
    return statuses


def complete(endpoint: str | None, final: tuple[str, str | None] | None, retry: frozenset[str]) -> bool:
    """Whether a series whose latest outcome is ``final`` (status, endpoint; from
    :meth:`HarvestStore.final_statuses`) is not asked for again."""
    if final is None or final[0] not in FINAL_STATUSES:
        return False
    status, recorded = final
    if status == "ok":
        return True
    return status not in retry and recorded == endpoint  # not found *there*: ask elsewhere


def final_statuses(stores: Iterable[HarvestStore]) -> dict[str, tuple[str, str | None]]:
    """SeriesInstanceUID -> (status, endpoint) of each series' latest counted outcome over ``stores``.

    ``stores`` are a harvest directory and its shards (:func:`.views.harvest_stores`): a series
    settled in any of them is settled (the latest outcome wins, as in one store's
    :meth:`HarvestStore.final_statuses`).
    """
    columns = ["SeriesInstanceUID", "status", "endpoint", "finished_at"]
    table = pa.concat_tables(store.read_log(columns=columns) for store in stores)
    table = table.take(pc.sort_indices(table, [("finished_at", "ascending")]))
    latest: dict[str, tuple[str, str | None]] = {}
    for row in table.select(["SeriesInstanceUID", "status", "endpoint"]).to_pylist():
        latest[row["SeriesInstanceUID"]] = (row["status"], row["endpoint"])
    return latest
