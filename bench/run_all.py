"""Run every benchmark in bench/ and write their results as a markdown table (bench/RESULTS.md).

Each ``bench_*.py`` runs as its own process with ``--no-check`` (a missed target is shown in
the table, not as a failure of this script). Lines a benchmark prints as
``ROW|job|ours|anchor|ratio|target|met`` become table rows; the load average before and after
each benchmark is written beside its rows, since other processes on the machine change the
timings (ratios within one run are what to compare). A benchmark that prints no ROW lines
gets one row with the tail of its output.

    python bench/run_all.py [--only catalog,cli] [--skip harvest] [--extra 'catalog=--no-pandas3'] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def loadavg() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated names (bench_NAME.py) to run")
    parser.add_argument("--skip", default="", help="comma-separated names to leave out")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=ARGS",
                        help="arguments for one benchmark, e.g. --extra 'catalog=--no-pandas3 --warm 5'")
    args = parser.parse_args()
    only = {n for n in args.only.split(",") if n}
    extra = {k: v.split() for k, _, v in (e.partition("=") for e in args.extra)}
    skip = {n for n in args.skip.split(",") if n}

    benches = [p for p in sorted(HERE.glob("bench_*.py"))
               if (not only or p.stem.removeprefix("bench_") in only) and p.stem.removeprefix("bench_") not in skip]
    rows: list[list[str]] = []
    logs: list[str] = []
    for path in benches:
        name = path.stem.removeprefix("bench_")
        before = loadavg()
        print(f"== {path.name} (load {before})", flush=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(path), "--no-check", *extra.get(name, [])],
                              capture_output=True, text=True)
        took = time.perf_counter() - start
        after = loadavg()
        print(proc.stdout + proc.stderr, flush=True)
        found = [line.split("|")[1:] for line in proc.stdout.splitlines() if line.startswith("ROW|")]
        status = "" if proc.returncode == 0 else f" (exit {proc.returncode})"
        if not found:
            tail = " ".join(line.strip() for line in (proc.stdout + proc.stderr).strip().splitlines()[-3:])
            found = [["(see the log below)", "-", "-", "-", "-", "no ROW lines" + status]]
            logs.append(f"### {path.name}\n\n```\n{tail}\n```\n")
        for cells in found:
            cells = (cells + ["-"] * 6)[:6]
            rows.append([name, *cells, f"{before} → {after}", f"{took:.0f} s"])

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = ["bench", "job", "idc-cohort", "floor / anchor", "ratio", "target", "met", "load avg (1/5/15 min) before → after", "took"]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python bench/run_all.py` on {now}: {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Each figure is from one run with its floor or anchor beside it; "
        "the load average says how busy the machine was (ratios matter more than absolute times).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows],
        "",
        *logs,
    ]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
