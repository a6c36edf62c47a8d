"""Coverage: which DICOMweb endpoint serves each series of a cohort, and why.

Two public services serve IDC series over DICOMweb:

* the **IDC proxy**: no login, every bucket, but only the **current** revision
  of each series (the release of the installed index), with daily quotas;
* the **Google Healthcare store** ``idc-store-vN`` of release N: Google login,
  only series whose files are in the ``idc-open-data`` bucket, and it serves
  each series **as it was in release N**. A store appears 1–2 weeks after its
  release and older stores stay, so N runs from ``first_google_store`` to the
  *newest store*: ``newest_google_store`` when given, else found by probing
  (``discover=True``), else the index's release minus ``lag`` (default 1, the
  safe choice: a too-old store only sends the newest revisions to the proxy).

Each series has revisions: the ``index`` row (made in
``series_revised_idc_version``, current ever since) and ``prior_versions_index``
rows (made in ``min_idc_version``, last in ``max_idc_version``), each with its
own ``aws_bucket``. Whether a Google store holds a revision is decided by that
revision's ``aws_bucket`` (``idc-open-data``: yes; ``idc-open-data-cr`` and
``idc-open-data-two``: no). A policy picks the revision wanted and the endpoint:

* **prefer Google** (the default when Google credentials are configured): the
  current revision from the newest store when it is in ``idc-open-data`` and
  was made no later than that store, else from the proxy (reason: the bucket
  is not replicated, or the revision is newer than the newest store);
* **prefer the proxy**: every current series from the proxy;
* **pinned to release P**: the revision each series had in P, from
  ``idc-store-vP`` when that revision is in ``idc-open-data`` and the store
  exists; else from the proxy when that revision is still the current one;
  else *unavailable* (nobody serves the series as of P). ``proxy_differs``
  marks the series for which the proxy would serve other data (a later
  revision) or nothing;
* **an explicit endpoint** (Orthanc, dcm4chee, ...): every series there.

A series that is only in ``prior_versions_index`` (no longer in the current
release) is routed by its own newest revision: the proxy cannot serve it, so
it goes to the newest store within that revision's releases when its bucket is
``idc-open-data``, and is *unavailable* otherwise, under either preference.

:func:`route` makes these decisions for the whole cohort in one DuckDB query;
:func:`verify` asks the chosen endpoints whether they really have the series.
"""

from __future__ import annotations

import enum
import html
import logging
import random
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .endpoints import (
    GOOGLE_STORE_BUCKETS,
    Auth,
    Endpoint,
    google_credentials_available,
    google_store,
    idc_proxy,
)
from ._text import sql_literal
from .errors import CoverageError, EndpointError
from .releases import DEFAULT_LAG, default_newest_store
from .retry import RateLimiter, RetryPolicy, get

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from .cohort import Cohort

log = logging.getLogger(__name__)

UNAVAILABLE = "unavailable"
#: The first release with a Google store.
FIRST_GOOGLE_STORE = 1
#: Stores probed by :func:`discover_newest_store`, newest first.
MAX_PROBES = 4


class PolicyKind(str, enum.Enum):
    PREFER_GOOGLE = "google"
    PREFER_PROXY = "proxy"
    PINNED = "pinned"
    ENDPOINT = "endpoint"


