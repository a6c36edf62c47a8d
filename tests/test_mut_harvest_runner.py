"""cohort/harvest/runner.py: every outcome, log field, part and message of a run, against a DICOMweb server
on 127.0.0.1 run by the test (a thread of this process: no Orthanc start-up, a fraction of a second a run).

The server answers each series URL from a deterministic plan (the 1st, 2nd, ... request of a path get the
1st, 2nd, ... answer; the last repeats), with bodies made by pydicom from pydicom's own test files
(CT_small.dcm, MR_small.dcm; copies given their own SOP/Series UIDs where a series needs several instances).
The expected rows are those datasets as pydicom reads them; the expected byte counts are the lengths of the
bodies the server sent; messages are written out whole. A "gate" holds an answer until the harvest directory
holds a given number of commits, so that when the runner commits is observable without timing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from cohort import custom
from cohort.errors import HarvestError
from cohort.harvest import HarvestResult, HarvestStore, harvest
from cohort.harvest.metadata import LIGHT_TAGS
from cohort.harvest.runner import _interrupt_deferred
from cohort.harvest.tasks import SeriesTask, series_tasks
from cohort.retry import RetryPolicy
from tests.support.plan_server import (CT, HOLD, MR, NOW_RETRY, ONCE, STUDY, PlanServer as _Server, body as _body,
                                       ct_series as _ct_series, instance as _instance, log_rows as _log, sop as _sop)


# -- every outcome -----------------------------------------------------------------------------------------
def test_each_answer_gives_its_outcome_with_every_log_field(tmp_path):
    ct_series = "1.2.826.0.1.3680043.9.7433.9.1"
    ct3 = _ct_series(ct_series, 3)
    mr_body = _body([_instance("MR")])
    ct_body = _body(ct3)
    bad_item = b'[{"00080018": {"vr": "UI", "Value": ["1.2.3"]}}, 5]'
    no_sop = b'[{"00080060": {"vr": "CS", "Value": ["CT"]}}]'
    cut_body = _body([_instance("CT")])
    s = {name: f"1.2.826.0.1.3680043.9.7433.8.{i}" for i, name in enumerate(
        ["404", "410", "204", "500", "empty", "item", "nosop", "cut", "400"])}
    plan = {
        f"/studies/{STUDY}/series/{ct_series}/metadata": [(200, ct_body)],
        f"/studies/{MR.StudyInstanceUID}/series/{MR.SeriesInstanceUID}/metadata": [(503, b"busy"), (200, mr_body)],
        f"/studies/{STUDY}/series/{s['404']}/metadata": [(404, b"  no such\n series  ")],
        f"/studies/{STUDY}/series/{s['410']}/metadata": [(410, b"gone")],
        f"/studies/{STUDY}/series/{s['204']}/metadata": [(204, b"")],
        f"/studies/{STUDY}/series/{s['500']}/metadata": [(500, b"boom")],
        f"/studies/{STUDY}/series/{s['empty']}/metadata": [(200, b"[]")],
        f"/studies/{STUDY}/series/{s['item']}/metadata": [(200, bad_item)],
        f"/studies/{STUDY}/series/{s['nosop']}/metadata": [(200, no_sop)],
        f"/studies/{STUDY}/series/{s['cut']}/metadata": [("cut", cut_body, 1000)],
        f"/studies/{STUDY}/series/{s['400']}/metadata": [(400, b"")],
    }
    pairs = [(STUDY, ct_series), (MR.StudyInstanceUID, MR.SeriesInstanceUID),
             *[(STUDY, uid) for uid in s.values()]]
    out = tmp_path / "h"
    started = dt.datetime.now(dt.timezone.utc)
    with _Server(plan) as server:
        result = harvest(pairs + pairs[:1], out, custom(server.url, name="srv"), workers=3, rate=None,
                         policy=NOW_RETRY, progress=False)
        requests = list(server.requests)
    ended = dt.datetime.now(dt.timezone.utc)
    assert result.by_status == {"ok": 2, "not_found": 2, "empty": 2, "http_error": 2, "malformed": 3}
    assert (result.series, result.skipped, result.instances) == (11, 0, 4)
    assert result.out_dir == out and result.interrupted is False and result.seconds > 0
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", result.run_id)
    records = [json.loads(p.read_text()) for p in (out / "commits").glob("*.json")]
    assert records and {r["run_id"] for r in records} == {result.run_id}  # the store's run, as its records say
    streamed_cut = 0  # urllib3 raises IncompleteRead for a read of 256 KiB that gets 1,000 bytes, handing none over
    log = _log(out)
    url = f"{server.url}/studies/{STUDY}/series/"
    common = {"StudyInstanceUID": STUDY, "endpoint": "srv", "run_id": result.run_id, "values_dropped": 0}
    expected = {
        ct_series: dict(status="ok", http_status=200, attempts=1, instances=3, bytes=len(ct_body),
                                       error=None),
        MR.SeriesInstanceUID: dict(status="ok", http_status=200, attempts=2, instances=1, bytes=4 + len(mr_body),
                                   error=None, StudyInstanceUID=MR.StudyInstanceUID,
                                   url=f"{server.url}/studies/{MR.StudyInstanceUID}/series/{MR.SeriesInstanceUID}/metadata"),
        s["404"]: dict(status="not_found", http_status=404, attempts=1, instances=0, bytes=19,
                       error="HTTP 404: no such series"),
        s["410"]: dict(status="not_found", http_status=410, attempts=1, instances=0, bytes=4, error="HTTP 410: gone"),
        s["204"]: dict(status="empty", http_status=204, attempts=1, instances=0, bytes=0, error=None),
        s["500"]: dict(status="http_error", http_status=500, attempts=2, instances=0, bytes=8, error="HTTP 500: boom"),
        s["empty"]: dict(status="empty", http_status=200, attempts=1, instances=0, bytes=2, error=None),
        s["item"]: dict(status="malformed", http_status=200, attempts=1, instances=0, bytes=len(bad_item),
                        error="item 1 of the array is a JSON int, not an object"),
        s["nosop"]: dict(status="malformed", http_status=200, attempts=1, instances=0, bytes=len(no_sop),
                         error="an instance has no SOPInstanceUID (00080018)"),
        s["400"]: dict(status="http_error", http_status=400, attempts=1, instances=0, bytes=0,
                       error="HTTP 400: Bad Request"),
    }
    assert set(log) == {*expected, s["cut"]}
    for series, fields in expected.items():
        row = log[series]
        want = {**common, "SeriesInstanceUID": series, "url": f"{url}{series}/metadata", **fields}
        assert {k: row[k] for k in want} == want, series
        assert started <= row["finished_at"] <= ended and 0 <= row["seconds"] <= (ended - started).total_seconds()
        assert row["seconds"] == round(row["seconds"], 4)
    assert result.bytes == sum(fields["bytes"] for fields in expected.values()) + streamed_cut
    cut = log[s["cut"]]
    assert (cut["status"], cut["http_status"], cut["attempts"], cut["bytes"], cut["instances"]) == \
        ("malformed", None, 2, streamed_cut, 0)
    assert cut["error"].startswith("truncated body: ChunkedEncodingError: ")
    # the instances: one row per instance, its values as pydicom reads them
    rows = {r["SOPInstanceUID"]: r for r in HarvestStore(out).read_instances().to_pylist()}
    assert sorted(rows) == sorted([*(_sop(i) for i in ct3), MR.SOPInstanceUID])
    expected_rows = [(CT, ct_series, f"{ct_series}.{i + 1}", i + 1, ct)
                     for i, ct in enumerate(ct3)] + [(MR, MR.SeriesInstanceUID, MR.SOPInstanceUID, MR.InstanceNumber,
                                                       _instance("MR"))]
    for ds, series, sop, number, instance in expected_rows:
        row = rows[sop]
        assert (row["SeriesInstanceUID"], row["StudyInstanceUID"], row["Modality"], row["Rows"], row["Columns"],
                row["InstanceNumber"], row["SOPClassUID"]) == (series, ds.StudyInstanceUID, ds.Modality, ds.Rows,
                                                               ds.Columns, int(number), ds.SOPClassUID)
        assert (row["endpoint"], row["run_id"]) == ("srv", result.run_id)
        assert started <= row["harvested_at"] <= ended
        assert json.loads(row["json"]) == instance
    # requests: the probe once (beside the first series), each series once per attempt, asking for DICOM JSON; the
    # duplicate pair once
    paths = [p for p, _, _ in requests]
    assert paths.count("/studies") == 1
    assert sorted(p for p in paths if p != "/studies") == sorted([*plan, *[p for p in plan if p.endswith(
        (MR.SeriesInstanceUID + "/metadata", s["500"] + "/metadata", s["cut"] + "/metadata"))]])
    assert {accept for _, _, accept in requests} == {"application/dicom+json, application/json"}
    assert all(query == [] for p, query, _ in requests if p != "/studies")
    # nothing uncommitted is left: every instances file is in a commit
    store = HarvestStore(out)
    assert sorted(p.name for p in (out / "instances").iterdir()) == sorted(Path(p).name for p in store.part_names("instances"))


def test_values_that_do_not_fit_are_counted_per_series(tmp_path):
    instance = _instance("CT")
    instance["00280010"]["Value"] = [3_000_000_000]  # Rows beyond int32
    instance["00200013"] = {"vr": "IS", "Value": ["1.5"]}  # a non-integral InstanceNumber
    body = json.dumps([instance, _instance("CT", sop=CT.SOPInstanceUID + ".2")]).encode()
    plan = {f"/studies/{STUDY}/series/{CT.SeriesInstanceUID}/metadata": [(200, body)]}
    with _Server(plan) as server:
        result = harvest([(STUDY, CT.SeriesInstanceUID)], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                         progress=False)
    assert result.by_status == {"ok": 1} and result.instances == 2
    row = _log(tmp_path)[CT.SeriesInstanceUID]
    assert (row["values_dropped"], row["instances"], row["endpoint"]) == (2, 2, server.url)
    rows = {r["SOPInstanceUID"]: r for r in HarvestStore(tmp_path).read_instances().to_pylist()}
    assert (rows[CT.SOPInstanceUID]["Rows"], rows[CT.SOPInstanceUID]["InstanceNumber"]) == (None, None)
    assert "values_dropped" not in rows[CT.SOPInstanceUID]
    assert rows[CT.SOPInstanceUID + ".2"]["Rows"] == CT.Rows


def test_an_element_whose_vr_is_no_string_is_an_issue_of_its_row_not_of_its_series(tmp_path):
    instance = _instance("CT")
    instance["00691001"] = {"vr": [], "Value": ["1"]}
    plan = {f"/studies/{STUDY}/series/{CT.SeriesInstanceUID}/metadata": [(200, json.dumps([instance]).encode())]}
    with _Server(plan) as server:
        result = harvest([(STUDY, CT.SeriesInstanceUID)], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                         progress=False)
    assert result.by_status == {"ok": 1}
    [row] = HarvestStore(tmp_path).read_instances().to_pylist()
    assert row["issues"] == ["00691001: vr is a JSON list, not a string"] and row["Rows"] == CT.Rows


def test_uids_missing_from_an_instance_come_from_the_request_and_its_text_is_kept_as_sent(tmp_path):
    series = "1.2.826.0.1.3680043.9.7433.9.70"
    text = '{ "00080018" :{"Value": ["1.2.3.4"], "vr": "UI"},\n  "00080060": {"vr": "CS", "Value": ["CT"]} }'
    plan = {f"/studies/{STUDY}/series/{series}/metadata": [(200, f"[ {text} ]".encode())]}
    with _Server(plan) as server:
        harvest([(STUDY, series)], tmp_path, server.url, workers=1, rate=None, policy=ONCE, progress=False)
    [row] = HarvestStore(tmp_path).read_instances().to_pylist()
    assert (row["StudyInstanceUID"], row["SeriesInstanceUID"], row["SOPInstanceUID"]) == (STUDY, series, "1.2.3.4")
    assert row["issues"] == ["StudyInstanceUID missing: taken from the request URL",
                             "SeriesInstanceUID missing: taken from the request URL"]
    assert row["json"] == text


def test_a_timeout_and_a_refused_connection_are_outcomes(tmp_path):
    answered = threading.Event()  # the answer is sent only after the run returned: the 0.3 s read timeout fires
    plan = {f"/studies/{STUDY}/series/{CT.SeriesInstanceUID}/metadata": [("event", answered,
                                                                          (200, _body([_instance("CT")])))]}
    with _Server(plan) as server:
        try:
            result = harvest([(STUDY, CT.SeriesInstanceUID)], tmp_path / "slow", server.url, workers=1, rate=None,
                             policy=RetryPolicy(timeout=0.3, max_attempts=1), progress=False)
        finally:
            answered.set()
    assert result.by_status == {"timeout": 1}
    row = _log(tmp_path / "slow")[CT.SeriesInstanceUID]
    assert (row["status"], row["http_status"], row["attempts"], row["instances"]) == ("timeout", None, 1, 0)
    assert row["error"].startswith("ReadTimeout: ")
    plan = {f"/studies/{STUDY}/series/{CT.SeriesInstanceUID}/metadata": [("reset",)]}
    with _Server(plan) as server:
        result = harvest([(STUDY, CT.SeriesInstanceUID)], tmp_path / "reset", server.url, workers=1, rate=None,
                         policy=ONCE, progress=False)
    assert result.by_status == {"http_error": 1}
    row = _log(tmp_path / "reset")[CT.SeriesInstanceUID]
    assert (row["status"], row["http_status"], row["attempts"], row["bytes"]) == ("http_error", None, 1, 0)
    assert row["error"].startswith("ConnectionError: ")


def test_a_cut_body_is_asked_again_and_counts_once_with_its_parts(tmp_path):
    series = "1.2.826.0.1.3680043.9.7433.9.2"
    datasets = _ct_series(series, 30)
    body = _body(datasets)
    assert len(body) > 300_000
    # cut after 300,000 bytes: the first read of 256 KiB arrives whole (its instances parsed, parts written), the
    # second read ends early
    plan = {f"/studies/{STUDY}/series/{series}/metadata": [("cut", body, 300_000), (200, body)],
            f"/studies/{STUDY}/series/1.2.9/metadata": [(204, b"")]}
    with _Server(plan) as server:
        result = harvest([(STUDY, series), (STUDY, "1.2.9")], tmp_path, server.url, workers=1, rate=None,
                         policy=NOW_RETRY, progress=False, flush_instances=10)
    assert result.by_status == {"ok": 1, "empty": 1} and result.instances == 30
    row = _log(tmp_path)[series]
    assert (row["attempts"], row["bytes"], row["instances"]) == (2, 256 * 1024 + len(body), 30)
    store = HarvestStore(tmp_path)
    [commit] = store.commits()  # one batch: the series' three streamed parts of 10 rows, then the log part
    assert [(p.kind, p.rows) for p in commit.parts] == [("instances", 10)] * 3 + [("log", 2)]
    assert sorted(store.read_instances(["SOPInstanceUID"]).column(0).to_pylist()) == \
        sorted(_sop(i) for i in datasets)
    # the parts written during the cut attempt were deleted: only committed files are left
    assert sorted(p.name for p in (tmp_path / "instances").iterdir()) == \
        sorted(Path(p).name for p in store.part_names("instances"))
    assert max(int(p.name[-13:-8]) for p in (tmp_path / "instances").iterdir()) >= 4  # parts of the cut try existed


def test_a_series_bigger_than_a_batch_is_written_in_parts_then_its_rest(tmp_path):
    series = "1.2.826.0.1.3680043.9.7433.9.3"
    datasets = _ct_series(series, 5)
    plan = {f"/studies/{STUDY}/series/{series}/metadata": [(200, _body(datasets))],
            f"/studies/{STUDY}/series/1.2.9/metadata": [(410, b"")]}
    with _Server(plan) as server:
        harvest([(STUDY, series), (STUDY, "1.2.9")], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                progress=False, flush_instances=2)
    [commit] = HarvestStore(tmp_path).commits()
    assert [(p.kind, p.rows) for p in commit.parts] == [("instances", 2), ("instances", 2), ("instances", 1),
                                                       ("log", 2)]


def test_a_malformed_body_after_a_written_part_leaves_nothing(tmp_path):
    series = "1.2.826.0.1.3680043.9.7433.9.4"
    datasets = _ct_series(series, 3)
    body = _body(datasets)[:-1] + b", 7]"  # three instances (a part of 2 written), then not an object
    plan = {f"/studies/{STUDY}/series/{series}/metadata": [(200, body)]}
    with _Server(plan) as server:
        result = harvest([(STUDY, series)], tmp_path, server.url, workers=1, rate=None, policy=ONCE, progress=False,
                         flush_instances=2)
    assert result.by_status == {"malformed": 1} and result.instances == 0
    assert _log(tmp_path)[series]["error"] == "item 3 of the array is a JSON int, not an object"
    [commit] = HarvestStore(tmp_path).commits()
    assert [(p.kind, p.rows) for p in commit.parts] == [("instances", 0), ("log", 1)]
    assert sorted(p.name for p in (tmp_path / "instances").iterdir()) == [Path(commit.parts[0].path).name]


def test_a_body_found_malformed_at_its_very_end_is_logged_malformed(tmp_path):
    """The parser reads such a body to its end before it can tell; the run used to crash (RuntimeError: the
    content was already consumed) when the retry layer then asked for the response's content."""
    uid = "1.2.826.0.1.3680043.9.7433.9.70"
    answer = b'{"00080018": {"vr": "UI", "Value": ["1.2.3"]}'  # its closing brace missing
    with _Server({_path(uid): [(200, answer)]}) as server:
        result = harvest([(STUDY, uid)], tmp_path, server.url, workers=1, rate=None, policy=ONCE, progress=False)
    assert result.by_status == {"malformed": 1}
    assert _log(tmp_path)[uid]["bytes"] == len(answer)


