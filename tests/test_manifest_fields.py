"""Property tests: manifest fields holding commas, quotes, tabs, newlines (LF, CR, CRLF, U+2028),
non-ASCII and BOMs, in files we write and in hand-made Portal-style files, read back intact.

Expected values come from the shipped index and from independent writers/readers (the csv
module, json, pandas, DuckDB), never from our own code.
"""

from __future__ import annotations

import csv
import io
import json
import re

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohort import ManifestError
from cohort.manifest import read_manifest
from cohort.manifest.write import _write_delimited

NASTY = st.lists(
    st.one_of(st.sampled_from([",", '"', "\t", "\n", "\r", "\r\n", "\u2028", "\u0085", "\ufeff", "#", " ",
                                        "é", "中", "🙂", "'", ";", "\\"]),
                       st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    max_size=12).map("".join)
SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def series(catalog) -> list[dict]:
    """Real series of the current release, with their crdc_series_uuid."""
    return catalog.sql("SELECT SeriesInstanceUID, crdc_series_uuid FROM index "
                       "USING SAMPLE reservoir(200 ROWS) REPEATABLE (11)").to_pylist()


def _line_starts(text: str) -> list[int]:
    """Physical line number (1-based) at each character offset's line: CR, LF, CRLF end a line."""
    return [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]


def _line_of(text: str, offset: int) -> int:
    return 1 + sum(1 for end in _line_starts(text) if end <= offset)


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_fields_we_write_read_back_with_our_reader_pandas_and_duckdb(delimiter, series, catalog, tmp_path):
    path = tmp_path / ("m.csv" if delimiter == "," else "m.tsv")

    @SETTINGS
    @given(rows=st.lists(st.tuples(st.sampled_from(series), NASTY, NASTY), min_size=1, max_size=6,
                         unique_by=lambda t: t[0]["SeriesInstanceUID"]))
    def check(rows):
        table = pa.table({"note": [a for _, a, _ in rows],
                          "SeriesInstanceUID": [s["SeriesInstanceUID"] for s, _, _ in rows],
                          "license_short_name": [b for _, _, b in rows]})
        _write_delimited(path, table, {}, delimiter, comments=False)
        back = read_manifest(path, catalog)
        assert back.result.column("SeriesInstanceUID").to_pylist() == [s["SeriesInstanceUID"] for s, _, _ in rows]
        assert back.result.column("crdc_series_uuid").to_pylist() == [s["crdc_series_uuid"] for s, _, _ in rows]
        # the csv module with newline="" (RFC 4180) sees the same fields, byte for byte
        with path.open(encoding="utf-8", newline="") as f:
            got = list(csv.reader(f, delimiter=delimiter))
        assert got[0] == ["note", "SeriesInstanceUID", "license_short_name"]
        assert got[1:] == [[a, s["SeriesInstanceUID"], b] for s, a, b in rows]
        if delimiter == ",":  # pandas and DuckDB with no options
            df = pd.read_csv(path, keep_default_na=False, dtype=str)
            assert df["SeriesInstanceUID"].tolist() == [s["SeriesInstanceUID"] for s, _, _ in rows]
            assert df["note"].tolist() == [a for _, a, _ in rows]
            con = duckdb.connect()
            try:
                got = con.sql(f"SELECT SeriesInstanceUID FROM read_csv('{path}')").fetchall()
            finally:
                con.close()
            assert [g[0] for g in got] == [s["SeriesInstanceUID"] for s, _, _ in rows]

    check()


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [False, True])
def test_hand_made_portal_csv_with_nasty_fields(newline, bom, series, catalog, tmp_path):
    path = tmp_path / "cohort_1_20240101.csv"

    @SETTINGS
    @given(rows=st.lists(st.tuples(st.sampled_from(series), NASTY, NASTY), min_size=1, max_size=6,
                         unique_by=lambda t: t[0]["SeriesInstanceUID"]),
           preamble=st.lists(st.text(alphabet="abc: é,;", max_size=20).filter(lambda t: t.strip()), max_size=3))
    def check(rows, preamble):
        out = io.StringIO(newline="")
        for line in preamble:  # the Portal's free-text header: cohort name, filters, date
            out.write(line.replace(",", " ") + newline)
        w = csv.writer(out, lineterminator=newline, quoting=csv.QUOTE_ALL)  # minimal quoting leaves a lone CR bare
        w.writerow(["collection_id", "SeriesInstanceUID", "source_DOI", "crdc_series_uuid", "aws_url"])
        starts = []
        for s, a, b in rows:
            starts.append(_line_of(out.getvalue(), len(out.getvalue())))
            w.writerow([a, s["SeriesInstanceUID"], b, s["crdc_series_uuid"], f"s3://idc-open-data/{s['crdc_series_uuid']}/*"])
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8"))
        back = read_manifest(path, catalog)
        assert back.result.column("SeriesInstanceUID").to_pylist() == [s["SeriesInstanceUID"] for s, _, _ in rows]
        assert back.result.column("manifest_line").to_pylist() == starts

    check()


def test_quoted_newline_and_line_separator_hand_written(series, catalog, tmp_path):
    a, b = series[0], series[1]
    text = ("# made by hand\r\n"
            "SeriesInstanceUID,note\r\n"
            f'{a["SeriesInstanceUID"]},"first\r\nsecond, with a comma and a ""quote"""\r\n'
            f'{b["SeriesInstanceUID"]},"x\u2028y\u0085z"\r\n')
    path = tmp_path / "hand.csv"
    path.write_bytes(text.encode("utf-8"))
    back = read_manifest(path, catalog)
    assert back.result.column("SeriesInstanceUID").to_pylist() == [a["SeriesInstanceUID"], b["SeriesInstanceUID"]]
    assert back.result.column("manifest_line").to_pylist() == [3, 5]


def test_a_bad_row_after_a_multi_line_field_names_its_own_line(series, catalog, tmp_path):
    a = series[0]
    path = tmp_path / "bad.csv"
    path.write_text(f'SeriesInstanceUID,note\n{a["SeriesInstanceUID"]},"one\ntwo\nthree"\n1.2.3\n', encoding="utf-8")
    with pytest.raises(ManifestError) as err:
        read_manifest(path, catalog)
    assert err.value.line == 5 and "1 fields, but the column header (line 1) has 2" in str(err.value)
    path.write_text(f'SeriesInstanceUID,note\n{a["SeriesInstanceUID"]},"open\n{a["SeriesInstanceUID"]},x\n',
                    encoding="utf-8")
    with pytest.raises(ManifestError) as err:
        read_manifest(path, catalog)
    assert err.value.line == 2


@SETTINGS
@given(notes=st.lists(NASTY, min_size=1, max_size=5), lines=st.booleans())
def test_json_manifests_with_nasty_values(notes, lines, series, catalog, tmp_path_factory):
    path = tmp_path_factory.mktemp("json") / ("m.jsonl" if lines else "m.json")
    recs = [{"note": n, "SeriesInstanceUID": series[i]["SeriesInstanceUID"]} for i, n in enumerate(notes)]
    if lines:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
    else:
        text = json.dumps(recs, ensure_ascii=False, indent=1)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    back = read_manifest(path, catalog)
    assert back.result.column("SeriesInstanceUID").to_pylist() == [r["SeriesInstanceUID"] for r in recs]
