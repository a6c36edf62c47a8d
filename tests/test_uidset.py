"""UID lookups through the local copy's UID file: the same answers as the shipped Parquet files, read
here with pyarrow, including for UIDs that share a CRC-32, odd strings, and a UID file that is
missing, cut short or altered (the lookups then fall back to the tables and are still right)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cohort import Catalog, Cohort, CohortInputError
from cohort.localcopy import FINGERPRINTS, LocalCopy
from cohort.tables import data_version, known_tables
from cohort.uidset import UidSet, uid_hash, write
from fixtures.index_tables import PANCREAS_SLIDE

SHIPPED = {name: known_tables()[name].bundled_path for name in ("index", "prior_versions_index")}


@pytest.fixture(scope="module")
def shipped_uids() -> tuple[list[str], set[str], list[str]]:
    """(index UIDs in file order, every UID of both tables, UIDs only in prior_versions_index), read with pyarrow."""
    current = pq.read_table(SHIPPED["index"], columns=["SeriesInstanceUID"]).column(0).to_pylist()
    prior = pq.read_table(SHIPPED["prior_versions_index"], columns=["SeriesInstanceUID"]).column(0).to_pylist()
    return current, set(current) | set(prior), sorted(set(prior) - set(current))


ODD = ["", " ", "1.2.3.not.a.series", "x'y; DROP TABLE index", "ü.1.2", "1.2\udcff", "1.2\x00.3", "9" * 200, PANCREAS_SLIDE + " ",
       " " + PANCREAS_SLIDE, PANCREAS_SLIDE.upper() + "x"]


def _expected(wanted: list[str], known: set[str]) -> list[str]:
    return [u for u in dict.fromkeys(wanted) if u not in known]


def _wanted(shipped_uids) -> list[str]:
    current, _, prior_only = shipped_uids
    return current[::3001] + prior_only[::97] + ODD + current[:5] + [PANCREAS_SLIDE]


def test_unknown_uids_match_the_shipped_files(catalog, shipped_uids):
    assert catalog._local is not None and catalog._local.uid_set() is not None  # the UID file answers
    wanted = _wanted(shipped_uids)
    assert len(wanted) > 400
    assert catalog.unknown_uids(wanted) == _expected(wanted, shipped_uids[1])
    assert catalog.unknown_uids([]) == []


def test_unknown_uids_without_the_local_copy_agree(shipped_uids):
    wanted = _wanted(shipped_uids)
    assert Catalog(download=False, local_copy=False).unknown_uids(wanted) == _expected(wanted, shipped_uids[1])


def test_from_uids_names_the_unknown_ones(catalog, shipped_uids):
    current, _, prior_only = shipped_uids
    cohort = Cohort.from_uids(current[:1000:7] + prior_only[:3], catalog=catalog)
    assert len(cohort) == len(current[:1000:7]) + 3
    with pytest.raises(CohortInputError, match="1 of 3 SeriesInstanceUIDs .* 1.2.3.not.a.series"):
        Cohort.from_uids([current[0], "1.2.3.not.a.series", prior_only[0]], catalog=catalog)


def _collisions(path: Path) -> list[tuple[str, str]]:
    """Pairs of UIDs of the file with the same CRC-32 (a million UIDs have a hundred or so), read with pyarrow."""
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    h, uids = table.column("h").to_pylist(), table.column("uid").to_pylist()
    return [(uids[i], uids[i + 1]) for i in range(len(h) - 1) if h[i] == h[i + 1]][:20]


def test_a_shared_hash_never_makes_an_unknown_uid_known(catalog, tmp_path):
    pairs = _collisions(catalog._local.uid_file)
    assert pairs and all(uid_hash(a) == uid_hash(b) and a != b for a, b in pairs)
    assert all(catalog._local.uid_set().known([b, a]) == [True, True] for a, b in pairs)
    con = duckdb.connect()
    for keep in (0, 1):  # a file with one UID of each pair: the other one is unknown, whichever comes first
        con.register("kept", pa.table({"u": [pair[keep] for pair in pairs] + [PANCREAS_SLIDE]}))
        path = tmp_path / f"kept{keep}.arrow"
        rows = write(con, "SELECT u FROM kept", path)
        uid_set = UidSet(path, rows)
        assert uid_set.known([p[0] for p in pairs]) == [keep == 0] * len(pairs)
        assert uid_set.known([p[1] for p in pairs]) == [keep == 1] * len(pairs)
        assert uid_set.known([PANCREAS_SLIDE, "x"]) == [True, False]


# -- faults: a private copy of the session catalog's copy, with its UID file damaged in one way each ------
@pytest.fixture
def private_copy(tmp_path, catalog) -> Path:
    """A cache directory holding the session's copy (hard-linked, never written) and a copy of its UID file."""
    where = tmp_path / "cache"
    where.mkdir()
    made = catalog._local
    try:
        os.link(made.path, where / made.path.name)
    except OSError:
        shutil.copyfile(made.path, where / made.path.name)
    shutil.copyfile(made.uid_file, where / made.uid_file.name)
    shutil.copyfile(made.directory / FINGERPRINTS, where / FINGERPRINTS)
    return where