def test_batches_are_committed_when_their_instances_reach_flush_instances(tmp_path):
    # four series of one instance; the third is answered only once a commit exists (at most HOLD s later)
    uids = [f"1.2.826.0.1.3680043.9.7433.9.1{i}" for i in range(4)]
    plan = {f"/studies/{STUDY}/series/{uid}/metadata": [(200, _body(_ct_series(uid, 1)))] for uid in uids}
    plan[f"/studies/{STUDY}/series/{uids[2]}/metadata"] = [("gate", 1, (200, _body(_ct_series(uids[2], 1))))]
    with _Server(plan, gate_dir=tmp_path) as server:
        harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                progress=False, flush_instances=2, flush_seconds=3600)
        assert server.gates_timed_out == 0
    commits = HarvestStore(tmp_path).commits()
    assert [[p.rows for p in c.parts] for c in commits] == [[2, 2], [2, 2]]


def _parts_written(out: Path, n: int):
    """A condition for the server's "until": the harvest in ``out`` has written ``n`` instance parts."""
    return lambda: len(list((out / "instances").glob("*.parquet"))) >= n


def _rows_of_the_one_commit(out: Path, uids: list[str], plan: dict) -> list[int]:
    """Harvest ``uids`` from ``plan`` with one worker (no gate may time out, every series ok): the rows of each
    part of the run's one commit, the log part last."""
    with _Server(plan) as server:
        result = harvest([(STUDY, uid) for uid in uids], out, server.url, workers=1, rate=None, policy=ONCE,
                         progress=False, flush_seconds=3600)
        assert server.gates_timed_out == 0
    assert result.by_status == {"ok": len(uids)}
    [commit] = HarvestStore(out).commits()
    return [p.rows for p in commit.parts]


