"""Coverage routing against an independent reference router, with hypothesis choosing the cases.

``reference_route`` below is written from the rules in ``cohort/coverage.py``'s module docstring,
one series at a time in plain Python over rows read with pyarrow from idc-index-data's Parquet
files; ``route`` does the same in one DuckDB query. Hypothesis draws a set of real series (current
ones with earlier revisions, ones in buckets Google does not replicate, ones that left IDC, plain
ones), a policy (prefer Google, prefer the proxy, pinned to a release), the newest Google store and
the first store, and the two must agree on every series: endpoint, the release served, the revision
wanted and whether the proxy would serve other data.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import idc_index_data
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohort import Cohort
from cohort.coverage import Policy, route

GOOGLE_BUCKETS = {"idc-open-data"}
CURRENT = int(idc_index_data.__version__.split(".")[0])


@dataclass(frozen=True)
class Revision:
    made: int  # the release that made this revision
    last: int  # the last release that has it
    bucket: str


@dataclass(frozen=True)
class Series:
    uid: str
    first: int  # the release that first had the series
    current: Revision | None  # the index row; None when the series left IDC
    prior: tuple[Revision, ...]  # prior_versions_index rows


def _series_pool() -> dict[str, Series]:
    """A deterministic sample of real series of every kind, read with pyarrow (not DuckDB)."""
    index = pq.read_table(idc_index_data.IDC_INDEX_PARQUET_FILEPATH, columns=[
        "SeriesInstanceUID", "aws_bucket", "series_init_idc_version", "series_revised_idc_version"])
    prior = pq.read_table(idc_index_data.PRIOR_VERSIONS_INDEX_PARQUET_FILEPATH, columns=[
        "SeriesInstanceUID", "aws_bucket", "min_idc_version", "max_idc_version"])
    prior_uids = pc.unique(prior["SeriesInstanceUID"])
    in_index = pc.is_in(index["SeriesInstanceUID"], value_set=prior_uids)
    revised = index.filter(in_index)  # current series with earlier revisions
    plain = index.filter(pc.invert(in_index))
    other_bucket = plain.filter(pc.not_equal(plain["aws_bucket"], "idc-open-data"))
    gone_uids = pc.filter(prior_uids, pc.invert(pc.is_in(prior_uids, value_set=index["SeriesInstanceUID"])))
    picks = set()
    for table in (revised, plain, other_bucket):
        uids = table["SeriesInstanceUID"]
        picks |= set(uids.take(list(range(0, len(uids), max(1, len(uids) // 40)))).to_pylist())
    # revised series whose earlier revisions are in another bucket: where a pin changes the store
    prior_other = prior.filter(pc.not_equal(prior["aws_bucket"], "idc-open-data"))["SeriesInstanceUID"]
    picks |= set(pc.filter(prior_other, pc.is_in(prior_other, value_set=index["SeriesInstanceUID"]))[:20].to_pylist())
    picks |= set(gone_uids.take(list(range(0, len(gone_uids), max(1, len(gone_uids) // 40)))).to_pylist())
    prior_rows = defaultdict(list)
    for r in prior.filter(pc.is_in(prior["SeriesInstanceUID"], value_set=pa.array(sorted(picks)))).to_pylist():
        prior_rows[r["SeriesInstanceUID"]].append(Revision(r["min_idc_version"], r["max_idc_version"], r["aws_bucket"]))
    current = {r["SeriesInstanceUID"]: r for r in index.filter(
        pc.is_in(index["SeriesInstanceUID"], value_set=pa.array(sorted(picks)))).to_pylist()}
    pool = {}
    for uid in sorted(picks):
        row = current.get(uid)
        revisions = tuple(sorted(prior_rows[uid], key=lambda v: v.made))
        if row is not None:
            now = Revision(row["series_revised_idc_version"], CURRENT, row["aws_bucket"])
            pool[uid] = Series(uid, row["series_init_idc_version"], now, revisions)
        else:
            pool[uid] = Series(uid, min(v.made for v in revisions), None, revisions)
    return pool


POOL = _series_pool()


def reference_route(s: Series, mode: str, pin: int | None, newest: int | None, first: int) -> dict:
    """The route of one series, from the rules in the docstring of cohort/coverage.py."""
    newest_rev = s.current if s.current is not None else max(s.prior, key=lambda v: v.last)
    in_current = s.current is not None
    if pin is None or newest_rev.made <= pin <= newest_rev.last:
        wanted, is_newest = newest_rev, True
    else:
        wanted = next((v for v in s.prior if v.made <= pin <= v.last), None)
        is_newest = False
    proxy_ok = wanted is not None and is_newest and in_current
    store = pin if pin is not None else (min(wanted.last, newest) if newest is not None and wanted else None)
    google_ok = (wanted is not None and newest is not None and wanted.bucket in GOOGLE_BUCKETS
                 and max(wanted.made, first) <= store <= min(wanted.last, newest))
    if mode == "proxy" and proxy_ok:
        endpoint, served = "idc-proxy", CURRENT
    elif google_ok:
        endpoint, served = f"idc-store-v{store}", store
    elif proxy_ok:
        endpoint, served = "idc-proxy", CURRENT
    else:
        endpoint, served = "unavailable", None
    return {"endpoint": endpoint, "served_version": served, "in_current_release": in_current,
            "revision_version": wanted.made if wanted else None, "proxy_differs": not proxy_ok}


def test_the_pool_has_every_kind_of_series():
    kinds = {
        "revised": [s for s in POOL.values() if s.current and s.prior],
        "left IDC": [s for s in POOL.values() if s.current is None],
        "not replicated": [s for s in POOL.values() if s.current and s.current.bucket not in GOOGLE_BUCKETS],
        "plain": [s for s in POOL.values() if s.current and not s.prior],
    }
    assert all(len(v) >= 20 for v in kinds.values()), {k: len(v) for k, v in kinds.items()}


policies = st.one_of(st.sampled_from(["google", "proxy"]), st.integers(1, CURRENT))
newest_stores = st.one_of(st.none(), st.integers(1, CURRENT))


@pytest.mark.slow  # one route() a case: ~3 s each on an idle machine
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uids=st.lists(st.sampled_from(sorted(POOL)), min_size=1, max_size=25, unique=True),
       policy=policies, newest=newest_stores, first=st.integers(1, 12))
def test_route_agrees_with_the_reference(catalog, uids, policy, newest, first):
    cohort = Cohort.from_uids(uids, catalog=catalog)
    report = route(cohort, policy, newest_google_store=newest, first_google_store=first)
    got = {r["SeriesInstanceUID"]: r for r in report.routes.to_pylist()}
    assert sorted(got) == sorted(uids)  # one route per series, none lost or doubled
    pin = policy if isinstance(policy, int) else None
    mode = policy if isinstance(policy, str) else "pinned"
    assumed = CURRENT - 1 if newest is None else newest  # no store given: the index's release minus lag 1
    store = assumed if assumed >= first else None
    for uid in uids:
        want = reference_route(POOL[uid], mode, pin, store, first)
        row = got[uid]
        assert {k: row[k] for k in want} == want, (uid, POOL[uid], row["reason"])
        assert (row["series_url"] is None) == (want["endpoint"] == "unavailable")
        if row["series_url"] is not None:
            assert row["series_url"].startswith(report.endpoints[row["endpoint"]].url + "/studies/")
            assert row["series_url"].endswith(f"/series/{uid}")


@pytest.mark.parametrize("policy", ["google", "proxy", 1, CURRENT - 5])
def test_whole_pool_agrees_with_the_reference(catalog, policy):
    """Every series of the pool at once, at the default newest store (the index's release minus 1)."""
    cohort = Cohort.from_uids(sorted(POOL), catalog=catalog)
    report = route(cohort, policy)
    pin = policy if isinstance(policy, int) else None
    mode = policy if isinstance(policy, str) else "pinned"
    mismatches = []
    for row in report.routes.to_pylist():
        want = reference_route(POOL[row["SeriesInstanceUID"]], mode, pin, CURRENT - 1, 1)
        if {k: row[k] for k in want} != want:
            mismatches.append((row["SeriesInstanceUID"], want, row["endpoint"], row["reason"]))
    assert not mismatches, mismatches[:3]
    assert report.routes.num_rows == len(POOL)
    endpoints = set(report.routes.column("endpoint").to_pylist())
    assert len(endpoints) >= 2, endpoints  # the pool exercises more than one outcome


def test_policy_parse_forms():
    assert Policy.parse("v9") == Policy.pinned(9) == Policy.parse(9) == Policy.parse(" V9 ")
    assert str(Policy.parse("google")) == "prefer google" and str(Policy.parse("proxy")) == "prefer proxy"
