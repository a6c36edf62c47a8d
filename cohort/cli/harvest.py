"""Commands over harvests: harvest, harvest-status, compare (an archive against IDC's tables)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ._base import (
    check_source_path,
    auth_option,
    cli,
    Incomplete,
    _interrupted,
    load_cohort,
    output_options,
    param_option,
    parse_params,
    pass_state,
    _State,
    StoreLocation,
    url_endpoint,
    write_frame,
)
from .report import plot_option, save_plot



_UID_FILES = (".csv", ".tsv", ".parquet")


@cli.command("harvest")
@click.argument("query", required=False)
@param_option
@click.option("-o", "--output", "out_dir", required=True, type=StoreLocation(),
              help="Harvest directory (created; rerun with the same one to resume), or an object-store prefix "
                   "(s3://bucket/prefix, gs://bucket/prefix; credentials from the environment or profile).")
@click.option("--url", help="DICOMweb root to ask for every series (default: route each series with --policy).")
@auth_option
@click.option("--policy", "routing", default=None, metavar="POLICY",
              help="Without --url: route each series by google, proxy or vN (pinned release) "
                   "[default: google when Google credentials are set, else proxy].")
@click.option("--workers", default=None, type=click.IntRange(1, 64), help="Concurrent requests [default: 8].")
@click.option("--rate", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Requests a second over all workers, retries included [default: 10].")
@click.option("--no-rate-limit", is_flag=True, help="No request-rate cap (only for your own server).")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds per request attempt.")
@click.option("--retries", default=4, show_default=True, type=click.IntRange(0, 20),
              help="Retries per request on 429/5xx/network errors.")
@click.option("--light", is_flag=True, help="QIDO with the typed columns' attributes only, instead of full metadata.")
@click.option("--by-study/--by-series", "by_study", default=None,
              help="Ask for a study's metadata once for two or more of its series (other series in the answer "
                   "are dropped), or ask series by series [default: by study for the studies a QUERY's cohort "
                   "holds whole (one of over 100 instances by series when there are fewer requests than workers), "
                   "and with --all; else by series].")
@click.option("--retry", "retry", default="", metavar="STATUS[,STATUS]",
              help="Ask again for series whose final status is one of these: not_found, empty "
                   "(failed series are always asked again; series not found at another endpoint too).")
@click.option("--flush-seconds", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="Write finished series at least this often (what a crash can lose).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--cluster", metavar="ADDRESS",
              help="Shard the harvest across a Dask cluster (tcp://scheduler:8786): each shard is a harvest "
                   "store in OUT/shards/NNNN/ and --rate holds for the whole cluster. Needs idc-cohort[dask] "
                   "here and on the workers; credentials are read from each worker's environment.")
@click.option("--shards", default=None, type=click.IntRange(1, 100_000),
              help="With --cluster: number of shards [default: twice the cluster's worker threads].")
@click.option("--all", "everything", is_flag=True,
              help="With --url and no QUERY: every series the server lists (QIDO-RS); a rerun harvests new ones.")
@pass_state
def harvest_cmd(state: _State, query: str | None, params: tuple[str, ...], out_dir: str, url: str | None, auth: str,
                routing: str | None, workers: int | None, rate: float | None, no_rate_limit: bool, timeout: float,
                retries: int, light: bool, by_study: bool | None, retry: str, flush_seconds: float, no_progress: bool,
                cluster: str | None, shards: int | None, everything: bool) -> None:
    """Harvest the DICOM metadata of a cohort's instances into Parquet (resumable).

    QUERY is a saved query name, a .sql file or a manifest; with --url, a CSV, TSV
    or Parquet file of StudyInstanceUID/SeriesInstanceUID (series need not be IDC's),
    or --all for every series of the server. Query the result with
    `cohort sql --harvest DIR "SELECT ... FROM harvest_instances"`, or as IDC's
    tables with `cohort query NAME --archive DIR`.
    Exits 3 when series are left failed (http_error, timeout, malformed): run
    the same command again to ask for them again.

    \b
    cohort harvest series_by_collection -p collection_id=tcga_paad -p modality=SM -o paad/
    cohort harvest my.sql -o out/ --url http://127.0.0.1:8042/dicom-web --workers 16 --no-rate-limit
    cohort harvest --all --url http://127.0.0.1:8042/dicom-web -o lab/
    cohort harvest my.sql -o out/ --cluster tcp://scheduler:8786 --rate 40
    """
    from ..harvest import DEFAULT_RATE, DEFAULT_WORKERS, FINAL_STATUSES, harvest
    from ..retry import RetryPolicy

    if url is not None and routing is not None:
        raise click.UsageError("give either --url or --policy")
    if no_rate_limit and rate is not None:
        raise click.UsageError("give either --rate or --no-rate-limit")
    if (query is None) == (not everything):
        raise click.UsageError("give a QUERY (saved query, .sql file or manifest) or --all, not both")
    if shards is not None and cluster is None:
        raise click.UsageError("--shards needs --cluster (the Dask scheduler that runs the shards)")
    if everything and url is None:
        raise click.UsageError("--all needs --url (the server whose every series is harvested)")
    endpoint = url_endpoint(url, auth)
    if query is not None:
        check_source_path(query)
    if everything or (endpoint is not None and query is not None and Path(query).suffix.lower() in _UID_FILES):
        from ..archive.uids import series_source  # noqa: PLC0415 - only for archives

        source = series_source(endpoint, None if everything else query, params=parse_params(params))
    else:
        source = load_cohort(state, query, parse_params(params))
    options = dict(
        workers=workers or DEFAULT_WORKERS, rate=None if no_rate_limit else (rate or DEFAULT_RATE),
        policy=RetryPolicy(timeout=timeout, max_attempts=retries + 1), light=light,
        progress=not no_progress, routing=routing, flush_seconds=flush_seconds, retry=retry.split(","),
        by_study=True if by_study is None and everything else by_study,  # --all: every series of each study
    )
    if cluster is not None:
        from ..harvest import harvest_on_cluster

        result = harvest_on_cluster(source, out_dir, endpoint, cluster=cluster, shards=shards, **options)
    else:
        result = harvest(source, out_dir, endpoint, **options)
    click.echo(result.summary(resume="run the same command again to resume"), err=True)
    if result.interrupted:
        _interrupted()
    if result.failed:
        failed = ", ".join(f"{s} {n:,}" for s, n in sorted(result.by_status.items()) if s not in FINAL_STATUSES)
        raise Incomplete(f"{result.failed:,} series failed ({failed}); run the same command again to ask for them "
                         f"again, and see why with `cohort sql --harvest {out_dir} \"SELECT status, error FROM "
                         "harvest_series WHERE status NOT IN ('ok', 'empty', 'not_found')\"`")


@cli.command("harvest-status")
@click.argument("out_dir", type=StoreLocation(exists=True))
@output_options
@click.option("--repair", is_flag=True,
              help="Move damaged parts (missing, truncated, altered) into DIR/quarantine/; the next harvest "
                   "asks for their series again. Nothing is deleted.")
@click.option("--parts", "list_parts", type=click.Choice(["instances", "log"]), default=None,
              help="Print the committed parts of this kind, one path or URL a line (for external tables in "
                   "Spark or BigQuery), after checking them.")
@plot_option("the results: series per status, instances per series, attribute completeness")
def harvest_status_cmd(out_dir: str, fmt: str | None, output: str | None, repair: bool,
                       list_parts: str | None, plot: str | None) -> None:
    """Series, instances and bytes per status in a harvest directory (each series' latest outcome).

    Every committed part is checked first (size and sha256); a damaged one is named, and
    --repair quarantines it. DIR may be an object-store prefix (s3://bucket/prefix).
    """
    from ..harvest import harvest_status, repair_harvest

    if repair:
        moved = repair_harvest(out_dir)
        if moved:
            where = re.sub(r"[/\\](commits|instances|log)[/\\][^/\\]+$", "", str(moved[0]))  # quarantine/TIME
            click.echo(f"repaired: moved {len(moved)} file(s) into {where}; "
                       "run the same `cohort harvest` again to fetch their series again", err=True)
        else:
            click.echo("nothing to repair: every committed part is intact", err=True)
    if list_parts:
        from ..harvest.views import committed_parts  # noqa: PLC0415

        click.echo("\n".join(str(p) for p in committed_parts(out_dir, list_parts)))
        return
    write_frame(harvest_status(out_dir).to_pandas(), fmt, output)
    if plot:
        from ..charts import harvest_chart  # noqa: PLC0415 - matplotlib only for --plot

        save_plot(lambda: harvest_chart(out_dir), plot)


@cli.command("compare")
@click.argument("archive_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("reference", type=click.Path(dir_okay=False, exists=True))
@click.option("--table", default="sm_index", show_default=True,
              type=click.Choice(["index", "sm_index", "sm_instance_index", "ct_index", "mr_index", "pt_index"]),
              help="Which derived table REFERENCE is IDC's copy of.")
@click.option("--only-common", is_flag=True, help="Leave out series that only one side has.")
@output_options
def compare_cmd(archive_dir: str, reference: str, table: str, only_common: bool, fmt: str | None,
                output: str | None) -> None:
    """Where an archive's derived TABLE differs from IDC's (REFERENCE, e.g. sm_index.parquet), series by series."""
    from ..archive.compare import compare

    report = compare(archive_dir, reference, table, only_common=only_common)
    click.echo(f"{report.num_rows:,} differences", err=True)
    write_frame(report.to_pandas(), fmt, output, max_rows=200)
