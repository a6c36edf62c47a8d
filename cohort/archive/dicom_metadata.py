"""``dicom_metadata``: every attribute of every harvested instance as a typed column.

One row per instance, one column per attribute, the way Google's DICOM store
export to BigQuery lays it out (the table IDC's own tables are built from):

* columns are named by DICOM keyword (pydicom's data dictionary); private and
  unknown tags by their tag, ``x`` + 8 hex digits (``x7FDF1001``);
* sequences are lists of structs, to any depth (``SpecimenDescriptionSequence[1]
  .PrimaryAnatomicStructureSequence[1].CodeMeaning`` in DuckDB);
* values are typed by the dictionary's VR as Google types them: DA -> DATE,
  TM -> TIME, DT -> TIMESTAMP (a UTC offset suffix is dropped), DS/FL/FD ->
  DOUBLE, IS/SS/US/SL/UL/SV -> BIGINT, UV -> UBIGINT, PN -> the Alphabetic
  name as text, binary VRs -> BLOB of their InlineBinary (BulkDataURIs are not
  followed), everything else -> text;
* an attribute whose dictionary VM allows more than one value is a list (as
  BigQuery's REPEATED mode); an absent list or sequence is an empty list, an
  absent single value is NULL;
* private and unknown tags keep their values as lists of text (as Google's
  ``OtherElements.Data``), or as lists of structs for sequences.

A value that does not parse as its type (``"abc"`` in a DS, a bad date) is
NULL; a build never fails on values. The schema is the union over every
instance of the harvest: a new attribute adds a column, and the type of a
column depends only on its tag, so it is the same in every build.

How: the build never loops over instances in Python. DuckDB reads the
harvest's ``json`` column, finds every tag path with ``json_group_structure``,
then one ``from_json`` parses each instance into a nested struct and generated
SQL renames and types each field (:func:`select_sql` shows it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_INTEGER_VRS = frozenset({"IS", "SS", "US", "SL", "UL", "SV", "US or SS", "US or SS or OW"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})

#: The DuckDB type of each kind of value (see the module docstring).
TYPES = {
    "int": "BIGINT", "uint": "UBIGINT", "float": "DOUBLE", "date": "DATE", "time": "TIME",
    "datetime": "TIMESTAMP", "text": "VARCHAR", "name": "VARCHAR", "binary": "BLOB",
}
_TIME_FORMATS = "['%H%M%S.%f', '%H%M%S', '%H%M', '%H', '%H:%M:%S.%f', '%H:%M:%S']"
_DATETIME_FORMATS = ("['%Y%m%d%H%M%S.%f', '%Y%m%d%H%M%S', '%Y%m%d%H%M', '%Y%m%d%H', '%Y%m%d', '%Y%m', '%Y']")


@dataclass
class Attribute:
    """One tag at one level of the tree: its column name, kind of value, and (sequences) its items' attributes."""

    tag: str
    name: str
    kind: str  # one of TYPES, or "sequence"
    multiple: bool
    items: list[Attribute] = field(default_factory=list)


@lru_cache(maxsize=None)
def dictionary_entry(tag: str) -> tuple[str, str, str] | None:
    """(keyword, VR, VM) of a public tag in pydicom's dictionary, else None (private or unknown)."""
    from pydicom import datadict

    number = int(tag, 16)
    if (number >> 16) % 2 == 1:
        return None
    keyword = datadict.keyword_for_tag(number)
    if not keyword:
        return None
    return keyword, datadict.dictionary_VR(number), datadict.dictionary_VM(number)


def _kind_of_vr(vr: str) -> str:
    if vr == "SQ":
        return "sequence"
    if vr in _INTEGER_VRS:
        return "int"
    if vr == "UV":
        return "uint"
    if vr in _FLOAT_VRS:
        return "float"
    if vr in _BINARY_VRS:
        return "binary"
    return {"DA": "date", "TM": "time", "DT": "datetime", "PN": "name"}.get(vr, "text")


def attributes(structure: dict) -> list[Attribute]:
    """The attribute tree of a dataset level, from DuckDB's ``json_group_structure`` of DICOM JSON."""
    out: list[Attribute] = []
    used: set[str] = set()
    for tag in sorted(structure):
        if not _TAG.match(tag):
            continue
        node = structure[tag] if isinstance(structure[tag], dict) else {}
        value = node.get("Value")
        element = value[0] if isinstance(value, list) and value else None
        entry = dictionary_entry(tag.upper())
        if entry is not None:
            keyword, vr, vm = entry
            kind, multiple = _kind_of_vr(vr), vm != "1"
        else:  # private or unknown: text values, or a sequence when the items are datasets
            keyword, multiple = "x" + tag.upper(), True
            is_items = isinstance(element, dict) and any(_TAG.match(k) for k in element)
            is_name = isinstance(element, dict) and not is_items
            kind = "sequence" if is_items else ("name" if is_name else "text")
            if element is None and "InlineBinary" in node:
                kind, multiple = "binary", False
        name = keyword if keyword.lower() not in used else "x" + tag.upper()
        used.add(name.lower())
        if kind == "sequence":
            items = attributes(element) if isinstance(element, dict) else []
            if not items:  # a sequence whose items are empty everywhere: nothing to hold
                continue
            out.append(Attribute(tag.upper(), name, kind, True, items))
        else:
            out.append(Attribute(tag.upper(), name, kind, multiple))
    return out


