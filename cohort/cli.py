"""The ``cohort`` command: a thin shell over the library.

Each command calls one library function. Library errors (CohortError) become
a one-line message and exit code 1 here, in one place; ``-v`` shows tracebacks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from . import queries as _queries
from .catalog import Catalog
from .cohort import Cohort
from .errors import CohortError

log = logging.getLogger("cohort")
FORMATS = ("table", "csv", "tsv", "json", "parquet")


class _State:
    verbose = 0
    index_dir: str | None = None
    _catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog(index_dir=self.index_dir)
        return self._catalog


pass_state = click.make_pass_decorator(_State, ensure=True)


class _Group(click.Group):
    """Turns library errors into one-line messages (tracebacks with -v)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CohortError as exc:
            state = ctx.find_object(_State)
            if state is not None and state.verbose:
                raise
            message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            if getattr(exc, "sql", None) and getattr(exc, "source", None) is None:
                message += " (run with -v for the SQL and a traceback)"
            click.echo(f"Error: {message}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More output: -v for progress and tracebacks, -vv for debug logs.")
@click.option(
    "--index-dir",
    type=click.Path(file_okay=False),
    envvar="COHORT_INDEX_DIR",
    help="Directory with optional index tables (sm_index.parquet, ...) for offline use [env: COHORT_INDEX_DIR].",
)
@click.version_option(package_name="idc-cohort")
@pass_state
def cli(state: _State, verbose: int, index_dir: str | None) -> None:
    """Find, check and assemble cohorts of NCI Imaging Data Commons series."""
    state.verbose = verbose
    state.index_dir = index_dir
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
        )
    else:  # the harvester's warnings (a lock taken over, a file left alone) are for the user to see
        harvest_log = logging.getLogger("cohort.harvest")
        if not any(isinstance(h, _EchoWarnings) for h in harvest_log.handlers):
            harvest_log.addHandler(_EchoWarnings(logging.WARNING))


class _EchoWarnings(logging.Handler):
    """Library warnings as ``Warning: ...`` lines on stderr (found at each message: the CLI runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"Warning: {record.getMessage()}", err=True)


# -- shared options -----------------------------------------------------------
def parse_params(values: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="-p/--param")
        params[name.strip()] = value
    return params


def param_option(f: Callable) -> Callable:
    return click.option(
        "-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
        help="A query parameter; repeat for several (lists: comma-separated).",
    )(f)


def output_options(f: Callable) -> Callable:
    f = click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")(f)
    f = click.option(
        "-f", "--format", "fmt", type=click.Choice(FORMATS), default=None,
        help="Output format (default: from the -o suffix, else table).",
    )(f)
    return f


def auth_option(f: Callable) -> Callable:
    return click.option(
        "--auth", default="none", show_default=True, metavar="KIND",
        help="With --url: none, bearer[:ENV_VAR], basic[:USER_VAR:PASSWORD_VAR], header:NAME:ENV_VAR or google.",
    )(f)


def url_endpoint(url: str | None, auth: str):
    """The ``--url``/``--auth`` endpoint, or None without --url (then --auth must be left at none)."""
    from .endpoints import auth_from_name, custom  # noqa: PLC0415 - only for commands that talk DICOMweb

    if url is None:
        if auth != "none":
            raise click.UsageError("--auth applies to --url")
        return None
    return custom(url, auth_from_name(auth))


def write_frame(df, fmt: str | None, output: str | None, max_rows: int | None = 50) -> None:
    """Print or save a pandas DataFrame in one of FORMATS."""
    if fmt is None:
        suffix = Path(output).suffix.lstrip(".").lower() if output else ""
        if output and suffix not in FORMATS:
            file_formats = ", ".join(f".{f}" for f in FORMATS if f != "table")
            raise click.BadParameter(f"cannot tell the format of {output!r} from its suffix; name the file "
                                     f"{file_formats}, or give -f {{{','.join(FORMATS)}}}", param_hint="-o/--output")
        fmt = suffix or "table"
    if output:
        max_rows = None  # a file gets every row
    if fmt == "parquet":
        if not output:
            raise click.UsageError("--format parquet needs -o PATH")
        with _writing(output):
            df.to_parquet(output, index=False)
        click.echo(f"wrote {len(df):,} rows to {output}", err=True)
        return
    if fmt == "table":
        import pandas as pd

        with pd.option_context("display.max_columns", 20, "display.width", 200, "display.max_colwidth", 60):
            text = df.to_string(index=False, max_rows=max_rows) if len(df) else "(no rows)"
        if max_rows is not None and len(df) > max_rows:
            text += f"\n[{len(df):,} rows]"
    elif fmt in ("csv", "tsv"):
        text = _lists_as_json(df).to_csv(index=False, sep="," if fmt == "csv" else "\t")
    else:
        text = df.to_json(orient="records", indent=1, date_format="iso")
    if output:
        with _writing(output):
            Path(output).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        click.echo(f"wrote {len(df):,} rows to {output}", err=True)
    else:
        click.echo(text)


@contextlib.contextmanager
def _writing(output: str) -> Iterator[None]:
    """An output file that cannot be written is a one-line usage error, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise click.FileError(output, hint=f"{exc.strerror or exc}; check that its directory exists and is writable") from None


