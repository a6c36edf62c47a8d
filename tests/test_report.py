"""`cohort report`: one self-contained HTML page. Its numbers are checked against plain SQL on the
shipped index Parquet, every inserted value is escaped (hostile values injected), it names no
external URL, and headless Chromium loads it without a console message and shows both charts
where they are (their bar colours, pixel for pixel against the PNG of the same chart)."""

from __future__ import annotations

import re
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import idc_index_data
import pytest
from click.testing import CliRunner
from PIL import Image

from cohort import Cohort, CohortInputError
from cohort.charts import COVERAGE_COLORS, cohort_chart, coverage_chart, save_chart
from cohort.cli import cli
from cohort.citations import IDC_DOI, _cache_file
from cohort.coverage import route
from cohort.report import Report, build_report
from tests.support.browser import FLAGS, find_chromium, require_chromium

INDEX = idc_index_data.IDC_INDEX_PARQUET_FILEPATH
QUERY = ["series_by_collection", "-p", "collection_id=tcga_kich"]
HOSTILE = '<img src=x onerror="alert(1)"></pre><script>alert(2)</script>&amp;'


def _plain(sql: str, *params):
    return duckdb.connect().execute(sql.replace("INDEX", f"read_parquet('{INDEX}')"), list(params)).fetchall()