def test_once_every_series_is_asked_for_the_buffered_rows_are_written_while_the_last_answers_arrive(
        tmp_path, monkeypatch):
    import cohort.harvest.runner as runner

    uids = [f"1.2.826.0.1.3680043.9.7433.9.4{i}" for i in range(3)]
    # exactly one instance's JSON text (all the same length; the default is 1 MB)
    monkeypatch.setattr(runner, "TAIL_BYTES", len(json.dumps(_ct_series(uids[0], 1)[0])))
    plan = {_path(uids[0]): [(200, _body(_ct_series(uids[0], 1)))],
            # the 2nd answer waits for the 1st series' rows to be written (the 3rd is asked by then), the 3rd
            # for the 2nd's: each written alone, uncommitted, and the commit at the end has the 3rd's left
            _path(uids[1]): [("until", _parts_written(tmp_path, 1), (200, _body(_ct_series(uids[1], 1))))],
            _path(uids[2]): [("until", _parts_written(tmp_path, 2), (200, _body(_ct_series(uids[2], 1))))]}
    assert _rows_of_the_one_commit(tmp_path, uids, plan) == [1, 1, 1, 3]  # three instance parts, then the log part


def test_after_a_tail_write_the_rows_in_memory_are_counted_from_zero(tmp_path, monkeypatch):
    import cohort.harvest.runner as runner

    uids = [f"1.2.826.0.1.3680043.9.7433.9.5{i}" for i in range(3)]
    first = _ct_series(uids[0], 1)
    first[0]["00081030"] = {"vr": "LO", "Value": ["a description that makes this instance's text longer"]}
    others = [_ct_series(uid, 1) for uid in uids[1:]]
    size = len(json.dumps(others[0][0]))  # the 2nd's and the 3rd's text (the 1st's is longer)
    monkeypatch.setattr(runner, "TAIL_BYTES", size + 1)
    plan = {_path(uids[0]): [(200, _body(first))],
            # once the 1st's rows are written
            _path(uids[1]): [("until", _parts_written(tmp_path, 1), (200, _body(others[0])))],
            _path(uids[2]): [("slow", 1.0, (200, _body(others[1])))]}  # the 2nd is taken a second before it
    # the 2nd's text alone is one byte short of a tail write: its rows wait for the commit, with the 3rd's
    assert _rows_of_the_one_commit(tmp_path, uids, plan) == [1, 2, 3]


def test_batches_are_committed_when_their_json_reaches_flush_bytes(tmp_path, monkeypatch):
    import cohort.harvest.runner as runner

    uids = [f"1.2.826.0.1.3680043.9.7433.9.2{i}" for i in range(4)]
    bodies = {uid: _body(_ct_series(uid, 1)) for uid in uids}
    text = len(json.dumps(_ct_series(uids[0], 1)[0]))  # one instance's JSON text, as sent (all the same length)
    monkeypatch.setattr(runner, "FLUSH_BYTES", 2 * text)  # two instances reach it exactly, one does not
    plan = {f"/studies/{STUDY}/series/{uid}/metadata": [(200, bodies[uid])] for uid in uids}
    plan[f"/studies/{STUDY}/series/{uids[2]}/metadata"] = [("gate", 1, (200, bodies[uids[2]]))]
    with _Server(plan, gate_dir=tmp_path) as server:
        harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                progress=False, flush_instances=1000, flush_seconds=3600)
        assert server.gates_timed_out == 0
    commits = HarvestStore(tmp_path).commits()
    assert [[p.rows for p in c.parts] for c in commits] == [[2, 2], [2, 2]]
    # a single series' JSON reaching it is written in parts while it streams: at exactly 2 instances' text ...
    big = "1.2.826.0.1.3680043.9.7433.9.30"
    plan = {f"/studies/{STUDY}/series/{big}/metadata": [(200, _body(_ct_series(big, 3)))]}
    with _Server(plan) as server:
        harvest([(STUDY, big)], tmp_path / "big", server.url, workers=1, rate=None, policy=ONCE, progress=False,
                flush_instances=1000)
    [commit] = HarvestStore(tmp_path / "big").commits()
    assert [p.rows for p in commit.parts] == [2, 1, 1]
    # ... and one byte more takes 3 instances, each part counted afresh: 6 instances are two parts of 3
    monkeypatch.setattr(runner, "FLUSH_BYTES", 2 * text + 1)
    plan = {f"/studies/{STUDY}/series/{big}/metadata": [(200, _body(_ct_series(big, 6)))]}
    with _Server(plan) as server:
        harvest([(STUDY, big)], tmp_path / "big6", server.url, workers=1, rate=None, policy=ONCE, progress=False,
                flush_instances=1000)
    [commit] = HarvestStore(tmp_path / "big6").commits()
    assert [p.rows for p in commit.parts] == [3, 3, 1]


def test_a_string_that_cannot_be_stored_is_dropped_and_the_run_goes_on(tmp_path):
    """A JSON escape of a lone surrogate is valid JSON but no UTF-8 string: before the fix, the batch's Arrow
    conversion raised UnicodeEncodeError in the main thread and the whole run stopped (the rows of every series
    of the batch lost); now the value is dropped and counted like any other that does not fit its column."""
    bad, good = "1.2.826.0.1.3680043.9.7433.9.80", "1.2.826.0.1.3680043.9.7433.9.81"
    text = ('{"00080018": {"vr": "UI", "Value": ["1.2.3.4"]}, "0008103E": {"vr": "LO", "Value": ["a\\ud800b"]}, '
            '"00480105": {"vr": "SQ", "Value": [{"00480106": {"vr": "SH", "Value": ["\\udc00", "OP1"]}}]}}')
    plan = {f"/studies/{STUDY}/series/{bad}/metadata": [(200, f"[{text}]".encode())],
            f"/studies/{STUDY}/series/{good}/metadata": [(200, _body(_ct_series(good, 1)))]}
    with _Server(plan) as server:
        result = harvest([(STUDY, bad), (STUDY, good)], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                         progress=False)
    assert result.by_status == {"ok": 2} and result.instances == 2
    assert _log(tmp_path)[bad]["values_dropped"] == 1
    rows = {r["SeriesInstanceUID"]: r for r in HarvestStore(tmp_path).read_instances().to_pylist()}
    assert (rows[bad]["SeriesDescription"], rows[bad]["OpticalPathIdentifier"]) == (None, ["OP1"])
    assert rows[bad]["issues"] == ["0008103E SeriesDescription: cannot read 'a\\ud800b' as string: value dropped",
                                   "StudyInstanceUID missing: taken from the request URL",
                                   "SeriesInstanceUID missing: taken from the request URL"]
    assert rows[bad]["json"] == text and rows[good]["SOPInstanceUID"] == f"{good}.1"


def test_an_error_while_reading_rows_makes_the_series_malformed_and_deletes_its_parts(tmp_path, monkeypatch, caplog):
    """Injected: the row of the series' third instance raises a TypeError (no body is known to do that now)."""
    import logging

    import cohort.harvest.runner as runner

    series = "1.2.826.0.1.3680043.9.7433.9.90"
    real = runner.instance_row

    def failing(instance, *args):
        if instance["00080018"]["Value"][0].endswith(".3"):
            raise TypeError("injected " + "x" * 300)
        return real(instance, *args)

    monkeypatch.setattr(runner, "instance_row", failing)
    plan = {f"/studies/{STUDY}/series/{series}/metadata": [(200, _body(_ct_series(series, 3)))]}
    with _Server(plan) as server, caplog.at_level(logging.DEBUG, logger="cohort.harvest.runner"):
        result = harvest([(STUDY, series)], tmp_path, server.url, workers=1, rate=None, policy=ONCE, progress=False,
                         flush_instances=1)
    assert result.by_status == {"malformed": 1}
    row = _log(tmp_path)[series]
    assert row["error"] == "unreadable metadata (TypeError: injected " + "x" * (200 - len("injected ")) + ")"
    [record] = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert record.getMessage() == f"series {series}: unreadable metadata" and record.levelno == logging.DEBUG
    assert record.exc_info is not None and record.exc_info[0] is TypeError
    [commit] = HarvestStore(tmp_path).commits()  # the two parts written before the error are gone
    assert [(p.kind, p.rows) for p in commit.parts] == [("instances", 0), ("log", 1)]
    assert sorted(p.name for p in (tmp_path / "instances").iterdir()) == [Path(commit.parts[0].path).name]


def test_light_asks_qido_for_each_typed_attribute(tmp_path):
    plan = {f"/studies/{STUDY}/series/{CT.SeriesInstanceUID}/instances": [(200, _body([_instance("CT")]))]}
    with _Server(plan) as server:
        result = harvest([(STUDY, CT.SeriesInstanceUID)], tmp_path, server.url + "/", workers=1, rate=None,
                         policy=ONCE, progress=False, light=True)
        requests = list(server.requests)
    assert result.by_status == {"ok": 1}
    [(path, query, accept)] = [r for r in requests if r[0] != "/studies"]
    assert path == f"/studies/{STUDY}/series/{CT.SeriesInstanceUID}/instances"
    assert query == [("includefield", tag) for tag in LIGHT_TAGS]  # one parameter per attribute
    assert ("includefield", "00280010") in query and ("includefield", "00080060") in query
    assert accept == "application/dicom+json, application/json"
    assert _log(tmp_path)[CT.SeriesInstanceUID]["url"].endswith(f"/series/{CT.SeriesInstanceUID}/instances")


# -- authentication during the run ------------------------------------------------------------------------
def test_a_401_stops_the_run_keeps_what_finished_and_is_not_an_outcome(tmp_path):
    first, second = "1.2.826.0.1.3680043.9.7433.9.40", "1.2.826.0.1.3680043.9.7433.9.41"
    plan = {f"/studies/{STUDY}/series/{first}/metadata": [(200, _body(_ct_series(first, 1)))],
            f"/studies/{STUDY}/series/{second}/metadata": [(401, b" token\n expired ")]}
    with _Server(plan) as server, pytest.raises(HarvestError) as err:
        harvest([(STUDY, first), (STUDY, second)], tmp_path, custom(server.url, name="srv"), workers=1, rate=None,
                policy=NOW_RETRY, progress=False)
    url = f"{server.url}/studies/{STUDY}/series/{second}/metadata"
    assert str(err.value) == (f"authentication failed for srv: check --auth (GET {url} answered HTTP 401: token "
                              f"expired); the series finished before it are kept in {tmp_path}")
    assert server.count[f"/studies/{STUDY}/series/{second}/metadata"] == 1  # not retried
    assert set(_log(tmp_path)) == {first}


