"""cohort/coverage.py's exact outcomes that the mutation run (``bench/mutation.py coverage``) showed
untested: policies and their messages, the checks of route()'s settings, the endpoints a report
names, the report's tables and texts, discover_newest_store and verify against a scripted DICOMweb
server on 127.0.0.1 (each answer chosen per request: the faults are injected, not waited for).

Expected values are written out by hand or read from the shipped index with pyarrow.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import idc_index_data
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import requests

from cohort import Cohort, CoverageError, custom
from cohort.coverage import (
    PREFER_GOOGLE,
    PREFER_PROXY,
    CoverageReport,
    Policy,
    PolicyKind,
    Verification,
    default_policy,
    discover_newest_store,
    route,
    sql_value,
    verify,
)
from cohort.endpoints import BasicAuth, BearerTokenAuth, Endpoint, EndpointKind, NoAuth, google_store, idc_proxy
from cohort.retry import RateLimiter, RetryPolicy

CURRENT = int(idc_index_data.__version__.split(".")[0])
ONCE = RetryPolicy(max_attempts=1)


# -- policies ----------------------------------------------------------------------------------------
def test_policy_checks_its_fields():
    with pytest.raises(CoverageError) as info:
        Policy(PolicyKind.PINNED)
    assert str(info.value) == ("a pinned policy needs a release, and only a pinned policy has one: "
                               "use Policy.pinned(N)")
    with pytest.raises(CoverageError, match=r"^a pinned policy needs a release"):
        Policy(PolicyKind.PREFER_GOOGLE, release=9)
    with pytest.raises(CoverageError) as info:
        Policy(PolicyKind.ENDPOINT)
    assert str(info.value) == ("an endpoint policy needs an endpoint, and only it has one: "
                               "use Policy.explicit(cohort.custom(URL))")
    with pytest.raises(CoverageError, match=r"^an endpoint policy needs an endpoint"):
        Policy(PolicyKind.PREFER_PROXY, endpoint=custom("http://127.0.0.1:9/x"))
    assert Policy(PolicyKind.PINNED, release=0).release == 0


def test_policy_parse_every_form():
    local = custom("http://127.0.0.1:9/dicom-web", name="local")
    assert Policy.parse(PREFER_PROXY) is PREFER_PROXY
    assert Policy.parse(local) == Policy(PolicyKind.ENDPOINT, endpoint=local)
    assert Policy.parse(12) == Policy(PolicyKind.PINNED, release=12)
    assert Policy.pinned("7").release == 7  # made an int
    assert Policy.parse(PolicyKind.PREFER_GOOGLE) == PREFER_GOOGLE
    assert Policy.parse(PolicyKind.PREFER_PROXY) == PREFER_PROXY
    assert Policy.parse("  Google ") == PREFER_GOOGLE and Policy.parse("PROXY") == PREFER_PROXY
    assert Policy.parse("V9") == Policy.parse(" v9 ") == Policy.parse("9") == Policy(PolicyKind.PINNED, release=9)
    for bad in (True, PolicyKind.PINNED, PolicyKind.ENDPOINT, "v", "vv9x", "9.5", "pinned", 2.0, None):
        with pytest.raises(CoverageError) as info:
            Policy.parse(bad)
        assert str(info.value) == (f"unknown routing policy {bad!r}: use 'google', 'proxy', a release number to pin "
                                   "(e.g. 'v9'), or an Endpoint")


def test_policy_texts():
    assert str(PREFER_GOOGLE) == "prefer google"
    assert str(PREFER_PROXY) == "prefer proxy"
    assert str(Policy.pinned(3)) == "pinned to v3"
    assert str(Policy.explicit(custom("http://127.0.0.1:9/x", name="mine"))) == "explicit endpoint mine"
    assert [k.value for k in PolicyKind] == ["google", "proxy", "pinned", "endpoint"]


def test_default_policy_follows_the_credentials_file(tmp_path, monkeypatch):
    key = tmp_path / "adc.json"
    key.write_text("{}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    assert default_policy() is PREFER_GOOGLE
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    assert default_policy() is PREFER_PROXY


def test_sql_value():
    assert sql_value(None) == "NULL"
    assert sql_value(True) == "true" and sql_value(False) == "false"
    assert sql_value(0) == "0" and sql_value(-3) == "-3"
    assert sql_value("it's") == "'it''s'"
    assert sql_value(["a", 1, None, (True,)]) == "['a', 1, NULL, [true]]"
    assert sql_value([]) == "[]"
    with pytest.raises(TypeError) as info:
        sql_value(1.5)
    assert str(info.value) == "no SQL literal for float"


# -- route: settings, endpoints, the report ---------------------------------------------------------
def _read(catalog, sql: str) -> list[dict]:
    """Rows of plain SQL over the index tables (DuckDB's own reading, not coverage.py's)."""
    cur = catalog.connection.cursor()
    try:
        result = cur.execute(sql)
        names = [d[0] for d in result.description]
        return [dict(zip(names, row)) for row in result.fetchall()]
    finally:
        cur.close()


@pytest.fixture(scope="module")
def paad(catalog) -> dict:
    """tcga_paad series in idc-open-data: three last revised before the current release, two in it."""
    rows = _read(catalog, "SELECT SeriesInstanceUID, StudyInstanceUID, series_size_MB, series_revised_idc_version AS made "
                          "FROM index WHERE collection_id = 'tcga_paad' AND aws_bucket = 'idc-open-data' ORDER BY 1")
    old = [r for r in rows if r["made"] < CURRENT]
    new = [r for r in rows if r["made"] == CURRENT]
    assert len(old) >= 3 and len(new) >= 2
    return {"old": old[:3], "new": new[:2]}


def test_route_checks_its_settings(catalog, paad):
    cohort = Cohort.from_uids([paad["old"][0]["SeriesInstanceUID"]], catalog=catalog)
    with pytest.raises(CoverageError) as info:
        route(cohort, "google", first_google_store=0)
    assert str(info.value) == "first_google_store must be 1 or later, got 0"
    with pytest.raises(CoverageError) as info:
        route(cohort, "google", newest_google_store=CURRENT + 1)
    assert str(info.value) == (f"newest Google store v{CURRENT + 1} is newer than the index (IDC v{CURRENT}); "
                               "update idc-index-data or give a store no newer than the index")
    for pin in (0, CURRENT + 1):
        with pytest.raises(CoverageError) as info:
            route(cohort, pin)
        assert str(info.value) == f"cannot pin release v{pin}: the index is IDC v{CURRENT}, so pin 1 to {CURRENT}"
    # the bounds themselves are accepted
    assert route(cohort, "google", newest_google_store=CURRENT).newest_google_store == CURRENT
    assert route(cohort, 1).policy == Policy.pinned(1) and route(cohort, CURRENT).policy == Policy.pinned(CURRENT)
    one = route(cohort, "google", newest_google_store=1, first_google_store=1)
    assert one.newest_google_store == 1  # a store equal to the first one is a store
    assert route(cohort, "google", newest_google_store=4, first_google_store=5).newest_google_store is None


def test_route_without_a_policy_uses_the_default(catalog, paad, tmp_path, monkeypatch):
    cohort = Cohort.from_uids([paad["old"][0]["SeriesInstanceUID"]], catalog=catalog)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    assert route(cohort).policy == PREFER_PROXY
    key = tmp_path / "adc.json"
    key.write_text("{}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    report = route(cohort)
    assert report.policy == PREFER_GOOGLE
    assert report.newest_google_store == CURRENT - 1  # lag 1 by default
    assert route(cohort, lag=3).newest_google_store == CURRENT - 3


def test_the_endpoints_of_a_report(catalog, paad, caplog):
    old, new = paad["old"], paad["new"]
    cohort = Cohort.from_uids([r["SeriesInstanceUID"] for r in old + new], catalog=catalog)
    caplog.set_level(logging.INFO, logger="cohort.coverage")
    report = route(cohort, "google", newest_google_store=CURRENT - 1)
    assert f"routed 5 series (prefer google, newest Google store {CURRENT - 1})" in caplog.messages
    store = google_store(CURRENT - 1)
    assert report.endpoints == {store.name: store, "idc-proxy": idc_proxy()}
    got = {r["SeriesInstanceUID"]: r for r in report.routes.to_pylist()}
    for r in old:
        assert got[r["SeriesInstanceUID"]]["endpoint"] == store.name
        assert got[r["SeriesInstanceUID"]]["served_version"] == CURRENT - 1
    for r in new:
        assert got[r["SeriesInstanceUID"]]["endpoint"] == "idc-proxy"
    pinned = route(cohort, 1)  # tcga_paad was not in v1: nobody serves it
    assert pinned.endpoints == {}
    assert set(pinned.routes.column("endpoint").to_pylist()) == {"unavailable"}
    assert pinned.unavailable == 5


def test_a_series_that_left_idc_is_routed_with_the_current_ones(catalog):
    rows = _read(catalog, "SELECT SeriesInstanceUID, aws_bucket, min_idc_version, max_idc_version FROM prior_versions_index "
                          "WHERE SeriesInstanceUID IN (SELECT min(SeriesInstanceUID) FROM prior_versions_index p "
                          "ANTI JOIN index USING (SeriesInstanceUID) WHERE p.aws_bucket = 'idc-open-data')")
    uid = rows[0]["SeriesInstanceUID"]
    newest = max(rows, key=lambda r: r["max_idc_version"])
    assert newest["aws_bucket"] == "idc-open-data" and newest["max_idc_version"] < CURRENT
    current_uid = _read(catalog, "SELECT min(SeriesInstanceUID) AS u FROM index")[0]["u"]
    report = route(Cohort.from_uids([current_uid, uid], catalog=catalog), "google", newest_google_store=CURRENT - 1)
    got = {r["SeriesInstanceUID"]: r for r in report.routes.to_pylist()}
    assert set(got) == {current_uid, uid}
    assert got[uid]["in_current_release"] is False and got[current_uid]["in_current_release"] is True
    assert got[uid]["revision_version"] == newest["min_idc_version"]
    store = min(newest["max_idc_version"], CURRENT - 1)
    assert got[uid]["endpoint"] == f"idc-store-v{store}"
    assert report.routes.schema.field("in_current_release").type == pa.bool_()


def test_report_tables_and_texts(catalog, paad):
    old, new = paad["old"], paad["new"]
    cohort = Cohort.from_uids([r["SeriesInstanceUID"] for r in old + new], catalog=catalog)
    report = route(cohort, "google", newest_google_store=CURRENT - 1)
    store = f"idc-store-v{CURRENT - 1}"
    old_gb = round(sum(r["series_size_MB"] for r in old) / 1000, 3)
    new_gb = round(sum(r["series_size_MB"] for r in new) / 1000, 3)
    assert report.by_endpoint().to_dict("records") == [
        {"endpoint": store, "series": 3, "size_GB": old_gb}, {"endpoint": "idc-proxy", "series": 2, "size_GB": new_gb}]
    by_collection = report.by_collection().to_dict("records")
    assert by_collection == [{"collection_id": "tcga_paad", "endpoint": store, "series": 3, "size_GB": old_gb},
                             {"collection_id": "tcga_paad", "endpoint": "idc-proxy", "series": 2, "size_GB": new_gb}]
    assert list(report.by_reason().columns) == ["endpoint", "reason", "series", "size_GB"]
    assert report.unavailable == 0
    head = f"5 series routed (prefer google; IDC v{CURRENT}, newest Google store v{CURRENT - 1})"
    assert report.summary_text() == "\n".join([
        head, f"  {store}: 3 series, {old_gb:,.2f} GB", f"  idc-proxy: 2 series, {new_gb:,.2f} GB"])
    assert repr(report) == f"<CoverageReport {head}>"
    html = report._repr_html_()
    assert html.startswith(f"<div><b>Coverage</b> {head}<br>  {store}: 3 series")
    assert html.endswith("</table></div>") and "<table" in html
    assert len(report.to_pandas()) == 5


def test_report_ties_sort_by_name_and_unknown_sizes_count_zero(catalog, paad):
    # pinned to v1 (before tcga_paad): no revision, no size; one group
    uids = [r["SeriesInstanceUID"] for r in paad["old"][:2]]
    report = route(Cohort.from_uids(uids, catalog=catalog), 1)
    assert report.by_endpoint().to_dict("records") == [{"endpoint": "unavailable", "series": 2, "size_GB": 0.0}]
    text = report.summary_text()
    assert text.splitlines()[1:] == ["  unavailable: 2 series, 0.00 GB",
                                     "  the proxy would serve different data, or nothing, for 2 series"]
    assert "newest Google store v" in text.splitlines()[0]
    none = route(Cohort.from_uids(uids, catalog=catalog), "proxy", newest_google_store=3, first_google_store=4)
    assert f"series routed (prefer proxy; IDC v{CURRENT}, newest Google store none)" in none.summary_text()
    # equal counts: by name
    one_each = route(Cohort.from_uids([paad["old"][0]["SeriesInstanceUID"], paad["new"][0]["SeriesInstanceUID"]],
                           catalog=catalog), "google", newest_google_store=CURRENT - 1)
    assert [r["endpoint"] for r in one_each.by_endpoint().to_dict("records")] == ["idc-proxy", f"idc-store-v{CURRENT - 1}"]


def test_report_html_escapes():
    routes = pa.table({"SeriesInstanceUID": ["1.2"], "collection_id": ["c"], "endpoint": ["<b>&"],
                       "series_size_MB": [1500.0], "series_url": ["u"], "proxy_differs": [False],
                       "reason": ["r<"]})
    report = CoverageReport(routes, {}, Policy.explicit(custom("http://127.0.0.1:9", name="a<b")), CURRENT, None)
    assert report.summary_text() == f"1 series routed (explicit endpoint a<b; IDC v{CURRENT}, newest Google store none)\n  <b>&: 1 series, 1.50 GB"
    html = report._repr_html_()
    assert html.startswith(f"<div><b>Coverage</b> 1 series routed (explicit endpoint a&lt;b; IDC v{CURRENT}, "
                           "newest Google store none)<br>  &lt;b&gt;&amp;: 1 series, 1.50 GB<table")


# -- a scripted DICOMweb server ---------------------------------------------------------------------
class _Scripted(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        with self.server.lock:
            self.server.requests.append((url.path, query, self.headers.get("Accept"), self.headers.get("Authorization")))
            self.server.active += 1
            self.server.most = max(self.server.most, self.server.active)
        try:
            key = query["SeriesInstanceUID"][0] if "SeriesInstanceUID" in query else url.path
            plan = self.server.plan[key]  # (status, body) every time, or a list of them in turn (the last repeats)
            status, body = (plan.pop(0) if len(plan) > 1 else plan[0]) if isinstance(plan, list) else plan
            if self.server.hold:
                self.server.hold.wait(0.2)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(0 if status == 204 else len(data)))
            self.end_headers()
            if status != 204:
                self.wfile.write(data)
        finally:
            with self.server.lock:
                self.server.active -= 1

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    httpd.plan, httpd.requests, httpd.lock, httpd.active, httpd.most, httpd.hold = {}, [], threading.Lock(), 0, 0, None
    httpd.base = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- discover_newest_store ---------------------------------------------------------------------------
def _stores(server):
    return lambda n: custom(f"{server.base}/v{n}", name=f"store-v{n}")


def test_discover_probes_down_to_the_first_store_that_answers(server):
    server.plan = {"/v25/studies": (404, []), "/v24/studies": (404, []), "/v23/studies": (200, [])}
    assert discover_newest_store(25, store=_stores(server), policy=ONCE) == 23
    assert server.requests == [(f"/v{n}/studies", {"limit": ["1"]}, "application/dicom+json", None) for n in (25, 24, 23)]
    server.requests.clear()
    server.plan = {"/v9/studies": (204, b"")}
    assert discover_newest_store(9, store=_stores(server), policy=ONCE) == 9


def test_discover_stops_after_max_probes_or_the_first_store(server):
    server.plan = {f"/v{n}/studies": (404, []) for n in range(1, 26)}
    assert discover_newest_store(25, store=_stores(server), policy=ONCE) is None
    assert [r[0] for r in server.requests] == ["/v25/studies", "/v24/studies", "/v23/studies", "/v22/studies"]
    server.requests.clear()
    assert discover_newest_store(25, first=24, store=_stores(server), policy=ONCE) is None
    assert [r[0] for r in server.requests] == ["/v25/studies", "/v24/studies"]
    server.requests.clear()
    assert discover_newest_store(25, store=_stores(server), policy=ONCE, max_probes=2) is None
    assert [r[0] for r in server.requests] == ["/v25/studies", "/v24/studies"]
    server.requests.clear()
    assert discover_newest_store(3, store=_stores(server), policy=ONCE) is None  # stores start at v1
    assert [r[0] for r in server.requests] == ["/v3/studies", "/v2/studies", "/v1/studies"]


def test_discover_refuses_to_guess_on_other_answers(server):
    server.plan = {"/v25/studies": (500, [])}
    with pytest.raises(CoverageError) as info:
        discover_newest_store(25, store=_stores(server), policy=ONCE)
    assert str(info.value) == (f"could not tell whether store-v25 exists (HTTP 500 from {server.base}/v25/studies); "
                               "give the newest store yourself (newest_google_store=N, --newest-store N)")
    dead = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(CoverageError) as info:
        discover_newest_store(5, store=lambda n: custom(f"{dead}/v{n}", name=f"s{n}"), policy=ONCE)
    assert str(info.value) == (f"could not tell whether s5 exists (ConnectionError from {dead}/v5/studies); "
                               "give the newest store yourself (newest_google_store=N, --newest-store N)")


def test_discover_retries_three_times_by_default(server):
    server.plan = {"/v25/studies": [(503, []), (503, []), (503, []), (200, [])]}
    with pytest.raises(CoverageError, match=r"\(HTTP 503 from "):
        discover_newest_store(25, store=_stores(server))
    assert len(server.requests) == 3
    server.requests.clear()
    server.plan = {"/v25/studies": [(503, []), (503, []), (200, [])]}
    assert discover_newest_store(25, store=_stores(server)) == 25


# -- verify --------------------------------------------------------------------------------------------
def _present(uid):
    return 200, [{"0020000E": {"vr": "UI", "Value": [uid]}}]


@pytest.fixture(scope="module")
def nine(catalog) -> list[tuple[str, str]]:
    """(StudyInstanceUID, SeriesInstanceUID) of nine tcga_paad series."""
    rows = _read(catalog, "SELECT StudyInstanceUID, SeriesInstanceUID FROM index WHERE collection_id = 'tcga_paad' "
                          "ORDER BY 1, 2 LIMIT 9")
    return [(r["StudyInstanceUID"], r["SeriesInstanceUID"]) for r in rows]


def test_verify_reports_each_answer(server, catalog, nine):
    uids = [s for _, s in nine]
    server.plan = {
        uids[0]: _present(uids[0]),
        uids[1]: (204, b""),
        uids[2]: _present("1.2.3.another"),
        uids[3]: (200, b"not json"),
        uids[4]: (404, []),
        uids[5]: [(500, []), (500, [])],
        uids[6]: (200, {"0020000E": 1}),  # an object, not a list
        uids[7]: (200, [{}]),  # an item without the UID
        uids[8]: (200, [{"0020000E": {"vr": "UI", "Value": []}}]),
    }
    report = route(Cohort.from_uids(uids, catalog=catalog), custom(server.base + "/dw", name="scripted"))
    checked = verify(report, policy=RetryPolicy(max_attempts=2, backoff_base=0, jitter=0), rate=None)
    got = {r["SeriesInstanceUID"]: r for r in checked.results.to_pylist()}
    assert checked.results.column_names == ["StudyInstanceUID", "SeriesInstanceUID", "endpoint", "status",
                                            "http_status", "attempts", "detail"]
    want = [("present", 200, 1, None), ("missing", 204, 1, None), ("missing", 200, 1, None),
            ("error", 200, 1, "the answer is not a DICOM JSON list"), ("error", 404, 1, "HTTP 404"),
            ("error", 500, 2, "HTTP 500"), ("error", 200, 1, "the answer is not a DICOM JSON list"),
            ("missing", 200, 1, None), ("error", 200, 1, "the answer is not a DICOM JSON list")]
    study = dict((s, st) for st, s in nine)
    for uid, (status, http, attempts, detail) in zip(uids, want):
        assert got[uid] == {"StudyInstanceUID": study[uid], "SeriesInstanceUID": uid, "endpoint": "scripted",
                            "status": status, "http_status": http, "attempts": attempts, "detail": detail}, uid
    asked = sorted((path, q["SeriesInstanceUID"][0], accept) for path, q, accept, _ in server.requests)
    assert asked == sorted([(f"/dw/studies/{study[u]}/series", u, "application/dicom+json") for u in uids]
                           + [(f"/dw/studies/{study[uids[5]]}/series", uids[5], "application/dicom+json")])
    assert checked.counts == {"present": 1, "missing": 3, "error": 5}
    assert checked.unavailable == 0
    assert checked.summary_text() == "checked 9 series: 1 present, 3 missing, 5 errors"
    mism = checked.mismatches()
    assert sorted(mism["SeriesInstanceUID"]) == sorted(uids[1:]) and list(mism.index) == list(range(8))
    assert len(checked.to_pandas()) == 9


def test_verify_skips_unavailable_series_and_counts_them(server, catalog, nine):
    uids = [s for _, s in nine[:4]]
    server.plan = {u: _present(u) for u in uids}
    report = route(Cohort.from_uids(uids, catalog=catalog), custom(server.base, name="scripted"))
    endpoint = pc.if_else(pc.is_in(report.routes["SeriesInstanceUID"], value_set=pa.array(uids[:1])),
                          "unavailable", report.routes["endpoint"])
    routes = report.routes.set_column(report.routes.schema.get_field_index("endpoint"), "endpoint", endpoint)
    partly = CoverageReport(routes, report.endpoints, report.policy, report.idc_version, None)
    checked = partly.verify(rate=None, policy=ONCE)
    assert sorted(checked.results.column("SeriesInstanceUID").to_pylist()) == sorted(uids[1:])
    assert checked.unavailable == 1
    assert checked.summary_text() == "checked 3 series: 3 present, 0 missing, 0 errors (1 unavailable series not checked)"
    assert [q["SeriesInstanceUID"][0] for _, q, _, _ in server.requests if uids[0] in q["SeriesInstanceUID"]] == []


def test_verify_samples_reproducibly(server, catalog, nine):
    uids = [s for _, s in nine]
    server.plan = {u: _present(u) for u in uids}
    report = route(Cohort.from_uids(uids, catalog=catalog), custom(server.base, name="scripted"))
    order = report.routes.column("SeriesInstanceUID").to_pylist()
    every = verify(report, len(uids), rate=None, policy=ONCE)  # a sample as large as the cohort: all, in order
    assert every.results.column("SeriesInstanceUID").to_pylist() == order
    samples = {seed: verify(report, 3, seed=seed, rate=None, policy=ONCE).results.column("SeriesInstanceUID").to_pylist()
               for seed in range(4)}
    for got in samples.values():
        assert len(got) == len(set(got)) == 3 and set(got) <= set(uids)
    assert verify(report, 3, rate=None, policy=ONCE).results.column("SeriesInstanceUID").to_pylist() == samples[0]
    assert verify(report, 3, seed=2, rate=None, policy=ONCE).results.column("SeriesInstanceUID").to_pylist() == samples[2]
    assert len({tuple(s) for s in samples.values()}) > 1
    assert verify(report, 0, rate=None, policy=ONCE).results.num_rows == 0


def test_verify_workers_and_rate(server, catalog, nine):
    uids = [s for _, s in nine[:4]]
    server.plan = {u: _present(u) for u in uids}
    report = route(Cohort.from_uids(uids, catalog=catalog), custom(server.base, name="scripted"))
    with pytest.raises(CoverageError) as info:
        verify(report, workers=0)
    assert str(info.value) == "workers must be at least 1, got 0"
    server.hold = threading.Event()  # each answer takes 0.2 s: requests in flight together would overlap
    one = verify(report, workers=1, policy=ONCE)  # the default rate (10 a second) with a burst of 1
    assert one.counts == {"present": 4, "missing": 0, "error": 0}
    assert server.most == 1
    assert verify(report, workers=2, rate=1000.0, policy=ONCE).counts["present"] == 4


def test_verify_without_credentials_is_an_error_per_series(server, catalog, nine, monkeypatch):
    uids = [s for _, s in nine[:2]]
    monkeypatch.delenv("H_MUTCOV_USER", raising=False)
    report = route(Cohort.from_uids(uids, catalog=catalog),
                   custom(server.base, BasicAuth("H_MUTCOV_USER", "H_MUTCOV_PASSWORD"), name="locked"))
    checked = verify(report, rate=None, policy=ONCE)
    detail = "basic authentication needs the environment variables H_MUTCOV_USER and H_MUTCOV_PASSWORD"
    got = sorted(checked.results.to_pylist(), key=lambda r: r["SeriesInstanceUID"])
    assert got == [{"StudyInstanceUID": st, "SeriesInstanceUID": s, "endpoint": "locked", "status": "error",
                    "http_status": None, "attempts": 0, "detail": detail} for st, s in sorted(nine[:2], key=lambda p: p[1])]
    assert server.requests == []
    monkeypatch.setenv("H_MUTCOV_USER", "u")
    monkeypatch.setenv("H_MUTCOV_PASSWORD", "p")
    server.plan = {u: _present(u) for u in uids}
    assert verify(report, rate=None, policy=ONCE).counts["present"] == 2
    assert {r[3] for r in server.requests} == {"Basic dTpw"}  # base64 of u:p


def test_verify_a_dead_endpoint(catalog, nine):
    uids = [s for _, s in nine[:1]]
    dead = f"http://127.0.0.1:{_closed_port()}"
    report = route(Cohort.from_uids(uids, catalog=catalog), custom(dead, name="dead"))
    row = verify(report, rate=None, policy=RetryPolicy(max_attempts=2, backoff_base=0, jitter=0)).results.to_pylist()[0]
    assert (row["status"], row["http_status"], row["attempts"], row["detail"]) == (
        "error", None, 2, "ConnectionError after 2 attempts")


# -- what the second mutation run showed untested ---------------------------------------------------
def _routes(endpoints: list[str], reasons: list[str] | None = None, sizes: list[float] | None = None) -> pa.Table:
    """A hand-made routes table (one series per endpoint name given), enough for the report's tables."""
    n = len(endpoints)
    return pa.table({"StudyInstanceUID": [f"1.2.{i}" for i in range(n)],
                     "SeriesInstanceUID": [f"1.2.{i}.1" for i in range(n)], "collection_id": ["c"] * n,
                     "endpoint": endpoints, "series_size_MB": sizes or [1000.0] * n,
                     "series_url": [None if e == "unavailable" else f"http://127.0.0.1:9/{i}" for i, e in enumerate(endpoints)],
                     "proxy_differs": [False] * n, "reason": reasons or ["r"] * n})


