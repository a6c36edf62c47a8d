"""cohort/queries.py without the index: every message, branch and edge, so that a changed line fails a test.

Fast (no catalog): bench/mutation.py runs these against each mutant of cohort/queries.py. Expected
values are written out by hand (whole messages, parsed values), never rebuilt with the module's code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import os
from pathlib import Path

import pytest

import cohort.queries as queries_module
from cohort import ParameterError, QueryFileError
from cohort.queries import (
    CommandLineValue,
    Parameter,
    SavedQuery,
    bind_sql,
    list_queries,
    load_query,
    normalize_type,
    parse_assignments,
    query_name,
    queries_dir,
    scan_queries,
)

SHIPPED = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "queries").glob("*.sql"))
#: The installed index's release (the major of idc-index-data); the newest Google store assumed is one less.
RELEASE = int(importlib.metadata.version("idc-index-data").split(".")[0])


def _message(exc_info) -> str:
    return str(exc_info.value)


# -- types and command-line values --------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("varchar[]", "VARCHAR[]"), (" int ", "INTEGER"), ("int4", "INTEGER"), ("INT8", "BIGINT"), ("long", "BIGINT"),
    ("text", "VARCHAR"), ("string", "VARCHAR"), ("float8", "DOUBLE"), ("bool", "BOOLEAN"), ("bool[]", "BOOLEAN[]"),
    ("date", "DATE"), ("Double", "DOUBLE"), ("number", None), ("[]", None), ("int[][]", None), ("", None),
])
def test_normalize_type(text, expected):
    assert normalize_type(text) == expected


def test_command_line_value_prints_as_typed():
    assert str(CommandLineValue("m", ("CT", "MR"), "VARCHAR[]")) == "-p m:VARCHAR[]=CT -p m:VARCHAR[]=MR"
    assert str(CommandLineValue("n", ("3",))) == "-p n=3"


def test_parse_assignments_values_types_and_repeats():
    got = parse_assignments(["m:VARCHAR[]=CT,MR", " n =3", "k=a=b", "x: int =7", "r=1", "r=2", "t:text=a", "t:varchar=b"])
    assert got == {
        "m": CommandLineValue("m", ("CT,MR",), "VARCHAR[]"),
        "n": CommandLineValue("n", ("3",), None),
        "k": CommandLineValue("k", ("a=b",), None),
        "x": CommandLineValue("x", ("7",), "INTEGER"),
        "r": CommandLineValue("r", ("1", "2"), None),
        "t": CommandLineValue("t", ("a", "b"), "VARCHAR"),
    }
    assert list(got) == ["m", "n", "k", "x", "r", "t"]
    assert parse_assignments([]) == {}


@pytest.mark.parametrize("item", ["novalue", "1a=3", "=3", "a-b=3", "a b=1"])
def test_parse_assignments_refuses_a_bad_name(item):
    with pytest.raises(ParameterError) as err:
        parse_assignments([item])
    assert _message(err) == (f"-p {item!r} is not NAME=VALUE or NAME:TYPE=VALUE (e.g. -p modality=SM, "
                             "-p m:VARCHAR[]=CT,MR)")


def test_parse_assignments_refuses_an_unknown_type():
    with pytest.raises(ParameterError) as err:
        parse_assignments(["n: number =3"])
    assert _message(err) == ("-p 'n: number =3': type 'number' is not one of BIGINT, BOOLEAN, DATE, DOUBLE, "
                             "INTEGER, VARCHAR or a list of one (e.g. VARCHAR[])")


def test_parse_assignments_refuses_two_types_for_one_name():
    with pytest.raises(ParameterError) as err:
        parse_assignments(["m:VARCHAR[]=CT", "m=MR"])
    assert _message(err) == "-p m is given with two types (VARCHAR[] and untyped); give one"
    with pytest.raises(ParameterError) as err:
        parse_assignments(["m=CT", "m:int=3"])
    assert _message(err) == "-p m is given with two types (untyped and INTEGER); give one"


# -- Parameter.convert / _scalar ------------------------------------------------------------------
def test_is_list():
    assert Parameter("p", "VARCHAR[]").is_list and not Parameter("p", "VARCHAR").is_list


def test_command_line_value_of_another_type_is_refused_with_and_without_source():
    p = Parameter("since", "INTEGER")
    with pytest.raises(ParameterError) as err:
        p.convert(CommandLineValue("since", ("3",), "VARCHAR"), "q.sql")
    assert _message(err) == "-p since:VARCHAR=3 gives type VARCHAR, but since is INTEGER; drop the type (-p since=...) (in q.sql)"
    assert err.value.source == "q.sql"
    with pytest.raises(ParameterError) as err:
        p.convert(CommandLineValue("since", ("3",), "VARCHAR"))
    assert err.value.source is None and _message(err).endswith("(-p since=...)")


def test_command_line_value_of_the_same_type_and_untyped():
    assert Parameter("n", "INTEGER").convert(CommandLineValue("n", ("3",), "INTEGER")) == 3
    assert Parameter("n", "INTEGER").convert(CommandLineValue("n", ("4",))) == 4
    assert Parameter("m", "VARCHAR[]").convert(CommandLineValue("m", ("CT,MR", "SEG"))) == ["CT", "MR", "SEG"]
    assert Parameter("m", "INTEGER[]").convert(CommandLineValue("m", ("1, 2", "[3]"), "INTEGER[]")) == [1, 2, 3]
    assert Parameter("m", "VARCHAR[]").convert(CommandLineValue("m", ("one",))) == ["one"]


def test_repeated_command_line_value_for_a_scalar():
    with pytest.raises(ParameterError) as err:
        Parameter("n", "INTEGER").convert(CommandLineValue("n", ("1", "2")), "q.sql")
    assert _message(err) == (
        "parameter 'n' is given 2 times (-p n=1 -p n=2); it takes one INTEGER value, so give it once "
        "(to ask for several values, run the query once per value) (in q.sql)")
    with pytest.raises(ParameterError) as err:
        Parameter("n", "INTEGER").convert(CommandLineValue("n", ("1", "2", "3")))
    assert err.value.source is None and "given 3 times" in _message(err)


@pytest.mark.parametrize(("value", "shown"), [({"a": 1}, "dict {'a': 1}"), ([1], "list [1]"), ((1,), "tuple (1,)"),
                                              ({2}, "set {2}")])
def test_a_collection_for_a_scalar_is_refused(value, shown):
    with pytest.raises(ParameterError) as err:
        Parameter("n", "INTEGER").convert(value, "q.sql")
    assert _message(err) == f"parameter 'n' expects one INTEGER value, got {shown} (in q.sql)"
    with pytest.raises(ParameterError) as err:
        Parameter("n", "INTEGER").convert(value)
    assert err.value.source is None


@pytest.mark.parametrize(("ptype", "value", "expected"), [
    ("INTEGER[]", 5, [5]), ("VARCHAR[]", " [\"a\", \"b\"] ", ["a", "b"]), ("VARCHAR[]", "a,,b", ["a", "b"]),
    ("VARCHAR[]", "[bad", ["[bad"]), ("BOOLEAN", 1, True), ("BOOLEAN", 0, False), ("DOUBLE", True, 1.0),
    ("DATE", dt.datetime(2020, 1, 2, 3, 4), dt.datetime(2020, 1, 2, 3, 4)), ("VARCHAR", None, None),
    ("BIGINT", -7.0, -7), ("VARCHAR[]", (), []),
])
def test_more_conversions(ptype, value, expected):
    got = Parameter("p", ptype).convert(value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("ptype", "value"), [("INTEGER", "3.0"), ("BLOB", "x"), ("DATE", "2024/01/02"),
                                              ("BOOLEAN", "")])
def test_more_refusals(ptype, value):
    with pytest.raises(ParameterError) as err:
        Parameter("p", ptype).convert(value, "f.sql")
    assert _message(err) == f"parameter 'p' expects {ptype}, got {value!r} (in f.sql)"


def test_refusal_without_source_has_no_where():
    with pytest.raises(ParameterError) as err:
        Parameter("p", "INTEGER").convert("x")
    assert _message(err) == "parameter 'p' expects INTEGER, got 'x'" and err.value.source is None


# -- defaults and settings ------------------------------------------------------------------------
def test_a_setting_default_is_the_index_release_minus_one():
    p = Parameter("newest_store", "INTEGER", None, False, "newest store", setting="newest_google_store")
    assert p.default_value() == RELEASE - 1 and type(p.default_value()) is int
    assert Parameter("s", "VARCHAR", None, False, setting="newest_google_store").default_value() == str(RELEASE - 1)
    assert Parameter("n", "INTEGER", 5, False).default_value() == 5
    assert p.describe() == f"newest_store (INTEGER, default @newest_google_store, now {RELEASE - 1}): newest store"
    assert Parameter("r", "INTEGER", None, True, setting="newest_google_store").describe() == "r (INTEGER, required)"


def test_describe_shows_values_with_repr():
    assert Parameter("s", "VARCHAR", "a'b", False).describe() == "s (VARCHAR, default \"a'b\")"
    assert Parameter("l", "VARCHAR[]", ["x"], False, "d").describe() == "l (VARCHAR[], default ['x']): d"


# -- SavedQuery -----------------------------------------------------------------------------------
def test_source_and_sha256(tmp_path):
    text = "-- name: q\nSELECT 1 AS x\n"
    path = tmp_path / "file.sql"
    path.write_bytes(text.encode())
    q = SavedQuery.from_file(path)
    assert q.source == str(path) and q.path == path and q.sql == text
    assert q.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert SavedQuery.parse("SELECT 1").source == "<query sql>"
    assert SavedQuery.parse("-- name: mine\nSELECT 1").source == "<query mine>"


def test_bind_unknown_and_missing_parameters():
    q = SavedQuery.parse("-- name: q\n-- param a VARCHAR\n-- param b INTEGER = 3\nSELECT $a, $b")
    with pytest.raises(ParameterError) as err:
        q.bind({"z": 1, "y": 2})
    assert _message(err) == ("unknown parameter(s) y, z; q takes a (VARCHAR, required), b (INTEGER, default 3) "
                             "(in <query q>)")
    with pytest.raises(ParameterError) as err:
        SavedQuery.parse("-- name: none\nSELECT 1").bind({"x": 1})
    assert _message(err) == "unknown parameter(s) x; none takes no parameters (in <query none>)"
    with pytest.raises(ParameterError) as err:
        q.bind(None)
    assert _message(err) == "missing parameter 'a' (VARCHAR); pass it as -p a=VALUE or a=... in Python (in <query q>)"
    with pytest.raises(ParameterError) as err:
        q.bind({"a": "x", "b": "three"})
    assert _message(err) == "parameter 'b' expects INTEGER, got 'three' (in <query q>)"
    assert q.bind({"a": 1, "b": "4"}) == {"a": "1", "b": 4}
    assert SavedQuery.parse("SELECT 1").bind() == {}


def test_bind_fills_a_setting_default():
    q = SavedQuery.parse("-- param s INTEGER = @newest_google_store: newest\nSELECT $s")
    assert q.bind({}) == {"s": RELEASE - 1}
    (p,) = q.parameters
    assert (p.setting, p.default, p.required, p.description) == ("newest_google_store", None, False, "newest")


@pytest.mark.parametrize(("text", "name", "description"), [
    ("-- name: a.b-c_1\n-- description:  two words \nSELECT 1", "a.b-c_1", "two words"),
    ("-- NAME: upper\nSELECT 1", "upper", ""),
    ("--name plain\n--description d\nSELECT 1", "plain", "d"),
    ("\n\n  -- name: late_start\nSELECT 1", "late_start", ""),
    ("SELECT 1\n-- name: after_sql\n", "sql", ""),
    ("-- a comment\n-- name: _under\nSELECT 1", "_under", ""),
])
def test_header_names_and_descriptions(text, name, description):
    q = SavedQuery.parse(text)
    assert (q.name, q.description) == (name, description)


def test_name_from_the_argument_then_header_then_path_stem():
    assert SavedQuery.parse("-- name: x\nSELECT 1", name="y").name == "y"
    assert SavedQuery.parse("SELECT 1", path=Path("/somewhere/abc.sql")).name == "abc"
    assert SavedQuery.parse("-- name: hdr\nSELECT 1", path=Path("/somewhere/abc.sql")).name == "hdr"


@pytest.mark.parametrize("bad", ["2bad", "has space", "a/b", "-dash"])
def test_a_bad_name_header_is_refused(bad):
    with pytest.raises(QueryFileError) as err:
        SavedQuery.parse(f"-- description: d\n-- name: {bad}\nSELECT 1")
    assert _message(err) == (f"<sql>:2: query name {bad!r} is not a name (letters, digits, _ . -, starting with a "
                             "letter or _), e.g. `-- name: ct_chest`")


def test_a_parameter_declared_twice():
    with pytest.raises(QueryFileError) as err:
        SavedQuery.parse("-- name: q\n-- param a INTEGER\n\n-- param a VARCHAR\nSELECT $a", path=Path("/d/q.sql"))
    assert _message(err) == "/d/q.sql:4: parameter a is declared twice (first on line 2); keep one"


def test_undeclared_parameters_name_the_first_line():
    with pytest.raises(QueryFileError) as err:
        SavedQuery.parse("-- name: q\nSELECT $b,\n $a, '$c' -- $d\n")
    assert _message(err) == ("<sql>:3: the SQL uses $a, $b but the header declares no such parameter; add a line "
                             "like `-- param a VARCHAR` to the header")


def test_parameters_in_strings_and_comments_are_not_uses():
    q = SavedQuery.parse("-- param a INTEGER\nSELECT $a, '$zz' AS s, 'it''s $yy' AS t -- $ww\n")
    assert [p.name for p in q.parameters] == ["a"]
    with pytest.raises(QueryFileError, match="declared but not used"):
        SavedQuery.parse("-- param a INTEGER\nSELECT '$a' AS s -- $a\n")


def test_unused_parameters_are_listed_in_line_order():
    with pytest.raises(QueryFileError) as err:
        SavedQuery.parse("-- param b INTEGER\n-- param a INTEGER\n-- param c INTEGER\nSELECT $c")
    assert _message(err) == ("<sql>:1: parameter(s) b, a declared but not used in the SQL; use it as $b or delete "
                             "the line")


def test_sql_that_does_not_parse_names_duckdbs_line():
    with pytest.raises(QueryFileError) as err:
        SavedQuery.parse("-- name: q\nSELECT *\nFORM index\n", path=Path("/d/q.sql"))
    assert _message(err) == '/d/q.sql:3: the SQL does not parse: Parser Error: syntax error at or near "index"'


@pytest.mark.parametrize(("line", "message"), [
    ("-- param = 3", "cannot read parameter line '= 3'; the form is `-- param NAME TYPE [= DEFAULT][: description]`, "
                     "e.g. `-- param organ VARCHAR = 'Pancreas'`"),
    ("-- param p NUMBER", "parameter type NUMBER is not one of BIGINT, BOOLEAN, DATE, DOUBLE, INTEGER, VARCHAR "
                          "(or a list, e.g. VARCHAR[])"),
    ("-- param p NUMBER[]", "parameter type NUMBER[] is not one of BIGINT, BOOLEAN, DATE, DOUBLE, INTEGER, VARCHAR "
                            "(or a list, e.g. VARCHAR[])"),
    ("-- param p INTEGER = @nothing", "default @nothing names no setting; settings are @newest_google_store"),
    ("-- param p INTEGER = many", "default many of parameter p is not a INTEGER"),
    ("-- param p INTEGER[] = ['a']", "default ['a'] of parameter p is not a INTEGER[]"),
    ("-- param p DATE = '2024-02-30'", "default '2024-02-30' of parameter p is not a DATE"),
])
def test_parameter_line_errors(line, message):
    with pytest.raises(QueryFileError) as err:
        SavedQuery.parse(f"-- name: q\n{line}\nSELECT $p", path=Path("/d/q.sql"))
    assert _message(err) == f"/d/q.sql:2: {message}"


def test_parameter_lines_parsed():
    q = SavedQuery.parse(
        "-- param a integer\n-- param b varchar[] = [\"x, y\", 'z']: list doc \n-- param c VARCHAR = null\n"
        "-- param d VARCHAR = 'a:b'\n-- param e DOUBLE = 2:  two \n-- param f DATE = '2024-02-29'\n"
        "SELECT $a, $b, $c, $d, $e, $f")
    got = [(p.name, p.type, p.default, p.required, p.description, p.setting) for p in q.parameters]
    assert got == [
        ("a", "INTEGER", None, True, "", None),
        ("b", "VARCHAR[]", ["x, y", "z"], False, "list doc", None),
        ("c", "VARCHAR", None, False, "", None),
        ("d", "VARCHAR", "a:b", False, "", None),
        ("e", "DOUBLE", 2.0, False, "two", None),
        ("f", "DATE", dt.date(2024, 2, 29), False, "", None),
    ]


# -- reading files ---------------------------------------------------------------------------------
def test_a_file_that_is_not_utf8_names_line_and_byte(tmp_path):
    data = b"-- name: latin1\n-- description: caf\xe9\nSELECT 1 AS x\n"
    path = tmp_path / "latin1.sql"
    path.write_bytes(data)
    with pytest.raises(QueryFileError) as err:
        SavedQuery.from_file(path)
    at = data.index(b"\xe9")
    assert _message(err) == f"{path}:2: not UTF-8 text (invalid continuation byte at byte {at}); save the file as UTF-8"


def test_a_file_that_cannot_be_read(tmp_path):
    with pytest.raises(QueryFileError) as err:
        SavedQuery.from_file(tmp_path / "missing.sql")
    assert _message(err) == f"cannot read query file {tmp_path / 'missing.sql'}: No such file or directory"
    with pytest.raises(QueryFileError) as err:
        SavedQuery.from_file(str(tmp_path))
    assert _message(err) == f"cannot read query file {tmp_path}: Is a directory"


# -- ad-hoc SQL ------------------------------------------------------------------------------------
def test_bind_sql_types_from_the_value_or_a_cast():
    assert bind_sql("SELECT 1 WHERE x IN $m", {"m": CommandLineValue("m", ("CT,MR",), "VARCHAR[]")}) == {"m": ["CT", "MR"]}
    assert bind_sql("SELECT $n::INT + 1", {"n": CommandLineValue("n", ("3",))}) == {"n": 3}
    assert bind_sql("SELECT $m :: varchar [] AS m", {"m": CommandLineValue("m", ("a,b",))}) == {"m": ["a", "b"]}
    assert bind_sql("SELECT $m::VARCHAR[] AS m", {"m": CommandLineValue("m", ("CT", "MR"))}) == {"m": ["CT", "MR"]}
    assert bind_sql("SELECT $n::BLOB", {"n": CommandLineValue("n", ("3",))}) == {"n": "3"}
    assert bind_sql("SELECT $n + 1", {"n": CommandLineValue("n", ("3",))}) == {"n": "3"}
    assert bind_sql("SELECT $nn::INT, $n", {"n": CommandLineValue("n", ("3",))}) == {"n": "3"}
    assert bind_sql("SELECT '$n::INT', $n -- $n::INT", {"n": CommandLineValue("n", ("3",))}) == {"n": "3"}
    assert bind_sql("SELECT $n::INT", {"n": CommandLineValue("n", ("3",), "DOUBLE")}) == {"n": 3.0}
    assert bind_sql("SELECT 1", None) == {} and bind_sql("SELECT $a, $b", {"a": 1, "b": [2]}) == {"a": 1, "b": [2]}


def test_bind_sql_refuses_a_repeated_untyped_value():
    with pytest.raises(ParameterError) as err:
        bind_sql("SELECT $m", {"m": CommandLineValue("m", ("CT", "MR"))})
    assert _message(err) == ("parameter 'm' is given 2 times (-p m=CT -p m=MR); for a list give its type once: "
                             "-p m:VARCHAR[]=CT,MR")
    assert err.value.sql == "SELECT $m"


@pytest.mark.parametrize("sql", ["SELECT 1 WHERE x IN $m", "SELECT 1 WHERE x in   $m", "SELECT 1 WHERE x IN\n$m AND 1"])
def test_bind_sql_refuses_text_in_in(sql):
    for value in ("CT", CommandLineValue("m", ("CT",))):
        with pytest.raises(ParameterError) as err:
            bind_sql(sql, {"m": value})
        assert _message(err) == (
            "`IN $m` with the text 'CT' tests for a substring in DuckDB (so 'T' IN 'CT,MR' is true); pass a list: "
            "-p m:VARCHAR[]=CT (Python: a list), or write `= $m`")
        assert err.value.sql == sql


@pytest.mark.parametrize("sql", ["SELECT 1 WHERE x IN ($m)", "SELECT 1 WHERE x in ('a', $m, 'b')",
                                 "SELECT 1 WHERE x IN($m)"])
def test_bind_sql_refuses_text_with_a_comma_in_a_parenthesised_in(sql):
    with pytest.raises(ParameterError) as err:
        bind_sql(sql, {"m": "CT,MR"})
    assert _message(err) == (
        "`IN ($m)` compares with the one text 'CT,MR', commas included; for several values pass a list, "
        "-p m:VARCHAR[]=CT,MR, and write `IN $m` or list_contains($m, x)")
    assert err.value.sql == sql
    assert bind_sql(sql, {"m": "CT"}) == {"m": "CT"}  # no comma: one value is what was meant


@pytest.mark.parametrize("sql", ["SELECT 1 WHERE x IN $mod", "SELECT 1 -- x IN $m\n, $m", "SELECT 'x IN $m', $m",
                                 "SELECT 1 WHERE xIN $m", "SELECT 1 WHERE x IN (f(1), $m)", "SELECT 1 WHERE x IN ($mm)"])
def test_bind_sql_lets_other_uses_pass(sql):
    assert bind_sql(sql, {"m": "a,b"}) == {"m": "a,b"}


# -- the library of saved queries ---------------------------------------------------------------------
def test_queries_dir_prefers_the_folder_inside_the_package(tmp_path, monkeypatch):
    package = tmp_path / "site" / "cohort"
    (package / "queries").mkdir(parents=True)
    monkeypatch.setattr(queries_module, "__file__", str(package / "queries.py"))
    assert queries_dir() == package / "queries"
    (package / "queries").rmdir()
    assert queries_dir() == (tmp_path / "site" / "queries").resolve()


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_query_name_is_the_valid_header_name_else_the_stem(tmp_path):
    assert query_name(_write(tmp_path, "a.sql", "-- description: d\n\n-- name: real_name\nSELECT 1")) == "real_name"
    assert query_name(_write(tmp_path, "b.sql", "-- NAME: upper_key\nSELECT 1")) == "upper_key"
    assert query_name(_write(tmp_path, "c.sql", "-- name: not valid!\nSELECT 1")) == "c"
    assert query_name(_write(tmp_path, "d.sql", "SELECT 1\n-- name: too_late\n")) == "d"
    assert query_name(_write(tmp_path, "e.sql", "-- name:  spaced \nSELECT 1")) == "spaced"
    (tmp_path / "f.sql").write_bytes(b"-- description: caf\xe9\n-- name: from_latin1\nSELECT 1")
    assert query_name(tmp_path / "f.sql") == "from_latin1"
    (tmp_path / "dir.sql").mkdir()
    assert query_name(tmp_path / "dir.sql") == "dir"


def by_name_error(entries, name: str) -> str:
    return next(e.error for e in entries if e.name == name)


def test_search_path_files_first_of_a_name_wins(tmp_path, monkeypatch):
    mine, other = tmp_path / "mine", tmp_path / "other"
    _write(mine, "b.sql", "-- name: dup\n-- description: b in mine\nSELECT 1")
    _write(mine, "a.sql", "-- name: dup\n-- description: a in mine\nSELECT 1")
    _write(other, "dup.sql", "-- description: other\nSELECT 1")
    _write(other, "series_by_collection.sql", "-- description: shadowed\nSELECT 1")
    _write(mine, "series_by_collection.sql", "-- description: mine first\nSELECT 1")
    _write(mine, "zz.sql", "-- name: 0zz\n-- description: stem name\nSELECT 1")
    _write(mine, "broken.sql", "-- param x NUMBER\nSELECT $x")
    _write(mine, "notes.txt", "-- name: not_a_query\nSELECT 1")
    monkeypatch.setenv("COHORT_QUERY_PATH", os.pathsep.join([str(mine), str(other)]))
    entries = scan_queries()
    names = [e.name for e in entries]
    assert names == sorted(set(SHIPPED) | {"dup", "zz", "broken"})
    assert by_name_error(entries, "zz").startswith(f"{mine / 'zz.sql'}:1: query name '0zz' is not a name")
    by_name = {e.name: e for e in entries}
    assert by_name["dup"].path == mine / "a.sql" and by_name["dup"].query.description == "a in mine"
    assert by_name["series_by_collection"].query.description == "mine first"
    assert by_name["broken"].error == (f"{mine / 'broken.sql'}:1: parameter type NUMBER is not one of BIGINT, BOOLEAN, "
                                       "DATE, DOUBLE, INTEGER, VARCHAR (or a list, e.g. VARCHAR[])")
    assert not by_name["broken"].ok and by_name["broken"].query is None and by_name["broken"].path == mine / "broken.sql"
    assert by_name["dup"].ok and by_name["dup"].error is None
    assert [q.name for q in list_queries()] == [n for n in names if n not in ("broken", "zz")]
    assert load_query("dup").description == "a in mine"
    assert load_query("series_by_collection").description == "mine first"


def test_load_query_by_path_forms(tmp_path, monkeypatch):
    monkeypatch.delenv("COHORT_QUERY_PATH", raising=False)
    with pytest.raises(QueryFileError) as err:
        load_query("nowhere.sql")
    assert _message(err) == "query file nowhere.sql does not exist"
    with pytest.raises(QueryFileError) as err:
        load_query(f"nowhere{os.sep}q")
    assert _message(err) == f"query file nowhere{os.sep}q does not exist"
    plain = _write(tmp_path, "plainq", "-- description: no suffix\nSELECT 1")
    monkeypatch.chdir(tmp_path)
    assert load_query("plainq").description == "no suffix" and load_query("plainq").path == Path("plainq")
    assert load_query(plain).path == plain
    assert load_query("series_by_collection").path == queries_dir() / "series_by_collection.sql"


def test_unknown_name_names_the_renamed_file_close_names_and_all(tmp_path, monkeypatch):
    _write(tmp_path, "chest.sql", "-- name: ct_chest\nSELECT 1")
    monkeypatch.setenv("COHORT_QUERY_PATH", str(tmp_path))
    everything = ", ".join(sorted(SHIPPED + ["ct_chest"]))
    with pytest.raises(QueryFileError) as err:
        load_query("chest")
    assert _message(err) == (f"no saved query named 'chest' ({tmp_path / 'chest.sql'} is named 'ct_chest' by its "
                             f"-- name: header: run it by that name); did you mean ct_chest? Available: {everything} "
                             "(see `cohort queries`), or pass a path to a .sql file")
    with pytest.raises(QueryFileError) as err:
        load_query("qqqqqqqq")
    assert _message(err) == (f"no saved query named 'qqqqqqqq' Available: {everything} (see `cohort queries`), or pass "
                             "a path to a .sql file")
    with pytest.raises(QueryFileError) as err:
        load_query("series_by_colection")
    assert "; did you mean series_by_collection, " in _message(err) or "; did you mean series_by_collection?" in _message(err)


# -- what the first mutation run showed untested (bench/MUTATION.md) ----------------------------------
def test_sql_error_without_a_line_is_line_1():
    with pytest.raises(QueryFileError) as err:
        SavedQuery.parse("-- name: q\n\nSELECT (")
    assert _message(err) == "<sql>:1: the SQL does not parse: Parser Error: syntax error at end of input"


def test_a_type_with_trailing_letters_is_refused():
    with pytest.raises(QueryFileError) as err:
        SavedQuery.parse("-- param p VARCHARX\nSELECT $p")
    assert _message(err) == ("<sql>:1: parameter type VARCHARX is not one of BIGINT, BOOLEAN, DATE, DOUBLE, INTEGER, "
                             "VARCHAR (or a list, e.g. VARCHAR[])")


def test_settings_are_listed_with_commas(monkeypatch):
    monkeypatch.setitem(queries_module.SETTINGS, "other_setting", lambda: 1)
    with pytest.raises(QueryFileError) as err:
        SavedQuery.parse("-- param p INTEGER = @nothing\nSELECT $p")
    assert _message(err) == "<sql>:1: default @nothing names no setting; settings are @newest_google_store, @other_setting"


def test_a_setting_that_does_not_convert_names_the_setting(monkeypatch):
    monkeypatch.setitem(queries_module.SETTINGS, "bad_setting", lambda: "x")
    with pytest.raises(ParameterError) as err:
        Parameter("n", "INTEGER", None, False, setting="bad_setting").default_value()
    assert _message(err) == "parameter 'n' expects INTEGER, got 'x' (in setting @bad_setting)"


def test_a_bad_item_of_a_command_line_list_names_the_source():
    with pytest.raises(ParameterError) as err:
        Parameter("m", "INTEGER[]").convert(CommandLineValue("m", ("1,x",)), "q.sql")
    assert _message(err) == "parameter 'm' expects INTEGER[], got 'x' (in q.sql)"


def test_bind_sql_conversion_error_names_the_parameter():
    with pytest.raises(ParameterError) as err:
        bind_sql("SELECT $n", {"n": CommandLineValue("n", ("x",), "INTEGER")})
    assert _message(err) == "parameter 'n' expects INTEGER, got 'x'"


def test_a_string_literal_right_before_in_is_blanked_not_removed():
    with pytest.raises(ParameterError, match="tests for a substring"):
        bind_sql("SELECT 'T'IN $m", {"m": "CT,MR"})


def test_undeclared_parameter_lines_count_newlines_in_strings_and_a_leading_newline():
    with pytest.raises(QueryFileError) as err:
        SavedQuery.parse("-- name: q\nSELECT 'a\nb' AS s,\n $x")
    assert _message(err).startswith("<sql>:4: the SQL uses $x ")
    with pytest.raises(QueryFileError) as err:
        SavedQuery.parse("\nSELECT 1,\n $x,\n$x")
    assert _message(err).startswith("<sql>:3: the SQL uses $x ")


def test_names_with_capitals():
    assert parse_assignments(["Modality=SM"]) == {"Modality": CommandLineValue("Modality", ("SM",))}
    q = SavedQuery.parse("-- param Organ VARCHAR\nSELECT $Organ")
    assert [p.name for p in q.parameters] == ["Organ"] and q.bind({"Organ": "x"}) == {"Organ": "x"}


def test_unknown_name_lists_every_renamed_file_and_three_close_names(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, "chest.sql", "-- name: ct_chest\nSELECT 1")
    _write(b, "chest.sql", "-- name: chest_ct\nSELECT 1")
    for n in (1, 2, 3, 4):
        _write(a, f"abcd{n}.sql", "SELECT 1")
    monkeypatch.setenv("COHORT_QUERY_PATH", os.pathsep.join([str(a), str(b)]))
    with pytest.raises(QueryFileError) as err:
        load_query("chest")
    assert _message(err).startswith(
        f"no saved query named 'chest' ({b / 'chest.sql'} is named 'chest_ct' by its -- name: header; "
        f"{a / 'chest.sql'} is named 'ct_chest' by its -- name: header: run it by that name); did you mean ")
    with pytest.raises(QueryFileError) as err:
        load_query("abcd")
    assert _message(err).startswith("no saved query named 'abcd'; did you mean abcd4, abcd3, abcd2? Available: ")
