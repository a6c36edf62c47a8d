"""A cohort's report: one self-contained HTML page to share or attach to a data request.

    >>> from cohort.report import build_report
    >>> build_report(cohort).write("report.html")

The page holds the cohort's provenance (IDC release, idc-index-data and idc-cohort versions, the
query text and parameters, its sha256, the date), its counts and per-collection summary, the
composition chart, the coverage split (routed offline from the index: which endpoint would serve
each series and why; nothing is asked over the network), the licences with their source DOIs, the
citations (from the local citation cache unless ``fetch_citations``), and the commands that make
the same cohort, coverage, citations and report again.

Self-contained: the charts are inline SVG and the style sheet is inline; the page names no
external URL (no scripts, fonts or images to load), so it opens the same offline and attached to an
e-mail. Every value written into it is HTML-escaped.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import numbers
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CohortInputError

if TYPE_CHECKING:
    from .citations import Citations
    from .cohort import Cohort, Counts
    from .coverage import CoverageReport

#: Rows of the per-collection table shown (the rest are summed into one row).
TABLE_ROWS = 50
#: Pixel size at which the charts are shown: the same as their PNG (:data:`cohort.charts.DPI`).
CHART_WIDTH, CHART_HEIGHT = 1200, 800

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222;
       background: #ffffff; max-width: 1240px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 0.85em; white-space: pre-wrap; }
figure.chart { margin: 0.5em 0; width: 1200px; height: 800px; }
figure.chart svg { width: 1200px; height: 800px; display: block; }
.muted { color: #666; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class Report:
    """A built report: its HTML text and the numbers it shows."""

    html: str = field(repr=False)
    title: str
    counts: Counts
    coverage: CoverageReport = field(repr=False)
    citations: Citations = field(repr=False)
    #: The shell commands that reproduce the cohort, its coverage, citations and this report.
    commands: tuple[str, ...] = ()

    def write(self, path: str | os.PathLike) -> Path:
        """Write the page (UTF-8) and return its path."""
        path = Path(path)
        if not path.parent.is_dir():
            raise CohortInputError(f"cannot write the report {path}: directory {path.parent} does not exist")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.html, encoding="utf-8")
        os.replace(tmp, path)
        return path

    def _repr_html_(self) -> str:
        return self.html


def build_report(
    cohort: Cohort,
    *,
    policy: Any = None,
    newest_google_store: int | None = None,
    source: str | None = None,
    fetch_citations: bool = False,
    citation_cache: str | os.PathLike | None = None,
    top: int | None = None,
) -> Report:
    """The report of ``cohort`` (see the module docstring).

    ``policy`` and ``newest_google_store`` route the coverage split as :func:`cohort.coverage.route`
    does, offline (default policy: prefer Google when Google credentials are set up, else the proxy;
    default newest store: the index's release minus one). ``source``: what the reproducing commands
    name as the cohort (a saved query name, a .sql file or a manifest path; default: the saved
    query's name). ``fetch_citations``: ask the DOI resolver for citations missing from the cache
    ``citation_cache`` (default: the user cache); otherwise the page lists those DOIs uncited.
    ``top``: bars per chart panel (default :data:`cohort.charts.TOP`).
    """
    from .charts import TOP, cohort_chart, coverage_chart, to_svg  # noqa: PLC0415 - matplotlib only here
    from .citations import cite, dois_of  # noqa: PLC0415
    from .coverage import Policy, default_policy, route  # noqa: PLC0415

    pol = default_policy() if policy is None else Policy.parse(policy)
    coverage = route(cohort, pol, newest_google_store=newest_google_store)
    citations = cite(dois_of(cohort), fetch=fetch_citations, cache_dir=citation_cache)
    counts = cohort.counts
    prov = cohort.provenance
    top = TOP if top is None else top
    cohort_svg = _inline_svg(to_svg(cohort_chart(cohort, top=top)))
    coverage_svg = _inline_svg(to_svg(coverage_chart(coverage, top=top)))
    commands = reproduce_commands(cohort, source=source, policy=pol, newest_store=coverage.newest_google_store)
    title = f"Cohort {prov.label}"
    made = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    e = _esc
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        (f'<p class="muted">IDC v{e(prov.idc_version)} · report made {e(made)} by idc-cohort '
         f"{e(prov.package_version)}</p>"),
        '<section id="provenance"><h2>Provenance</h2>',
        _table([("query", prov.query_name or "SQL"), ("source", prov.source or ""),
                 ("parameters", _params_text(prov.params)), ("IDC release", f"v{prov.idc_version}"),
                 ("idc-index-data", prov.idc_index_data_version), ("idc-cohort", prov.package_version),
                 ("query sha256", prov.sha256), ("cohort made", prov.created)]),
        ("<p>SQL:</p><pre>" + e(prov.sql) + "</pre>") if prov.sql else "",
        "</section>",
        '<section id="counts"><h2>Counts</h2>',
        _table([("series", f"{counts.series:,}"), ("studies", f"{counts.studies:,}"),
                ("patients", f"{counts.patients:,}"), ("collections", f"{counts.collections:,}"),
                ("instances", f"{counts.instances:,}"), ("size", f"{counts.size_gb:,.2f} GB")], numeric=True),
        _unknown(cohort),
        _frame(cohort.by_collection(), TABLE_ROWS),
        "</section>",
        '<section id="composition"><h2>Composition</h2>',
        f'<figure class="chart" id="chart-cohort">{cohort_svg}</figure>',
        "</section>",
        '<section id="coverage"><h2>Coverage</h2>',
        (f"<p>{e(coverage.summary_text().splitlines()[0])}. Routed from the index's own records (buckets and "
         "revisions), without asking the endpoints; check that they answer with "
         "<code>cohort coverage … --verify</code>.</p>"),
        f'<figure class="chart" id="chart-coverage">{coverage_svg}</figure>',
        _frame(coverage.by_reason(), TABLE_ROWS),
        "</section>",
        '<section id="licences"><h2>Licences</h2>',
        _frame(cohort.licenses, TABLE_ROWS),
        "</section>",
        '<section id="citations"><h2>Citations</h2>',
        f'<p class="muted">{e(citations.summary)}</p>',
        _citations(citations),
        "</section>",
        '<section id="reproduce"><h2>Reproduce</h2>',
        "<pre>" + e("\n".join(commands)) + "</pre>",
        "</section>",
        "</body></html>",
    ]
    page = "\n".join(p for p in parts if p)
    return Report(page, title, counts, coverage, citations, tuple(commands))


def reproduce_commands(cohort: Cohort, *, source: str | None, policy: Any, newest_store: int | None) -> list[str]:
    """Shell commands that install the same versions and make the cohort, its coverage, citations and report.

    ``source``: the saved query name, .sql file or manifest the cohort was read from (default: the saved
    query's name). A cohort made in Python gets a first comment line saying what file to write first.
    """
    prov = cohort.provenance
    pins = (f"pip install {shlex.quote(f'idc-cohort[charts]=={prov.package_version}')} "
            f"{shlex.quote(f'idc-index-data=={prov.idc_index_data_version}')}")
    saved = prov.sql is not None and prov.query_name is not None  # a saved query or .sql file, with parameters
    if source is not None:
        return [pins, *_commands(source, prov.params if saved else {}, policy, newest_store)]
    if saved:
        return [pins, *_commands(prov.query_name, prov.params, policy, newest_store)]
    if prov.sql is not None:
        return [("# save the SQL of the Provenance section as cohort.sql (give each parameter a type: "
                 "-p NAME:TYPE=VALUE), then"), pins, *_commands("cohort.sql", prov.params, policy, newest_store)]
    return [("# this cohort was made in Python: write it as a manifest first, "
             "e.g. cohort.manifest.write_manifest(cohort, 'cohort.csv'), then"), pins,
            *_commands("cohort.csv", {}, policy, newest_store)]


def _commands(name: str, params: Mapping[str, Any], policy: Any, newest_store: int | None) -> list[str]:
    args = " ".join([shlex.quote(name), *(f"-p {shlex.quote(a)}" for a in _param_args(params))])
    route_args = _policy_args(policy, newest_store)
    return [
        f"cohort query {args} --summary",
        f"cohort coverage {args}{route_args} --by reason",
        f"cohort cite {args}",
        f"cohort report {args}{route_args} -o report.html",
    ]


def _policy_args(policy: Any, newest_store: int | None) -> str:
    from .coverage import PolicyKind  # noqa: PLC0415

    if policy.kind is PolicyKind.PINNED:
        return f" --pin {policy.release}"
    if policy.kind is PolicyKind.ENDPOINT:
        return f" --url {shlex.quote(policy.endpoint.url)}"
    store = f" --newest-store {newest_store}" if newest_store else ""
    return f" --policy {policy.kind.value}{store}"


def _param_args(params: Mapping[str, Any]) -> list[str]:
    """``NAME=VALUE`` per bound parameter (lists comma-separated; unset ones left out)."""
    out = []
    for key, value in params.items():
        if value is None or isinstance(value, dict):
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        out.append(f"{key}={value}")
    return out


def _params_text(params: Mapping[str, Any]) -> str:
    if not params:
        return "(none)"
    return json.dumps(params, default=str, ensure_ascii=False, sort_keys=True)


def _unknown(cohort: Cohort) -> str:
    unknown = cohort.unknown_series
    return f'<p class="muted">{_esc(unknown)}</p>' if unknown else ""


# -- HTML pieces ---------------------------------------------------------------------
def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _table(rows: Sequence[tuple[str, Any]], numeric: bool = False) -> str:
    cls = ' class="n"' if numeric else ""
    body = "".join(f"<tr><th>{_esc(k)}</th><td{cls}>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _frame(df, limit: int) -> str:
    """A pandas frame as an escaped HTML table (the first ``limit`` rows, then how many more)."""
    head = df.head(limit)
    header = "".join(f"<th>{_esc(c)}</th>" for c in head.columns)
    rows = ["<tr>" + "".join(_cell(v) for v in rec) + "</tr>" for rec in head.itertuples(index=False)]
    more = f'<p class="muted">and {len(df) - limit:,} more rows</p>' if len(df) > limit else ""
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def _cell(value: Any) -> str:
    """One table cell: numbers right-aligned with thousands separators (NaN empty), lists comma-separated."""
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        if isinstance(value, numbers.Integral):
            text = f"{int(value):,}"
        else:
            text = "" if math.isnan(float(value)) else f"{float(value):,.3f}"
        return f'<td class="n">{text}</td>'
    if value is not None and not isinstance(value, str) and hasattr(value, "__len__"):
        value = ", ".join(str(v) for v in value)  # a list cell (e.g. source DOIs)
    return f"<td>{_esc(value)}</td>"


def _citations(citations: Citations) -> str:
    items = []
    for c in citations.items:
        if c.text:
            items.append(f"<li>{_esc(c.text)}</li>")
        else:
            items.append(f"<li>doi:{_esc(c.doi)} <span class=\"muted\">(not cited here: {_esc(c.reason)}; "
                         "run <code>cohort cite</code> to fetch)</span></li>")
    return "<ol>" + "".join(items) + "</ol>"


_PROLOG = re.compile(r"\A\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_NAMESPACES = re.compile(r'\s+xmlns(:xlink)?="[^"]*"')


def _inline_svg(svg: str) -> str:
    """matplotlib's SVG document as an element of an HTML page: without its XML prolog, DOCTYPE and
    metadata (which name matplotlib's web site), and without namespace declarations (an HTML parser
    puts ``<svg>`` and ``xlink:href`` in their namespaces itself), so the page names no URL."""
    body = _PROLOG.sub("", svg, count=1)
    if not body.startswith("<svg"):
        raise CohortInputError("the chart's SVG does not start with <svg>")  # pragma: no cover - matplotlib's format
    head, _, rest = body.partition(">")
    return _NAMESPACES.sub("", head) + ">" + _METADATA.sub("", rest, count=1)

