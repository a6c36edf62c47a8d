"""No value may poison a run (issue 9 item 2): property-based tests with adversarial DICOM JSON.

hypothesis generates instances whose typed attributes hold integers beyond int32/int64, floats
(non-integral, nan, inf) in integer columns, strings where numbers are expected, booleans, lists,
objects, huge strings and deeply nested sequences. Each typed value must equal an expectation
computed here independently (``fractions.Fraction`` for numeric text, Python's own ranges) or be
null, and every present value that became null is counted in ``values_dropped``; the instance's JSON
is kept whole; the Arrow conversion and the Parquet write of the harvest never raise. One property
runs end to end: a local server answers the generated bodies and ``harvest()`` writes them.
"""

from __future__ import annotations

import json
import math
import re
import threading
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohort.harvest import INSTANCE_SCHEMA, HarvestStore, harvest, instance_row
from cohort.harvest.metadata import COLUMNS, MalformedMetadata
from cohort.retry import RetryPolicy

INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_NUMERIC_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
HUGE = "x" * 2_000_000

adversarial = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([3_000_000_000, 2**31, -(2**31) - 1, 2**32 - 1, 2**63, -(2**63) - 1, 2**64, 10**40]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["12", " 7 ", "+3", "-0", "2.0", "2.5", "1e3", "1e400", "-1e-400", "nan", "inf", "abc", "",
                     "1.0000000000000000001", "0x10", "\u0661\u0662", "1_000", "3000000000", "9" * 30, HUGE]),
    st.text(max_size=12),
    st.booleans(),
    st.none(),
    st.lists(st.integers(-5, 5), max_size=2),
    st.dictionaries(st.sampled_from(["Alphabetic", "x"]), st.one_of(st.text(max_size=5), st.integers(-5, 5)), max_size=2),
)


def _expected(value, kind):
    """The typed value of a DICOM JSON value, computed without the harvester's code (None: does not fit)."""
    if value is None or isinstance(value, bool) or isinstance(value, (list, dict)) and kind != "string":
        return None
    if kind == "string":
        if isinstance(value, dict):
            alpha = value.get("Alphabetic")
            return alpha if isinstance(alpha, str) and alpha else json.dumps(value)
        if isinstance(value, list):
            return None
        try:
            return str(value)
        except ValueError:  # Python refuses str() of an int of more than 4300 digits
            return None
    if isinstance(value, str):
        if not _NUMERIC_TEXT.fullmatch(value) or not value.isascii():
            return None
        number = Fraction(value.strip())
        if kind == "double":
            return float(value) if math.isfinite(float(value)) else None
        if number.denominator != 1:
            return None
        value = number.numerator
    elif kind == "double":
        try:
            return float(value)
        except OverflowError:
            return None
    elif isinstance(value, float):
        if not math.isfinite(value) or value != math.floor(value):
            return None
        value = int(value)
    low, high = INT_RANGE[kind]
    return value if low <= value <= high else None


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)


VRS = {"string": "LO", "int32": "US", "int64": "UL", "double": "FD"}


@st.composite
def instances(draw):
    """A DICOM JSON instance: a SOPInstanceUID, adversarial values in a random subset of the typed columns,
    PixelSpacing and an optical path with adversarial numbers, and sequences nested 0-300 deep."""
    instance = {"00080018": {"vr": "UI", "Value": [draw(st.text("0123456789.", min_size=1, max_size=20))]}}
    values = {}
    for col in draw(st.lists(st.sampled_from(COLUMNS[2:]), unique_by=lambda c: c.keyword, max_size=8)):
        if col.keyword == "SOPInstanceUID":
            continue
        value = draw(st.lists(adversarial, min_size=1, max_size=3))
        kind = str(col.type if col.take == "one" else col.type.value_type)
        instance[col.tag] = {"vr": draw(st.sampled_from([VRS[kind], "IS", "DS", "SL", "UN"])), "Value": value}
        values[col.keyword] = (value, kind, col.take)
    spacing = draw(st.one_of(st.none(), st.lists(adversarial, min_size=2, max_size=2)))
    if spacing is not None:
        instance["00280030"] = {"vr": "DS", "Value": spacing}
    power = draw(st.one_of(st.none(), adversarial))
    if power is not None:
        instance["00480105"] = {"vr": "SQ", "Value": [{"00480112": {"vr": "DS", "Value": [power]}}]}
    depth = draw(st.sampled_from([0, 1, 5, 63, 64, 65, 300]))
    item: dict = {"00080100": {"vr": "SH", "Value": ["leaf"]}}
    for _ in range(depth):
        item = {"00400560": {"vr": "SQ", "Value": [item]}}
    instance["00081115"] = {"vr": "SQ", "Value": [item]}
    instance["7FE00010"] = {"vr": "OB", "BulkDataURI": "http://127.0.0.1/bulk/1"}
    return instance, values, spacing, power