# -- what is asked for ---------------------------------------------------------------------------------------
def test_series_without_an_endpoint_are_logged_not_found_without_a_request(tmp_path):
    class Report:  # a coverage report's shape: routes and endpoints
        def __init__(self, url):
            self.endpoints = {"srv": custom(url, name="srv")}
            self.routes = pa.table({
                "StudyInstanceUID": [STUDY, STUDY, STUDY, STUDY],
                "SeriesInstanceUID": ["1.2.1", "1.2.2", "1.2.3", "1.2.1"],
                "endpoint": [None, "gone", "srv", "srv"],
                "series_url": [None, "http://127.0.0.1:9/x", f"{url}/studies/{STUDY}/series/1.2.3", "dup"],
                "reason": ["no public copy", None, "served", "dup"],
            })

    plan = {f"/studies/{STUDY}/series/1.2.3/metadata": [(204, b"")]}
    with _Server(plan) as server:
        result = harvest(Report(server.url), tmp_path, workers=1, rate=None, policy=ONCE, progress=False)
        paths = [p for p, _, _ in server.requests]
    assert result.by_status == {"not_found": 2, "empty": 1} and result.series == 3
    assert sorted(paths) == ["/studies", f"/studies/{STUDY}/series/1.2.3/metadata"]
    log = _log(tmp_path)
    assert (log["1.2.1"]["error"], log["1.2.1"]["endpoint"], log["1.2.1"]["url"]) == \
        ("no endpoint serves this series: no public copy", None, None)
    assert (log["1.2.2"]["error"], log["1.2.2"]["endpoint"], log["1.2.2"]["attempts"]) == \
        ("no endpoint serves this series: not routed", "gone", 0)
    assert (log["1.2.2"]["bytes"], log["1.2.2"]["instances"], log["1.2.2"]["http_status"]) == (0, 0, None)
    # with an endpoint given, the report's series are all asked from it
    tasks, endpoints = series_tasks(Report("http://127.0.0.1:9/dicom-web"), custom("http://h/w", name="w"))
    assert [(t.series_uid, t.endpoint, t.url) for t in tasks] == [
        (u, "w", f"http://h/w/studies/{STUDY}/series/{u}") for u in ("1.2.1", "1.2.2", "1.2.3")]
    assert list(endpoints) == ["w"]


def test_a_rerun_asks_only_for_what_is_not_settled(tmp_path):
    ok, missing, failing = "1.2.826.0.1.3680043.9.7433.9.50", "1.2.9.51", "1.2.9.52"
    plan = {f"/studies/{STUDY}/series/{ok}/metadata": [(200, _body(_ct_series(ok, 2)))],
            f"/studies/{STUDY}/series/{missing}/metadata": [(404, b"")],
            f"/studies/{STUDY}/series/{failing}/metadata": [(500, b"")]}
    pairs = [(STUDY, ok), (STUDY, missing), (STUDY, failing)]
    with _Server(plan) as server:
        harvest(pairs, tmp_path, server.url, workers=2, rate=None, policy=ONCE, progress=False)
        again = harvest(pairs, tmp_path, server.url, workers=2, rate=None, policy=ONCE, progress=False)
        third = harvest(pairs, tmp_path, server.url, workers=2, rate=None, policy=ONCE, progress=False,
                        retry=["not_found"])
        counts = dict(server.count)
    assert (again.series, again.skipped, again.by_status) == (3, 2, {"http_error": 1})
    assert (third.skipped, third.by_status) == (1, {"http_error": 1, "not_found": 1})
    assert counts[f"/studies/{STUDY}/series/{ok}/metadata"] == 1
    assert counts[f"/studies/{STUDY}/series/{failing}/metadata"] == 3
    assert counts[f"/studies/{STUDY}/series/{missing}/metadata"] == 2
    assert counts["/studies"] == 3  # each run probes the endpoint once
    assert again.remaining == 1 and again.failed == 1
    nothing = harvest(pairs[:1], tmp_path, server.url, workers=1, progress=False)
    assert (nothing.series, nothing.skipped, nothing.by_status, nothing.instances, nothing.bytes) == (1, 1, {}, 0, 0)


def test_the_series_list_is_checked_with_messages_naming_the_item():
    endpoint = custom("http://127.0.0.1:9/dicom-web", name="e")
    with pytest.raises(HarvestError) as err:
        series_tasks([("1.2", "1.2.3"), ("1.2", "")], endpoint)
    assert str(err.value) == "item 1 of the series list is ('1.2', ''); give (StudyInstanceUID, SeriesInstanceUID) pairs"
    for item in [("1.2",), ("1.2", "1.3", "1.4"), "12", ("1.2", 3), [None, "1.2"]]:
        with pytest.raises(HarvestError, match=r"^item 0 of the series list is "):
            series_tasks([item], endpoint)
    tasks, endpoints = series_tasks([["1.2", "1.2.3"], ("1.2", "1.2.4"), ("1.9", "1.2.3")], endpoint)
    assert tasks == [SeriesTask("1.2", "1.2.3", "e", "http://127.0.0.1:9/dicom-web/studies/1.2/series/1.2.3"),
                     SeriesTask("1.2", "1.2.4", "e", "http://127.0.0.1:9/dicom-web/studies/1.2/series/1.2.4")]
    assert endpoints == {"e": endpoint}
    with pytest.raises(HarvestError) as err:
        series_tasks(pa.table({"SeriesInstanceUID": ["1.2.3"], "x": [1]}), endpoint)
    assert str(err.value) == "the series table lacks StudyInstanceUID; it has SeriesInstanceUID, x"
    with pytest.raises(HarvestError) as err:
        series_tasks(pa.table({"y": [1]}), endpoint)
    assert str(err.value) == "the series table lacks SeriesInstanceUID, StudyInstanceUID; it has y"
    table = pa.table({"StudyInstanceUID": ["1.2", "1.2"], "SeriesInstanceUID": ["1.2.3", None]})
    with pytest.raises(HarvestError) as err:
        series_tasks(table, endpoint)
    assert str(err.value).startswith("1 series lack a StudyInstanceUID or SeriesInstanceUID, e.g. SeriesTask(")
    import pandas as pd

    frame = pd.DataFrame({"SeriesInstanceUID": ["1.2.3", "1.2.3"], "StudyInstanceUID": ["1.2", "1.2"]})
    assert [t.series_uid for t in series_tasks(frame, endpoint)[0]] == ["1.2.3"]

    class Cohortish:
        def to_arrow(self):
            return pa.table({"StudyInstanceUID": ["1.2"], "SeriesInstanceUID": ["1.2.5"]})

    assert [t.series_uid for t in series_tasks(Cohortish(), endpoint)[0]] == ["1.2.5"]
    with pytest.raises(HarvestError) as err:
        series_tasks([("1.2", "1.2.3")])
    assert str(err.value) == ("no endpoint given: pass endpoint=cohort.custom(URL) or cohort.idc_proxy() (or a "
                              "coverage report, which routes each series)")


def test_workers_must_be_at_least_one(tmp_path):
    with pytest.raises(HarvestError) as err:
        harvest([("1.2", "1.2.3")], tmp_path, "http://127.0.0.1:9/dicom-web", workers=0, progress=False)
    assert str(err.value) == "workers must be at least 1, got 0"
    assert not (tmp_path / "commits").exists()


# -- the result and the progress bar ---------------------------------------------------------------------------
def test_the_summary_line_says_everything_in_order():
    result = HarvestResult(out_dir=Path("h"), run_id="r", series=12345, skipped=1000,
                           by_status={"timeout": 2, "ok": 10000, "not_found": 3, "malformed": 0},
                           instances=20000, bytes=1_050_001, seconds=4.0)
    assert (result.ok, result.failed, result.remaining) == (10000, 2, 12345 - 1000 - 10003)
    assert str(result) == ("12,345 series (1,000 already complete; this run: ok 10,000, not_found 3, timeout 2), "
                           "20,000 instances, 1.1 MB in 4.0 s (5,000 instances/s) -> h; 1,342 series left: "
                           "call harvest() again with the same directory to resume")
    done = HarvestResult(out_dir="s3://b/h", run_id="r", series=2, skipped=2, by_status={}, instances=0, bytes=0,
                         seconds=0.0, interrupted=True)
    assert (done.ok, done.failed, done.remaining) == (0, 0, 0)
    assert done.summary("x") == ("interrupted: 2 series (2 already complete; this run: nothing to do), 0 instances, "
                                 "0.0 MB in 0.0 s (0 instances/s) -> s3://b/h")


def test_the_progress_bar_shows_instances_and_the_statuses_other_than_ok(tmp_path, capsys):
    ok, missing = "1.2.826.0.1.3680043.9.7433.9.60", "1.2.9.61"
    plan = {f"/studies/{STUDY}/series/{ok}/metadata": [(200, _body(_ct_series(ok, 2)))],
            f"/studies/{STUDY}/series/{missing}/metadata": [(404, b"")]}
    with _Server(plan) as server:
        harvest([(STUDY, ok), (STUDY, missing)], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                progress=True)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "2/2" in last and "instances=2" in last and "not_found=1" in last and "ok=" not in last


# -- Ctrl-C while committing ----------------------------------------------------------------------------------
def test_a_ctrl_c_inside_the_commit_block_is_raised_after_it():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever ran before
    seen, done = [], []
    try:
        for handler in (signal.default_int_handler, signal.SIG_DFL):
            signal.signal(signal.SIGINT, handler)
            with pytest.raises(KeyboardInterrupt):
                with _interrupt_deferred():
                    signal.raise_signal(signal.SIGINT)
                    done.append(handler)
            assert signal.getsignal(signal.SIGINT) is handler
        assert done == [signal.default_int_handler, signal.SIG_DFL]  # the block ran to its end
        signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
        with _interrupt_deferred():
            signal.raise_signal(signal.SIGINT)
            assert seen == []
        assert seen == [signal.SIGINT]  # the handler that was there gets it, once, at the end
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with _interrupt_deferred():
            signal.raise_signal(signal.SIGINT)  # ignored before: still ignored
        with _interrupt_deferred():
            pass
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)

    def elsewhere():
        with _interrupt_deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen[-1] is signal.default_int_handler  # not replaced from another thread (it cannot be)