@dataclass(frozen=True)
class Policy:
    """How to route: prefer Google, prefer the proxy, pin a release, or one explicit endpoint."""

    kind: PolicyKind
    #: The pinned IDC release (``PINNED`` only).
    release: int | None = None
    #: The endpoint every series goes to (``ENDPOINT`` only).
    endpoint: Endpoint | None = None

    def __post_init__(self) -> None:
        if (self.kind is PolicyKind.PINNED) != (self.release is not None):
            raise CoverageError("a pinned policy needs a release, and only a pinned policy has one: "
                                "use Policy.pinned(N)")
        if (self.kind is PolicyKind.ENDPOINT) != (self.endpoint is not None):
            raise CoverageError("an endpoint policy needs an endpoint, and only it has one: "
                                "use Policy.explicit(cohort.custom(URL))")

    @classmethod
    def pinned(cls, release: int) -> Policy:
        return cls(PolicyKind.PINNED, release=int(release))

    @classmethod
    def explicit(cls, endpoint: Endpoint) -> Policy:
        return cls(PolicyKind.ENDPOINT, endpoint=endpoint)

    @classmethod
    def parse(cls, value: Policy | PolicyKind | Endpoint | str | int) -> Policy:
        """A policy from ``"google"``, ``"proxy"``, a release number (pinned), an Endpoint or a Policy."""
        if isinstance(value, Policy):
            return value
        if isinstance(value, Endpoint):
            return cls.explicit(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return cls.pinned(value)
        if isinstance(value, PolicyKind) and value in (PolicyKind.PREFER_GOOGLE, PolicyKind.PREFER_PROXY):
            return cls(value)
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("google", "proxy"):
                return cls(PolicyKind(text))
            if text.lstrip("v").isdigit():
                return cls.pinned(int(text.lstrip("v")))
        raise CoverageError(f"unknown routing policy {value!r}: use 'google', 'proxy', a release number "
                            "to pin (e.g. 'v9'), or an Endpoint")

    def __str__(self) -> str:
        if self.kind is PolicyKind.PINNED:
            return f"pinned to v{self.release}"
        if self.kind is PolicyKind.ENDPOINT:
            return f"explicit endpoint {self.endpoint.name}"  # type: ignore[union-attr]
        return f"prefer {self.kind.value}"


PREFER_GOOGLE = Policy(PolicyKind.PREFER_GOOGLE)
PREFER_PROXY = Policy(PolicyKind.PREFER_PROXY)


def default_policy() -> Policy:
    """Prefer Google when Google credentials are configured on this machine, else the proxy."""
    return PREFER_GOOGLE if google_credentials_available() else PREFER_PROXY


# -- routing --------------------------------------------------------------------
#: The series to route, one row each: its newest revision, the release that made it and the last that has it.
#: Current series: those of ``index`` that the cohort names (a semi-join: each index row at most once).
_CURRENT_SERIES = """
    SELECT SeriesInstanceUID, StudyInstanceUID, collection_id, aws_bucket, series_size_MB,
           series_init_idc_version AS first_version, series_revised_idc_version AS made,
           $current::INTEGER AS last, true AS in_current_release
    FROM index SEMI JOIN _uids USING (SeriesInstanceUID)
"""
#: Series no longer in the current release (``_uids`` then holds only UIDs that ``index`` lacks).
_PRIOR_SERIES = """
    SELECT SeriesInstanceUID, StudyInstanceUID, collection_id, aws_bucket, series_size_MB,
           min(min_idc_version) OVER (PARTITION BY SeriesInstanceUID) AS first_version,
           min_idc_version AS made, max_idc_version AS last, false AS in_current_release
    FROM prior_versions_index SEMI JOIN _uids USING (SeriesInstanceUID)
    QUALIFY row_number() OVER (PARTITION BY SeriesInstanceUID ORDER BY max_idc_version DESC) = 1
"""
#: The cohort's UIDs that ``index`` lacks (only asked when the current series do not cover the cohort).
_MISSING_SQL = "SELECT DISTINCT SeriesInstanceUID FROM _uids ANTI JOIN index USING (SeriesInstanceUID)"

_ROUTE_SQL = """
WITH series AS (@SERIES@),
at_pin AS (
    -- the earlier revision each series had in the pinned release (nothing when not pinned)
    SELECT SeriesInstanceUID, aws_bucket, series_size_MB, min_idc_version AS made, max_idc_version AS last
    FROM prior_versions_index
    WHERE @PINNED@ AND $pin BETWEEN min_idc_version AND max_idc_version  -- @PINNED@: false unless pinned
),
wanted AS (
    -- the revision the policy wants: the newest, or the one current in the pinned release
    SELECT s.SeriesInstanceUID, s.StudyInstanceUID, s.collection_id, s.first_version, s.in_current_release,
           s.made AS newest_made, s.last AS series_last,
           $pin IS NULL OR $pin BETWEEN s.made AND s.last AS is_newest,
           CASE WHEN is_newest THEN s.aws_bucket ELSE p.aws_bucket END AS aws_bucket,
           CASE WHEN is_newest THEN s.series_size_MB ELSE p.series_size_MB END AS series_size_MB,
           CASE WHEN is_newest THEN s.made ELSE p.made END AS made,
           CASE WHEN is_newest THEN s.last ELSE p.last END AS last
    FROM series s LEFT JOIN at_pin p USING (SeriesInstanceUID)
),
decided AS (
    SELECT *,
        made IS NOT NULL AND is_newest AND in_current_release AS proxy_ok,
        -- (least/greatest skip NULLs: $newest IS NULL, no Google store, is checked first)
        coalesce($pin, CASE WHEN $newest IS NOT NULL THEN least(last, $newest) END) AS store,
        made IS NOT NULL AND $newest IS NOT NULL AND list_contains($google_buckets, aws_bucket)
            AND store BETWEEN greatest(made, $first) AND least(last, $newest) AS google_ok,
        NOT list_contains($google_buckets, aws_bucket) AS not_replicated,
        CASE WHEN first_version = made THEN 'added' ELSE 'revised' END AS verb
    FROM wanted
),
routed AS (
    SELECT *,
        CASE WHEN $mode = 'endpoint' THEN $custom_name
             WHEN $mode = 'proxy' AND proxy_ok THEN 'idc-proxy'
             WHEN google_ok THEN $store_names[store]
             WHEN proxy_ok THEN 'idc-proxy'
             ELSE 'unavailable' END AS endpoint
    FROM decided
)
SELECT SeriesInstanceUID, StudyInstanceUID, collection_id, aws_bucket, series_size_MB, in_current_release,
    made AS revision_version,
    endpoint,
    CASE WHEN endpoint = 'unavailable' THEN NULL
         WHEN $mode = 'endpoint' THEN $custom_url
         WHEN endpoint = 'idc-proxy' THEN $proxy_url
         ELSE $store_urls[store] END  -- the endpoint's URL; not a column of its own (1 M copies cost 0.25 s)
        || '/studies/' || StudyInstanceUID || '/series/' || SeriesInstanceUID AS series_url,
    CASE WHEN $mode = 'endpoint' OR endpoint = 'unavailable' THEN NULL
         WHEN endpoint = 'idc-proxy' THEN $current::INTEGER
         ELSE store END AS served_version,
    NOT proxy_ok AS proxy_differs,
    -- (|| rather than format(): a third of the cost on a million rows; no value below is NULL where it is used)
    CASE
    WHEN $mode = 'endpoint' THEN 'explicit endpoint ' || $custom_name
    -- pinned to a release
    WHEN $pin IS NOT NULL AND made IS NULL THEN
        CASE WHEN first_version > $pin THEN 'not in IDC v' || $pin || ': first released after v' || $pin
             WHEN series_last < $pin THEN 'not in IDC v' || $pin || ': removed after v' || series_last
             ELSE 'not in IDC v' || $pin END
    WHEN $pin IS NOT NULL AND endpoint <> 'idc-proxy' AND endpoint <> 'unavailable' THEN
        CASE WHEN proxy_ok THEN 'pinned to v' || $pin || ': ' || endpoint || ' serves v' || $pin
                                || ', the same revision as the proxy'
             WHEN in_current_release THEN 'pinned to v' || $pin || ': the proxy serves the current revision, made in v' || newest_made
                                          || '; ' || endpoint || ' serves v' || $pin
             ELSE 'pinned to v' || $pin || ': removed after v' || series_last || ', so not on the proxy; '
                  || endpoint || ' serves v' || $pin END
    WHEN $pin IS NOT NULL THEN 'pinned to v' || $pin || ': ' ||
        CASE WHEN not_replicated THEN 'its v' || $pin || ' revision is in bucket ' || aws_bucket
                                      || ', not replicated to Google'
             WHEN $newest IS NULL OR $pin > $newest THEN 'idc-store-v' || $pin || ' is not available (newest Google '
                                                          || 'store: ' || coalesce('v' || $newest, 'none') || ')'
             ELSE 'Google stores start at v' || $first END ||
        CASE WHEN proxy_ok THEN '; the proxy serves it, as the current revision is the same'
             WHEN in_current_release THEN ', and the proxy serves only the current revision, made in v' || newest_made
             ELSE ', and it left IDC after v' || series_last END
    -- the newest revision
    WHEN NOT in_current_release THEN 'not in the current release v' || $current || ' (last in v' || last || '); ' ||
        CASE WHEN endpoint <> 'unavailable' THEN endpoint || ' serves its v' || made || ' revision'
             WHEN not_replicated THEN 'bucket ' || aws_bucket || ' is not replicated to Google'
             ELSE 'no Google store holds it (newest: ' || coalesce('v' || $newest, 'none') || ')' END
    WHEN endpoint = 'idc-proxy' AND $mode = 'proxy' THEN
        'policy prefers the proxy, which serves the current release v' || $current
    WHEN endpoint = 'idc-proxy' THEN
        CASE WHEN not_replicated THEN 'bucket ' || aws_bucket || ' is not replicated to Google'
             WHEN $newest IS NULL THEN 'no Google store is available'
             ELSE verb || ' in v' || made || ', newest Google store is v' || $newest END
    ELSE 'in idc-open-data and not revised after v' || $newest || ', the newest Google store'
    END AS reason
FROM routed
"""

ROUTE_COLUMNS = (
    "SeriesInstanceUID", "StudyInstanceUID", "collection_id", "aws_bucket", "series_size_MB", "in_current_release",
    "revision_version", "endpoint", "series_url", "served_version", "proxy_differs", "reason",
)


def route(
    cohort: Cohort,
    policy: Policy | Endpoint | str | int | None = None,
    *,
    newest_google_store: int | None = None,
    lag: int = DEFAULT_LAG,
    first_google_store: int = FIRST_GOOGLE_STORE,
    discover: bool = False,
    google_auth: Auth | None = None,
) -> CoverageReport:
    """Route every series of ``cohort`` to an endpoint under ``policy`` (see the module docstring).

    ``policy``: a :class:`Policy`, ``"google"``, ``"proxy"``, a release number to pin, or an
    :class:`~cohort.endpoints.Endpoint` for everything; default :func:`default_policy`.
    The newest Google store is ``newest_google_store`` if given, else the newest found by
    :func:`discover_newest_store` when ``discover`` (needs Google credentials), else the
    index's release minus ``lag``. ``google_auth`` authenticates the stores (default: Google
    application-default credentials).
    """
    pol = default_policy() if policy is None else Policy.parse(policy)
    current = cohort.catalog.idc_version
    if first_google_store < 1:
        raise CoverageError(f"first_google_store must be 1 or later, got {first_google_store}")
    if newest_google_store is None:
        if discover:
            newest_google_store = discover_newest_store(
                current, first=first_google_store, store=lambda n: google_store(n, google_auth))
        else:
            newest_google_store = default_newest_store(current, lag)
    if newest_google_store is not None and newest_google_store > current:
        raise CoverageError(f"newest Google store v{newest_google_store} is newer than the index (IDC v{current}); "
                            "update idc-index-data or give a store no newer than the index")
    has_store = newest_google_store is not None and newest_google_store >= first_google_store
    newest = newest_google_store if has_store else None
    if pol.release is not None and not 1 <= pol.release <= current:
        raise CoverageError(f"cannot pin release v{pol.release}: the index is IDC v{current}, so pin 1 to {current}")
    custom_endpoint = pol.endpoint
    params = {
        "current": current, "newest": newest, "first": first_google_store, "pin": pol.release,
        "mode": "pinned" if pol.kind is PolicyKind.PINNED else pol.kind.value,
        "google_buckets": sorted(GOOGLE_STORE_BUCKETS), "proxy_url": idc_proxy().url,
        "store_urls": [google_store(n).url for n in range(1, current + 1)],  # $store_urls[n]: store vN
        "store_names": [google_store(n).name for n in range(1, current + 1)],
        "custom_name": custom_endpoint.name if custom_endpoint else None,
        "custom_url": custom_endpoint.url if custom_endpoint else None,
    }
    routes = _route_rows(cohort, params)
    endpoints: dict[str, Endpoint] = {}
    for name in routes.column("endpoint").unique().to_pylist():
        if name == UNAVAILABLE:
            continue
        if custom_endpoint is not None:
            endpoints[name] = custom_endpoint
        elif name == "idc-proxy":
            endpoints[name] = idc_proxy()
        else:
            endpoints[name] = google_store(int(name.removeprefix("idc-store-v")), google_auth)
    log.info("routed %d series (%s, newest Google store %s)", routes.num_rows, pol, newest)
    return CoverageReport(routes, endpoints, pol, current, newest)


def _route_sql(series: str, params: Mapping[str, Any]) -> str:
    """The routing query over ``series`` with the parameters written in as literals.

    Literals, not bound parameters: DuckDB then folds the policy's CASE branches away when it
    plans the query, instead of testing ``$mode``, ``$pin`` ... on each of a million rows; and the
    pinned-revision lookup is left out (``false``) unless pinned. The values are ours (numbers,
    endpoint names and URLs), written with :func:`sql_value`.
    """
    sql = _ROUTE_SQL.replace("@SERIES@", series).replace("@PINNED@", "false" if params["pin"] is None else "true")
    return re.sub(r"\$([a-z_]+)", lambda m: sql_value(params[m.group(1)]), sql)


def sql_value(value: Any) -> str:
    """A DuckDB literal for None, a bool, an int, a string or a list of them."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return sql_literal(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(sql_value(v) for v in value) + "]"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def _route_rows(cohort: Cohort, params: dict[str, Any]) -> pa.Table:
    """The routes table: the current series in one query; series only in prior_versions_index in a
    second one, run only when the current series do not account for every UID of the cohort."""
    import pyarrow as pa  # noqa: PLC0415 - keeps `import cohort` light
    import pyarrow.compute as pc  # noqa: PLC0415

    catalog = cohort.catalog
    uids = cohort.result.select(["SeriesInstanceUID"])
    routes = catalog.sql(_route_sql(_CURRENT_SERIES, params), source="cohort.coverage.route",
                         register={"_uids": uids})
    # every UID of the cohort is a current series (each index row is routed at most once, so the first
    # test, which is free, holds when the cohort's UIDs are distinct; counting them costs 0.1-0.3 s for 1 M)
    if routes.num_rows == uids.num_rows or routes.num_rows == pc.count_distinct(uids.column(0)).as_py():
        return routes
    missing = catalog.sql(_MISSING_SQL, source="cohort.coverage.route", register={"_uids": uids})
    if not missing.num_rows:
        return routes
    prior = catalog.sql(_route_sql(_PRIOR_SERIES, params), source="cohort.coverage.route",
                        register={"_uids": missing})
    return pa.concat_tables([routes, prior.cast(routes.schema)])


def discover_newest_store(
    current: int,
    *,
    first: int = FIRST_GOOGLE_STORE,
    store: Callable[[int], Endpoint] = google_store,
    policy: RetryPolicy | None = None,
    max_probes: int = MAX_PROBES,
) -> int | None:
    """The newest release N (from ``current`` down) whose store answers ``GET .../studies?limit=1``.

    ``store(N)`` makes the endpoint to probe (default: the Google store, with Google
    credentials). 404 means "no such store yet" and the next older one is tried; any
    other failure raises :class:`CoverageError`. Returns None when the ``max_probes``
    newest releases have no store.
    """
    policy = policy or RetryPolicy(timeout=15, max_attempts=3)
    for version in range(current, max(first, current - max_probes + 1) - 1, -1):
        endpoint = store(version)
        result = get(endpoint.session(), endpoint.url + "/studies", policy=policy, params={"limit": 1},
                     headers={"Accept": "application/dicom+json"})
        status = result.response.status_code if result.response is not None else None
        log.info("probe %s: %s", endpoint.name, status or type(result.error).__name__)
        if status in (200, 204):
            return version
        if status != 404:
            cause = f"HTTP {status}" if status else type(result.error).__name__
            raise CoverageError(f"could not tell whether {endpoint.name} exists ({cause} from {endpoint.url}/studies); "
                                "give the newest store yourself (newest_google_store=N, --newest-store N)")
    return None


# -- the report -----------------------------------------------------------------
def _group(table: pa.Table, keys: list[str]) -> pd.DataFrame:
    grouped = table.group_by(keys).aggregate([("SeriesInstanceUID", "count"), ("series_size_MB", "sum")])
    df = grouped.to_pandas().rename(columns={"SeriesInstanceUID_count": "series", "series_size_MB_sum": "size_GB"})
    df["size_GB"] = (df["size_GB"].fillna(0) / 1000).round(3)
    return df[[*keys, "series", "size_GB"]].sort_values(["series", *keys], ascending=[False] + [True] * len(keys),
                                                         ignore_index=True)


@dataclass(frozen=True)
class CoverageReport:
    """The route of every series (``routes``, Arrow) and the endpoints they name."""

    #: One row per series: SeriesInstanceUID, StudyInstanceUID, collection_id, aws_bucket,
    #: series_size_MB, in_current_release, revision_version (release that made the wanted
    #: revision), endpoint (name, or "unavailable"; its URL is ``endpoints[name].url``), series_url,
    #: served_version (release whose data the endpoint serves), proxy_differs, reason.
    routes: pa.Table = field(repr=False)
    #: Endpoint name -> :class:`~cohort.endpoints.Endpoint` (every name in ``routes`` but "unavailable").
    endpoints: Mapping[str, Endpoint]
    policy: Policy
    idc_version: int
    #: The newest Google store assumed (None: no Google store).
    newest_google_store: int | None

    def by_endpoint(self) -> pd.DataFrame:
        """Series and GB per endpoint."""
        return _group(self.routes, ["endpoint"])

    def by_collection(self) -> pd.DataFrame:
        """Series and GB per collection and endpoint."""
        return _group(self.routes, ["collection_id", "endpoint"])

    def by_reason(self) -> pd.DataFrame:
        """Series and GB per endpoint and reason."""
        return _group(self.routes, ["endpoint", "reason"])

    def to_pandas(self) -> pd.DataFrame:
        return self.routes.to_pandas()

    @property
    def unavailable(self) -> int:
        """How many series no endpoint serves."""
        return self.routes.column("series_url").null_count

    def summary_text(self) -> str:
        """A few lines: the policy, and series and GB per endpoint."""
        import pyarrow.compute as pc  # noqa: PLC0415 - keeps `import cohort` light

        store = f"v{self.newest_google_store}" if self.newest_google_store else "none"
        lines = [f"{self.routes.num_rows:,} series routed ({self.policy}; IDC v{self.idc_version}, "
                 f"newest Google store {store})"]
        for row in self.by_endpoint().itertuples(index=False):
            lines.append(f"  {row.endpoint}: {row.series:,} series, {row.size_GB:,.2f} GB")
        differs = pc.sum(self.routes.column("proxy_differs")).as_py() or 0
        if differs:
            lines.append(f"  the proxy would serve different data, or nothing, for {differs:,} series")
        return "\n".join(lines)

    def verify(self, sample: int | None = None, **kwargs: Any) -> Verification:
        """Ask the endpoints whether they have the series (see :func:`verify`)."""
        return verify(self, sample, **kwargs)

    def __repr__(self) -> str:
        return f"<CoverageReport {self.summary_text().splitlines()[0]}>"

    def _repr_html_(self) -> str:
        head, *rest = self.summary_text().splitlines()
        table = self.by_reason().head(20).to_html(index=False, border=0)
        return f"<div><b>Coverage</b> {html.escape(head)}<br>{'<br>'.join(map(html.escape, rest))}{table}</div>"


# -- live check ---------------------------------------------------------------
class CheckStatus(str, enum.Enum):
    PRESENT = "present"
    MISSING = "missing"
    ERROR = "error"


@dataclass(frozen=True)
class Verification:
    """What the endpoints answered for the checked series."""

    #: One row per checked series: SeriesInstanceUID, StudyInstanceUID, endpoint, status
    #: (present / missing / error), http_status, attempts, detail.
    results: pa.Table = field(repr=False)
    #: Routed series not checked because no endpoint serves them.
    unavailable: int

    @property
    def counts(self) -> dict[str, int]:
        statuses = self.results.column("status").to_pylist()
        return {s.value: statuses.count(s.value) for s in CheckStatus}

    def mismatches(self) -> pd.DataFrame:
        """The series an endpoint does not have, or could not answer for."""
        df = self.results.to_pandas()
        return df[df["status"] != CheckStatus.PRESENT.value].reset_index(drop=True)

    def to_pandas(self) -> pd.DataFrame:
        return self.results.to_pandas()

    def summary_text(self) -> str:
        c = self.counts
        text = (f"checked {self.results.num_rows:,} series: {c['present']:,} present, {c['missing']:,} missing, "
                f"{c['error']:,} errors")
        return text + (f" ({self.unavailable:,} unavailable series not checked)" if self.unavailable else "")


def verify(
    report: CoverageReport,
    sample: int | None = None,
    *,
    seed: int = 0,
    workers: int = 8,
    rate: float | None = 10.0,
    policy: RetryPolicy | None = None,
) -> Verification:
    """QIDO-search each routed series (or a random ``sample`` of them) at its endpoint.

    ``GET {endpoint}/studies/{study}/series?SeriesInstanceUID={uid}``: a match is
    *present*; 204 or an empty list is *missing*; anything else after the retries of
    ``policy`` (the harvester's :class:`~cohort.retry.RetryPolicy`) is *error*. At most
    ``workers`` requests run at once and ``rate`` a second (None: no cap). Credentials
    are applied by each endpoint's session and never reported.
    """
    if workers < 1:
        raise CoverageError(f"workers must be at least 1, got {workers}")
    rows = [r for r in report.routes.select(["StudyInstanceUID", "SeriesInstanceUID", "endpoint"]).to_pylist()
            if r["endpoint"] != UNAVAILABLE]
    unavailable = report.routes.num_rows - len(rows)
    if sample is not None and sample < len(rows):
        rows = random.Random(seed).sample(rows, sample)
    policy = policy or RetryPolicy()
    limiter = RateLimiter(rate, burst=workers) if rate else None
    local = threading.local()

    def session_for(name: str):
        sessions = local.__dict__.setdefault("sessions", {})
        if name not in sessions:
            sessions[name] = report.endpoints[name].session()
        return sessions[name]

    def check(row: dict[str, Any]) -> dict[str, Any]:
        endpoint = report.endpoints[row["endpoint"]]
        try:
            session = session_for(endpoint.name)
        except EndpointError as exc:
            return {**row, "status": CheckStatus.ERROR.value, "http_status": None, "attempts": 0, "detail": str(exc)}
        result = get(session, f"{endpoint.url}/studies/{row['StudyInstanceUID']}/series", policy=policy,
                     limiter=limiter, params={"SeriesInstanceUID": row["SeriesInstanceUID"]},
                     headers={"Accept": "application/dicom+json"})
        response = result.response
        status, detail = CheckStatus.ERROR, None
        if result.error is not None:
            detail = f"{type(result.error).__name__} after {result.attempts} attempts"
        elif response.status_code == 204:
            status = CheckStatus.MISSING
        elif response.status_code == 200:
            try:
                found = {item.get("0020000E", {}).get("Value", [None])[0] for item in response.json()}
            except (ValueError, AttributeError, TypeError, IndexError):
                detail = "the answer is not a DICOM JSON list"
            else:
                status = CheckStatus.PRESENT if row["SeriesInstanceUID"] in found else CheckStatus.MISSING
        else:
            detail = f"HTTP {response.status_code}"
        return {**row, "status": status.value, "http_status": response.status_code if response is not None else None,
                "attempts": result.attempts, "detail": detail}

    with ThreadPoolExecutor(max_workers=workers) as pool:
        checked = list(pool.map(check, rows))
    return Verification(_results_table(checked), unavailable)


def _results_table(rows: list[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa  # noqa: PLC0415 - keeps `import cohort` light

    schema = pa.schema([("StudyInstanceUID", pa.string()), ("SeriesInstanceUID", pa.string()),
                        ("endpoint", pa.string()), ("status", pa.string()), ("http_status", pa.int32()),
                        ("attempts", pa.int32()), ("detail", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)
