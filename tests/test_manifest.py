"""Manifests: every format round-trips over random cohorts of the real index, idc-index's own
manifest parser accepts our s5cmd manifests, older releases reopen, bad files fail with file:line.

Portal-format inputs below are written to the IDC Portal's documented format (its
"Cohort manifests" page and export dialog: s5cmd header comments, CSV/TSV with a free-text
header and the columns collection_id, SeriesInstanceUID, source_DOI, idc_version,
PatientID, StudyInstanceUID, crdc_study_uuid, crdc_series_uuid, gcs_url, aws_url; JSON
without header) and to idc-index's parser; no real Portal export file was available here.
"""

from __future__ import annotations

from collections import Counter

import json

import duckdb
import idc_index_data
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohort import Cohort, ManifestError, Provenance
from cohort.cli import cli
from cohort.coverage import route
from cohort.endpoints import idc_proxy
from cohort.manifest import COLUMNS, PARQUET_KEY, manifest_table, plan_download, read_manifest, write_manifest

#: The DICOMweb tutorial's pancreas slide: current revision since v10, an older one (v8-v9).
SLIDE = "1.3.6.1.4.1.5962.99.1.3380245274.1362068963.1639762817818.2.0"
SLIDE_V8_UUID = "99171fc7-7652-42df-9254-ad78c685771b"
SLIDE_UUID = "1cac0ac8-f1b1-4566-84e0-37716cf63939"
FORMATS = ["s5cmd", "csv", "tsv", "json", "parquet"]
PROVENANCE_KEYS = {
    "idc_version", "idc_index_data_version", "package_version", "query_name", "sql", "params", "sha256",
    "created", "manifest_created", "series", "size_MB", "licenses", "source_DOIs", "citations", "download",
    "dicomweb_policy",
}

# Each bucket is filtered before it is sampled: DuckDB samples a FROM before its WHERE, so sampling all of
# `cur` and keeping one bucket could leave a small bucket (idc-open-data-two) with no row at all.
_POOL_SQL = """
WITH cur AS (SELECT SeriesInstanceUID, crdc_series_uuid, aws_bucket FROM index),
prior_only AS (
    SELECT SeriesInstanceUID, crdc_series_uuid FROM prior_versions_index
    WHERE SeriesInstanceUID NOT IN (SELECT SeriesInstanceUID FROM index)
    QUALIFY row_number() OVER (PARTITION BY SeriesInstanceUID ORDER BY max_idc_version DESC) = 1
),
revised AS (
    SELECT p.SeriesInstanceUID, p.crdc_series_uuid, c.crdc_series_uuid AS default_uuid
    FROM prior_versions_index p JOIN cur c USING (SeriesInstanceUID)
)
(SELECT SeriesInstanceUID, crdc_series_uuid, crdc_series_uuid AS default_uuid, 'open' AS kind
 FROM (FROM cur WHERE aws_bucket = 'idc-open-data') USING SAMPLE reservoir(1500 ROWS) REPEATABLE (7))
UNION ALL
(SELECT SeriesInstanceUID, crdc_series_uuid, crdc_series_uuid, 'cr'
 FROM (FROM cur WHERE aws_bucket = 'idc-open-data-cr') USING SAMPLE reservoir(300 ROWS) REPEATABLE (7))
UNION ALL
(SELECT SeriesInstanceUID, crdc_series_uuid, crdc_series_uuid, 'two'
 FROM (FROM cur WHERE aws_bucket = 'idc-open-data-two') USING SAMPLE reservoir(300 ROWS) REPEATABLE (7))
UNION ALL
(SELECT SeriesInstanceUID, crdc_series_uuid, crdc_series_uuid, 'prior-only'
 FROM prior_only USING SAMPLE reservoir(300 ROWS) REPEATABLE (7))
UNION ALL
(SELECT SeriesInstanceUID, crdc_series_uuid, default_uuid, 'revised'
 FROM revised USING SAMPLE reservoir(200 ROWS) REPEATABLE (7))
"""


