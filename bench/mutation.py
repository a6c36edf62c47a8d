"""Mutation testing of the core modules, one module at a time, with mutmut (not CI: minutes per module).

Usage (from the repository root, with the `mutation` extra installed: ``pip install -e '.[test,mutation]'``)::

    .venv/bin/python bench/mutation.py                    # every module below
    .venv/bin/python bench/mutation.py retry endpoints    # some of them
    .venv/bin/python bench/mutation.py --list             # the modules and the tests each one runs
    .venv/bin/python bench/mutation.py retry --survivors  # also print each surviving mutant's diff

For each module it copies the tree (``cohort/``, ``tests/``, ``queries/``, ``notebooks/`` and
``pyproject.toml``) to ``.mutation/MODULE/``, narrows ``[tool.mutmut]`` there to that module and to
its fast tests (``-m "not orthanc and not slow"``), and runs ``mutmut run``. mutmut maps each
function to the tests that reach it and runs only those against each of its mutants, so a module
takes a few minutes on 2 cores. It prints, per module and overall, the mutants killed (a test failed
or timed out), survived, and those listed as equivalent in ``bench/MUTATION.md``, and the score:

    score = killed / (mutants - equivalent)

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
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "retry": (["cohort/retry.py"], ["tests/test_retry.py", "tests/test_retry_rates.py"]),
    "queries": (["cohort/queries.py"], ["tests/test_queries.py", "tests/test_queries_params.py"]),
    "endpoints": (["cohort/endpoints.py"], ["tests/test_endpoints.py", "tests/test_endpoints_sessions.py"]),
    "coverage": (["cohort/coverage.py"], ["tests/test_coverage.py", "tests/test_coverage_routing.py"]),
    "manifest": (["cohort/manifest.py", "cohort/manifest/*"], ["tests/test_manifest*.py"]),
    "harvest": (["cohort/harvest/*"], ["tests/test_harvest_metadata.py", "tests/test_harvest_store.py",
                                       "tests/test_harvest_cassettes.py"]),
    "catalog": (["cohort/catalog.py"], ["tests/test_catalog.py"]),
}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def _tests(patterns: list[str]) -> list[str]:
    found = sorted({str(p.relative_to(REPO)) for pattern in patterns for p in REPO.glob(pattern)})
    return found


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def prepare(name: str) -> Path:
    """A fresh copy of the tree whose [tool.mutmut] mutates only ``name`` against its own tests."""
    mutate, tests = MODULES[name]
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("cohort", "tests", "queries", "notebooks"):
        shutil.copytree(REPO / folder, work / folder, ignore=ignore)
    shared = REPO.parent / "shared"
    if shared.is_dir():  # tests find ../shared/realdata beside the tree mutmut runs in (work/mutants)
        (work / "shared").symlink_to(shared)
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    section = (
        "[tool.mutmut]\n"
        'source_paths = ["cohort"]\n'
        f"only_mutate = {_toml_list(mutate)}\n"
        'also_copy = ["queries", "notebooks"]\n'
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-m", "not orthanc and not slow"]\n'
        f"pytest_add_cli_args_test_selection = {_toml_list(_tests(tests))}\n"
    )
    text = re.sub(r"\[tool\.mutmut\].*?(?=^\[|\Z)", section + "\n", text, flags=re.S | re.M)
    (work / "pyproject.toml").write_text(text, encoding="utf-8")
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


def run(name: str, jobs: int, show: bool) -> Counter:
    work = prepare(name)
    started = time.monotonic()
    log = work / "mutmut.log"
    with log.open("w") as out:
        proc = subprocess.run([str(MUTMUT), "run", "--max-children", str(jobs)], cwd=work, stdout=out,
                              stderr=subprocess.STDOUT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"mutmut failed on {name} (exit {proc.returncode}); the end of {log}:\n{tail}")
    statuses = results(work)
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
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants run at once")
    parser.add_argument("--survivors", action="store_true", help="print each survivor's diff")
    parser.add_argument("--list", action="store_true", help="list the modules and their tests")
    args = parser.parse_args()
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    if args.list:
        for name, (mutate, tests) in MODULES.items():
            print(f"{name:10} {' '.join(mutate)}  <-  {' '.join(_tests(tests))}")
        return
    if not MUTMUT.exists():
        raise SystemExit(f"mutmut is not installed beside {sys.executable}: pip install -e '.[test,mutation]'")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"mutation testing with {args.jobs} jobs; load average {' '.join(load)}")
    total: Counter = Counter()
    rows = []
    for name in args.modules or list(MODULES):
        print(f"{name}: running mutmut in {WORK / name} ...", flush=True)
        counts = run(name, args.jobs, args.survivors)
        total.update(counts)
        rows.append((name, counts))
        print(f"{name}: {score(counts)}  ({counts['killed']} killed, {counts['survived']} survived, "
              f"{counts['equivalent']} equivalent of {counts['mutants']}; {counts['seconds']} s)", flush=True)
    print()
    print(f"{'module':10} {'mutants':>7} {'killed':>6} {'equiv':>5} {'survived':>8} {'score':>6}")
    for name, c in rows + [("overall", total)]:
        print(f"{name:10} {c['mutants']:7} {c['killed']:6} {c['equivalent']:5} {c['survived']:8} {score(c):>6}")


if __name__ == "__main__":
    main()
