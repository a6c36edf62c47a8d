"""Benchmark: idc-cohort's catalog against idc-index's IDCClient.sql_query, cold and warm, same run.

idc-index runs twice: in this environment (pandas 3, where each of its queries is slow) and in
a venv of its own with ``pandas<3`` (its best case), made by this script on first use under
``bench/.venvs/`` (``pip install idc-index 'pandas<3'``; skipped with a note if that fails;
``BENCH_PANDAS2_PYTHON`` names another interpreter that has them).

Queries, written once and run unchanged by every tool:

* groupby:    series, instances and size per collection and Modality over ``index``;
* lookup:     one series by its SeriesInstanceUID;
* lookup1000: which of 1,000 SeriesInstanceUIDs are in ``index`` or ``prior_versions_index``
  (what ``Cohort.from_uids`` asks: ours through ``Catalog.unknown_uids``, idc-index with an
  IN list in ``sql_query``).

Cold: a fresh Python process per query (imports, start-up, the query); wall time from process
start to exit, peak RSS of the child (``os.wait4``). Byte code is cached in a temporary
PYTHONPYCACHEPREFIX, filled by the warm run that comes first, as an installed package has it:
without it, on a machine that sets PYTHONDONTWRITEBYTECODE, every cold idc-index process compiles
pandas again (8-9 s instead of 6.6-7.4 s here). Warm: in one process per tool, the median
of --warm runs of each query after a first one, wall time (the targets) and CPU time of the
process's threads (printed beside it: other processes on a busy machine inflate it less). All
tools must give the same answers.

Targets (issue 13): warm lookup and lookup1000 at most 10 ms and at least 5x faster than
idc-index's best warm time; cold lookup within 2x of our cold groupby. From the first catalog
benchmark (before issue 13): cold groupby at least 20x faster and at most 1/10 of the peak
memory of idc-index's best. Exit status 1 when a target is missed (unless --no-check). Prints
``ROW|`` lines for bench/run_all.py.

    python bench/bench_catalog.py [--repeat 1] [--warm 7] [--no-pandas2] [--no-pandas3] [--no-check]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PANDAS2_VENV = HERE / ".venvs" / "idc-index-pandas2"
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
    "lookup1000": None,  # UIDS: see the children
}
# Children: RUN(name) runs a query and returns its digest; they print one JSON line.
_COMMON = """
import hashlib, json, numbers, statistics, sys, time
UIDS = json.load(open(UIDS_FILE))
def digest(rows):
    norm = sorted(tuple(f"{float(v):.3f}" if isinstance(v, numbers.Number) else str(v) for v in r) for r in rows)
    return {"rows": len(norm), "sha256": hashlib.sha256(json.dumps(norm).encode()).hexdigest()}
def measure(names, warm):
    out = {}
    for name in names:
        t = time.perf_counter(); d = RUN(name); first = time.perf_counter() - t
        times, cpu = [], []
        for _ in range(warm):
            t, c = time.perf_counter(), time.process_time(); RUN(name)
            times.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
        out[name] = {"first": first, "warm": statistics.median(times) if times else None,
                     "warm_cpu": statistics.median(cpu) if cpu else None, "digest": d}
    return out
t0 = time.perf_counter()
"""
TOOLS = {
    "idc-cohort": _COMMON + """
import cohort
catalog = cohort.Catalog()
def RUN(name):
    if name == "lookup1000":
        unknown = set(catalog.unknown_uids(UIDS))
        return digest((u,) for u in UIDS if u not in unknown)
    table = catalog.sql(QUERIES[name])
    return digest(zip(*(c.to_pylist() for c in table.columns)))
""",
    "idc-index": _COMMON + """
from idc_index import IDCClient
client = IDCClient()
IN = "(" + ", ".join("'" + u + "'" for u in UIDS) + ")"
def RUN(name):
    if name == "lookup1000":
        sql = (f"SELECT SeriesInstanceUID FROM index WHERE SeriesInstanceUID IN {IN} UNION ALL "
               f"SELECT SeriesInstanceUID FROM prior_versions_index WHERE SeriesInstanceUID IN {IN}")
        return digest(set(client.sql_query(sql).itertuples(index=False)))
    return digest(client.sql_query(QUERIES[name]).itertuples(index=False))
