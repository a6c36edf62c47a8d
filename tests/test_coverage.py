"""Coverage routing on the real v25 index, checked against independent counts; live checks against Orthanc."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from cohort import Cohort, CoverageError, custom, idc_proxy
from cohort.cli import cli
from cohort.coverage import PREFER_GOOGLE, PREFER_PROXY, ROUTE_COLUMNS, Policy, discover_newest_store, route
from cohort.endpoints import BasicAuth
from cohort.retry import RetryPolicy

PANCREAS_SLIDE = "1.3.6.1.4.1.5962.99.1.3380245274.1362068963.1639762817818.2.0"
GOOGLE_BUCKET = "idc-open-data"


@pytest.fixture(scope="module")
def whole_index(catalog) -> Cohort:
    return Cohort.from_sql("SELECT SeriesInstanceUID FROM index", catalog=catalog)


@pytest.fixture(scope="module")
def index_frame(catalog) -> pd.DataFrame:
    """The index read with pyarrow, not through the catalog: the independent side of the comparisons."""
    return pq.read_table(catalog.store.path("index"), columns=[
        "SeriesInstanceUID", "aws_bucket", "series_init_idc_version", "series_revised_idc_version"]).to_pandas()


@pytest.fixture(scope="module")
def prior_frame(catalog) -> pd.DataFrame:
    return pq.read_table(catalog.store.path("prior_versions_index"), columns=[
        "SeriesInstanceUID", "StudyInstanceUID", "aws_bucket", "min_idc_version", "max_idc_version"]).to_pandas()


@pytest.mark.parametrize("newest", [24, 25])
def test_prefer_google_whole_index_matches_independent_count(whole_index, index_frame, newest):
    report = route(whole_index, PREFER_GOOGLE, newest_google_store=newest)
    routes = report.routes.to_pandas()
    # every series gets exactly one route
    assert len(routes) == len(index_frame) == routes["SeriesInstanceUID"].nunique()
    assert set(routes["SeriesInstanceUID"]) == set(index_frame["SeriesInstanceUID"])
    google = (index_frame["aws_bucket"] == GOOGLE_BUCKET) & (index_frame["series_revised_idc_version"] <= newest)
    counts = routes["endpoint"].value_counts().to_dict()
    assert counts == {f"idc-store-v{newest}": int(google.sum()), "idc-proxy": int((~google).sum())}
    # the routed set, not only its size
    expected = set(index_frame.loc[google, "SeriesInstanceUID"])
    assert set(routes.loc[routes["endpoint"] == f"idc-store-v{newest}", "SeriesInstanceUID"]) == expected
    # reasons are readable and add up per cause
    assert routes["reason"].notna().all() and not routes["reason"].str.contains("None|NULL|nan").any()
    by_reason = routes["reason"].value_counts().to_dict()
    for bucket in ("idc-open-data-cr", "idc-open-data-two"):
        expected = (index_frame["aws_bucket"] == bucket).sum()
        assert by_reason[f"bucket {bucket} is not replicated to Google"] == expected
    late = (index_frame["aws_bucket"] == GOOGLE_BUCKET) & (index_frame["series_revised_idc_version"] > newest)
    late_reasons = routes.loc[routes["reason"].str.contains(f"newest Google store is v{newest}"), "reason"]
    assert len(late_reasons) == late.sum()
    if newest == 24:
        assert set(late_reasons) == {"added in v25, newest Google store is v24", "revised in v25, newest Google store is v24"}
    # URLs and served versions follow the endpoint
    store = report.endpoints[f"idc-store-v{newest}"]
    row = routes[routes["endpoint"] == store.name].iloc[0]
    assert row["series_url"] == store.series_url(row["StudyInstanceUID"], row["SeriesInstanceUID"])
    assert set(routes["served_version"]) == {newest, 25}
    assert not routes["proxy_differs"].any()
    # summaries add up
    assert report.by_endpoint()["series"].sum() == len(routes)
    assert report.by_collection()["series"].sum() == len(routes)
    assert report.by_reason()["series"].sum() == len(routes)


def test_prefer_proxy_routes_every_current_series_to_the_proxy(catalog):
    cohort = Cohort.from_query("series_by_collection", collection_id="tcga_paad", catalog=catalog)
    report = route(cohort, PREFER_PROXY)
    routes = report.routes.to_pandas()
    proxy = idc_proxy()
    assert len(routes) == len(cohort) and set(routes["endpoint"]) == {"idc-proxy"}
    assert (routes["series_url"] == [proxy.series_url(s, r) for s, r in
                                      zip(routes["StudyInstanceUID"], routes["SeriesInstanceUID"])]).all()
    assert set(report.endpoints) == {"idc-proxy"}
    assert "policy prefers the proxy" in routes["reason"].iloc[0]


def test_pinned_release_tutorial_slide(catalog, index_frame):
    new_in_v20 = index_frame.loc[index_frame["series_init_idc_version"] == 20, "SeriesInstanceUID"].iloc[0]
    cr_old = index_frame.loc[(index_frame["aws_bucket"] == "idc-open-data-cr")
                             & (index_frame["series_revised_idc_version"] <= 9), "SeriesInstanceUID"].iloc[0]
    cohort = Cohort.from_uids([PANCREAS_SLIDE, new_in_v20, cr_old], catalog=catalog)
    routes = route(cohort, Policy.pinned(9), newest_google_store=24).routes.to_pandas().set_index("SeriesInstanceUID")
    slide = routes.loc[PANCREAS_SLIDE]
    assert slide["endpoint"] == "idc-store-v9" and slide["served_version"] == 9 and slide["revision_version"] == 8
    assert slide["reason"] == "pinned to v9: the proxy serves the current revision, made in v10; idc-store-v9 serves v9"
    assert slide["proxy_differs"]
    assert routes.loc[new_in_v20, "endpoint"] == "unavailable"
    assert routes.loc[new_in_v20, "reason"] == "not in IDC v9: first released after v9"
    assert pd.isna(routes.loc[new_in_v20, "series_url"])
    assert routes.loc[cr_old, "endpoint"] == "idc-proxy" and not routes.loc[cr_old, "proxy_differs"]
    assert "bucket idc-open-data-cr, not replicated to Google" in routes.loc[cr_old, "reason"]


def test_pinned_release_whole_index_matches_independent_count(whole_index, index_frame, prior_frame):
    pin = 9
    routes = route(whole_index, pin, newest_google_store=24).routes.to_pandas()
    current_at_pin = index_frame[index_frame["series_revised_idc_version"] <= pin]
    older = prior_frame[(prior_frame["min_idc_version"] <= pin) & (pin <= prior_frame["max_idc_version"])
                        & prior_frame["SeriesInstanceUID"].isin(index_frame["SeriesInstanceUID"])]
    at_pin = pd.concat([current_at_pin[["SeriesInstanceUID", "aws_bucket"]], older[["SeriesInstanceUID", "aws_bucket"]]])
    assert at_pin["SeriesInstanceUID"].is_unique
    counts = routes["endpoint"].value_counts().to_dict()
    assert counts["idc-store-v9"] == (at_pin["aws_bucket"] == GOOGLE_BUCKET).sum()
    assert counts["idc-proxy"] == (current_at_pin["aws_bucket"] != GOOGLE_BUCKET).sum()
    assert counts["unavailable"] == len(index_frame) - len(at_pin) + (older["aws_bucket"] != GOOGLE_BUCKET).sum()
    # the series the proxy would serve differently: everything not unchanged since v9 or earlier
    assert routes["proxy_differs"].sum() == len(index_frame) - len(current_at_pin)


def test_prior_only_series_routed_by_own_versions(catalog, index_frame, prior_frame):
    prior_only = prior_frame[~prior_frame["SeriesInstanceUID"].isin(index_frame["SeriesInstanceUID"])]
    prior_only = prior_only[~prior_only["SeriesInstanceUID"].duplicated(keep=False)]
    in_google = prior_only[(prior_only["aws_bucket"] == GOOGLE_BUCKET) & (prior_only["max_idc_version"] < 24)].iloc[0]
    elsewhere = prior_only[prior_only["aws_bucket"] != GOOGLE_BUCKET].iloc[0]
    cohort = Cohort.from_uids([in_google["SeriesInstanceUID"], elsewhere["SeriesInstanceUID"]], catalog=catalog)
    for policy in (PREFER_GOOGLE, PREFER_PROXY):
        routes = route(cohort, policy, newest_google_store=24).routes.to_pandas().set_index("SeriesInstanceUID")
        got = routes.loc[in_google["SeriesInstanceUID"]]
        store = int(in_google["max_idc_version"])
        assert got["endpoint"] == f"idc-store-v{store}" and got["served_version"] == store
        assert got["revision_version"] == in_google["min_idc_version"] and got["proxy_differs"]
        assert got["reason"].startswith(f"not in the current release v25 (last in v{store})")
        gone = routes.loc[elsewhere["SeriesInstanceUID"]]
        assert gone["endpoint"] == "unavailable"
        assert f"bucket {elsewhere['aws_bucket']} is not replicated to Google" in gone["reason"]


def test_explicit_endpoint_policy(catalog):
    cohort = Cohort.from_query("series_by_collection", collection_id="tcga_paad", modality="SM", catalog=catalog)
    orthanc = custom("http://127.0.0.1:8042/dicom-web", name="local")
    report = route(cohort, orthanc)
    routes = report.routes.to_pandas()
    assert report.routes.column_names == list(ROUTE_COLUMNS)
    assert set(routes["endpoint"]) == {"local"} and report.endpoints == {"local": orthanc}
    assert routes["series_url"].str.startswith("http://127.0.0.1:8042/dicom-web/studies/").all()
    assert set(routes["reason"]) == {"explicit endpoint local"}
    assert report.by_endpoint().to_dict("records") == [
        {"endpoint": "local", "series": len(cohort), "size_GB": round(cohort.counts.size_gb, 3)}]
    assert "explicit endpoint local" in report.summary_text() and "<table" in report._repr_html_()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"policy": 26}, "cannot pin release v26"),
    ({"policy": "bogus"}, "unknown routing policy 'bogus'"),
    ({"policy": "google", "newest_google_store": 26}, "newer than the index"),
    ({"policy": "google", "lag": -1}, "lag must be 0 or more"),
])
def test_bad_settings(catalog, kwargs, message):
    cohort = Cohort.from_uids([PANCREAS_SLIDE], catalog=catalog)
    with pytest.raises(CoverageError, match=message):
        route(cohort, **kwargs)


def test_no_google_store_sends_everything_current_to_the_proxy(catalog):
    cohort = Cohort.from_uids([PANCREAS_SLIDE], catalog=catalog)
    report = route(cohort, "google", newest_google_store=3, first_google_store=4)
    assert report.newest_google_store is None
    assert report.routes.to_pylist()[0]["reason"] == "no Google store is available"
    assert report.routes.to_pylist()[0]["endpoint"] == "idc-proxy"
    pinned = route(cohort, 9, newest_google_store=24, first_google_store=10).routes.to_pylist()[0]
    assert pinned["endpoint"] == "unavailable" and pinned["reason"] == (
        "pinned to v9: Google stores start at v10, and the proxy serves only the current revision, made in v10")


def test_policy_parse():
    assert Policy.parse("proxy") is not PREFER_GOOGLE and Policy.parse("proxy") == PREFER_PROXY
    assert Policy.parse("v9") == Policy.parse(9) == Policy.pinned(9)
    assert str(Policy.pinned(9)) == "pinned to v9"


def test_cli_coverage_formats(tmp_path):
    runner = CliRunner()
    args = ["coverage", "series_by_collection", "-p", "collection_id=tcga_paad", "-p", "modality=SM"]
    table = runner.invoke(cli, [*args, "--pin", "9", "--by", "reason"])
    assert table.exit_code == 0, table.output
    assert "the proxy serves the current revision, made in v10; idc-store-v9 serves v9" in table.stdout
    assert "series routed (pinned to v9" in table.stderr
    out = tmp_path / "routes.json"
    result = runner.invoke(cli, [*args, "--policy", "proxy", "-f", "json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert [r["endpoint"] for r in json.loads(out.read_text())] == ["idc-proxy"]
    parquet = tmp_path / "routes.parquet"
    result = runner.invoke(cli, [*args, "--newest-store", "24", "--by", "series", "-o", str(parquet)])
    assert result.exit_code == 0, result.output
    routes = pq.read_table(parquet).to_pandas()
    assert {"SeriesInstanceUID", "endpoint", "series_url", "reason"} <= set(routes.columns)
    bad = runner.invoke(cli, [*args, "--pin", "9", "--policy", "proxy"])
    assert bad.exit_code == 2 and "only one of" in bad.output
    bad = runner.invoke(cli, [*args, "--pin", "30"])
    assert bad.exit_code == 1 and "Error: cannot pin release v30" in bad.stderr


# -- live: a real Orthanc ---------------------------------------------------------------
@pytest.fixture(scope="module")
def idc_series_in_orthanc(orthanc_factory, catalog, tmp_path_factory):
    """An Orthanc (basic auth) holding pydicom's CT file rewritten into 2 of 3 real IDC series."""
    rows = catalog.sql("SELECT StudyInstanceUID, SeriesInstanceUID FROM index WHERE collection_id = 'tcga_paad' "
                       "ORDER BY SeriesInstanceUID LIMIT 3").to_pylist()
    server = orthanc_factory(users={"reader": "pw-for-tests"})
    out = tmp_path_factory.mktemp("idc_ct")
    for n, row in enumerate(rows[:2]):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = row["StudyInstanceUID"], row["SeriesInstanceUID"]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(out / f"{n}.dcm")
        server.upload(out / f"{n}.dcm")
    return server, [r["SeriesInstanceUID"] for r in rows]


