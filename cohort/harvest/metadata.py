"""DICOM JSON (PS3.18 Annex F) of one instance → one typed row, tolerantly.

Real servers and files bend the standard: IS/DS/US values sent as JSON
strings, attributes without ``Value`` or without ``vr``, BulkDataURIs nested
in an object, partial tag sets (UIDs only in the URL). None of these stops a
harvest: each typed column is read as well as it can be, every departure is
written to the row's ``issues`` list (``"00280010 Rows: US value as string"``),
and the whole instance is kept as JSON text so that nothing is lost.
BulkDataURIs are kept as URIs and never followed.

No value can poison a run: a value that does not fit its typed column
(an integer beyond the column's range, a non-integral number where an integer
is expected, a string where a number is, a number too large for a float)
makes that column null, is noted in ``issues`` and counted in the row's
``values_dropped`` (the harvest log sums it per series); the instance's JSON
is kept whole. Nesting deeper than :data:`MAX_DEPTH` sequences is not walked.

A body that is not a JSON array of objects (read by :mod:`.stream`; nested
deeper than Python's JSON decoder goes included), or an instance without a
SOPInstanceUID, makes the whole series :class:`MalformedMetadata`: rows of a
series are all counted or none are.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from decimal import Decimal
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pyarrow as pa

#: Sequences deeper than this are kept in the JSON but not scanned for issues.
MAX_DEPTH = 64
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_CONVERSION_ERRORS = (TypeError, ValueError, ArithmeticError)

_NUMERIC_VRS = frozenset({"US", "UL", "SS", "SL", "UV", "SV", "FL", "FD", "IS", "DS"})
_BULK_KEY_ORDER = ("BulkDataURI", "InlineBinary")
_BULK_KEYS = frozenset(_BULK_KEY_ORDER)


class MalformedMetadata(ValueError):
    """A metadata body that cannot be read as DICOM JSON instances (the series is logged as malformed)."""


@dataclass(frozen=True)
class Column:
    """A typed column read from the instance's top-level attribute ``tag``."""

    keyword: str
    tag: str
    type: pa.DataType
    #: "one": the first value; "all": the list of values.
    take: str = "one"

    @cached_property
    def kind(self) -> str:
        """The Arrow type of one value ("string", "int32", "int64", "double"): what it is converted to."""
        return str(self.type if self.take == _ONE else self.type.value_type)


_ONE = "one"
_ALL = "all"

#: Columns read directly from a top-level attribute, named by DICOM keyword.
COLUMNS: tuple[Column, ...] = (
    Column("StudyInstanceUID", "0020000D", pa.string()),
    Column("SeriesInstanceUID", "0020000E", pa.string()),
    Column("SOPInstanceUID", "00080018", pa.string()),
    Column("SOPClassUID", "00080016", pa.string()),
    Column("Modality", "00080060", pa.string()),
    Column("TransferSyntaxUID", "00020010", pa.string()),
    Column("ImageType", "00080008", pa.list_(pa.string()), _ALL),
    Column("InstanceNumber", "00200013", pa.int64()),
    Column("SeriesNumber", "00200011", pa.int64()),
    Column("SeriesDescription", "0008103E", pa.string()),
    Column("PatientID", "00100020", pa.string()),
    Column("Manufacturer", "00080070", pa.string()),
    Column("ManufacturerModelName", "00081090", pa.string()),
    Column("Rows", "00280010", pa.int32()),
    Column("Columns", "00280011", pa.int32()),
    Column("NumberOfFrames", "00280008", pa.int64()),
    Column("SamplesPerPixel", "00280002", pa.int32()),
    Column("PhotometricInterpretation", "00280004", pa.string()),
    Column("BitsAllocated", "00280100", pa.int32()),
    Column("TotalPixelMatrixColumns", "00480006", pa.int64()),
    Column("TotalPixelMatrixRows", "00480007", pa.int64()),
    Column("ImagedVolumeWidth", "00480001", pa.float64()),
    Column("ImagedVolumeHeight", "00480002", pa.float64()),
    Column("DimensionOrganizationType", "00209311", pa.string()),
    Column("NumberOfOpticalPaths", "00480302", pa.int64()),  # UL: up to 2**32 - 1
    Column("ContainerIdentifier", "00400512", pa.string()),
    Column("ConcatenationUID", "00209161", pa.string()),
    Column("InConcatenationNumber", "00209162", pa.int32()),
)