def _lists_as_json(df):
    """List cells (e.g. sm_index's stains) as JSON arrays, not numpy's ``['a' 'b']``."""
    import numpy as np

    def is_list(v: Any) -> bool:
        return isinstance(v, (list, np.ndarray))

    def as_json(v: Any) -> Any:
        return json.dumps(np.asarray(v).tolist()) if is_list(v) else v

    lists = [c for c in df.columns if df[c].dtype == object and df[c].map(is_list).any()]
    return df.assign(**{c: df[c].map(as_json) for c in lists})


def load_cohort(state: _State, source: str, params: dict[str, Any]) -> Cohort:
    """A cohort from a saved query name, a .sql file, or a manifest file."""
    path = Path(source)
    if path.is_file() and path.suffix != ".sql":
        from .manifest import read_manifest  # noqa: PLC0415 - imports pyarrow; only for manifests

        if params:
            raise click.UsageError("-p/--param applies to queries, not to manifests")
        return read_manifest(path, catalog=state.catalog)
    return Cohort.from_query(source, params, catalog=state.catalog)


# -- commands -----------------------------------------------------------------
@cli.command("queries")
@click.option("--sql", "show_sql", is_flag=True, help="Show each query's SQL too.")
def queries_cmd(show_sql: bool) -> None:
    """List the saved queries and their parameters."""
    for q in _queries.list_queries():
        click.secho(q.name, bold=True, nl=False)
        click.echo(f"  {q.description}")
        for p in q.parameters:
            click.echo(f"    -p {p.describe()}")
        if show_sql:
            click.echo(q.sql)
        click.echo(f"    {q.path}")


@cli.command("query")
@click.argument("query")
@param_option
@output_options
@click.option("--summary", is_flag=True, help="Print the cohort's counts and per-collection summary instead of rows.")
@click.option("--max-rows", default=50, show_default=True, help="Rows shown in table format.")
@pass_state
def query_cmd(state: _State, query: str, params: tuple[str, ...], fmt: str | None, output: str | None,
              summary: bool, max_rows: int) -> None:
    """Run a saved query (by NAME) or a .sql FILE on the index.

    \b
    cohort query series_by_collection -p collection_id=tcga_paad -p modality=SM
    cohort query my_query.sql -o cohort.parquet
    """
    saved = _queries.load_query(query)
    bound = saved.bind(parse_params(params))
    if summary:
        c = Cohort.from_query(saved, bound, catalog=state.catalog)
        click.echo(f"{saved.name} on IDC v{c.provenance.idc_version}: {c.counts}")
        write_frame(c.by_collection(), fmt, output, max_rows)
        return
    df = state.catalog.df(saved.sql, bound, source=saved.source)
    write_frame(df, fmt, output, max_rows)