# -- Ctrl-C during the run, a failed probe, the pieces of the main loop (added with the 2026-12-02 run) ------
def _path(series: str, study: str = STUDY) -> str:
    return f"/studies/{study}/series/{series}/metadata"


def _ctrl_c_when(monkeypatch, ready, release: threading.Event) -> None:
    """Raise Ctrl-C in the main loop's wait for finished series (``_finished``) once a series was taken and
    ``ready()`` holds; set ``release`` when the run then waits for its running series (``wait``)."""
    import cohort.harvest.runner as runner

    taken: list = []
    real_finished, real_wait = runner._finished, runner.wait

    def finished(done, timeout):
        if taken and ready():
            raise KeyboardInterrupt
        got = real_finished(done, 0.05)
        taken.extend(got)
        return got

    def wait(futures, *args, **kwargs):
        release.set()
        return real_wait(futures, *args, **kwargs)

    monkeypatch.setattr(runner, "_finished", finished)
    monkeypatch.setattr(runner, "wait", wait)


def test_ctrl_c_keeps_what_finished_drops_what_streams_or_waits_and_cancels_the_rest(tmp_path, monkeypatch):
    """Three workers: one series finishes; three are held by the server until the Ctrl-C; three more wait in the
    pool. The Ctrl-C is raised by the main loop's wait for finished series (``_finished``) once the first series
    was taken and the three held requests have arrived; the held answers are released when the run waits for
    its running series (``wait``), after the queued ones were cancelled."""

    release = threading.Event()
    names = ["ok", "gone", "streaming", "retrying", "queued1", "queued2", "queued3"]
    uid = {name: f"1.2.826.0.1.3680043.9.7433.9.10{i}" for i, name in enumerate(names)}
    plan = {
        _path(uid["ok"]): [(200, _body(_ct_series(uid["ok"], 1)))],
        _path(uid["gone"]): [("event", release, (404, b"gone"))],  # finishes after the Ctrl-C: an outcome
        _path(uid["streaming"]): [("event", release, (200, _body(_ct_series(uid["streaming"], 3))))],
        _path(uid["retrying"]): [("event", release, (503, b"busy")), (200, _body(_ct_series(uid["retrying"], 1)))],
    }
    _ctrl_c_when(monkeypatch, lambda: all(server.count.get(_path(uid[n]), 0) == 1
                                          for n in ("gone", "streaming", "retrying")), release)
    with _Server(plan) as server:
        result = harvest([(STUDY, uid[n]) for n in names], tmp_path, custom(server.url, name="srv"), workers=3,
                         rate=None, policy=NOW_RETRY, progress=False, flush_instances=1)
        counts = dict(server.count)
        assert server.gates_timed_out == 0
    assert result.interrupted is True
    assert (result.series, result.skipped, result.by_status) == (7, 0, {"ok": 1, "not_found": 1})
    assert (result.instances, result.remaining) == (1, 5)
    assert result.summary("rerun").startswith("interrupted: 7 series (0 already complete; this run: ok 1, "
                                              "not_found 1), 1 instances, ")
    assert result.summary("rerun").endswith("; 5 series left: rerun")
    log = _log(tmp_path)
    assert set(log) == {uid["ok"], uid["gone"]}
    assert (log[uid["gone"]]["status"], log[uid["gone"]]["error"]) == ("not_found", "HTTP 404: gone")
    # the queued series were never asked for; the retrying one was not asked again once stopped
    assert [counts.get(_path(uid[n]), 0) for n in names] == [1, 1, 1, 1, 0, 0, 0]
    store = HarvestStore(tmp_path)
    assert store.read_instances(["SOPInstanceUID"]).column(0).to_pylist() == [f"{uid['ok']}.1"]
    # the part the streaming series wrote before it saw the stop was deleted: only committed parts are left
    assert sorted(p.name for p in (tmp_path / "instances").iterdir()) == \
        sorted(Path(p).name for p in store.part_names("instances"))


def test_a_failed_probe_commits_nothing_and_deletes_the_parts_written(tmp_path):
    """The probe fails (a 404 with a body: not a DICOMweb root) while a series has already written parts."""
    series = "1.2.826.0.1.3680043.9.7433.9.110"
    release = threading.Event()
    plan = {"/studies": [("event", release, (404, b"no such route"))],
            _path(series): [(200, _body(_ct_series(series, 3)))],
            _path("1.2.9.111"): [(200, _body(_ct_series("1.2.9.111", 1)))]}

    with _Server(plan) as server:
        import cohort.harvest.runner as runner

        real = runner._Run.flush

        def flush(self):  # the probe answers once both series have been taken (their parts written)
            if len(self._logs) == 2:
                release.set()
            return real(self)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(runner._Run, "flush", flush)
            mp.setattr(runner._Run, "_due", lambda self: len(self._logs) == 2)
            with pytest.raises(HarvestError) as err:
                harvest([(STUDY, series), (STUDY, "1.2.9.111")], tmp_path, custom(server.url, name="srv"),
                        workers=2, rate=None, policy=ONCE, progress=False, flush_instances=1)
    assert str(err.value).startswith(f"srv does not answer as a DICOMweb service: GET {server.url}/studies?limit=1 "
                                     "answered HTTP 404 (application/dicom+json: no such route); check --url")
    assert not list((tmp_path / "commits").glob("*.json"))
    assert list((tmp_path / "instances").iterdir()) == []  # the series' parts were deleted


def test_a_failed_probe_is_the_error_even_when_no_series_finished(tmp_path):
    """The only series is refused (401: no outcome, the run stops): the probe's failure is the error raised, not the
    refused credentials (the endpoint is not what the user meant)."""
    series = "1.2.826.0.1.3680043.9.7433.9.120"
    plan = {"/studies": [(404, b"no such route")], _path(series): [(401, b"who?")]}
    with _Server(plan) as server, pytest.raises(HarvestError) as err:
        harvest([(STUDY, series)], tmp_path, custom(server.url, name="srv"), workers=2, rate=None, policy=ONCE,
                progress=False)
    assert str(err.value).startswith("srv does not answer as a DICOMweb service: ")
    assert not list((tmp_path / "commits").glob("*.json"))


def test_each_endpoint_is_probed_once_and_the_first_failure_by_name_is_raised(tmp_path):
    class Report:
        def __init__(self, urls):
            self.endpoints = {name: custom(url, name=name) for name, url in urls.items()}
            self.routes = pa.table({
                "StudyInstanceUID": [STUDY] * 4,
                "SeriesInstanceUID": ["1.2.1", "1.2.2", "1.2.3", "1.2.4"],
                "endpoint": ["b", "a", "b", "a"],
                "series_url": [f"{urls[e]}/studies/{STUDY}/series/{s}" for e, s in
                               (("b", "1.2.1"), ("a", "1.2.2"), ("b", "1.2.3"), ("a", "1.2.4"))],
            })  # no reason column

    with _Server({"/studies": [(404, b"not b")]}) as b, _Server({"/studies": [(404, b"not a")]}) as a:
        with pytest.raises(HarvestError) as err:
            harvest(Report({"b": b.url, "a": a.url}), tmp_path / "both", workers=2, rate=None, policy=ONCE,
                    progress=False)
        assert str(err.value).startswith(f"a does not answer as a DICOMweb service: GET {a.url}/studies?limit=1 "
                                         "answered HTTP 404 (application/dicom+json: not a)")
        assert (a.count["/studies"], b.count["/studies"]) == (1, 1)
    with _Server({"/studies": [(404, b"not b")]}) as b, _Server({}) as a:
        with pytest.raises(HarvestError) as err:
            harvest(Report({"b": b.url, "a": a.url}), tmp_path / "b", workers=2, rate=None, policy=ONCE,
                    progress=False)
        assert str(err.value).startswith("b does not answer as a DICOMweb service: ")
    with _Server({}) as b, _Server({}) as a:  # both pass: every series asked from its own endpoint
        result = harvest(Report({"b": b.url, "a": a.url}), tmp_path / "ok", workers=2, rate=None, policy=ONCE,
                         progress=False)
        assert sorted(p for p in b.count if p != "/studies") == [_path("1.2.1"), _path("1.2.3")]
        assert sorted(p for p in a.count if p != "/studies") == [_path("1.2.2"), _path("1.2.4")]
        assert (a.count["/studies"], b.count["/studies"]) == (1, 1)
    assert result.by_status == {"not_found": 4}
    log = _log(tmp_path / "ok")
    assert {s: (r["endpoint"], r["error"]) for s, r in log.items()} == {
        "1.2.1": ("b", "HTTP 404: Not Found"), "1.2.2": ("a", "HTTP 404: Not Found"),
        "1.2.3": ("b", "HTTP 404: Not Found"), "1.2.4": ("a", "HTTP 404: Not Found")}


