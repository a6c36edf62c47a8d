"""Charts (cohort.charts): the files are valid images of the expected size, and the plotted numbers,
read back from the figure's bars, equal counts computed independently: plain SQL on the shipped
index Parquet (DuckDB, not the catalog), or pyarrow reads of a real harvest from Orthanc."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict

import duckdb
import idc_index_data
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cohort import Cohort, CohortInputError
from cohort.charts import INSTANCE_BINS, STACKED, cohort_chart, coverage_chart, harvest_chart, save_chart
from cohort.coverage import route

INDEX = idc_index_data.IDC_INDEX_PARQUET_FILEPATH
#: Five collections of mixed size and modalities (IDC v25).
COLLECTIONS = ("tcga_paad", "tcga_kich", "cptac_pda", "cmb_aml", "lidc_idri")
COHORT_SQL = "SELECT SeriesInstanceUID FROM index WHERE collection_id IN $c"


def _plain(sql: str, *params):
    """Rows of ``sql`` over the shipped index Parquet, with a fresh DuckDB (not the catalog)."""
    return duckdb.connect().execute(sql.replace("INDEX", f"read_parquet('{INDEX}')"), list(params)).fetchall()


def _panel(fig, title: str):
    axes = [ax for ax in fig.axes if ax.get_title() == title]
    assert len(axes) == 1, [ax.get_title() for ax in fig.axes]
    return axes[0]


def _bars(ax) -> dict[str, float]:
    """Tick label -> bar length, summed over the stacked segments (horizontal bars)."""
    names = {round(t.get_position()[1]): t.get_text() for t in ax.get_yticklabels()}
    out: dict[str, float] = defaultdict(float)
    for container in ax.containers:
        for rect in container:
            out[names[round(rect.get_y() + rect.get_height() / 2)]] += rect.get_width()
    return dict(out)


def _stacks(ax) -> dict[tuple[str, str], float]:
    """(tick label, segment label) -> length of that segment, for non-empty segments."""
    names = {round(t.get_position()[1]): t.get_text() for t in ax.get_yticklabels()}
    return {(names[round(r.get_y() + r.get_height() / 2)], c.get_label()): r.get_width()
            for c in ax.containers for r in c if r.get_width()}


@pytest.fixture(scope="module")
def mixed(catalog):
    return Cohort.from_sql(COHORT_SQL, {"c": list(COLLECTIONS)}, catalog=catalog)


def test_cohort_chart_plots_the_index_counts(mixed, tmp_path):
    fig = cohort_chart(mixed, top=4)
    series = dict(_plain("SELECT collection_id, count(*) FROM INDEX WHERE collection_id IN ? GROUP BY 1",
                         list(COLLECTIONS)))
    ranked = sorted(series, key=lambda c: (-series[c], c))
    assert len(ranked) == 5
    expected = {c: series[c] for c in ranked[:3]}
    expected["other (2)"] = series[ranked[3]] + series[ranked[4]]
    assert _bars(_panel(fig, "series per collection, by modality")) == expected

    by_mod = _plain("SELECT collection_id, Modality, count(*) FROM INDEX WHERE collection_id IN ? GROUP BY ALL",
                    list(COLLECTIONS))
    modalities = Counter()
    for _, mod, n in by_mod:
        modalities[mod] += n
    ranked_mods = sorted(modalities, key=lambda m: (-modalities[m], m))
    assert len(ranked_mods) > STACKED  # so the smallest modalities are one segment
    own = ranked_mods[: STACKED - 1]
    segments: Counter = Counter()
    for coll, mod, n in by_mod:
        segments[(coll if coll in ranked[:3] else "other (2)",
                  mod if mod in own else f"other ({len(ranked_mods) - len(own)})")] += n
    assert _stacks(_panel(fig, "series per collection, by modality")) == dict(segments)

    gb = dict(_plain("SELECT collection_id, sum(series_size_MB) / 1000 FROM INDEX WHERE collection_id IN ? "
                     "GROUP BY 1", list(COLLECTIONS)))
    plotted = _bars(_panel(fig, "size per collection (GB)"))
    assert plotted.keys() == expected.keys()
    for c in ranked[:3]:
        assert plotted[c] == pytest.approx(gb[c])
    assert plotted["other (2)"] == pytest.approx(gb[ranked[3]] + gb[ranked[4]])

    want = {m: modalities[m] for m in ranked_mods[:3]}
    if len(ranked_mods) > 4:
        want[f"other ({len(ranked_mods) - 3})"] = sum(modalities[m] for m in ranked_mods[3:])
    else:
        want.update({m: modalities[m] for m in ranked_mods[3:]})
    assert _bars(_panel(fig, "series per modality")) == want

    licences = dict(_plain("SELECT license_short_name, count(*) FROM INDEX WHERE collection_id IN ? GROUP BY 1",
                           list(COLLECTIONS)))
    assert _bars(_panel(fig, "series per licence")) == licences
    assert sum(licences.values()) == len(mixed)


def test_chart_files_are_images_of_the_expected_size(mixed, tmp_path):
    fig = cohort_chart(mixed)
    png = save_chart(fig, tmp_path / "cohort.png")
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1200, 800)
        # not blank: many colours drawn
        assert len(image.convert("RGB").getcolors(1_000_000)) > 20
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # a notebook shows it without pyplot
    svg = save_chart(fig, tmp_path / "cohort.SVG")
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert (root.get("width"), root.get("height")) == ("864pt", "576pt")
    assert "tcga_paad" in svg.read_text()


def test_save_chart_refuses_unknown_suffix_and_missing_directory(mixed, tmp_path):
    fig = cohort_chart(mixed)
    with pytest.raises(CohortInputError, match=r"\.png or \.svg"):
        save_chart(fig, tmp_path / "chart.jpg")
    with pytest.raises(CohortInputError, match="does not exist"):
        save_chart(fig, tmp_path / "nowhere" / "chart.png")
    with pytest.raises(CohortInputError, match="top must be"):
        cohort_chart(mixed, top=1)


def test_coverage_chart_plots_the_routing(mixed):
    report = route(mixed, "google", newest_google_store=22)
    fig = coverage_chart(report)
    # prefer Google, newest store v22: a series is in idc-store-v22 when its current revision is in the
    # replicated bucket and was made by v22; else the proxy serves it (every series here is current)
    expected = dict(_plain(
        "SELECT CASE WHEN aws_bucket = 'idc-open-data' AND series_revised_idc_version <= 22 "
        "THEN 'idc-store-v22' ELSE 'idc-proxy' END, count(*) FROM INDEX WHERE collection_id IN ? GROUP BY 1",
        list(COLLECTIONS)))
    assert len(expected) == 2
    assert _bars(_panel(fig, "series per endpoint")) == expected
    reasons = _bars(_panel(fig, "series per endpoint and reason"))
    per_endpoint: Counter = Counter()
    for label, n in reasons.items():
        per_endpoint[label.split(":")[0]] += n
    assert dict(per_endpoint) == expected
    # each wrapped label is the report's "endpoint: reason", whole
    table = report.by_reason()
    assert {lbl.replace("\n", " "): n for lbl, n in reasons.items()} == {
        f"{e}: {r}": n for e, r, n in zip(table["endpoint"], table["reason"], table["series"])}


def test_import_cohort_charts_says_how_to_install_matplotlib(tmp_path):
    # a matplotlib that cannot be imported (a shadowing package that raises ImportError)
    shadow = tmp_path / "matplotlib"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    import subprocess

    proc = subprocess.run([sys.executable, "-c", "import cohort.charts"], check=False, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert "pip install 'idc-cohort[charts]'" in proc.stderr


# -- the CLI: --plot FILE ---------------------------------------------------------
def _image_size(path):
    if path.suffix == ".png":
        with Image.open(path) as image:
            assert image.format == "PNG"
            return image.size
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root.get("width"), root.get("height")


def test_cli_plot_option_on_query_and_coverage(tmp_path):
    from click.testing import CliRunner

    from cohort.cli import cli

    runner = CliRunner()
    query = ["series_by_collection", "-p", "collection_id=tcga_kich"]
    png, svg = tmp_path / "kich.png", tmp_path / "routes.svg"
    result = runner.invoke(cli, ["query", *query, "--summary", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert f"wrote chart {png}" in result.stderr and "tcga_kich" in result.stdout
    assert _image_size(png) == (1200, 800)
    result = runner.invoke(cli, ["coverage", *query, "--policy", "proxy", "--plot", str(svg)])
    assert result.exit_code == 0, result.output
    assert _image_size(svg) == ("864pt", "576pt")
    n = _plain("SELECT count(*) FROM INDEX WHERE collection_id = 'tcga_kich'")[0][0]
    assert f"idc-proxy,{n}" in runner.invoke(cli, ["coverage", *query, "--policy", "proxy", "-f", "csv"]).stdout
    result = runner.invoke(cli, ["coverage", *query, "--plot", str(tmp_path / "routes.pdf")])
    assert result.exit_code == 2 and "name the chart file .png or .svg" in result.output


# -- a harvest from a real Orthanc -----------------------------------------------
@pytest.mark.orthanc
def test_harvest_chart_plots_the_stored_harvest(orthanc, tmp_path):
    from cohort import custom
    from cohort.harvest import harvest
    from cohort.retry import RetryPolicy

    series = [(r.StudyInstanceUID, r.SeriesInstanceUID) for r in orthanc.series]
    missing = [("1.2.826.0.1.3680043.8.498.1", f"1.2.826.0.1.3680043.8.498.{n}") for n in (2, 3)]
    harvest(series + missing, tmp_path, custom(orthanc.dicomweb_url), workers=4, rate=None, progress=False,
            policy=RetryPolicy(timeout=10, max_attempts=3, backoff_base=0.05, backoff_max=0.5))
    fig = harvest_chart(tmp_path)

    log = pq.read_table(tmp_path / "log").to_pylist()
    latest = {}
    for row in sorted(log, key=lambda r: r["finished_at"]):
        latest[row["SeriesInstanceUID"]] = row["status"]
    statuses = Counter(latest.values())
    assert statuses == {"ok": len(series), "not_found": 2}
    assert _bars(_panel(fig, "series per status (latest outcome)")) == dict(statuses)

    instances = pq.read_table(tmp_path / "instances")
    per_series = Counter(instances.column("SeriesInstanceUID").to_pylist())
    bins: Counter = Counter()
    edges = list(INSTANCE_BINS) + [float("inf")]
    for n in per_series.values():
        lo = next(i for i in range(len(edges) - 1) if edges[i] <= n < edges[i + 1])
        bins[lo] += 1
    plotted = list(_bars(_panel(fig, "series per instances harvested")).values())
    assert plotted == [bins.get(i, 0) for i in range(max(bins) + 1)]  # bins up to the largest series'
    assert max(bins) >= 1  # (some series have several instances)
    assert sum(plotted) == len(series)

    shares = _bars(_panel(fig, "instances with a value (%)"))
    for keyword in ("SOPInstanceUID", "Modality", "NumberOfFrames", "TotalPixelMatrixColumns", "SeriesDescription"):
        column = instances.column(keyword)
        assert shares[keyword] == pytest.approx(100 * (len(column) - column.null_count) / len(column)), keyword
    assert shares["SOPInstanceUID"] == 100
    assert 0 < shares["TotalPixelMatrixColumns"] < 100  # slides have it, CT and MR do not

    from click.testing import CliRunner

    from cohort.cli import cli

    plot = tmp_path.parent / f"{tmp_path.name}-status.png"
    result = CliRunner().invoke(cli, ["harvest-status", str(tmp_path), "-f", "csv", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert _image_size(plot) == (1200, 800)
