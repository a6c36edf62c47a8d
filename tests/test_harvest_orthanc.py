"""The harvester against a real Orthanc DICOMweb server (and the fault-injection proxy in front of it).

Integration: harvest the session Orthanc's series and compare the Parquet with the
source files read by pydicom; read it with DuckDB, pandas and polars. CLI: harvest a
saved query's cohort (series with real IDC UIDs) from a DICOMweb URL, query it with
``cohort sql --harvest`` joined to ``index``. Robustness: faults injected by a proxy,
``kill -9`` and Ctrl-C of the CLI, then a rerun that completes with no duplicates.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pydicom
import pytest

from cohort import custom
from cohort.harvest import FINAL_STATUSES, HarvestStore, harvest, open_harvest
from cohort.retry import RetryPolicy

pytestmark = pytest.mark.orthanc

COHORT = [sys.executable, "-m", "cohort.cli"]
#: A saved query and its parameters: 40 CT series of a real IDC collection (v25).
QUERY = ["series_by_collection", "-p", "collection_id=cmb_aml", "-p", "modality=CT"]
INSTANCES_PER_SERIES = 3
FAST = RetryPolicy(timeout=10, max_attempts=6, backoff_base=0.05, backoff_max=0.5, retry_after_max=1)


def _series_of(orthanc):
    """(study, series, source paths) of every series the session Orthanc holds."""
    return [(r.StudyInstanceUID, r.SeriesInstanceUID, [Path(p) for p in r.paths]) for r in orthanc.series]


def _read_sources(paths):
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def _value(ds, keyword):
    if keyword not in ds or ds[keyword].value in (None, ""):
        return None
    value = ds[keyword].value
    if keyword == "ImageType":
        return [str(v) for v in (value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value])]
    return int(value)


# -- integration: the session Orthanc -----------------------------------------
def test_harvest_matches_the_source_files(orthanc, tmp_path):
    series = _series_of(orthanc)
    endpoint = custom(orthanc.dicomweb_url)
    result = harvest([(st, se) for st, se, _ in series], tmp_path, endpoint, workers=4, rate=None,
                     policy=FAST, progress=False)
    assert result.by_status == {"ok": len(series)}, result
    table = HarvestStore(tmp_path).read_instances().to_pylist()
    rows = {r["SOPInstanceUID"]: r for r in table}
    assert len(rows) == len(table)  # no duplicates
    expected = {}
    for study, se, paths in series:
        for ds in _read_sources(paths):
            expected[ds.SOPInstanceUID] = (study, se, ds)
    assert set(rows) == set(expected)
    for sop, (study, se, ds) in expected.items():
        row = rows[sop]
        assert (row["StudyInstanceUID"], row["SeriesInstanceUID"], row["Modality"]) == (study, se, ds.Modality)
        for keyword in ("Rows", "Columns", "NumberOfFrames", "TotalPixelMatrixColumns", "TotalPixelMatrixRows"):
            assert row[keyword] == _value(ds, keyword), (sop, keyword)
        assert row["ImageType"] == _value(ds, "ImageType"), sop
    sm = [r for r in rows.values() if r["Modality"] == "SM" and r["SpecimenIdentifier"]]
    assert sm and all(r["OpticalPathIdentifier"] for r in sm)
    # the same data through DuckDB, pandas and polars
    import pandas as pd
    import polars as pl

    inst = str(tmp_path / "instances" / "*.parquet")
    assert duckdb.sql(f"SELECT count(DISTINCT SOPInstanceUID) FROM read_parquet('{inst}')").fetchone()[0] == len(rows)
    assert len(pd.read_parquet(tmp_path / "instances")) == len(rows)
    assert pl.scan_parquet(inst).select(pl.len()).collect().item() == len(rows)
    assert pl.read_parquet(tmp_path / "log" / "*.parquet")["status"].to_list() == ["ok"] * len(series)


def test_light_pass_and_unknown_series(orthanc, tmp_path):
    study, se, paths = _series_of(orthanc)[0]
    endpoint = custom(orthanc.dicomweb_url)
    result = harvest([(study, se), (study, "1.2.3.4.5.6.7.8.9")], tmp_path, endpoint, light=True,
                     rate=None, policy=FAST, progress=False)
    assert result.by_status == {"ok": 1, "empty": 1}  # QIDO answers [] where WADO answers 404
    rows = HarvestStore(tmp_path).read_instances(["SOPInstanceUID", "Rows"]).to_pylist()
    assert {r["SOPInstanceUID"] for r in rows} == {ds.SOPInstanceUID for ds in _read_sources(paths)}
    assert all(r["Rows"] for r in rows)


#: The fault plan: for the 1st, 2nd, ... series asked for, the faults of its 1st, 2nd, ... attempt.
#: With 2 attempts a request, the first three series fail (and how), the next three recover.
FAULT_PLAN = [["429", "503"], ["reset", "delay"], ["truncate", "truncate"], ["503"], ["reset"], ["delay"]]
FAULT_OUTCOME = ["http_error", "timeout", "malformed", "ok", "ok", "ok"]


def test_fault_injection_then_rerun_completes(orthanc, tmp_path):
    """Every fault kind occurs, as often as planned, whatever the number of series the server holds
    (6 generated ones, more with ../shared/realdata) and whatever the order the workers ask in."""
    from tests.support.proxy import KINDS, FaultProxy

    series = [(st, se) for st, se, _ in _series_of(orthanc)]
    assert len(series) >= len(FAULT_PLAN)
    policy = RetryPolicy(timeout=1.0, max_attempts=2, backoff_base=0.05, backoff_max=0.2, retry_after_max=0.3)
    with FaultProxy(orthanc.url, per_target=FAULT_PLAN, delay=3.0, retry_after=1, match="/metadata$") as proxy:
        first = harvest(series, tmp_path, custom(proxy.dicomweb_url), workers=4, rate=None, policy=policy,
                        progress=False)
    planned = Counter(kind for kinds in FAULT_PLAN for kind in kinds)
    assert set(planned) == set(KINDS) - {"pass", "401"}  # 401 stops a run: tests/test_harvest_requests.py
    assert {k: n for k, n in proxy.counts.items() if k != "pass"} == planned, proxy.counts
    expected = {target.split("/series/")[1].split("/")[0]: FAULT_OUTCOME[i] if i < len(FAULT_OUTCOME) else "ok"
                for target, i in proxy.targets.items()}
    log = HarvestStore(tmp_path).read_log().to_pylist()
    assert len(log) == len(series)
    assert {r["SeriesInstanceUID"]: r["status"] for r in log} == expected  # every series: data or reason
    failed = [r for r in log if r["status"] != "ok"]
    assert len(failed) == 3 and all(r["error"] and r["attempts"] == 2 for r in failed)
    assert first.by_status == dict(Counter(expected.values())) and first.failed == 3
    ok = {r["SeriesInstanceUID"] for r in log if r["status"] == "ok"}
    harvested = HarvestStore(tmp_path).read_instances(["SeriesInstanceUID"]).column(0).to_pylist()
    assert set(harvested) == ok
    second = harvest(series, tmp_path, custom(orthanc.dicomweb_url), rate=None, policy=FAST, progress=False)
    assert second.skipped == first.ok and second.failed == 0
    _assert_complete_without_duplicates(tmp_path, {se for _, se in series}, orthanc=orthanc)


# -- the CLI, real IDC UIDs, kill -9 and Ctrl-C -----------------------------------
@pytest.fixture(scope="module")
def idc_orthanc(tmp_path_factory, catalog):
    """An Orthanc holding the 40 CT series of QUERY, under their real IDC UIDs (pixels from pydicom's CT_small)."""
    from tests.support.data import bulk_series
    from tests.support.orthanc import Orthanc, require_orthanc

    require_orthanc()
    rows = catalog.sql(
        "SELECT StudyInstanceUID, SeriesInstanceUID FROM index "
        "WHERE collection_id = 'cmb_aml' AND Modality = 'CT'").to_pylist()
    assert len(rows) == 40
    uids = [(r["StudyInstanceUID"], r["SeriesInstanceUID"]) for r in rows]
    records = bulk_series(len(uids), INSTANCES_PER_SERIES, tmp_path_factory.mktemp("idc_series"), uids=uids)
    files = [p for r in records for p in r.paths]
    with Orthanc() as server:
        server.upload_many(files)
        server.idc_series = {r["SeriesInstanceUID"] for r in rows}
        server.idc_uids = uids
        yield server


def _cli(*args, **kwargs):
    return subprocess.run([*COHORT, *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_cli_harvest_a_saved_query_and_query_it_with_sql(idc_orthanc, tmp_path):
    out = tmp_path / "h"
    run = _cli("harvest", *QUERY, "-o", str(out), "--url", idc_orthanc.dicomweb_url, "--no-progress",
               "--workers", "4", "--rate", "100", "--by-series")  # the bytes below are those of series bodies
    assert run.returncode == 0, run.stderr
    assert "40 series" in run.stderr and "ok 40" in run.stderr and "120 instances" in run.stderr
    joined = _cli("sql", "--harvest", str(out), "-f", "csv",
                  "SELECT i.collection_id, count(DISTINCT h.SeriesInstanceUID) AS series, count(*) AS instances "
                  "FROM harvest_instances h JOIN index i USING (SeriesInstanceUID) GROUP BY 1")
    assert joined.returncode == 0, joined.stderr
    assert joined.stdout.strip().splitlines()[1:] == ["cmb_aml,40,120"]
    status = _cli("harvest-status", str(out), "-f", "csv")
    # the bytes column: the metadata bodies of the 40 series, fetched here straight from Orthanc
    import requests

    with requests.Session() as session:
        body_bytes = sum(
            len(session.get(f"{idc_orthanc.dicomweb_url}/studies/{study}/series/{series}/metadata",
                            headers={"Accept": "application/dicom+json"}, timeout=30).content)
            for study, series in idc_orthanc.idc_uids)
    assert body_bytes > 40 * 1000
    assert status.stdout.strip().splitlines()[1:] == [f"ok,True,40,120,{body_bytes}"]


def test_cli_harvests_a_cohort_of_whole_studies_a_study_a_request(idc_orthanc, tmp_path):
    """QUERY's 40 series are 10 whole studies of the index: one request a study, the same instances and text
    as series by series, and each series' bytes are its instances' text."""
    by_study, by_series = tmp_path / "study", tmp_path / "series"
    for out, option in ((by_study, []), (by_series, ["--by-series"])):
        run = _cli("harvest", *QUERY, "-o", str(out), "--url", idc_orthanc.dicomweb_url, "--no-progress",
                   "--no-rate-limit", *option)
        assert run.returncode == 0 and "ok 40" in run.stderr, run.stderr
    studies = {se: st for st, se in idc_orthanc.idc_uids}
    assert len(set(studies.values())) == 10
    log = {r["SeriesInstanceUID"]: r for r in HarvestStore(by_study).read_log().to_pylist()}
    assert {se: r["url"] for se, r in log.items()} == {
        se: f"{idc_orthanc.dicomweb_url}/studies/{st}/metadata" for se, st in studies.items()}
    text = {}
    for out in (by_study, by_series):
        rows = HarvestStore(out).read_instances(["SOPInstanceUID", "SeriesInstanceUID", "json"]).to_pylist()
        text[out] = {r["SOPInstanceUID"]: (r["SeriesInstanceUID"], r["json"]) for r in rows}
        assert len(text[out]) == len(rows) == 120
    assert text[by_study] == text[by_series]
    for se, row in log.items():
        assert row["bytes"] == sum(len(t) for s, t in text[by_study].values() if s == se)


def test_cli_exits_3_when_series_are_left_failed(idc_orthanc, tmp_path):
    from tests.support.proxy import FaultProxy

    out = tmp_path / "h"
    with FaultProxy(idc_orthanc.url, per_target=[["503"]], match="/metadata$") as proxy:
        run = _cli("harvest", *QUERY, "-o", str(out), "--url", proxy.dicomweb_url, "--no-progress", "--retries", "0",
                   "--no-rate-limit", "--by-series")  # by study, a failed study is asked series by series
    assert run.returncode == 3, run.stderr
    assert "ok 39, http_error 1" in run.stderr and "Incomplete: 1 series failed (http_error 1)" in run.stderr
    rerun = _cli("harvest", *QUERY, "-o", str(out), "--url", idc_orthanc.dicomweb_url, "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert "39 already complete; this run: ok 1" in rerun.stderr


def test_cli_reasks_series_not_found_elsewhere_and_with_retry(idc_orthanc, orthanc_factory, tmp_path):
    empty, out = orthanc_factory(), str(tmp_path / "h")
    first = _cli("harvest", *QUERY, "-o", out, "--url", empty.dicomweb_url, "--no-progress", "--no-rate-limit")
    assert first.returncode == 0 and "this run: not_found 40" in first.stderr, first.stderr
    again = _cli("harvest", *QUERY, "-o", out, "--url", empty.dicomweb_url, "--no-progress")
    assert "40 already complete; this run: nothing to do" in again.stderr, again.stderr
    retried = _cli("harvest", *QUERY, "-o", out, "--url", empty.dicomweb_url, "--no-progress", "--no-rate-limit",
                   "--retry", "not_found")
    assert "0 already complete; this run: not_found 40" in retried.stderr, retried.stderr
    moved = _cli("harvest", *QUERY, "-o", out, "--url", idc_orthanc.dicomweb_url, "--no-progress", "--no-rate-limit")
    assert moved.returncode == 0 and "0 already complete; this run: ok 40" in moved.stderr, moved.stderr
    _assert_complete_without_duplicates(out, idc_orthanc.idc_series, per_series=INSTANCES_PER_SERIES)


def test_catalog_views_join_index(idc_orthanc, tmp_path):
    from cohort import Catalog

    catalog = Catalog(download=False)  # its own: open_harvest widens the sandbox to tmp_path
    harvest(catalog_cohort(catalog), tmp_path, custom(idc_orthanc.dicomweb_url), rate=None, progress=False)
    open_harvest(catalog, tmp_path)
    got = catalog.sql(
        "SELECT i.collection_id, count(*) AS n, count(DISTINCT h.SOPInstanceUID) AS sops FROM harvest_instances h "
        "JOIN index i USING (SeriesInstanceUID) GROUP BY 1").to_pylist()
    assert got == [{"collection_id": "cmb_aml", "n": 40 * INSTANCES_PER_SERIES, "sops": 40 * INSTANCES_PER_SERIES}]
    assert catalog.sql("SELECT count(*) AS n FROM harvest_series WHERE status = 'ok'").to_pylist()[0]["n"] == 40
    assert catalog.sql("SELECT count(*) AS n FROM harvest_log").to_pylist()[0]["n"] == 40


def test_harvest_a_coverage_report(idc_orthanc, tmp_path, catalog):
    from cohort.coverage import route

    report = route(catalog_cohort(catalog), custom(idc_orthanc.dicomweb_url, name="orthanc"))
    result = harvest(report, tmp_path, rate=None, progress=False)
    assert result.by_status == {"ok": 40} and result.instances == 40 * INSTANCES_PER_SERIES
    assert set(HarvestStore(tmp_path).read_log(["endpoint"]).column(0).to_pylist()) == {"orthanc"}


def catalog_cohort(catalog):
    from cohort import Cohort

    return Cohort.from_query("series_by_collection", {"collection_id": "cmb_aml", "modality": "CT"}, catalog=catalog)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_cli_run_resumes_without_duplicates(idc_orthanc, tmp_path, sig):
    from tests.support.proxy import FaultProxy

    out = tmp_path / "h"
    with FaultProxy(idc_orthanc.url, latency=0.25) as slow:
        proc = subprocess.Popen(
            [*COHORT, "harvest", *QUERY, "-o", str(out), "--url", slow.dicomweb_url, "--workers", "2",
             "--no-rate-limit", "--flush-seconds", "0", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(list((out / "log").glob("*.parquet"))) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=30)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr and "run the same command again" in stderr
        assert stderr.strip().splitlines()[-1] == "Interrupted." and "Traceback" not in stderr
    assert "taking over" not in stderr
    done_before = HarvestStore(out).completed()  # only committed series count; no lock needed to read
    assert 0 < len(done_before) < 40
    rerun = _cli("harvest", *QUERY, "-o", str(out), "--url", idc_orthanc.dicomweb_url, "--no-progress",
                 "--no-rate-limit")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(done_before)} already complete" in rerun.stderr
    if sig == signal.SIGKILL:  # the killed run's lock file is left; the kernel dropped its lock
        assert f"taking over the harvest lock {out / 'harvest.lock'}" in rerun.stderr
    _assert_complete_without_duplicates(out, idc_orthanc.idc_series, per_series=INSTANCES_PER_SERIES)


def _assert_complete_without_duplicates(out, series, orthanc=None, per_series=None):
    store = HarvestStore(out)
    for kind in ("instances", "log"):  # no part left that no commit lists
        assert set(store.parts(kind)) == set((Path(out) / kind).glob("*.parquet"))
    assert store.completed() == set(series)
    sops = store.read_instances(["SeriesInstanceUID", "SOPInstanceUID"]).to_pylist()
    assert len(sops) == len({r["SOPInstanceUID"] for r in sops}), "duplicate SOPInstanceUIDs"
    if per_series:
        assert len(sops) == per_series * len(series)
    for part in store.parts("instances"):
        assert pq.read_schema(part).names == pq.read_schema(store.parts("instances")[0]).names
    statuses = {r["status"] for r in store.read_log(["status"]).to_pylist()}
    assert statuses <= set(FINAL_STATUSES) | {"http_error", "timeout", "malformed"}

