"""cohort/manifest/parse.py and formats.py without the index: every format, header, line number and message.

Fast (no catalog): bench/mutation.py runs these against each mutant of the manifest parsers. The
manifests are written here by hand (or with pyarrow) and the expected references, line numbers and
whole error texts are written out, never rebuilt with the parser's own code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cohort import ManifestError
from cohort.manifest.formats import (
    GCS_BUCKETS,
    SHARED_BUCKETS,
    ManifestFormat,
    Provider,
    buckets_table,
    format_for,
    listing,
    sidecar,
)
from cohort.manifest.parse import Ref, parse

U1 = "1cac0ac8-f1b1-4566-84e0-37716cf63939"
U2 = "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
UID1, UID2 = "1.2.840.1", "1.2.840.2"


def _file(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _error(path: Path) -> str:
    with pytest.raises(ManifestError) as err:
        parse(path)
    return str(err.value)


# -- formats.py --------------------------------------------------------------------------------------
def test_format_for_names_and_suffixes():
    assert format_for("csv", Path("x.parquet")) is ManifestFormat.CSV
    assert format_for(ManifestFormat.TSV, Path("x")) is ManifestFormat.TSV
    assert [format_for(None, Path(f"m{s}")) for s in (".S5CMD", ".csv", ".TSV", ".json", ".jsonl", ".ndjson",
                                                      ".parquet", ".txt", "")] == [
        ManifestFormat.S5CMD, ManifestFormat.CSV, ManifestFormat.TSV, ManifestFormat.JSON, ManifestFormat.JSON,
        ManifestFormat.JSON, ManifestFormat.PARQUET, ManifestFormat.S5CMD, ManifestFormat.S5CMD]
    with pytest.raises(ManifestError) as err:
        format_for("xlsx", Path("m.csv"))
    assert str(err.value) == "unknown manifest format 'xlsx'; use one of s5cmd, csv, tsv, json, parquet"


def test_sidecar_buckets_and_listing():
    assert sidecar(Path("/d/m.csv")) == Path("/d/m.csv.provenance.json")
    assert SHARED_BUCKETS == {"idc-open-data"}
    assert buckets_table().to_pylist() == [{"aws_bucket": a, "gcs_bucket": g} for a, g in GCS_BUCKETS.items()]
    assert buckets_table().column_names == ["aws_bucket", "gcs_bucket"]
    assert listing("bad lines", ["a", "b"], "fix them") == "2 bad lines: a; b. To fix: fix them"
    ten = [str(i) for i in range(10)]
    assert listing("x", ten, "f") == "10 x: 0; 1; 2; 3; 4; 5; 6; 7; 8; 9. To fix: f"
    assert listing("x", [*ten, "10", "11"], "f") == "12 x: 0; 1; 2; 3; 4; 5; 6; 7; 8; 9; and 2 more. To fix: f"
    assert listing("x", [*ten, "10"], "f") == "11 x: 0; 1; 2; 3; 4; 5; 6; 7; 8; 9; and 1 more. To fix: f"


# -- s5cmd -------------------------------------------------------------------------------------------
def test_s5cmd_lines_header_and_hints(tmp_path):
    path = _file(tmp_path, "m.s5cmd", (
        "# idc_cohort: 1\n"
        "#cite: \"A\"\n"
        "# cite: {\"doi\": \"10.1/x\"}\n"
        "# s5cmd --no-sign-request --endpoint-url https://storage.googleapis.com run m.s5cmd\n"
        "# note:  plain text \n"
        "\n"
        f"cp s3://idc-open-data/{U1.upper()}/* .\n"
        f"   s3://idc-open-data-two/{U2}/*   \n"
        f"sync --exclude=*.txt s3://b/{U1}/* dest/dir\n"
        "# s5cmd --endpoint-url https://s3.amazonaws.com\n"
    ))
    fmt, refs, header, hints = parse(path)
    assert fmt is ManifestFormat.S5CMD
    assert refs == [Ref(7, uuid=U1, bucket="idc-open-data"), Ref(8, uuid=U2, bucket="idc-open-data-two"),
                    Ref(9, uuid=U1, bucket="b")]
    assert header == {"idc_cohort": 1, "cite": ["A", {"doi": "10.1/x"}], "note": "plain text"}
    assert hints == [(4, Provider.GCS), (10, Provider.AWS)]


@pytest.mark.parametrize(("name", "text"), [
    ("m.txt", f"s3://idc-open-data/{U1}/*\n"),
    ("noext", f"cp s3://idc-open-data/{U1}/* .\n"),
    ("m.csv", f"s3://idc-open-data/{U1}/*\n"),
    ("m", f"\n# c\n  sync s3://idc-open-data/{U1}/* x\n"),
])
def test_s5cmd_is_recognised_by_suffix_or_first_line(tmp_path, name, text):
    fmt, refs, _, _ = parse(_file(tmp_path, name, text))
    assert fmt is ManifestFormat.S5CMD and [r.uuid for r in refs] == [U1]


@pytest.mark.parametrize(("line", "message"), [
    (f"cp s3://idc-open-data/{U1}/*", f"not an s5cmd copy line: 'cp s3://idc-open-data/{U1}/*'; expected "
                                      "`cp s3://<bucket>/<crdc_series_uuid>/* <destination>`"),
    (f"sync s3://idc-open-data/{U1}/*", f"not an s5cmd copy line: 'sync s3://idc-open-data/{U1}/*'; expected "
                                        "`cp s3://<bucket>/<crdc_series_uuid>/* <destination>`"),
    ("rm " + "x" * 200, "not an s5cmd copy line: 'rm " + "x" * 117 + "'; expected "
                        "`cp s3://<bucket>/<crdc_series_uuid>/* <destination>`"),
    ("cp s3://idc-open-data/not-a-uuid/* .", "'s3://idc-open-data/not-a-uuid/*' does not name a series folder; "
                                             "expected `cp s3://<bucket>/<crdc_series_uuid>/* <destination>` where "
                                             "<crdc_series_uuid> is a UUID"),
])
def test_s5cmd_bad_lines(tmp_path, line, message):
    path = _file(tmp_path, "m.s5cmd", f"# h: 1\n\n{line}\n")
    assert _error(path) == f"{path}:3: {message}"


# -- CSV / TSV ---------------------------------------------------------------------------------------
def test_csv_with_portal_preamble_comments_and_quoted_newlines(tmp_path):
    path = _file(tmp_path, "m.csv", (
        "\ufeffCohort Name,my cohort\n"
        "Filters,\"a, b\"\n"
        "\n"
        "# key: [1, 2]\n"
        " PatientID , SeriesInstanceUID ,crdc_series_uuid\n"
        f"p1,{UID1},{U1.upper()}\n"
        "# between: rows\n"
        "\n"
        f"\"p\n2\", {UID2} ,\n"
        f"p3,,  {U2}  \n"
    ))
    fmt, refs, header, hints = parse(path)
    assert fmt is ManifestFormat.CSV and hints == []
    assert refs == [Ref(6, uuid=U1, uid=UID1), Ref(9, uuid=None, uid=UID2), Ref(11, uuid=U2, uid=None)]
    assert header == {"key": [1, 2], "between": "rows", "preamble": ["Cohort Name,my cohort", "Filters,a, b"]}


def test_tsv_by_suffix_and_by_tab(tmp_path):
    fmt, refs, header, _ = parse(_file(tmp_path, "m.tsv", f"series_uuid\tx\n{U1}\ta,b\n"))
    assert fmt is ManifestFormat.TSV and refs == [Ref(2, uuid=U1)] and header == {}
    fmt, refs, _, _ = parse(_file(tmp_path, "m.data", f"SeriesInstanceUID\tnote\n{UID1}\tx\n"))
    assert fmt is ManifestFormat.TSV and refs == [Ref(2, uid=UID1)]
    fmt, refs, _, _ = parse(_file(tmp_path, "m2.data", f"SeriesInstanceUID,note\n{UID1},x\n"))
    assert fmt is ManifestFormat.CSV


def test_urls_name_the_series_when_no_uuid_column(tmp_path):
    path = _file(tmp_path, "m.csv", (
        "aws_url,gcs_url,series_aws_url,crdc_series_uuid\n"
        f"s3://idc-open-data/{U1}/*,,,\n"
        f",gs://idc-open-data/{U2.upper()}/,,\n"
        f",,s3://x/{U1},\n"
        f"s3://idc-open-data/{U1}/*,,,{U2}\n"
    ))
    _, refs, _, _ = parse(path)
    assert refs == [Ref(2, uuid=U1), Ref(3, uuid=U2), Ref(4, uuid=U1), Ref(5, uuid=U2)]


@pytest.mark.parametrize(("row", "message"), [
    ("s3://idc-open-data/nope/*,", "aws_url 's3://idc-open-data/nope/*' does not name a series folder; expected "
                                   "s3://<bucket>/<crdc_series_uuid>/*"),
    (",not-a-uuid", "crdc_series_uuid 'not-a-uuid' is not a UUID (e.g. 1cac0ac8-f1b1-4566-84e0-37716cf63939)"),
    (", ", "this row has neither SeriesInstanceUID nor crdc_series_uuid; every row needs one"),
    (f",{U1}x", f"crdc_series_uuid '{U1}x' is not a UUID (e.g. 1cac0ac8-f1b1-4566-84e0-37716cf63939)"),
])
def test_bad_rows(tmp_path, row, message):
    path = _file(tmp_path, "m.csv", f"aws_url,crdc_series_uuid\n# c\n{row}\n")
    assert _error(path) == f"{path}:3: {message}"


def test_gcs_url_that_is_no_series_folder_names_its_column(tmp_path):
    path = _file(tmp_path, "m.csv", "gcs_url,SeriesInstanceUID\ngs://b/x/*,\n")
    assert _error(path) == (f"{path}:2: gcs_url 'gs://b/x/*' does not name a series folder; expected "
                            "s3://<bucket>/<crdc_series_uuid>/*")


def test_field_count_and_open_quote_errors(tmp_path):
    path = _file(tmp_path, "m.csv", f"# h: 1\nSeriesInstanceUID,note\n{UID1},a,b\n")
    assert _error(path) == (f"{path}:3: 3 fields, but the column header (line 2) has 2; quote values that "
                            "contain commas")
    path = _file(tmp_path, "m.tsv", f"SeriesInstanceUID\tnote\n{UID1}\n")
    assert _error(path) == f"{path}:2: 1 fields, but the column header (line 1) has 2; quote values that contain a tab"
    path = _file(tmp_path, "m2.csv", f"SeriesInstanceUID,note\n{UID1},\"a\nb\",c\n{UID2},x\n")
    assert _error(path) == (f"{path}:2: 3 fields, but the column header (line 1) has 2 (the row runs to line 3: "
                            "is a quote left open?); quote values that contain commas")
    path = _file(tmp_path, "m3.csv", f"SeriesInstanceUID,note\n{UID1},x\n{UID2},\"open\nmore\n")
    assert _error(path) == (f"{path}:3: a quoted field of this row is never closed (the row runs to the end of the "
                            "file, line 4); close the quote or double a quote inside the field (\"\")")


def test_a_field_over_the_csv_limit(tmp_path):
    path = _file(tmp_path, "m.csv", f"SeriesInstanceUID,note\n\n{UID1},\"{'x' * 140000}\"\n")
    assert _error(path) == (f"{path}:3: cannot read this row as CSV: field larger than field limit (131072); a "
                            "manifest row holds one series' columns (check for an unclosed quote or a file that is "
                            "not a manifest)")
    path = _file(tmp_path, "m.tsv", f"SeriesInstanceUID\tnote\n{UID1}\t\"{'x' * 140000}\"\n")
    assert _error(path).startswith(f"{path}:2: cannot read this row as TSV: field larger")


def test_no_header_row(tmp_path):
    path = _file(tmp_path, "m.csv", "a,b\n1,2\n")
    assert _error(path) == (f"{path}:1: no column header row naming SeriesInstanceUID or crdc_series_uuid or "
                            "series_uuid found; a series manifest has a header row such as "
                            "`PatientID,collection_id,StudyInstanceUID,SeriesInstanceUID,Modality,crdc_series_uuid`")
    path = _file(tmp_path, "m.tsv", "a\tb\n")
    assert "`PatientID\tcollection_id\tStudyInstanceUID\tSeriesInstanceUID\tModality\tcrdc_series_uuid`" in _error(path)


def test_sidecar_provenance_wins_over_comment_lines(tmp_path):
    path = _file(tmp_path, "m.csv", f"# a: 1\nSeriesInstanceUID\n{UID1}\n")
    assert parse(path)[2] == {"a": 1}
    side = _file(tmp_path, "m.csv.provenance.json", "\ufeff" + json.dumps({"b": 2}))
    assert parse(path)[2] == {"b": 2}
    side.write_text("[1, 2]", encoding="utf-8")
    assert parse(path)[2] == {"a": 1}
    side.write_text("{broken", encoding="utf-8")
    assert _error(path) == (f"{path}: the provenance file m.csv.provenance.json is not readable JSON (Expecting "
                            "property name enclosed in double quotes: line 1 column 2 (char 1)); delete it or write "
                            "the manifest again")


# -- JSON ----------------------------------------------------------------------------------------------
def test_json_document_with_provenance_and_line_numbers(tmp_path):
    text = ('{"provenance": {"idc_version": 25, "series": "not this one"},\n'
            ' "other": [1, {"series": []}],\n'
            ' "series": [\n'
            f'   {{"SeriesInstanceUID": "{UID1}"}},\n'
            '\n'
            f'   {{"crdc_series_uuid": " {U1.upper()} "}}, {{"aws_url": "s3://b/{U2}/*"}}\n'
            ' ]}\n')
    fmt, refs, header, hints = parse(_file(tmp_path, "m.json", text))
    assert fmt is ManifestFormat.JSON and hints == []
    assert header == {"idc_version": 25, "series": "not this one"}
    assert refs == [Ref(4, uid=UID1), Ref(6, uuid=U1), Ref(6, uuid=U2)]


def test_json_list_single_object_and_lines(tmp_path):
    _, refs, header, _ = parse(_file(tmp_path, "a.json", f'\n\n  [{{"series_uuid": "{U1}"}},\n{{"SeriesInstanceUID": 7}}]'))
    assert refs == [Ref(3, uuid=U1), Ref(4, uid="7")] and header == {}
    _, refs, _, _ = parse(_file(tmp_path, "b.json", f'{{"series_aws_url": "s3://b/{U2}/*"}}\n'))
    assert refs == [Ref(1, uuid=U2)]
    fmt, refs, header, _ = parse(_file(tmp_path, "c.jsonl", f'{{"SeriesInstanceUID": "{UID1}"}}\n\n'
                                                             f'{{"SeriesInstanceUID": "{UID2}"}}\r\n'))
    assert fmt is ManifestFormat.JSON and refs == [Ref(1, uid=UID1), Ref(3, uid=UID2)] and header == {}


@pytest.mark.parametrize(("text", "message"), [
    ('{"a": 1}', '1: a JSON manifest is a list of series objects or {"provenance": ..., "series": [...]}'),
    ('{"series": 3}', '1: a JSON manifest is a list of series objects or {"provenance": ..., "series": [...]}'),
    ('[\n{"SeriesInstanceUID": "1"},\n 5]', "3: expected a series object, found int"),
    ('{"series": [\n["x"]]}', "2: expected a series object, found list"),
    ('[\n{"SeriesInstanceUID": "1"},\n', "3: invalid JSON: Expecting value (column 1)"),
    ('{"SeriesInstanceUID": "1"}\n{"SeriesInstanceUID": \n', "2: invalid JSON line: Expecting value (column 23)"),
    ('{"SeriesInstanceUID": "1"}\n[1]\n', "2: expected one series object per line"),
])
def test_json_errors(tmp_path, text, message):
    path = _file(tmp_path, "m.json", text)
    assert _error(path) == f"{path}:{message}"


# -- Parquet, unreadable files ---------------------------------------------------------------------------
def test_parquet_rows_and_provenance(tmp_path):
    table = pa.table({"note": ["a", "b", "c"], "SeriesInstanceUID": [UID1, None, "  "],
                      "crdc_series_uuid": [None, U1.upper(), U2]})
    table = table.replace_schema_metadata({b"idc_cohort.provenance": json.dumps({"k": [1]}).encode()})
    pq.write_table(table, tmp_path / "m.bin")
    fmt, refs, header, hints = parse(tmp_path / "m.bin")
    assert fmt is ManifestFormat.PARQUET and hints == [] and header == {"k": [1]}
    assert refs == [Ref(1, uid=UID1), Ref(2, uuid=U1), Ref(3, uuid=U2)]
    pq.write_table(pa.table({"gcs_url": [f"gs://b/{U1}/*"], "series_uuid": [None]}), tmp_path / "u.parquet")
    assert parse(tmp_path / "u.parquet")[1:3] == ([Ref(1, uuid=U1)], {})


def test_parquet_errors(tmp_path):
    pq.write_table(pa.table({"a": [1], "aws_url": ["s3://b/x/*"]}), tmp_path / "no_id.parquet")
    assert _error(tmp_path / "no_id.parquet") == (f"{tmp_path / 'no_id.parquet'}: no SeriesInstanceUID or "
                                                  "crdc_series_uuid or series_uuid column; columns are a, aws_url")
    bad = pa.table({"SeriesInstanceUID": [UID1]}).replace_schema_metadata({b"idc_cohort.provenance": b"{x"})
    pq.write_table(bad, tmp_path / "meta.parquet")
    assert _error(tmp_path / "meta.parquet") == (
        f"{tmp_path / 'meta.parquet'}: the Parquet metadata idc_cohort.provenance is not JSON (Expecting property "
        "name enclosed in double quotes: line 1 column 2 (char 1)); remove that key or re-export the manifest")
    path = _file(tmp_path, "cut.parquet", b"PAR1 not really parquet")
    assert _error(path).startswith(f"{path}: unreadable Parquet: ")


def test_not_text_and_not_readable(tmp_path):
    path = _file(tmp_path, "m.csv", b"SeriesInstanceUID\n\xff\xfe\n")
    assert _error(path) == f"{path}: not a text manifest (not UTF-8 at byte 18) and not Parquet"
    assert _error(tmp_path) == f"{tmp_path}: cannot read the manifest (Is a directory); check its permissions"


# -- what the first mutation run showed untested (bench/MUTATION.md) ----------------------------------
def test_an_indented_comment_line_between_rows(tmp_path):
    path = _file(tmp_path, "m.csv", f"SeriesInstanceUID\n{UID1}\n   # key: 5\n{UID2}\n")
    _, refs, header, _ = parse(path)
    assert refs == [Ref(2, uid=UID1), Ref(4, uid=UID2)] and header == {"key": 5}


@pytest.mark.parametrize(("text", "line"), [
    ('{"crdc_series_uuid": "nope"}\n{"crdc_series_uuid": "x"}\n', 1),  # JSON Lines
    ('{"crdc_series_uuid": "nope"}', 1),  # one series object
    ('[\n{"crdc_series_uuid": "nope"}]', 2),  # a list
])
def test_a_bad_json_row_names_file_and_line(tmp_path, text, line):
    path = _file(tmp_path, "m.json", text)
    assert _error(path) == (f"{path}:{line}: crdc_series_uuid 'nope' is not a UUID (e.g. "
                            "1cac0ac8-f1b1-4566-84e0-37716cf63939)")


@pytest.mark.parametrize("key", ["aws_url", "gcs_url", "series_aws_url"])
def test_one_json_object_named_by_a_url_only(tmp_path, key):
    _, refs, _, _ = parse(_file(tmp_path, "m.json", json.dumps({key: f"s3://b/{U1}/*", "note": 1})))
    assert refs == [Ref(1, uuid=U1)]


@pytest.mark.parametrize("column", ["aws_url", "series_aws_url"])
def test_a_parquet_row_named_by_a_url(tmp_path, column):
    pq.write_table(pa.table({"SeriesInstanceUID": [None, UID2], column: [f"s3://b/{U1}/*", None]}), tmp_path / "m.parquet")
    assert parse(tmp_path / "m.parquet")[1] == [Ref(1, uuid=U1), Ref(2, uid=UID2)]


def test_a_bad_parquet_row_names_file_and_row(tmp_path):
    pq.write_table(pa.table({"crdc_series_uuid": [U1, "nope"]}), tmp_path / "m.parquet")
    assert _error(tmp_path / "m.parquet") == (f"{tmp_path / 'm.parquet'}:2: crdc_series_uuid 'nope' is not a UUID "
                                              "(e.g. 1cac0ac8-f1b1-4566-84e0-37716cf63939)")


def test_a_destination_named_x_is_kept(tmp_path):
    path = _file(tmp_path, "m.s5cmd", f"cp s3://idc-open-data/{U1}/* X\n")
    assert parse(path)[1] == [Ref(1, uuid=U1, bucket="idc-open-data")]


def test_a_file_of_comments_only_has_no_header_row(tmp_path):
    for text in ("# only: a comment\n", ""):
        path = _file(tmp_path, "m.csv", text)
        assert _error(path).startswith(f"{path}:1: no column header row naming SeriesInstanceUID")


@pytest.mark.parametrize(("name", "text", "shown"), [
    ("m", "  # indented comment\ncp s3://b/x .\n", "cp s3://b/x ."),
    ("m", "sync s3://b/x dest\n", "sync s3://b/x dest"),
    ("m.txt", "rm x\n", "rm x"),
])
def test_s5cmd_by_first_word_or_txt_suffix_then_a_bad_line(tmp_path, name, text, shown):
    path = _file(tmp_path, name, text)
    line = text.count("\n")
    assert _error(path) == (f"{path}:{line}: not an s5cmd copy line: {shown!r}; expected "
                            "`cp s3://<bucket>/<crdc_series_uuid>/* <destination>`")


def test_a_one_column_tsv_by_its_suffix(tmp_path):
    fmt, refs, _, _ = parse(_file(tmp_path, "m.tsv", f"SeriesInstanceUID\n{UID1}\n"))
    assert fmt is ManifestFormat.TSV and refs == [Ref(2, uid=UID1)]
