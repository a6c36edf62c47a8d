"""Polite, bounded HTTP: one retry policy and one rate limiter for every DICOMweb call.

:class:`RetryPolicy` says how long one attempt may take and when and how long
to wait before the next: exponential backoff with jitter on 429, 500, 502,
503, 504, connection errors and timeouts, honouring ``Retry-After`` (seconds
or an HTTP date) up to a cap. :class:`RateLimiter` is a thread-safe token
bucket shared by all workers, so a whole run never sends more than ``rate``
requests a second, retries included. :func:`get` performs one GET with both
and returns an :class:`Attempted` (the response or the last error, attempts,
bytes, seconds) instead of raising, so callers can log every outcome.

Why not dicomweb-client's own retries: ``DICOMwebClient._http_get`` wraps each
request in a ``retrying`` decorator (5 attempts, 1 s × 2^n, on 429/408/503/504)
that ignores ``Retry-After``, has no jitter, does not retry connection errors
or 500/502, and cannot be told to stop on Ctrl-C; layering ours on top would
multiply attempts. So callers that go through dicomweb-client should call
``client.set_http_retry_params(retry=False)`` and wrap the call with
:func:`call`; the harvester does the metadata GET itself with :func:`get`
(same URL and Accept header as ``retrieve_series_metadata``), which also
lets it count bytes and tell a truncated body from a server error.

urllib3's ``Retry`` was considered too: it retries inside the connection pool,
where a shared rate limit and a stop event cannot reach, and it does not cover
a body cut short after the headers arrived.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from .errors import HarvestError

#: HTTP statuses retried by default: rate limited and transient server errors.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Exceptions retried by default: the connection failed, timed out or was cut mid-body.
RETRY_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How long one request may take, and when and how long to wait before retrying it."""

    #: Seconds to connect and seconds between bytes of the response (requests' timeout), per attempt.
    timeout: float = 30.0
    #: Attempts per request, the first one included (1 = never retry).
    max_attempts: int = 5
    #: Backoff before attempt n+1 is ``backoff_base * 2**(n-1)`` seconds, at most ``backoff_max``.
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    #: Each backoff is multiplied by a random factor in ``[1 - jitter, 1 + jitter]`` (0 = no jitter),
    #: then capped to ``backoff_max``.
    jitter: float = 0.5
    #: Longest wait honoured from a ``Retry-After`` header; longer ones are capped to this.
    retry_after_max: float = 120.0
    #: HTTP statuses that are retried.
    retry_statuses: frozenset[int] = field(default=RETRY_STATUSES)

    def __post_init__(self) -> None:
        checks = {
            "timeout": self.timeout > 0,
            "max_attempts": self.max_attempts >= 1,
            "backoff_base": self.backoff_base >= 0,
            "backoff_max": self.backoff_max >= 0,
            "jitter": 0 <= self.jitter <= 1,
            "retry_after_max": self.retry_after_max >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise HarvestError(
                    f"RetryPolicy.{name}={getattr(self, name)!r} is out of range: timeout must be > 0, "
                    "max_attempts >= 1, waits >= 0 and jitter between 0 and 1"
                )
        object.__setattr__(self, "retry_statuses", frozenset(self.retry_statuses))

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), jitter applied."""
        base = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        factor = 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return min(self.backoff_max, max(0.0, base * factor))

    def wait_before_retry(self, attempt: int, response: requests.Response | None,
                          rng: random.Random | None = None) -> float:
        """The wait after a failed attempt: ``Retry-After`` when the server gave one, else backoff."""
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        return self.backoff(attempt, rng)

    def should_retry(self, response: requests.Response | None, error: BaseException | None) -> bool:
        if error is not None:
            return isinstance(error, RETRY_EXCEPTIONS)
        return response is not None and response.status_code in self.retry_statuses


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RateLimiter:
    """A thread-safe token bucket: at most ``rate`` acquisitions a second, bursts up to ``burst``.

    ``rate=None`` means no limit. :meth:`acquire` blocks until a token is free,
    or returns False at once when ``stop`` is set while waiting.
    """

    def __init__(self, rate: float | None, burst: int = 1) -> None:
        if rate is not None and rate <= 0:
            raise HarvestError(f"rate must be a positive number of requests per second or None, got {rate!r}")
        if burst < 1:
            raise HarvestError(f"burst must be at least 1, got {burst!r}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event | None = None) -> bool:
        if self.rate is None:
            return not (stop is not None and stop.is_set())
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return True
                wait = (1 - self._tokens) / self.rate
            if stop is not None:
                if stop.wait(wait):
                    return False
            else:
                time.sleep(wait)

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate!r}, burst={self.burst})"


@dataclass(frozen=True)
class Attempted:
    """What came of a request after its retries: the last response or the last error."""

    response: requests.Response | None
    error: BaseException | None
    attempts: int
    #: Body bytes received over all attempts.
    bytes: int
    seconds: float
    #: True when a stop event ended the retries early.
    stopped: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.response is not None and self.response.ok


def get(
    session: requests.Session,
    url: str,
    *,
    policy: RetryPolicy,
    limiter: RateLimiter | None = None,
    stop: threading.Event | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    rng: random.Random | None = None,
) -> Attempted:
    """GET ``url`` with retries; never raises for HTTP or network failures.

    Each attempt waits for the rate limiter first. Between attempts it sleeps
    the policy's wait, waking early (and giving up) when ``stop`` is set.
    """

    def attempt_once() -> requests.Response:
        return session.get(url, headers=dict(headers or {}), params=params, timeout=policy.timeout)

    return call(attempt_once, policy=policy, limiter=limiter, stop=stop, rng=rng)


def call(
    attempt_once: Callable[[], requests.Response],
    *,
    policy: RetryPolicy,
    limiter: RateLimiter | None = None,
    stop: threading.Event | None = None,
    rng: random.Random | None = None,
) -> Attempted:
    """Run ``attempt_once`` (one HTTP request returning a response) under ``policy``.

    Also usable around a dicomweb-client call whose own retries are off: an
    ``HTTPError`` it raises is treated as its response.
    """
    start = time.monotonic()
    total_bytes = 0
    response: requests.Response | None = None
    error: BaseException | None = None
    attempt = 0
    while attempt < policy.max_attempts:
        if limiter is not None and not limiter.acquire(stop):
            return Attempted(response, error, attempt, total_bytes, time.monotonic() - start, stopped=True)
        attempt += 1
        response, error = None, None
        try:
            response = attempt_once()
        except requests.HTTPError as exc:  # raised by dicomweb-client for 4xx/5xx
            response = exc.response
        except requests.RequestException as exc:
            error = exc
        if response is not None:
            total_bytes += len(response.content or b"")
        if attempt >= policy.max_attempts or not policy.should_retry(response, error):
            break
        wait = policy.wait_before_retry(attempt, response, rng)
        if stop is not None and stop.wait(wait):
            return Attempted(response, error, attempt, total_bytes, time.monotonic() - start, stopped=True)
        if stop is None:
            time.sleep(wait)
    return Attempted(response, error, attempt, total_bytes, time.monotonic() - start)
