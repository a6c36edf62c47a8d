"""The index catalog: a DuckDB connection with a view per idc-index table.

Views carry idc-index's names (``index``, ``sm_index``, ...) so that SQL written
for ``IDCClient.sql_query`` runs unchanged. They read the Parquet files in
place: nothing is loaded into pandas, and making a catalog costs milliseconds.
Optional tables are fetched the first time a query names them.

The shipped ``index`` and ``prior_versions_index`` are read from a local DuckDB
copy with an index on SeriesInstanceUID, made once per idc-index-data version
(:mod:`cohort.localcopy`), so that looking series up by UID takes milliseconds;
the views and their columns are the same either way.

Queries run read-only. The connection is opened with DuckDB's own sandbox
settings (``enable_external_access = false`` with ``allowed_paths`` limited to
the index files, ``lock_configuration = true``), and every statement is
checked to be a SELECT before it runs.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ._text import sql_list, sql_literal
from .errors import ParameterError, QueryError, ReadOnlyError, TableUnavailableError, UnknownTableError
from .localcopy import ALIAS as LOCAL_ALIAS
from .localcopy import COPIED, LocalCopy
from .tables import TableInfo, TableStore, idc_version
from .tables import cache_dir as cache_dir_for

if TYPE_CHECKING:
    import pyarrow as pa


#: Joins whose smaller side has at most this many rows filter the other side with an IN list
#: (DuckDB's ``dynamic_or_filter_threshold``; its default is 50). Matches ``index_scan_max_count``.
LOOKUP_JOIN_ROWS = 2048


class Catalog:
    """DuckDB views over the idc-index tables.

    Parameters
    ----------
    index_dir:
        A directory holding optional tables' Parquet files (``sm_index.parquet``,
        ...), for machines without internet. Defaults to ``$COHORT_INDEX_DIR``.
    cache_dir:
        Where fetched tables are kept (default: a per-version user cache).
    download:
        Fetch optional tables that are not on this machine (default True).
    urls:
        URL templates (``{version}``, ``{name}``) to fetch optional tables from, tried in
        order; default: idc-index's GitHub release URL, then the Google Cloud mirror.
    local_copy:
        Read ``index`` and ``prior_versions_index`` from a local DuckDB copy indexed on
        SeriesInstanceUID (made on first use, see :mod:`cohort.localcopy`): True (default) for
        the per-version user cache, a directory to keep it elsewhere, or False to read the
        shipped Parquet files. Falls back to the Parquet files when the copy cannot be made.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        download: bool = True,
        urls: tuple[str, ...] | None = None,
        local_copy: bool | str | os.PathLike = True,
    ) -> None:
        kwargs: dict[str, Any] = {"index_dir": index_dir, "cache": cache_dir, "download": download}
        if urls is not None:
            kwargs["urls"] = tuple(urls)
        self.store = TableStore(**kwargs)
        self.idc_version = idc_version()
        self.data_version = self.store.version
        self._extra_dirs: list[Path | str] = []
        self._extra_views: dict[str, str] = {}
        self._filesystems: dict[str, Any] = {}
        self._local: LocalCopy | None = None
        if local_copy is not False:
            where = cache_dir_for(self.data_version) if local_copy is True else Path(local_copy)
            sources = {name: self.store.tables[name].bundled_path for name in COPIED}
            if all(sources.values()):
                self._local = LocalCopy(where, sources, self.data_version)  # type: ignore[arg-type]
        self._connect()

    # -- connection -------------------------------------------------------
    def _connect(self) -> None:
        con = duckdb.connect()
        for fs in self._filesystems.values():  # object stores (a harvest in s3://...), read through fsspec
            con.register_filesystem(fs)
        if self._local is not None and not self._local.attach(con):
            self._local = None  # logged; the shipped Parquet files are read instead
        # Literal lists, not bound parameters: binding makes duckdb import pandas (~0.3 s).
        paths = sorted({str(p) for name in self.store.tables for p in self.store.candidates(name)})
        con.execute(f"SET allowed_paths = {sql_list(paths)}")
        if self._extra_dirs:
            con.execute(f"SET allowed_directories = {sql_list([_dir_prefix(d) for d in self._extra_dirs])}")
        # a slow scan (an object store) must not draw on stdout; in Jupyter without ipywidgets DuckDB
        # refuses to change the setting at all (and draws no bar there either)
        with contextlib.suppress(duckdb.InvalidInputException):
            con.execute("SET enable_progress_bar = false")
        for setting in (
            # a join with up to this many rows on its small side looks the other side up with an IN filter,
            # which the local copy answers from its index (a from_uids of 1,000 UIDs: index scans, not a full scan)
            f"SET GLOBAL dynamic_or_filter_threshold = {LOOKUP_JOIN_ROWS}",  # GLOBAL: cursors see it too
            "SET enable_external_access = false",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET lock_configuration = true",
        ):
            con.execute(setting)
        self._con = con
        self._views: set[str] = set()
        for name, info in self.store.tables.items():
            if info.bundled or self.store.local_path(name):
                self._create_view(name)
        for name, select in self._extra_views.items():
            con.execute(_create_view(name, select))

    def _create_view(self, name: str) -> None:
        if self._local is not None and name in COPIED:
            self._con.execute(f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM {LOCAL_ALIAS}.main."{name}"')
            self._views.add(name)
            return
        path = self.store.path(name)
        try:
            self._con.execute(
                f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM read_parquet({sql_literal(str(path))})'
            )
        except duckdb.Error as exc:  # a truncated or foreign file where the table should be
            raise TableUnavailableError(
                f"table {name!r}: {path} is not a readable Parquet file ({_first_line(str(exc))}); "
                f"delete or replace it (`cohort fetch {name}` downloads it again once it is gone)"
            ) from None
        self._views.add(name)

    def add_view(self, name: str, select_sql: str, allow_dir: str | os.PathLike | None = None,
                 filesystem: Any = None) -> None:
        """Add a view of our own (e.g. a harvest directory's tables); ``schema.name`` puts it in a schema.

        ``allow_dir`` is a directory the view reads (or an object-store prefix, ``s3://bucket/prefix``,
        read through the fsspec ``filesystem``); the sandbox is rebuilt to allow it.
        """
        self._extra_views[name] = select_sql
        allowed = allow_dir if allow_dir is None or _is_url(allow_dir) else Path(allow_dir).resolve()
        if allowed is not None and allowed not in self._extra_dirs:
            self._extra_dirs.append(allowed)
            if filesystem is not None:
                self._filesystems[str(filesystem.protocol)] = filesystem
            self._connect()
        else:
            self._con.execute(_create_view(name, select_sql))

    @property
    def local_copy(self) -> Path | None:
        """The local DuckDB copy that ``index`` and ``prior_versions_index`` are read from (None: the Parquet files)."""
        return self._local.path if self._local is not None else None

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection (sandboxed: read-only access to the index files)."""
        return self._con

    # -- tables -----------------------------------------------------------
    @property
    def tables(self) -> dict[str, TableInfo]:
        return dict(self.store.tables)

    def available(self, name: str) -> bool:
        """True when the table can be queried without a download."""
        return name in self._views or self.store.local_path(name) is not None

    def ensure(self, name: str) -> None:
        """Make ``name`` queryable, fetching an optional table if needed."""
        if name in self._views or name in self._extra_views:
            return
        self.store.info(name)  # raises UnknownTableError
        self._create_view(name)

    def columns(self, name: str) -> list[str]:
        self.ensure(name)
        return [r[0] for r in self._con.execute(f'DESCRIBE "{name}"').fetchall()]

    # -- lookups ----------------------------------------------------------
    def unknown_uids(self, uids: Iterable[str]) -> list[str]:
        """The SeriesInstanceUIDs among ``uids`` that are in neither ``index`` nor ``prior_versions_index``,
        in the order given.

        The local copy's UID file (:mod:`cohort.uidset`) says which are known (about a millisecond for
        1,000); the rest, or all of them without that file, are looked up in the tables with a join.
        """
        wanted = list(dict.fromkeys(uids))
        uid_set = self._local.uid_set() if self._local is not None else None
        if uid_set is not None and wanted:
            wanted = [u for u, known in zip(wanted, uid_set.known(wanted)) if not known]
        if not wanted:
            return []
        asked = [u for u in wanted if _is_utf8(u)]  # others (lone surrogates) are in no table
        # a list literal (no NUL can be in one): pa.array() would import pandas (a second, 77 MB)
        if len(asked) <= _LITERAL_UIDS and not any("\0" in u for u in asked):
            sql, register = _UNKNOWN_UIDS_SQL.format(wanted=f"SELECT unnest({sql_list(asked)}) AS SeriesInstanceUID"), None
        else:
            import pyarrow as pa  # noqa: PLC0415 - keeps `import cohort` light

            sql, register = _UNKNOWN_UIDS_SQL.format(wanted="SELECT * FROM _asked"), {
                "_asked": pa.Table.from_arrays([pa.array(asked, pa.string())], names=["SeriesInstanceUID"])}
        known = set(asked) - set(self.sql(sql, register=register).column(0).to_pylist())
        return [u for u in wanted if u not in known]

    # -- queries ----------------------------------------------------------
    def sql(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        register: Mapping[str, Any] | None = None,
    ) -> pa.Table:
        """Run one read-only SELECT with named parameters bound by DuckDB; return Arrow.

        ``register`` maps names to Arrow tables or pandas frames usable in the SQL.
        """
        return self._run(sql, params, source, register, _arrow)

    def rows(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
    ) -> tuple[list[str], list[tuple]]:
        """Like :meth:`sql`, as column names and a list of tuples of Python values: neither pyarrow
        nor pandas is imported (a CLI printing CSV starts as fast as DuckDB itself)."""
        return self._run(sql, params, source, None, lambda cur, sql, params: _names_and_rows(cur.execute(sql, params)))

    def df(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        register: Mapping[str, Any] | None = None,
    ):
        """Like :meth:`sql`, as a pandas DataFrame converted by DuckDB as ``IDCClient.sql_query`` does
        (so that the same SQL gives the same dtypes, e.g. float for ``sum(instanceCount)``)."""
        return self._run(sql, params, source, register, lambda cur, sql, params: cur.execute(sql, params).df())

    def _run(self, sql: str, params: Mapping[str, Any] | None, source: str | None,
             register: Mapping[str, Any] | None,
             fetch: Callable[[duckdb.DuckDBPyConnection, str, dict | None], Any]) -> Any:
        params = dict(params or {})
        check_read_only(sql, source=source, params=params)
        self._ensure_referenced(sql, exclude=set(register or ()))
        cur = self._con.cursor()
        try:
            for name, obj in (register or {}).items():
                cur.register(name, obj)
            # no parameters -> no binding, which would make duckdb import pandas
            return fetch(cur, sql, params or None)
        except duckdb.Error as exc:
            raise self._translate(exc, sql, source, params) from None
        finally:
            cur.close()

    def _ensure_referenced(self, sql: str, exclude: Iterable[str] = ()) -> None:
        for name in referenced_tables(sql, self.store.tables):
            if name not in exclude:
                self.ensure(name)

    def _translate(self, exc: duckdb.Error, sql: str, source: str | None, params: dict) -> QueryError:
        text = str(exc)
        if isinstance(exc, duckdb.CatalogException) and "Table with name" in text:
            m = re.search(r"Table with name (.+?) does not exist", text)  # the name may hold spaces
            name = m.group(1) if m else "?"
            return UnknownTableError(self.store.unknown_table_message(name))  # type: ignore[return-value]
        if isinstance(exc, duckdb.InvalidInputException) and "parameter" in text.lower():
            return ParameterError(_first_line(text), sql=sql, source=source, params=params)
        if isinstance(exc, duckdb.PermissionException):
            return ReadOnlyError(
                f"{_first_line(text)}; saved queries may only read the index tables",
                sql=sql, source=source, params=params,
            )
        if isinstance(exc, duckdb.BinderException):
            m = re.search(r'Referenced column "?([^"\s]+)"? not found', text)
            if m:
                hint = self._suggest_column(m.group(1), sql)
                if hint:
                    text = f"{_first_line(text).rstrip('.')} Did you mean: {', '.join(hint)}?"
        return QueryError(_message(text), sql=sql, source=source, params=params)

    def _suggest_column(self, wrong: str, sql: str) -> list[str]:
        """Column names close to ``wrong``, from the tables the SQL reads (else from every table)."""
        tables = referenced_tables(sql, self.store.tables) or set(self.store.tables)
        names = {c for t in tables for c in self.store.tables[t].column_names}
        lower = {n.lower(): n for n in names}
        return [lower[m] for m in difflib.get_close_matches(wrong.lower(), list(lower), n=3, cutoff=0.6)]

    def __repr__(self) -> str:
        return f"<Catalog IDC v{self.idc_version} (idc-index-data {self.data_version}), views: {', '.join(sorted(self._views))}>"


def _arrow(cur: duckdb.DuckDBPyConnection, sql: str, params: dict | None) -> pa.Table:
    """The result as Arrow, through the relation API: DuckDB then builds the Arrow table on every thread
    (``execute().to_arrow_table()`` builds it on one: 1 M routed series in 0.54 s against 1.14 s,
    bench/bench_coverage.py)."""
    try:
        return cur.sql(sql, params=params).to_arrow_table()
    except duckdb.BinderException as exc:
        if "prepared parameter" not in str(exc):
            raise
        # a parameter without a value: the relation API says only "Unexpected prepared parameter";
        # execute() names the parameters that lack a value (it fails when binding, before any work)
        return cur.execute(sql, params).to_arrow_table()


def _names_and_rows(result: duckdb.DuckDBPyConnection) -> tuple[list[str], list[tuple]]:
    return [d[0] for d in result.description], result.fetchall()


def _is_url(where: str | os.PathLike) -> bool:
    return isinstance(where, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", where) is not None


def _dir_prefix(directory: Path | str) -> str:
    """What DuckDB's allowed_directories takes: a path ending in its separator (``s3://b/p/`` for a prefix)."""
    return directory.rstrip("/") + "/" if isinstance(directory, str) else str(directory) + os.sep


