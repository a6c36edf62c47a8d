"""Commands that select and browse: queries, query, sql, tables, fetch, collections, patients, studies, series, viewer, cite."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import queries as _queries
from .._text import plural
from ..cohort import Cohort
from ._base import (
    archive_option,
    cli,
    load_cohort,
    _max_rows,
    max_rows_option,
    open_archive_dir,
    output_format,
    output_options,
    param_option,
    parse_params,
    pass_state,
    _State,
    StoreLocation,
    write_frame,
    write_rows,
)
from .report import plot_option, save_plot



@cli.command("queries")
@click.option("--sql", "show_sql", is_flag=True, help="Show each query's SQL too.")
def queries_cmd(show_sql: bool) -> None:
    """List the saved queries and their parameters (a malformed file is listed with its error)."""
    broken = 0
    for entry in _queries.scan_queries():
        q = entry.query
        click.secho(entry.name, bold=True, nl=False)
        if q is None:
            broken += 1
            click.secho("  BROKEN", fg="red", nl=False)
            click.echo(f"  {entry.error}")
        else:
            click.echo(f"  {q.description}")
            for p in q.parameters:
                click.echo(f"    -p {p.describe()}")
            if show_sql:
                click.echo(q.sql)
        click.echo(f"    {entry.path}")
    if broken:
        click.echo(f"{plural(broken, 'query file')} cannot be read (listed as BROKEN); the others work", err=True)


def _report_unknown_and_empty(state: _State, rows: int, uids: list[str] | None, sql: str,
                              bound: dict[str, Any]) -> None:
    """Say on stderr why a query found nothing, and which rows name series IDC does not have."""
    from ..diagnose import explain_empty, unknown_series  # noqa: PLC0415

    if rows == 0:
        reasons = explain_empty(state.catalog, sql, bound)
        if reasons:
            click.echo(f"no rows: {'; '.join(reasons)}", err=True)
    elif uids is not None:
        from ..cohort import uid_table  # noqa: PLC0415

        unknown = unknown_series(state.catalog, uid_table(uids))
        if unknown:
            click.echo(f"warning: {unknown}", err=True)


@cli.command("query")
@click.argument("query")
@param_option
@output_options
@click.option("--summary", is_flag=True, help="Print the cohort's counts and per-collection summary instead of rows.")
@max_rows_option
@plot_option("the cohort's composition (series per collection and modality, size, licences)")
@archive_option
@pass_state
def query_cmd(state: _State, query: str, params: tuple[str, ...], fmt: str | None, output: str | None,
              summary: bool, max_rows: int, plot: str | None, archive_dir: str | None) -> None:
    """Run a saved query (by NAME) or a .sql FILE on the index.

    When nothing matches, says which parameter values are not in the index and
    the nearest ones that are.

    \b
    cohort query series_by_collection -p collection_id=tcga_paad -p modality=SM
    cohort query series_by_patient -p patient_ids=TCGA-F2-A7TX -p patient_ids=TCGA-2J-AAB1
    cohort query my_query.sql -o cohort.parquet
    cohort query series_by_collection -p collection_id=tcga_paad --summary --plot paad.svg
    """
    saved = _queries.load_query(query)
    bound = saved.bind(parse_params(params))
    open_archive_dir(state, archive_dir)
    c = Cohort.from_query(saved, bound, catalog=state.catalog) if summary or plot else None
    if plot:
        from ..charts import cohort_chart  # noqa: PLC0415 - matplotlib only for --plot

        save_plot(lambda: cohort_chart(c), plot)
    if summary:
        click.echo(f"{saved.name} on IDC v{c.provenance.idc_version}: {c.counts}")
        _report_unknown_and_empty(state, c.result.num_rows, c.result.column("SeriesInstanceUID").to_pylist(),
                                  saved.sql, bound)
        write_frame(c.by_collection(), fmt, output, _max_rows(max_rows))
        return
    if output_format(fmt, output) in ("csv", "tsv"):  # without pandas: starts as fast as DuckDB
        write_rows(*state.catalog.rows(saved.sql, bound, source=saved.source), output_format(fmt, output), output)
        return
    df = state.catalog.df(saved.sql, bound, source=saved.source)
    uids = df["SeriesInstanceUID"].tolist() if "SeriesInstanceUID" in df.columns else None
    _report_unknown_and_empty(state, len(df), uids, saved.sql, bound)
    write_frame(df, fmt, output, _max_rows(max_rows))


@cli.command("sql")
@click.argument("sql")
@param_option
@output_options
@max_rows_option
@click.option("--harvest", "harvest_dir", type=StoreLocation(exists=True),
              help="A `cohort harvest` directory or object-store URL (s3://bucket/prefix, gs://...): adds the views "
                   "harvest_instances, harvest_log and harvest_series.")
@archive_option
@pass_state
def sql_cmd(state: _State, sql: str, params: tuple[str, ...], fmt: str | None, output: str | None, max_rows: int,
            harvest_dir: str | None, archive_dir: str | None) -> None:
    """Run one SELECT on the index tables (use - to read the SQL from stdin).

    Parameters are $NAME in the SQL; give a type for anything but text
    (-p n:INTEGER=5), and a list type for several values (-p m:VARCHAR[]=CT,MR
    with `Modality IN $m`). Every idc-index table can be named, e.g.
    clinical_index (fetched on first use, or from --index-dir).

    \b
    cohort sql "SELECT collection_id, count(*) AS n FROM index GROUP BY 1 ORDER BY n DESC"
    cohort sql -p m:VARCHAR[]=CT,MR "SELECT Modality, count(*) FROM index WHERE Modality IN $m GROUP BY 1 ORDER BY 1"
    """
    if sql == "-":
        sql = sys.stdin.read()
    if harvest_dir:
        from ..harvest import open_harvest

        open_harvest(state.catalog, harvest_dir)
    open_archive_dir(state, archive_dir)
    bound = _queries.bind_sql(sql, parse_params(params))
    df = state.catalog.df(sql, bound)
    write_frame(df, fmt, output, _max_rows(max_rows))


@cli.command("tables")
@output_options
@click.option("--paths", is_flag=True, help="Add each table's file path.")
@pass_state
def tables_cmd(state: _State, fmt: str | None, output: str | None, paths: bool) -> None:
    """List the index tables, and whether each is on this machine."""
    import shutil

    import pandas as pd

    store = state.catalog.store
    rows = []
    for name, info in sorted(store.tables.items()):
        local = store.local_path(name)
        row = {"table": name, "status": "shipped" if info.bundled else ("local" if local else "on first use")}
        if paths:
            row["path"] = str(local or "")
        row["description"] = info.description
        rows.append(row)
    df = pd.DataFrame(rows)
    if (fmt or "table") == "table" and not output:
        # fit the terminal: the description gets what the other columns leave
        width = shutil.get_terminal_size((100, 24)).columns
        used = sum(int(df[c].str.len().max()) + 2 for c in df.columns if c != "description")
        room = max(20, width - used - 2)
        df["description"] = df["description"].map(lambda d: d if len(d) <= room else d[: room - 1] + "…")
    write_frame(df, fmt, output, sys.maxsize)


class _FetchCommand(click.Command):
    """``cohort fetch --help`` lists the tables that can be fetched (read when the help is shown)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from ..tables import known_tables  # noqa: PLC0415

        names = sorted(n for n, info in known_tables().items() if not info.bundled)
        with formatter.section("Tables"):
            formatter.write_text(", ".join(names))
        super().format_epilog(ctx, formatter)