def test_report_tables_are_numbered_from_zero_after_sorting():
    # grouped in order of appearance (a: 1, b: 2), sorted by count (b, a): the index is 0, 1 all the same
    report = CoverageReport(_routes(["a", "b", "b"]), {}, PREFER_PROXY, CURRENT, None)
    table = report.by_endpoint()
    assert table.to_dict("records") == [{"endpoint": "b", "series": 2, "size_GB": 2.0},
                                        {"endpoint": "a", "series": 1, "size_GB": 1.0}]
    assert list(table.index) == [0, 1]
    assert list(report.by_reason().index) == [0, 1] and list(report.by_collection().index) == [0, 1]


def test_report_html_lists_every_endpoint_and_twenty_reasons():
    reasons = [f"reason {i:02d}" for i in range(21)]
    report = CoverageReport(_routes(["b"] * 11 + ["a"] * 10, reasons, [1500.0] * 21), {}, PREFER_PROXY, CURRENT, None)
    html = report._repr_html_()
    head = f"21 series routed (prefer proxy; IDC v{CURRENT}, newest Google store none)"
    assert html.startswith(f"<div><b>Coverage</b> {head}<br>  b: 11 series, 16.50 GB<br>  a: 10 series, 15.00 GB"
                           '<table class="dataframe">')  # border=0: pandas writes no border attribute
    assert html.count("<br>") == 2 and "<BR>" not in html
    assert re.findall(r"<th>(.*?)</th>", html) == ["endpoint", "reason", "series", "size_GB"]  # no index column
    cells = re.findall(r"<td>(.*?)</td>", html)
    assert len(cells) == 4 * 20  # the first 20 reasons only
    # one series each: ordered by endpoint then reason; a's 10 reasons (11-20) first, then b's first 10 of 11
    assert cells[1::4] == reasons[11:] + reasons[:10]
    assert cells[:4] == ["a", "reason 11", "1", "1.5"]


