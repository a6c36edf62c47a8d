"""RateLimiter, backoff and the retry loop measured on a fake clock: rates, growth, caps and jitter bounds.

``cohort.retry`` reads ``time.monotonic`` and sleeps with ``time.sleep``; the tests swap that
``time`` for a :class:`FakeClock` whose ``sleep`` only moves its own hands, so a limiter at 10
requests/s can be driven through 100 acquisitions in no real time and its rate measured exactly.
Expected values are worked out here from the documented contract (rate, burst, ``base * 2**(n-1)``
capped at ``backoff_max``, a factor in ``[1 - jitter, 1 + jitter]``), never read back from the code.
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
import time as real_time
import types

import pytest
import requests

import cohort.retry as retry
from cohort.errors import HarvestError
from cohort.retry import RateLimiter, RetryPolicy, call, get, parse_retry_after


class FakeClock:
    """Monotonic time that moves only when slept on; refuses to spin forever (a limiter bug).

    Like ``time.monotonic_ns`` it ticks in whole nanoseconds, and like ``time.sleep`` a sleep is
    never shorter than asked (rounded up to the next tick).
    """

    def __init__(self, start: float = 1000.0, max_sleeps: int = 10_000) -> None:
        self.ns = round(start * 1e9)
        self.sleeps: list[float] = []
        self.max_sleeps = max_sleeps

    @property
    def now(self) -> float:
        return self.ns / 1e9

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"negative sleep {seconds}"
        self.sleeps.append(seconds)
        assert len(self.sleeps) <= self.max_sleeps, "the limiter keeps sleeping without letting a call through"
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.ns += math.ceil(seconds * 1e9)


class FakeStop:
    """A stop event on the fake clock: ``wait(t)`` moves the clock by t and answers ``is_set``."""

    def __init__(self, clock: FakeClock, stop_after: int | None = None) -> None:
        self.clock, self.waits, self.stop_after = clock, [], stop_after

    def is_set(self) -> bool:
        return self.stop_after is not None and len(self.waits) >= self.stop_after

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None, "waiting on the stop event without a timeout would hang"
        self.waits.append(timeout)
        self.clock.advance(timeout)
        return self.is_set()


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(retry, "time", types.SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep,
                                                             time=real_time.time))
    return fake


# -- the rate limiter ---------------------------------------------------------
@pytest.mark.parametrize(("rate", "burst"), [(10, 1), (10, 3), (2.5, 4), (1000, 50)])
def test_rate_limiter_lets_through_rate_per_second_over_many_calls(clock, rate, burst):
    limiter = RateLimiter(rate, burst=burst)
    times = []
    for _ in range(200):
        assert limiter.acquire()
        times.append(clock.now)
    # a full bucket lets `burst` through at once; every later call waits 1/rate for its token
    elapsed = times[-1] - times[0]
    assert elapsed == pytest.approx((200 - burst) / rate, abs=1e-6)  # 1 ns rounding a call
    assert times[:burst] == [times[0]] * burst, "the first `burst` calls must not wait"
    # in any window of one second no more than rate + burst calls get through
    for i, t in enumerate(times):
        in_window = sum(1 for u in times[i:] if u < t + 1.0)
        assert in_window <= rate + burst, (t, in_window)


def test_rate_limiter_bucket_is_capped_at_its_burst(clock):
    limiter = RateLimiter(2, burst=4)
    for _ in range(4):
        limiter.acquire()
    clock.advance(3600)  # an hour idle would be 7200 tokens without the cap
    before = len(clock.sleeps)
    got_free = 0
    while len(clock.sleeps) == before:
        limiter.acquire()
        got_free += 1
    assert got_free - 1 == 4  # the 5th call after the idle hour is the first that waits
    assert clock.sleeps[-1] == pytest.approx(0.5)  # 1 / rate


def test_rate_limiter_counts_retries_across_threads_real_clock():
    """A real short run: 4 threads share one limiter at 50/s with burst 2; 30 calls cannot finish early."""
    limiter = RateLimiter(50, burst=2)
    stamps: list[float] = []
    lock = threading.Lock()

    def work():
        for _ in range(30 // 4 + 1):
            limiter.acquire()
            with lock:
                stamps.append(real_time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(4)]
    start = real_time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n = len(stamps)
    # a lower bound only (a loaded machine may be slower, never faster): n calls need (n - burst) / rate s
    assert max(stamps) - start >= (n - 2) / 50 - 1e-3


def test_rate_limiter_waits_on_the_stop_event_for_the_token_gap(clock):
    limiter = RateLimiter(4)
    stop = FakeStop(clock)
    assert all(limiter.acquire(stop) for _ in range(5))
    assert stop.waits == pytest.approx([0.25] * 4)
    assert clock.sleeps == []  # with a stop event it waits on the event, never sleeps
    stopping = FakeStop(clock, stop_after=1)
    assert limiter.acquire(stopping) is False and len(stopping.waits) == 1


def test_rate_limiter_arguments():
    with pytest.raises(HarvestError, match="burst must be at least 1, got 0"):
        RateLimiter(1, burst=0)
    with pytest.raises(HarvestError, match=r"rate must be a positive number .* got -1"):
        RateLimiter(-1)
    stop = threading.Event()
    stop.set()
    assert RateLimiter(None).acquire(stop) is False  # no limit, but a stop still stops
    assert RateLimiter(None).acquire(threading.Event()) is True


# -- backoff ------------------------------------------------------------------
def test_backoff_doubles_from_the_base_and_is_capped():
    policy = RetryPolicy(backoff_base=0.5, backoff_max=30, jitter=0)
    assert [policy.backoff(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    tiny = RetryPolicy(backoff_base=0.01, backoff_max=8, jitter=0)
    assert tiny.backoff(1) == 0.01 and tiny.backoff(4) == pytest.approx(0.08)


@pytest.mark.parametrize("attempt", [1, 3, 5])
def test_backoff_jitter_spreads_over_the_whole_documented_range(attempt):
    policy = RetryPolicy(backoff_base=0.01, backoff_max=100, jitter=0.5)
    base = 0.01 * 2 ** (attempt - 1)
    rng = random.Random(attempt)
    waits = [policy.backoff(attempt, rng) for _ in range(2000)]
    assert all(0.5 * base <= w <= 1.5 * base for w in waits)
    assert min(waits) < 0.52 * base and max(waits) > 1.48 * base  # the range is used, not just bounded
    assert sum(waits) / len(waits) == pytest.approx(base, rel=0.05)  # centred on the un-jittered wait


def test_jittered_backoff_is_capped_too():
    policy = RetryPolicy(backoff_base=1, backoff_max=8, jitter=1)
    rng = random.Random(2)
    waits = [policy.backoff(4, rng) for _ in range(500)]  # 8 s before jitter: factor 0..2 -> 0..16, capped at 8
    assert max(waits) == 8 and min(waits) < 0.5 and all(0 <= w <= 8 for w in waits)


def test_backoff_uses_the_given_random_generator():
    policy = RetryPolicy(backoff_base=1, backoff_max=100, jitter=0.5)
    first = [policy.wait_before_retry(n, None, random.Random(9)) for n in (1, 2, 3)]
    again = [policy.wait_before_retry(n, None, random.Random(9)) for n in (1, 2, 3)]
    assert first == again
    assert first == [policy.backoff(n, random.Random(9)) for n in (1, 2, 3)]


# -- policy arguments ---------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{"max_attempts": 1}, {"backoff_base": 0}, {"backoff_max": 0}, {"jitter": 0},
                                    {"jitter": 1}, {"retry_after_max": 0}, {"backoff_max": 0.5}])
def test_policy_boundaries_are_accepted(kwargs):
    RetryPolicy(**kwargs)


@pytest.mark.parametrize("name, value", [("backoff_base", -1), ("backoff_max", -0.1), ("retry_after_max", -5),
                                         ("jitter", -0.1), ("max_attempts", -1)])
def test_policy_out_of_range_names_the_field(name, value):
    with pytest.raises(HarvestError) as err:
        RetryPolicy(**{name: value})
    assert str(err.value) == (
        f"RetryPolicy.{name}={value!r} is out of range: timeout must be > 0, "
        "max_attempts >= 1, waits >= 0 and jitter between 0 and 1"
    )


def test_retry_statuses_are_frozen_and_used():
    policy = RetryPolicy(retry_statuses={418})
    assert isinstance(policy.retry_statuses, frozenset) and hash(policy)
    assert policy.should_retry(_response(418), None) and not policy.should_retry(_response(503), None)


# -- Retry-After ----------------------------------------------------------------
def test_retry_after_values():
    assert parse_retry_after("0") == 0.0 and parse_retry_after("0.25") == 0.25
    assert parse_retry_after("-3") == 0.0
    then = 1_000_000_000.0  # 2001: far from the real clock, so a mix-up of "now" shows
    assert parse_retry_after(email.utils.formatdate(then + 30, usegmt=True), now=then) == pytest.approx(30)
    soon = email.utils.formatdate(real_time.time() + 100, usegmt=True)
    assert 95 <= parse_retry_after(soon) <= 101


# -- the retry loop -------------------------------------------------------------
def _response(status: int, body: bytes = b"", headers: dict | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers.update(headers or {})
    return response


def _script(*outcomes):
    """attempt_once answering each call with the next response, or raising the next exception."""
    calls = []

    def attempt_once():
        outcome = outcomes[len(calls)]
        calls.append(outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    attempt_once.calls = calls
    return attempt_once


def test_retry_waits_grow_exponentially_between_attempts(clock):
    policy = RetryPolicy(max_attempts=5, backoff_base=0.5, backoff_max=3, jitter=0)
    attempt = _script(*[_response(503, b"busy")] * 5)
    result = call(attempt, policy=policy)
    assert clock.sleeps == [0.5, 1, 2, 3]  # 4 waits between 5 attempts, doubling, capped at 3
    assert (result.attempts, result.bytes, result.response.status_code, result.stopped) == (5, 20, 503, False)
    assert result.seconds == pytest.approx(6.5)  # all of it spent waiting on the fake clock


def test_retry_after_header_sets_the_wait(clock):
    policy = RetryPolicy(max_attempts=3, backoff_base=100, retry_after_max=10)
    attempt = _script(_response(429, b"", {"Retry-After": "7"}), _response(429, b"", {"Retry-After": "99"}),
                      _response(200, b"[]"))
    result = call(attempt, policy=policy)
    assert clock.sleeps == [7, 10] and result.ok and result.attempts == 3


def test_jittered_waits_follow_the_given_generator(clock):
    policy = RetryPolicy(max_attempts=4, backoff_base=1, backoff_max=100, jitter=0.5)
    call(_script(*[_response(500)] * 4), policy=policy, rng=random.Random(4))
    rng = random.Random(4)
    expected = [2 ** (n - 1) * (1 + rng.uniform(-0.5, 0.5)) for n in (1, 2, 3)]
    assert clock.sleeps == pytest.approx(expected)


def test_http_error_raised_by_a_client_counts_as_its_response(clock):
    not_found = _response(404, b"no such series")
    result = call(_script(requests.HTTPError(response=not_found)), policy=RetryPolicy())
    assert result.response is not_found and result.error is None and result.attempts == 1
    assert result.bytes == len(b"no such series") and clock.sleeps == []


def test_stop_during_the_wait_returns_what_came_so_far(clock):
    stop = FakeStop(clock, stop_after=1)
    policy = RetryPolicy(max_attempts=5, backoff_base=2, jitter=0)
    result = call(_script(_response(503, b"busy!")), policy=policy, stop=stop)
    assert stop.waits == [2] and clock.sleeps == []
    assert (result.response.status_code, result.error, result.attempts, result.bytes, result.stopped) == (
        503, None, 1, 5, True)
    assert result.seconds == pytest.approx(2)
    refused = requests.ConnectionError("refused")
    stop = FakeStop(clock, stop_after=1)
    result = call(_script(refused), policy=policy, stop=stop)
    assert result.error is refused and result.response is None and result.stopped


class _Gate:
    """A limiter that lets the first ``n`` acquisitions through, then reports a stop."""

    def __init__(self, n: int) -> None:
        self.n, self.stops = n, []

    def acquire(self, stop=None) -> bool:
        self.stops.append(stop)
        self.n -= 1
        return self.n >= 0


def test_stop_while_waiting_for_the_limiter(clock):
    policy = RetryPolicy(max_attempts=5, backoff_base=1, jitter=0)
    stop = FakeStop(clock)
    result = call(_script(_response(502, b"gateway")), policy=policy, limiter=_Gate(1), stop=stop)
    assert (result.response.status_code, result.error, result.attempts, result.bytes, result.stopped) == (
        502, None, 1, 7, True)
    assert result.seconds == pytest.approx(1)
    refused = requests.ConnectionError("refused")
    gate = _Gate(1)
    result = call(_script(refused), policy=policy, limiter=gate, stop=stop)
    assert result.error is refused and result.response is None and result.stopped
    assert gate.stops == [stop, stop]  # the limiter is given the stop event
    never = call(_script(), policy=policy, limiter=_Gate(0))
    assert (never.response, never.error, never.attempts, never.bytes, never.stopped) == (None, None, 0, 0, True)


def test_limiter_that_lets_through_does_not_stop(clock):
    result = call(_script(_response(200, b"[]")), policy=RetryPolicy(), limiter=RateLimiter(None))
    assert result.ok and not result.stopped and result.attempts == 1


def test_get_passes_headers_params_limiter_stop_and_rng(clock, monkeypatch):
    seen = []

    class Session:
        def get(self, url, headers=None, params=None, timeout=None):
            seen.append((url, headers, params, timeout))
            return _response(503, b"x")

    policy = RetryPolicy(timeout=3, max_attempts=3, backoff_base=1, backoff_max=100, jitter=0.5)
    result = get(Session(), "http://127.0.0.1:9/m", policy=policy, headers={"Accept": "application/dicom+json"},
                 params={"includefield": "all"}, rng=random.Random(6))
    assert seen == [("http://127.0.0.1:9/m", {"Accept": "application/dicom+json"}, {"includefield": "all"}, 3)] * 3
    rng = random.Random(6)
    assert clock.sleeps == pytest.approx([2 ** (n - 1) * (1 + rng.uniform(-0.5, 0.5)) for n in (1, 2)])
    assert result.attempts == 3
    stop = FakeStop(clock, stop_after=1)
    stopped = get(Session(), "http://127.0.0.1:9/m", policy=policy, stop=stop, limiter=_Gate(5))
    assert stopped.stopped and stopped.attempts == 1 and len(stop.waits) == 1
    gated = get(Session(), "http://127.0.0.1:9/m", policy=policy, limiter=_Gate(0))
    assert gated.stopped and gated.attempts == 0