@cli.command("fetch", cls=_FetchCommand)
@click.argument("tables", nargs=-1, required=True)
@pass_state
def fetch_cmd(state: _State, tables: tuple[str, ...]) -> None:
    """Download optional index tables (e.g. sm_index) into the cache now."""
    for name in tables:
        state.catalog.ensure(name)
        click.echo(f"{name}: {state.catalog.store.local_path(name)}")


@cli.command("collections")
@output_options
@max_rows_option
@pass_state
def collections_cmd(state: _State, fmt: str | None, output: str | None, max_rows: int) -> None:
    """List the collections: patients, studies, series, instances, GB, modalities, licences
    (idc-index: get_collections)."""
    from ..browse import collections

    write_frame(collections(state.catalog), fmt, output, _max_rows(max_rows))


@cli.command("patients")
@click.argument("collection_ids", nargs=-1, required=True)
@output_options
@max_rows_option
@pass_state
def patients_cmd(state: _State, collection_ids: tuple[str, ...], fmt: str | None, output: str | None,
                 max_rows: int) -> None:
    """List the patients of COLLECTION_IDS with studies, series, instances and GB (idc-index: get_patients)."""
    from ..browse import patients

    write_frame(patients(list(collection_ids), state.catalog), fmt, output, _max_rows(max_rows))