_PIXEL_SPACING = "00280030"
_SHARED_FG, _PIXEL_MEASURES = "52009229", "00289110"
_OPTICAL_PATH, _OPTICAL_PATH_ID, _OBJECTIVE_POWER, _ILLUMINATION_TYPE = "00480105", "00480106", "00480112", "00220016"
_SPECIMEN_DESCRIPTION, _SPECIMEN_ID, _ANATOMIC_STRUCTURE = "00400560", "00400551", "00082228"

#: Columns derived from sequences (the rules of idc-index-data's sm_index.sql), then bookkeeping.
DERIVED_FIELDS: tuple[pa.Field, ...] = (
    pa.field("PixelSpacing", pa.list_(pa.float64())),
    pa.field("OpticalPathIdentifier", pa.list_(pa.string())),
    pa.field("ObjectiveLensPower", pa.float64()),
    pa.field("IlluminationType", pa.string()),
    pa.field("SpecimenIdentifier", pa.list_(pa.string())),
    pa.field("PrimaryAnatomicStructure", pa.string()),
    pa.field("issues", pa.list_(pa.string())),
    pa.field("json", pa.large_string()),
)

#: Every top-level attribute the typed columns read: what a light (QIDO) harvest asks for.
LIGHT_TAGS: tuple[str, ...] = tuple(c.tag for c in COLUMNS) + (
    _PIXEL_SPACING, _SHARED_FG, _OPTICAL_PATH, _SPECIMEN_DESCRIPTION)

#: The schema of one parsed instance (the store adds endpoint and run columns).
ROW_SCHEMA = pa.schema([pa.field(c.keyword, c.type) for c in COLUMNS] + list(DERIVED_FIELDS))


def instance_row(instance: dict[str, Any], study_uid: str | None = None,
                 series_uid: str | None = None, text: str | None = None) -> dict[str, Any]:
    """One instance's typed row. ``study_uid``/``series_uid`` (from the request) fill in missing UIDs;
    ``text`` is the instance's JSON as received (default: ``instance`` serialised).

    Raises :class:`MalformedMetadata` when the instance has no SOPInstanceUID.
    """
    issues: list[str] = []
    dropped = [0]  # values present but not fitting their column
    row: dict[str, Any] = {}
    for col in COLUMNS:
        values = _values(instance, col.tag, col.keyword, issues)
        row[col.keyword] = _convert(values, col, issues, dropped)
    for keyword, given in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid)):
        if given is None:
            continue
        if row[keyword] is None:
            row[keyword] = given
            issues.append(f"{keyword} missing: taken from the request URL")
        elif row[keyword] != given:
            issues.append(f"{keyword} {row[keyword]} differs from the requested {given}")
    if not row["SOPInstanceUID"]:
        raise MalformedMetadata("an instance has no SOPInstanceUID (00080018)")
    row["PixelSpacing"] = _pixel_spacing(instance, issues, dropped)
    optical = _items(instance, _OPTICAL_PATH)
    row["OpticalPathIdentifier"] = [v for item in optical for v in _strings(item, _OPTICAL_PATH_ID)] or None
    row["ObjectiveLensPower"] = _first_float(optical[0], _OBJECTIVE_POWER, issues, dropped) if optical else None
    row["IlluminationType"] = _code(_items(optical[0], _ILLUMINATION_TYPE)) if optical else None
    specimens = _items(instance, _SPECIMEN_DESCRIPTION)
    row["SpecimenIdentifier"] = [v for item in specimens for v in _strings(item, _SPECIMEN_ID)] or None
    row["PrimaryAnatomicStructure"] = _code(_items(specimens[0], _ANATOMIC_STRUCTURE)) if specimens else None
    _scan(instance, issues)
    row["issues"] = issues
    row["json"] = text if text is not None else _dumps(instance)
    #: Not a column of the instance table: the harvest log sums it per series.
    row["values_dropped"] = dropped[0]
    return row


