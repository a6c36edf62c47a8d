"""Optional tables: lookup order and the download path, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import platformdirs
import pytest

from cohort import Catalog, TableUnavailableError
from cohort.tables import TableStore, data_version, idc_index_cache_dir
from fixtures.index_tables import PANCREAS_SLIDE

VERSION = data_version()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes``: path -> (status, body, extra headers); records every path asked for."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests.append(self.path)
        status, body, headers = self.server.routes.get(self.path, (404, b"not found", {}))
        self.send_response(status)
        self.send_header("Content-Length", str(headers.pop("Content-Length", len(body))))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True  # a Content-Length larger than the body becomes a cut connection

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {}
    httpd.requests = []
    httpd.base = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def sm_parquet(index_dir) -> bytes:
    """A real Parquet file: the sm_index fixture."""
    return (index_dir / "sm_index.parquet").read_bytes()


def _serve(server, prefix: str, body: bytes, sidecar: str | None = None, **headers) -> str:
    """Serve ``body`` as sm_index under ``prefix``; return the URL template for ``urls=``."""
    path = f"{prefix}/{VERSION}/sm_index.parquet"
    server.routes[path] = (200, body, dict(headers))
    if sidecar is not None:
        server.routes[path + ".sha256"] = (200, f"{sidecar}  sm_index.parquet\n".encode(), {})
    return server.base + prefix + "/{version}/{name}.parquet"


def _cache_is_empty(cache: Path) -> bool:
    return not cache.exists() or list(cache.iterdir()) == []


def test_download_verifies_sha256_and_serves_the_table(server, sm_parquet, tmp_path):
    url = _serve(server, "/gh", sm_parquet, sidecar=hashlib.sha256(sm_parquet).hexdigest())
    cat = Catalog(cache_dir=tmp_path, urls=(url,))
    assert not cat.available("sm_index")
    rows = cat.sql("SELECT SeriesInstanceUID FROM sm_index WHERE SeriesInstanceUID = $s", {"s": PANCREAS_SLIDE})
    assert rows.num_rows == 1
    assert (tmp_path / "sm_index.parquet").read_bytes() == sm_parquet
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm_index.parquet"]  # no temp files left
    assert f"/gh/{VERSION}/sm_index.parquet" in server.requests
    # a second catalog finds the cached file and asks nothing
    server.requests.clear()
    assert Catalog(cache_dir=tmp_path, urls=(url,)).available("sm_index")
    assert server.requests == []


def test_first_url_404_falls_back_to_the_mirror(server, sm_parquet, tmp_path):
    mirror = _serve(server, "/mirror", sm_parquet)
    missing = server.base + "/gh/{version}/{name}.parquet"
    store = TableStore(cache=tmp_path, urls=(missing, mirror))
    assert store.path("sm_index") == tmp_path / "sm_index.parquet"
    assert server.requests.index(f"/gh/{VERSION}/sm_index.parquet") < server.requests.index(
        f"/mirror/{VERSION}/sm_index.parquet"
    )


def test_sha256_mismatch_is_rejected_and_not_cached(server, sm_parquet, tmp_path):
    url = _serve(server, "/gh", sm_parquet, sidecar="0" * 64)
    with pytest.raises(TableUnavailableError, match="sha256 mismatch") as err:
        TableStore(cache=tmp_path, urls=(url,)).path("sm_index")
    assert url.format(version=VERSION, name="sm_index") in str(err.value)
    assert _cache_is_empty(tmp_path)


def test_truncated_download_is_not_cached(server, sm_parquet, tmp_path):
    half = sm_parquet[: len(sm_parquet) // 2]
    url = _serve(server, "/gh", half, **{"Content-Length": len(sm_parquet)})
    with pytest.raises(TableUnavailableError, match="sm_index") as err:
        TableStore(cache=tmp_path, urls=(url,)).path("sm_index")
    assert "IncompleteRead(" in str(err.value)
    assert _cache_is_empty(tmp_path)


def test_a_body_that_is_not_parquet_is_not_cached(server, tmp_path):
    url = _serve(server, "/gh", b"<html><body>Rate limit exceeded</body></html>")
    with pytest.raises(TableUnavailableError, match="not a readable Parquet file"):
        TableStore(cache=tmp_path, urls=(url,)).path("sm_index")
    assert _cache_is_empty(tmp_path)


def test_offline_error_names_table_urls_and_how_to_supply_the_file(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    urls = (f"http://127.0.0.1:{port}/gh/{{version}}/{{name}}.parquet",
            f"http://127.0.0.1:{port}/mirror/{{version}}/{{name}}.parquet")
    cat = Catalog(cache_dir=tmp_path, urls=urls)
    with pytest.raises(TableUnavailableError) as err:
        cat.sql("SELECT count(*) FROM sm_index")
    msg = str(err.value)
    assert "'sm_index' is not on this machine and could not be fetched" in msg
    for u in urls:
        assert f"{u.format(version=VERSION, name='sm_index')}: ConnectionError: [Errno 111] Connection refused" in msg
    assert "COHORT_INDEX_DIR" in msg and "index_dir=" in msg and f"idc-index-data {VERSION}" in msg
    assert _cache_is_empty(tmp_path)


def test_downloads_off_says_where_the_file_would_come_from(tmp_path):
    with pytest.raises(TableUnavailableError, match="downloads are off") as err:
        Catalog(cache_dir=tmp_path, download=False).sql("SELECT * FROM seg_index")
    assert f"releases/download/{VERSION}/seg_index.parquet" in str(err.value)
    assert "COHORT_INDEX_DIR" in str(err.value)


def test_cohort_index_dir_supplies_tables(monkeypatch, index_dir, tmp_path):
    monkeypatch.setenv("COHORT_INDEX_DIR", str(index_dir))
    store = TableStore(cache=tmp_path, download=False)
    assert store.path("sm_index") == index_dir / "sm_index.parquet"
    cat = Catalog(cache_dir=tmp_path, download=False)
    assert cat.available("seg_index")
    assert cat.sql("SELECT count(*) AS n FROM seg_index").column("n")[0].as_py() == 10


def test_a_table_idc_index_already_fetched_is_reused(monkeypatch, index_dir, tmp_path):
    calls = []

    def user_data_dir(*args, **kwargs):
        calls.append((args, kwargs))
        return str(tmp_path / "idc-index")

    monkeypatch.setattr(platformdirs, "user_data_dir", user_data_dir)
    (tmp_path / "idc-index").mkdir()
    (tmp_path / "idc-index" / "sm_index.parquet").write_bytes((index_dir / "sm_index.parquet").read_bytes())
    assert idc_index_cache_dir() == tmp_path / "idc-index"
    assert calls[0] == (("idc_index_data", "IDC"), {"version": VERSION})  # idc-index's own directory
    cat = Catalog(cache_dir=tmp_path / "ours", download=False)
    assert cat.store.local_path("sm_index") == tmp_path / "idc-index" / "sm_index.parquet"
    assert cat.sql("SELECT count(*) AS n FROM sm_index").column("n")[0].as_py() == 30
    assert not (tmp_path / "ours").exists()  # nothing copied or downloaded


# -- issue 12 item 8: the index directory ----------------------------------------------------------
def test_a_missing_index_dir_is_an_error(tmp_path, monkeypatch):
    from cohort import CatalogError

    with pytest.raises(CatalogError, match=rf"index directory {tmp_path / 'nodir'} \(from index_dir .*does not exist"):
        Catalog(index_dir=tmp_path / "nodir", cache_dir=tmp_path)
    monkeypatch.setenv("COHORT_INDEX_DIR", str(tmp_path / "nodir"))
    with pytest.raises(CatalogError, match=r"\(from COHORT_INDEX_DIR\) does not exist"):
        Catalog(cache_dir=tmp_path)


def test_cli_missing_index_dir_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from cohort.cli import cli

    r = CliRunner().invoke(cli, ["--index-dir", str(tmp_path / "nodir"), "tables"])
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_empty_index_dir_error_names_the_directory_and_the_file_names(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "sm_index.parquet.part").write_bytes(b"")  # not a table file
    (empty / "notes.parquet").write_bytes(b"")
    with pytest.raises(TableUnavailableError) as err:
        Catalog(index_dir=empty, cache_dir=tmp_path / "cache", download=False).sql("SELECT * FROM sm_index")
    msg = str(err.value)
    assert f"not in the index directory {empty} (looked for {empty / 'sm_index.parquet'}" in msg
    assert "holds notes.parquet" in msg
    assert f"put sm_index.parquet of idc-index-data {VERSION} into {empty}" in msg
    assert "pass it as index_dir=" not in msg  # not: do what you just did
