"""Mutation testing of the core modules, one module (or one file of a package) at a time, with mutmut
(not CI: minutes per module).

Usage (from the repository root, with the `mutation` extra installed: ``pip install -e '.[test,mutation]'``)::

    nice -n 5 .venv/bin/python bench/mutation.py                  # every module below
    nice -n 5 .venv/bin/python bench/mutation.py queries harvest  # some (harvest = each harvest/*.py)
    .venv/bin/python bench/mutation.py --list                     # the modules and the tests each one runs
    .venv/bin/python bench/mutation.py lock --survivors            # also print each survivor's diff
    nice -n 5 .venv/bin/python bench/mutation.py queries --again  # re-run only the last run's survivors
    nice -n 5 .venv/bin/python bench/mutation.py queries --again --timeouts --timeout-constant 5  # and its timeouts,
                                                                  # with a longer limit (a starved fork times out)

For each module it copies the tree (``cohort/``, ``tests/``, ``queries/``, ``notebooks/`` and
``pyproject.toml``) to ``.mutation/MODULE/``, narrows ``[tool.mutmut]`` there to that module and to
its fast tests (``-m "not orthanc and not slow"``; in the copy, tests that need the index or an
Orthanc are deselected unless the module is unreachable without them, see SLOW_FIXTURES/KEEP), and
runs ``mutmut run`` with 2 children. mutmut maps each function to the tests that reach it and runs
only those against each of its mutants. It prints, per module and overall, the mutants killed (a
test failed or timed out), survived, and those listed as equivalent in ``bench/MUTATION.md``, the
time and the load average, and the score:

    score = killed / (mutants - equivalent)

Deselecting tests only lowers the score (fewer tests, fewer kills), never raises it. ``--again``
keeps the mutants and results of the last run of a module whose code has not changed, copies the
current tests in, and re-runs only its survivors (after new tests were written for them).

Look at a survivor with ``cd .mutation/MODULE && ../../.venv/bin/mutmut show NAME``; kill it with
a test that asserts an independently computed outcome, or, if no test can tell it from the
original, list it in bench/MUTATION.md with one line saying why. ``.mutation/`` is git-ignored.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".mutation"
MUTMUT = Path(sys.executable).parent / "mutmut"
EQUIVALENT_LIST = REPO / "bench" / "MUTATION.md"

#: module -> (files mutated, relative to the repository root, as mutmut globs; the tests that run).
#: The test lists are the fast tests that reach the module; within them, tests that need a slow
#: fixture (SLOW_FIXTURES: the real index, Orthanc) are deselected unless the module keeps them (KEEP).
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "retry": (["cohort/retry.py"], ["tests/test_retry.py", "tests/test_retry_rates.py"]),
    "queries": (["cohort/queries.py"], ["tests/test_queries_params.py", "tests/test_mut_queries.py"]),
    "endpoints": (["cohort/endpoints.py"], ["tests/test_endpoints.py", "tests/test_endpoints_sessions.py",
                                            "tests/test_mut_endpoints.py", "tests/test_header_auth.py",
                                            "tests/test_fast_session.py"]),
    "coverage": (["cohort/coverage.py"], ["tests/test_coverage.py", "tests/test_coverage_routing.py",
                                          "tests/test_mut_coverage.py"]),
    "manifest.formats": (["cohort/manifest/formats.py"], ["tests/test_mut_manifest_parse.py"]),
    "manifest.parse": (["cohort/manifest/parse.py"], ["tests/test_manifest_fields.py", "tests/test_mut_manifest_parse.py"]),
    # tests/test_manifest.py is not run per mutant: its hypothesis round trips, idc-index client (~15 s,
    # 3 GB) and CLI runs take minutes per mutant here (six of its cheapest tests: 75 s at load 9); the
    # test_mut_manifest_*.py files check each module's outcomes with one small manifest per read
    "manifest.read": (["cohort/manifest/read.py"], ["tests/test_mut_manifest_read.py"]),
    "manifest.revisions": (["cohort/manifest/revisions.py"], ["tests/test_mut_manifest_revisions.py"]),
    "manifest.write": (["cohort/manifest/write.py"], ["tests/test_mut_manifest_write.py"]),
    "manifest.download": (["cohort/manifest/download.py"], ["tests/test_mut_manifest_download.py"]),
    # the realdata and property tests of the parser (test_harvest_metadata/_values.py) take ~20 s per
    # mutant on a loaded machine: the exact hand-written cases are measured here
    "harvest.metadata": (["cohort/harvest/metadata.py"], ["tests/test_mut_harvest_metadata.py"]),
    "harvest.probe": (["cohort/harvest/probe.py"], ["tests/test_mut_harvest_probe.py"]),
    "harvest.selection": (["cohort/harvest/selection.py"], ["tests/test_mut_harvest_selection.py"]),
    "harvest.lock": (["cohort/harvest/lock.py"], ["tests/test_mut_harvest_lock.py"]),
    "harvest.store": (["cohort/harvest/store.py"], ["tests/test_harvest_store.py", "tests/test_mut_harvest_store.py"]),
    "harvest.views": (["cohort/harvest/views.py"], ["tests/test_harvest_store.py", "tests/test_mut_harvest_store.py"]),
    "harvest.stream": (["cohort/harvest/stream.py"], ["tests/test_harvest_stream.py", "tests/test_mut_harvest_stream.py"]),
    "harvest.runner": (["cohort/harvest/runner.py"], ["tests/test_harvest_cassettes.py", "tests/test_harvest_requests.py",
                                                      "tests/test_mut_harvest_runner.py", "tests/test_harvest_by_study.py"]),
    "harvest.tasks": (["cohort/harvest/tasks.py"], ["tests/test_harvest_by_study.py", "tests/test_mut_harvest_runner.py"]),
    # fsspec's in-memory filesystem for the object-store code; one moto S3 server for S3's If-Match PUT
    "harvest.fs": (["cohort/harvest/fs.py"], ["tests/test_mut_harvest_fs.py"]),
    # the pure parts, and runs on an in-process Dask cluster (threads: ~5 s to start); the harvests of real
    # series on worker processes (test_dask_harvest.py: Orthanc, a killed worker) are not run per mutant
    "harvest.cluster": (["cohort/harvest/cluster.py"], ["tests/test_mut_harvest_cluster.py"]),
    "catalog": (["cohort/catalog.py"], ["tests/test_catalog.py", "tests/test_mut_catalog.py"]),
}
#: Names that stand for several modules (a package measured one file at a time).
GROUPS = {group: [name for name in MODULES if name.startswith(group + ".")] for group in ("manifest", "harvest")}
#: Fixtures that make a test too slow to run once per mutant (seconds each: the index, an Orthanc).
SLOW_FIXTURES = ("catalog", "fixture_catalog", "index_dir", "orthanc", "orthanc_factory")
#: Modules whose tests keep some of the slow fixtures (the module cannot be reached without them).
_INDEX = ("catalog", "fixture_catalog", "index_dir")
KEEP: dict[str, tuple[str, ...]] = {name: _INDEX for name in ("catalog", "coverage", "manifest.read", "manifest.revisions",
                                                               "manifest.write", "manifest.download", "harvest.tasks",
                                                               "harvest.runner")}
#: Tests deselected for a module although they reach it: end-to-end runs that take seconds each and
#: whose checks of the module the faster tests make too (names as in the test file).
SKIP_TESTS: dict[str, tuple[str, ...]] = {
    "harvest.metadata": ("test_a_harvest_of_adversarial_bodies_writes_and_counts",),  # if its file is listed
    # ~10 s each (a second Python process holds the lock); the store's use of the lock is checked in-process by
    # tests/test_mut_harvest_store.py, the lock itself by harvest.lock's tests
    "harvest.store": ("test_a_second_writer_is_refused_while_the_first_lives",
                      "test_a_lock_left_by_a_dead_process_is_taken_over_with_a_message"),
    "harvest.views": ("test_a_second_writer_is_refused_while_the_first_lives",
                      "test_a_lock_left_by_a_dead_process_is_taken_over_with_a_message"),
    # idc-index's IDCClient (its fixture: 15 s and ~1 GB in each mutant's run); the views and SQL it compares
    # are checked against the Parquet files by test_catalog.py/test_mut_catalog.py's own tests
    "catalog": ("test_same_rows_as_idc_index",),
    # each routes the whole index (a million series: 5-20 s per mutant on a loaded machine); the routing rules
    # they count are checked series by series against the reference router of test_coverage_routing.py
    "coverage": ("test_prefer_google_whole_index_matches_independent_count",
                 "test_pinned_release_whole_index_matches_independent_count"),
}
CONFTEST_HOOK = """

