"""cohort/manifest/write.py, every outcome written out: the exact bytes of each writer on hand-made
tables, the header comment lines, the temp-file-then-rename, and write_manifest's provenance and
files for a small cohort of the shipped index. Written for the survivors of a mutation run
(bench/mutation.py manifest.write).

Expected values are written out by hand, read back with Python's csv/json and pyarrow, or come
from idc-index-data's Parquet read with plain DuckDB SQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
from types import SimpleNamespace

import duckdb
import idc_index_data
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cohort import Cohort, ManifestError, Provenance
from cohort.citations import cite
from cohort.coverage import route
from cohort.manifest import COLUMNS, PARQUET_KEY, ManifestFormat, Provider, manifest_table, write_manifest
from cohort.manifest.write import (
    _copy, _distinct, _encode, _header_lines, _one_line, _provenance, _replacing, _write_delimited, _write_json,
    _write_s5cmd,
)

SLIDE = "1.3.6.1.4.1.5962.99.1.3380245274.1362068963.1639762817818.2.0"
SLIDE_V8_UUID = "99171fc7-7652-42df-9254-ad78c685771b"
SLIDE_UUID = "1cac0ac8-f1b1-4566-84e0-37716cf63939"
INDEX = idc_index_data.IDC_INDEX_PARQUET_FILEPATH
PRIOR = idc_index_data.PRIOR_VERSIONS_INDEX_PARQUET_FILEPATH
CITATIONS = {"summary": "2 DOIs", "items": [{"url": "https://doi.org/1", "text": "A  b\n  c. "},
                                             {"url": "https://doi.org/2", "text": ""}]}


# -- the pure parts ----------------------------------------------------------------------------------------


def test_header_lines_and_encoding():
    prov = {"a": "plain", "b": "1", "c": "two\nlines", "d": 3, "e": None, "f": ["x", 2], "g": '{"k": 1}',
            "citations": CITATIONS, "h": "{not json", "i": True}
    assert _header_lines(prov) == [
        "# a: plain", '# b: "1"', '# c: "two\\nlines"', "# d: 3", "# e: null", '# f: ["x", 2]',
        '# g: "{\\"k\\": 1}"', "# citation_status: 2 DOIs", "# cite: https://doi.org/1 A b c.",
        "# cite: https://doi.org/2", "# h: {not json", "# i: true"]
    assert _encode("true") == '"true"' and _encode("yes") == "yes" and _encode("") == ""
    assert _one_line(" a\tb \n\n c ") == "a b c"
    table = pa.table({"x": ["b", None, "a", "b"], "y": [3, 1, None, 3]})
    assert _distinct(table, "x") == ["a", "b"] and _distinct(table, "y") == [1, 3]


def test_replacing_writes_beside_then_renames(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("old")
    with _replacing(path) as tmp:
        assert tmp == tmp_path / f".m.csv.{os.getpid()}.tmp"
        tmp.write_text("new")
        assert path.read_text() == "old"
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]
    with pytest.raises(RuntimeError, match="second write"):
        with _replacing(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("second write")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


def _table() -> pa.Table:
    return pa.table({
        "SeriesInstanceUID": ["1.2", "1.3"],
        "license_short_name": ["CC BY 4.0, with a comma", 'a "quote"\tand tab'],
        "series_size_MB": [1.5, None],
        "aws_url": ["s3://idc-open-data-cr/u1/*", "s3://idc-open-data/u2/*"],
        "gcs_url": ["gs://idc-open-cr/u1/*", "gs://public-datasets-idc/gs://u2/*"],
    })


def _rows(text: str, delimiter: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


def test_copy_and_delimited_writers(tmp_path):
    table = _table()
    expected = [list(table.column_names)] + [
        ["1.2", "CC BY 4.0, with a comma", "1.5", "s3://idc-open-data-cr/u1/*", "gs://idc-open-cr/u1/*"],
        ["1.3", 'a "quote"\tand tab', "", "s3://idc-open-data/u2/*", "gs://public-datasets-idc/gs://u2/*"]]
    plain = tmp_path / "plain.csv"
    _copy(table, plain, "HEADER, DELIMITER ','")
    assert _rows(plain.read_text(), ",") == expected
    prov = {"format": "csv", "n": 2, "citations": CITATIONS}
    for delimiter, name in ((",", "m.csv"), ("\t", "m.tsv")):
        path = tmp_path / name
        _write_delimited(path, table, prov, delimiter, False)
        text = path.read_text()
        assert not text.startswith("#") and _rows(text, delimiter) == expected
        _write_delimited(path, table, prov, delimiter, True)
        text = path.read_text()
        head = "# format: csv\n# n: 2\n# citation_status: 2 DOIs\n# cite: https://doi.org/1 A b c.\n" \
               "# cite: https://doi.org/2\n"
        assert text.startswith(head)
        assert _rows(text[len(head):], delimiter) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "m.tsv", "plain.csv"]  # no .body left


def test_s5cmd_and_json_writers(tmp_path):
    table = _table()
    prov = {"download": "s5cmd --no-sign-request run x.s5cmd", "k": "v", "citations": CITATIONS}
    head = ("# To download the files in this manifest, first install s5cmd (https://github.com/peak/s5cmd),\n"
            "# then run the following command:\n# s5cmd --no-sign-request run x.s5cmd\n"
            "# or with idc-index: idc download x.s5cmd\n# download: s5cmd --no-sign-request run x.s5cmd\n# k: v\n"
            "# citation_status: 2 DOIs\n# cite: https://doi.org/1 A b c.\n# cite: https://doi.org/2\n")
    path = tmp_path / "out.s5cmd"
    _write_s5cmd(path, "x.s5cmd", table, Provider.AWS, prov)
    assert path.read_text() == head + "cp s3://idc-open-data-cr/u1/* .\ncp s3://idc-open-data/u2/* .\n"
    _write_s5cmd(path, "x.s5cmd", table, Provider.GCS, prov)
    assert path.read_text() == head + "cp s3://idc-open-cr/u1/* .\ncp s3://public-datasets-idc/gs://u2/* .\n"

    path = tmp_path / "out.json"
    _write_json(path, table, prov)
    text = path.read_text()
    assert text.startswith('{"provenance": ' + json.dumps(prov, indent=1) + ',\n"series": ')
    assert text.endswith("}\n")
    assert json.loads(text) == {"provenance": prov, "series": table.to_pylist()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.s5cmd"]


# -- write_manifest on the shipped index -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(catalog):
    """SLIDE's two revisions, a current series of another collection, and a series that left the release."""
    cr = duckdb.sql(f"SELECT * FROM '{INDEX}' WHERE aws_bucket = 'idc-open-data-cr' ORDER BY SeriesInstanceUID "
                    "LIMIT 1").df().to_dict("records")[0]
    gone = duckdb.sql(f"SELECT * FROM '{PRIOR}' WHERE SeriesInstanceUID NOT IN (SELECT SeriesInstanceUID FROM "
                      f"'{INDEX}') ORDER BY SeriesInstanceUID, max_idc_version DESC LIMIT 1").df().to_dict("records")[0]
    slide = duckdb.sql(f"SELECT * FROM '{INDEX}' WHERE SeriesInstanceUID = '{SLIDE}'").df().to_dict("records")[0]
    old = duckdb.sql(f"SELECT * FROM '{PRIOR}' WHERE crdc_series_uuid = '{SLIDE_V8_UUID}'").df().to_dict("records")[0]
    uids = [SLIDE, SLIDE, cr["SeriesInstanceUID"], gone["SeriesInstanceUID"]]
    uuids = [SLIDE_V8_UUID, SLIDE_UUID, cr["crdc_series_uuid"], gone["crdc_series_uuid"]]
    cohort = Cohort(pa.table({"SeriesInstanceUID": uids, "crdc_series_uuid": uuids}),
                    Provenance.make(catalog, query_name="by hand", params={"n": 4}), catalog)
    return {"cohort": cohort, "cr": cr, "gone": gone, "slide": slide, "old": old, "routes": route(cohort, 9)}