class _Page(HTMLParser):
    """The tags, attributes and visible text of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._skip = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("style", "svg"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "svg"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def _external_references(page: str, parsed: _Page) -> list[str]:
    """Everything that would make a browser fetch something: src/href/xlink:href, CSS url() and @import,
    <link>, <script>, <iframe>, <object>, <embed> and <base>."""
    found = [f"<{tag}>" for tag, _ in parsed.tags if tag in ("link", "script", "iframe", "object", "embed", "base")]
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "xlink:href", "srcset", "action", "poster", "data"):
            value = attrs.get(name)
            if value is not None and not value.startswith("#"):
                found.append(f"<{tag} {name}={value!r}>")
    found += re.findall(r"url\(\s*['\"]?(?!#)[^)]*\)|@import", page)
    return found


@pytest.fixture(scope="module")
def kich(catalog):
    return Cohort.from_query("series_by_collection", collection_id="tcga_kich", catalog=catalog)


@pytest.fixture(scope="module")
def page(kich, tmp_path_factory):
    """The report of tcga_kich with one citation in a fresh cache: a hostile text, to be escaped."""
    cache = tmp_path_factory.mktemp("citations")
    path = _cache_file(cache, IDC_DOI, "apa")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"Fedorov, A. et al. IDC {HOSTILE}", encoding="utf-8")
    report = build_report(kich, policy="google", newest_google_store=22, citation_cache=cache)
    return report, report.write(tmp_path_factory.mktemp("report") / "kich.html")


def test_report_numbers_are_the_index_counts(page):
    report, path = page
    text = path.read_text(encoding="utf-8")
    parsed = _Page(text)
    visible = parsed.visible
    series, studies, patients, instances, mb = _plain(
        "SELECT count(*), count(DISTINCT StudyInstanceUID), count(DISTINCT PatientID), sum(instanceCount), "
        "sum(series_size_MB) FROM INDEX WHERE collection_id = 'tcga_kich'")[0]
    for label, value in (("series", series), ("studies", studies), ("patients", patients),
                         ("instances", instances)):
        assert f"{label} {value:,}" in visible, label
    assert f"size {mb / 1000:,.2f} GB" in visible
    # provenance: the installed index, the query's SQL and parameters
    assert f"idc-index-data {idc_index_data.__version__}" in visible
    assert f"IDC release v{idc_index_data.__version__.split('.')[0]}" in visible
    assert '"collection_id": "tcga_kich"' in visible and "WHERE collection_id = $collection_id" in visible
    # the coverage split by endpoint (prefer Google, newest store v22), computed here from the index alone
    split = _plain("SELECT CASE WHEN aws_bucket = 'idc-open-data' AND series_revised_idc_version <= 22 "
                   "THEN 'idc-store-v22' ELSE 'idc-proxy' END AS e, count(*) FROM INDEX "
                   "WHERE collection_id = 'tcga_kich' GROUP BY 1")
    routed = {}
    for row in report.coverage.by_reason().itertuples(index=False):
        routed[row.endpoint] = routed.get(row.endpoint, 0) + row.series
        assert f"{row.endpoint} {row.reason} {row.series:,}" in visible
    assert routed == dict(split)
    # licences and source DOIs
    for licence, n, dois in _plain("SELECT license_short_name, count(*), list(DISTINCT source_DOI ORDER BY "
                                   "source_DOI) FROM INDEX WHERE collection_id = 'tcga_kich' GROUP BY 1"):
        assert f"{licence} {n:,} {', '.join(dois)}" in visible
        for doi in dois:  # uncited (not in the cache, not fetched) but listed
            assert f"doi:{doi.lower()}" in visible
    # the reproducing commands name the query, its parameters and the routing
    assert ("cohort coverage series_by_collection -p collection_id=tcga_kich --policy google --newest-store 22 "
            "--by reason") in visible
    assert f"idc-index-data=={idc_index_data.__version__}" in visible
    assert [tag for tag, attrs in parsed.tags if tag == "figure"] == ["figure", "figure"]
    assert f"tcga_kich {series:,} {patients:,} {studies:,} {instances:,} {mb / 1000:,.3f}" in visible  # per collection


def test_report_escapes_values_and_names_no_external_url(page):
    _, path = page
    text = path.read_text(encoding="utf-8")
    parsed = _Page(text)
    assert _external_references(text, parsed) == []
    assert "http://" not in text and "https://" not in text
    # the hostile citation is shown as text, not markup
    assert HOSTILE in parsed.visible
    assert not any(tag in ("img", "script") for tag, _ in parsed.tags)


def test_hostile_query_text_and_parameter_are_escaped(tmp_path):
    """A .sql file whose comment and parameter value carry markup: the page shows them as text
    (an empty cohort also makes a page)."""
    sql = tmp_path / "evil.sql"
    sql.write_text(f"-- name: evil\n-- description: {HOSTILE}\n-- param c VARCHAR: a collection\n"
                   f"SELECT SeriesInstanceUID FROM index WHERE collection_id = $c -- {HOSTILE}\n")
    out = tmp_path / "evil.html"
    result = CliRunner().invoke(cli, ["report", str(sql), "-p", f"c={HOSTILE}", "--policy", "proxy", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "0 series" in result.stderr
    text = out.read_text(encoding="utf-8")
    parsed = _Page(text)
    assert not any(tag in ("img", "script") for tag, _ in parsed.tags)
    assert _external_references(text, parsed) == []
    assert parsed.visible.count(HOSTILE) >= 3  # the SQL, the parameters, the commands
    assert "nothing to show" in text  # the charts' empty panels


def test_report_cli_refuses_bad_arguments(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["report", *QUERY, "-o", str(tmp_path / "r.pdf")])
    assert result.exit_code == 2 and "name the report .html" in result.output
    result = runner.invoke(cli, ["report", *QUERY, "--pin", "20", "--policy", "google", "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "only one of" in result.output
    result = runner.invoke(cli, ["report", *QUERY, "-o", str(tmp_path / "no" / "r.html")])
    assert result.exit_code == 2 and "does not exist" in result.output  # before any work
    with pytest.raises(CohortInputError, match="does not exist"):
        Report("", "t", None, None, None).write(tmp_path / "no" / "r.html")


# -- in a real browser ---------------------------------------------------------------
def _console(page: Path) -> list[str]:
    """The console messages headless Chromium logs while it loads ``page`` (and runs its scripts)."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        run = subprocess.run([find_chromium(), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
                              "--v=0", "--dump-dom", page.resolve().as_uri()],
                             check=False, capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
    assert "</html>" in run.stdout or "<body" in run.stdout, run.stderr[-2000:]
    return [line for line in run.stderr.splitlines() if ":CONSOLE" in line]


def _shot(page: Path, png: Path, width: int, height: int) -> Image.Image:
    from tests.support.browser import screenshot

    return Image.open(screenshot(page, png, width, height)).convert("RGB")


def _pixels(image: Image.Image, colour: str) -> list[tuple[int, int]]:
    """(x, y) of every pixel of exactly ``colour`` (#rrggbb)."""
    import numpy as np

    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    ys, xs = np.nonzero((np.asarray(image) == rgb).all(axis=2))
    return list(zip(xs.tolist(), ys.tolist()))


def test_console_check_sees_errors(tmp_path):
    """The console check itself: a page with a failing script is caught (so an empty list means something)."""
    require_chromium()
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("boom-1"); nothing();</script>'
                   "</body></html>")
    messages = _console(bad)
    assert any("boom-1" in m for m in messages) and any("ReferenceError" in m for m in messages), messages