@cli.command("sql")
@click.argument("sql")
@param_option
@output_options
@click.option("--max-rows", default=50, show_default=True, help="Rows shown in table format.")
@click.option("--harvest", "harvest_dir", type=click.Path(file_okay=False, exists=True),
              help="A `cohort harvest` directory: adds the views harvest_instances, harvest_log and harvest_series.")
@pass_state
def sql_cmd(state: _State, sql: str, params: tuple[str, ...], fmt: str | None, output: str | None, max_rows: int,
            harvest_dir: str | None) -> None:
    """Run one SELECT on the index tables (use - to read the SQL from stdin)."""
    if sql == "-":
        sql = sys.stdin.read()
    if harvest_dir:
        from .harvest import open_harvest

        open_harvest(state.catalog, harvest_dir)
    df = state.catalog.df(sql, parse_params(params))
    write_frame(df, fmt, output, max_rows)


@cli.command("tables")
@output_options
@pass_state
def tables_cmd(state: _State, fmt: str | None, output: str | None) -> None:
    """List the index tables, and whether each is on this machine."""
    import pandas as pd

    store = state.catalog.store
    rows = []
    for name, info in sorted(store.tables.items()):
        local = store.local_path(name)
        rows.append({
            "table": name,
            "status": "shipped" if info.bundled else ("local" if local else "fetched on first use"),
            "path": str(local or ""),
            "description": info.description[:80],
        })
    write_frame(pd.DataFrame(rows), fmt, output, 100)


@cli.command("fetch")
@click.argument("tables", nargs=-1, required=True)
@pass_state
def fetch_cmd(state: _State, tables: tuple[str, ...]) -> None:
    """Download optional index tables (e.g. sm_index) into the cache now."""
    for name in tables:
        state.catalog.ensure(name)
        click.echo(f"{name}: {state.catalog.store.local_path(name)}")


@cli.command("harvest")
@click.argument("query")
@param_option
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Harvest directory (created; rerun with the same one to resume).")
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
@click.option("--flush-seconds", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="Write finished series at least this often (what a crash can lose).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@pass_state
def harvest_cmd(state: _State, query: str, params: tuple[str, ...], out_dir: str, url: str | None, auth: str,
                routing: str | None, workers: int | None, rate: float | None, no_rate_limit: bool, timeout: float,
                retries: int, light: bool, flush_seconds: float, no_progress: bool) -> None:
    """Harvest the DICOM metadata of a cohort's instances into Parquet (resumable).

    QUERY is a saved query name, a .sql file or a manifest. Query the result
    with `cohort sql --harvest DIR "SELECT ... FROM harvest_instances"`.

    \b
    cohort harvest series_by_collection -p collection_id=tcga_paad -p modality=SM -o paad/
    cohort harvest my.sql -o out/ --url http://127.0.0.1:8042/dicom-web --workers 16 --no-rate-limit
    """
    from .harvest import DEFAULT_RATE, DEFAULT_WORKERS, harvest
    from .retry import RetryPolicy

    if url is not None and routing is not None:
        raise click.UsageError("give either --url or --policy")
    if no_rate_limit and rate is not None:
        raise click.UsageError("give either --rate or --no-rate-limit")
    endpoint = url_endpoint(url, auth)
    result = harvest(
        load_cohort(state, query, parse_params(params)), out_dir, endpoint,
        workers=workers or DEFAULT_WORKERS, rate=None if no_rate_limit else (rate or DEFAULT_RATE),
        policy=RetryPolicy(timeout=timeout, max_attempts=retries + 1), light=light,
        progress=not no_progress, routing=routing, flush_seconds=flush_seconds,
    )
    click.echo(str(result), err=True)
    if result.interrupted:
        sys.exit(130)


@cli.command("harvest-status")
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True))
@output_options
@click.option("--repair", is_flag=True,
              help="Move damaged parts (missing, truncated, altered) into DIR/quarantine/; the next harvest "
                   "asks for their series again. Nothing is deleted.")
