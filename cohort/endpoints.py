"""DICOMweb endpoints: the IDC proxy, the Google store of a release, or any URL.

An :class:`Endpoint` is a frozen value: where the DICOMweb root is, what it
serves, and how to authenticate. It never holds a secret itself; the
:class:`Auth` objects read credentials from the environment or from
google-auth when a session is made, and their ``repr`` never shows them.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import requests

from ._redact import credential_query_params
from .errors import EndpointError

IDC_PROXY_URL = (
    "https://proxy.imaging.datacommons.cancer.gov/current/"
    "viewer-only-no-downloads-see-tinyurl-dot-com-slash-3j3d9jyp/dicomWeb"
)
GOOGLE_STORE_URL = (
    "https://healthcare.googleapis.com/v1/projects/nci-idc-data/locations/us-central1/"
    "datasets/idc/dicomStores/idc-store-v{version}/dicomWeb"
)
#: Buckets whose series the Google Healthcare stores hold (AWS bucket names).
GOOGLE_STORE_BUCKETS = frozenset({"idc-open-data"})
GOOGLE_SCOPES = ("https://www.googleapis.com/auth/cloud-healthcare",)


class EndpointKind(str, enum.Enum):
    PROXY = "proxy"
    GOOGLE = "google"
    CUSTOM = "custom"


class Auth(Protocol):
    """Applies credentials to a :class:`requests.Session`."""

    def apply(self, session: requests.Session) -> requests.Session: ...


@dataclass(frozen=True)
class NoAuth:
    """No authentication (the IDC proxy, a local Orthanc)."""

    def apply(self, session: requests.Session) -> requests.Session:
        return session


@dataclass(frozen=True)
class BearerTokenAuth:
    """A bearer token read from an environment variable when the session is made."""

    env_var: str = "DICOMWEB_TOKEN"

    def apply(self, session: requests.Session) -> requests.Session:
        token = os.environ.get(self.env_var)
        if not token:
            raise EndpointError(
                f"bearer-token authentication needs the environment variable {self.env_var}; "
                f"set it to the token (it is never printed or stored)"
            )
        session.headers["Authorization"] = f"Bearer {token}"
        return session


@dataclass(frozen=True)
class HeaderAuth:
    """An API key sent in a header of its own (e.g. ``apikey: ...``), read from an environment
    variable when the session is made (the SIIM hackathon server, many API gateways)."""

    header: str
    env_var: str

    def __post_init__(self) -> None:
        # an HTTP header name is a token (RFC 9110 5.1); reject anything requests would send malformed
        if not self.header or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in self.header):
            raise EndpointError(f"header authentication: {self.header!r} is not a valid HTTP header name; "
                                "use e.g. --auth header:apikey:ENV_VAR")
        if not self.env_var:
            raise EndpointError("header authentication needs the environment variable that holds the key: "
                                f"--auth header:{self.header}:ENV_VAR")

    def apply(self, session: requests.Session) -> requests.Session:
        value = os.environ.get(self.env_var)
        if not value:
            raise EndpointError(
                f"header authentication needs the environment variable {self.env_var} (sent as the "
                f"{self.header!r} header); set it to the key (it is never printed or stored)"
            )
        session.headers[self.header] = value
        return session


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic auth; user and password read from environment variables."""

    user_var: str = "DICOMWEB_USER"
    password_var: str = "DICOMWEB_PASSWORD"

    def apply(self, session: requests.Session) -> requests.Session:
        user, password = os.environ.get(self.user_var), os.environ.get(self.password_var)
        if not user or password is None:
            raise EndpointError(
                f"basic authentication needs the environment variables {self.user_var} "
                f"and {self.password_var}"
            )
        session.auth = (user, password)
        return session


@dataclass(frozen=True)
class GoogleAuth:
    """Google application-default credentials (``gcloud auth application-default login``).

    The session is a google-auth ``AuthorizedSession``, which refreshes the
    token by itself.
    """

    scopes: tuple[str, ...] = GOOGLE_SCOPES

    def apply(self, session: requests.Session) -> requests.Session:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError
        from google.auth.transport.requests import AuthorizedSession, Request

        try:
            credentials, _ = google.auth.default(scopes=list(self.scopes))
        except DefaultCredentialsError as exc:
            raise EndpointError(
                "no Google credentials found: run `gcloud auth application-default login` "
                "or set GOOGLE_APPLICATION_CREDENTIALS, or use the IDC proxy instead "
                f"({type(exc).__name__})"
            ) from None
        try:  # fail here, with a clear message, rather than inside the first request
            credentials.refresh(Request())
        except GoogleAuthError as exc:
            raise EndpointError(
                f"could not get a Google access token ({type(exc).__name__}): run "
                "`gcloud auth application-default login` again, or use the IDC proxy instead"
            ) from None
        authed = AuthorizedSession(credentials)
        authed.headers.update(session.headers)
        return authed


def google_credentials_available() -> bool:
    """True when application-default credentials are configured: ``GOOGLE_APPLICATION_CREDENTIALS``
    names a file, or gcloud's ``application_default_credentials.json`` exists.

    Only files are checked, never the network: ``google.auth.default()`` would also ask the
    Compute Engine metadata server. On Google Cloud machines, choose Google explicitly.
    """
    explicit = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if explicit:
        return os.path.isfile(explicit)
    from google.auth import _cloud_sdk  # noqa: PLC0415 - gcloud's config path (honours CLOUDSDK_CONFIG)

    return os.path.isfile(_cloud_sdk.get_application_default_credentials_path())


