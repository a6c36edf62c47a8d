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

from .. import queries as _queries
from .._text import plural
from ..catalog import Catalog
from ..cohort import Cohort
from ..errors import CohortError


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


class StoreLocation(click.ParamType):
    """A harvest store: a local directory (``exists``: it must be there) or an object-store URL (s3://, gs://),
    passed on as the URL (credentials come from the environment, never from the URL)."""

    name = "DIR|URL"

    def __init__(self, exists: bool = False) -> None:
        self.path = click.Path(file_okay=False, exists=exists)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..harvest.fs import is_url  # noqa: PLC0415 - light: no fsspec import

        if isinstance(value, str) and is_url(value):
            return value
        return self.path.convert(value, param, ctx)


def archive_option(f: Callable) -> Callable:
    return click.option(
        "--archive", "archive_dir", type=StoreLocation(exists=True),
        help="A `cohort harvest` directory to use as the index: its dicom_metadata and derived index, sm_index, "
             "ct_index, ... replace IDC's (also as archive.<table>); built on first use.",
    )(f)


def open_archive_dir(state: _State, archive_dir: str | None) -> None:
    """``--archive DIR``: the harvest's archive tables take idc-index's names in the catalog."""
    if archive_dir:
        from ..archive.catalog import open_archive  # noqa: PLC0415 - imports pydicom; only with --archive

        open_archive(state.catalog, archive_dir)


def url_endpoint(url: str | None, auth: str):
    """The ``--url``/``--auth`` endpoint, or None without --url (then --auth must be left at none)."""
    from ..endpoints import auth_from_name, custom  # noqa: PLC0415 - only for commands that talk DICOMweb

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
    path = check_source_path(source)
    checkpoint("query")
    if path.is_file() and path.suffix != ".sql":
        from ..manifest import read_manifest  # noqa: PLC0415 - imports pyarrow; only for manifests

        if params:
            raise click.UsageError("-p/--param applies to queries, not to manifests")
        return read_manifest(path, catalog=state.catalog)
    return Cohort.from_query(source, params, catalog=state.catalog)


def check_source_path(source: str) -> Path:
    """``source`` as a path, having refused a directory or a missing manifest file with the fix."""
    from ..errors import ManifestError

    path = Path(source)
    if path.is_dir():
        raise ManifestError("is a directory; give a manifest file (.s5cmd, .csv, .tsv, .json, .parquet), "
                            "a .sql file or a saved query name (see `cohort queries`)", path=source)
    if not path.exists() and path.suffix.lower() in _MANIFEST_SUFFIXES:
        raise ManifestError("no such file; give the path of an existing manifest (or a .sql file, or a saved "
                            "query name: see `cohort queries`)", path=source)
    return path


# -- commands -----------------------------------------------------------------


def main() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        checkpoint("start")
        cli(prog_name="cohort")
    except KeyboardInterrupt:  # outside a command (option parsing, --help)
        _interrupted()
