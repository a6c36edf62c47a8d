"""cohort/harvest/selection.py: which series a rerun asks for, every status and message (no server)."""

from __future__ import annotations

import pytest

from cohort import HarvestError
from cohort.harvest.selection import RETRYABLE, complete, retry_statuses

HERE, THERE = "http://127.0.0.1:1/dicom-web", "http://127.0.0.1:2/dicom-web"


@pytest.mark.parametrize(("retry", "expected"), [
    ("", frozenset()), (" , ,", frozenset()), ("not_found", {"not_found"}), (" empty , not_found ", {"empty", "not_found"}),
    (["empty", " empty", ""], {"empty"}), ((), frozenset()), ({"not_found"}, {"not_found"}),
])
def test_retry_statuses_accepts_the_final_statuses_without_instances(retry, expected):
    got = retry_statuses(retry)
    assert got == frozenset(expected) and isinstance(got, frozenset)
    assert RETRYABLE == ("not_found", "empty")


@pytest.mark.parametrize(("retry", "why"), [
    ("ok", "ok series are never asked for again (their instances are kept; harvest into a new directory)"),
    (["empty", "ok"], "ok series are never asked for again (their instances are kept; harvest into a new directory)"),
    ("timeout", "timeout is not final: such series are asked for again on every run anyway"),
    ("http_error,malformed", "http_error is not final: such series are asked for again on every run anyway"),
    ("malformed", "malformed is not final: such series are asked for again on every run anyway"),
    ("gone", "unknown status 'gone'"),
    ("not_found, zz, aa", "unknown status 'aa'"),
    ("OK", "unknown status 'OK'"),
])
def test_retry_statuses_refuses_the_others_with_why(retry, why):
    with pytest.raises(HarvestError) as err:
        retry_statuses(retry)
    assert str(err.value) == f"retry: {why}; retry takes not_found and/or empty"


@pytest.mark.parametrize(("final", "retry", "expected"), [
    (None, frozenset(), False),
    (("ok", HERE), frozenset(), True),
    (("ok", THERE), frozenset({"not_found", "empty"}), True),  # ok anywhere: the instances are in the directory
    (("ok", None), frozenset(), True),
    (("not_found", HERE), frozenset(), True),
    (("not_found", THERE), frozenset(), False),  # not found there says nothing about here
    (("not_found", HERE), frozenset({"not_found"}), False),
    (("not_found", HERE), frozenset({"empty"}), True),
    (("empty", HERE), frozenset(), True),
    (("empty", HERE), frozenset({"empty"}), False),
    (("empty", None), frozenset(), False),
    (("http_error", HERE), frozenset(), False),
    (("timeout", HERE), frozenset(), False),
    (("malformed", HERE), frozenset(), False),
])
def test_complete(final, retry, expected):
    assert complete(HERE, final, retry) is expected


def test_complete_with_no_endpoint_recorded_or_asked():
    assert complete(None, ("not_found", None), frozenset()) is True
    assert complete(None, ("not_found", HERE), frozenset()) is False
