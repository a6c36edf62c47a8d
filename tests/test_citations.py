"""Citations by DOI content negotiation, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cohort import Cohort
from cohort.citations import IDC_DOI, CitationStatus, cite, normalize_doi
from cohort.manifest import write_manifest

REFERENCES = {
    IDC_DOI: "Fedorov, A., et al. (2023). National Cancer Institute Imaging Data Commons. RadioGraphics.",
    "10.5281/zenodo.12689972": "Müller, K. (2024). TCGA slides [Data set]. Zenodo.",
}


class _Resolver(BaseHTTPRequestHandler):
    """Answers ``GET /<doi>`` with ``Accept: text/x-bibliography`` like doi.org does."""

    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        doi = self.path.lstrip("/").lower()
        accept = self.headers.get("Accept", "")
        self.seen.append((doi, accept))
        text = REFERENCES.get(doi)
        if text is None or not accept.startswith("text/x-bibliography"):
            self.send_response(404 if text is None else 406)
            self.end_headers()
            return
        body = text.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/x-bibliography")  # no charset: must still decode as UTF-8
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def resolver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Resolver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Resolver.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_fetches_by_content_negotiation_then_serves_from_cache(resolver, tmp_path):
    first = cite(["https://doi.org/10.5281/ZENODO.12689972"], resolver=resolver, cache_dir=tmp_path)
    assert first.dois == [IDC_DOI, "10.5281/zenodo.12689972"]  # IDC's paper always, first
    assert [c.status for c in first.items] == [CitationStatus.FETCHED] * 2
    assert first.items[1].text == REFERENCES["10.5281/zenodo.12689972"]  # UTF-8 without a charset
    assert {accept for _, accept in _Resolver.seen} == {"text/x-bibliography; style=apa"}

    _Resolver.seen.clear()
    again = cite(["10.5281/zenodo.12689972"], resolver=resolver, cache_dir=tmp_path)
    assert [c.status for c in again.items] == [CitationStatus.CACHED] * 2
    assert [c.text for c in again.items] == [c.text for c in first.items]
    assert _Resolver.seen == []


def test_offline_lists_the_dois_and_says_the_step_was_skipped(tmp_path):
    result = cite(["10.7937/K9/TCIA.2016.ELN8YGLE", "10.5281/zenodo.12689972"],
                  resolver=_closed_port_url(), cache_dir=tmp_path, timeout=2)
    assert result.dois == [IDC_DOI, "10.5281/zenodo.12689972", "10.7937/k9/tcia.2016.eln8ygle"]
    assert all(c.status is CitationStatus.SKIPPED and c.text is None for c in result.items)
    assert "3 skipped" in result.summary and "unreachable" in result.summary
    assert not list(tmp_path.iterdir())  # nothing cached from a failure


def test_an_unknown_doi_is_skipped_with_the_http_error_and_others_still_fetched(resolver, tmp_path):
    result = cite(["10.9999/not-registered"], resolver=resolver, cache_dir=tmp_path)
    by_doi = {c.doi: c for c in result.items}
    assert by_doi[IDC_DOI].status is CitationStatus.FETCHED
    assert by_doi["10.9999/not-registered"].status is CitationStatus.SKIPPED
    assert "404" in by_doi["10.9999/not-registered"].reason


def test_normalize_doi():
    assert normalize_doi(" doi:10.1148/RG.230180 ") == "10.1148/rg.230180"
    assert normalize_doi("https://dx.doi.org/10.1/X") == "10.1/x"


def test_manifests_carry_the_citations(resolver, tmp_path, catalog):
    cohort = Cohort.from_sql(
        "SELECT SeriesInstanceUID FROM index WHERE source_DOI = '10.5281/zenodo.12689972' "
        "ORDER BY SeriesInstanceUID LIMIT 3", catalog=catalog)
    citations = cite(["10.5281/zenodo.12689972"], resolver=resolver, cache_dir=tmp_path / "cache")
    s5cmd = write_manifest(cohort, tmp_path / "c.s5cmd", citations=citations)
    text = s5cmd.path.read_text(encoding="utf-8")
    assert f"# cite: https://doi.org/10.5281/zenodo.12689972 {REFERENCES['10.5281/zenodo.12689972']}" in text
    assert f"# cite: https://doi.org/{IDC_DOI} Fedorov" in text
    doc = json.loads(write_manifest(cohort, tmp_path / "c.json", citations=citations).path.read_text("utf-8"))
    items = doc["provenance"]["citations"]["items"]
    assert [i["text"] for i in items] == [REFERENCES[IDC_DOI], REFERENCES["10.5281/zenodo.12689972"]]


def test_an_unwritable_cache_still_gives_the_fetched_citations(resolver, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    result = cite(["10.5281/zenodo.12689972"], resolver=resolver, cache_dir=blocker / "cache")
    assert [c.status for c in result.items] == [CitationStatus.FETCHED, CitationStatus.FETCHED]
    assert all(c.text for c in result.items)


# -- issue 12 item 9: BibTeX and CSL JSON as well as APA (idc-index's citation formats) -----------
BIBTEX = {IDC_DOI: "@article{Fedorov_2023, title={National Cancer Institute Imaging Data Commons}, year={2023}}"}
CSL = {IDC_DOI: {"DOI": IDC_DOI, "type": "article-journal", "title": "National Cancer Institute Imaging Data Commons"}}


class _Negotiating(BaseHTTPRequestHandler):
    """Answers by the Accept header as doi.org does: BibTeX, CSL JSON or a formatted reference."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        doi = self.path.lstrip("/").lower()
        accept = self.headers.get("Accept", "")
        if accept == "application/x-bibtex" and doi in BIBTEX:
            body, kind = BIBTEX[doi], "application/x-bibtex"
        elif accept == "application/vnd.citationstyles.csl+json" and doi in CSL:
            body, kind = json.dumps(CSL[doi]), "application/vnd.citationstyles.csl+json"
        elif accept.startswith("text/x-bibliography") and doi in REFERENCES:
            body, kind = REFERENCES[doi], "text/x-bibliography"
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = body.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def negotiating():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Negotiating)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bibtex_and_csl_json(negotiating, tmp_path):
    bib = cite([], style="bibtex", resolver=negotiating, cache_dir=tmp_path)
    assert bib.items[0].text == BIBTEX[IDC_DOI] and bib.render() == BIBTEX[IDC_DOI]
    csl = cite([], style="json", resolver=negotiating, cache_dir=tmp_path)
    assert json.loads(csl.render()) == [CSL[IDC_DOI]]
    apa = cite([], resolver=negotiating, cache_dir=tmp_path)  # each format is cached on its own
    assert apa.items[0].text == REFERENCES[IDC_DOI]
    again = cite([], style="bibtex", resolver=negotiating, cache_dir=tmp_path)
    assert again.items[0].status is CitationStatus.CACHED and again.items[0].text == BIBTEX[IDC_DOI]


def test_cli_cite_in_bibtex(negotiating, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cohort.cli import cli

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    args = ["cite", "series_by_collection", "-p", "collection_id=tcga_paad", "--resolver", negotiating]
    r = CliRunner().invoke(cli, [*args, "--format", "bibtex"])
    # the resolver knows IDC's paper only: the collection's DOIs are listed as skipped, and the exit code says so
    assert r.exit_code == 1
    assert r.stdout.startswith(BIBTEX[IDC_DOI])
    assert "https://doi.org/10.5281/zenodo.12689972 (not fetched: 404" in r.stdout
    assert "1 fetched" in r.stderr and "skipped" in r.stderr