def test_mismatches_have_the_results_columns_only():
    rows = [{"StudyInstanceUID": "1.2", "SeriesInstanceUID": f"1.2.{i}", "endpoint": "e", "status": s,
             "http_status": 200, "attempts": 1, "detail": None} for i, s in enumerate(["present", "missing", "error"])]
    checked = Verification(pa.Table.from_pylist(rows), 0)
    mism = checked.mismatches()
    assert list(mism.columns) == ["StudyInstanceUID", "SeriesInstanceUID", "endpoint", "status", "http_status",
                                  "attempts", "detail"]
    assert mism["SeriesInstanceUID"].tolist() == ["1.2.1", "1.2.2"] and list(mism.index) == [0, 1]


def _hand_report(server, n: int) -> CoverageReport:
    """Series 1.2.i.1 of studies 1.2.i, all routed to the scripted server, each present there."""
    routes = _routes(["scripted"] * n)
    server.plan = {f"1.2.{i}.1": _present(f"1.2.{i}.1") for i in range(n)}
    return CoverageReport(routes, {"scripted": custom(server.base, name="scripted")}, PREFER_PROXY, CURRENT, None)


def test_the_reports_verify_passes_the_sample_and_the_options_on(server):
    report = _hand_report(server, 5)
    two = report.verify(2, seed=3, rate=None, policy=ONCE)
    assert two.results.num_rows == 2
    assert two.results.column("SeriesInstanceUID").to_pylist() == verify(
        report, 2, seed=3, rate=None, policy=ONCE).results.column("SeriesInstanceUID").to_pylist()
    assert report.verify(sample=1, rate=None, policy=ONCE).results.num_rows == 1
    with pytest.raises(CoverageError, match=r"^workers must be at least 1, got 0$"):
        report.verify(workers=0)