def _dumps(instance: dict[str, Any]) -> str:
    """The instance as compact JSON; non-ASCII as is, unless a value is no UTF-8 string (a lone surrogate,
    from a JSON escape such as ``"\\ud800"``): then escaped, as it came, so that the text can be stored."""
    try:
        text = json.dumps(instance, separators=(",", ":"), ensure_ascii=False)
        try:
            _utf8(text)
        except ValueError:
            text = json.dumps(instance, separators=(",", ":"))
        return text
    except RecursionError:
        raise MalformedMetadata("an instance is nested too deeply to write as JSON") from None


# -- reading attributes -------------------------------------------------------
def _values(dataset: dict, tag: str, keyword: str, issues: list[str] | None) -> list | None:
    element = dataset.get(tag)
    if element is None:
        return None
    if not isinstance(element, dict):
        if issues is not None:
            issues.append(f"{tag} {keyword}: element is a JSON {type(element).__name__}, not an object")
        return None
    values = element.get("Value")
    if values is None:
        if issues is not None and not any(key in element for key in _BULK_KEYS):
            issues.append(f"{tag} {keyword}: present without Value")
        return None
    if not isinstance(values, list):
        if issues is not None:
            issues.append(f"{tag} {keyword}: Value is not an array")
        values = [values]
    return values


def _convert(values: list | None, col: Column, issues: list[str], dropped: list[int]) -> Any:
    if not values:
        return [] if col.take == _ALL and values == [] else None
    kind = col.kind
    convert, bounds = _CONVERTERS[kind], _INT_RANGES.get(kind)
    out = []
    for value in values if col.take == _ALL else values[:1]:
        if value is None:  # an empty value of a multi-valued attribute
            out.append(None)
            continue
        try:
            converted = convert(value)
            if bounds is not None and not bounds[0] <= converted <= bounds[1]:
                raise OverflowError(converted)
            out.append(converted)
        except _CONVERSION_ERRORS:
            issues.append(f"{col.tag} {col.keyword}: cannot read {_short(value)} as {kind}: value dropped")
            dropped[0] += 1
            out.append(None)
    return out if col.take == _ALL else out[0]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else f"<{value.bit_length()}-bit int>"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} chars)"


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, str):  # IS/DS text: exact decimal, so "1.0000000000000000001" is not 1
        text = value.strip()
        if not text.isascii() or "_" in text:
            raise ValueError(value)
        number = Decimal(text)  # InvalidOperation is an ArithmeticError
        if not number.is_finite() or number.adjusted() > 40 or number != number.to_integral_value():
            raise ValueError(value)
        return int(number)
    if isinstance(value, float):
        return _integral(value)
    if isinstance(value, int):
        return value
    raise TypeError(value)


def _integral(value: float) -> int:
    if not value.is_integer():  # nan and inf included  # never truncated: 2.5 rows is not 2 rows
        raise ValueError(value)
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(value)
    if isinstance(value, str):  # DS text: digits only ("nan", "inf", "1e400" are not DICOM numbers)
        number = float(value) if value.isascii() and "_" not in value else math.nan
        if not math.isfinite(number):
            raise ValueError(value)
        return number
    return float(value)


def _to_str(value: Any) -> str:
    if isinstance(value, dict):  # PN
        alphabetic = value.get("Alphabetic")
        return _utf8(alphabetic) if isinstance(alphabetic, str) and alphabetic else json.dumps(value)
    if isinstance(value, (list, bool)) or value is None:
        raise TypeError(value)
    return _utf8(str(value))


def _utf8(text: str) -> str:
    """``text`` if it can be stored (UTF-8); a JSON escape of a lone surrogate (``"\\ud800"``) cannot be: ValueError."""
    text.encode("utf-8")  # UnicodeEncodeError, a ValueError: the value is dropped like any other that does not fit
    return text


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "string": _to_str, "int32": _to_int, "int64": _to_int, "double": _to_float,
}


