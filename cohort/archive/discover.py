"""Every study and series of a DICOMweb server, found through QIDO-RS within the server's caps.

Studies are paged with ``limit``/``offset`` (``limit`` at most :data:`MAX_LIMIT`,
Google's cap for studies and series). A server also caps ``offset`` (Google:
1,000,000); when paging reaches :data:`MAX_OFFSET` the search is narrowed by
``StudyDate`` ranges, split in halves until each range pages within the cap
(studies without a StudyDate are then asked for once more, unnarrowed; a
server holding more than the cap of undated studies cannot be listed whole,
which is reported). Then each study's series are paged the same way.

Each request goes through :func:`cohort.retry.get` (retries on 429/5xx with
Retry-After, a shared rate limit).
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from ..endpoints import Endpoint
from ..errors import ArchiveError
from ..retry import RateLimiter, RetryPolicy, get

log = logging.getLogger(__name__)

#: Google's caps: QIDO limit for studies/series, and the largest offset.
MAX_LIMIT = 5000
MAX_OFFSET = 1_000_000
_STUDY_UID, _SERIES_UID, _STUDY_DATE, _MODALITY = "0020000D", "0020000E", "00080020", "00080060"
_ACCEPT = {"Accept": "application/dicom+json, application/json"}
_FIRST_DAY, _LAST_DAY = _dt.date(1900, 1, 1), _dt.date(2099, 12, 31)


@dataclass(frozen=True)
class DiscoveredSeries:
    """One series the server lists."""

    StudyInstanceUID: str
    SeriesInstanceUID: str
    Modality: str | None


class _Search:
    def __init__(self, endpoint: Endpoint, limit: int, max_offset: int, policy: RetryPolicy,
                 rate: float | None) -> None:
        self.endpoint, self.limit, self.max_offset, self.policy = endpoint, min(limit, MAX_LIMIT), max_offset, policy
        self.session = endpoint.session()
        self.limiter = RateLimiter(rate, burst=1) if rate else None
        self.requests = 0

    def page(self, path: str, params: dict) -> list[dict]:
        url = self.endpoint.url.rstrip("/") + path
        done = get(self.session, url, policy=self.policy, limiter=self.limiter, headers=_ACCEPT, params=params)
        self.requests += 1
        response = done.response
        if response is None:
            raise ArchiveError(f"QIDO {url} failed after {done.attempts} attempts: {done.error}; check the URL "
                               "and the server, then run the same command again")
        if response.status_code == 204:
            return []
        if response.status_code != 200:
            raise ArchiveError(f"QIDO {response.url} answered HTTP {response.status_code}: "
                               f"{response.text[:200]!r}; check the URL and --auth")
        try:
            body = response.json()
        except ValueError:
            raise ArchiveError(f"QIDO {response.url} did not answer JSON ({response.text[:120]!r})") from None
        if not isinstance(body, list):
            raise ArchiveError(f"QIDO {response.url} answered {type(body).__name__}, not a JSON array of datasets")
        return [d for d in body if isinstance(d, dict)]

    def paged(self, path: str, params: dict) -> tuple[list[dict], bool]:
        """All results of one search, and whether paging hit the offset cap (so results may be missing)."""
        out: list[dict] = []
        offset = 0
        while True:
            page = self.page(path, {**params, "limit": self.limit, "offset": offset})
            out.extend(page)
            if not page:
                return out, False
            offset += len(page)
            if offset >= self.max_offset:
                return out, True


def _value(dataset: dict, tag: str) -> str | None:
    values = (dataset.get(tag) or {}).get("Value") or []
    return str(values[0]) if values and values[0] is not None else None


def _studies(search: _Search, start: _dt.date, end: _dt.date, depth: int = 0) -> Iterator[dict]:
    params = {"includefield": _STUDY_DATE}
    if (start, end) != (_FIRST_DAY, _LAST_DAY):
        params["StudyDate"] = f"{start:%Y%m%d}-{end:%Y%m%d}"
    found, capped = search.paged("/studies", params)
    if not capped:
        yield from found
        return
    if start == end:
        raise ArchiveError(f"more than {search.max_offset:,} studies on {start} at {search.endpoint.url}: "
                           "QIDO cannot list them all (offset cap)")
    middle = start + (end - start) // 2
    log.info("studies %s..%s: offset cap reached, narrowing by StudyDate", start, end)
    yield from _studies(search, start, middle, depth + 1)
    yield from _studies(search, middle + _dt.timedelta(days=1), end, depth + 1)
    if depth == 0:  # studies without a StudyDate match no range: keep those the unnarrowed pages listed
        yield from (study for study in found if _value(study, _STUDY_DATE) is None)


def discover_series(endpoint: Endpoint, *, limit: int = MAX_LIMIT, max_offset: int = MAX_OFFSET,
                    policy: RetryPolicy | None = None, rate: float | None = None) -> list[DiscoveredSeries]:
    """Every series ``endpoint`` lists (each once, in study order)."""
    if limit < 1 or max_offset < 1:
        raise ArchiveError(f"limit ({limit}) and max_offset ({max_offset}) must be at least 1")
    search = _Search(endpoint, limit, max_offset, policy or RetryPolicy(), rate)
    seen: set[str] = set()
    out: list[DiscoveredSeries] = []
    studies = {}
    for study in _studies(search, _FIRST_DAY, _LAST_DAY):
        uid = _value(study, _STUDY_UID)
        if uid:
            studies.setdefault(uid, study)
    for study_uid in studies:
        series, capped = search.paged(f"/studies/{study_uid}/series", {"includefield": _MODALITY})
        if capped:
            raise ArchiveError(f"study {study_uid} at {endpoint.url} has more than {max_offset:,} series")
        for s in series:
            uid = _value(s, _SERIES_UID)
            if uid and uid not in seen:
                seen.add(uid)
                out.append(DiscoveredSeries(study_uid, uid, _value(s, _MODALITY)))
    log.info("discovered %d series in %d studies at %s with %d QIDO requests", len(out), len(studies),
             endpoint.url, search.requests)
    return out
