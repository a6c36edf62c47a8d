"""The report command, and the ``--plot FILE`` option that query, coverage and harvest-status share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ._base import cli, load_cohort, param_option, parse_params, pass_state, _State

#: What ``--plot`` writes, by the file's suffix.
PLOT_SUFFIXES = (".png", ".svg")


def _check_plot(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and Path(value).suffix.lower() not in PLOT_SUFFIXES:
        raise click.BadParameter(f"{value}: name the chart file .png or .svg", ctx=ctx, param=param)
    return value


def plot_option(what: str) -> Callable:
    """``--plot FILE``: save a chart of ``what`` as PNG or SVG (by the suffix)."""
    return click.option("--plot", "plot", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                        callback=_check_plot,
                        help=f"Also save a chart of {what} to FILE (.png or .svg; needs idc-cohort[charts]).")


def save_plot(make: Callable[[], Any], path: str) -> None:
    """Draw the chart (``make()``) and save it, saying where on stderr."""
    from ..charts import save_chart  # noqa: PLC0415 - matplotlib only when a chart is asked for

    click.echo(f"wrote chart {save_chart(make(), path)}", err=True)


@cli.command("report")
@click.argument("query")
@param_option
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The HTML page to write.")
@click.option("--policy", "routing", type=click.Choice(["google", "proxy"]), default=None,
              help="Coverage split: prefer the Google store or the IDC proxy "
                   "[default: google when Google credentials are set up].")
@click.option("--pin", type=click.IntRange(min=1), metavar="N", help="Coverage split as of IDC release N.")
@click.option("--url", help="Coverage split: every series from this DICOMweb root.")
@click.option("--newest-store", type=click.IntRange(min=1), metavar="N",
              help="Newest Google store release [default: the index's release minus 1].")
@click.option("--fetch-citations", is_flag=True,
              help="Ask the DOI resolver for citations not in the cache (else they are listed uncited).")
@click.option("--top", default=12, show_default=True, type=click.IntRange(min=2), help="Bars per chart panel.")
@pass_state
def report_cmd(state: _State, query: str, params: tuple[str, ...], output: str, routing: str | None,
               pin: int | None, url: str | None, newest_store: int | None, fetch_citations: bool, top: int) -> None:
    """Write one self-contained HTML page about the cohort of QUERY (saved query, .sql file or manifest):
    provenance, counts, charts, coverage split, licences, citations and the commands that reproduce it.

    The coverage split is routed from the index alone (no network); citations come
    from the cache unless --fetch-citations.

    \b
    cohort report series_by_collection -p collection_id=tcga_paad -o paad.html
    cohort report my.sql --pin 20 -o my.html
    """
    from ..endpoints import custom  # noqa: PLC0415
    from ..report import build_report  # noqa: PLC0415

    if sum(x is not None for x in (routing, pin, url)) > 1:
        raise click.UsageError("give only one of --policy, --pin and --url")
    if Path(output).suffix.lower() not in (".html", ".htm"):
        raise click.UsageError(f"{output}: name the report .html")
    if not Path(output).absolute().parent.is_dir():
        raise click.UsageError(f"{output}: directory {Path(output).absolute().parent} does not exist")
    cohort = load_cohort(state, query, parse_params(params))
    policy = custom(url) if url else (pin or routing)
    report = build_report(cohort, policy=policy, newest_google_store=newest_store, source=query,
                          fetch_citations=fetch_citations, top=top)
    path = report.write(output)
    click.echo(f"wrote {path}: {report.counts}; citations: {report.citations.summary}", err=True)