def test_a_cohort_is_routed_with_the_routing_policy_asked_for(tmp_path, monkeypatch):
    import cohort.harvest.tasks as runner

    class Cohortish:  # a Cohort's shape: series_uids and to_arrow
        series_uids = ["1.2.7"]

        def to_arrow(self):
            return pa.table({"StudyInstanceUID": ["1.2"], "SeriesInstanceUID": ["1.2.7"]})

    class Routed:
        endpoints = {"e": custom("http://127.0.0.1:9/dicom-web", name="e")}
        routes = pa.table({"StudyInstanceUID": ["1.2"], "SeriesInstanceUID": ["1.2.7"], "endpoint": [None],
                           "series_url": [None], "reason": ["not in the index"]})

    cohort, calls = Cohortish(), []
    monkeypatch.setattr(runner, "route", lambda source, routing: calls.append((source, routing)) or Routed())
    tasks, endpoints = series_tasks(cohort, None, "prefer_google")
    assert calls == [(cohort, "prefer_google")]
    assert tasks == [SeriesTask("1.2", "1.2.7", None, None, "not in the index")] and endpoints == Routed.endpoints
    result = harvest(cohort, tmp_path, routing="prefer_aws", workers=1, rate=None, policy=ONCE, progress=False)
    assert calls[1] == (cohort, "prefer_aws")
    assert result.by_status == {"not_found": 1}
    assert _log(tmp_path)["1.2.7"]["error"] == "no endpoint serves this series: not in the index"
    # with an endpoint given, a cohort is not routed: its own pairs are asked from that endpoint
    tasks, _ = series_tasks(cohort, custom("http://h/w", name="w"), "prefer_google")
    assert len(calls) == 2 and [(t.endpoint, t.url) for t in tasks] == [("w", "http://h/w/studies/1.2/series/1.2.7")]


def test_finished_takes_every_future_already_queued_in_order():
    from queue import SimpleQueue

    from cohort.harvest.runner import _finished

    done = SimpleQueue()
    assert _finished(done, timeout=0.01) == []
    for item in ("a", "b", "c"):
        done.put(item)
    assert _finished(done, timeout=0.01) == ["a", "b", "c"]
    assert done.empty() and _finished(done, timeout=0) == []


def test_with_flush_seconds_zero_each_finished_series_is_committed_at_once(tmp_path):
    uids = [f"1.2.826.0.1.3680043.9.7433.9.13{i}" for i in range(3)]
    plan = {_path(uids[0]): [(200, _body(_ct_series(uids[0], 1)))],
            _path(uids[1]): [("gate", 1, (200, _body(_ct_series(uids[1], 1))))],
            _path(uids[2]): [("gate", 2, (200, _body(_ct_series(uids[2], 1))))]}
    with _Server(plan, gate_dir=tmp_path) as server:
        harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                progress=False, flush_instances=1000, flush_seconds=0)
        assert server.gates_timed_out == 0
    commits = HarvestStore(tmp_path).commits()
    assert [[(p.kind, p.rows) for p in c.parts] for c in commits] == [[("instances", 1), ("log", 1)]] * 3


def test_the_run_logs_its_start_times_itself_and_shows_a_bar_named_harvest(tmp_path, caplog, capsys):
    import logging

    uid = "1.2.826.0.1.3680043.9.7433.9.140"
    plan = {_path(uid): [(200, _body(_ct_series(uid, 2)))]}
    with _Server(plan) as server:
        first = harvest([(STUDY, uid)], tmp_path, server.url, workers=1, rate=None, policy=ONCE, progress=False)
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="cohort.harvest.runner"):
            second = harvest([(STUDY, uid), (STUDY, "1.2.9.141")], tmp_path, server.url, workers=1, rate=None,
                             policy=ONCE, progress=True)
        took = time.monotonic() - started
    assert 0 < second.seconds <= took and 0 < first.seconds
    [record] = [r for r in caplog.records if r.name == "cohort.harvest.runner"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == f"harvest {tmp_path}: 2 series, 1 already complete, run {second.run_id}"
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("harvest: 100%") and "| 1/1 [" in last and "series/s" in last
    assert "instances=0" in last and "not_found=1" in last


def test_each_worker_thread_keeps_one_session_per_endpoint(tmp_path, monkeypatch):
    from cohort.endpoints import Endpoint

    made, names = [], set()
    real = Endpoint.fast_session

    def fast_session(self):
        made.append(threading.current_thread().name)
        return real(self)

    monkeypatch.setattr(Endpoint, "fast_session", fast_session)
    import cohort.harvest.runner as runner

    real_row = runner.instance_row

    def row(*args):
        names.add(threading.current_thread().name)
        return real_row(*args)

    monkeypatch.setattr(runner, "instance_row", row)
    uids = [f"1.2.826.0.1.3680043.9.7433.9.15{i}" for i in range(4)]
    plan = {_path(uid): [(200, _body(_ct_series(uid, 1)))] for uid in uids}
    with _Server(plan) as server:
        result = harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                         progress=False)
    assert result.by_status == {"ok": 4}
    assert made == ["harvest_0"]  # one worker thread: one session for its four series (the probe has its own)
    assert names == {"harvest_0"}


def test_the_bar_follows_the_terminal_width_as_it_changes(tmp_path, capsys, monkeypatch):
    """The terminal's size as tqdm asks it (``tqdm.std._screen_shape_wrapper``: stderr is captured here) changes after
    the bar was drawn; the bar's last line takes the new width (``dynamic_ncols``)."""
    import tqdm.std

    import cohort.harvest.runner as runner

    width = [61]
    monkeypatch.setattr(tqdm.std, "_screen_shape_wrapper", lambda: lambda fp: (width[0] - 1, 19))
    real = runner._Run._take

    def take(self, outcome, bar):
        width[0] = 101
        return real(self, outcome, bar)

    monkeypatch.setattr(runner._Run, "_take", take)
    uid = "1.2.826.0.1.3680043.9.7433.9.160"
    with _Server({_path(uid): [(200, _body(_ct_series(uid, 1)))]}) as server:
        harvest([(STUDY, uid)], tmp_path, server.url, workers=1, rate=None, policy=ONCE, progress=True)
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip()]
    assert len(lines[0]) == 60 and len(lines[-1]) == 100, lines


def test_the_probe_runs_under_the_run_s_policy(tmp_path):
    """One attempt allowed: the probe's 503 is not asked again (the default policy would retry it and pass)."""
    plan = {"/studies": [(503, b"busy"), (200, b"[]")]}
    with _Server(plan) as server, pytest.raises(HarvestError) as err:
        harvest([(STUDY, "1.2.9.170")], tmp_path, custom(server.url, name="srv"), workers=1, rate=None, policy=ONCE,
                progress=False)
    assert str(err.value) == (f"srv is not available: GET {server.url}/studies?limit=1 answered HTTP 503 after 1 "
                              "attempts; try again later")
    assert server.count["/studies"] == 1


def test_every_request_the_probe_s_too_takes_a_token_of_one_shared_limiter(tmp_path, monkeypatch):
    import cohort.harvest.runner as runner
    from cohort.retry import RateLimiter

    made, taken = [], []

    class Recording(RateLimiter):
        def __init__(self, rate, burst=1):
            made.append((rate, burst))
            super().__init__(rate, burst=burst)

        def acquire(self, stop=None):
            taken.append(id(self))
            return super().acquire(stop)

    monkeypatch.setattr(runner, "RateLimiter", Recording)
    uids = [f"1.2.9.18{i}" for i in range(3)]
    plan = {_path(uids[0]): [(503, b""), (204, b"")]}
    with _Server(plan) as server:
        harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=3, rate=1000.0, policy=NOW_RETRY,
                progress=False)
        harvest([(STUDY, "1.2.9.189")], tmp_path / "one", server.url, workers=1, rate=None, policy=ONCE,
                progress=False)
        asked = len(server.requests)
    assert made == [(1000.0, 3), (None, 1)]
    assert len(taken) == asked == 1 + 4 + 1 + 1  # the probes, three series (one asked twice), the probe, one series
    assert len(set(taken)) == 2


def test_a_failed_probe_stops_the_run_before_the_rest_is_asked(tmp_path, monkeypatch):
    """One worker: the probe (on its own thread) fails; the server answers no series before the probe's future is
    done, so the main loop sees the failure when it takes the first series and stops: at most the series submitted
    beside it (two in the pool per worker) and the one submitted after it were asked, not the ten."""
    import cohort.harvest.runner as runner

    started: list = []
    real_start = runner._Probes.start

    def start(self):
        started.append(self)
        real_start(self)

    def probe_done():
        return bool(started) and all(f.done() for f in started[0]._futures)

    monkeypatch.setattr(runner._Probes, "start", start)
    uids = [f"1.2.9.19{i}" for i in range(10)]
    plan = {"/studies": [(404, b"no")], **{_path(uid): [("until", probe_done, (204, b""))] for uid in uids}}
    with _Server(plan) as server, pytest.raises(HarvestError) as err:
        harvest([(STUDY, uid) for uid in uids], tmp_path, custom(server.url, name="srv"), workers=1, rate=None,
                policy=ONCE, progress=False, flush_seconds=3600)
    assert server.gates_timed_out == 0
    assert str(err.value).startswith("srv does not answer as a DICOMweb service: ")
    asked = [p for p, _, _ in server.requests if p != "/studies"]
    assert 1 <= len(asked) <= 3 and asked == [_path(uid) for uid in uids[:len(asked)]]
    assert not list((tmp_path / "commits").glob("*.json"))


def test_workers_ask_for_series_at_once_each_held_until_the_other_is_asked(tmp_path):
    """Two workers: each series is answered only once the other's request has arrived, which needs both in flight."""
    uids = ["1.2.9.200", "1.2.9.201"]
    counts: dict = {}

    def both_asked():
        return all(counts.get(_path(uid), 0) for uid in uids)

    plan = {_path(uid): [("until", both_asked, (204, b""))] for uid in uids}
    with _Server(plan) as server:
        counts = server.count
        result = harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=2, rate=None, policy=ONCE,
                         progress=False)
        assert server.gates_timed_out == 0
    assert result.by_status == {"empty": 2}


def test_a_batch_due_by_time_is_committed_while_a_series_is_still_out(tmp_path):
    """flush_seconds=0.2: the first series is taken at once, and the main loop, with nothing else finishing, wakes
    up to commit it once 0.2 s have passed; the second series is answered only once that commit exists."""
    uids = ["1.2.9.210", "1.2.9.211"]
    plan = {_path(uids[0]): [(204, b"")], _path(uids[1]): [("gate", 1, (204, b""))]}
    with _Server(plan, gate_dir=tmp_path) as server:
        harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=2, rate=None, policy=ONCE,
                progress=False, flush_seconds=0.2)
        assert server.gates_timed_out == 0
    commits = HarvestStore(tmp_path).commits()
    assert [[(p.kind, p.rows) for p in c.parts] for c in commits] == [[("instances", 0), ("log", 1)]] * 2