@pytest.fixture(scope="module")
def pool(catalog) -> list[dict]:
    """A few thousand real series: every bucket, prior-only series, and old revisions of current ones."""
    rows = catalog.sql(_POOL_SQL).to_pylist()
    assert {r["kind"] for r in rows} == {"open", "cr", "two", "prior-only", "revised"}
    return rows


@pytest.fixture(scope="module")
def pool_routes(pool, catalog):
    """The coverage routes of the whole pool, computed once: a lookup for any cohort drawn from it."""
    return route(Cohort.from_uids([r["SeriesInstanceUID"] for r in pool], catalog), "proxy")


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    return tmp_path_factory.mktemp("manifests")


@pytest.fixture(scope="session")
def idc_client():
    """idc-index's client (~15 s, 3 GB): made once, only for checking our manifests with its parser."""
    idc_index = pytest.importorskip("idc_index")
    return idc_index.IDCClient()


def _cohort(rows: list[dict], pinned: bool, catalog) -> Cohort:
    columns = {"SeriesInstanceUID": pa.array([r["SeriesInstanceUID"] for r in rows], pa.string())}
    if pinned:
        columns["crdc_series_uuid"] = pa.array([r["crdc_series_uuid"] for r in rows], pa.string())
    return Cohort(pa.table(columns), Provenance.make(catalog, query_name="hypothesis"), catalog)


def _pairs(cohort: Cohort) -> set[tuple[str, str]]:
    return {(r["SeriesInstanceUID"], r["crdc_series_uuid"])
            for r in cohort.result.select(["SeriesInstanceUID", "crdc_series_uuid"]).to_pylist()}


