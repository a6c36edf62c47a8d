"""Benchmark: building ``dicom_metadata`` (and the derived tables) vs a loop of pydicom ``Dataset.from_json``.

The same instance JSON for both: a harvest directory (real HarvestStore parts) holding N instances,
cycled from real DICOM JSON of others (../shared/realdata: IDC slides' WADO-RS metadata, Part-10 SM/CT
files) and pydicom's CT/MR test files, each copy with its own SOP/Series UIDs.

- ours: ``write_dicom_metadata``: discovery and dicom_metadata.parquet (every attribute a typed column),
  read from the harvest's Parquet parts and written to Parquet. The whole ``build_archive`` (plus the six
  derived idc-index tables) is timed too and printed beside it.
- anchor: what a user would write: ``[Dataset.from_json(text) for text in instances_json]`` (a bulk data
  handler is passed so that pydicom does not warn for every BulkDataURI, which only makes the anchor
  faster); it gives Datasets, not a table, so the anchor does strictly less.

Target (issue 11): ours >= 10x faster. Prints both times and the ratio, with the load average.

    python bench/bench_dicom_metadata.py [--instances 1500]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
REALDATA = REPO.parent / "shared" / "realdata"


def sample_instances() -> list[dict]:
    """DICOM JSON instances of real slides, CT, MR (see the module docstring)."""
    import pydicom
    from pydicom.data import get_testdata_file

    out: list[dict] = []

    def walk(x):
        if isinstance(x, list):
            for y in x:
                walk(y)
        elif isinstance(x, dict) and "00080018" in x:
            out.append(x)
        elif isinstance(x, dict):
            for y in x.values():
                walk(y)

    for path in sorted((REALDATA / "dicom-microscopy-viewer").glob("*.json")):
        walk(json.loads(path.read_text()))
    files = [get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")]
    files += sorted(REALDATA.rglob("*.dcm")) if REALDATA.is_dir() else []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out.append(ds.to_json_dict(bulk_data_threshold=4096, bulk_data_element_handler=lambda e: "http://x/bulk"))
    return out


def write_harvest(out: Path, n: int) -> list[str]:
    """A harvest directory of ``n`` instances; returns their JSON texts."""
    import pyarrow as pa

    from cohort.harvest.metadata import instance_row
    from cohort.harvest.store import INSTANCE_SCHEMA, LOG_SCHEMA, HarvestStore

    base = sample_instances()
    now = dt.datetime.now(dt.timezone.utc)
    rows, logs, texts = [], [], []
    for i in range(n):
        inst = json.loads(json.dumps(base[i % len(base)]))
        series = f"2.25.{1000 + i // 10}"
        inst["0020000E"] = {"vr": "UI", "Value": [series]}
        inst["00080018"] = {"vr": "UI", "Value": [f"2.25.9{i}"]}
        study = (inst.get("0020000D", {}).get("Value") or ["2.25.1"])[0]
        text = json.dumps(inst)
        texts.append(text)
        row = instance_row(inst, study, series, text)
        row.update(endpoint="bench", run_id="bench", harvested_at=now)
        rows.append(row)
        if i % 10 == 0:
            logs.append(dict(StudyInstanceUID=study, SeriesInstanceUID=series, status="ok", http_status=200,
                             attempts=1, instances=10, bytes=0, seconds=0.0, endpoint="bench",
                             url=f"http://127.0.0.1/dicom-web/studies/{study}/series/{series}/metadata",
                             error=None, run_id="bench", finished_at=now))
    with HarvestStore(out).open() as store:
        store.write(pa.Table.from_pylist(rows, schema=INSTANCE_SCHEMA), pa.Table.from_pylist(logs, schema=LOG_SCHEMA))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1500)
    parser.add_argument("--no-check", action="store_true", help="exit 0 even when the target is missed")
    args = parser.parse_args()
    from pydicom import Dataset

    import duckdb

    from cohort._text import sql_list
    from cohort.archive import build_archive
    from cohort.archive.build import counted_parts, write_dicom_metadata

    with tempfile.TemporaryDirectory() as tmp:
        texts = write_harvest(Path(tmp) / "h", args.instances)
        mb = sum(map(len, texts)) / 1e6
        load0 = Path("/proc/loadavg").read_text().split()[:3]
        source = f"read_parquet({sql_list(str(p) for p in counted_parts(Path(tmp) / 'h'))})"
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        start = time.perf_counter()
        columns = write_dicom_metadata(con, source, Path(tmp) / "dicom_metadata.parquet")
        ours = time.perf_counter() - start
        start = time.perf_counter()
        build_archive(Path(tmp) / "h", "bench", force=True)
        whole = time.perf_counter() - start
        start = time.perf_counter()
        failed = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for text in texts:
                try:
                    Dataset.from_json(text, bulk_data_uri_handler=lambda *a: b"")
                except Exception:  # noqa: BLE001 - real files pydicom refuses (nested BulkDataURI) count as done
                    failed += 1
        anchor = time.perf_counter() - start
        load1 = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{args.instances:,} instances, {mb:,.1f} MB of DICOM JSON; {columns} top-level columns")
    print(f"ours   dicom_metadata (discovery + typed columns, Parquet): {ours:8.2f} s")
    print(f"       whole build_archive (+ 6 derived idc-index tables):  {whole:8.2f} s")
    print(f"anchor pydicom Dataset.from_json loop ({failed} refused):     {anchor:8.2f} s")
    ratio = anchor / ours
    print(f"ratio  anchor / ours = {ratio:.1f}x (target >= 10x); load average {' '.join(load0)} -> {' '.join(load1)}")
    print(f"ROW|dicom_metadata of {args.instances:,} instances (every attribute a typed column)|{ours:.2f} s "
          f"(whole archive {whole:.2f} s)|pydicom Dataset.from_json loop: {anchor:.2f} s|{ratio:.1f}x|>= 10x|"
          f"{'met' if ratio >= 10 else 'MISSED'} (load {' '.join(load1)})")
    raise SystemExit(0 if ratio >= 10 or args.no_check else 1)


if __name__ == "__main__":
    main()