def test_verify_results_have_a_fixed_schema(server):
    report = _hand_report(server, 2)
    schema = [("StudyInstanceUID", pa.string()), ("SeriesInstanceUID", pa.string()), ("endpoint", pa.string()),
              ("status", pa.string()), ("http_status", pa.int32()), ("attempts", pa.int32()), ("detail", pa.string())]
    for sample in (None, 0):  # with rows, and with none
        results = verify(report, sample, rate=None, policy=ONCE).results
        assert [(f.name, f.type) for f in results.schema] == schema, sample


class _CountingLimiter(RateLimiter):
    made: list = []

    def __init__(self, rate, burst=1):
        super().__init__(rate, burst)
        self.acquired = 0
        _CountingLimiter.made.append(self)

    def acquire(self, stop=None):
        self.acquired += 1
        return super().acquire(stop)


def test_verify_limits_the_rate_of_every_request(server, monkeypatch):
    monkeypatch.setattr(_CountingLimiter, "made", [])
    monkeypatch.setattr("cohort.coverage.RateLimiter", _CountingLimiter)
    report = _hand_report(server, 3)
    assert verify(report, policy=ONCE).counts["present"] == 3  # by default: 10 a second, bursts of 8 (the workers)
    [limiter] = _CountingLimiter.made
    assert (limiter.rate, limiter.burst, limiter.acquired) == (10.0, 8, 3)
    _CountingLimiter.made.clear()
    assert verify(report, workers=2, rate=50.0, policy=ONCE).counts["present"] == 3
    [limiter] = _CountingLimiter.made
    assert (limiter.rate, limiter.burst, limiter.acquired) == (50.0, 2, 3)
    _CountingLimiter.made.clear()
    for uncapped in (None, 0):  # no limiter at all
        assert verify(report, rate=uncapped, policy=ONCE).counts["present"] == 3
    assert _CountingLimiter.made == []


