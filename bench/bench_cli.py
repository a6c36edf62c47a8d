"""Benchmark: a cold ``cohort query FILE -f csv`` against a bare DuckDB ``python -c`` process
running the same query over the same index and printing CSV, same run.

Both are fresh interpreters (byte code cached in a temporary PYTHONPYCACHEPREFIX after one
untimed run each, as an installed package would have it). Wall time from process start to
exit and peak RSS (``os.wait4``), medians of --repeat. The CSV both print must be the same.
Target (issue 13): the CLI at most 2x the bare DuckDB process. Exit status 1 when missed
(unless --no-check). Prints ``ROW|`` lines for bench/run_all.py.

    python bench/bench_cli.py [--repeat 5] [--no-check]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUERY = "SELECT count(*) AS series, sum(instanceCount) AS instances FROM index"
TARGET_RATIO = 2.0

BARE = """
import duckdb
con = duckdb.connect()
con.execute("CREATE VIEW index AS SELECT * FROM read_parquet('{path}')")
con.sql({query!r}).write_csv('/dev/stdout')
"""


def run(argv: list[str], env: dict) -> tuple[float, float, str]:
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{argv} failed:\n{proc.stderr.read().decode()[-2000:]}")
        out.seek(0)
        return wall, usage.ru_maxrss / 1024, out.read().decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()

    # in a child, so that this process stays small (a child's peak RSS starts from the parent's at fork)
    index_path = subprocess.run(  # and the local copy exists before timing
        [sys.executable, "-c", "from cohort import Catalog; print(Catalog(download=False).store.path('index'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    cache = tempfile.mkdtemp(prefix="bench-cli-pyc-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache
    with tempfile.TemporaryDirectory() as tmp:
        query_file = Path(tmp) / "count.sql"
        query_file.write_text(QUERY + "\n")
        commands = {
            "cohort query FILE -f csv": [sys.executable, "-m", "cohort.cli", "query", str(query_file), "-f", "csv"],
            "bare DuckDB python -c": [sys.executable, "-c", BARE.format(path=index_path, query=QUERY)],
        }
        results = {}
        for label, argv in commands.items():
            run(argv, env)  # compiles the byte code into the cache
        for _ in range(args.repeat):  # interleaved, so that load changes hit both alike
            for label, argv in commands.items():
                results.setdefault(label, []).append(run(argv, env))
    shutil.rmtree(cache, ignore_errors=True)

    load = f"{os.getloadavg()[0]:.1f}"
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in results.items()}
    outputs = {k: {r[2].replace('"', "") for r in v} for k, v in results.items()}
    (ours, ours_mb), (bare, bare_mb) = med["cohort query FILE -f csv"], med["bare DuckDB python -c"]
    same = outputs["cohort query FILE -f csv"] == outputs["bare DuckDB python -c"]
    ratio = ours / bare
    print(f"query: {QUERY}; load average {load} on {os.cpu_count()} cores; medians of {args.repeat}")
    for label, (wall, mb) in med.items():
        print(f"  {label:<26} {wall:6.3f} s  {mb:5.0f} MB")
    print(f"  ratio: {ratio:.2f}x (target <= {TARGET_RATIO}x); same CSV: {same}")
    met = same and ratio <= TARGET_RATIO
    print(f"ROW|cold cohort query FILE -f csv|{ours:.3f} s, {ours_mb:.0f} MB|bare DuckDB: {bare:.3f} s, "
          f"{bare_mb:.0f} MB|{ratio:.2f}x|<= {TARGET_RATIO}x|{'met' if met else 'MISSED'}")
    return 0 if met or args.no_check else 1


if __name__ == "__main__":
    sys.exit(main())
