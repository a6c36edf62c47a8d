"""A study's series from one request (cohort/harvest/tasks.py, runner.py): which series are asked for together,
what each is logged as, and that every answer that is not a usable study answer ends each series as it would
have ended alone. Against the plan server (tests/support/plan_server.py): the requests it saw are the outcome.
"""

from __future__ import annotations

import json
import time

import duckdb
import pytest

from cohort import Cohort, custom
from cohort.errors import HarvestError
from cohort.harvest import HarvestStore, fetch_units, harvest, whole_studies
from cohort.harvest.tasks import SPLIT_INSTANCES, SeriesTask, Study, study_url
from tests.support.plan_server import NOW_RETRY, ONCE, STUDY, PlanServer, body, ct_series, instance, log_rows

A, B, C = (f"1.2.826.0.1.3680043.9.7433.8.{i}" for i in (1, 2, 3))
STUDY_PATH = f"/studies/{STUDY}/metadata"


def _series_path(series: str, study: str = STUDY) -> str:
    return f"/studies/{study}/series/{series}/metadata"


def _asked(server: PlanServer) -> list[str]:
    """The paths the harvest asked for, in order (not the probe's /studies)."""
    return [path for path, _, _ in server.requests if path != "/studies"]


def _sops(out) -> dict[str, str]:
    """SOPInstanceUID -> SeriesInstanceUID of the committed instances."""
    rows = HarvestStore(out).read_instances(["SOPInstanceUID", "SeriesInstanceUID"]).to_pylist()
    assert len(rows) == len({r["SOPInstanceUID"] for r in rows}), "an instance was written twice"
    return {r["SOPInstanceUID"]: r["SeriesInstanceUID"] for r in rows}


@pytest.mark.parametrize("flush_instances", [5000, 1], ids=["rows-at-the-end", "a-part-per-instance"])
def test_the_series_of_a_study_come_from_one_request_each_logged_with_its_share(tmp_path, flush_instances):
    series = {A: ct_series(A, 2), B: ct_series(B, 1), C: ct_series(C, 3)}
    series[C][1]["00280010"]["Value"] = [3_000_000_000]  # Rows beyond int32: a value that does not fit
    study_body = body([i for s in (A, B, C) for i in series[s]])
    started = time.monotonic()
    with PlanServer({STUDY_PATH: [(200, study_body)]}) as server:  # the series' own paths answer 404
        result = harvest([(STUDY, s) for s in (A, B, C)], tmp_path, server.url, workers=2, rate=None, policy=ONCE,
                         progress=False, by_study=True, flush_instances=flush_instances)
        assert _asked(server) == [STUDY_PATH]
    assert result.by_status == {"ok": 3} and result.instances == 6
    assert result.bytes == len(study_body)  # every byte read is counted once
    logs = log_rows(tmp_path)
    for uid, instances in series.items():
        row = logs[uid]
        assert (row["status"], row["url"], row["http_status"], row["attempts"], row["error"]) == (
            "ok", server.url + STUDY_PATH, 200, 1, None)
        assert (row["instances"], row["values_dropped"]) == (len(instances), 1 if uid == C else 0)
        assert row["bytes"] == sum(len(json.dumps(i)) for i in instances)  # its instances' text, as sent
        assert row["finished_at"] is not None and round(row["seconds"], 4) == row["seconds"]
        assert 0 < row["seconds"] <= time.monotonic() - started
    assert len({logs[s]["seconds"] for s in series}) == 1  # the study's request's
    assert _sops(tmp_path) == {i["00080018"]["Value"][0]: uid for uid, insts in series.items() for i in insts}
    text = HarvestStore(tmp_path).read_instances(["SOPInstanceUID", "json"]).to_pylist()
    assert {r["SOPInstanceUID"]: r["json"] for r in text} == {
        i["00080018"]["Value"][0]: json.dumps(i) for insts in series.values() for i in insts}


