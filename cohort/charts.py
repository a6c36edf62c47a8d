"""Charts of a cohort, its coverage and a harvest (matplotlib, headless).

    >>> from cohort.charts import cohort_chart, coverage_chart, harvest_chart, save_chart
    >>> fig = cohort_chart(cohort)            # a matplotlib Figure: shown by a notebook, or saved
    >>> save_chart(fig, "cohort.svg")         # PNG or SVG by the suffix

* :func:`cohort_chart`: series per collection split by modality, GB per collection, series per
  modality and series per licence;
* :func:`coverage_chart`: series per endpoint, and per endpoint and reason, of a
  :class:`~cohort.coverage.CoverageReport`;
* :func:`harvest_chart`: series per status (each series' latest outcome), instances per series
  and the share of instances that have each typed attribute, of a harvest directory.

Each returns a :class:`Chart` (a :class:`matplotlib.figure.Figure` with its own Agg canvas, made
without pyplot, so no global figure state and no display is needed). Every bar is one number of the
data, so the numbers can be read back from the figure's artists; each axes' title names its panel.
matplotlib is an optional dependency (``pip install 'idc-cohort[charts]'``), imported only here.
"""

from __future__ import annotations

import io
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CohortError, CohortInputError

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as exc:  # pragma: no cover - the message is the point
    raise CohortError("charts need matplotlib: pip install 'idc-cohort[charts]'") from exc

if TYPE_CHECKING:
    from .cohort import Cohort
    from .coverage import CoverageReport

#: Size of every chart, inches, and the resolution a PNG is saved at: 1200 x 800 pixels.
FIGSIZE = (12.0, 8.0)
DPI = 100
#: Suffixes :func:`save_chart` writes.
FORMATS = {".png": "png", ".svg": "svg"}
#: Bars shown per panel; the rest are summed into one "other (N)" bar.
TOP = 12
#: Modalities stacked as their own segment in the series-per-collection panel; the rest are one segment.
STACKED = 10
#: Label of the bar that sums what is beyond ``top``: ``other (N)`` where N is how many it sums.
OTHER = "other ({n})"
#: Instance-count bins of :func:`harvest_chart`: [1, 2), [2, 5), ... [10000, inf)
INSTANCE_BINS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10000)
_FINAL_COLOR, _FAILED_COLOR = "#4c72b0", "#c44e52"
#: Endpoint colours of :func:`coverage_chart` (none of them in _PALETTE: a page with both charts tells them
#: apart), and the colour of "unavailable".
COVERAGE_COLORS, UNAVAILABLE_COLOR = ("#2a9d8f", "#e9c46a", "#264653", "#f4a261"), "#e76f51"
_PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
            "#ccb974", "#64b5cd")