""",
}
_TAIL = """
made = time.perf_counter() - t0
result = measure(NAMES, WARM)
print(json.dumps({"construct": made, "queries": result}))
"""
# Makes the local index copy if it is not there yet (not timed) and picks 1,000 UIDs (every 1,044th series).
PREPARE = """
import json, sys
import pandas
import pyarrow.parquet as pq
from cohort import Catalog
catalog = Catalog(download=False)
uids = pq.read_table(catalog.store.path("index"), columns=["SeriesInstanceUID"]).column(0).to_pylist()[::1044][:1000]
json.dump(uids, open(sys.argv[1], "w"))
print(f"local index copy: {catalog.local_copy}")
print(f"this environment: pandas {pandas.__version__}")
"""
TARGET_WARM_MS = 10
TARGET_WARM_RATIO = 5
TARGET_COLD_LOOKUP_VS_GROUPBY = 2
TARGET_SPEEDUP = 20
TARGET_MEMORY = 10


def pandas2_python() -> tuple[str | None, str]:
    """The venv with idc-index and pandas<3 (made on first use), or None and why not."""
    python = Path(os.environ.get("BENCH_PANDAS2_PYTHON") or PANDAS2_VENV / "bin" / "python")
    if not python.exists():
        print(f"making {PANDAS2_VENV} (idc-index with pandas<3) ...", file=sys.stderr, flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(PANDAS2_VENV)], check=True, capture_output=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "idc-index", "pandas<3"], check=True,
                           capture_output=True, timeout=1800)
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"could not make {PANDAS2_VENV}: {exc}"
    version = subprocess.run([str(python), "-c", "import pandas; print(pandas.__version__)"],
                             capture_output=True, text=True)
    if version.returncode != 0:
        return None, f"{PANDAS2_VENV} has no working pandas: {version.stderr.strip()[-200:]}"
    return str(python), f"pandas {version.stdout.strip()}"


def child_code(tool: str, names: list[str], warm: int, uids_file: str) -> str:
    return (f"QUERIES = {QUERIES!r}\nNAMES = {names!r}\nWARM = {warm}\nUIDS_FILE = {uids_file!r}\n"
            + TOOLS[tool] + _TAIL)


def run_child(python: str, code: str) -> tuple[float, float, dict]:
    """(wall seconds, peak RSS MB, the child's JSON) of one fresh interpreter."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([python, "-c", code], stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"{python} failed:\n{err.read().decode()[-3000:]}")
        out.seek(0)
        return wall, usage.ru_maxrss / 1024, json.loads(out.read().decode().strip().splitlines()[-1])


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="cold runs per tool and query (median shown)")
    parser.add_argument("--warm", type=int, default=7, help="warm runs per query (median shown)")
    parser.add_argument("--no-pandas2", action="store_true", help="skip idc-index with pandas<3")
    parser.add_argument("--no-pandas3", action="store_true",
                        help="skip idc-index with this environment's pandas 3 (seconds to minutes a query)")
    parser.add_argument("--no-check", action="store_true", help="always exit 0, even when a target is missed")
    args = parser.parse_args()

    cache = tempfile.mkdtemp(prefix="bench-catalog-pyc-")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # every child caches its byte code (see the docstring)
    os.environ["PYTHONPYCACHEPREFIX"] = cache
    # The parent stays small: a child's peak RSS (wait4) starts from the parent's at fork time.
    uids_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    uids_file.close()
    prep = subprocess.run([sys.executable, "-c", PREPARE, uids_file.name], capture_output=True, text=True, check=True)
    print(prep.stdout.strip())
    pandas_version = prep.stdout.strip().splitlines()[-1].split()[-1]

    # (python, tool, warm runs): idc-index with pandas 3 takes seconds a query, so it is run warm twice
    slow = pandas_version.split(".")[0] >= "3"
    tools = {"idc-cohort": (sys.executable, "idc-cohort", args.warm)}
    if not (slow and args.no_pandas3):
        tools[f"idc-index pandas {pandas_version}"] = (sys.executable, "idc-index", 2 if slow else args.warm)
    if not args.no_pandas2:
        python, note = pandas2_python()
        if python:
            tools[f"idc-index {note}"] = (python, "idc-index", args.warm)
        else:
            print(f"NOTE {note}; idc-index runs with this environment's pandas only")

    names = list(QUERIES)
    failures: list[str] = []
    rows: list[str] = []
    warm: dict[str, dict] = {}
    cold: dict[str, dict[str, tuple[float, float]]] = {}
    digests: dict[str, dict[str, dict]] = {}
    print(f"{'tool':<26} {'query':<11} {'cold s':>8} {'peak MB':>8} {'warm ms':>9} {'CPU ms':>8} {'made s':>7}  load")
    for label, (python, tool, n_warm) in tools.items():
        # warm: one process, every query
        _, _, result = run_child(python, child_code(tool, names, n_warm, uids_file.name))
        warm[label] = result
        cold[label] = {}
        for name in names:
            runs = [run_child(python, child_code(tool, [name], 0, uids_file.name)) for _ in range(args.repeat)]
            cold[label][name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
            digests.setdefault(name, {})[label] = result["queries"][name]["digest"]
            w = result["queries"][name]["warm"] * 1000
            c = result["queries"][name]["warm_cpu"] * 1000
            print(f"{label:<26} {name:<11} {cold[label][name][0]:>8.2f} {cold[label][name][1]:>8.0f} {w:>9.1f} {c:>8.1f} "
                  f"{result['construct']:>7.2f}  {load()}", flush=True)

    for name, by_tool in digests.items():
        if len({json.dumps(d, sort_keys=True) for d in by_tool.values()}) != 1:
            failures.append(f"{name}: the tools' answers differ: {by_tool}")

    ours = "idc-cohort"
    theirs = [k for k in tools if k != ours]
    for name in names:
        our_warm = warm[ours]["queries"][name]["warm"] * 1000
        best_label = min(theirs, key=lambda k: warm[k]["queries"][name]["warm"])
        their_warm = warm[best_label]["queries"][name]["warm"] * 1000
        ratio = their_warm / our_warm
        met = our_warm <= TARGET_WARM_MS and ratio >= TARGET_WARM_RATIO if name != "groupby" else True
        rows.append(f"ROW|warm {name}|{our_warm:.1f} ms|{best_label}: {their_warm:.1f} ms|{ratio:.1f}x faster|"
                    + (f"<= {TARGET_WARM_MS} ms, >= {TARGET_WARM_RATIO}x|{'met' if met else 'MISSED'}"
                       if name != "groupby" else "-|-"))
        if not met:
            failures.append(f"warm {name}: {our_warm:.1f} ms, {ratio:.1f}x idc-index's best")
        best_cold = min(theirs, key=lambda k: cold[k][name][0])
        speed, mem = cold[best_cold][name][0] / cold[ours][name][0], cold[best_cold][name][1] / cold[ours][name][1]
        target = name == "groupby"
        met = speed >= TARGET_SPEEDUP and mem >= TARGET_MEMORY if target else True
        rows.append(f"ROW|cold {name}|{cold[ours][name][0]:.2f} s, {cold[ours][name][1]:.0f} MB|"
                    f"{best_cold}: {cold[best_cold][name][0]:.2f} s, {cold[best_cold][name][1]:.0f} MB|"
                    f"{speed:.1f}x faster, {mem:.1f}x less memory|"
                    + (f">= {TARGET_SPEEDUP}x, >= {TARGET_MEMORY}x|{'met' if met else 'MISSED'}" if target else "-|-"))
        if not met:
            failures.append(f"cold {name}: {speed:.1f}x faster, {mem:.1f}x less memory")
    for name in ("lookup", "lookup1000"):
        ratio = cold[ours][name][0] / cold[ours]["groupby"][0]
        met = ratio <= TARGET_COLD_LOOKUP_VS_GROUPBY
        rows.append(f"ROW|cold {name} vs our cold groupby|{cold[ours][name][0]:.2f} s|{cold[ours]['groupby'][0]:.2f} s|"
                    f"{ratio:.2f}x|<= {TARGET_COLD_LOOKUP_VS_GROUPBY}x|{'met' if met else 'MISSED'}")
        if not met:
            failures.append(f"cold {name}: {ratio:.2f}x our cold groupby")
    os.unlink(uids_file.name)
    shutil.rmtree(cache, ignore_errors=True)
    print(f"load average {load()} on {os.cpu_count()} cores")
    for row in rows:
        print(row)
    for f in failures:
        print(f"MISSED {f}", file=sys.stderr)
    return 1 if failures and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