class _Gathering:
    """A hold for the scripted server: each answer waits until ``at`` requests are in flight, or until ``at - 1``
    have been for 0.3 s (at most 3 s, for a loaded machine whose threads are slow to start)."""

    def __init__(self, server, at: int):
        self.server, self.at, self.gathered = server, at, False

    def wait(self, _timeout):
        deadline, settled = time.monotonic() + 3, None
        while not self.gathered and self.server.active < self.at and time.monotonic() < deadline:
            if self.server.active >= self.at - 1:
                settled = settled or time.monotonic()
                self.gathered = time.monotonic() - settled >= 0.3
            time.sleep(0.005)
        self.gathered = True  # the requests after the first ones answer at once


def test_verify_runs_eight_requests_at_once_by_default(server):
    report = _hand_report(server, 9)
    server.hold = _Gathering(server, 9)  # nine in flight only if a ninth worker existed
    assert verify(report, rate=None, policy=ONCE).counts["present"] == 9
    assert server.most == 8


def test_discover_logs_each_probe(server, caplog):
    caplog.set_level(logging.INFO, logger="cohort.coverage")
    server.plan = {"/v25/studies": (404, []), "/v24/studies": (200, [])}
    assert discover_newest_store(25, store=_stores(server), policy=ONCE) == 24
    assert caplog.messages == ["probe store-v25: 404", "probe store-v24: 200"]
    caplog.clear()
    dead = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(CoverageError):
        discover_newest_store(5, store=lambda n: custom(f"{dead}/v{n}", name=f"s{n}"), policy=ONCE)
    assert caplog.messages == ["probe s5: ConnectionError"]