def _create_view(name: str, select_sql: str) -> str:
    """SQL creating view ``name`` (``schema.name``: in that schema, created if missing)."""
    schema, _, table = name.rpartition(".")
    if not schema:
        return f'CREATE OR REPLACE VIEW "{table}" AS {select_sql}'
    return f'CREATE SCHEMA IF NOT EXISTS "{schema}"; CREATE OR REPLACE VIEW "{schema}"."{table}" AS {select_sql}'


# A semi-join with the few wanted UIDs on the small (build) side: DuckDB pushes them into the scan of
# each table as an IN filter (dynamic_or_filter_threshold), which the local copy answers by index scan.
_LITERAL_UIDS = 10_000
_UNKNOWN_UIDS_SQL = """
WITH _w AS ({wanted}),
known AS (
    SELECT SeriesInstanceUID FROM index SEMI JOIN _w USING (SeriesInstanceUID)
    UNION ALL
    SELECT SeriesInstanceUID FROM prior_versions_index SEMI JOIN _w USING (SeriesInstanceUID)
)
SELECT SeriesInstanceUID FROM _w ANTI JOIN known USING (SeriesInstanceUID)
"""


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_read_only(sql: str, *, source: str | None = None, params: Mapping[str, Any] | None = None) -> None:
    """Refuse anything but a single SELECT (COPY, ATTACH, SET, CREATE, INSTALL ...)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL does not parse: {_first_line(str(exc))}", sql=sql, source=source, params=params) from None
    if not statements:
        raise QueryError("no SQL statement found", sql=sql, source=source, params=params)
    for i, stmt in enumerate(statements, 1):
        if stmt.type != duckdb.StatementType.SELECT:
            kind = stmt.type.name
            line = _line_of(sql, stmt.query)
            where = f"{source}:{line}" if source and line else (source or f"statement {i}")
            raise ReadOnlyError(
                f"{where}: {kind} statements are not allowed; queries are read-only "
                "(a query may only SELECT; to save results use the output options, e.g. "
                "`cohort query NAME -o out.parquet`)",
                sql=sql, params=params,
            )
    if len(statements) > 1:
        raise QueryError(
            f"{len(statements)} statements found; a query holds exactly one SELECT",
            sql=sql, source=source, params=params,
        )


def referenced_tables(sql: str, known: Iterable[str]) -> set[str]:
    """Names of known tables that the SQL reads (identifiers are case-insensitive, as in DuckDB)."""
    by_lower = {k.lower(): k for k in known}
    try:
        # qualified, so that a schema's table (archive.sm_index, see cohort.archive) is not taken for the index's
        names = {_unqualified(n) for n in duckdb.get_table_names(sql, qualified=True)} - {None}
    except duckdb.Error:
        # get_table_names binds some constructs (JOIN ... USING); fall back to words.
        stripped = re.sub(r"--[^\n]*|'(?:[^']|'')*'", " ", sql)
        names = set(re.findall(r'(?<![.\w"])"?([A-Za-z_][A-Za-z0-9_]*)"?', stripped))  # not schema.name
    return {by_lower[n.lower()] for n in names if n.lower() in by_lower}


def _unqualified(name: str) -> str | None:
    """``'"index" AS i'`` -> ``index``; a name in a schema (``archive.sm_index AS a``) -> None."""
    parts = re.findall(r'"((?:[^"]|"")*)"|([^".\s]+)', name.split(" AS ")[0])
    if len(parts) != 1:
        return None
    quoted, plain = parts[0]
    return quoted.replace('""', '"') if quoted else plain


def _line_of(text: str, statement: str) -> int | None:
    """The line in ``text`` where ``statement`` starts, after its leading comments (a query file's header)."""
    start = text.find(statement)
    if start < 0:
        return None
    for line in statement.splitlines(keepends=True):
        if line.strip() and not line.strip().startswith("--"):
            break
        start += len(line)
    return text.count("\n", 0, start) + 1


def _message(text: str) -> str:
    """DuckDB's message on one line: the text before its blank line (which precedes the ``LINE 1: ... ^`` diagram)."""
    head = text.strip().split("\n\n")[0]
    return " ".join(line.strip() for line in head.splitlines() if line.strip())


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