def test_report_in_chromium_loads_quietly_and_shows_both_charts(kich, tmp_path):
    require_chromium()
    out = tmp_path / "kich.html"
    result = CliRunner().invoke(cli, ["report", *QUERY, "--policy", "google", "--newest-store", "22",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert _console(out) == []

    # the same charts as PNG (1200 x 800, the size the page shows them at)
    cohort_png = Image.open(save_chart(cohort_chart(kich), tmp_path / "cohort.png")).convert("RGB")
    report = route(kich, "google", newest_google_store=22)
    coverage_png = Image.open(save_chart(coverage_chart(report), tmp_path / "coverage.png")).convert("RGB")
    shot = _shot(out, tmp_path / "shot.png", 1300, 3200)
    licence_colour, store_colour = "#8172b3", COVERAGE_COLORS[0]  # the licence panel's; idc-store-v22's
    spans = {}
    for name, colour, png in (("cohort", licence_colour, cohort_png), ("coverage", store_colour, coverage_png)):
        expected, seen = _pixels(png, colour), _pixels(shot, colour)
        assert len(expected) > 2000, name
        # as many pixels of the bar colour as the PNG has (within the edges' anti-aliasing)...
        assert len(seen) == pytest.approx(len(expected), rel=0.05), name
        # ...in the same shape: the bars' bounding box, shifted to where the page put the chart
        ex, ey = zip(*expected)
        sx, sy = zip(*seen)
        assert max(ex) - min(ex) == pytest.approx(max(sx) - min(sx), abs=3), name
        assert max(ey) - min(ey) == pytest.approx(max(sy) - min(sy), abs=3), name
        spans[name] = (min(sy), max(sy))
    assert spans["cohort"][1] < spans["coverage"][0]  # composition above coverage, as in the page


def test_reproduce_commands_per_kind_of_cohort(catalog):
    from cohort.coverage import Policy
    from cohort.report import reproduce_commands

    saved = Cohort.from_query("series_by_collection", collection_id="tcga_kich", modality="SM", catalog=catalog)
    commands = reproduce_commands(saved, source=None, policy=Policy.parse("proxy"), newest_store=None)
    assert commands[0] == (f"pip install 'idc-cohort[charts]=={saved.provenance.package_version}' "
                           f"idc-index-data=={idc_index_data.__version__}")
    assert "cohort query series_by_collection -p collection_id=tcga_kich -p modality=SM --summary" in commands
    assert ("cohort coverage series_by_collection -p collection_id=tcga_kich -p modality=SM --policy proxy "
            "--by reason") in commands
    pinned = reproduce_commands(saved, source="my query.sql", policy=Policy.pinned(20), newest_store=None)
    assert ("cohort report 'my query.sql' -p collection_id=tcga_kich -p modality=SM --pin 20 -o report.html"
            in pinned)
    python_made = Cohort.from_uids(saved.series_uids[:2], catalog=catalog)
    commands = reproduce_commands(python_made, source=None, policy=Policy.parse("google"), newest_store=24)
    assert commands[0].startswith("# this cohort was made in Python: write it as a manifest")
    assert "cohort coverage cohort.csv --policy google --newest-store 24 --by reason" in commands


def test_report_of_a_manifest_and_its_commands_run(tmp_path):
    """A report of a manifest names the manifest, without -p; its coverage command, run, gives the page's split."""
    runner = CliRunner()
    manifest = tmp_path / "kich.csv"
    result = runner.invoke(cli, ["manifest", *QUERY, "-p", "modality=SM", "-o", str(manifest), "--no-citations"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "kich.html"
    result = runner.invoke(cli, ["report", str(manifest), "--policy", "google", "--newest-store", "22", "-o", str(out)])
    assert result.exit_code == 0, result.output
    parsed = _Page(out.read_text(encoding="utf-8"))
    reproduce = next(p for p in parsed.text if p.startswith("pip install"))
    coverage = next(line for line in reproduce.splitlines() if line.startswith("cohort coverage"))
    assert coverage == f"cohort coverage {manifest} --policy google --newest-store 22 --by reason"
    import shlex

    result = runner.invoke(cli, [*shlex.split(coverage)[1:], "-f", "csv"])
    assert result.exit_code == 0, result.output
    n = _plain("SELECT count(*) FROM INDEX WHERE collection_id = 'tcga_kich' AND Modality = 'SM'")[0][0]
    lines = result.stdout.strip().splitlines()[1:]
    assert sum(int(line.rsplit(",", 2)[1]) for line in lines) == n
    for line in lines:  # each row of the command's output is a row of the page's coverage table
        endpoint, rest = line.split(",", 1)
        reason, series, _ = rest.rsplit(",", 2)
        assert f"{endpoint} {reason.strip(chr(34))} {int(series):,}" in parsed.visible
