"""Saved-query parameters: every type's conversion, list forms, descriptions and the search path (fast, no index)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from cohort import ParameterError
from cohort.queries import Parameter, SavedQuery, queries_dir, search_path

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("ptype", "value", "expected"), [
    ("VARCHAR", 12, "12"), ("INTEGER", "3", 3), ("INTEGER", 3.0, 3), ("BIGINT", "9000000000", 9000000000),
    ("DOUBLE", "1.5", 1.5), ("DOUBLE", 2, 2.0),
    ("BOOLEAN", True, True), ("BOOLEAN", False, False),
    ("BOOLEAN", " YES ", True), ("BOOLEAN", "on", True), ("BOOLEAN", "1", True), ("BOOLEAN", "true", True),
    ("BOOLEAN", "Off", False), ("BOOLEAN", "no", False), ("BOOLEAN", "0", False), ("BOOLEAN", "FALSE", False),
    ("DATE", "2024-05-01", dt.date(2024, 5, 1)), ("DATE", dt.date(2020, 1, 2), dt.date(2020, 1, 2)),
    ("VARCHAR[]", "a, b,,c ,", ["a", "b", "c"]), ("VARCHAR[]", '["x, y", "z"]', ["x, y", "z"]),
    ("VARCHAR[]", "[not json", ["[not json"]), ("INTEGER[]", ("1", 2), [1, 2]), ("INTEGER[]", "[3, 4]", [3, 4]),
    ("VARCHAR[]", ["only"], ["only"]), ("DOUBLE[]", {2.5}, [2.5]),
])
def test_convert(ptype, value, expected):
    got = Parameter("p", ptype).convert(value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("ptype", "value"), [
    ("INTEGER", 2.5), ("INTEGER", True), ("INTEGER", "x"), ("BIGINT", False), ("DOUBLE", "one"),
    ("BOOLEAN", "maybe"), ("BOOLEAN", 2), ("DATE", "2024-13-01"), ("INTEGER[]", "1, b"),
])
def test_convert_refuses_with_name_type_and_value(ptype, value):
    with pytest.raises(ParameterError) as err:
        Parameter("power", ptype).convert(value, "my.sql")
    shown = "'b'" if ptype == "INTEGER[]" else repr(value)
    assert str(err.value).startswith(f"parameter 'power' expects {ptype}, got {shown}")
    assert "my.sql" in str(err.value)


def test_none_stays_none():
    assert Parameter("p", "INTEGER").convert(None) is None
    assert Parameter("p", "VARCHAR[]").convert(None) is None


def test_describe():
    assert Parameter("organ", "VARCHAR", "Pancreas", False, "an organ").describe() == (
        "organ (VARCHAR, default 'Pancreas'): an organ")
    assert Parameter("power", "INTEGER", None, False).describe() == "power (INTEGER, default NULL)"
    assert Parameter("ids", "VARCHAR[]").describe() == "ids (VARCHAR[], required)"


def test_defaults_parsed_from_the_header():
    q = SavedQuery.parse(
        "-- param a VARCHAR = 'it''s'\n-- param b INTEGER = 7: seven\n-- param c VARCHAR[] = ['x', 'y']\n"
        "-- param d DOUBLE = NULL\n-- param e BOOLEAN = true\nSELECT $a, $b, $c, $d, $e")
    assert q.bind({}) == {"a": "it's", "b": 7, "c": ["x", "y"], "d": None, "e": True}
    assert [(p.name, p.required, p.description) for p in q.parameters] == [
        ("a", False, ""), ("b", False, "seven"), ("c", False, ""), ("d", False, ""), ("e", False, "")]


def test_queries_dir_is_the_shipped_folder():
    assert queries_dir() == REPO / "queries"
    assert sorted(p.name for p in queries_dir().glob("*.sql")) == sorted(p.name for p in (REPO / "queries").glob("*.sql"))


def test_search_path_order_and_empty_entries(monkeypatch, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("COHORT_QUERY_PATH", os.pathsep.join([str(a), "", str(b)]))
    assert search_path() == [a, b, queries_dir()]
    monkeypatch.delenv("COHORT_QUERY_PATH")
    assert search_path() == [queries_dir()]