def test_write_manifest_provenance_and_every_format(catalog, small, tmp_path):
    cohort, cr, gone, slide, old, routes = (small[k] for k in ("cohort", "cr", "gone", "slide", "old", "routes"))
    table = manifest_table(cohort, "gcs", routes)
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    info = write_manifest(cohort, tmp_path / "m.s5cmd", provider="gcs", routes=routes, citations=False)
    assert (info.path, info.format, info.provider, info.series) == (tmp_path / "m.s5cmd", ManifestFormat.S5CMD,
                                                                    Provider.GCS, 4)
    prov = info.provenance
    created = dt.datetime.fromisoformat(prov["manifest_created"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", prov["manifest_created"])
    assert started <= created <= dt.datetime.now(dt.timezone.utc)
    size = round(slide["series_size_MB"] + old["series_size_MB"] + cr["series_size_MB"] + gone["series_size_MB"], 2)
    licences = {slide["license_short_name"]: 2, "unknown (earlier release)": 1}
    licences[cr["license_short_name"]] = licences.get(cr["license_short_name"], 0) + 1
    dois = sorted({slide["source_DOI"], cr["source_DOI"]})
    expected = {
        **cohort.provenance.to_dict(), "manifest_created": prov["manifest_created"], "format": "s5cmd",
        "provider": "gcs", "endpoint_url": "https://storage.googleapis.com",
        "download": "s5cmd --no-sign-request --endpoint-url https://storage.googleapis.com run m.s5cmd",
        "dicomweb_policy": str(routes.policy), "series": 3, "revisions": 4,
        "studies": len({slide["StudyInstanceUID"], cr["StudyInstanceUID"], gone["StudyInstanceUID"]}),
        "patients": len({slide["PatientID"], cr["PatientID"], gone["PatientID"]}),
        "collections": len({slide["collection_id"], cr["collection_id"], gone["collection_id"]}),
        "size_MB": size, "licenses": dict(sorted(licences.items())), "source_DOIs": dois,
        "citations": cite(dois, fetch=False).to_dict()}
    assert prov == expected
    assert list(prov) == list(expected)  # the order the header lines are written in
    assert info.size_MB == size and info.command == prov["download"]
    assert info.citations.to_dict()["summary"].endswith("(fetching not requested)")
    lines = info.path.read_text().splitlines()
    assert lines[2] == f"# {prov['download']}" and lines[3] == "# or with idc-index: idc download m.s5cmd"
    assert [ln for ln in lines if not ln.startswith("#")] == [
        "cp " + u.replace("gs://", "s3://", 1) + " ." for u in table.column("gcs_url").to_pylist()]

    given = cite(dois, fetch=False)
    for fmt in ("csv", "tsv", "json", "parquet"):
        path = tmp_path / f"m.{fmt}"
        info = write_manifest(cohort, path, routes=routes, citations=given)
        assert info.citations is given and (info.format, info.provider) == (ManifestFormat(fmt), Provider.AWS)
        prov = info.provenance
        assert (prov["format"], prov["provider"], prov["endpoint_url"], prov["download"]) == (
            fmt, "aws", "https://s3.amazonaws.com", f"cohort download m.{fmt}")
        aws = manifest_table(cohort, "aws", routes)
        if fmt in ("csv", "tsv"):
            rows = _rows(path.read_text(), "," if fmt == "csv" else "\t")
            assert rows[0] == list(COLUMNS) and len(rows) == 5
            assert [r[COLUMNS.index("crdc_series_uuid")] for r in rows[1:]] == aws.column("crdc_series_uuid").to_pylist()
            assert (tmp_path / f"m.{fmt}.provenance.json").read_text() == json.dumps(prov, indent=1) + "\n"
        elif fmt == "json":
            assert json.loads(path.read_text()) == {"provenance": prov, "series": aws.to_pylist()}
        else:
            assert pq.read_table(path).to_pylist() == aws.to_pylist()
            assert json.loads(pq.read_schema(path).metadata[PARQUET_KEY]) == prov
    commented = write_manifest(cohort, tmp_path / "c.csv", routes=routes, citations=given, comments=True)
    text = commented.path.read_text()
    assert text.startswith("\n".join(_header_lines(commented.provenance)) + "\n" + ",".join(COLUMNS) + "\n")
    assert text.splitlines()[len(_header_lines(commented.provenance))] == ",".join(COLUMNS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.csv", "c.csv.provenance.json", "m.csv", "m.csv.provenance.json", "m.json", "m.parquet", "m.s5cmd",
        "m.tsv", "m.tsv.provenance.json"]


def test_write_manifest_defaults_and_errors(catalog, small, tmp_path):
    cohort = Cohort(pa.table({"SeriesInstanceUID": [SLIDE]}), Provenance.make(catalog), catalog)
    info = write_manifest(cohort, str(tmp_path / "sub" / "one.manifest"), citations=False)  # str; parents made
    assert (info.format, info.provider, info.series) == (ManifestFormat.S5CMD, Provider.AWS, 1)
    assert info.provenance["dicomweb_policy"] == str(route(cohort).policy)
    assert info.path.read_text().endswith(f"\ncp s3://idc-open-data/{SLIDE_UUID}/* .\n")
    assert write_manifest(cohort, tmp_path / "x.txt", format="csv", citations=False).format is ManifestFormat.CSV

    empty = tmp_path / "empty.s5cmd"
    with pytest.raises(ManifestError) as err:
        write_manifest(Cohort(pa.table({"SeriesInstanceUID": pa.array([], pa.string())}), Provenance.make(catalog),
                              catalog), empty, routes=small["routes"], citations=False)
    assert str(err.value) == f"{empty}: the cohort is empty: a manifest needs at least one series"
    assert err.value.path == str(empty) and not empty.exists()

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    target = blocker / "sub" / "m.s5cmd"
    with pytest.raises(ManifestError) as err:
        write_manifest(cohort, target, routes=small["routes"], citations=False)
    assert str(err.value) == f"{target}: cannot write the manifest: Not a directory"
    assert err.value.__cause__ is None and err.value.__suppress_context__

    csv_path = tmp_path / "blocked.csv"  # DuckDB cannot open its temp file: a directory stands there
    (tmp_path / f".blocked.csv.{os.getpid()}.tmp").mkdir()
    with pytest.raises(ManifestError) as err:
        write_manifest(cohort, csv_path, routes=small["routes"], citations=False)
    message = str(err.value)
    assert message.startswith(f"{csv_path}: cannot write the manifest: ") and "\n" not in message
    assert len(message) > len(f"{csv_path}: cannot write the manifest: ") + 5 and not csv_path.exists()


def test_nested_directories_and_the_aws_bucket_of_an_s5cmd_line(catalog, small, tmp_path):
    cr = small["cr"]
    cohort = Cohort(pa.table({"SeriesInstanceUID": [cr["SeriesInstanceUID"]]}), Provenance.make(catalog), catalog)
    info = write_manifest(cohort, tmp_path / "a" / "b" / "c.s5cmd", routes=small["routes"], citations=False)
    lines = [ln for ln in info.path.read_text().splitlines() if not ln.startswith("#")]
    assert lines == [f"cp s3://idc-open-data-cr/{cr['crdc_series_uuid']}/* ."]  # the AWS bucket, not idc-open-cr


# -- what the full mutation run showed untested ------------------------------------------------------------


def test_citations_are_fetched_by_default_and_only_when_asked(catalog, small, tmp_path, monkeypatch):
    """Fetching is injected (no network): each DOI's text is its own name; the cache is a fresh directory."""
    from cohort import citations as citations_module

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    asked = []

    def fetch(session, resolver, doi, style, timeout):
        asked.append(doi)
        return f"Reference {doi}."

    monkeypatch.setattr(citations_module, "_fetch", fetch)
    cohort = Cohort(pa.table({"SeriesInstanceUID": [SLIDE]}), Provenance.make(catalog), catalog)
    doi = small["slide"]["source_DOI"].lower()
    wanted = [citations_module.IDC_DOI, doi]
    info = write_manifest(cohort, tmp_path / "a.s5cmd", routes=small["routes"])  # citations left at its default
    assert asked == wanted
    assert [(c.doi, c.status.value, c.text) for c in info.citations.items] == [
        (d, "fetched", f"Reference {d}.") for d in wanted]
    assert info.provenance["citations"]["summary"] == "2 DOIs: 2 fetched"
    assert f"# cite: https://doi.org/{doi} Reference {doi}." in info.path.read_text().splitlines()

    asked.clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty cache"))
    info = write_manifest(cohort, tmp_path / "b.s5cmd", routes=small["routes"], citations=False)
    assert asked == []
    assert info.provenance["citations"]["summary"] == "2 DOIs: 2 skipped (fetching not requested)"
    info = write_manifest(cohort, tmp_path / "c.s5cmd", routes=small["routes"], citations=True)
    assert asked == wanted and info.provenance["citations"]["summary"] == "2 DOIs: 2 fetched"


def test_a_duckdb_write_error_is_named_by_its_first_line(catalog, small, tmp_path):
    """DuckDB cannot open its temporary file: a dangling symlink into a missing directory stands there (a real
    IOException, not an OSError; the symlink itself is removed like any temporary file)."""
    cohort = Cohort(pa.table({"SeriesInstanceUID": [SLIDE]}), Provenance.make(catalog), catalog)
    for name in ("blocked.csv", "blocked.json"):
        path = tmp_path / name
        tmp = tmp_path / f".{name}.{os.getpid()}.tmp"
        target = tmp_path / "missing" / "x" if name.endswith(".csv") else tmp_path / "missing" / "y"
        written = tmp if name.endswith(".csv") else tmp_path / f".{name}.{os.getpid()}.tmp.body"
        written.symlink_to(target)
        with pytest.raises(ManifestError) as err:
            write_manifest(cohort, path, routes=small["routes"], citations=False)
        assert str(err.value) == (f'{path}: cannot write the manifest: IO Error: Cannot open file "{written}": '
                                  "No such file or directory")
        assert err.value.__cause__ is None and err.value.__suppress_context__
        assert not path.exists() and not written.is_symlink() and not tmp.exists()


def test_a_writer_that_fails_before_its_body_file_exists_raises_its_own_error(tmp_path):
    """The body file is deleted if there: a DuckDB error raised before it was made is not hidden by the cleanup."""
    gone = tmp_path / "no such directory"
    with pytest.raises(duckdb.IOException) as err:
        _write_json(gone / "m.json", _table(), {"k": 1})
    assert str(err.value) == f'IO Error: Cannot open file "{gone}/m.json.body": No such file or directory'
    with pytest.raises(duckdb.IOException) as err:
        _write_delimited(gone / "m.csv", _table(), {"k": 1}, ",", True)
    assert str(err.value) == f'IO Error: Cannot open file "{gone}/m.csv.body": No such file or directory'
    assert list(tmp_path.iterdir()) == []


def test_a_commented_table_keeps_carriage_returns_inside_its_fields(tmp_path):
    """A field holding CR or CRLF (quoted by DuckDB) is copied below the comment lines byte for byte."""
    table = pa.table({"SeriesInstanceUID": ["1.2", "1.3"], "note": ["a\r\nb", "c\rd"]})
    for delimiter, name in ((",", "m.csv"), ("\t", "m.tsv")):
        path = tmp_path / name
        _write_delimited(path, table, {"k": "v"}, delimiter, True)
        text = path.read_bytes().decode("utf-8")
        assert text.startswith("# k: v\n")
        assert _rows(text[len("# k: v\n"):], delimiter) == [["SeriesInstanceUID", "note"], ["1.2", "a\r\nb"],
                                                            ["1.3", "c\rd"]]


def test_the_size_of_series_with_no_known_size_is_zero(tmp_path):
    """`_provenance` on a hand-made table whose sizes are all null (stand-ins for the cohort and routes)."""
    table = pa.table({"SeriesInstanceUID": ["1.2", "1.3"], "StudyInstanceUID": ["1", "1"], "PatientID": ["p", "q"],
                      "collection_id": ["c", "c"], "license_short_name": [None, "CC BY 4.0"],
                      "source_DOI": ["10.1/x", None], "series_size_MB": pa.array([None, None], pa.float64())})
    cohort = SimpleNamespace(provenance=SimpleNamespace(to_dict=lambda: {"query": "q"}))
    routes = SimpleNamespace(policy="the policy")
    prov = _provenance(cohort, table, ManifestFormat.CSV, Provider.AWS, tmp_path / "m.csv", cite([], fetch=False),
                       routes)
    assert prov["size_MB"] == 0
    assert (prov["series"], prov["revisions"], prov["studies"], prov["patients"], prov["collections"]) == (2, 2, 1, 2, 1)
    assert prov["licenses"] == {"CC BY 4.0": 1, "unknown (earlier release)": 1}
    assert (prov["query"], prov["dicomweb_policy"], prov["download"]) == ("q", "the policy", "cohort download m.csv")
