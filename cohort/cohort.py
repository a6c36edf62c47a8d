"""The Cohort: a set of IDC series with its provenance.

A cohort is built from SQL, a saved query with parameters, or a list of
SeriesInstanceUIDs. It keeps the query's own result (Arrow) and answers
everything else with SQL over the catalog: the series' index rows, counts,
summaries, licences. Set operations combine cohorts of the same catalog.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ._text import plural
from .catalog import Catalog
from .errors import CohortInputError, ParameterError
from .queries import SavedQuery, bind_sql, load_query

if TYPE_CHECKING:
    import pyarrow as pa

UID_COLUMN = "SeriesInstanceUID"
_default: Catalog | None = None


def default_catalog() -> Catalog:
    """The catalog shared by cohorts that are not given one (made on first use)."""
    global _default
    if _default is None:
        _default = Catalog()
    return _default


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("idc-cohort")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class Provenance:
    """Where a cohort came from: enough to rebuild it, and to cite it."""

    idc_version: int
    idc_index_data_version: str
    package_version: str
    query_name: str | None
    sql: str | None
    params: dict[str, Any] = field(default_factory=dict)
    #: sha256 of the SQL text and the bound parameters (JSON, sorted keys)
    sha256: str = ""
    created: str = ""
    source: str | None = None

    @classmethod
    def make(cls, catalog: Catalog, *, query_name=None, sql=None, params=None, source=None) -> Provenance:
        params = dict(params or {})
        return cls(
            idc_version=catalog.idc_version,
            idc_index_data_version=catalog.data_version,
            package_version=package_version(),
            query_name=query_name,
            sql=sql,
            params=params,
            sha256=query_sha256(sql or "", params),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            source=source,
        )

    @property
    def label(self) -> str:
        """The query name with its parameters, e.g. ``series_by_collection(collection_id='tcga_paad')``
        (NULLs left out; a combined cohort's name already holds its operands')."""
        name = self.query_name or "sql"
        if any(isinstance(v, dict) for v in self.params.values()):
            return name
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if v is not None and k != "uids_sha256")
        return f"{name}({shown})" if shown else name

    def to_dict(self) -> dict[str, Any]:
        return {k: (_jsonable(v) if k == "params" else v) for k, v in asdict(self).items()}

    def recipe(self) -> dict[str, Any]:
        """What the cohort was made from: :meth:`to_dict` without the creation time."""
        return {k: v for k, v in self.to_dict().items() if k != "created"}


def query_sha256(sql: str, params: Mapping[str, Any]) -> str:
    payload = sql + "\n" + json.dumps(_jsonable(dict(params)), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Counts:
    collections: int
    patients: int
    studies: int
    series: int
    instances: int
    size_gb: float

    def __str__(self) -> str:
        return (
            f"{plural(self.series, 'series', 'series')}, {plural(self.studies, 'study', 'studies')}, "
            f"{plural(self.patients, 'patient')}, {plural(self.collections, 'collection')}, "
            f"{plural(self.instances, 'instance')}, {self.size_gb:,.2f} GB"
        )


class Cohort:
    """A set of IDC series (by SeriesInstanceUID) with the query result that selected them."""

    def __init__(self, result: pa.Table, provenance: Provenance, catalog: Catalog | None = None) -> None:
        if UID_COLUMN not in result.column_names:
            raise CohortInputError(
                f"a cohort query must return a {UID_COLUMN} column; it returned "
                f"{', '.join(result.column_names) or 'no columns'}. Add {UID_COLUMN} to the SELECT list"
            )
        self.catalog = catalog or default_catalog()
        self.result = result
        self.provenance = provenance
        self._series: pa.Table | None = None
        self._uids: dict[str, None] | None = None

    # -- constructors -----------------------------------------------------
    @classmethod
    def from_sql(
        cls,
        sql: str,
        params: Mapping[str, Any] | None = None,
        catalog: Catalog | None = None,
        **kwargs: Any,
    ) -> Cohort:
        """Select series with SQL over the catalog, with parameters (``$name``) as a dict or keywords,
        as :meth:`from_query` takes them: ``Cohort.from_sql("... WHERE collection_id = $c", c="tcga_paad")``."""
        catalog = catalog or default_catalog()
        params = bind_sql(sql, {**_mapping(params, "from_sql"), **kwargs})
        result = catalog.sql(sql, params)
        return cls(result, Provenance.make(catalog, sql=sql, params=params), catalog)

    @classmethod
    def from_query(
        cls,
        query: str | SavedQuery,
        params: Mapping[str, Any] | None = None,
        catalog: Catalog | None = None,
        **kwargs: Any,
    ) -> Cohort:
        """Run a saved query, by name or path, with parameters as a dict or keywords."""
        catalog = catalog or default_catalog()
        saved = query if isinstance(query, SavedQuery) else load_query(query)
        bound = saved.bind({**_mapping(params, "from_query"), **kwargs})
        result = catalog.sql(saved.sql, bound, source=saved.source)
        prov = Provenance.make(catalog, query_name=saved.name, sql=saved.sql, params=bound, source=saved.source)
        return cls(result, prov, catalog)

    @classmethod
    def from_uids(cls, uids: Iterable[str], catalog: Catalog | None = None, name: str | None = None) -> Cohort:
        """A cohort of the given SeriesInstanceUIDs (current or earlier releases); one string is one UID."""
        catalog = catalog or default_catalog()
        if isinstance(uids, str):
            uids = [uids]
        try:
            items = list(uids)
        except TypeError:
            raise CohortInputError(f"from_uids takes SeriesInstanceUIDs (a string or a list of strings), "
                                   f"got {type(uids).__name__}") from None
        bad = [u for u in items if not isinstance(u, str)]
        if bad:
            raise CohortInputError(f"SeriesInstanceUIDs are strings; got {type(bad[0]).__name__} {bad[0]!r}")
        wanted = list(dict.fromkeys(u.strip() for u in items if u and u.strip()))
        table = uid_table(wanted)
        unknown = catalog.unknown_uids(wanted)
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise CohortInputError(
                f"{len(unknown)} of {len(wanted)} SeriesInstanceUIDs are in neither index nor "
                f"prior_versions_index of IDC v{catalog.idc_version}: {shown}. Check for typos or "
                "StudyInstanceUIDs given as series"
            )
        listed = hashlib.sha256("\n".join(sorted(wanted)).encode()).hexdigest()
        prov = Provenance.make(catalog, query_name=name or "uids",
                               params={"n_series": len(wanted), "uids_sha256": listed})
        return cls(table, prov, catalog)

    # -- contents ---------------------------------------------------------
    @property
    def series_uids(self) -> list[str]:
        """The distinct SeriesInstanceUIDs, in query order."""
        return list(self._distinct_uids())

    def _distinct_uids(self) -> dict[str, None]:
        """The distinct UIDs (an ordered dict used as a set), computed once: ``len`` and ``in`` are O(1)."""
        if self._uids is None:
            self._uids = dict.fromkeys(self.result.column(UID_COLUMN).to_pylist())
        return self._uids

    def __len__(self) -> int:
        return len(self._distinct_uids())

    def __contains__(self, uid: object) -> bool:
        return uid in self._distinct_uids()

    @property
    def unknown_series(self):
        """Rows of the query's result naming series IDC does not have (:class:`cohort.diagnose.UnknownSeries`;
        false when there are none). Such series are not in :meth:`to_arrow` and :attr:`counts`."""
        from .diagnose import unknown_series  # noqa: PLC0415

        return unknown_series(self.catalog, self.result)

    def why_empty(self) -> list[str]:
        """For a cohort without series: which bound values are absent from the columns the query
        compares them with, and the nearest values that exist (empty list when nothing explains it)."""
        from .diagnose import explain_empty  # noqa: PLC0415

        if len(self) or not self.provenance.sql:
            return []
        return explain_empty(self.catalog, self.provenance.sql, self.provenance.params)

    def _uids_table(self) -> pa.Table:
        return uid_table(self.series_uids)

    def sql(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run SQL where ``cohort`` is this cohort's series table (plus every index table)."""
        return self.catalog.sql(sql, params, register={"cohort": self.to_arrow()})

    def to_arrow(self) -> pa.Table:
        """One row per series: the ``index`` columns, or for a series that is only in
        ``prior_versions_index`` the columns that table has (its newest version).
        ``in_current_release`` says which."""
        if self._series is None:
            self._series = self.catalog.sql(_SERIES_SQL, register={"_uids": self._uids_table()})
        return self._series

    @property
    def series(self):
        """The series table as pandas."""
        return self.to_arrow().to_pandas()

    def to_pandas(self):
        return self.series

    @property
    def counts(self) -> Counts:
        row = self.sql(
            "SELECT count(DISTINCT collection_id), count(DISTINCT PatientID), count(DISTINCT StudyInstanceUID), "
            "count(*), coalesce(sum(instanceCount), 0), coalesce(sum(series_size_MB), 0) / 1000 FROM cohort"
        ).to_pylist()[0]
        values = list(row.values())
        return Counts(*[int(v) for v in values[:5]], size_gb=float(values[5]))

    def summary(self, by: str | list[str] = "collection_id"):
        """Series, patients, studies, instances and GB per value of ``by`` (pandas)."""
        cols = [by] if isinstance(by, str) else list(by)
        known = self.to_arrow().column_names
        bad = [c for c in cols if c not in known]
        if bad:
            raise CohortInputError(f"cannot summarise by {', '.join(bad)}; columns are: {', '.join(known)}")
        group = ", ".join(f'"{c}"' for c in cols)
        return self.sql(
            f"SELECT {group}, count(*) AS series, count(DISTINCT PatientID) AS patients, "
            "count(DISTINCT StudyInstanceUID) AS studies, sum(instanceCount)::BIGINT AS instances, "
            f"round(sum(series_size_MB) / 1000, 3) AS size_GB FROM cohort GROUP BY {group} "
            f"ORDER BY series DESC, {group}"
        ).to_pandas()

    def by_collection(self):
        return self.summary("collection_id")

    def by_modality(self):
        return self.summary("Modality")

    @property
    def licenses(self):
        """Licences of the cohort's series, with series counts and source DOIs (pandas)."""
        return self.sql(
            "SELECT license_short_name, count(*) AS series, list(DISTINCT source_DOI ORDER BY source_DOI) "
            "FILTER (WHERE source_DOI IS NOT NULL) AS source_DOIs FROM cohort GROUP BY 1 ORDER BY series DESC"
        ).to_pandas()

    # -- set operations ---------------------------------------------------
    def _combine(self, other: Cohort, op: str) -> Cohort:
        if not isinstance(other, Cohort):
            return NotImplemented  # type: ignore[return-value]
        if other.catalog.idc_version != self.catalog.idc_version:
            raise CohortInputError(
                f"cannot combine cohorts of IDC v{self.catalog.idc_version} and v{other.catalog.idc_version}"
            )
        if op == "|":
            keep = list(dict.fromkeys(self.series_uids + other.series_uids))
        else:
            theirs = set(other.series_uids)
            keep = [u for u in self.series_uids if (u in theirs) == (op == "&")]
        name = f"({self.provenance.label} {op} {other.provenance.label})"
        prov = Provenance.make(
            self.catalog,
            query_name=name,
            params={"left": self.provenance.recipe(), "right": other.provenance.recipe()},
        )
        return Cohort(uid_table(keep), prov, self.catalog)

    def __or__(self, other: Cohort) -> Cohort:
        return self._combine(other, "|")

    def __and__(self, other: Cohort) -> Cohort:
        return self._combine(other, "&")

    def __sub__(self, other: Cohort) -> Cohort:
        return self._combine(other, "-")

    union, intersection, difference = __or__, __and__, __sub__

    # -- display ----------------------------------------------------------
    def __repr__(self) -> str:
        name = self.provenance.query_name or "sql"
        return f"<Cohort {name} IDC v{self.provenance.idc_version}: {self.counts}>"

    def _repr_html_(self) -> str:
        c = self.counts
        p = self.provenance
        params = ", ".join(f"{k}={v!r}" for k, v in p.params.items() if not isinstance(v, dict))
        rows = self.summary("collection_id").head(10)
        table = rows.to_html(index=False, border=0)
        more = "" if len(rows) < 10 else "<p><i>first 10 collections</i></p>"
        return (
            f"<div><b>Cohort</b> {html.escape(p.query_name or 'sql')} "
            f"<small>({html.escape(params)})</small> &middot; IDC v{p.idc_version}<br>"
            f"{c.series:,} series &middot; {c.studies:,} studies &middot; {c.patients:,} patients &middot; "
            f"{c.collections:,} collections &middot; {c.instances:,} instances &middot; {c.size_gb:,.2f} GB"
            f"{table}{more}<small>query sha256 {p.sha256[:12]}… created {html.escape(p.created)}</small></div>"
        )