@pytest.mark.orthanc
def test_verify_against_orthanc(idc_series_in_orthanc, catalog, monkeypatch):
    server, uids = idc_series_in_orthanc
    monkeypatch.setenv("DICOMWEB_USER", "reader")
    monkeypatch.setenv("DICOMWEB_PASSWORD", "pw-for-tests")
    cohort = Cohort.from_uids(uids, catalog=catalog)
    report = route(cohort, custom(server.dicomweb_url, BasicAuth(), name="orthanc"))
    checked = report.verify(workers=3, rate=None).to_pandas().set_index("SeriesInstanceUID")
    assert checked.loc[uids, "status"].tolist() == ["present", "present", "missing"]
    assert (checked["http_status"] == 200).all()
    # without credentials the server refuses: an error per series, not an exception
    unauth = route(cohort, custom(server.dicomweb_url, name="orthanc")).verify(
        sample=2, rate=None, policy=RetryPolicy(max_attempts=1))
    assert unauth.counts == {"present": 0, "missing": 0, "error": 2}
    assert set(unauth.mismatches()["detail"]) == {"HTTP 401"}
    assert "pw-for-tests" not in unauth.summary_text() + unauth.mismatches().to_string()


@pytest.mark.orthanc
def test_cli_verify_against_orthanc(idc_series_in_orthanc, tmp_path, monkeypatch):
    server, uids = idc_series_in_orthanc
    monkeypatch.setenv("DICOMWEB_USER", "reader")
    monkeypatch.setenv("DICOMWEB_PASSWORD", "pw-for-tests")
    sql = tmp_path / "three.sql"
    sql.write_text("SELECT SeriesInstanceUID FROM index WHERE SeriesInstanceUID IN ("
                   + ", ".join(f"'{u}'" for u in uids) + ")\n")
    result = CliRunner().invoke(cli, ["coverage", str(sql), "--url", server.dicomweb_url, "--auth", "basic",
                                      "--verify"])
    assert result.exit_code == 0, result.output
    assert "checked 3 series: 2 present, 1 missing, 0 errors" in result.stderr
    assert f"missing: {uids[2]}" in result.stderr