def _damage_catalog(private_copy: Path, damage) -> Catalog:
    uid_file = next(private_copy.glob("*.uids-*.arrow"))
    damage(uid_file)
    cat = Catalog(download=False, local_copy=private_copy)
    assert cat.local_copy == private_copy / cat.local_copy.name  # the copy itself is used (not remade)
    return cat


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _alter_a_uid(path: Path) -> None:
    """Change one digit of the tutorial slide's UID inside the file (the file still opens)."""
    data = bytearray(path.read_bytes())
    at = data.find(PANCREAS_SLIDE.encode())
    assert at > 0
    data[at + len(PANCREAS_SLIDE) - 3] ^= 0x01  # '2' <-> '3'
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [Path.unlink, _cut, lambda p: p.write_bytes(b"not arrow"), _alter_a_uid],
                         ids=["missing", "cut-in-half", "garbage", "altered-uid"])
def test_a_damaged_uid_file_never_gives_a_wrong_answer(private_copy, damage, shipped_uids, caplog):
    caplog.set_level(logging.INFO, logger="cohort.localcopy")
    cat = _damage_catalog(private_copy, damage)
    wanted = _wanted(shipped_uids)
    altered = PANCREAS_SLIDE[:-3] + "3" + PANCREAS_SLIDE[-2:]
    assert cat.unknown_uids(wanted + [altered]) == _expected(wanted + [altered], shipped_uids[1])
    if damage is not _alter_a_uid:
        assert cat._local.uid_set() is None and "not using the UID file" in caplog.text
    assert "making the local index copy" not in caplog.text


def test_a_uid_file_name_outside_the_cache_is_not_opened(tmp_path, small_sources):
    copy = LocalCopy(tmp_path / "cache", small_sources, data_version())
    con = duckdb.connect()
    assert copy.attach(con)
    copy._uid_file = {"name": "../../etc/passwd", "rows": 1}
    copy._uid_set = None
    assert copy.uid_set() is None


# -- the record: content, not paths --------------------------------------------------------------------
@pytest.fixture
def small_sources(tmp_path) -> dict[str, Path]:
    out = {}
    for name, path in SHIPPED.items():
        target = tmp_path / "shipped" / f"{name}.parquet"
        target.parent.mkdir(exist_ok=True)
        pq.write_table(pq.read_table(path).slice(0, 300), target)
        out[name] = target
    return out


def _made(caplog) -> int:
    return sum("made the local index copy" in r.getMessage() for r in caplog.records)


