"""The routed DICOMweb client, slides in wsidicom and thumbnails, against two real Orthanc servers.

20 real IDC SM series (the sm_index fixture's UIDs) get generated slides of known images; the
first 10 are loaded into server A and the rest into server B, each behind a counting proxy, and
the cohort is routed between them explicitly (one coverage report per server).
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace

import numpy as np
import pytest
import requests
from dicomweb_client.protocol import DICOMClient
from PIL import Image

from cohort import Cohort, PixelError, custom
from click.testing import CliRunner

from cohort.cli import cli
from cohort.coverage import route
from cohort.pixels import RoutedClient, contact_sheet, fetch_thumbnails, open_slide
from cohort.retry import RetryPolicy
from tests.support.browser import require_chromium, screenshot
from tests.support.proxy import FaultProxy
from tests.support.slides import GoogleStandIn, dicomizer_slide, slide_image, sm_slide

pytestmark = pytest.mark.orthanc
N_SLIDES = 20
SERIES_IN_PATH = re.compile(r"(?:/studies/[0-9.]+/series/|[?&](?:SeriesInstanceUID|0020000E)=)([0-9.]+)")


def mean_abs_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).mean())


@pytest.fixture(scope="module")
def sm_rows(fixture_catalog):
    rows = fixture_catalog.sql(
        "SELECT i.StudyInstanceUID, i.SeriesInstanceUID, i.collection_id, i.PatientID, i.aws_bucket, "
        "s.primaryAnatomicStructure_CodeMeaning AS organ, s.ObjectiveLensPower AS power "
        "FROM sm_index s JOIN index i USING (SeriesInstanceUID) ORDER BY i.SeriesInstanceUID").to_pylist()
    assert len(rows) >= N_SLIDES + 3
    return rows


@pytest.fixture(scope="module")
def dicomizer_image() -> np.ndarray:
    y, x = np.mgrid[0:700, 0:1000]
    return np.stack([x * 255 // 1000, y * 255 // 700, 128 + 100 * np.sin(x / 40.0) * np.cos(y / 30.0)],
                    axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def two_servers(orthanc_factory, sm_rows, tmp_path_factory, fixture_catalog, dicomizer_image):
    """(client, cohort, {uid: source image}, {uid: 'A'|'B'}, proxies, with_thumbnail uids, servers, reports).

    Server B also holds an OrthancWSIDicomizer pyramid of ``dicomizer_image`` as series sm_rows[N_SLIDES]
    (routed to B, not among the 20 slides of ``cohort``).
    """
    from tests.support.data import records_from_files

    out = tmp_path_factory.mktemp("slides")
    servers = [orthanc_factory(), orthanc_factory()]
    images, side, with_thumbnail = {}, {}, set()
    files = {"A": [], "B": []}
    for n, row in enumerate(sm_rows[:N_SLIDES]):
        uid = row["SeriesInstanceUID"]
        images[uid] = slide_image(n)
        side[uid] = "A" if n < N_SLIDES // 2 else "B"
        thumb = 96 if n % 4 == 0 else None
        if thumb:
            with_thumbnail.add(uid)
        files[side[uid]] += sm_slide(out, images[uid], row["StudyInstanceUID"], uid, thumbnail=thumb,
                                     patient=row["PatientID"])
    extra = sm_rows[N_SLIDES]
    files["B"] += dicomizer_slide(out, dicomizer_image, extra["StudyInstanceUID"], extra["SeriesInstanceUID"])
    for name, server in zip("AB", servers):
        loaded = server.load(records_from_files(files[name]))
        expected = {u for u, s in side.items() if s == name} | ({extra["SeriesInstanceUID"]} if name == "B" else set())
        assert {r.SeriesInstanceUID for r in loaded} == expected
        assert not server.skipped
    proxies = {name: FaultProxy(server.url).start() for name, server in zip("AB", servers)}
    reports = [route(Cohort.from_uids([u for u, s in side.items() if s == name]
                                      + ([extra["SeriesInstanceUID"]] if name == "B" else []), catalog=fixture_catalog),
                     custom(proxies[name].dicomweb_url, name=f"server-{name}")) for name in "AB"]
    client = RoutedClient(reports, rate=None)
    cohort = Cohort.from_uids(list(images), catalog=fixture_catalog)
    yield client, cohort, images, side, proxies, with_thumbnail, servers, reports
    for proxy in proxies.values():
        proxy.stop()


def series_seen(proxy) -> list[str | None]:
    return [m.group(1) if (m := SERIES_IN_PATH.search(target)) else None for _, target, _ in proxy.log]


def expected_thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """The source image scaled to fit ``size`` (independently of the code: from the full-resolution image)."""
    h, w = image.shape[:2]
    scale = min(1, size / max(w, h))
    return np.asarray(Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS))


def test_routed_client_satisfies_the_protocol_and_routes_each_series(two_servers):
    client, cohort, images, side, proxies, _, _, _ = two_servers
    assert isinstance(client, DICOMClient)
    a = [u for u in images if side[u] == "A"][0]
    b = [u for u in images if side[u] == "B"][0]
    study = {u: client.route_of(u).study_uid for u in (a, b)}
    before = {name: len(p.log) for name, p in proxies.items()}
    # one search naming series of both servers (as wsidicom asks for a slide's series) is split by route
    found = client.search_for_instances(search_filters={"SeriesInstanceUID": [a, b]})
    assert {i["0020000E"]["Value"][0] for i in found} == {a, b}
    assert len(found) == len(client.search_for_instances(study[a], a)) + len(client.search_for_instances(study[b], b))
    metadata = client.retrieve_series_metadata(study[b], b)
    assert {m["0020000E"]["Value"][0] for m in metadata} == {b}
    assert series_seen(proxies["A"])[before["A"]:] == [a] * (len(proxies["A"].log) - before["A"])
    assert set(series_seen(proxies["B"])[before["B"]:]) == {b}
    # searches without a study: one request a study of the cohort, answers limited to the cohort
    routed = set(client.routes)
    assert {s["0020000E"]["Value"][0] for s in client.search_for_series()} == routed
    studies = {r.study_uid for r in client.routes.values()}
    assert {s["0020000D"]["Value"][0] for s in client.search_for_studies()} == studies
    assert len(client.search_for_studies(limit=3)) == 3
    assert {i["0020000E"]["Value"][0] for i in client.search_for_instances(study[a])} == \
        {u for u in routed if client.route_of(u).study_uid == study[a]}
    assert client.retrieve_study_metadata(study[b]) == [
        m for u in routed if client.route_of(u).study_uid == study[b]
        for m in client.retrieve_series_metadata(study[b], u)]
    # outside the cohort, and writes: clear errors
    with pytest.raises(PixelError, match="is not in the routed cohort"):
        client.retrieve_series_metadata(study[a], "1.2.3.4")
    with pytest.raises(PixelError, match="read-only"):
        client.delete_series(study[a], a)


def test_contact_sheet_of_20_slides_matches_the_source_images(two_servers, tmp_path):
    client, cohort, images, side, proxies, with_thumbnail, _, _ = two_servers
    for proxy in proxies.values():
        proxy.log.clear()
    sheet = contact_sheet(cohort, client, size=96, cache_dir=tmp_path / "cache", columns=5)
    assert len(sheet.tiles) == N_SLIDES and not sheet.failed
    by_uid = {t.thumbnail.series_uid: t for t in sheet.tiles}
    assert set(by_uid) == set(images)
    uids = list(images)
    for uid in uids:
        thumb = np.asarray(by_uid[uid].thumbnail.image().convert("RGB"))
        assert mean_abs_diff(thumb, expected_thumbnail(images[uid], 96)) < 4, uid
        assert by_uid[uid].thumbnail.kind == ("THUMBNAIL" if uid in with_thumbnail else "VOLUME")
    # the comparison can fail: another slide's image is far off
    other = np.asarray(by_uid[uids[0]].thumbnail.image().convert("RGB"))
    assert mean_abs_diff(other, expected_thumbnail(images[uids[1]], 96)) > 15
    # every request went to the server of its series, and every series was asked for at its server
    for name, proxy in proxies.items():
        seen = series_seen(proxy)
        assert None not in seen and {side[u] for u in seen} == {name}
        assert set(seen) == {u for u in images if side[u] == name}
    # frames: only the THUMBNAIL instance's one frame, or the 2 frames of the 192x128 level
    frames = sum(target.count("/frames/") for p in proxies.values() for _, target, _ in p.log)
    assert frames == len(with_thumbnail) * 1 + (N_SLIDES - len(with_thumbnail)) * 2
    # labels from sm_index and the index; links to the archive (custom endpoints)
    tile = by_uid[uids[0]]
    row = cohort.sql("SELECT collection_id, PatientID FROM cohort WHERE SeriesInstanceUID = $u",
                     {"u": uids[0]}).to_pylist()[0]
    assert (tile.collection, tile.patient) == (row["collection_id"], row["PatientID"])
    assert tile.organ and tile.stain == "H&E" and tile.objective_power
    assert tile.link == client.route_of(uids[0]).url
    # a second run is served from the cache: no request at all
    for proxy in proxies.values():
        proxy.log.clear()
    again = contact_sheet(cohort, client, size=96, cache_dir=tmp_path / "cache", columns=5)
    assert [t.thumbnail.png for t in again.tiles] == [t.thumbnail.png for t in sheet.tiles]
    assert all(not p.log for p in proxies.values())
    # notebook display
    assert "<img" in sheet._repr_html_() and sheet._repr_png_().startswith(b"\x89PNG")


def test_interrupted_fetch_resumes_without_fetching_a_frame_twice(two_servers, tmp_path):
    client, cohort, images, side, _, with_thumbnail, servers, reports = two_servers
    uids = [u for u in images if side[u] == "A"]
    # 6th frame GET answers 503 once; no retries: that slide fails, the others are cached
    with FaultProxy(servers[0].url, schedule={"/frames/": ["pass"] * 5 + ["503"]}) as proxy:
        flaky = RoutedClient(reports, endpoints={"server-A": custom(proxy.dicomweb_url, name="server-A")},
                             rate=None, policy=RetryPolicy(max_attempts=1))
        first = fetch_thumbnails(flaky, uids, cache_dir=tmp_path, size=96, workers=4)
        failed = [t for t in first if t.error]
        assert len(failed) == 1 and "HTTP 503" in failed[0].error
        asked = len(proxy.log)
        second = fetch_thumbnails(flaky, uids, cache_dir=tmp_path, size=96, workers=4)
        assert not [t for t in second if t.error]
        # only the failed frame was asked for again: no QIDO, no frame twice
        assert [target for _, target, _ in proxy.log[asked:]] == [proxy.log[[k for _, _, k in proxy.log].index("503")][1]]
        assert sum(t.fetched for t in second) == 1
        thumb = next(t for t in second if t.series_uid == failed[0].series_uid)
        assert mean_abs_diff(thumb.image().convert("RGB"), expected_thumbnail(images[thumb.series_uid], 96)) < 4


def test_retries_are_ours_and_not_multiplied(two_servers):
    _, cohort, images, side, _, _, servers, reports = two_servers
    uid = [u for u in images if side[u] == "A"][1]
    with FaultProxy(servers[0].url, schedule={"/metadata": ["503", "429"]}, retry_after=0) as proxy:
        client = RoutedClient(reports, endpoints={"server-A": custom(proxy.dicomweb_url, name="server-A")},
                              rate=None, policy=RetryPolicy(max_attempts=3, backoff_base=0.01))
        assert client.retrieve_series_metadata(client.route_of(uid).study_uid, uid)
        assert [k for _, _, k in proxy.log] == ["503", "429", "pass"]
    with FaultProxy(servers[0].url, schedule={"/metadata": ["503"] * 5}) as proxy:
        client = RoutedClient(reports, endpoints={"server-A": custom(proxy.dicomweb_url, name="server-A")},
                              rate=None, policy=RetryPolicy(max_attempts=2, backoff_base=0.01))
        with pytest.raises(requests.HTTPError) as info:
            client.retrieve_series_metadata(client.route_of(uid).study_uid, uid)
        assert info.value.response.status_code == 503 and len(proxy.log) == 2


def test_open_slide_reads_a_region_equal_to_the_source(two_servers, sm_rows, fixture_catalog, dicomizer_image):
    client, _, _, _, proxies, _, _, _ = two_servers
    uid = sm_rows[N_SLIDES]["SeriesInstanceUID"]
    proxies["B"].log.clear()
    cohort = Cohort.from_uids([uid], catalog=fixture_catalog)
    slide = open_slide(client, uid)
    with pytest.raises(PixelError, match="is not in the cohort"):
        open_slide(cohort, sm_rows[0]["SeriesInstanceUID"])
    assert (slide.size.width, slide.size.height) == (1000, 700)
    region = np.asarray(slide.read_region((230, 170), 0, (300, 200)).convert("RGB"))  # crosses tile edges
    assert mean_abs_diff(region, dicomizer_image[170:370, 230:530]) < 3
    other = np.asarray(slide.read_region((0, 0), 0, (300, 200)).convert("RGB"))
    assert mean_abs_diff(other, dicomizer_image[170:370, 230:530]) > 20
    # wsidicom's requests (search, metadata, frames) all went to server B, for this series
    assert proxies["B"].log and set(series_seen(proxies["B"])) == {uid}
    with pytest.raises(PixelError, match="not in the routed cohort"):
        open_slide(client, sm_rows[N_SLIDES + 1]["SeriesInstanceUID"])


def test_missing_wsidicom_names_the_extra(two_servers, monkeypatch):
    client, _, images, _, _, _, _, _ = two_servers
    monkeypatch.setitem(sys.modules, "wsidicom", None)
    with pytest.raises(PixelError, match=r"idc-cohort\[wsi\]"):
        open_slide(client, next(iter(images)))


def test_google_route_through_a_stand_in_that_requires_a_bearer_token(two_servers, sm_rows, tmp_path,
                                                                     fixture_catalog, monkeypatch):
    _, _, _, _, _, _, servers, reports = two_servers
    row = next(r for r in sm_rows[N_SLIDES + 2:] if r["aws_bucket"] == "idc-open-data")
    uid = row["SeriesInstanceUID"]
    image = slide_image(99)
    servers[0].upload_many(sm_slide(tmp_path, image, row["StudyInstanceUID"], uid))
    with GoogleStandIn(servers[0].dicomweb_url) as standin:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(standin.credentials_file(tmp_path / "sa.json")))
        cohort = Cohort.from_uids([uid], catalog=fixture_catalog)
        report = route(cohort, "google", newest_google_store=24)
        assert report.routes.column("endpoint").to_pylist() == ["idc-store-v24"]
        store = report.endpoints["idc-store-v24"]
        client = RoutedClient(report, endpoints={store.name: replace(store, url=standin.dicomweb_url)}, rate=None)
        [thumb] = fetch_thumbnails(client, [uid], cache_dir=tmp_path / "cache", size=96)
        assert thumb.error is None
        assert mean_abs_diff(thumb.image().convert("RGB"), expected_thumbnail(image, 96)) < 4
        assert standin.tokens_issued == 1 and standin.log and all(ok for _, ok in standin.log)
        # the stand-in really refuses a request without the token
        assert requests.get(f"{standin.dicomweb_url}/studies", timeout=10).status_code == 401
        sheet = contact_sheet(cohort, client, size=96, cache_dir=tmp_path / "cache")
        assert sheet.tiles[0].link.startswith("https://viewer.imaging.datacommons.cancer.gov/slim/studies/")


def test_cli_thumbnails_page_checked_in_a_real_browser(two_servers, index_dir, tmp_path):
    require_chromium()
    _, _, images, side, proxies, _, _, _ = two_servers
    uids = [u for u in images if side[u] == "A"]
    sql = tmp_path / "slides.sql"
    sql.write_text("SELECT SeriesInstanceUID FROM index WHERE SeriesInstanceUID IN ("
                   + ", ".join(f"'{u}'" for u in uids) + ")\n")
    page, png = tmp_path / "sheet.html", tmp_path / "sheet.png"
    args = ["--index-dir", str(index_dir), "thumbnails", str(sql), "--url", proxies["A"].dicomweb_url,
            "--no-rate-limit", "--size", "96", "--columns", "4", "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, [*args, "-o", str(page), "-o", str(png)])
    assert result.exit_code == 0, result.output
    assert f"{len(uids)} slides, 0 without thumbnail" in result.stderr
    text = page.read_text()
    order = re.findall(r'data-series="([0-9.]+)"', text)
    assert sorted(order) == sorted(uids)
    sheet = Image.open(png).convert("RGB")
    shot = Image.open(screenshot(page, tmp_path / "shot.png", *sheet.size)).convert("RGB")
    assert shot.size == sheet.size
    # every tile's image is where the PNG has it, and is that slide's image: the browser loaded them all
    columns, size, gap, label = 4, 96, 12, 44
    for i, uid in enumerate(order):
        expected = expected_thumbnail(images[uid], size)
        h, w = expected.shape[:2]
        x = gap + (i % columns) * (size + gap) + (size - w) // 2
        y = gap + (i // columns) * (size + label + gap) + (size - h) // 2
        box = (x, y, x + w, y + h)
        assert mean_abs_diff(shot.crop(box), expected) < 4, (i, uid)
        assert mean_abs_diff(sheet.crop(box), expected) < 4, (i, uid)
    # a slide the server does not have: the sheet is written with an empty tile, and the exit code says so
    b_uid = next(u for u in images if side[u] == "B")
    sql.write_text(sql.read_text().replace(")\n", f", '{b_uid}')\n"))
    result = CliRunner().invoke(cli, [*args, "-o", str(page)])
    assert result.exit_code == 1 and f"{len(uids) + 1} slides, 1 without thumbnail" in result.stderr
    assert b_uid in result.stderr and 'class="missing"' in page.read_text()