def test_other_series_are_dropped_and_a_wanted_series_the_answer_lacks_is_asked_alone(tmp_path):
    study_body = body(ct_series(A, 2) + ct_series(B, 2))  # B is not wanted; C is wanted but not in the answer
    plan = {STUDY_PATH: [(200, study_body)], _series_path(C): [(404, b"no such series")]}
    with PlanServer(plan) as server:  # C first, A (in parts of one instance) the only series found
        result = harvest([(STUDY, C), (STUDY, A)], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                         progress=False, by_study=True, flush_instances=1)
        assert _asked(server) == [STUDY_PATH, _series_path(C)]
    assert result.by_status == {"ok": 1, "not_found": 1}
    logs = log_rows(tmp_path)
    assert (logs[A]["status"], logs[A]["instances"]) == ("ok", 2)
    assert (logs[C]["status"], logs[C]["url"], logs[C]["error"]) == (
        "not_found", server.url + _series_path(C), "HTTP 404: no such series")
    assert sorted(_sops(tmp_path).values()) == [A, A]
    assert result.bytes == len(study_body) + len(b"no such series")


@pytest.mark.parametrize("answer", [
    (404, b"no such study"),
    (400, b"study metadata is not supported"),
    (200, body([instance("CT", A, "9.1"), {k: v for k, v in instance("CT", B, "9.2").items() if k != "0020000E"}])),
    (200, b'{"not": "an array"'),
    ("cut", body(ct_series(A, 3) + ct_series(B, 3)), 30_000),  # two instances whole, a part each
], ids=["404", "400", "an-instance-without-its-series", "malformed", "cut-on-every-attempt"])
def test_an_answer_that_is_not_a_usable_study_answer_has_each_series_asked_alone(tmp_path, answer):
    plan = {STUDY_PATH: [answer], _series_path(A): [(200, body(ct_series(A, 2)))],
            _series_path(B): [(200, body(ct_series(B, 3)))]}
    with PlanServer(plan) as server:
        result = harvest([(STUDY, A), (STUDY, B)], tmp_path, server.url, workers=1, rate=None, policy=NOW_RETRY,
                         progress=False, by_study=True, flush_instances=1)  # a part per instance while streaming
        asked = _asked(server)
    assert asked[-2:] == [_series_path(A), _series_path(B)] and set(asked[:-2]) == {STUDY_PATH}
    assert len(asked) == 2 + (2 if answer[0] == "cut" else 1)  # the study asked again once when cut
    assert result.by_status == {"ok": 2}
    if answer[0] != "cut":  # the study's answer, read whole, counts in the run's bytes
        assert result.bytes == len(answer[1]) + len(body(ct_series(A, 2))) + len(body(ct_series(B, 3)))
    logs = log_rows(tmp_path)
    assert [(logs[s]["url"], logs[s]["instances"]) for s in (A, B)] == [
        (server.url + _series_path(A), 2), (server.url + _series_path(B), 3)]
    assert sorted(_sops(tmp_path).values()) == [A, A, B, B, B]
    store = HarvestStore(tmp_path)
    committed = {p.path.rsplit("/", 1)[-1] for c in store.commits() for p in c.parts}
    assert {p.name for p in (tmp_path / "instances").iterdir()} <= committed  # the study's parts were deleted
    assert store.problems() == []


def test_a_study_answered_401_stops_the_run(tmp_path):
    with PlanServer({STUDY_PATH: [(401, b"who are you")]}) as server:
        with pytest.raises(HarvestError, match="authentication failed for .* answered HTTP 401: who are you"):
            harvest([(STUDY, A), (STUDY, B)], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                    progress=False, by_study=True)
        assert _asked(server) == [STUDY_PATH]
    assert HarvestStore(tmp_path).commits() == []


@pytest.mark.parametrize("options", [{}, {"by_study": False}, {"by_study": True, "light": True}],
                         ids=["pairs-by-default", "by-study-false", "light"])