def test_discover_waits_fifteen_seconds_for_each_answer_by_default(server):
    timeouts = []

    class Timed(requests.Session):
        def get(self, url, **kwargs):
            timeouts.append(kwargs.get("timeout"))
            return super().get(url, **kwargs)

    class Store(Endpoint):
        def session(self):
            return Timed()

    server.plan = {"/v25/studies": (404, []), "/v24/studies": (200, [])}
    assert discover_newest_store(25, store=lambda n: Store(f"store-v{n}", f"{server.base}/v{n}")) == 24
    assert timeouts == [15, 15]
    assert discover_newest_store(25, store=lambda n: Store(f"store-v{n}", f"{server.base}/v{n}"),
                                 policy=RetryPolicy(timeout=2.5)) == 24
    assert timeouts[2:] == [2.5, 2.5]


class _Recording:
    """The catalog, recording where each query says it comes from (the ``source`` its errors name)."""

    def __init__(self, catalog, idc_version=None):
        self.catalog, self.sources, self.version = catalog, [], idc_version

    @property
    def idc_version(self):  # another release than the installed index's, when given
        return self.version or self.catalog.idc_version

    def sql(self, sql, **kwargs):
        self.sources.append(kwargs.get("source"))
        return self.catalog.sql(sql, **kwargs)


