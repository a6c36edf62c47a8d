"""Probing an endpoint before a harvest: is it a DICOMweb service, and does it take our credentials?

One QIDO search for studies with ``limit=1``, under the run's retry policy. A URL that is not a
DICOMweb root (Orthanc's REST root, ``/dicomweb`` for ``/dicom-web``, an HTML page) or refused
credentials are a :class:`~cohort.HarvestError` before any series is asked for, so that they are
never logged as the outcome of every series.
"""

from __future__ import annotations

import requests

from .._redact import redact, session_secrets
from ..endpoints import Endpoint
from ..errors import EndpointError, HarvestError
from ..retry import RateLimiter, RetryPolicy, call

ACCEPT_JSON = {"Accept": "application/dicom+json, application/json"}
#: Statuses that mean the credentials were refused: never the outcome of a series.
AUTH_STATUSES = frozenset({401, 403})


def probe(endpoint: Endpoint, policy: RetryPolicy | None = None, limiter: RateLimiter | None = None) -> None:
    """Ask ``endpoint`` one QIDO search (``/studies?limit=1``); raise :class:`~cohort.HarvestError` when it is
    unreachable, refuses the credentials, or does not answer as a DICOMweb service."""
    policy = policy or RetryPolicy()
    try:
        session = endpoint.session()
    except EndpointError as exc:
        raise HarvestError(f"authentication failed for {endpoint.name}: check --auth ({exc})") from None
    url = f"{endpoint.url}/studies"
    asked = f"GET {url}?limit=1"
    with session:
        result = call(lambda: session.get(url, params={"limit": "1"}, headers=ACCEPT_JSON,
                                          timeout=policy.timeout), policy=policy, limiter=limiter)
        secrets = session_secrets(session)
    response = result.response
    if result.error is not None or response is None:
        raise HarvestError(f"cannot reach {endpoint.name}: {asked} failed after {result.attempts} attempts "
                           f"({redact(f'{type(result.error).__name__}: {result.error}', secrets)}); "
                           "check --url and that the server is running")
    code = response.status_code
    if code in AUTH_STATUSES:
        answer = snippet(response, 120, secrets)
        raise HarvestError(f"authentication failed for {endpoint.name}: check --auth ({asked} answered HTTP {code}"
                           + (f": {answer}" if answer else "") + ")")
    if code in policy.retry_statuses:
        raise HarvestError(f"{endpoint.name} is not available: {asked} answered HTTP {code} after "
                           f"{result.attempts} attempts; try again later")
    if code == 204:
        return
    if code == 200:
        try:
            answer_json = response.json()
        except ValueError:
            answer_json = None
        if isinstance(answer_json, list) and all(isinstance(item, dict) for item in answer_json):
            return  # a DICOM JSON array (Orthanc's REST API answers /studies with a list of ids)
    kind = response.headers.get("Content-Type", "no content type").split(";")[0]
    answer = snippet(response, 120, secrets)
    raise HarvestError(
        f"{endpoint.name} does not answer as a DICOMweb service: {asked} answered HTTP {code} ({kind}"
        + (f": {answer}" if answer else "") + "); check --url: it must be the DICOMweb root, the part "
        "before /studies (e.g. http://127.0.0.1:8042/dicom-web for Orthanc)"
    )


def snippet(response: requests.Response, limit: int = 200, secrets: tuple[str, ...] = ()) -> str:
    """The start of a response body on one line, redacted before it is cut (no half secret survives)."""
    # the declared charset, else UTF-8: response.text would guess with charset_normalizer (0.1-1 s a body)
    try:
        text = (response.content or b"").decode(response.encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        text = (response.content or b"").decode("utf-8", errors="replace")
    text = redact(text.strip(), secrets) or ""
    return " ".join(text.split())[:limit] or response.reason or ""