@pytest.mark.orthanc
def test_discover_newest_store_probes_down_to_the_first_that_answers(idc_series_in_orthanc, monkeypatch):
    server, _ = idc_series_in_orthanc
    monkeypatch.setenv("DICOMWEB_USER", "reader")
    monkeypatch.setenv("DICOMWEB_PASSWORD", "pw-for-tests")

    def store(version: int):  # only "stores" up to v23 exist; newer ones answer 404
        url = server.dicomweb_url if version <= 23 else f"{server.url}/no-store-v{version}"
        return custom(url, BasicAuth(), name=f"store-v{version}")

    assert discover_newest_store(25, store=store) == 23
    assert discover_newest_store(25, store=store, max_probes=2) is None
    with pytest.raises(CoverageError, match="HTTP 401"):
        discover_newest_store(25, store=lambda n: custom(server.dicomweb_url), policy=RetryPolicy(max_attempts=1))


# -- issue 12 item 4: one default for the newest Google store ------------------------------------
def test_not_in_google_store_and_coverage_agree_by_default(catalog):
    from cohort.releases import default_newest_store

    assert default_newest_store(catalog.idc_version) == catalog.idc_version - 1 == 24
    query = Cohort.from_query("not_in_google_store", collection_id="tcga_paad", catalog=catalog)
    assert query.provenance.params["newest_store"] == 24
    report = route(Cohort.from_query("series_by_collection", collection_id="tcga_paad", catalog=catalog), PREFER_GOOGLE)
    assert report.newest_google_store == 24
    proxied = report.routes.filter(pc.equal(report.routes.column("endpoint"), "idc-proxy")).column(
        "SeriesInstanceUID").to_pylist()
    assert len(query) == len(proxied) == 113  # IDC v25: tcga_paad series revised in v25
    assert set(query.series_uids) == set(proxied)
    reasons = set(query.result.column("reason").to_pylist())
    assert reasons == {"revised in v25, newest Google store is v24"}


def test_cli_coverage_max_rows(tmp_path):
    args = ["coverage", "series_by_collection", "-p", "collection_id=tcga_paad", "--by", "series", "--policy", "proxy"]
    few = CliRunner().invoke(cli, [*args, "--max-rows", "4"])
    assert few.exit_code == 0, few.output
    assert "[1,414 rows]" in few.stdout and len(few.stdout.splitlines()) <= 8
    every = CliRunner().invoke(cli, [*args, "--max-rows", "-1"])
    assert every.exit_code == 0 and "[1,414 rows]" not in every.stdout
    assert len(every.stdout.splitlines()) == 1 + 1414
