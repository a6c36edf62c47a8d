"""Citations for a cohort's source DOIs, by DOI content negotiation.

``https://doi.org/<doi>`` answers ``Accept: text/x-bibliography; style=apa``
with a formatted reference, ``application/x-bibtex`` with BibTeX and
``application/vnd.citationstyles.csl+json`` with CSL JSON (the formats of
idc-index's ``citations_from_selection``: ``citation_format`` APA, BIBTEX, JSON);
``style`` is ``"apa"`` (default), ``"bibtex"``, ``"json"`` or any CSL style name. Answers are cached on disk (one file per DOI and
style), so a manifest written again, or offline after a first run, cites the
same text. When the resolver cannot be reached the DOIs are still listed and
the result says that the citation step was skipped, and why.

IDC asks users to cite its own paper too: :data:`IDC_DOI` is always included.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import requests

from ._text import short_error

log = logging.getLogger(__name__)

#: Fedorov et al., "National Cancer Institute Imaging Data Commons", RadioGraphics 2023.
IDC_DOI = "10.1148/rg.230180"
DOI_RESOLVER = "https://doi.org"
#: Content types of the formats that are not a CSL style rendered as text.
FORMATS = {"bibtex": "application/x-bibtex", "json": "application/vnd.citationstyles.csl+json"}


def accept_header(style: str) -> str:
    """The ``Accept`` header that asks the DOI resolver for ``style``."""
    return FORMATS.get(style.lower(), f"text/x-bibliography; style={style}")


class CitationStatus(str, enum.Enum):
    FETCHED = "fetched"
    CACHED = "cached"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Citation:
    """One DOI and, unless the step was skipped, its formatted reference."""

    doi: str
    status: CitationStatus
    text: str | None = None
    #: why the citation was skipped (resolver unreachable, HTTP error, not requested)
    reason: str | None = None

    @property
    def url(self) -> str:
        return f"https://doi.org/{self.doi}"


@dataclass(frozen=True)
class Citations:
    """The citations of a set of DOIs, in DOI order, IDC's paper first."""

    items: tuple[Citation, ...]
    style: str

    @property
    def dois(self) -> list[str]:
        return [c.doi for c in self.items]

    @property
    def skipped(self) -> list[Citation]:
        return [c for c in self.items if c.status is CitationStatus.SKIPPED]

    @property
    def summary(self) -> str:
        """One line: how many were fetched, cached or skipped (and why)."""
        counts = {s: sum(c.status is s for c in self.items) for s in CitationStatus}
        text = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
        reasons = sorted({c.reason for c in self.skipped if c.reason})
        return f"{len(self.items)} DOIs: {text}" + (f" ({'; '.join(reasons)})" if reasons else "")

    def render(self) -> str:
        """The citations as one text: references (or BibTeX entries) separated by blank lines, or for
        ``json`` a JSON array of CSL items. Skipped DOIs are listed as such (not in JSON: see :attr:`skipped`)."""
        if self.style.lower() == "json":
            return json.dumps([json.loads(c.text) for c in self.items if c.text], indent=1, ensure_ascii=False)
        return "\n\n".join(c.text if c.text else f"{c.url} (not fetched: {c.reason})" for c in self.items)

    def to_dict(self) -> dict:
        return {
            "style": self.style,
            "summary": self.summary,
            "items": [
                {"doi": c.doi, "url": c.url, "status": c.status.value, "text": c.text, "reason": c.reason}
                for c in self.items
            ],
        }


def normalize_doi(doi: str) -> str:
    """``https://doi.org/10.1/X`` or ``doi:10.1/X`` -> ``10.1/x`` (DOIs are case-insensitive)."""
    doi = doi.strip()
    for prefix in ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "doi:"):
        if doi.lower().startswith(prefix):
            doi = doi[len(prefix):]
    return doi.lower()


def cite(
    dois: Iterable[str],
    *,
    style: str = "apa",
    resolver: str = DOI_RESOLVER,
    timeout: float = 5,
    cache_dir: str | os.PathLike | None = None,
    fetch: bool = True,
) -> Citations:
    """Formatted citations of ``dois`` plus IDC's paper, from the cache or the DOI resolver.

    ``fetch=False`` uses only the cache. After the first connection failure the
    remaining DOIs are not tried (each would wait for the same timeout); an HTTP
    error (an unregistered DOI) skips only that DOI.
    """
    wanted = list(dict.fromkeys([IDC_DOI] + sorted({normalize_doi(d) for d in dois if d and d.strip()})))
    cache = Path(cache_dir) if cache_dir else Path(platformdirs.user_cache_dir("idc-cohort")) / "citations"
    offline_reason = None if fetch else "fetching not requested"
    items = []
    with requests.Session() as session:
        for doi in wanted:
            cached = _cache_file(cache, doi, style)
            if cached.is_file():
                items.append(Citation(doi, CitationStatus.CACHED, cached.read_text(encoding="utf-8")))
                continue
            if offline_reason:
                items.append(Citation(doi, CitationStatus.SKIPPED, reason=offline_reason))
                continue
            try:
                text = _fetch(session, resolver, doi, style, timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                offline_reason = f"DOI resolver {resolver} unreachable ({type(exc).__name__})"
                log.info("citations skipped: %s", offline_reason)
                items.append(Citation(doi, CitationStatus.SKIPPED, reason=offline_reason))
                continue
            except requests.RequestException as exc:
                items.append(Citation(doi, CitationStatus.SKIPPED, reason=short_error(exc, 200)))
                continue
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(".part")
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, cached)
            except OSError as exc:  # the citation is still good; it is only not kept for next time
                log.warning("citation of %s not cached in %s: %s", doi, cache, exc.strerror or exc)
            items.append(Citation(doi, CitationStatus.FETCHED, text))
    return Citations(tuple(items), style)


def _fetch(session: requests.Session, resolver: str, doi: str, style: str, timeout: float) -> str:
    response = session.get(
        f"{resolver.rstrip('/')}/{doi}",
        headers={"Accept": accept_header(style), "User-Agent": "idc-cohort"},
        timeout=timeout,
    )
    response.raise_for_status()
    charset = "charset=" in response.headers.get("Content-Type", "").lower()
    text = response.content.decode(response.encoding if charset else "utf-8", errors="replace").strip()
    if not text:
        raise requests.RequestException(f"empty citation from {response.url}")
    if style.lower() == "json":
        try:
            json.loads(text)
        except ValueError:
            raise requests.RequestException(f"the CSL JSON from {response.url} is not JSON") from None
    return text


def dois_of(cohort) -> list[str]:
    """The distinct source DOIs of a cohort's series (idc-index's ``source_DOI``)."""
    return cohort.sql(
        "SELECT DISTINCT source_DOI FROM cohort WHERE source_DOI IS NOT NULL ORDER BY 1").column(0).to_pylist()


def _cache_file(cache: Path, doi: str, style: str) -> Path:
    key = hashlib.sha256(f"{style}\n{doi}".encode()).hexdigest()[:32]
    return cache / f"{key}.txt"