# -- added by bench/mutation.py in its scratch copy: deselect tests needing a slow fixture ---------
def pytest_collection_modifyitems(config, items):
    slow, names = set({slow!r}), set({names!r})
    kept = [item for item in items
            if not slow & set(getattr(item, "fixturenames", ())) and getattr(item, "originalname", item.name) not in names]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


# mutmut forks every mutant's run from one process: tqdm's default lock holds a multiprocessing semaphore made
# there and shared by all the forks, so a fork killed (a timeout) while holding it hangs every later progress bar
# until mutmut's timeout, which counts as a kill. Each process gets a lock of its own.
def pytest_configure(config):
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
"""
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def _tests(patterns: list[str]) -> list[str]:
    found = sorted({str(p.relative_to(REPO)) for pattern in patterns for p in REPO.glob(pattern)})
    return found


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def prepare(name: str, timeout_constant: float | None = None) -> Path:
    """A fresh copy of the tree whose [tool.mutmut] mutates only ``name`` against its own tests."""
    mutate, tests = MODULES[name]
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("cohort", "tests", "queries", "notebooks"):
        shutil.copytree(REPO / folder, work / folder, ignore=ignore)
    _add_hook(name, work)
    shared = REPO.parent / "shared"
    if shared.is_dir():  # tests find ../shared/realdata beside the tree mutmut runs in (work/mutants)
        (work / "shared").symlink_to(shared)
    _write_config(name, work, timeout_constant)
    return work


def _write_config(name: str, work: Path, timeout_constant: float | None = None) -> None:
    """``pyproject.toml`` whose [tool.mutmut] mutates only ``name`` against its own tests."""
    mutate, tests = MODULES[name]
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    section = (
        "[tool.mutmut]\n"
        'source_paths = ["cohort"]\n'
        f"only_mutate = {_toml_list(mutate)}\n"
        'also_copy = ["queries", "notebooks"]\n'
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-m", "not orthanc and not slow"]\n'
        f"pytest_add_cli_args_test_selection = {_toml_list(_tests(tests))}\n"
        + (f"timeout_constant = {float(timeout_constant)}\n" if timeout_constant is not None else "")
    )
    text = re.sub(r"\[tool\.mutmut\].*?(?=^\[|\Z)", section + "\n", text, flags=re.S | re.M)
    (work / "pyproject.toml").write_text(text, encoding="utf-8")


def _add_hook(name: str, work: Path) -> None:
    slow = tuple(f for f in SLOW_FIXTURES if f not in KEEP.get(name, ()))
    with (work / "tests" / "conftest.py").open("a", encoding="utf-8") as out:
        out.write(CONFTEST_HOOK.format(slow=slow, names=SKIP_TESTS.get(name, ())))


def refresh_tests(name: str, timeout_constant: float | None = None) -> Path:
    """Copy the current tests into an earlier run's scratch tree (its mutants and results stay)."""
    work = WORK / name
    mutate, _ = MODULES[name]
    for pattern in mutate:
        for path in REPO.glob(pattern):
            copy = work / path.relative_to(REPO)
            if not copy.exists() or copy.read_bytes() != path.read_bytes():
                raise SystemExit(f"{path.relative_to(REPO)} changed since the last run of {name}: run it again "
                                 "without --again")
    shutil.rmtree(work / "tests")
    shutil.copytree(REPO / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _add_hook(name, work)
    _write_config(name, work, timeout_constant)
    return work


def results(work: Path) -> dict[str, str]:
    """mutant name -> status, from ``mutmut results --all true``."""
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=work, capture_output=True, text=True)
    found = {}
    for line in out.stdout.splitlines():
        m = re.match(r"\s*(\S+): (.+)$", line)
        if m and m.group(1).startswith("cohort."):
            found[m.group(1)] = m.group(2).strip()
    return found