def harvest_status_cmd(out_dir: str, fmt: str | None, output: str | None, repair: bool) -> None:
    """Series, instances and bytes per status in a harvest directory (each series' latest outcome).

    Every committed part is checked first (size and sha256); a damaged one is named, and
    --repair quarantines it.
    """
    from .harvest import harvest_status, repair_harvest

    if repair:
        moved = repair_harvest(out_dir)
        if moved:
            click.echo(f"repaired: moved {len(moved)} file(s) into {moved[0].parents[1]}; "
                       "run the same `cohort harvest` again to fetch their series again", err=True)
        else:
            click.echo("nothing to repair: every committed part is intact", err=True)
    write_frame(harvest_status(out_dir).to_pandas(), fmt, output)


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
@pass_state
def manifest_cmd(state: _State, source: str, params: tuple[str, ...], output: str, fmt: str | None,
                 provider: str, citations: bool) -> None:
    """Write the cohort of a saved query, .sql FILE or manifest as a manifest with provenance.

    \b
    cohort manifest series_by_collection -p collection_id=tcga_paad -o paad.s5cmd
    cohort manifest paad.s5cmd -o paad.csv
    cohort manifest old.csv -o old_gcs.s5cmd --provider gcs
    """
    from .manifest import write_manifest

    info = write_manifest(load_cohort(state, source, parse_params(params)), output, fmt, provider,
                          citations=citations)
    click.echo(f"wrote {info.series:,} series ({info.size_MB / 1000:,.2f} GB) to {info.path} [{info.format.value}, "
               f"{info.provider.value}]; citations: {info.citations.summary}", err=True)
    click.echo(f"download with: {info.command}", err=True)


@cli.command("download")
@click.argument("manifest", type=click.Path(dir_okay=False, exists=True))
@click.option("--dest", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Directory to download into (idc-index lays out collection/patient/study/series).")
@click.option("--dry-run", is_flag=True, help="Check the manifest and print size and destination; download nothing.")
@pass_state
def download_cmd(state: _State, manifest: str, dest: str, dry_run: bool) -> None:
    """Download a manifest's series with idc-index (s5cmd); any manifest format is accepted."""
    from .manifest import download, plan_download

    plan = plan_download(manifest, dest, catalog=state.catalog)
    if dry_run:
        click.echo(f"would download {plan}")
        return
    click.echo(f"downloading {plan} with idc-index", err=True)
    download(plan)


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
@pass_state
def coverage_cmd(state: _State, query: str, params: tuple[str, ...], routing: str | None, pin: int | None,
                 url: str | None, auth: str, newest_store: int | None, lag: int, discover: bool, by: str,
                 verify: bool, sample: int | None, workers: int, fmt: str | None, output: str | None) -> None:
    """Which DICOMweb endpoint serves each series of QUERY (saved query, .sql file or manifest), and why.

    \b
    cohort coverage series_by_collection -p collection_id=tcga_paad --by reason
    cohort coverage my.sql --pin 9 --by series -o routes.parquet
    cohort coverage my.sql --url http://127.0.0.1:8042/dicom-web --verify
    """
    from .coverage import route

    if sum(x is not None for x in (routing, pin, url)) > 1:
        raise click.UsageError("give only one of --policy, --pin and --url")
    if sample is not None and not verify:
        raise click.UsageError("--sample applies to --verify")
    policy = url_endpoint(url, auth) or pin or routing
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
    write_frame(frames[by](), fmt, output)


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
    from .coverage import route  # noqa: PLC0415 - only this command needs pixels
    from .pixels import RoutedClient, contact_sheet, write_sheet  # noqa: PLC0415

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


def main() -> None:
    cli(prog_name="cohort")


if __name__ == "__main__":
    main()