@dataclass(frozen=True)
class Endpoint:
    """A DICOMweb service root and how to reach it."""

    name: str
    url: str
    kind: EndpointKind = EndpointKind.CUSTOM
    #: IDC release served: the store's N for Google, ``None`` for "current" (proxy) or unknown.
    idc_version: int | None = None
    auth: Auth = field(default_factory=NoAuth)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise EndpointError(
                f"endpoint {self.name!r}: URL {self.url!r} must start with http:// or https://"
            )
        if urlsplit(self.url).username is not None or urlsplit(self.name).username is not None:
            raise EndpointError(
                "endpoint URL carries credentials (user:password@host); give the URL without them "
                "and use basic auth from the environment (--auth basic:USER_VAR:PASSWORD_VAR)"
            )
        carried = credential_query_params(self.url) + credential_query_params(self.name)
        if carried:
            raise EndpointError(
                f"endpoint URL carries a credential in its query string ({', '.join(sorted(set(carried)))}=...); "
                "give the URL without it and pass the token from the environment with --auth bearer[:ENV_VAR] "
                "(Python: auth=BearerTokenAuth(ENV_VAR)), so that it is never stored or printed"
            )
        object.__setattr__(self, "url", self.url.rstrip("/"))

    def series_url(self, study_uid: str, series_uid: str) -> str:
        return f"{self.url}/studies/{study_uid}/series/{series_uid}"

    def session(self) -> requests.Session:
        """A new requests session with this endpoint's credentials applied."""
        session = requests.Session()
        session.headers["User-Agent"] = "idc-cohort"
        return self.auth.apply(session)

    def fast_session(self) -> requests.Session:
        """:meth:`session` with requests' environment lookups made once, for this endpoint's host.

        With ``trust_env`` requests reads the proxy variables (all of ``os.environ``), the CA
        bundle variables and ``~/.netrc`` again for every request: about a sixth of a harvest's
        CPU. Here they are read once for :attr:`url` and kept on the session, so a request to
        another host (a redirect, a BulkDataURI elsewhere) uses this host's proxy settings.
        """
        session = self.session()
        if session.trust_env:
            settings = session.merge_environment_settings(self.url, {}, None, None, None)
            session.proxies, session.verify, session.cert = settings["proxies"], settings["verify"], settings["cert"]
            if session.auth is None:
                session.auth = requests.utils.get_netrc_auth(self.url)
            session.trust_env = False
        return session

    def client(self, session: requests.Session | None = None, timeout: float = 30):
        """A dicomweb-client ``DICOMwebClient`` for this endpoint."""
        from dicomweb_client.api import DICOMwebClient

        return DICOMwebClient(self.url, session=session or self.session(), timeout=timeout)


def idc_proxy() -> Endpoint:
    """The IDC public proxy: no login, every bucket, the current release only, daily quotas."""
    return Endpoint("idc-proxy", IDC_PROXY_URL, EndpointKind.PROXY)


def google_store(version: int, auth: Auth | None = None) -> Endpoint:
    """The Google Healthcare store ``idc-store-v{version}``: login, idc-open-data only."""
    if version < 1:
        raise EndpointError(f"IDC release must be 1 or later, got {version}")
    return Endpoint(
        f"idc-store-v{version}",
        GOOGLE_STORE_URL.format(version=version),
        EndpointKind.GOOGLE,
        version,
        auth or GoogleAuth(),
    )


def custom(url: str, auth: Auth | None = None, name: str | None = None) -> Endpoint:
    """Any DICOMweb service (Orthanc, dcm4chee, Azure, a Google store of your own)."""
    return Endpoint(name or url, url, EndpointKind.CUSTOM, None, auth or NoAuth())


def auth_from_name(name: str) -> Auth:
    """``none``, ``google``, ``bearer[:ENV_VAR]``, ``basic[:USER_VAR:PASSWORD_VAR]`` or
    ``header:NAME:ENV_VAR`` (the CLI's --auth)."""
    kind, _, rest = name.partition(":")
    if kind == "none":
        return NoAuth()
    if kind == "google":
        return GoogleAuth()
    if kind == "bearer":
        return BearerTokenAuth(rest or "DICOMWEB_TOKEN")
    if kind == "basic":
        user_var, _, pass_var = rest.partition(":")
        return BasicAuth(user_var or "DICOMWEB_USER", pass_var or "DICOMWEB_PASSWORD")
    if kind == "header":
        header, _, env_var = rest.partition(":")
        if not header or not env_var:
            raise EndpointError(f"--auth {name!r}: header authentication is header:NAME:ENV_VAR, "
                                "e.g. header:apikey:SIIM_API_KEY (the key is read from ENV_VAR)")
        return HeaderAuth(header, env_var)
    raise EndpointError(
        f"unknown authentication {name!r}: use none, google, bearer[:ENV_VAR], "
        "basic[:USER_VAR:PASSWORD_VAR] or header:NAME:ENV_VAR"
    )