def _check_row(row, instance, text, values, spacing, power) -> None:
    expected_drops = 0
    for keyword, (value, kind, take) in values.items():
        wanted = [_expected(v, kind) for v in value] if take == "all" else _expected(value[0], kind)
        got = row[keyword]
        if take == "all":
            assert len(got) == len(wanted) and all(g is None and w is None or _same(g, w) for g, w in zip(got, wanted)), \
                (keyword, value, got, wanted)
            expected_drops += sum(w is None and v is not None for v, w in zip(value, wanted))
        else:
            assert got is None and wanted is None or _same(got, wanted), (keyword, value[0], got, wanted)
            expected_drops += wanted is None and value[0] is not None
    if spacing is not None:
        wanted = [_expected(v, "double") for v in spacing]
        if all(w is not None for w in wanted):
            assert all(_same(g, w) for g, w in zip(row["PixelSpacing"], wanted))  # (row, column): DICOM's order
        else:
            assert row["PixelSpacing"] is None
            expected_drops += 1
    if power is not None:
        wanted = _expected(power, "double")
        assert row["ObjectiveLensPower"] is None and wanted is None or _same(row["ObjectiveLensPower"], wanted)
        expected_drops += wanted is None
    assert row["values_dropped"] == expected_drops, row["issues"]
    assert row["json"] == text and json.loads(row["json"])["7FE00010"]["BulkDataURI"] == "http://127.0.0.1/bulk/1"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(instances(), min_size=1, max_size=4))
def test_every_typed_value_is_expected_or_null_and_counted(generated):
    rows = []
    for instance, values, spacing, power in generated:
        text = json.dumps(instance)
        row = instance_row(json.loads(text), "1.2", "1.2.3", text)
        _check_row(row, instance, text, values, spacing, power)
        rows.append({**row, "endpoint": "e", "run_id": "r", "harvested_at": None})
    table = pa.Table.from_pylist(rows, schema=INSTANCE_SCHEMA)  # what the flush does: never raises
    assert table.num_rows == len(rows)


def test_pixel_spacing_keeps_dicoms_row_column_order():
    """PS3.3 10.7.1.3: PixelSpacing is (spacing between rows, spacing between columns); pydicom reads it so."""
    import pydicom

    ds = pydicom.Dataset()
    ds.SOPInstanceUID, ds.PixelSpacing = "1.2.3", [0.5, 0.25]
    row = instance_row(ds.to_json_dict())
    assert row["PixelSpacing"] == [float(v) for v in ds.PixelSpacing] == [0.5, 0.25]


def test_a_ul_of_three_billion_is_kept():
    row = instance_row({"00080018": {"vr": "UI", "Value": ["1.2"]}, "00480302": {"vr": "UL", "Value": [3_000_000_000]}})
    assert row["NumberOfOpticalPaths"] == 3_000_000_000 and row["values_dropped"] == 0


# -- any shape: DICOM JSON keys holding any JSON at any level ---------------------------------------------
_TAGS = [c.tag for c in COLUMNS] + ["00280030", "00480105", "00480112", "00081115", "00400560", "00080100",
                                    "52009229", "7FE00010"]
_KEYS = ["vr", "Value", "BulkDataURI", "InlineBinary", "Alphabetic", "Ideographic", "Phonetic"]
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6),
                  st.sampled_from(["1.2.3", "UI", "PN", "SQ", "DS", "IS", "OB", *_KEYS]))