def test_series_are_asked_one_by_one_unless_asked_by_study(tmp_path, options):
    plan = {_series_path(A): [(200, body(ct_series(A, 1)))], _series_path(B): [(200, body(ct_series(B, 1)))],
            f"/studies/{STUDY}/series/{A}/instances": [(200, body(ct_series(A, 1)))],
            f"/studies/{STUDY}/series/{B}/instances": [(200, body(ct_series(B, 1)))]}
    with PlanServer(plan) as server:
        result = harvest([(STUDY, A), (STUDY, B)], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                         progress=False, **options)
        assert STUDY_PATH not in _asked(server) and len(_asked(server)) == 2
    assert result.by_status == {"ok": 2}


def test_a_rerun_asks_by_study_only_for_what_is_left(tmp_path):
    study_body = body(ct_series(A, 1) + ct_series(B, 2) + ct_series(C, 1))
    plan = {STUDY_PATH: [(503, b"busy"), (200, study_body)], _series_path(A): [(200, body(ct_series(A, 1)))],
            _series_path(B): [(503, b"busy")], _series_path(C): [(503, b"busy")]}
    with PlanServer(plan) as server:
        first = harvest([(STUDY, A), (STUDY, B), (STUDY, C)], tmp_path, server.url, workers=1, rate=None,
                        policy=ONCE, progress=False, by_study=True)
        assert first.by_status == {"ok": 1, "http_error": 2}  # the study failed: each series asked alone
        again = harvest([(STUDY, A), (STUDY, B), (STUDY, C)], tmp_path, server.url, workers=1, rate=None,
                        policy=ONCE, progress=False, by_study=True)
        assert _asked(server)[-1] == STUDY_PATH and _asked(server).count(STUDY_PATH) == 2
    assert again.by_status == {"ok": 2} and again.skipped == 1
    assert sorted(_sops(tmp_path).values()) == [A, B, B, C]  # A once, though the study's answer held it again


def test_fetch_units_groups_a_study_s_series_of_one_endpoint_in_the_order_given():
    def task(study, series, endpoint="e", url="x"):
        return SeriesTask(study, series, endpoint, url and f"http://h/w/studies/{study}/series/{series}")

    s1a, s2a, s1b, s3a, s3b, s4a, s4b = (task("1", "1a"), task("2", "2a"), task("1", "1b"), task("3", "3a"),
                                         task("3", "3b", "f"), task("4", "4a"), task("4", "4b", url=None))
    todo = [s1a, s2a, s1b, s3a, s3b, s4a, s4b]
    assert fetch_units(todo, False) == todo
    assert fetch_units(todo, True) == [(s1a, s1b), s2a, s3a, s3b, s4a, s4b]  # 3: two endpoints; 4: no URL
    assert fetch_units([s2a, s1b, s1a], True) == [s2a, (s1b, s1a)]
    assert fetch_units(todo, True, {"1": Study(2, 9)}) == [(s1a, s1b), s2a, s3a, s3b, s4a, s4b]
    assert fetch_units(todo, True, {"1": Study(3, 9)}) == todo  # a series of study 1 is not asked (complete before)
    assert fetch_units(todo, True, {}) == todo