def test_without_progress_nothing_is_written_to_the_terminal(tmp_path, capsys):
    with _Server({}) as server:
        harvest([(STUDY, "1.2.9.220")], tmp_path, server.url, workers=1, rate=None, policy=ONCE, progress=False)
    assert capsys.readouterr() == ("", "")


def test_a_series_taken_after_a_ctrl_c_moves_the_bar(tmp_path, monkeypatch, capsys):
    """One worker: the first series is taken, the second is held by the server until the run waits for it after the
    Ctrl-C (then answered 404: an outcome, on the bar), the third is cancelled in the queue."""

    release = threading.Event()
    uids = ["1.2.9.230", "1.2.9.231", "1.2.9.232"]
    plan = {_path(uids[0]): [(204, b"")], _path(uids[1]): [("event", release, (404, b""))]}
    _ctrl_c_when(monkeypatch, lambda: server.count.get(_path(uids[1])), release)
    with _Server(plan) as server:
        result = harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                         progress=True)
        asked = [p for p, _, _ in server.requests if p != "/studies"]
    assert result.interrupted and result.by_status == {"empty": 1, "not_found": 1}
    assert asked == [_path(uids[0]), _path(uids[1])]
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "| 2/3 [" in last and "empty=1" in last and "not_found=1" in last


def _pool_releasing(release: threading.Event) -> type:
    """The runner's ThreadPoolExecutor, setting ``release`` when the run's pool shuts down (not the probe's,
    which is shut down without waiting as soon as it has its probe)."""
    import cohort.harvest.runner as runner

    class Pool(runner.ThreadPoolExecutor):
        def shutdown(self, wait=True, **kwargs):
            if wait:
                release.set()
            return super().shutdown(wait, **kwargs)

    return Pool


def test_after_a_failed_probe_queued_series_are_cancelled_and_running_ones_awaited(tmp_path, monkeypatch):
    """One worker: the probe (on its own thread) fails at once; when the main loop takes the first series the second
    is running (held by the server until the pool is shut down, then answered 0.3 s later) and the third queued: the
    third is never asked (a rate limit lets a request through without looking at the stop, so only the cancel keeps
    it back), and no worker thread of the run is left when harvest() raises."""
    import cohort.harvest.runner as runner

    release = threading.Event()
    uids = ["1.2.9.240", "1.2.9.241", "1.2.9.242"]
    plan = {"/studies": [(404, b"no")], _path(uids[0]): [(204, b"")],
            _path(uids[1]): [("event", release, ("slow", 0.3, (204, b"")))]}
    real_finished = runner._finished

    def finished(done, timeout):
        got = real_finished(done, timeout)
        deadline = time.monotonic() + HOLD
        while got and not server.count.get(_path(uids[1])) and time.monotonic() < deadline:
            time.sleep(0.01)  # the worker takes the second series once it is done with the first
        return got

    Pool = _pool_releasing(release)

    monkeypatch.setattr(runner, "_finished", finished)
    monkeypatch.setattr(runner, "ThreadPoolExecutor", Pool)
    with _Server(plan) as server:
        with pytest.raises(HarvestError):
            harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=1, rate=1e6, policy=ONCE,
                    progress=False, flush_seconds=3600)
        alive = [t.name for t in threading.enumerate() if t.name.startswith("harvest_")]
        asked = [p for p, _, _ in server.requests if p != "/studies"]
    assert alive == []
    assert asked == [_path(uids[0]), _path(uids[1])]
    assert not list((tmp_path / "commits").glob("*.json"))


def test_at_most_two_series_per_worker_wait_in_the_pool(tmp_path, monkeypatch):
    """The probe answers once two series were submitted; the pool never holds more than two series per worker
    not yet finished (the queue stays bounded whatever the cohort's size)."""
    import cohort.harvest.runner as runner

    lock, out, most = threading.Lock(), [0], [0]

    class Pool(runner.ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            if getattr(fn, "__name__", "") != "_harvest_series":
                return super().submit(fn, *args, **kwargs)
            with lock:
                out[0] += 1
                most[0] = max(most[0], out[0])
            future = super().submit(fn, *args, **kwargs)
            future.add_done_callback(lambda f: _done())
            return future

    def _done():
        with lock:
            out[0] -= 1

    monkeypatch.setattr(runner, "ThreadPoolExecutor", Pool)
    uids = [f"1.2.9.25{i}" for i in range(6)]
    plan = {"/studies": [("until", lambda: most[0] >= 2, (200, b"[]"))]}
    with _Server(plan) as server:
        result = harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                         progress=False)
        assert server.gates_timed_out == 0
    assert result.by_status == {"not_found": 6}
    assert most[0] == 2



def test_a_series_no_endpoint_serves_has_every_log_field(tmp_path):
    class Report:
        endpoints: dict = {}
        routes = pa.table({"StudyInstanceUID": [STUDY], "SeriesInstanceUID": ["1.2.260"], "endpoint": [None],
                           "series_url": [None], "reason": ["no copy"]})

    started = dt.datetime.now(dt.timezone.utc)
    result = harvest(Report(), tmp_path, workers=1, rate=None, policy=ONCE, progress=False)
    row = _log(tmp_path)["1.2.260"]
    assert started <= row.pop("finished_at") <= dt.datetime.now(dt.timezone.utc)
    assert row == {"StudyInstanceUID": STUDY, "SeriesInstanceUID": "1.2.260", "endpoint": None, "url": None,
                   "status": "not_found", "http_status": None, "attempts": 0, "instances": 0, "values_dropped": 0,
                   "bytes": 0, "seconds": 0.0, "error": "no endpoint serves this series: no copy",
                   "run_id": result.run_id}


def test_series_urls_ending_in_a_slash_or_without_a_host_are_asked_as_written(tmp_path):
    class Report:
        def __init__(self, url):
            self.endpoints = {"srv": custom(url, name="srv")}
            self.routes = pa.table({
                "StudyInstanceUID": [STUDY, STUDY],
                "SeriesInstanceUID": ["1.2.270", "1.2.271"],
                "endpoint": ["srv", "srv"],
                "series_url": [f"{url}/studies/{STUDY}/series/1.2.270/", f"/studies/{STUDY}/series/1.2.271"],
            })

    for light, leaf in ((False, "metadata"), (True, "instances")):
        plan = {f"/studies/{STUDY}/series/1.2.270/{leaf}": [(204, b"")]}
        with _Server(plan) as server:
            result = harvest(Report(server.url), tmp_path / leaf, workers=1, rate=None, policy=ONCE, progress=False,
                             light=light)
            asked = [p for p, _, _ in server.requests if p != "/studies"]
        assert asked == [f"/studies/{STUDY}/series/1.2.270/{leaf}"]
        assert result.by_status == {"empty": 1, "http_error": 1}
        log = _log(tmp_path / leaf)
        assert log["1.2.270"]["url"] == f"{server.url}/studies/{STUDY}/series/1.2.270/{leaf}"
        relative = f"/studies/{STUDY}/series/1.2.271/{leaf}"
        assert (log["1.2.271"]["url"], log["1.2.271"]["error"]) == (
            relative, f"MissingSchema: Invalid URL '{relative}': No scheme supplied. Perhaps you meant https://{relative}?")


def test_an_error_body_cut_short_is_asked_again(tmp_path):
    series = "1.2.9.280"
    plan = {_path(series): [("cut", b"x" * 5000, 100, 503), (404, b"gone")]}
    with _Server(plan) as server:
        result = harvest([(STUDY, series)], tmp_path, server.url, workers=1, rate=None, policy=NOW_RETRY,
                         progress=False)
    assert result.by_status == {"not_found": 1}
    row = _log(tmp_path)[series]
    assert (row["attempts"], row["error"], row["bytes"]) == (2, "HTTP 404: gone", 4)


def test_the_bar_never_shows_a_status_before_its_series_is_counted(tmp_path, capsys):
    with _Server({}) as server:
        harvest([(STUDY, "1.2.9.290")], tmp_path, server.url, workers=1, rate=None, policy=ONCE, progress=True)
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip()]
    assert "1/1 [" in lines[-1] and "not_found=1" in lines[-1]
    assert not [line for line in lines if "0/1 [" in line and "not_found" in line], lines


def test_a_probe_failing_before_any_series_finished_stops_the_run(tmp_path, monkeypatch):
    """Two workers, every series held by the server until the pool is shut down: the main loop, with nothing
    finished, wakes up, sees the failed probe and stops; the queued series are never asked."""
    import cohort.harvest.runner as runner

    release = threading.Event()
    uids = [f"1.2.9.30{i}" for i in range(6)]
    plan = {"/studies": [(404, b"no")], **{_path(uid): [("event", release, (204, b""))] for uid in uids}}

    Pool = _pool_releasing(release)

    monkeypatch.setattr(runner, "ThreadPoolExecutor", Pool)
    with _Server(plan) as server:
        with pytest.raises(HarvestError) as err:
            harvest([(STUDY, uid) for uid in uids], tmp_path, custom(server.url, name="srv"), workers=2, rate=None,
                    policy=ONCE, progress=False, flush_seconds=3600)
        asked = {p for p, _, _ in server.requests if p != "/studies"}
        assert server.gates_timed_out == 0
    assert str(err.value).startswith("srv does not answer as a DICOMweb service: ")
    assert asked <= {_path(uids[0]), _path(uids[1])}
    assert not list((tmp_path / "commits").glob("*.json"))