def _cohort_of(recording, uids):
    """A cohort of exactly these UIDs (repeats kept), over the recording catalog."""
    return types.SimpleNamespace(catalog=recording, result=pa.table({"SeriesInstanceUID": pa.array(uids, pa.string())}))


@pytest.fixture(scope="module")
def gone(catalog) -> dict:
    """A series that left IDC, with one revision (in idc-open-data): its UIDs and the releases that had it."""
    rows = _read(catalog, "SELECT SeriesInstanceUID, StudyInstanceUID, aws_bucket, min_idc_version, max_idc_version "
                          "FROM prior_versions_index WHERE SeriesInstanceUID = (SELECT min(SeriesInstanceUID) "
                          "FROM prior_versions_index ANTI JOIN index USING (SeriesInstanceUID))")
    assert len(rows) == 1 and rows[0]["aws_bucket"] == "idc-open-data" and rows[0]["max_idc_version"] < CURRENT - 1
    return rows[0]


def test_route_queries_name_their_source_and_ask_for_old_series_only_when_needed(catalog, paad, gone):
    left = gone["SeriesInstanceUID"]
    current = [r["SeriesInstanceUID"] for r in paad["old"][:2]]
    recording = _Recording(catalog)
    report = route(_cohort_of(recording, current), "proxy")
    assert sorted(report.routes.column("SeriesInstanceUID").to_pylist()) == sorted(current)
    assert recording.sources == ["cohort.coverage.route"]  # every UID is a current series: one query
    recording.sources.clear()
    report = route(_cohort_of(recording, [current[0], current[0], current[1]]), "proxy")  # a repeated UID
    assert sorted(report.routes.column("SeriesInstanceUID").to_pylist()) == sorted(current)
    assert recording.sources == ["cohort.coverage.route"]
    recording.sources.clear()
    report = route(_cohort_of(recording, [*current, left]), "proxy")
    assert sorted(report.routes.column("SeriesInstanceUID").to_pylist()) == sorted([*current, left])
    assert recording.sources == ["cohort.coverage.route"] * 3  # the current series, the missing UIDs, the old series