def test_with_fewer_requests_than_workers_a_study_of_more_than_100_instances_is_asked_by_series():
    def task(study, series):
        return SeriesTask(study, series, "e", f"http://h/w/studies/{study}/series/{series}")

    todo = [task("1", "1a"), task("1", "1b"), task("2", "2a"), task("2", "2b"), task("3", "3a")]
    small, big = Study(2, SPLIT_INSTANCES), Study(2, SPLIT_INSTANCES + 1)
    grouped = [tuple(todo[:2]), tuple(todo[2:4]), todo[4]]
    assert SPLIT_INSTANCES == 100
    assert fetch_units(todo, True, {"1": big, "2": big}, fill=3) == grouped  # 3 requests for 3 workers
    assert fetch_units(todo, True, {"1": big, "2": big}, fill=4) == todo  # 3 for 4: both studies split
    assert fetch_units(todo, True, {"1": small, "2": big}, fill=4) == [tuple(todo[:2]), *todo[2:]]
    assert fetch_units(todo, True, {"1": small, "2": small}, fill=9) == grouped
    assert fetch_units(todo, True, None, fill=9) == grouped  # sizes unknown (by_study=True): as asked
    assert study_url("http://h/w/studies/1.2/series/3.4/") == "http://h/w/studies/1.2/metadata"
    assert study_url("http://h/series/w/studies/1.2/series/3.4") == "http://h/series/w/studies/1.2/metadata"


def _index_file() -> str:
    from idc_index_data import IDC_INDEX_PARQUET_FILEPATH

    return IDC_INDEX_PARQUET_FILEPATH


def _study_with(catalog, n: int, instances: str = "> 0") -> tuple[str, list[str]]:
    """A study of the shipped index with n series and instances as said (found by a query of the Parquet file
    itself)."""
    study = duckdb.sql(f"SELECT StudyInstanceUID FROM read_parquet('{_index_file()}') GROUP BY 1 "
                       f"HAVING count(*) = {n} AND sum(instanceCount) {instances} ORDER BY 1 LIMIT 1").fetchone()[0]
    series = duckdb.sql(f"SELECT SeriesInstanceUID FROM read_parquet('{_index_file()}') "
                        f"WHERE StudyInstanceUID = '{study}' ORDER BY 1").fetchall()
    return study, [s for (s,) in series]


def test_a_cohort_holding_a_whole_study_asks_for_it_once(tmp_path, catalog):
    study, series = _study_with(catalog, 3)
    other, other_series = _study_with(catalog, 4)
    cohort = Cohort.from_uids(series + other_series[:3], catalog=catalog)  # all of `study`, 3 of 4 of `other`
    held = duckdb.sql(f"SELECT sum(instanceCount) FROM read_parquet('{_index_file()}') "
                      f"WHERE StudyInstanceUID = '{study}'").fetchone()[0]
    assert whole_studies(cohort) == {study: Study(3, held)} and held > 0
    assert whole_studies([(study, s) for s in series]) is None  # not a cohort: nothing known of its studies
    answer = body([instance("CT", s, f"{s}.1") | {"0020000D": {"vr": "UI", "Value": [study]}} for s in series])
    plan = {f"/studies/{study}/metadata": [(200, answer)]} | {
        _series_path(s, other): [(200, body([instance("CT", s, f"{s}.1")]))] for s in other_series[:3]}
    plan[f"/studies/{other}/metadata"] = [(200, body([instance("CT", s, f"{s}.1") for s in other_series]))]
    for s in series + other_series[:3]:  # what a light run asks for
        plan[_series_path(s, study if s in series else other).replace("/metadata", "/instances")] = [
            (200, body([instance("CT", s, f"{s}.1")]))]
    with PlanServer(plan) as server:
        result = harvest(cohort, tmp_path / "auto", custom(server.url), workers=2, rate=None, policy=ONCE,
                         progress=False)
        assert sorted(_asked(server)) == sorted([f"/studies/{study}/metadata"]
                                                + [_series_path(s, other) for s in other_series[:3]])
        assert result.by_status == {"ok": 6}
        server.requests.clear()
        result = harvest(cohort, tmp_path / "true", custom(server.url), workers=2, rate=None, policy=ONCE,
                         progress=False, by_study=True)  # any two or more series of a study: both studies
        assert sorted(_asked(server)) == sorted([f"/studies/{study}/metadata", f"/studies/{other}/metadata"])
        assert result.by_status == {"ok": 6}  # the 4th series of `other` in its answer is dropped
        server.requests.clear()
        result = harvest(cohort, tmp_path / "light", custom(server.url), workers=2, rate=None, policy=ONCE,
                         progress=False, light=True)  # QIDO: series by series
        assert all(path.endswith("/instances") for path in _asked(server)) and len(_asked(server)) == 6
        assert result.by_status == {"ok": 6}