def equivalent_names() -> set[str]:
    """Mutant names listed in bench/MUTATION.md (a line starting with `- `NAME``)."""
    if not EQUIVALENT_LIST.exists():
        return set()
    return set(re.findall(r"^- `(cohort\.[^`]+)`", EQUIVALENT_LIST.read_text(encoding="utf-8"), flags=re.M))


def run(name: str, jobs: int, show: bool, again: bool = False, timeouts: bool = False,
        timeout_constant: float | None = None) -> Counter:
    names: list[str] = []
    previous: dict[str, str] = {}
    if again:
        work = WORK / name
        previous = results(work)
        names = [m for m, status in previous.items() if status not in KILLED or (timeouts and status == "timeout")]
        refresh_tests(name, timeout_constant)
    else:
        work = prepare(name, timeout_constant)
    started = time.monotonic()
    log = work / "mutmut.log"
    with log.open("a" if again else "w") as out:
        proc = subprocess.run([str(MUTMUT), "run", "--max-children", str(jobs), *names], cwd=work, stdout=out,
                              stderr=subprocess.STDOUT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"mutmut failed on {name} (exit {proc.returncode}); the end of {log}:\n{tail}")
    statuses = results(work)
    for mutant, status in statuses.items():  # a changed test selection resets mutmut's other results: keep ours
        if mutant not in names and status == "not checked" and mutant in previous:
            statuses[mutant] = previous[mutant]
    equivalent = equivalent_names()
    counts: Counter = Counter()
    survivors = []
    for mutant, status in sorted(statuses.items()):
        counts["mutants"] += 1
        if status in KILLED:
            counts["killed"] += 1
        elif mutant in equivalent:
            counts["equivalent"] += 1
        else:
            counts["survived"] += 1
            survivors.append((mutant, status))
    counts["seconds"] = round(time.monotonic() - started)
    for mutant, status in survivors:
        print(f"  {status:9} {mutant}")
        if show:
            diff = subprocess.run([str(MUTMUT), "show", mutant], cwd=work, capture_output=True, text=True).stdout
            print("".join(f"      {line}\n" for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")))
    return counts


def score(c: Counter) -> str:
    denominator = c["mutants"] - c["equivalent"]
    return f"{100 * c['killed'] / denominator:5.1f}%" if denominator else "  n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"some of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--again", action="store_true",
                        help="re-run only the previous run's survivors against the current tests (the module's "
                             "code must be unchanged)")
    parser.add_argument("--timeouts", action="store_true",
                        help="with --again, re-run the previous run's timeouts too (a loaded machine can starve a "
                             "mutant's tests past mutmut's limit: a timeout then is no kill)")
    parser.add_argument("--timeout-constant", type=float, default=None, metavar="SECONDS",
                        help="mutmut's timeout_constant (default 1): a mutant's wall limit is (its tests' measured "
                             "time + this) x 15")
    parser.add_argument("--survivors", action="store_true", help="print each survivor's diff")
    parser.add_argument("--list", action="store_true", help="list the modules and their tests")
    args = parser.parse_args()
    args.modules = [m for name in args.modules for m in GROUPS.get(name, [name])]
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join([*MODULES, *GROUPS])}")
    if args.list:
        for name, (mutate, tests) in MODULES.items():
            print(f"{name:18} {' '.join(mutate)}  <-  {' '.join(_tests(tests))}")
        return
    if not MUTMUT.exists():
        raise SystemExit(f"mutmut is not installed beside {sys.executable}: pip install -e '.[test,mutation]'")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"mutation testing with {args.jobs} jobs; load average {' '.join(load)}")
    total: Counter = Counter()
    rows = []
    for name in args.modules or list(MODULES):
        print(f"{name}: running mutmut in {WORK / name} ...", flush=True)
        counts = run(name, args.jobs, args.survivors, args.again, args.timeouts, args.timeout_constant)
        total.update(counts)
        rows.append((name, counts))
        load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
        print(f"{name}: {score(counts)}  ({counts['killed']} killed, {counts['survived']} survived, "
              f"{counts['equivalent']} equivalent of {counts['mutants']}; {counts['seconds']} s; "
              f"load average {' '.join(load)})", flush=True)
    print()
    print(f"{'module':18} {'mutants':>7} {'killed':>6} {'equiv':>5} {'survived':>8} {'score':>6} {'time':>6}")
    for name, c in rows + [("overall", total)]:
        print(f"{name:18} {c['mutants']:7} {c['killed']:6} {c['equivalent']:5} {c['survived']:8} {score(c):>6} "
              f"{c['seconds']:5}s")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"load average at the end: {' '.join(load)}")


if __name__ == "__main__":
    main()