def _items(dataset: dict, tag: str) -> list[dict]:
    values = _values(dataset, tag, "", None) or []
    return [item for item in values if isinstance(item, dict)]


def _strings(dataset: dict, tag: str) -> list[str]:
    return [str(v) for v in _values(dataset, tag, "", None) or []
            if isinstance(v, (int, float)) or isinstance(v, str) and _storable(v)]


def _storable(text: str) -> bool:
    try:
        _utf8(text)
    except ValueError:
        return False
    return True


def _first_float(dataset: dict, tag: str, issues: list[str], dropped: list[int]) -> float | None:
    for value in _values(dataset, tag, "", None) or []:
        if value is None:
            return None
        try:
            return _to_float(value)
        except _CONVERSION_ERRORS:
            issues.append(f"{tag}: cannot read {_short(value)} as a number: value dropped")
            dropped[0] += 1
            return None
    return None


def _code(items: list[dict]) -> str | None:
    """``"CodingSchemeDesignator:CodeValue"`` of the first code item (as sm_index writes codes)."""
    if not items:
        return None
    designator, value = _strings(items[0], "00080102"), _strings(items[0], "00080100")
    return f"{designator[0]}:{value[0]}" if designator and value else None


def _pixel_spacing(instance: dict, issues: list[str], dropped: list[int]) -> list[float] | None:
    """(row spacing, column spacing) in mm, in the order DICOM gives them (PS3.3 10.7.1.3)."""
    values = _values(instance, _PIXEL_SPACING, "PixelSpacing", issues)
    if values is None:
        shared = _items(instance, _SHARED_FG)
        measures = _items(shared[0], _PIXEL_MEASURES) if shared else []
        values = _values(measures[0], _PIXEL_SPACING, "PixelSpacing", issues) if measures else None
    if not values:
        return None
    try:
        return [_to_float(v) for v in values]
    except _CONVERSION_ERRORS:
        issues.append(f"{_PIXEL_SPACING} PixelSpacing: cannot read {_short(values)} as numbers: value dropped")
        dropped[0] += 1
        return None


def _scan(instance: dict, issues: list[str]) -> None:
    """Note departures from DICOM JSON anywhere in the dataset (nested sequences included, iteratively).

    It visits every element of every instance: the checks are ordered so that a conforming element costs
    a few dictionary lookups (paths are built only for what is reported; an element holding only
    ``vr`` and ``Value`` has no bulk key to check).
    """
    stack: list[tuple[dict, str, int]] = [(instance, "", 0)]
    while stack:
        dataset, path, depth = stack.pop()
        nested = []
        for tag, element in dataset.items():
            if not isinstance(element, dict):
                continue  # already noted for typed columns; other odd elements are kept in the JSON
            vr = element.get("vr")
            values = element.get("Value")
            if not isinstance(vr, str) or values is None or len(element) > 2:
                if vr is None:
                    issues.append(f"{path}{tag}: no vr")
                elif not isinstance(vr, str):
                    issues.append(f"{path}{tag}: vr is a JSON {type(vr).__name__}, not a string")
                    vr = None
                if not _BULK_KEYS.isdisjoint(element):
                    for key in _BULK_KEY_ORDER:
                        if key in element and not isinstance(element[key], str):
                            issues.append(f"{path}{tag}: {key} is a JSON {type(element[key]).__name__} (nested), "
                                          "not a string")
            if not isinstance(values, list):
                continue
            if vr in _NUMERIC_VRS:
                for value in values:
                    if isinstance(value, str):
                        issues.append(f"{path}{tag}: {vr} value sent as string")
                        break
            elif vr == "SQ":
                where = f"{path}{tag}"
                items = [(item, f"{where}[{i}].") for i, item in enumerate(values) if isinstance(item, dict)]
                if items and depth >= MAX_DEPTH:
                    issues.append(f"{where}: sequences nested deeper than {MAX_DEPTH} levels are not scanned")
                    continue
                nested += [(item, p, depth + 1) for item, p in items]
        stack.extend(reversed(nested))