@pytest.mark.parametrize("provider", ["aws", "gcs"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_random_cohorts(fmt, provider, pool, pool_routes, catalog, outdir):
    path = outdir / f"roundtrip_{provider}.{fmt}"

    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=st.lists(st.sampled_from(pool), min_size=1, max_size=30, unique_by=lambda r: r["SeriesInstanceUID"]),
           pinned=st.booleans())
    def roundtrip(rows, pinned):
        cohort = _cohort(rows, pinned, catalog)
        info = write_manifest(cohort, path, provider=provider, routes=pool_routes, citations=False)
        back = read_manifest(path, catalog)
        uuid = "crdc_series_uuid" if pinned else "default_uuid"
        expected = {(r["SeriesInstanceUID"], r[uuid]) for r in rows}
        assert _pairs(back) == expected
        assert info.series == len(rows) == len(back)
        # a pinned old revision, or a series that left the release, is not current
        current = {r[uuid] for r in rows if r["kind"] in ("open", "cr", "two") or not pinned and r["kind"] == "revised"}
        for r in back.result.to_pylist():
            assert r["in_current_release"] == (r["crdc_series_uuid"] in current)
            assert r["source_release"] == (f"v{r['max_idc_version']}" if r["min_idc_version"] == r["max_idc_version"]
                                           else f"v{r['min_idc_version']}-v{r['max_idc_version']}")
            assert r["in_current_release"] == (r["max_idc_version"] == catalog.idc_version)

    roundtrip()


def test_s5cmd_manifest_lines_and_header(pool, catalog, outdir):
    rows = [next(r for r in pool if r["kind"] == k) for k in ("open", "cr", "two", "prior-only")]
    cohort = _cohort(rows, True, catalog)
    aws = write_manifest(cohort, outdir / "form_aws.s5cmd", citations=False)
    gcs = write_manifest(cohort, outdir / "form_gcs.s5cmd", provider="gcs", citations=False)
    aws_lines = [ln for ln in aws.path.read_text().splitlines() if not ln.startswith("#")]
    gcs_lines = [ln for ln in gcs.path.read_text().splitlines() if not ln.startswith("#")]
    # expected from the index files' own series_aws_url column, read with pyarrow (not our bucket join)
    urls = {}
    for parquet in (idc_index_data.IDC_INDEX_PARQUET_FILEPATH, idc_index_data.PRIOR_VERSIONS_INDEX_PARQUET_FILEPATH):
        for r in pq.read_table(parquet, columns=["crdc_series_uuid", "series_aws_url"]).to_pylist():
            urls.setdefault(r["crdc_series_uuid"], r["series_aws_url"])
    assert sorted(aws_lines) == sorted("cp " + urls[r["crdc_series_uuid"]] + " ." for r in rows)
    gcs_buckets = {ln.split("/")[2] for ln in gcs_lines}
    assert gcs_buckets & {"idc-open-cr", "idc-open-idc1"} == {"idc-open-cr", "idc-open-idc1"}
    assert not gcs_buckets & {"idc-open-data-cr", "idc-open-data-two"}
    assert f"# s5cmd --no-sign-request --endpoint-url https://s3.amazonaws.com run {aws.path.name}" \
        in aws.path.read_text()
    assert "--endpoint-url https://storage.googleapis.com run form_gcs.s5cmd" in gcs.command


@pytest.mark.parametrize("provider", ["aws", "gcs"])
def test_idc_index_parser_accepts_our_s5cmd_manifests(provider, pool, catalog, outdir, idc_client):
    rows = [r for k in ("open", "cr", "two", "prior-only", "revised") for r in pool if r["kind"] == k][::40]
    rows = list({r["SeriesInstanceUID"]: r for r in rows}.values())
    info = write_manifest(_cohort(rows, True, catalog), outdir / f"idc_{provider}.s5cmd", provider=provider,
                          citations=False)
    # validate_manifest=True would list a GCS bucket over the network to pick the endpoint;
    # offline, the AWS manifest is fully validated and the GCS one parsed and resolved.
    size, endpoint, tmp_manifest, _, resolved = idc_client._validate_update_manifest_and_get_download_size(
        manifestFile=str(info.path), downloadDir=str(outdir / "dl"), validate_manifest=provider == "aws",
        use_s5cmd_sync=False, dirTemplate=idc_client.DOWNLOAD_HIERARCHY_DEFAULT)
    assert len(resolved) == len(rows) and resolved["index_crdc_series_uuid"].notna().all()
    assert set(resolved["index_crdc_series_uuid"]) == {r["crdc_series_uuid"] for r in rows}
    assert endpoint == f"https://{'s3.amazonaws.com' if provider == 'aws' else 'storage.googleapis.com'}"
    assert size == pytest.approx(info.size_MB, abs=0.02)
    tmp_manifest.unlink()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_manifest_of_an_older_release_reopens_with_that_revision(fmt, catalog, outdir):
    old = outdir / "old.s5cmd"
    old.write_text(f"# written against IDC v9\ncp s3://idc-open-data/{SLIDE_V8_UUID}/* .\n")
    cohort = read_manifest(old, catalog)
    row = cohort.result.to_pylist()[0]
    assert (row["SeriesInstanceUID"], row["crdc_series_uuid"], row["source_release"]) == (SLIDE, SLIDE_V8_UUID, "v8-v9")
    assert row["in_current_release"] is False and row["manifest_line"] == 2
    assert cohort.to_arrow().column("in_current_release").to_pylist() == [True]  # the series itself lives on
    again = read_manifest(write_manifest(cohort, outdir / f"old_again.{fmt}", citations=False).path, catalog)
    assert _pairs(again) == {(SLIDE, SLIDE_V8_UUID)}
    assert again.result.column("source_release").to_pylist() == ["v8-v9"]


def test_dicomweb_urls_follow_the_coverage_route_of_each_revision(catalog):
    old = Cohort(pa.table({"SeriesInstanceUID": [SLIDE, SLIDE], "crdc_series_uuid": [SLIDE_V8_UUID, SLIDE_UUID]}),
                 Provenance.make(catalog), catalog)
    store_v9 = "https://healthcare.googleapis.com/v1/projects/nci-idc-data/locations/us-central1/datasets/idc/" \
               "dicomStores/idc-store-v9/dicomWeb"
    pinned = {r["crdc_series_uuid"]: r for r in manifest_table(old, routes=route(old, 9)).to_pylist()}
    assert pinned[SLIDE_V8_UUID]["dicomweb_endpoint"] == "idc-store-v9"
    assert pinned[SLIDE_V8_UUID]["dicomweb_series_url"].startswith(store_v9 + "/studies/")
    assert pinned[SLIDE_V8_UUID]["viewer_url"] is None  # the IDC viewer shows the current release only
    assert pinned[SLIDE_UUID]["dicomweb_series_url"] is None  # the v9 route is not this revision's
    proxy = {r["crdc_series_uuid"]: r for r in manifest_table(old, routes=route(old, "proxy")).to_pylist()}
    assert proxy[SLIDE_UUID]["dicomweb_series_url"] == idc_proxy().series_url(
        "2.25.25332367070577326639024635995523878122", SLIDE)
    assert proxy[SLIDE_UUID]["viewer_url"].startswith("https://viewer.imaging.datacommons.cancer.gov/slim/")
    assert proxy[SLIDE_V8_UUID]["dicomweb_series_url"] is None


def test_our_csv_reads_with_pandas_and_every_format_carries_provenance(catalog, outdir):
    cohort = Cohort.from_query("series_by_collection", catalog=catalog, collection_id="cmb_gec", modality="SM")
    infos = {fmt: write_manifest(cohort, outdir / f"prov.{fmt}", citations=False) for fmt in FORMATS}
    df = pd.read_csv(infos["csv"].path)  # no options: a plain table, provenance in the sidecar
    assert list(df.columns) == list(COLUMNS) and len(df) == len(cohort)
    assert df["viewer_url"].str.startswith("https://viewer.imaging.datacommons.cancer.gov/slim/studies/").all()
    assert (df["dicomweb_series_url"].str.rsplit("/", n=1).str[1] == df["SeriesInstanceUID"]).all()
    assert len(pd.read_csv(infos["tsv"].path, sep="\t")) == len(cohort)
    assert duckdb.sql(f"SELECT count(*) FROM read_csv('{infos['tsv'].path}')").fetchone()[0] == len(cohort)
    commented = write_manifest(cohort, outdir / "prov_comments.csv", citations=False, comments=True)
    assert commented.path.read_text().startswith("# ")
    assert len(pd.read_csv(commented.path, comment="#")) == len(cohort)

    json_prov = json.loads(infos["json"].path.read_text())["provenance"]
    parquet_prov = json.loads(pq.read_schema(infos["parquet"].path).metadata[PARQUET_KEY])
    sidecar_prov = read_manifest(infos["csv"].path, catalog).provenance.params["manifest_provenance"]
    (outdir / "prov_comments.csv.provenance.json").unlink()  # read the `#` lines alone
    header_prov = read_manifest(commented.path, catalog).provenance.params["manifest_provenance"]
    text_keys = PROVENANCE_KEYS - {"citations"} | {"citation_status", "cite"}  # one `# cite:` line per DOI
    for prov, keys in ((json_prov, PROVENANCE_KEYS), (parquet_prov, PROVENANCE_KEYS),
                       (sidecar_prov, PROVENANCE_KEYS), (header_prov, text_keys)):
        assert keys <= set(prov)
        assert prov["params"] == {"collection_id": "cmb_gec", "modality": "SM"}
        assert prov["sha256"] == cohort.provenance.sha256 and prov["query_name"] == "series_by_collection"
        assert prov["series"] == len(cohort) and prov["idc_version"] == catalog.idc_version
        assert prov["size_MB"] == pytest.approx(cohort.counts.size_gb * 1000, abs=0.05)
    assert header_prov["sql"] == cohort.provenance.sql  # multi-line SQL survives a one-line header
    assert json_prov["citations"]["summary"].endswith("(fetching not requested)")


def test_portal_and_idc_index_manifests_are_read(catalog, outdir):
    rows = catalog.sql(
        "SELECT * FROM index WHERE aws_bucket = 'idc-open-data' ORDER BY SeriesInstanceUID LIMIT 3").to_pylist()
    uids = {r["SeriesInstanceUID"] for r in rows}
    portal_csv = outdir / "cohort_996_20230504.csv"
    lines = ["Manifest for cohort: my cohort", "User: someone@example.org",
             "Filters: Modality: CT", "Date generated: 05/04/2023", f"Total records found: {len(rows)}", "",
             "collection_id,SeriesInstanceUID,source_DOI,idc_version,PatientID,StudyInstanceUID,"
             "crdc_study_uuid,crdc_series_uuid,gcs_url,aws_url"]
    lines += [f"{r['collection_id']},{r['SeriesInstanceUID']},{r['source_DOI']},25,{r['PatientID']},"
              f"{r['StudyInstanceUID']},,{r['crdc_series_uuid']},gs://idc-open-data/{r['crdc_series_uuid']}/*,"
              f"s3://idc-open-data/{r['crdc_series_uuid']}/*" for r in rows]
    portal_csv.write_text("\n".join(lines) + "\n")
    portal_json = outdir / "cohort.json"
    portal_json.write_text(json.dumps([{"SeriesInstanceUID": r["SeriesInstanceUID"]} for r in rows], indent=2))
    json_lines = outdir / "cohort_bq.json"
    json_lines.write_text("\n".join(json.dumps({"series_uuid": r["crdc_series_uuid"]}) for r in rows) + "\n")
    portal_gcs = outdir / "cohorts_996_20230504_80755_gcs.s5cmd"
    portal_gcs.write_text(
        "# To download the files in this manifest, first install s5cmd (https://github.com/peak/s5cmd),\n"
        "# then run the following command:\n"
        "# s5cmd --no-sign-request --endpoint-url https://storage.googleapis.com run "
        "cohorts_996_20230504_80755_gcs.s5cmd\n"
        + "".join(f"cp s3://public-datasets-idc/{r['crdc_series_uuid']}/* .\n" for r in rows))
    idc_index_style = outdir / "idc_index.txt"
    idc_index_style.write_text("".join(
        f'cp --show-progress s3://idc-open-data/{r["crdc_series_uuid"]}/* "/data/my dir/{r["PatientID"]}"\n'
        for r in rows))
    for path in (portal_csv, portal_json, json_lines, portal_gcs, idc_index_style):
        cohort = read_manifest(path, catalog)
        assert set(cohort.series_uids) == uids, path.name
    assert read_manifest(portal_csv, catalog).provenance.params["manifest_provenance"]["preamble"][0] \
        == "Manifest for cohort: my cohort"
    assert read_manifest(portal_gcs, catalog).provenance.params["provider"] == "gcs"


def _write(outdir, name: str, text: str):
    path = outdir / name
    path.write_text(text)
    return path


def test_bad_manifests_fail_with_file_and_line(catalog, outdir):
    cur = catalog.sql("SELECT * FROM index WHERE aws_bucket = 'idc-open-data-cr' LIMIT 2").to_pylist()
    two = catalog.sql("SELECT * FROM index WHERE aws_bucket = 'idc-open-data-two' LIMIT 1").to_pylist()[0]
    ok = f"cp s3://idc-open-data-cr/{cur[0]['crdc_series_uuid']}/* .\n"
    cases = {
        "malformed.s5cmd": (f"# header\n{ok}cp s3://idc-open-data/not-a-folder .\n", 3, "expected `cp s3://"),
        "no_dest.s5cmd": (f"{ok}cp s3://idc-open-data-cr/{cur[1]['crdc_series_uuid']}/*\n", 2, "expected `cp s3://"),
        "not_uuid.s5cmd": (f"{ok}{ok}cp s3://idc-open-data/1.2.3/* .\n", 3, "is a UUID"),
        "unknown.s5cmd": (f"{ok}\ncp s3://idc-open-data/00000000-0000-4000-8000-000000000000/* .\n", 3,
                          "neither index nor prior_versions_index"),
        "wrong_bucket.s5cmd": (f"cp s3://idc-open-data/{cur[0]['crdc_series_uuid']}/* .\n", 1,
                               f"should be s3://idc-open-data-cr/{cur[0]['crdc_series_uuid']}/*"),
        "mixed.s5cmd": (f"{ok}cp s3://idc-open-idc1/{two['crdc_series_uuid']}/* .\n", 2, "mixes providers"),
        "mixed_header.s5cmd": ("# s5cmd --no-sign-request --endpoint-url https://storage.googleapis.com run x\n"
                               + ok, 2, "mixes providers"),
        "empty.s5cmd": ("# nothing here\n", None, "lists no series"),
        "fields.csv": ("# c\nSeriesInstanceUID,crdc_series_uuid\n"
                       f"{cur[0]['SeriesInstanceUID']},{cur[0]['crdc_series_uuid']}\n1.2.3\n", 4,
                       "1 fields, but the column header (line 2) has 2"),
        "noid.csv": (f"SeriesInstanceUID,PatientID\n{cur[0]['SeriesInstanceUID']},x\n,y\n", 3,
                     "neither SeriesInstanceUID nor crdc_series_uuid"),
        "noheader.csv": ("a,b\n1,2\n", 1, "no column header row"),
        "mismatch.tsv": (f"SeriesInstanceUID\tcrdc_series_uuid\n{cur[1]['SeriesInstanceUID']}\t"
                         f"{cur[0]['crdc_series_uuid']}\n", 2, "belongs to another series"),
        "syntax.json": ('{"series": [\n {"SeriesInstanceUID": "1.2"},\n {"SeriesInstanceUID" "1.3"}\n]}', 3,
                        "invalid JSON"),
        "notobject.json": ('{"provenance": {"series": 2}, "series": [\n {"SeriesInstanceUID": "'
                           + cur[0]["SeriesInstanceUID"] + '"},\n "1.2.3"\n]}', 3, "expected a series object"),
        "lines.jsonl": (json.dumps({"series_uuid": cur[0]["crdc_series_uuid"]}) + "\n{oops\n", 2,
                        "invalid JSON line"),
    }
    for name, (text, line, message) in cases.items():
        path = _write(outdir, name, text)
        with pytest.raises(ManifestError) as err:
            read_manifest(path, catalog)
        where = f"{path}:{line}: " if line else f"{path}: "
        assert str(err.value).startswith(where), (name, str(err.value))
        assert message in str(err.value), (name, str(err.value))
        assert err.value.line == line


def test_export_checks_its_input(catalog, outdir):
    info = write_manifest(Cohort.from_uids([SLIDE], catalog), outdir / "slide_gcs.s5cmd", provider="gcs",
                          citations=False)
    assert f"cp s3://idc-open-data/{SLIDE_UUID}/* ." in info.path.read_text()
    with pytest.raises(ManifestError, match="unknown manifest format 'xml'"):
        write_manifest(Cohort.from_uids([SLIDE], catalog), outdir / "x.xml", format="xml", citations=False)
    with pytest.raises(ManifestError, match="the cohort is empty"):
        write_manifest(Cohort.from_uids([], catalog), outdir / "empty.s5cmd", citations=False)
    other = catalog.sql("SELECT crdc_series_uuid FROM index WHERE SeriesInstanceUID <> $s LIMIT 1",
                        {"s": SLIDE}).column(0)[0].as_py()
    wrong = Cohort(pa.table({"SeriesInstanceUID": [SLIDE], "crdc_series_uuid": [other]}),
                   Provenance.make(catalog), catalog)
    with pytest.raises(ManifestError, match=f"1 series with a crdc_series_uuid that is not a revision.*{other}"):
        write_manifest(wrong, outdir / "wrong.csv", citations=False)


def test_cli_manifest_and_download_dry_run(catalog, outdir):
    runner = CliRunner()
    s5cmd = outdir / "cli.s5cmd"
    result = runner.invoke(cli, ["manifest", "series_by_collection", "-p", "collection_id=cmb_gec",
                                 "-p", "modality=SM", "-o", str(s5cmd), "--no-citations"])
    assert result.exit_code == 0, result.output
    n = len(Cohort.from_query("series_by_collection", catalog=catalog, collection_id="cmb_gec", modality="SM"))
    assert f"wrote {n:,} series" in result.output
    assert "download with: s5cmd --no-sign-request --endpoint-url https://s3.amazonaws.com run cli.s5cmd" \
        in result.output
    parquet = outdir / "cli.parquet"
    result = runner.invoke(cli, ["manifest", str(s5cmd), "-o", str(parquet), "--provider", "gcs", "--no-citations"])
    assert result.exit_code == 0, result.output
    assert len(read_manifest(parquet, catalog)) == n
    commented = outdir / "cli_comments.csv"  # --comments: Portal-style `#` provenance lines above the table
    for flags, starts in (([], "PatientID,collection_id,"), (["--comments"], "# ")):
        result = runner.invoke(cli, ["manifest", str(s5cmd), "-o", str(commented), "--no-citations", *flags])
        assert result.exit_code == 0, result.output
        assert commented.read_text().startswith(starts)
        assert len(pd.read_csv(commented, comment="#")) == n

    plan = plan_download(parquet, outdir / "dl", catalog)
    result = runner.invoke(cli, ["download", str(parquet), "--dry-run", "--dest", str(outdir / "dl")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"would download {n:,} series, {plan.size_MB / 1000:,.2f} GB from GCS " \
                                    f"into {(outdir / 'dl').resolve()}"
    assert not (outdir / "dl").exists()

    bad = _write(outdir, "cli_bad.s5cmd", "cp nothing .\n")
    result = runner.invoke(cli, ["download", str(bad), "--dry-run"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {bad}:1: not an s5cmd copy line")


def test_download_hands_idc_index_an_s5cmd_manifest_it_accepts(catalog, outdir, idc_client):
    cohort = Cohort.from_sql("SELECT SeriesInstanceUID FROM index WHERE collection_id = 'tcga_paad' "
                             "AND Modality = 'SM' ORDER BY SeriesInstanceUID LIMIT 4", catalog=catalog)
    csv_path = write_manifest(cohort, outdir / "to_download.csv", citations=False).path
    plan = plan_download(csv_path, outdir / "dl2", catalog)
    assert (plan.series, plan.size_MB) == (4, pytest.approx(cohort.counts.size_gb * 1000, abs=0.01))
    with plan.s5cmd_manifest() as s5cmd:  # what download() passes to IDCClient.download_from_manifest
        assert s5cmd.suffix == ".s5cmd" and s5cmd != csv_path
        size, endpoint, tmp_manifest, _, _ = idc_client._validate_update_manifest_and_get_download_size(
            manifestFile=str(s5cmd), downloadDir=str(outdir), validate_manifest=True, use_s5cmd_sync=False,
            dirTemplate=idc_client.DOWNLOAD_HIERARCHY_DEFAULT)
    tmp_manifest.unlink()
    assert not s5cmd.exists()
    assert size == pytest.approx(plan.size_MB, abs=0.01) and endpoint == "https://s3.amazonaws.com"


def test_parquet_manifest_with_broken_provenance_metadata_is_a_manifest_error(tmp_path, catalog):
    path = tmp_path / "m.parquet"
    table = pa.table({"SeriesInstanceUID": ["1.2.3"]}).replace_schema_metadata({PARQUET_KEY: b"{not json"})
    pq.write_table(table, path)
    with pytest.raises(ManifestError, match=r"m\.parquet: the Parquet metadata idc_cohort\.provenance is not JSON"):
        read_manifest(path, catalog)


def test_a_manifest_path_that_cannot_be_created_is_a_manifest_error(tmp_path, catalog):
    cohort = Cohort.from_sql("SELECT SeriesInstanceUID FROM index ORDER BY SeriesInstanceUID LIMIT 1", catalog=catalog)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(ManifestError, match="cannot write the manifest"):
        write_manifest(cohort, blocker / "sub" / "m.s5cmd", citations=False)


def test_a_row_naming_only_a_series_uid_resolves_to_its_current_revision(catalog, tmp_path):
    # revised series: in index and, with older revisions, in prior_versions_index
    revised = catalog.sql("SELECT i.SeriesInstanceUID, i.crdc_series_uuid FROM index i WHERE i.SeriesInstanceUID IN "
                          "(SELECT SeriesInstanceUID FROM prior_versions_index) ORDER BY 1 LIMIT 5").to_pylist()
    # series that left the release: the revision with the highest max_idc_version, picked here in Python
    prior = pq.read_table(catalog.store.path("prior_versions_index"),
                          columns=["SeriesInstanceUID", "crdc_series_uuid", "max_idc_version"]).to_pylist()
    current = set(catalog.sql("SELECT SeriesInstanceUID FROM index").column(0).to_pylist())
    newest: dict[str, tuple[int, str]] = {}
    for r in prior:
        if r["SeriesInstanceUID"] not in current:
            best = newest.get(r["SeriesInstanceUID"])
            if best is None or r["max_idc_version"] > best[0]:
                newest[r["SeriesInstanceUID"]] = (r["max_idc_version"], r["crdc_series_uuid"])
    revisions = Counter(p["SeriesInstanceUID"] for p in prior)
    left = sorted(u for u in newest if revisions[u] > 1)[:3]
    assert len(revised) == 5 and len(left) == 3
    path = tmp_path / "uids.csv"
    path.write_text("SeriesInstanceUID\n" + "".join(f"{u}\n" for u in [r["SeriesInstanceUID"] for r in revised] + left))
    got = _pairs(read_manifest(path, catalog))
    assert got == {(r["SeriesInstanceUID"], r["crdc_series_uuid"]) for r in revised} | {(u, newest[u][1]) for u in left}


def test_a_revision_listed_twice_in_prior_versions_index_is_one_row(catalog, tmp_path):
    # the same crdc_series_uuid in two rows of prior_versions_index (GCS bucket of v19, then of v20-v21)
    uuid = "da4fcde2-946c-4862-b4e1-865cf6a62d3c"
    rows = catalog.sql("SELECT * FROM prior_versions_index WHERE crdc_series_uuid = $u", {"u": uuid}).to_pylist()
    assert len(rows) == 2
    path = tmp_path / "twice.s5cmd"
    path.write_text(f"cp s3://idc-open-data/{uuid}/* .\n")
    back = read_manifest(path, catalog)
    assert len(back.result) == 1
    row = back.result.to_pylist()[0]
    assert (row["min_idc_version"], row["max_idc_version"]) == (min(r["min_idc_version"] for r in rows),
                                                                max(r["max_idc_version"] for r in rows))
    out = write_manifest(back, tmp_path / "again.s5cmd", citations=False)
    assert [ln for ln in out.path.read_text().splitlines() if not ln.startswith("#")] == [f"cp s3://idc-open-data/{uuid}/* ."]