_ANY = st.recursive(_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(st.sampled_from(_KEYS + _TAGS), st.text(max_size=4)), inner, max_size=4)),
    max_leaves=12)
_ELEMENT = st.one_of(_ANY, st.fixed_dictionaries(
    {"vr": st.one_of(st.sampled_from(["UI", "PN", "SQ", "DS", "IS", "LO", "US", "UL", "FD", "OB", "UN", "SL"]), _ANY)},
    optional={"Value": _ANY, "BulkDataURI": _ANY, "InlineBinary": _ANY}))
_DATASET = st.dictionaries(st.sampled_from(_TAGS), _ELEMENT, max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(dataset=_DATASET, sop=st.booleans(),
       sequences=st.lists(st.tuples(st.sampled_from(["00480105", "00081115", "52009229", "00400560"]),
                                    st.lists(_DATASET, max_size=2)), max_size=2))
def test_an_instance_of_any_shape_gives_a_writable_row(dataset, sop, sequences):
    """Whatever JSON an element, a vr, a Value or a sequence item holds, an instance with a SOPInstanceUID gives
    a row that Arrow takes, with its JSON kept as sent; without one, the only error is MalformedMetadata. (A vr
    that was a JSON list once raised TypeError here, and the runner logged the whole series malformed.)"""
    instance = dict(dataset)
    for tag, items in sequences:
        instance[tag] = {"vr": "SQ", "Value": items}
    if sop:
        instance["00080018"] = {"vr": "UI", "Value": ["1.2.3"]}
    text = json.dumps(instance)
    try:
        row = instance_row(json.loads(text), "1.2", "1.3", text)
    except MalformedMetadata:
        assert not sop
        return
    assert row["json"] == text and (row["SOPInstanceUID"] == "1.2.3" or not sop)
    row.pop("values_dropped")
    table = pa.Table.from_pylist([{**row, "endpoint": "e", "run_id": "r", "harvested_at": None}], schema=INSTANCE_SCHEMA)
    assert table.column("json").to_pylist() == [text]


# -- end to end: a server answers the generated bodies, harvest() writes them ----------------------------
class _Bodies:
    def __init__(self) -> None:
        self.body = b"[]"
        bodies = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                body = b"[]" if "/series/" not in self.path else bodies.body
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # a malformed body is dropped half-read
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"


@pytest.fixture(scope="module")
def bodies():
    server = _Bodies()
    yield server
    server.server.shutdown()
    server.server.server_close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(generated=st.lists(instances(), min_size=1, max_size=3), nested=st.sampled_from([0, 0, 100_000]))
def test_a_harvest_of_adversarial_bodies_writes_and_counts(bodies, tmp_path_factory, generated, nested):
    out = tmp_path_factory.mktemp("h")
    items = [inst for inst, *_ in generated]
    for i, item in enumerate(items):
        item["00080018"]["Value"] = [f"1.2.3.{i}"]  # distinct SOPs
    if nested:  # nested deeper than Python's JSON decoder goes: the series is malformed, the run goes on
        items[0]["00081115"]["Value"] = json.loads("[" * 100 + "]" * 100)
        text = json.dumps(items)
        bodies.body = (text[:-1] + ', {"x": ' + "[" * nested + "]" * nested + "}]").encode()
    else:
        bodies.body = json.dumps(items).encode()
    result = harvest([("1.2", "1.2.3")], out, bodies.url, rate=None, progress=False,
                     policy=RetryPolicy(max_attempts=1, timeout=30))
    log = HarvestStore(out).read_log().to_pylist()
    assert len(log) == 1
    if nested:
        assert result.by_status == {"malformed": 1} and "nested too deeply" in log[0]["error"]
        return
    assert result.by_status == {"ok": 1}
    rows = HarvestStore(out).read_instances(["SOPInstanceUID", "json"]).to_pylist()
    assert sorted(r["SOPInstanceUID"] for r in rows) == [f"1.2.3.{i}" for i in range(len(items))]
    assert [r["json"] for r in sorted(rows, key=lambda r: r["SOPInstanceUID"])] == [json.dumps(i) for i in items]
    expected = sum(instance_row(item)["values_dropped"] for item in items)
    assert log[0]["values_dropped"] == expected