_SERIES_SQL = """
WITH u AS (SELECT DISTINCT SeriesInstanceUID FROM _uids),
cur AS (SELECT i.*, true AS in_current_release FROM index i JOIN u USING (SeriesInstanceUID)),
prior AS (
    -- the newest version of a series that left the release: it was made in its min_idc_version
    SELECT p.* EXCLUDE (gcs_bucket, min_idc_version, max_idc_version),
           min(p.min_idc_version) OVER (PARTITION BY p.SeriesInstanceUID) AS series_init_idc_version,
           p.min_idc_version AS series_revised_idc_version
    FROM prior_versions_index p JOIN u USING (SeriesInstanceUID)
    WHERE p.SeriesInstanceUID NOT IN (SELECT SeriesInstanceUID FROM cur)
    QUALIFY row_number() OVER (PARTITION BY p.SeriesInstanceUID ORDER BY p.max_idc_version DESC) = 1
)
SELECT * FROM cur
UNION ALL BY NAME
SELECT *, false AS in_current_release FROM prior
"""


def _mapping(params: Any, where: str) -> dict[str, Any]:
    """Parameters given as a dict (or nothing); anything else is a clear error, not a TypeError."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ParameterError(f"{where}: params must be a dict of name -> value, got {type(params).__name__} "
                             f"{params!r}; or pass them as keywords, e.g. {where}(..., collection_id='tcga_paad')")
    return dict(params)


def uid_table(uids: list[str]) -> pa.Table:
    """A one-column Arrow table of SeriesInstanceUIDs."""
    import pyarrow as pa  # noqa: PLC0415 - keeps `import cohort` light

    return pa.table({UID_COLUMN: pa.array(uids, pa.string())})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    return value