def test_a_cohort_too_small_for_its_workers_asks_a_study_of_more_than_100_instances_series_by_series(
        tmp_path, catalog):
    small, small_series = _study_with(catalog, 2, "BETWEEN 2 AND 100")
    big, big_series = _study_with(catalog, 2, "> 100")
    cohort = Cohort.from_uids(small_series + big_series, catalog=catalog)
    plan = {f"/studies/{small}/metadata": [(200, body([instance("CT", s, f"{s}.1") for s in small_series]))]}
    plan |= {_series_path(s, big): [(200, body([instance("CT", s, f"{s}.1")]))] for s in big_series}
    with PlanServer(plan) as server:
        result = harvest(cohort, tmp_path / "3", custom(server.url), workers=3, rate=None, policy=ONCE,
                         progress=False)  # 2 requests by study, for 3 workers
        assert sorted(_asked(server)) == sorted([f"/studies/{small}/metadata"]
                                                + [_series_path(s, big) for s in big_series])
        assert result.by_status == {"ok": 4}
        server.requests.clear()
        plan[f"/studies/{big}/metadata"] = [(200, body([instance("CT", s, f"{s}.1") for s in big_series]))]
        result = harvest(cohort, tmp_path / "2", custom(server.url), workers=2, rate=None, policy=ONCE,
                         progress=False)  # 2 requests for 2 workers: both by study
        assert sorted(_asked(server)) == sorted([f"/studies/{small}/metadata", f"/studies/{big}/metadata"])
        assert result.by_status == {"ok": 4}


@pytest.mark.parametrize("extra", [0, 1], ids=["due-with-the-study", "one-byte-short"])
def test_a_study_s_json_counts_once_toward_a_batch(tmp_path, monkeypatch, extra):
    """A batch is due when its rows' JSON in memory reaches FLUSH_BYTES: a study's counts once, whatever the
    number of its series. A series E and then the study (A, B) come first; D is asked once E is taken."""
    import cohort.harvest.runner as runner

    other, D, E = "1.2.826.0.1.3680043.9.7433.8.90", "1.2.826.0.1.3680043.9.7433.8.91", "1.2.826.0.1.3680043.9.7433.8.92"

    def of(study, uid):
        return [instance("CT", uid, f"{uid}.1") | {"0020000D": {"vr": "UI", "Value": [study]}}]

    study = ct_series(A, 1) + ct_series(B, 1)  # less than FLUSH_BYTES: not written while it streams
    monkeypatch.setattr(runner, "FLUSH_BYTES", sum(len(json.dumps(i)) for i in study + of(other, E)) + extra)
    d_answer = (200, body(of(other, D)))
    plan = {STUDY_PATH: [(200, body(study))], _series_path(E, other): [(200, body(of(other, E)))],
            # D waits for the commit that E's and the study's JSON make due; one byte short, none comes before
            # the end (D answers a second later)
            _series_path(D, other): [("gate", 1, d_answer) if extra == 0 else ("slow", 1.0, d_answer)]}
    with PlanServer(plan, gate_dir=tmp_path) as server:
        result = harvest([(other, E), (STUDY, A), (STUDY, B), (other, D)], tmp_path, server.url, workers=1,
                         rate=None, policy=ONCE, progress=False, by_study=True, flush_seconds=3600)
        assert server.gates_timed_out == 0
    assert result.by_status == {"ok": 4}
    commits = HarvestStore(tmp_path).commits()
    assert [[p.rows for p in c.parts] for c in commits] == ([[3, 3], [1, 1]] if extra == 0 else [[4, 4]])
