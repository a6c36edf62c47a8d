"""Commands that route, export and look: coverage, manifest, download, thumbnails."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._base import (
    archive_option,
    auth_option,
    cli,
    Incomplete,
    load_cohort,
    _max_rows,
    max_rows_option,
    open_archive_dir,
    output_options,
    param_option,
    parse_params,
    pass_state,
    _State,
    url_endpoint,
    write_frame,
)



@cli.command("manifest")
@click.argument("source")
@param_option
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The manifest file to write.")
@click.option("-f", "--format", "fmt", type=click.Choice(["s5cmd", "csv", "tsv", "json", "parquet"]), default=None,
              help="Manifest format (default: from the -o suffix, else s5cmd).")
@click.option("--provider", type=click.Choice(["aws", "gcs"]), default="aws", show_default=True,
              help="Cloud whose buckets the s5cmd lines name.")
@click.option("--citations/--no-citations", default=True, show_default=True,
              help="Fetch the source DOIs' citations (cached; skipped when offline).")
@click.option("--comments", is_flag=True,
              help="CSV/TSV: also write the provenance as '# key: value' lines above the table, as IDC Portal "
                   "exports do (readers then need comment='#'; the .provenance.json sidecar is written either way).")
@archive_option
@pass_state
def manifest_cmd(state: _State, source: str, params: tuple[str, ...], output: str, fmt: str | None,
                 provider: str, citations: bool, comments: bool, archive_dir: str | None) -> None:
    """Write the cohort of a saved query, .sql FILE or manifest as a manifest with provenance.

    \b
    cohort manifest series_by_collection -p collection_id=tcga_paad -o paad.s5cmd
    cohort manifest paad.s5cmd -o paad.csv
    cohort manifest old.csv -o old_gcs.s5cmd --provider gcs
    """
    if archive_dir:  # no bucket: the series' DICOMweb URLs, as CSV, TSV, JSON or Parquet
        from ..archive.catalog import archive_manifest  # noqa: PLC0415

        if fmt == "s5cmd" or (fmt is None and Path(output).suffix.lower() not in (".csv", ".tsv", ".json", ".parquet")):
            raise click.UsageError("an archive has no bucket for s5cmd: write its DICOMweb URLs with -o FILE.csv, "
                                   ".tsv, .json or .parquet")
        open_archive_dir(state, archive_dir)
        cohort = load_cohort(state, source, parse_params(params))
        write_frame(archive_manifest(state.catalog, list(cohort.series_uids)).to_pandas(), fmt, output)
        return
    from ..manifest import write_manifest

    info = write_manifest(load_cohort(state, source, parse_params(params)), output, fmt, provider,
                          citations=citations, comments=comments)
    click.echo(f"wrote {info.series:,} series ({info.size_MB / 1000:,.2f} GB) to {info.path} [{info.format.value}, "
               f"{info.provider.value}]; citations: {info.citations.summary}", err=True)
    click.echo(f"download with: {info.command}", err=True)


@cli.command("download")
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--collection", "collections", multiple=True, metavar="ID", help="A collection_id to download (repeatable).")
@click.option("--patient", "patients", multiple=True, metavar="ID", help="A PatientID to download (repeatable).")
@click.option("--study", "studies", multiple=True, metavar="UID", help="A StudyInstanceUID to download (repeatable).")
@click.option("--series", "series", multiple=True, metavar="UID", help="A SeriesInstanceUID to download (repeatable).")
@click.option("-d", "--dest", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Directory to download into.")
@click.option("--dir-template", default=None, metavar="TEMPLATE",
              help="idc-index's dirTemplate: the layout under DEST from %collection_id, %PatientID, "
                   "%StudyInstanceUID, %Modality and %SeriesInstanceUID joined by / - _; '' puts every file in DEST "
                   "[default: %collection_id/%PatientID/%StudyInstanceUID/%Modality_%SeriesInstanceUID].")
@click.option("--provider", type=click.Choice(["aws", "gcs"]), default="aws", show_default=True,
              help="With a selection: the cloud to download from (a manifest names its own).")
@click.option("--dry-run", is_flag=True, help="Check the selection or manifest and the free space, print size and "
              "destination; download nothing.")
@pass_state
def download_cmd(state: _State, manifest: str | None, collections: tuple[str, ...], patients: tuple[str, ...],
                 studies: tuple[str, ...], series: tuple[str, ...], dest: str, dir_template: str | None,
                 provider: str, dry_run: bool) -> None:
    """Download the series of a MANIFEST (any format), or of collections, patients, studies or series, with
    idc-index (s5cmd), after checking that DEST has the space. Values of one option add up; different options
    narrow each other.

    \b
    cohort download paad.s5cmd -d data
    cohort download --collection tcga_paad --dry-run
    cohort download --patient TCGA-2J-AAB1 --patient TCGA-2J-AAB4 -d data --dir-template %PatientID/%Modality
    """
    from ..errors import DiskSpaceError, DownloadError
    from ..manifest import DEFAULT_DIR_TEMPLATE, download, plan_download, plan_selection

    template = DEFAULT_DIR_TEMPLATE if dir_template is None else (dir_template or None)
    selected = collections or patients or studies or series
    if manifest and selected:
        raise click.UsageError("give a MANIFEST or --collection/--patient/--study/--series, not both")
    if manifest:
        plan = plan_download(manifest, dest, catalog=state.catalog, dir_template=template)
    elif selected:
        plan = plan_selection(dest, collection=collections, patient=patients, study=studies, series=series,
                              catalog=state.catalog, provider=provider, dir_template=template)
    else:
        raise click.UsageError("nothing to download: give a MANIFEST, or --collection, --patient, --study or --series")
    if dry_run:  # a plan, not a download: a shortfall is reported, not an error
        free = plan.free_bytes()
        click.echo(f"would download {plan}")
        short = f"; NOT ENOUGH: {plan.needed_bytes - free:,} bytes short" if free < plan.needed_bytes else ""
        click.echo(f"needs {plan.needed_bytes:,} bytes; {free:,} bytes free{short}", err=True)
        return
    plan.check_disk_space()
    click.echo(f"downloading {plan} with idc-index", err=True)
    try:
        download(plan)
    except DiskSpaceError:
        raise
    except DownloadError as exc:
        raise Incomplete(str(exc)) from exc


@cli.command("coverage")
@click.argument("query")
@param_option
@click.option("--policy", "routing", type=click.Choice(["google", "proxy"]), default=None,
              help="Prefer the Google store or the IDC proxy [default: google when Google credentials are set up].")
@click.option("--pin", type=click.IntRange(min=1), metavar="N", help="Serve each series as it was in IDC release N.")
@click.option("--url", help="Route everything to this DICOMweb root instead (e.g. a local Orthanc).")
@auth_option
@click.option("--newest-store", type=click.IntRange(min=1), metavar="N",
              help="Newest Google store release [default: the index's release minus --lag].")
@click.option("--lag", default=1, show_default=True, type=click.IntRange(min=0),
              help="Releases the newest Google store trails the index by.")
@click.option("--discover", is_flag=True, help="Find the newest Google store by asking Google (needs credentials).")
@click.option("--by", type=click.Choice(["endpoint", "collection", "reason", "series"]), default="endpoint",
              show_default=True, help="What the output lists: a summary, or one row per series.")
@click.option("--verify", is_flag=True, help="Ask each endpoint (QIDO) whether it has the routed series.")
@click.option("--sample", type=click.IntRange(min=1), metavar="N", help="With --verify: check N random series only.")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 32), help="With --verify: requests at once.")
@output_options
@max_rows_option
@archive_option
@pass_state
def coverage_cmd(state: _State, query: str, params: tuple[str, ...], routing: str | None, pin: int | None,
                 url: str | None, auth: str, newest_store: int | None, lag: int, discover: bool, by: str,
                 verify: bool, sample: int | None, workers: int, fmt: str | None, output: str | None,
                 max_rows: int, archive_dir: str | None) -> None:
    """Which DICOMweb endpoint serves each series of QUERY (saved query, .sql file or manifest), and why.

    \b
    cohort coverage series_by_collection -p collection_id=tcga_paad --by reason
    cohort coverage my.sql --pin 9 --by series -o routes.parquet
    cohort coverage my.sql --url http://127.0.0.1:8042/dicom-web --verify
    """
    from ..coverage import route

    if sum(x is not None for x in (routing, pin, url)) > 1:
        raise click.UsageError("give only one of --policy, --pin and --url")
    if sample is not None and not verify:
        raise click.UsageError("--sample applies to --verify")
    policy = url_endpoint(url, auth) or pin or routing
    if archive_dir:  # an archive's coverage is the server it was harvested from
        from ..archive.catalog import archive_endpoints  # noqa: PLC0415

        if policy is not None:
            raise click.UsageError("--archive routes to the archive's own server; leave out --policy, --pin and --url")
        open_archive_dir(state, archive_dir)
        roots = archive_endpoints(state.catalog)
        if len(roots) != 1:
            raise click.UsageError(f"the archive was harvested from {len(roots)} servers ({', '.join(roots)}); "
                                   "give one with --url")
        policy = url_endpoint(roots[0], auth)
    report = route(load_cohort(state, query, parse_params(params)), policy, newest_google_store=newest_store,
                   lag=lag, discover=discover)
    click.echo(report.summary_text(), err=True)
    if verify:
        checked = report.verify(sample, workers=workers, rate=None if url else 10.0)
        click.echo(checked.summary_text(), err=True)
        for row in checked.mismatches().head(20).itertuples(index=False):
            click.echo(f"  {row.status}: {row.SeriesInstanceUID} at {row.endpoint}"
                       + (f" ({row.detail})" if row.detail else ""), err=True)
    frames = {"endpoint": report.by_endpoint, "collection": report.by_collection, "reason": report.by_reason,
              "series": report.to_pandas}
    write_frame(frames[by](), fmt, output, _max_rows(max_rows))
    if verify and checked.counts["error"]:
        raise Incomplete(f"{checked.counts['error']:,} series could not be checked (the endpoint answered with an "
                         "error); run --verify again later, or see them with --by series")


@cli.command("thumbnails")
@click.argument("query")
@param_option
@click.option("-o", "--output", "outputs", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Contact sheet to write: .html (self-contained page) or .png; repeat for both.")
@click.option("--url", help="DICOMweb root that serves every slide (default: route each series with --policy).")
@auth_option
@click.option("--policy", "routing", default=None, metavar="POLICY",
              help="Without --url: route each series by google, proxy or vN (pinned release) "
                   "[default: google when Google credentials are set, else proxy].")
@click.option("--size", default=256, show_default=True, type=click.IntRange(16, 2048), help="Thumbnail box, pixels.")
@click.option("--columns", default=6, show_default=True, type=click.IntRange(1, 100), help="Tiles per row.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Only the first N slides.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Where frames and thumbnails are cached per series [default: the user cache directory].")
@click.option("--workers", default=16, show_default=True, type=click.IntRange(1, 64),
              help="Frames fetched at once (single-frame GETs).")
@click.option("--rate", default=20.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Requests a second over all workers, retries included.")
@click.option("--no-rate-limit", is_flag=True, help="No request-rate cap (only for your own server).")
@pass_state
def thumbnails_cmd(state: _State, query: str, params: tuple[str, ...], outputs: tuple[str, ...], url: str | None,
                   auth: str, routing: str | None, size: int, columns: int, limit: int | None, cache_dir: str | None,
                   workers: int, rate: float, no_rate_limit: bool) -> None:
    """A contact sheet of the slides (SM series) of QUERY: thumbnails labelled with collection, patient,
    organ, stain and objective power, linking to the viewer. Resumes from its cache when interrupted.

    \b
    cohort thumbnails sm_by_organ -p organ=Pancreas -o pancreas.html -o pancreas.png
    cohort thumbnails my.sql --url http://127.0.0.1:8042/dicom-web --no-rate-limit -o sheet.html
    """
    from ..coverage import route  # noqa: PLC0415 - only this command needs pixels
    from ..pixels import RoutedClient, contact_sheet, write_sheet  # noqa: PLC0415

    if url is not None and routing is not None:
        raise click.UsageError("give either --url or --policy")
    cohort = load_cohort(state, query, parse_params(params))
    client = RoutedClient(route(cohort, url_endpoint(url, auth) or routing), rate=None if no_rate_limit else rate)

    def progress(done: int, total: int) -> None:
        if state.verbose and (done == total or done % 50 == 0):
            click.echo(f"frames: {done:,}/{total:,}", err=True)

    sheet = contact_sheet(cohort, client, size=size, columns=columns, cache_dir=cache_dir, workers=workers,
                          limit=limit, progress=progress)
    for path in write_sheet(sheet, outputs):
        click.echo(f"wrote {path}", err=True)
    click.echo(f"{len(sheet.tiles):,} slides, {len(sheet.failed):,} without thumbnail", err=True)
    for thumb in sheet.failed[:20]:
        click.echo(f"  {thumb.series_uid}: {thumb.error}", err=True)
    if sheet.failed:
        sys.exit(1)