class Chart(Figure):
    """A matplotlib Figure that a notebook shows as PNG without pyplot (``_repr_png_``)."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=DPI)
        return buf.getvalue()


def _figure(rows: int, cols: int, title: str) -> tuple[Chart, list]:
    fig = Chart(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    fig.suptitle("\n".join(textwrap.fill(line, 120) for line in title.splitlines()), fontsize=12)
    return fig, axes


def _top(labels: Sequence[str], values: Sequence[float], top: int) -> tuple[list[str], list[float]]:
    """The first ``top`` labels and values (already sorted), the rest summed into one ``other (N)`` bar."""
    labels, values = list(labels), list(values)
    if len(labels) <= top:
        return labels, values
    rest = values[top - 1:]
    return labels[: top - 1] + [OTHER.format(n=len(rest))], values[: top - 1] + [sum(rest)]


def _barh(ax, labels: Sequence[str], values: Sequence[float], title: str, xlabel: str, *,
          colors: Sequence[str] | str = _PALETTE[0], fmt: str = "{:,.0f}") -> None:
    """Horizontal bars, the first label on top, each bar labelled with its value."""
    ys = list(range(len(labels)))
    bars = ax.barh(ys, list(values), color=colors, height=0.7)
    ax.set_yticks(ys, [str(label) for label in labels], fontsize=8)
    _rows(ax, len(labels))
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=7, padding=2)
    ax.margins(x=0.15)
    if not labels:
        _empty(ax)


def _rows(ax, n: int) -> None:
    """The first bar on top, and room for at least 5 so that a few bars are not drawn as slabs."""
    ax.set_ylim(max(n, 5) - 0.5, -0.5)


def _empty(ax) -> None:
    ax.text(0.5, 0.5, "nothing to show", ha="center", va="center", transform=ax.transAxes, color="#888888")
    ax.set_yticks([])


def wrap(text: str, width: int = 48, lines: int = 3) -> str:
    """A long label on at most ``lines`` lines of ``width`` characters (the last ending in … when cut)."""
    return "\n".join(textwrap.wrap(str(text), width, max_lines=lines, placeholder=" …"))


# -- a cohort ----------------------------------------------------------------------
def cohort_chart(cohort: Cohort, *, top: int = TOP) -> Chart:
    """A cohort's composition in four panels: series per collection (stacked by modality), GB per
    collection, series per modality and series per licence. Collections, modalities and licences
    beyond the ``top`` largest are summed into one ``other (N)`` bar."""
    if top < 2:
        raise CohortInputError(f"top must be 2 or more (bars per panel), got {top}")
    rows = cohort.sql(
        "SELECT collection_id, coalesce(Modality, '(none)') AS modality, count(*) AS series, "
        "coalesce(sum(series_size_MB), 0) / 1000 AS gb FROM cohort GROUP BY ALL"
    ).to_pylist()
    licences = cohort.sql(
        "SELECT coalesce(license_short_name, '(none)') AS licence, count(*) AS series FROM cohort "
        "GROUP BY 1 ORDER BY series DESC, licence"
    ).to_pylist()
    p = cohort.provenance
    fig, (by_coll, size, by_mod, by_lic) = _figure(2, 2, f"{p.label} · IDC v{p.idc_version}\n{cohort.counts}")

    coll_series: dict[str, int] = {}
    coll_gb: dict[str, float] = {}
    mod_series: dict[str, int] = {}
    for r in rows:
        coll_series[r["collection_id"]] = coll_series.get(r["collection_id"], 0) + r["series"]
        coll_gb[r["collection_id"]] = coll_gb.get(r["collection_id"], 0.0) + r["gb"]
        mod_series[r["modality"]] = mod_series.get(r["modality"], 0) + r["series"]
    collections = sorted(coll_series, key=lambda c: (-coll_series[c], c))
    shown = collections if len(collections) <= top else collections[: top - 1]
    other = OTHER.format(n=len(collections) - len(shown))
    modalities = sorted(mod_series, key=lambda m: (-mod_series[m], m))
    mods_shown = modalities if len(modalities) <= STACKED else modalities[: STACKED - 1]
    mod_other = OTHER.format(n=len(modalities) - len(mods_shown))

    # series per collection, one stacked segment per modality
    coll_labels = shown + ([other] if len(shown) < len(collections) else [])
    stack: dict[str, dict[str, int]] = {}
    for r in rows:
        coll = r["collection_id"] if r["collection_id"] in shown else other
        mod = r["modality"] if r["modality"] in mods_shown else mod_other
        stack.setdefault(mod, {}).setdefault(coll, 0)
        stack[mod][coll] += r["series"]
    ys = list(range(len(coll_labels)))
    left = [0] * len(coll_labels)
    for i, mod in enumerate(mods_shown + ([mod_other] if mod_other in stack else [])):
        widths = [stack.get(mod, {}).get(c, 0) for c in coll_labels]
        by_coll.barh(ys, widths, left=left, color=_PALETTE[i % len(_PALETTE)], label=mod, height=0.7)
        left = [a + b for a, b in zip(left, widths)]
    by_coll.set_yticks(ys, coll_labels, fontsize=8)
    _rows(by_coll, len(coll_labels))
    by_coll.set_title("series per collection, by modality", fontsize=11)
    by_coll.set_xlabel("series")
    if coll_labels:
        by_coll.legend(fontsize=7, title="Modality", title_fontsize=8,
                       loc="lower right" if len(coll_labels) < 5 else "best")
        by_coll.margins(x=0.15)
    else:
        _empty(by_coll)

    gb = [coll_gb[c] for c in shown] + ([sum(coll_gb[c] for c in collections[len(shown):])]
                                        if len(shown) < len(collections) else [])
    _barh(size, coll_labels, gb, "size per collection (GB)", "GB", fmt="{:,.2f}", colors=_PALETTE[2])
    _barh(by_mod, *_top(modalities, [mod_series[m] for m in modalities], top), "series per modality", "series",
          colors=_PALETTE[1])
    _barh(by_lic, *_top([r["licence"] for r in licences], [r["series"] for r in licences], top),
          "series per licence", "series", colors=_PALETTE[4])
    return fig


# -- coverage ----------------------------------------------------------------------
def coverage_chart(report: CoverageReport, *, top: int = TOP) -> Chart:
    """Where a cohort's series are served from: series per endpoint, and per endpoint and reason
    (the reasons beyond the ``top`` largest summed into one ``other (N)`` bar)."""
    by_endpoint = report.by_endpoint()
    by_reason = report.by_reason()
    store = f"v{report.newest_google_store}" if report.newest_google_store else "none"
    fig = Chart(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ends, reasons = fig.subplots(1, 2, width_ratios=[1, 2.2])
    fig.suptitle(f"coverage of {report.routes.num_rows:,} series · policy {report.policy} · "
                 f"IDC v{report.idc_version} · newest Google store {store}", fontsize=12)
    names = by_endpoint["endpoint"].tolist()
    colour = {name: (UNAVAILABLE_COLOR if name == "unavailable" else COVERAGE_COLORS[i % len(COVERAGE_COLORS)])
              for i, name in enumerate(names)}
    _barh(ends, names, by_endpoint["series"].tolist(), "series per endpoint", "series",
          colors=[colour[n] for n in names])
    labels = [wrap(f"{e}: {r}") for e, r in zip(by_reason["endpoint"], by_reason["reason"])]
    values = by_reason["series"].tolist()
    colors = [colour[e] for e in by_reason["endpoint"]]
    if len(labels) > top:
        labels, values = _top(labels, values, top)
        colors = colors[: top - 1] + ["#aaaaaa"]
    _barh(reasons, labels, values, "series per endpoint and reason", "series", colors=colors)
    reasons.tick_params(axis="y", labelsize=7)
    return fig


# -- a harvest ---------------------------------------------------------------------
def harvest_chart(out_dir: str | os.PathLike, *, catalog=None) -> Chart:
    """A harvest directory's results: series per status (each series' latest outcome; failed
    statuses in red), series per number of instances harvested (bins :data:`INSTANCE_BINS`, up to the
    largest series' bin) and,
    per typed attribute, the percentage of harvested instances that have a value.

    ``catalog``: the :class:`~cohort.catalog.Catalog` to open the harvest's views in
    (default: a new one, so no other catalog gets them).
    """
    from .catalog import Catalog  # noqa: PLC0415
    from .harvest import COLUMNS, FINAL_STATUSES, harvest_status, open_harvest  # noqa: PLC0415

    statuses = harvest_status(out_dir).to_pylist()
    catalog = catalog or Catalog(download=False)
    open_harvest(catalog, out_dir)
    per_series = catalog.sql("SELECT count(*) AS n FROM harvest_instances GROUP BY SeriesInstanceUID")
    counts = per_series.column("n").to_pylist()
    keywords = [c.keyword for c in COLUMNS]
    have = catalog.sql("SELECT count(*) AS n, " + ", ".join(f'count("{k}") AS "{k}"' for k in keywords)
                       + " FROM harvest_instances").to_pylist()[0]
    total = have.pop("n")

    fig, (status_ax, inst_ax, attr_ax) = _figure(1, 3, f"harvest {Path(out_dir).name or out_dir} · "
                                                       f"{sum(s['series'] for s in statuses):,} series · "
                                                       f"{total:,} instances")
    _barh(status_ax, [s["status"] for s in statuses], [s["series"] for s in statuses],
          "series per status (latest outcome)", "series",
          colors=[_FINAL_COLOR if s["status"] in FINAL_STATUSES else _FAILED_COLOR for s in statuses])

    edges = list(INSTANCE_BINS)
    labels = [f"{a}" if b - a == 1 else f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])] + [f"≥{edges[-1]}"]
    binned = [0] * len(labels)
    for n in counts:
        binned[_bin(n, edges)] += 1
    shown = max([i + 1 for i, n in enumerate(binned) if n] or [1])  # up to the largest series' bin
    labels, binned = labels[:shown], binned[:shown]
    _barh(inst_ax, labels, binned, "series per instances harvested", "series", colors=_PALETTE[2])
    inst_ax.set_ylabel("instances in the series")

    share = [100.0 * have[k] / total if total else 0.0 for k in keywords]
    _barh(attr_ax, keywords, share, "instances with a value (%)", "% of instances", fmt="{:.0f}",
          colors=_PALETTE[4])
    attr_ax.set_xlim(0, 115)
    return fig


def _bin(n: int, edges: Sequence[int]) -> int:
    """The index of the bin [edges[i], edges[i+1]) that holds ``n`` (the last bin is open)."""
    for i in range(len(edges) - 1, -1, -1):
        if n >= edges[i]:
            return i
    return 0


# -- saving ------------------------------------------------------------------------
def save_chart(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG (``DPI``: 1200 x 800 pixels) or SVG (864 x 576 pt), chosen by the suffix."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CohortInputError(f"cannot tell the chart format of {path}: name the file .png or .svg")
    if not path.parent.is_dir():
        raise CohortInputError(f"cannot write the chart {path}: directory {path.parent} does not exist")
    fig.savefig(path, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
    return path


def to_svg(fig: Figure) -> str:
    """The figure as SVG text (for embedding in a page)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()