def test_route_discovers_the_newest_store_with_the_auth_given(catalog, paad, server, monkeypatch):
    made = []

    def store(version, auth=None):  # the Google stores, on the scripted server
        made.append((version, auth))
        return Endpoint(f"idc-store-v{version}", f"{server.base}/v{version}", EndpointKind.GOOGLE, version,
                        auth or NoAuth())

    monkeypatch.setattr("cohort.coverage.google_store", store)
    monkeypatch.setenv("H_COV_TOKEN", "t0k")
    auth = BearerTokenAuth("H_COV_TOKEN")
    cohort = Cohort.from_uids([r["SeriesInstanceUID"] for r in paad["old"]], catalog=catalog)
    server.plan = {f"/v{CURRENT}/studies": (404, []), f"/v{CURRENT - 1}/studies": (404, []),
                   f"/v{CURRENT - 2}/studies": (200, [])}
    report = route(cohort, "google", discover=True, google_auth=auth)
    assert report.newest_google_store == CURRENT - 2
    assert [(path, bearer) for path, _, _, bearer in server.requests] == [
        (f"/v{n}/studies", "Bearer t0k") for n in (CURRENT, CURRENT - 1, CURRENT - 2)]
    name = f"idc-store-v{CURRENT - 2}"
    assert set(report.routes.column("endpoint").to_pylist()) == {name}  # made before v{CURRENT - 2}
    assert report.endpoints[name].auth is auth and report.endpoints[name].url == f"{server.base}/v{CURRENT - 2}"
    # probing stops at the first store: none from v{CURRENT - 1} on answers, so no Google store at all
    server.requests.clear()
    report = route(cohort, "google", discover=True, first_google_store=CURRENT - 1, google_auth=auth)
    assert report.newest_google_store is None
    assert [path for path, _, _, _ in server.requests] == [f"/v{n}/studies" for n in (CURRENT, CURRENT - 1)]
    assert set(report.routes.column("endpoint").to_pylist()) == {"idc-proxy"}


def test_route_takes_the_default_newest_store_from_the_cohorts_catalog(catalog, paad):
    cohort = _cohort_of(_Recording(catalog, idc_version=20), [paad["old"][0]["SeriesInstanceUID"]])
    report = route(cohort, "google")  # a catalog of IDC v20 (not the installed index's release): store v19
    assert (report.idc_version, report.newest_google_store) == (20, 19)
    assert route(cohort, "google", lag=2).newest_google_store == 18


def test_route_names_the_store_after_unavailable_series(catalog, gone):
    pin = gone["max_idc_version"]
    later = _read(catalog, f"SELECT min(SeriesInstanceUID) AS u FROM index WHERE series_init_idc_version > {pin}")[0]["u"]
    # the current series (unavailable as of the pin) come first, the series that left IDC after them
    report = route(Cohort.from_uids([later, gone["SeriesInstanceUID"]], catalog=catalog), pin)
    assert report.routes.column("endpoint").to_pylist() == ["unavailable", f"idc-store-v{pin}"]
    assert report.endpoints == {f"idc-store-v{pin}": google_store(pin)}
    assert report.routes.column("series_url").to_pylist() == [
        None, f"https://healthcare.googleapis.com/v1/projects/nci-idc-data/locations/us-central1/datasets/"
              f"idc/dicomStores/idc-store-v{pin}/dicomWeb/studies/{gone['StudyInstanceUID']}/series/"
              f"{gone['SeriesInstanceUID']}"]
