"""Benchmark: idc-cohort's catalog against idc-index's IDCClient.sql_query, each in a cold process.

Two queries, written once and run unchanged by both:

* groupby: series, instances and size per collection and Modality over ``index``;
* lookup:  one series by its SeriesInstanceUID.

Each run is a fresh Python process (imports, start-up and the query; the OS file
cache is left as it is). Wall time is measured from process start to exit, peak
memory is the child's own maximum RSS (``os.wait4``). Both tools must return the
same rows. Targets: idc-cohort at least 20x faster and at most 1/10 of the peak
memory; the exit status is 1 when a target is missed (unless --no-check).

    python bench/bench_catalog.py [--repeat 3] [--no-check]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SERIES = "1.3.6.1.4.1.5962.99.1.3380245274.1362068963.1639762817818.2.0"  # the DICOMweb tutorial's slide
QUERIES = {
    "groupby": (
        "SELECT collection_id, Modality, count(*) AS series, sum(instanceCount) AS instances, "
        "sum(series_size_MB) AS size_MB FROM index GROUP BY collection_id, Modality"
    ),
    "lookup": (
        "SELECT collection_id, PatientID, StudyInstanceUID, Modality, series_aws_url, series_size_MB "
        f"FROM index WHERE SeriesInstanceUID = '{SERIES}'"
    ),
}
# Each child prints the row count and a digest of the rows (numbers to 3 decimals), to check the answers agree.
_DIGEST = """
import hashlib, json, numbers
def digest(rows):
    norm = sorted(tuple(f"{float(v):.3f}" if isinstance(v, numbers.Number) else str(v) for v in r) for r in rows)
    return {"rows": len(norm), "sha256": hashlib.sha256(json.dumps(norm).encode()).hexdigest()}
"""
TOOLS = {
    "idc-cohort": _DIGEST + """
import cohort
table = cohort.Catalog().sql(SQL)
print(json.dumps(digest(zip(*(c.to_pylist() for c in table.columns)))))
""",
    "idc-index": _DIGEST + """
from idc_index import IDCClient
df = IDCClient().sql_query(SQL)
print(json.dumps(digest(df.itertuples(index=False))))
""",
}
TARGET_SPEEDUP = 20
TARGET_MEMORY = 10


def run_cold(tool: str, sql: str) -> tuple[float, float, dict]:
    """Run one query in a fresh interpreter: (wall seconds, peak RSS in MB, the child's digest)."""
    code = f"SQL = {sql!r}\n" + TOOLS[tool]
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{tool} failed ({proc.returncode}):\n{proc.stderr.read().decode()}")
        out.seek(0)
        result = json.loads(out.read().decode().strip().splitlines()[-1])
    return wall, usage.ru_maxrss / 1024, result  # ru_maxrss is in KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="cold runs per tool and query; medians are shown")
    parser.add_argument("--no-check", action="store_true", help="always exit 0, even when a target is missed")
    args = parser.parse_args()

    print(f"{'query':<8} {'tool':<11} {'wall s':>8} {'peak RSS MB':>12}  rows")
    failures = []
    for qname, sql in QUERIES.items():
        medians = {}
        for tool in TOOLS:
            runs = [run_cold(tool, sql) for _ in range(args.repeat)]
            wall = statistics.median(r[0] for r in runs)
            rss = statistics.median(r[1] for r in runs)
            results = {json.dumps(r[2], sort_keys=True) for r in runs}
            medians[tool] = (wall, rss, runs[0][2])
            print(f"{qname:<8} {tool:<11} {wall:>8.2f} {rss:>12.0f}  {runs[0][2]['rows']}", flush=True)
            if len(results) != 1:
                failures.append(f"{qname}: {tool} gave different answers across runs")
        (ours_wall, ours_rss, ours), (their_wall, their_rss, theirs) = medians["idc-cohort"], medians["idc-index"]
        speedup, memory = their_wall / ours_wall, their_rss / ours_rss
        print(f"{qname:<8} ratio: {speedup:.1f}x faster, {memory:.1f}x less peak memory "
              f"(targets: >= {TARGET_SPEEDUP}x, >= {TARGET_MEMORY}x)")
        if ours != theirs:
            failures.append(f"{qname}: the answers differ ({ours} vs {theirs})")
        if speedup < TARGET_SPEEDUP:
            failures.append(f"{qname}: {speedup:.1f}x faster, target {TARGET_SPEEDUP}x")
        if memory < TARGET_MEMORY:
            failures.append(f"{qname}: {memory:.1f}x less memory, target {TARGET_MEMORY}x")
    for f in failures:
        print(f"MISSED {f}", file=sys.stderr)
    return 1 if failures and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
