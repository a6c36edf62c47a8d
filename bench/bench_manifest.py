"""Benchmark: writing a manifest of N current series (default 100,000 CT series) in every format,
against the floor: DuckDB ``COPY`` of the same rows from the index Parquet to a file, in the same run.

Each measurement runs in its own child process (so peak memory is its own): the child opens the
catalog and selects the cohort (not timed), then times one write. Ours is
``write_manifest(cohort, path, citations=False)`` end to end (coverage routes, revision choice,
provenance, file). The floor is one ``COPY (SELECT ... FROM read_parquet(index) ...) TO path``
of the same series, sorted the same way: for s5cmd the same ``cp`` lines, for the table formats
the index columns of our rows. The content is checked identical (s5cmd: the lines byte for byte;
tables: those columns, read back with DuckDB). Target (issue 13 item 1): at most 5x the floor.
The load average is printed because other processes on a 2-core machine change both timings.

    python bench/bench_manifest.py [--series 100000] [--formats s5cmd,csv,tsv,json,parquet] [--no-check]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 5.0
FORMATS = ("s5cmd", "csv", "tsv", "json", "parquet")
ORDER = "collection_id, PatientID, StudyInstanceUID, SeriesInstanceUID"
#: The index columns every table format writes (the floor writes these; ours writes more).
INDEX_COLUMNS = ("PatientID", "collection_id", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                 "crdc_series_uuid", "source_DOI", "license_short_name", "series_size_MB", "instanceCount")
SELECT = "SELECT SeriesInstanceUID FROM index WHERE Modality = 'CT' ORDER BY SeriesInstanceUID LIMIT {n}"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, fmt: str, n: int, path: str) -> dict:
    import duckdb

    from cohort import Catalog, Cohort
    from cohort.manifest import write_manifest

    catalog = Catalog(download=False)
    cohort = Cohort.from_sql(SELECT.format(n=n), catalog=catalog)
    uids = cohort.result.select(["SeriesInstanceUID"])
    before = _rss_mb()
    start = time.perf_counter()
    if kind == "ours":
        write_manifest(cohort, path, format=fmt, citations=False)
    else:
        con = duckdb.connect()
        con.register("_uids", uids)
        index = str(catalog.store.path("index")).replace("'", "''")
        if fmt == "s5cmd":
            select = (f"SELECT 'cp s3://' || aws_bucket || '/' || crdc_series_uuid || '/* .' AS line "
                      f"FROM read_parquet('{index}') SEMI JOIN _uids USING (SeriesInstanceUID) ORDER BY {ORDER}")
            options = "HEADER false"
        else:
            select = (f"SELECT {', '.join(INDEX_COLUMNS)}, 's3://' || aws_bucket || '/' || crdc_series_uuid || '/*' "
                      f"AS aws_url FROM read_parquet('{index}') SEMI JOIN _uids USING (SeriesInstanceUID) "
                      f"ORDER BY {ORDER}")
            options = {"csv": "HEADER", "tsv": "HEADER, DELIMITER '\t'", "json": "FORMAT json, ARRAY true",
                       "parquet": "FORMAT parquet"}[fmt]
        con.execute(f"COPY ({select}) TO '{path}' ({options})")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_MB": _rss_mb(), "before_MB": before}


def run_child(kind: str, fmt: str, n: int, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, fmt, str(n), str(path)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def same_content(fmt: str, ours: Path, floor: Path) -> bool:
    import duckdb

    if fmt == "s5cmd":
        mine = [ln for ln in ours.read_text().splitlines() if not ln.startswith("#")]
        return mine == floor.read_text().splitlines()
    cols = ", ".join((*INDEX_COLUMNS, "aws_url"))
    reader = {"csv": "read_csv('{}')", "tsv": "read_csv('{}', delim='\t')", "json": None,
              "parquet": "read_parquet('{}')"}[fmt]
    if fmt == "json":
        rows = json.loads(ours.read_text())["series"]
        floor_rows = duckdb.sql(f"SELECT {cols} FROM read_json('{floor}')").fetchall()
        mine = [tuple(str(r[c]) for c in (*INDEX_COLUMNS, "aws_url")) for r in rows]
        return mine == [tuple(map(str, r)) for r in floor_rows]  # read_json types uuids as UUID
    mine = duckdb.sql(f"SELECT {cols} FROM {reader.format(ours)}").fetchall()
    theirs = duckdb.sql(f"SELECT {cols} FROM {reader.format(floor)}").fetchall()
    return mine == theirs


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, fmt, n, path = sys.argv[2:6]
        print(json.dumps(child(kind, fmt, int(n), path)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--no-check", action="store_true", help="Exit 0 even when the target is missed.")
    args = parser.parse_args()
    missed = []
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'format':8} {'ours s':>8} {'floor s':>8} {'ratio':>6} {'ours MB':>8} {'floor MB':>8}  same content")
    with tempfile.TemporaryDirectory(prefix="bench-manifest-") as tmp:
        for fmt in args.formats.split(","):
            ours, floor = Path(tmp) / f"ours.{fmt}", Path(tmp) / f"floor.{fmt}"
            a = run_child("ours", fmt, args.series, ours)
            b = run_child("floor", fmt, args.series, floor)
            ratio = a["seconds"] / b["seconds"]
            same = same_content(fmt, ours, floor)
            print(f"{fmt:8} {a['seconds']:8.2f} {b['seconds']:8.2f} {ratio:6.1f} {a['peak_MB']:8.0f} "
                  f"{b['peak_MB']:8.0f}  {same}   (load {os.getloadavg()[0]:.2f})")
            if ratio > TARGET_RATIO or not same:
                missed.append(fmt)
            print(f"ROW|manifest of {args.series:,} series, {fmt}|{a['seconds']:.2f} s, {a['peak_MB']:.0f} MB|"
                  f"DuckDB COPY: {b['seconds']:.2f} s, {b['peak_MB']:.0f} MB|{ratio:.1f}x|<= {TARGET_RATIO:g}x, same "
                  f"content|{'met' if fmt not in missed else 'MISSED'} (same content: {same}; load "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    print(f"{args.series:,} series; target: at most {TARGET_RATIO:g}x the DuckDB COPY floor, same content; "
          + (f"missed for {', '.join(missed)}" if missed else "met for every format"))
    return 1 if missed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
