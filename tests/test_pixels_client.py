"""The routed client without a server: routes from coverage reports, errors, ez-wsi-dicomweb hooks."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
from dicomweb_client.protocol import DICOMClient

from cohort import Cohort, PixelError, custom, idc_proxy
from cohort.coverage import route
from cohort.pixels import RoutedClient

PANCREAS_SLIDE = "1.3.6.1.4.1.5962.99.1.3380245274.1362068963.1639762817818.2.0"


@pytest.fixture(scope="module")
def two(catalog):
    uids = [r["SeriesInstanceUID"] for r in catalog.sql(
        "SELECT SeriesInstanceUID FROM index WHERE collection_id = 'tcga_paad' AND Modality = 'SM' "
        "ORDER BY SeriesInstanceUID LIMIT 2").to_pylist()]
    return Cohort.from_uids(uids, catalog=catalog)


@pytest.fixture(scope="module")
def proxy_client(two):
    return RoutedClient(route(two, idc_proxy()))


def test_routes_and_protocol(two, catalog, proxy_client):
    a, b = two.series_uids
    reports = [route(Cohort.from_uids([a], catalog=catalog), custom("http://127.0.0.1:1/a", name="a")),
               route(Cohort.from_uids([b], catalog=catalog), custom("http://127.0.0.1:2/b", name="b"))]
    client = RoutedClient(reports)
    assert isinstance(client, DICOMClient)
    assert client.route_of(a).endpoint.name == "a" and client.route_of(b).endpoint.name == "b"
    study = catalog.sql("SELECT StudyInstanceUID FROM index WHERE SeriesInstanceUID = $u", {"u": b}).to_pylist()
    assert client.ez_wsi_path(b) == f"http://127.0.0.1:2/b/studies/{study[0]['StudyInstanceUID']}/series/{b}"
    assert client.base_url == "routed://2-endpoints"
    assert proxy_client.base_url == idc_proxy().url and "idc-proxy" in repr(proxy_client)
    # one series, two endpoints: refused
    elsewhere = replace(reports[0], endpoints={"a": custom("http://127.0.0.1:3/c", name="a")})
    with pytest.raises(PixelError, match="routed to two endpoints"):
        RoutedClient([reports[0], elsewhere])
    with pytest.raises(PixelError, match="read-only"):
        client.store_instances([])
    with pytest.raises(PixelError, match="none of the cohort's endpoints"):
        client.retrieve_bulkdata("http://elsewhere/bulk/1")


def test_unavailable_series_says_why(catalog):
    # pinned to v1, long before the slide existed: no endpoint serves it
    client = RoutedClient(route(Cohort.from_uids([PANCREAS_SLIDE], catalog=catalog), 1, newest_google_store=24))
    with pytest.raises(PixelError, match="not served by any endpoint .*not in IDC v1"):
        client.retrieve_series_metadata("1.2", PANCREAS_SLIDE)


def test_ez_wsi_credential_factory_names_the_package(two, proxy_client, monkeypatch):
    monkeypatch.setitem(sys.modules, "ez_wsi_dicomweb", None)
    with pytest.raises(PixelError, match="pip install ez-wsi-dicomweb"):
        proxy_client.ez_wsi_credential_factory(two.series_uids[0])
