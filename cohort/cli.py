"""The ``cohort`` command: a thin shell over the library.

Each command calls one library function. Library errors (CohortError) become
a one-line message and an exit code here, in one place; ``-v`` shows tracebacks.

Exit codes: 0 done; 1 an error (a one-line message says what and the fix);
2 a usage error (wrong options); 3 finished, but some of the work failed
(series left failed by ``harvest``, endpoints that answered with errors in
``coverage --verify``, a download that did not complete): rerun or look at the
log; 130 interrupted (Ctrl-C), at any moment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from . import queries as _queries
from ._text import plural
from .catalog import Catalog
from .cohort import Cohort
from .errors import CohortError

log = logging.getLogger("cohort")
FORMATS = ("table", "csv", "tsv", "json", "parquet")

#: Exit codes (README "Exit codes").
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: Set by the first Ctrl-C: whatever is raised after it (DuckDB turns the interrupt into a
#: RuntimeError "Query interrupted") ends as "Interrupted." and exit 130, never a traceback.
_INTERRUPTED = threading.Event()


class Incomplete(click.ClickException):
    """The command finished, but part of its work failed (exit 3): the message says what and how to redo it."""

    exit_code = EXIT_INCOMPLETE

    def show(self, file=None) -> None:
        click.echo(f"Incomplete: {self.format_message()}", err=True)


def _on_sigint(signum, frame) -> None:
    _INTERRUPTED.set()
    raise KeyboardInterrupt


def _interrupted() -> None:
    click.echo("Interrupted.", err=True)
    sys.exit(EXIT_INTERRUPTED)


def checkpoint(name: str) -> None:
    """A test hook: with ``COHORT_TEST_CHECKPOINT=name`` the CLI says ``checkpoint NAME`` on stderr when it
    gets here, so a test can send a signal at a known point; with ``COHORT_TEST_CHECKPOINT_WAIT=SECONDS``
    it then waits that long (a point where nothing else would take time)."""
    if os.environ.get("COHORT_TEST_CHECKPOINT") != name:
        return
    print(f"checkpoint {name}", file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get("COHORT_TEST_CHECKPOINT_WAIT") or 0))


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
    """Turns library errors into one-line messages (tracebacks with -v) and Ctrl-C into exit 130."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            _interrupted()

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _interrupted()
        except CohortError as exc:
            if _INTERRUPTED.is_set():
                _interrupted()
            state = ctx.find_object(_State)
            if state is not None and state.verbose:
                raise
            message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            if getattr(exc, "sql", None) and getattr(exc, "source", None) is None:
                message += " (run with -v for the SQL and a traceback)"
            click.echo(f"Error: {message}", err=True)
            sys.exit(EXIT_ERROR)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception:
            if _INTERRUPTED.is_set():  # e.g. DuckDB's RuntimeError("Query interrupted")
                _interrupted()
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More output: -v for progress and tracebacks, -vv for debug logs.")
@click.option(
    "--index-dir",
    type=click.Path(file_okay=False, exists=True),
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
        # making the local index copy (once per idc-index-data version) takes a while: say so without -v too
        copy_log = logging.getLogger("cohort.localcopy")
        if not any(isinstance(h, _Notice) for h in copy_log.handlers):
            copy_log.addHandler(_Notice(logging.INFO))
            copy_log.setLevel(logging.INFO)


class _EchoWarnings(logging.Handler):
    """Library warnings as ``Warning: ...`` lines on stderr (found at each message: the CLI runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"Warning: {record.getMessage()}", err=True)


class _Notice(logging.Handler):
    """Log records as plain lines on the current stderr (found at each message: the CLI runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


# -- shared options -----------------------------------------------------------
def parse_params(values: tuple[str, ...]) -> dict[str, Any]:
    """``-p NAME=VALUE`` / ``-p NAME:TYPE=VALUE`` options by name (a repeated name keeps every value)."""
    return _queries.parse_assignments(values)


def param_option(f: Callable) -> Callable:
    return click.option(
        "-p", "--param", "params", multiple=True, metavar="NAME[:TYPE]=VALUE",
        help="A query parameter (lists: comma-separated, or repeat -p for a list parameter); "
             "for ad-hoc SQL give a type, e.g. -p m:VARCHAR[]=CT,MR.",
    )(f)


def max_rows_option(f: Callable) -> Callable:
    return click.option("--max-rows", default=50, show_default=True, type=click.IntRange(min=-1),
                        help="Rows shown in table format (-1: all).")(f)


def _max_rows(value: int) -> int:
    return sys.maxsize if value < 0 else value


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


def archive_option(f: Callable) -> Callable:
    return click.option(
        "--archive", "archive_dir", type=click.Path(file_okay=False, exists=True),
        help="A `cohort harvest` directory to use as the index: its dicom_metadata and derived index, sm_index, "
             "ct_index, ... replace IDC's (also as archive.<table>); built on first use.",
    )(f)


def open_archive_dir(state: _State, archive_dir: str | None) -> None:
    """``--archive DIR``: the harvest's archive tables take idc-index's names in the catalog."""
    if archive_dir:
        from .archive.catalog import open_archive  # noqa: PLC0415 - imports pydicom; only with --archive

        open_archive(state.catalog, archive_dir)


def url_endpoint(url: str | None, auth: str):
    """The ``--url``/``--auth`` endpoint, or None without --url (then --auth must be left at none)."""
    from .endpoints import auth_from_name, custom  # noqa: PLC0415 - only for commands that talk DICOMweb

    if url is None:
        if auth != "none":
            raise click.UsageError("--auth applies to --url")
        return None
    return custom(url, auth_from_name(auth))


def output_format(fmt: str | None, output: str | None) -> str:
    """The -f format, else the -o suffix when it names one, else table."""
    if fmt is None:
        suffix = Path(output).suffix.lstrip(".").lower() if output else ""
        if output and suffix not in FORMATS:
            file_formats = ", ".join(f".{f}" for f in FORMATS if f != "table")
            raise click.BadParameter(f"cannot tell the format of {output!r} from its suffix; name the file "
                                     f"{file_formats}, or give -f {{{','.join(FORMATS)}}}", param_hint="-o/--output")
        fmt = suffix or "table"
    return fmt


def write_rows(columns: list[str], rows: list[tuple], fmt: str, output: str | None) -> None:
    """Print or save rows of Python values as CSV or TSV with the csv module (no pandas to import);
    list and struct cells as JSON."""
    import csv  # noqa: PLC0415

    def cell(v: Any) -> Any:
        return json.dumps(v, default=str) if isinstance(v, (list, dict)) else v

    def write(stream) -> None:
        writer = csv.writer(stream, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([cell(v) for v in row] for row in rows)

    if output:
        with _writing(output), open(output, "w", newline="", encoding="utf-8") as f:
            write(f)
        click.echo(f"wrote {plural(len(rows), 'row')} to {output}", err=True)
    else:
        write(sys.stdout)


def write_frame(df, fmt: str | None, output: str | None, max_rows: int | None = 50) -> None:
    """Print or save a pandas DataFrame in one of FORMATS (a file gets every row)."""
    fmt = output_format(fmt, output)
    if output:
        max_rows = None
    if fmt == "parquet":
        if not output:
            raise click.UsageError("--format parquet needs -o PATH")
        with _writing(output):
            df.to_parquet(output, index=False)
        click.echo(f"wrote {plural(len(df), 'row')} to {output}", err=True)
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
        click.echo(f"wrote {plural(len(df), 'row')} to {output}", err=True)
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


_MANIFEST_SUFFIXES = (".s5cmd", ".txt", ".csv", ".tsv", ".json", ".parquet")


def load_cohort(state: _State, source: str, params: dict[str, Any]) -> Cohort:
    """A cohort from a saved query name, a .sql file, or a manifest file."""
    from .errors import ManifestError

    path = Path(source)
    if path.is_dir():
        raise ManifestError("is a directory; give a manifest file (.s5cmd, .csv, .tsv, .json, .parquet), "
                            "a .sql file or a saved query name (see `cohort queries`)", path=source)
    if not path.exists() and path.suffix.lower() in _MANIFEST_SUFFIXES:
        raise ManifestError("no such file; give the path of an existing manifest (or a .sql file, or a saved "
                            "query name: see `cohort queries`)", path=source)
    checkpoint("query")
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
    from .diagnose import explain_empty, unknown_series  # noqa: PLC0415

    if rows == 0:
        reasons = explain_empty(state.catalog, sql, bound)
        if reasons:
            click.echo(f"no rows: {'; '.join(reasons)}", err=True)
    elif uids is not None:
        from .cohort import uid_table  # noqa: PLC0415

        unknown = unknown_series(state.catalog, uid_table(uids))
        if unknown:
            click.echo(f"warning: {unknown}", err=True)


@cli.command("query")
@click.argument("query")
@param_option
@output_options
@click.option("--summary", is_flag=True, help="Print the cohort's counts and per-collection summary instead of rows.")
@max_rows_option
@archive_option
@pass_state
def query_cmd(state: _State, query: str, params: tuple[str, ...], fmt: str | None, output: str | None,
              summary: bool, max_rows: int, archive_dir: str | None) -> None:
    """Run a saved query (by NAME) or a .sql FILE on the index.

    When nothing matches, says which parameter values are not in the index and
    the nearest ones that are.

    \b
    cohort query series_by_collection -p collection_id=tcga_paad -p modality=SM
    cohort query series_by_patient -p patient_ids=TCGA-F2-A7TX -p patient_ids=TCGA-2J-AAB1
    cohort query my_query.sql -o cohort.parquet
    """
    saved = _queries.load_query(query)
    bound = saved.bind(parse_params(params))
    open_archive_dir(state, archive_dir)
    if summary:
        c = Cohort.from_query(saved, bound, catalog=state.catalog)
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
@click.option("--harvest", "harvest_dir", type=click.Path(file_okay=False, exists=True),
              help="A `cohort harvest` directory: adds the views harvest_instances, harvest_log and harvest_series.")
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
    cohort sql -p m:VARCHAR[]=CT,MR "SELECT Modality, count(*) FROM index WHERE Modality IN $m GROUP BY 1"
    """
    if sql == "-":
        sql = sys.stdin.read()
    if harvest_dir:
        from .harvest import open_harvest

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
        from .tables import known_tables  # noqa: PLC0415

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
    from .browse import collections

    write_frame(collections(state.catalog), fmt, output, _max_rows(max_rows))


@cli.command("patients")
@click.argument("collection_ids", nargs=-1, required=True)
@output_options
@max_rows_option
@pass_state
def patients_cmd(state: _State, collection_ids: tuple[str, ...], fmt: str | None, output: str | None,
                 max_rows: int) -> None:
    """List the patients of COLLECTION_IDS with studies, series, instances and GB (idc-index: get_patients)."""
    from .browse import patients

    write_frame(patients(list(collection_ids), state.catalog), fmt, output, _max_rows(max_rows))


@cli.command("studies")
@click.argument("patient_ids", nargs=-1, required=True)
@output_options
@max_rows_option
@pass_state
def studies_cmd(state: _State, patient_ids: tuple[str, ...], fmt: str | None, output: str | None,
                max_rows: int) -> None:
    """List the studies of PATIENT_IDS with modalities, series, instances and GB (idc-index: get_dicom_studies)."""
    from .browse import studies

    write_frame(studies(list(patient_ids), state.catalog), fmt, output, _max_rows(max_rows))


@cli.command("series")
@click.argument("study_uids", nargs=-1, required=True)
@output_options
@max_rows_option
@pass_state
def series_cmd(state: _State, study_uids: tuple[str, ...], fmt: str | None, output: str | None,
               max_rows: int) -> None:
    """List the series of STUDY_UIDS with modality, description, instances and MB (idc-index: get_dicom_series)."""
    from .browse import series

    write_frame(series(list(study_uids), state.catalog), fmt, output, _max_rows(max_rows))


@cli.command("viewer")
@click.argument("uid")
@click.option("--viewer", "viewer", type=click.Choice(["slim", "ohif_v3", "ohif_v2"]), default=None,
              help="Viewer [default: slim when the study has SM images, else ohif_v3].")
@pass_state
def viewer_cmd(state: _State, uid: str, viewer: str | None) -> None:
    """Print the IDC viewer URL of a series or study UID (idc-index: get_viewer_URL)."""
    from .browse import viewer_url

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
    from .citations import cite, dois_of

    result = cite(dois_of(load_cohort(state, source, parse_params(params))), style=style, fetch=not offline,
                  resolver=resolver)
    click.echo(result.render())
    click.echo(result.summary, err=True)
    if result.skipped:
        sys.exit(1)


#: With --url, these files are read as lists of Study/Series UIDs, IDC's or not.
_UID_FILES = (".csv", ".tsv", ".parquet")


@cli.command("harvest")
@click.argument("query", required=False)
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
@click.option("--retry", "retry", default="", metavar="STATUS[,STATUS]",
              help="Ask again for series whose final status is one of these: not_found, empty "
                   "(failed series are always asked again; series not found at another endpoint too).")
@click.option("--flush-seconds", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="Write finished series at least this often (what a crash can lose).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--all", "everything", is_flag=True,
              help="With --url and no QUERY: every series the server lists (QIDO-RS); a rerun harvests new ones.")
@pass_state
def harvest_cmd(state: _State, query: str | None, params: tuple[str, ...], out_dir: str, url: str | None, auth: str,
                routing: str | None, workers: int | None, rate: float | None, no_rate_limit: bool, timeout: float,
                retries: int, light: bool, retry: str, flush_seconds: float, no_progress: bool,
                everything: bool) -> None:
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
    """
    from .harvest import DEFAULT_RATE, DEFAULT_WORKERS, FINAL_STATUSES, harvest
    from .retry import RetryPolicy

    if url is not None and routing is not None:
        raise click.UsageError("give either --url or --policy")
    if no_rate_limit and rate is not None:
        raise click.UsageError("give either --rate or --no-rate-limit")
    if (query is None) == (not everything):
        raise click.UsageError("give a QUERY (saved query, .sql file or manifest) or --all, not both")
    if everything and url is None:
        raise click.UsageError("--all needs --url (the server whose every series is harvested)")
    endpoint = url_endpoint(url, auth)
    if everything or (endpoint is not None and query is not None and Path(query).suffix.lower() in _UID_FILES):
        from .archive.uids import series_source  # noqa: PLC0415 - only for archives

        source = series_source(endpoint, None if everything else query, params=parse_params(params))
    else:
        source = load_cohort(state, query, parse_params(params))
    result = harvest(
        source, out_dir, endpoint,
        workers=workers or DEFAULT_WORKERS, rate=None if no_rate_limit else (rate or DEFAULT_RATE),
        policy=RetryPolicy(timeout=timeout, max_attempts=retries + 1), light=light,
        progress=not no_progress, routing=routing, flush_seconds=flush_seconds, retry=retry.split(","),
    )
    click.echo(result.summary(resume="run the same command again to resume"), err=True)
    if result.interrupted:
        _interrupted()
    if result.failed:
        failed = ", ".join(f"{s} {n:,}" for s, n in sorted(result.by_status.items()) if s not in FINAL_STATUSES)
        raise Incomplete(f"{result.failed:,} series failed ({failed}); run the same command again to ask for them "
                         f"again, and see why with `cohort sql --harvest {out_dir} \"SELECT status, error FROM "
                         "harvest_series WHERE status NOT IN ('ok', 'empty', 'not_found')\"`")


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
@archive_option
@pass_state
def manifest_cmd(state: _State, source: str, params: tuple[str, ...], output: str, fmt: str | None,
                 provider: str, citations: bool, archive_dir: str | None) -> None:
    """Write the cohort of a saved query, .sql FILE or manifest as a manifest with provenance.

    \b
    cohort manifest series_by_collection -p collection_id=tcga_paad -o paad.s5cmd
    cohort manifest paad.s5cmd -o paad.csv
    cohort manifest old.csv -o old_gcs.s5cmd --provider gcs
    """
    if archive_dir:  # no bucket: the series' DICOMweb URLs, as CSV, TSV, JSON or Parquet
        from .archive.catalog import archive_manifest  # noqa: PLC0415

        if fmt == "s5cmd" or (fmt is None and Path(output).suffix.lower() not in (".csv", ".tsv", ".json", ".parquet")):
            raise click.UsageError("an archive has no bucket for s5cmd: write its DICOMweb URLs with -o FILE.csv, "
                                   ".tsv, .json or .parquet")
        open_archive_dir(state, archive_dir)
        cohort = load_cohort(state, source, parse_params(params))
        write_frame(archive_manifest(state.catalog, list(cohort.series_uids)).to_pandas(), fmt, output)
        return
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
    from .archive.compare import compare

    report = compare(archive_dir, reference, table, only_common=only_common)
    click.echo(f"{report.num_rows:,} differences", err=True)
    write_frame(report.to_pandas(), fmt, output, max_rows=200)


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
    from .coverage import route

    if sum(x is not None for x in (routing, pin, url)) > 1:
        raise click.UsageError("give only one of --policy, --pin and --url")
    if sample is not None and not verify:
        raise click.UsageError("--sample applies to --verify")
    policy = url_endpoint(url, auth) or pin or routing
    if archive_dir:  # an archive's coverage is the server it was harvested from
        from .archive.catalog import archive_endpoints  # noqa: PLC0415

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
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        checkpoint("start")
        cli(prog_name="cohort")
    except KeyboardInterrupt:  # outside a command (option parsing, --help)
        _interrupted()


if __name__ == "__main__":
    main()
