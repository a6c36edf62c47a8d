"""Answers that explain themselves: why a query found nothing, and rows naming series IDC does not have.

:func:`explain_empty` looks at the text parameters a query compared with index
columns (``collection_id = $collection_id``, ``lower(col) = lower($organ)``,
``list_contains($ids, PatientID)``, ...) and says which bound values no row of
that column has, with the nearest values that exist (``'TCGA_PAAD'`` ->
``'tcga_paad'``). :func:`unknown_series` counts result rows whose
SeriesInstanceUID is in neither ``index`` nor ``prior_versions_index``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .catalog import referenced_tables
from .queries import _strip_comments_and_strings

if TYPE_CHECKING:
    import pyarrow as pa

    from .catalog import Catalog

_IDENT = re.compile(r'"?([A-Za-z_][A-Za-z0-9_]*)"?(?:\s*\.\s*"?([A-Za-z_][A-Za-z0-9_]*)"?)?')
#: Similarity (Jaro-Winkler, lower case) from which a value is offered as "did you mean".
SIMILAR = 0.8


@dataclass(frozen=True)
class Comparison:
    """A parameter compared with a column: ``table.column`` (a list column when ``is_list``)."""

    parameter: str
    table: str
    column: str
    case_insensitive: bool


def comparisons(catalog: Catalog, sql: str, parameters: list[str]) -> list[Comparison]:
    """For each parameter, the index column nearest to it on the line where the SQL uses it."""
    code = _strip_comments_and_strings(sql)
    tables = sorted(referenced_tables(sql, catalog.tables), key=lambda t: (t != "index", t))
    columns = {t: set(catalog.tables[t].column_names) for t in tables}
    found = []
    for name in parameters:
        for m in re.finditer(re.escape(f"${name}") + r"\b", code):
            start = code.rfind("\n", 0, m.start()) + 1
            end = code.find("\n", m.end())
            line = code[start: end if end >= 0 else len(code)]
            at = m.start() - start
            best: tuple[int, str, str] | None = None
            for ident in _IDENT.finditer(line):
                if line[ident.start() - 1: ident.start()] == "$":
                    continue  # a parameter, not a column
                first, second = ident.group(1), ident.group(2)
                if second and first in columns and second in columns[first]:
                    table, column = first, second
                else:
                    column = second or first
                    table = next((t for t in tables if column in columns[t]), "")
                if not table:
                    continue
                distance = min(abs(ident.start() - at), abs(ident.end() - at))
                if best is None or distance < best[0]:
                    best = (distance, table, column)
            if best:
                found.append(Comparison(name, best[1], best[2], "lower(" in line.lower()))
                break
    return found


def explain_empty(catalog: Catalog, sql: str, params: Mapping[str, Any]) -> list[str]:
    """Why ``sql`` with ``params`` returned no rows: values absent from the columns they are compared
    with (and the nearest ones that exist), or, when each value exists, that they match nothing together."""
    texts = {k: v for k, v in params.items()
             if isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(x, str) for x in v))}
    absent, present = [], []
    for comp in comparisons(catalog, sql, list(texts)):
        values = texts[comp.parameter]
        for value in values if isinstance(values, list) else [values]:
            n = _count(catalog, comp, value)
            where = f"{comp.table}.{comp.column}"
            if n:
                present.append(f"{comp.column} {value!r} ({n:,} rows of {comp.table})")
                continue
            near = _nearest(catalog, comp, value)
            absent.append(f"{comp.column} {value!r} is not in {where}"
                          + (f"; did you mean {' or '.join(repr(v) for v in near)}?" if near else ""))
    if absent:
        return absent
    if len(present) > 1:
        return [f"each value is in the index ({', '.join(present)}), but no row has them all"]
    return []


def _values_sql(comp: Comparison) -> str:
    """The column's values, one per row (a list column unnested)."""
    is_list = any(c.get("name") == comp.column and c.get("mode") == "REPEATED"
                  for c in _schema_columns(comp))
    column = f'unnest("{comp.column}")' if is_list else f'"{comp.column}"'
    return f'SELECT {column} AS v FROM "{comp.table}"'


def _schema_columns(comp: Comparison) -> list[dict]:
    from .tables import known_tables  # noqa: PLC0415

    info = known_tables().get(comp.table)
    return list(((info.schema if info else None) or {}).get("columns", []))


def _count(catalog: Catalog, comp: Comparison, value: str) -> int:
    test = "lower(v) = lower($x)" if comp.case_insensitive else "v = $x"
    return catalog.sql(f"SELECT count(*) AS n FROM ({_values_sql(comp)}) WHERE {test}", {"x": value}).column(0)[0].as_py()


def _nearest(catalog: Catalog, comp: Comparison, value: str, n: int = 3) -> list[str]:
    rows = catalog.sql(
        f"SELECT v, max(jaro_winkler_similarity(lower(v), lower($x))) AS s FROM ({_values_sql(comp)}) "
        "WHERE v IS NOT NULL GROUP BY v HAVING s >= $min ORDER BY s DESC, v LIMIT $n",
        {"x": value, "min": SIMILAR, "n": n},
    ).column("v").to_pylist()
    same = [v for v in rows if str(v).lower() == value.lower()]  # only the case differs: that one
    return [str(v) for v in (same or rows)]


@dataclass(frozen=True)
class UnknownSeries:
    """Result rows whose SeriesInstanceUID is in neither ``index`` nor ``prior_versions_index``."""

    rows: int
    total: int
    idc_version: int
    examples: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.rows > 0

    def __str__(self) -> str:
        row = "row names a series" if self.total == 1 else "rows name series"
        shown = f", e.g. {', '.join(self.examples)}" if self.examples else ""
        return (f"{self.rows:,} of {self.total:,} {row} that {'is' if self.total == 1 else 'are'} not in "
                f"IDC v{self.idc_version} (neither index nor prior_versions_index){shown}")


def unknown_series(catalog: Catalog, result: pa.Table, column: str = "SeriesInstanceUID") -> UnknownSeries:
    """How many rows of ``result`` name a series IDC does not have (a typo, a StudyInstanceUID, another archive)."""
    row = catalog.sql(
        f'SELECT count(*) FILTER (WHERE known IS NULL) AS n, count(*) AS total, '
        f'list("{column}") FILTER (WHERE known IS NULL)[1:3] AS examples FROM _r '
        f'LEFT JOIN (SELECT SeriesInstanceUID AS k, true AS known FROM index UNION '
        f'SELECT SeriesInstanceUID, true FROM prior_versions_index) ON "{column}" = k',
        register={"_r": result.select([column])},
    ).to_pylist()[0]
    return UnknownSeries(row["n"], row["total"], catalog.idc_version, tuple(row["examples"] or ()))
