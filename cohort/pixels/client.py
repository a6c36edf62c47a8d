"""One DICOMweb client for a whole cohort: each request goes to the endpoint its series is routed to.

:class:`RoutedClient` satisfies dicomweb-client's ``DICOMClient`` protocol
(``dicomweb_client.protocol``), so wsidicom (``WsiDicomWebClient(client)``),
highdicom and anything else written against that protocol use it unchanged.
Behind it is one ``DICOMwebClient`` per endpoint (and thread) of a coverage
report (:func:`cohort.coverage.route`): the IDC proxy, ``idc-store-vN`` with a
google-auth session, or a custom URL with its auth.

Every HTTP request of every endpoint goes through one :class:`~cohort.retry.RetryPolicy`
and one :class:`~cohort.retry.RateLimiter`, applied by a transport adapter mounted on
each endpoint's session; dicomweb-client's own retries are switched off, so attempts
are not multiplied. HTTP errors that remain after the retries reach the caller as
``requests.HTTPError``, as from dicomweb-client (wsidicom relies on that, e.g. for
406 on an unsupported transfer syntax).

The client answers for the cohort's series only: a series outside the routes is a
:class:`~cohort.errors.PixelError`; searches go to the endpoints that serve the
addressed study or series, and their answers are limited to the cohort's series.
Study-level retrieves are the concatenation of the cohort's series of that study.
It is read-only: store and delete raise :class:`~cohort.errors.PixelError`.

For ez-wsi-dicomweb, which takes a series path and a credential factory per slide,
:meth:`RoutedClient.ez_wsi_path` and :meth:`RoutedClient.ez_wsi_credential_factory`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from ..endpoints import BearerTokenAuth, Endpoint, EndpointKind, GoogleAuth, NoAuth
from ..errors import PixelError
from ..retry import RateLimiter, RetryPolicy, call

if TYPE_CHECKING:
    from dicomweb_client.api import DICOMwebClient
    from pydicom.dataset import Dataset

    from ..cohort import Cohort
    from ..coverage import CoverageReport

#: Accept any transfer syntax: frames come back as stored (JPEG, JPEG 2000, raw ...).
NATIVE_FRAMES = (("application/octet-stream", "*"),)
#: Default requests a second for all endpoints together (the IDC proxy has daily quotas).
DEFAULT_RATE = 20.0
STUDY_UID_KEYS = ("StudyInstanceUID", "0020000D", "0020000d")
SERIES_UID_KEYS = ("SeriesInstanceUID", "0020000E", "0020000e")


@dataclass(frozen=True)
class SeriesRoute:
    """Where one series of the cohort is served from (``endpoint`` None: nobody serves it)."""

    study_uid: str
    series_uid: str
    endpoint: Endpoint | None
    reason: str

    @property
    def url(self) -> str:
        if self.endpoint is None:
            raise PixelError(f"series {self.series_uid} is not served by any endpoint ({self.reason}); "
                             "route it with another policy (e.g. 'proxy', or an explicit endpoint)")
        return self.endpoint.series_url(self.study_uid, self.series_uid)


class PoliteAdapter(HTTPAdapter):
    """A transport adapter that sends every request under a retry policy and a shared rate limiter.

    The body of a non-streamed response is read inside the attempt, so a body cut short is
    retried like a reset connection. A streamed request (dicomweb-client's ``iter_*`` methods)
    is retried until its status and headers arrive; a successful body is then left in the
    socket for the caller to read as it comes (a body cut short reaches the caller as a
    ``requests`` exception: frames already yielded cannot be taken back). What is left after
    the retries is returned (an HTTP error status) or raised (a connection error), for
    dicomweb-client to handle as usual.
    """

    def __init__(self, policy: RetryPolicy, limiter: RateLimiter | None) -> None:
        super().__init__(pool_connections=4, pool_maxsize=32)
        self.policy = policy
        self.limiter = limiter

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):  # noqa: D102
        unread: list[requests.Response] = []

        def attempt() -> requests.Response:
            response = super(PoliteAdapter, self).send(request, stream=stream, timeout=self.policy.timeout,
                                                       verify=verify, cert=cert, proxies=proxies)
            if stream and response.ok:
                response._content = b""  # cohort.retry.call counts the bytes of .content: not the stream's
                unread.append(response)
            else:
                _ = response.content  # read the body here: a cut body is an attempt that failed
            return response

        result = call(attempt, policy=self.policy, limiter=self.limiter)
        if result.error is not None:
            raise result.error
        if result.response in unread:
            # requests' "not read yet" (.content marked it read): iter_content streams from the socket
            result.response._content, result.response._content_consumed = False, False
        return result.response


def polite_session(endpoint: Endpoint, policy: RetryPolicy, limiter: RateLimiter | None) -> requests.Session:
    """The endpoint's authenticated session, with every request under ``policy`` and ``limiter``."""
    session = endpoint.session()
    adapter = PoliteAdapter(policy, limiter)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def routes_from_reports(reports: CoverageReport | Iterable[CoverageReport]) -> dict[str, SeriesRoute]:
    """Series UID -> :class:`SeriesRoute` from one coverage report or several (e.g. one per server).

    A series routed by two reports must be routed to the same endpoint by both.
    """
    from ..coverage import CoverageReport, UNAVAILABLE

    reports = [reports] if isinstance(reports, CoverageReport) else list(reports)
    routes: dict[str, SeriesRoute] = {}
    for report in reports:
        columns = ["StudyInstanceUID", "SeriesInstanceUID", "endpoint", "reason"]
        for row in report.routes.select(columns).to_pylist():
            name = row["endpoint"]
            endpoint = None if name == UNAVAILABLE else report.endpoints[name]
            new = SeriesRoute(row["StudyInstanceUID"], row["SeriesInstanceUID"], endpoint, row["reason"])
            old = routes.get(new.series_uid)
            if old is not None and old.endpoint is not None and old.endpoint != new.endpoint:
                raise PixelError(f"series {new.series_uid} is routed to two endpoints ({old.endpoint.name} and "
                                 f"{name}); give each series one route")
            if old is None or old.endpoint is None:
                routes[new.series_uid] = new
    return routes


def _uid_values(filters: Mapping[str, Any] | None, keys: Sequence[str]) -> tuple[str, list[str]] | None:
    """(key used, UIDs) of a UID search filter (a string, comma-separated, or a list), else None."""
    for key in keys:
        if filters and key in filters and filters[key] is not None:
            value = filters[key]
            uids = value.split(",") if isinstance(value, str) else [str(v) for v in value]
            return key, [u.strip() for u in uids if u.strip()]
    return None


def _uid_of(item: Mapping[str, Any], tag: str) -> str | None:
    value = item.get(tag, {}).get("Value")
    return value[0] if value else None


class RoutedClient:
    """A ``dicomweb_client.protocol.DICOMClient`` over the routed series of a cohort.

    ``reports``: a :class:`~cohort.coverage.CoverageReport` (``route(cohort, policy)``) or several
    (series split between endpoints by explicit routes). ``endpoints`` replaces endpoints by name
    (a mirror of a store, a local stand-in). ``policy`` and ``rate`` (requests a second over all
    endpoints and threads; None: no cap) or a shared ``limiter`` govern every request.
    """

    def __init__(self, reports: CoverageReport | Iterable[CoverageReport], *,
                 endpoints: Mapping[str, Endpoint] | None = None, policy: RetryPolicy | None = None,
                 rate: float | None = DEFAULT_RATE, limiter: RateLimiter | None = None,
                 timeout: float | None = None) -> None:
        self.routes = routes_from_reports(reports)
        if endpoints:
            self.routes = {uid: r if r.endpoint is None or r.endpoint.name not in endpoints
                           else SeriesRoute(r.study_uid, r.series_uid, endpoints[r.endpoint.name], r.reason)
                           for uid, r in self.routes.items()}
        self.policy = policy or RetryPolicy(**({"timeout": timeout} if timeout else {}))
        self.limiter = limiter if limiter is not None else (RateLimiter(rate, burst=16) if rate else None)
        self.endpoints: dict[str, Endpoint] = {}
        for r in self.routes.values():
            if r.endpoint is not None:
                self.endpoints.setdefault(r.endpoint.name, r.endpoint)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: dict[str, requests.Session] = {}
        self._by_study: dict[str, list[SeriesRoute]] = {}
        for r in self.routes.values():
            self._by_study.setdefault(r.study_uid, []).append(r)
        # the protocol's attributes: one base URL only when every series has the same endpoint
        only = next(iter(self.endpoints.values())) if len(self.endpoints) == 1 else None
        self.base_url = only.url if only else f"routed://{len(self.endpoints)}-endpoints"
        parts = urlsplit(self.base_url)
        self.scheme, self.protocol = parts.scheme, parts.scheme
        self.url_prefix = parts.path if only else ""
        self.qido_url_prefix = self.wado_url_prefix = self.stow_url_prefix = self.delete_url_prefix = None

    @classmethod
    def for_cohort(cls, cohort: Cohort, policy: Any = None, **kwargs: Any) -> RoutedClient:
        """The client of ``cohort`` routed by ``cohort.coverage.route(cohort, policy)`` (``kwargs``: the
        constructor's, e.g. ``rate``)."""
        from ..coverage import route

        return cls(route(cohort, policy), **kwargs)

    def __repr__(self) -> str:
        return (f"<RoutedClient {len(self.routes):,} series over {len(self.endpoints)} endpoints "
                f"({', '.join(sorted(self.endpoints))}); {self.limiter!r}>")

    # -- routing ------------------------------------------------------------------
    def route_of(self, series_uid: str) -> SeriesRoute:
        """The route of one series of the cohort (:class:`~cohort.errors.PixelError` if it is not one)."""
        try:
            return self.routes[str(series_uid)]
        except KeyError:
            raise PixelError(f"series {series_uid} is not in the routed cohort ({len(self.routes):,} series); "
                             "add it to the cohort, or route it (coverage route) and build the client again") from None

    def session_for(self, endpoint: Endpoint) -> requests.Session:
        """The one session of ``endpoint``, shared by all threads (one login, one connection pool)."""
        with self._lock:
            session = self._sessions.get(endpoint.name)
            if session is None:
                session = self._sessions[endpoint.name] = polite_session(endpoint, self.policy, self.limiter)
            return session

    def client_for(self, endpoint: Endpoint) -> DICOMwebClient:
        """This thread's dicomweb-client for ``endpoint`` (its retries off; ours in the shared session)."""
        clients = self._local.__dict__.setdefault("clients", {})
        client = clients.get(endpoint.name)
        if client is None:
            from dicomweb_client.api import DICOMwebClient

            client = DICOMwebClient(endpoint.url, session=self.session_for(endpoint), timeout=self.policy.timeout)
            client.set_http_retry_params(retry=False)
            clients[endpoint.name] = client
        return client

    def close(self) -> None:
        """Close the endpoints' sessions (they are made again when needed)."""
        with self._lock:
            sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            session.close()

    def _series_client(self, series_uid: str) -> DICOMwebClient:
        route = self.route_of(series_uid)
        route.url  # noqa: B018 - raises for an unavailable series
        return self.client_for(route.endpoint)

    def _study_routes(self, study_uid: str) -> list[SeriesRoute]:
        routes = self._by_study.get(str(study_uid), [])
        if not routes:
            raise PixelError(f"study {study_uid} has no series in the routed cohort; add its series to the cohort")
        return [r for r in routes if r.endpoint is not None]

    def _per_study(self, study_uid: str | None, ask: Callable[[DICOMwebClient, str], list]) -> list:
        """``ask(client, study)`` at each endpoint serving the study (each of the cohort's studies when
        None: one request a study, never a search of the whole archive), answers limited to the cohort."""
        studies = [str(study_uid)] if study_uid is not None else list(self._by_study)
        out, seen = [], set()
        for study in studies:
            routes = self._study_routes(study)
            uids = {r.series_uid for r in routes}
            endpoints = {r.endpoint.name: r.endpoint for r in routes}
            for endpoint in endpoints.values():
                for item in ask(self.client_for(endpoint), study):
                    key = (_uid_of(item, "0020000E"), _uid_of(item, "00080018"))
                    if key[0] in uids and key not in seen:
                        seen.add(key)
                        out.append(item)
        return out

    @staticmethod
    def _page(items: list, limit: int | None, offset: int | None) -> list:
        start = offset or 0
        return items[start:start + limit] if limit is not None else items[start:]

    # -- QIDO ----------------------------------------------------------------------
    def search_for_studies(self, fuzzymatching=None, limit=None, offset=None, fields=None, search_filters=None,
                           get_remaining=False) -> list[dict[str, dict]]:
        given = _uid_values(search_filters, STUDY_UID_KEYS)
        key = given[0] if given else "StudyInstanceUID"
        studies = [u for u in (given[1] if given else self._by_study) if u in self._by_study]
        out = []
        for study in studies:  # one request a study of the cohort, at an endpoint that serves it
            routes = [r for r in self._by_study[study] if r.endpoint is not None]
            if not routes:
                continue
            filters = {**(search_filters or {}), key: study}
            found = self.client_for(routes[0].endpoint).search_for_studies(
                fuzzymatching=fuzzymatching, fields=fields, search_filters=filters, get_remaining=True)
            out += [item for item in found if _uid_of(item, "0020000D") == study][:1]
        return self._page(out, limit, offset)

    def search_for_series(self, study_instance_uid=None, fuzzymatching=None, limit=None, offset=None, fields=None,
                          search_filters=None, get_remaining=False) -> list[dict[str, dict]]:
        found = self._per_study(study_instance_uid, lambda c, study: c.search_for_series(
            study, fuzzymatching=fuzzymatching, fields=fields, search_filters=search_filters, get_remaining=True))
        return self._page(found, limit, offset)

    def search_for_instances(self, study_instance_uid=None, series_instance_uid=None, fuzzymatching=None,
                             limit=None, offset=None, fields=None, search_filters=None,
                             get_remaining=False) -> list[dict[str, dict]]:
        if series_instance_uid is not None:
            return self._series_client(series_instance_uid).search_for_instances(
                study_instance_uid, series_instance_uid, fuzzymatching=fuzzymatching, limit=limit, offset=offset,
                fields=fields, search_filters=search_filters, get_remaining=get_remaining)
        by_filter = _uid_values(search_filters, SERIES_UID_KEYS)
        if by_filter is None:
            found = self._per_study(study_instance_uid, lambda c, study: c.search_for_instances(
                study, fuzzymatching=fuzzymatching, fields=fields, search_filters=search_filters,
                get_remaining=True))
            return self._page(found, limit, offset)
        key, uids = by_filter
        groups: dict[str, list[str]] = {}
        for uid in uids:
            route = self.route_of(uid)
            route.url  # noqa: B018 - raises for an unavailable series
            groups.setdefault(route.endpoint.name, []).append(uid)
        found = []
        for name, group in groups.items():  # wsidicom asks for all series of a slide at once
            filters = {**search_filters, key: group if len(group) > 1 else group[0]}
            found += self.client_for(self.endpoints[name]).search_for_instances(
                study_instance_uid, fuzzymatching=fuzzymatching, fields=fields, search_filters=filters,
                get_remaining=True)
        return self._page(found, limit, offset)

    # -- WADO: series and instances go to their endpoint ---------------------------------------
    def retrieve_series(self, study_instance_uid, series_instance_uid, media_types=None) -> list[Dataset]:
        return self._series_client(series_instance_uid).retrieve_series(
            study_instance_uid, series_instance_uid, media_types=media_types)

    def iter_series(self, study_instance_uid, series_instance_uid, media_types=None) -> Iterator[Dataset]:
        return self._series_client(series_instance_uid).iter_series(
            study_instance_uid, series_instance_uid, media_types=media_types)

    def retrieve_series_metadata(self, study_instance_uid, series_instance_uid) -> list[dict[str, dict]]:
        return self._series_client(series_instance_uid).retrieve_series_metadata(
            study_instance_uid, series_instance_uid)

    def retrieve_series_rendered(self, study_instance_uid, series_instance_uid, media_types=None, params=None) -> bytes:
        return self._series_client(series_instance_uid).retrieve_series_rendered(
            study_instance_uid, series_instance_uid, media_types=media_types, params=params)

    def retrieve_instance(self, study_instance_uid, series_instance_uid, sop_instance_uid,
                          media_types=None) -> Dataset:
        return self._series_client(series_instance_uid).retrieve_instance(
            study_instance_uid, series_instance_uid, sop_instance_uid, media_types=media_types)

    def retrieve_instance_metadata(self, study_instance_uid, series_instance_uid,
                                   sop_instance_uid) -> dict[str, dict]:
        return self._series_client(series_instance_uid).retrieve_instance_metadata(
            study_instance_uid, series_instance_uid, sop_instance_uid)

    def retrieve_instance_rendered(self, study_instance_uid, series_instance_uid, sop_instance_uid,
                                   media_types=None, params=None) -> bytes:
        return self._series_client(series_instance_uid).retrieve_instance_rendered(
            study_instance_uid, series_instance_uid, sop_instance_uid, media_types=media_types, params=params)

    def retrieve_instance_frames(self, study_instance_uid, series_instance_uid, sop_instance_uid, frame_numbers,
                                 media_types=None) -> list[bytes]:
        return self._series_client(series_instance_uid).retrieve_instance_frames(
            study_instance_uid, series_instance_uid, sop_instance_uid, frame_numbers, media_types=media_types)

    def iter_instance_frames(self, study_instance_uid, series_instance_uid, sop_instance_uid, frame_numbers,
                             media_types=None) -> Iterator[bytes]:
        return self._series_client(series_instance_uid).iter_instance_frames(
            study_instance_uid, series_instance_uid, sop_instance_uid, frame_numbers, media_types=media_types)

    def retrieve_instance_frames_rendered(self, study_instance_uid, series_instance_uid, sop_instance_uid,
                                          frame_numbers, media_types=None, params=None) -> bytes:
        return self._series_client(series_instance_uid).retrieve_instance_frames_rendered(
            study_instance_uid, series_instance_uid, sop_instance_uid, frame_numbers, media_types=media_types,
            params=params)

    # -- studies: the cohort's series of the study ---------------------------------------------------
    def retrieve_study(self, study_instance_uid, media_types=None) -> list[Dataset]:
        return [ds for r in self._study_routes(study_instance_uid)
                for ds in self.retrieve_series(study_instance_uid, r.series_uid, media_types)]

    def iter_study(self, study_instance_uid, media_types=None) -> Iterator[Dataset]:
        for r in self._study_routes(study_instance_uid):
            yield from self.iter_series(study_instance_uid, r.series_uid, media_types)

    def retrieve_study_metadata(self, study_instance_uid) -> list[dict[str, dict]]:
        return [item for r in self._study_routes(study_instance_uid)
                for item in self.retrieve_series_metadata(study_instance_uid, r.series_uid)]

    # -- bulk data: by the endpoint whose URL it starts with ----------------------------------------
    def _bulk_client(self, url: str) -> DICOMwebClient:
        for endpoint in self.endpoints.values():
            if url.startswith(endpoint.url + "/"):
                return self.client_for(endpoint)
        raise PixelError(f"bulk data URL {url.split('?')[0]} is on none of the cohort's endpoints "
                         f"({', '.join(sorted(self.endpoints))})")

    def retrieve_bulkdata(self, url, media_types=None, byte_range=None) -> list[bytes]:
        return self._bulk_client(url).retrieve_bulkdata(url, media_types=media_types, byte_range=byte_range)

    def iter_bulkdata(self, url, media_types=None, byte_range=None) -> Iterator[bytes]:
        return self._bulk_client(url).iter_bulkdata(url, media_types=media_types, byte_range=byte_range)

    # -- read-only --------------------------------------------------------------------------
    def _read_only(self, what: str):
        raise PixelError(f"the routed client of a cohort is read-only: it does not {what}; use a "
                         "dicomweb_client.DICOMwebClient on your own server (Endpoint.client()) to write")

    def store_instances(self, datasets, study_instance_uid=None) -> Dataset:
        self._read_only("store instances")

    def delete_study(self, study_instance_uid) -> None:
        self._read_only("delete studies")

    def delete_series(self, study_instance_uid, series_instance_uid) -> None:
        self._read_only("delete series")

    def delete_instance(self, study_instance_uid, series_instance_uid, sop_instance_uid) -> None:
        self._read_only("delete instances")

    # -- beyond the protocol ------------------------------------------------------------------
    def fetch_frames(self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str,
                     frame_numbers: Sequence[int], *, workers: int = 16,
                     media_types: tuple = NATIVE_FRAMES) -> list[bytes]:
        """Frames by parallel single-frame GETs (as the Azure DICOM service recommends), in order.

        Up to ``workers`` requests at once, under the client's retry policy and rate limit.
        Frames come back in their stored encoding unless ``media_types`` asks otherwise.
        """
        if workers < 1:
            raise PixelError(f"workers must be at least 1, got {workers}")
        self._series_client(series_instance_uid)  # fail early for a series outside the cohort

        def one(number: int) -> bytes:
            client = self._series_client(series_instance_uid)
            return bytes(client.retrieve_instance_frames(study_instance_uid, series_instance_uid,
                                                         sop_instance_uid, [number], media_types=media_types)[0])

        numbers = list(frame_numbers)
        if workers == 1 or len(numbers) <= 1:
            return [one(n) for n in numbers]
        with ThreadPoolExecutor(max_workers=min(workers, len(numbers))) as pool:
            return list(pool.map(one, numbers))

    def ez_wsi_path(self, series_uid: str) -> str:
        """The series URL ez-wsi-dicomweb takes (``dicom_path.FromString(...)``)."""
        return self.route_of(series_uid).url

    def ez_wsi_credential_factory(self, series_uid: str):
        """An ez-wsi-dicomweb credential factory for the series' endpoint.

        Google stores: ``CredentialFactory()`` (application-default credentials); a bearer
        token: ``TokenPassthroughCredentialFactory`` with the token from its environment
        variable; no auth: ``NoAuthCredentialsFactory``. Basic and header auth have no
        ez-wsi-dicomweb counterpart (:class:`PixelError`). Needs ``pip install ez-wsi-dicomweb``.
        """
        route = self.route_of(series_uid)
        route.url  # noqa: B018 - raises for an unavailable series
        try:
            from ez_wsi_dicomweb import credential_factory as factories
        except ImportError:
            raise PixelError("ez_wsi_credential_factory needs ez-wsi-dicomweb: pip install ez-wsi-dicomweb "
                             "(or use ez_wsi_path() with your own credential factory)") from None
        auth = route.endpoint.auth
        if isinstance(auth, GoogleAuth) or route.endpoint.kind is EndpointKind.GOOGLE:
            return factories.CredentialFactory(scopes=list(getattr(auth, "scopes", ())) or None)
        if isinstance(auth, BearerTokenAuth):
            import os

            token = os.environ.get(auth.env_var)
            if not token:
                raise PixelError(f"the endpoint {route.endpoint.name} needs the environment variable {auth.env_var}")
            return factories.TokenPassthroughCredentialFactory(token)
        if isinstance(auth, NoAuth):
            return factories.NoAuthCredentialsFactory()
        raise PixelError(f"ez-wsi-dicomweb has no credential factory for {type(auth).__name__} (endpoint "
                         f"{route.endpoint.name}); use the routed client with wsidicom instead")