# -- SQL generation ---------------------------------------------------------------------
def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def json_structure(attrs: Iterable[Attribute]) -> dict:
    """The ``from_json`` structure that parses a dataset level into DuckDB types."""
    out: dict = {}
    for a in attrs:
        if a.kind == "sequence":
            out[a.tag] = {"Value": [json_structure(a.items)]}
        elif a.kind == "binary":
            out[a.tag] = {"InlineBinary": "VARCHAR"}
        elif a.kind == "name":
            out[a.tag] = {"Value": [{"Alphabetic": "VARCHAR"}]}
        elif a.kind in ("int", "uint", "float"):
            out[a.tag] = {"Value": [TYPES[a.kind]]}
        else:
            out[a.tag] = {"Value": ["VARCHAR"]}
    return out


def _convert(kind: str, v: str) -> str:
    """SQL turning one parsed value ``v`` into the column's type."""
    if kind == "date":
        return f"try_strptime(replace({v}, '.', ''), '%Y%m%d')::DATE"
    if kind == "time":
        return f"try_strptime(trim({v}), {_TIME_FORMATS})::TIME"
    if kind == "datetime":
        return f"try_strptime(regexp_replace(trim({v}), '[+-][0-9]{{4}}$', ''), {_DATETIME_FORMATS})"
    if kind == "name":
        return f"{v}.Alphabetic"
    return v


def _expr(a: Attribute, parent: str, depth: int, parsed: bool = True) -> str:
    """SQL for attribute ``a`` of ``parent``: a parsed struct, or (``parsed=False``) the attribute's own JSON text."""
    if parsed:
        node = f"{parent}.{_q(a.tag)}"
    else:  # parse just this attribute: planning one narrow struct per column is fast, one wide struct is not
        node = f"from_json({parent}, {_literal(json.dumps(json_structure([a])[a.tag], separators=(',', ':')))})"
    if a.kind == "binary":
        return f"try(from_base64({node}.InlineBinary))"
    if a.kind == "sequence":
        item = f"i{depth}"
        fields = ", ".join(f"{_q(c.name)} := {_expr(c, item, depth + 1)}" for c in a.items)
        return f"coalesce(list_transform({node}.Value, {item} -> struct_pack({fields})), [])"
    simple = a.kind in ("int", "uint", "float", "text")
    if a.multiple:
        if simple:
            return f"coalesce({node}.Value, [])"
        return f"coalesce(list_transform({node}.Value, v{depth} -> {_convert(a.kind, f'v{depth}')}), [])"
    return _convert(a.kind, f"{node}.Value[1]")


def select_sql(attrs: list[Attribute], source: str, json_column: str = "json", extra: Iterable[str] = ()) -> str:
    """``SELECT <one typed column per attribute>, <extra> FROM source`` over the DICOM JSON text column.

    One ``json_extract`` parses each instance once and cuts it into its top-level attributes' JSON;
    each column then parses only its own attribute (DuckDB plans a struct of hundreds of fields slowly,
    once per field read from it).
    """
    paths = "[" + ", ".join(_literal(f'$."{a.tag}"') for a in attrs) + "]"
    columns = [f"{_expr(a, f'e[{i}]', 1, parsed=False)} AS {_q(a.name)}" for i, a in enumerate(attrs, 1)]
    return (f"SELECT {', '.join(columns + list(extra))} FROM "
            f"(SELECT *, json_extract({_q(json_column)}, {paths}) AS e FROM {source})")


#: What a DICOM JSON text keeps once values are cut out of it: its tags and how items nest. Instances
#: with the same skeleton have the same tag tree, so one of them stands for all of them in discovery.
#: (A value the pattern misses only makes more skeletons, never merges two different trees.)
_VALUES = r'"(?:Value|BulkDataURI|InlineBinary|Alphabetic|Ideographic|Phonetic)"\s*:\s*(?:\[[^\[\]{}]*\]|"[^"]*")'


def representatives_sql(source: str, json_column: str = "json") -> str:
    """One instance JSON per distinct skeleton (see ``_VALUES``) of ``source``."""
    col = _q(json_column)
    return (f"SELECT any_value({col}) FROM (SELECT {col}, md5(regexp_replace({col}, {_literal(_VALUES)}, '', 'g')) "
            f"AS skeleton FROM {source} WHERE {col} IS NOT NULL) GROUP BY skeleton")


def merge_structure(tree: dict, dataset: dict) -> dict:
    """Add one DICOM JSON dataset's tag tree to ``tree`` (the shape :func:`attributes` reads)."""
    for tag, element in dataset.items():
        node = tree.setdefault(tag, {})
        if not isinstance(element, dict):
            continue
        if "InlineBinary" in element:
            node["InlineBinary"] = "VARCHAR"
        values = element.get("Value")
        if not isinstance(values, list):
            continue
        items = [v for v in values if isinstance(v, dict)]
        if items:
            merged = node.setdefault("Value", [{}])[0]
            if not isinstance(merged, dict):
                continue
            for item in items:
                if any(_TAG.match(k) for k in item):
                    merge_structure(merged, item)
                else:  # a person name
                    merged.update({k: "VARCHAR" for k in item})
        elif values:
            node.setdefault("Value", ["VARCHAR"])
    return tree


def discover(con, source: str, json_column: str = "json") -> list[Attribute]:
    """The attribute tree of every instance in ``source`` (a table, view or ``read_parquet(...)``).

    DuckDB picks one instance per distinct skeleton; Python merges their tag trees.
    """
    tree: dict = {}
    for (text,) in con.execute(representatives_sql(source, json_column)).fetchall():
        try:
            dataset = json.loads(text)
        except ValueError:
            continue
        if isinstance(dataset, dict):
            merge_structure(tree, dataset)
    return attributes(tree)