@cli.command("studies")
@click.argument("patient_ids", nargs=-1, required=True)
@output_options
@max_rows_option
@pass_state
def studies_cmd(state: _State, patient_ids: tuple[str, ...], fmt: str | None, output: str | None,
                max_rows: int) -> None:
    """List the studies of PATIENT_IDS with modalities, series, instances and GB (idc-index: get_dicom_studies)."""
    from ..browse import studies

    write_frame(studies(list(patient_ids), state.catalog), fmt, output, _max_rows(max_rows))


@cli.command("series")
@click.argument("study_uids", nargs=-1, required=True)
@output_options
@max_rows_option
@pass_state
def series_cmd(state: _State, study_uids: tuple[str, ...], fmt: str | None, output: str | None,
               max_rows: int) -> None:
    """List the series of STUDY_UIDS with modality, description, instances and MB (idc-index: get_dicom_series)."""
    from ..browse import series

    write_frame(series(list(study_uids), state.catalog), fmt, output, _max_rows(max_rows))


@cli.command("viewer")
@click.argument("uid")
@click.option("--viewer", "viewer", type=click.Choice(["slim", "ohif_v3", "ohif_v2"]), default=None,
              help="Viewer [default: slim when the study has SM images, else ohif_v3].")
@pass_state
def viewer_cmd(state: _State, uid: str, viewer: str | None) -> None:
    """Print the IDC viewer URL of a series or study UID (idc-index: get_viewer_URL)."""
    from ..browse import viewer_url

    is_study = state.catalog.sql("SELECT 1 FROM index WHERE StudyInstanceUID = $u LIMIT 1", {"u": uid}).num_rows
    if is_study:
        click.echo(viewer_url(study_uid=uid, viewer=viewer, catalog=state.catalog))
    else:  # a series, or an error that says what the UID is
        click.echo(viewer_url(series_uid=uid, viewer=viewer, catalog=state.catalog))


@cli.command("cite")
@click.argument("source")
@param_option
@click.option("--format", "style", default="apa", show_default=True, metavar="FORMAT",
              help="apa, bibtex, json (CSL JSON), or another CSL style name (e.g. vancouver).")
@click.option("--offline", is_flag=True, help="Use cached citations only.")
@click.option("--resolver", default="https://doi.org", show_default=True, help="DOI resolver to ask.")
@pass_state
def cite_cmd(state: _State, source: str, params: tuple[str, ...], style: str, offline: bool, resolver: str) -> None:
    """Citations of the source DOIs of a cohort (saved query, .sql file or manifest) and of IDC's paper
    (idc-index: citations_from_selection / citations_from_manifest).

    \b
    cohort cite series_by_collection -p collection_id=tcga_paad --format bibtex
    """
    from ..citations import cite, dois_of

    result = cite(dois_of(load_cohort(state, source, parse_params(params))), style=style, fetch=not offline,
                  resolver=resolver)
    click.echo(result.render())
    click.echo(result.summary, err=True)
    if result.skipped:
        sys.exit(1)


#: With --url, these files are read as lists of Study/Series UIDs, IDC's or not.