def test_two_installs_of_the_same_files_share_one_copy(tmp_path, small_sources, caplog):
    """Two environments with the same idc-index-data (other paths, other mtimes) use one copy, not one each in turn."""
    caplog.set_level(logging.INFO, logger="cohort.localcopy")
    other = {}
    for name, path in small_sources.items():
        other[name] = tmp_path / "other-venv" / path.name
        other[name].parent.mkdir(exist_ok=True)
        shutil.copyfile(path, other[name])
        os.utime(other[name], ns=(1_000_000_000, 1_000_000_000))
    for sources in (small_sources, other, small_sources, other):
        assert LocalCopy(tmp_path / "cache", sources, data_version()).attach(duckdb.connect())
    assert _made(caplog) == 1
    remembered = json.loads((tmp_path / "cache" / FINGERPRINTS).read_text())
    assert {str(p) for p in [*small_sources.values(), *other.values()]} <= set(remembered)


def test_the_copy_is_checked_against_the_files_sha256(tmp_path, small_sources, caplog):
    """A shipped file replaced by another makes the copy again; so does a remembered sha256 that differs from
    the copy's record (sources.json says the installed file is not the one the copy was made from)."""
    caplog.set_level(logging.INFO, logger="cohort.localcopy")
    cache = tmp_path / "cache"
    assert LocalCopy(cache, small_sources, data_version()).attach(duckdb.connect())
    path = small_sources["prior_versions_index"]
    pq.write_table(pq.read_table(path).slice(0, 299), path)  # another idc-index-data's file
    con = duckdb.connect()
    assert LocalCopy(cache, small_sources, data_version()).attach(con)
    assert con.execute("SELECT count(*) FROM idc_local_copy.prior_versions_index").fetchone()[0] == 299
    assert _made(caplog) == 2
    # a sources.json that lies (right size and mtime, wrong sha256) gives a record mismatch: made again, right rows
    remembered = json.loads((cache / FINGERPRINTS).read_text())
    remembered[str(path)]["sha256"] = "0" * 64
    (cache / FINGERPRINTS).write_text(json.dumps(remembered))
    con = duckdb.connect()
    assert LocalCopy(cache, small_sources, data_version()).attach(con)
    assert _made(caplog) == 3
    assert con.execute("SELECT count(*) FROM idc_local_copy.prior_versions_index").fetchone()[0] == 299


def test_a_garbage_sources_json_is_rebuilt(tmp_path, small_sources, caplog):
    caplog.set_level(logging.INFO, logger="cohort.localcopy")
    cache = tmp_path / "cache"
    assert LocalCopy(cache, small_sources, data_version()).attach(duckdb.connect())
    (cache / FINGERPRINTS).write_text("[not, json")
    assert LocalCopy(cache, small_sources, data_version()).attach(duckdb.connect())
    assert _made(caplog) == 1
    assert set(json.loads((cache / FINGERPRINTS).read_text())) == {str(p) for p in small_sources.values()}


def test_leftovers_of_a_killed_build_do_not_matter(tmp_path, small_sources):
    cache = tmp_path / "cache"
    copy = LocalCopy(cache, small_sources, data_version())
    cache.mkdir()
    (cache / f".{copy.path.name}.999.dead.tmp").write_bytes(b"half a database")
    (cache / f".{copy.path.stem}.uids-dead.arrow.tmp").write_bytes(b"half a UID file")
    con = duckdb.connect()
    assert copy.attach(con)
    assert con.execute('SELECT count(*) FROM idc_local_copy."index"').fetchone()[0] == 300
    uids = pq.read_table(small_sources["index"], columns=["SeriesInstanceUID"]).column(0).to_pylist()
    assert copy.uid_set().known(uids[:50] + ["nope"]) == [True] * 50 + [False]


def test_a_lookup_imports_neither_pandas_nor_pyarrow_compute(catalog, shipped_uids):
    """Both cost a second and tens of MB on a cold start (pa.array(ndarray), Array.to_numpy and take import them)."""
    import subprocess
    import sys

    code = ("import sys, cohort; c = cohort.Catalog(download=False); assert c._local.uid_set() is not None; "
            f"assert c.unknown_uids({shipped_uids[0][:50]!r} + ['1.2.3.x']) == ['1.2.3.x']; "
            "print(sorted(m for m in ('pandas', 'pyarrow.compute') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