def test_the_json_bytes_counted_for_a_batch_start_from_zero_after_each_commit(tmp_path, monkeypatch):
    """FLUSH_BYTES one byte more than one instance's text: two single-instance series make a batch, one does not;
    the third series is answered after the first commit, the fourth once the third was taken."""
    import cohort.harvest.runner as runner

    uids = [f"1.2.826.0.1.3680043.9.7433.9.31{i}" for i in range(4)]
    text = len(json.dumps(_ct_series(uids[0], 1)[0]))
    monkeypatch.setattr(runner, "FLUSH_BYTES", text + 1)
    taken = []
    real = runner._Run._take

    def take(self, outcome, bar):
        taken.append(outcome)
        return real(self, outcome, bar)

    monkeypatch.setattr(runner._Run, "_take", take)
    plan = {_path(uid): [(200, _body(_ct_series(uid, 1)))] for uid in uids[:2]}
    plan[_path(uids[2])] = [("gate", 1, (200, _body(_ct_series(uids[2], 1))))]
    plan[_path(uids[3])] = [("until", lambda: len(taken) >= 3, (200, _body(_ct_series(uids[3], 1))))]
    with _Server(plan, gate_dir=tmp_path) as server:
        harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                progress=False, flush_instances=1000, flush_seconds=3600)
        assert server.gates_timed_out == 0
    commits = HarvestStore(tmp_path).commits()
    assert [[p.rows for p in c.parts] for c in commits] == [[2, 2], [2, 2]]



def test_the_endpoint_s_own_secret_is_redacted_from_every_error_even_when_not_credential_shaped(tmp_path, monkeypatch):
    """An API key of plain letters (not shaped like a credential: only the session's own secrets can redact it),
    echoed by the server in a 404, a 500 and a 401 body (the 401's message: its first 120 characters)."""
    from cohort.endpoints import HeaderAuth

    monkeypatch.setenv("RUNNER_TEST_KEY", "lettersonly")
    plan = {_path("1.2.9.320"): [(404, b"no series for key {echo}")],
            _path("1.2.9.321"): [(500, b"failed for {echo} today")]}
    with _Server(plan) as server:
        server.echo = "apikey"
        endpoint = custom(server.url, auth=HeaderAuth("apikey", "RUNNER_TEST_KEY"), name="srv")
        result = harvest([(STUDY, "1.2.9.320"), (STUDY, "1.2.9.321")], tmp_path / "a", endpoint, workers=1,
                         rate=None, policy=ONCE, progress=False)
        assert server.echoed == "lettersonly"
    assert result.by_status == {"not_found": 1, "http_error": 1}
    log = _log(tmp_path / "a")
    assert log["1.2.9.320"]["error"] == "HTTP 404: no series for key [redacted]"
    assert log["1.2.9.321"]["error"] == "HTTP 500: failed for [redacted] today"
    body = b"refused key {echo} " + b"y" * 300
    with _Server({_path("1.2.9.322"): [(401, body)]}) as server, pytest.raises(HarvestError) as err:
        server.echo = "apikey"
        endpoint = custom(server.url, auth=HeaderAuth("apikey", "RUNNER_TEST_KEY"), name="srv")
        harvest([(STUDY, "1.2.9.322")], tmp_path / "b", endpoint, workers=1, rate=None, policy=ONCE, progress=False)
    answer = ("refused key [redacted] " + "y" * 300)[:120]
    assert str(err.value) == (f"authentication failed for srv: check --auth (GET {server.url}{_path('1.2.9.322')} "
                              f"answered HTTP 401: {answer}); the series finished before it are kept in "
                              f"{tmp_path / 'b'}")


def test_a_series_logs_the_seconds_its_requests_took(tmp_path):
    plan = {_path("1.2.9.330"): [("slow", 0.06, (204, b""))]}
    started = time.monotonic()
    with _Server(plan) as server:
        harvest([(STUDY, "1.2.9.330")], tmp_path, server.url, workers=1, rate=None, policy=ONCE, progress=False)
    took = time.monotonic() - started
    seconds = _log(tmp_path)["1.2.9.330"]["seconds"]
    assert 0.06 <= seconds <= took and seconds == round(seconds, 4)


def test_times_are_stored_in_utc_whatever_the_local_zone(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        uid = "1.2.826.0.1.3680043.9.7433.9.340"
        started = dt.datetime.now(dt.timezone.utc)
        with _Server({_path(uid): [(200, _body(_ct_series(uid, 1)))]}) as server:
            harvest([(STUDY, uid), (STUDY, "1.2.9.341")], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                    progress=False)
        ended = dt.datetime.now(dt.timezone.utc)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    log = _log(tmp_path)
    assert all(started <= row["finished_at"] <= ended for row in log.values())
    [row] = HarvestStore(tmp_path).read_instances().to_pylist()
    assert started <= row["harvested_at"] <= ended


def test_a_bar_is_shown_unless_asked_not_to(tmp_path, capsys):
    with _Server({}) as server:
        harvest([(STUDY, "1.2.9.350")], tmp_path, server.url, workers=1, rate=None, policy=ONCE)
    assert "harvest: 100%" in capsys.readouterr().err


def test_a_series_streams_parts_of_5000_instances_by_default(tmp_path):
    """5,001 small instances (a SOP Instance UID each): a part of 5,000 is written while the body streams in, then
    the last one with the log row."""
    series = "1.2.9.360"
    body = ("[" + ",".join('{"00080018": {"vr": "UI", "Value": ["1.2.9.360.%d"]}}' % i for i in range(5001))
            + "]").encode()
    with _Server({_path(series): [(200, body)]}) as server:
        result = harvest([(STUDY, series)], tmp_path, server.url, workers=1, rate=None, policy=ONCE, progress=False)
    assert result.instances == 5001
    [commit] = HarvestStore(tmp_path).commits()
    assert [(p.kind, p.rows) for p in commit.parts] == [("instances", 5000), ("instances", 1), ("log", 1)]


def test_a_batch_is_due_once_ten_seconds_have_passed_by_default(tmp_path, monkeypatch):
    """The runner's clock is the test's: it reads 0 when the run starts and 10.0 once the first series was taken;
    the second series is answered only after that. 10 s have passed (due, committed alone); then none more."""
    import types

    import cohort.harvest.runner as runner

    clock, taken = [0.0], []
    monkeypatch.setattr(runner, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    real = runner._Run._take

    def take(self, outcome, bar):
        taken.append(outcome)
        clock[0] = 10.0
        return real(self, outcome, bar)

    monkeypatch.setattr(runner._Run, "_take", take)
    uids = ["1.2.9.370", "1.2.9.371"]
    plan = {_path(uids[1]): [("until", lambda: len(taken) >= 1, (404, b""))]}
    with _Server(plan) as server:
        result = harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=1, rate=None, policy=ONCE,
                         progress=False)
        assert server.gates_timed_out == 0
    assert result.seconds == 10.0
    commits = HarvestStore(tmp_path).commits()
    assert [[(p.kind, p.rows) for p in c.parts] for c in commits] == [[("instances", 0), ("log", 1)]] * 2


def test_a_list_of_pairs_with_an_endpoints_attribute_is_still_a_list_of_pairs():
    class Pairs(list):
        endpoints = {"x": None}  # not a coverage report: it has no routes

    endpoint = custom("http://h/w", name="w")
    tasks, endpoints = series_tasks(Pairs([("1.2", "1.2.3")]), endpoint)
    assert tasks == [SeriesTask("1.2", "1.2.3", "w", "http://h/w/studies/1.2/series/1.2.3")]
    assert endpoints == {"w": endpoint}



def test_the_pool_is_filled_to_two_series_per_worker_at_the_start_and_after_each_take(tmp_path, monkeypatch):
    """Two workers. The main loop's first wait for finished series is held until four series were submitted (the
    first fill); the second to fourth series are answered only once a fifth was submitted, which the fill after
    taking the first must do while they are still out."""
    import cohort.harvest.runner as runner

    submitted, short = [0], []

    class Pool(runner.ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            if getattr(fn, "__name__", "") == "_harvest_series":
                submitted[0] += 1
            return super().submit(fn, *args, **kwargs)

    real_finished = runner._finished

    def finished(done, timeout):
        deadline = time.monotonic() + HOLD
        while not short and submitted[0] < 4:
            if time.monotonic() > deadline:
                short.append(submitted[0])
                break
            time.sleep(0.01)
        return real_finished(done, timeout)

    monkeypatch.setattr(runner, "ThreadPoolExecutor", Pool)
    monkeypatch.setattr(runner, "_finished", finished)
    uids = [f"1.2.9.38{i}" for i in range(6)]
    plan = {_path(uid): [("until", lambda: submitted[0] >= 5, (204, b""))] for uid in uids[1:4]}
    plan[_path(uids[0])] = [(204, b"")]
    with _Server(plan) as server:
        result = harvest([(STUDY, uid) for uid in uids], tmp_path, server.url, workers=2, rate=None, policy=ONCE,
                         progress=False)
        assert server.gates_timed_out == 0
    assert short == [] and result.by_status == {"empty": 4, "not_found": 2}


def test_an_error_text_quoting_the_body_is_redacted_of_the_endpoint_s_secret(tmp_path, monkeypatch):
    """A body echoing the API key (plain letters: not credential-shaped), whose row cannot be read (injected: the
    error quotes the value): the logged "unreadable metadata" text has the key redacted."""
    import cohort.harvest.runner as runner
    from cohort.endpoints import HeaderAuth

    def failing(instance, *args):
        raise TypeError("cannot read " + instance["00081030"]["Value"][0])

    monkeypatch.setattr(runner, "instance_row", failing)
    monkeypatch.setenv("RUNNER_TEST_KEY", "lettersonly")
    series = "1.2.9.390"
    body = b'[{"00080018": {"vr": "UI", "Value": ["1.2.3"]}, "00081030": {"vr": "LO", "Value": ["key {echo}"]}}]'
    with _Server({_path(series): [(200, body)]}) as server:
        server.echo = "apikey"
        endpoint = custom(server.url, auth=HeaderAuth("apikey", "RUNNER_TEST_KEY"), name="srv")
        harvest([(STUDY, series)], tmp_path, endpoint, workers=1, rate=None, policy=ONCE, progress=False)
        assert server.echoed == "lettersonly"
    assert _log(tmp_path)[series]["error"] == "unreadable metadata (TypeError: cannot read key [redacted])"
