"""Benchmark: our harvester vs a plain sequential dicomweb-client loop, same server, same run.

Setup: one Orthanc on loopback with generated cohorts (``bulk_series``, CT headers
without pixels) behind a proxy that adds 100 ms to every request (a real network's
round trip; loopback alone would measure Orthanc's CPU, not the harvester):

- FAST = 200 series x 1 instance: throughput. Ours with 16 workers vs the anchor,
  ``DICOMwebClient.retrieve_series_metadata`` for one series after another. The
  latency bound is workers / round trip, the round trip being the anchor's seconds
  per series. One instance a series keeps Orthanc's own CPU (about 1 ms an
  instance, effectively one core) from being the limit on a 2-core machine.
- SMALL = 200 x 10 (2,000 instances) and LARGE = 2,000 x 10 (20,000): peak RSS of
  ours on each, the cohort 10x longer. BIG = 200 x 100 (20,000) is printed too:
  there each series is 10x bigger, and a series' whole metadata must be in memory
  at once, so its peak is expected to be higher. Their throughput is bounded by
  Orthanc's CPU here, not by the harvester.
- SINGLE = one series of 2,000 and one of 8,000 instances (issue 9): a series'
  response is streamed and written in bounded parts, so its peak RSS must not
  grow with the series' size: <= 300 MB at 8,000 and < 20% growth from 2,000.

Each harvest runs in its own subprocess so that peak RSS is its own.
Targets (issue 5): ours >= 10x the anchor, >= 80% of the latency bound, and
peak RSS on LARGE < 1.2x peak RSS on SMALL; (issue 9) SINGLE as above.

    python bench/bench_harvest.py [--series 200] [--latency 0.1] [--workers 16] [--single 2000,8000]
    python bench/bench_harvest.py --only-single     # just the single-series memory case
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def child(args: argparse.Namespace) -> None:
    """Run one harvest and print {seconds, series, instances, peak_rss_mb} as JSON (seconds: imports excluded)."""
    pairs = json.loads(Path(args.pairs).read_text())
    if args.child == "ours":
        from cohort import custom
        from cohort.harvest import harvest

        start = time.monotonic()
        result = harvest(pairs, args.out, custom(args.url), workers=args.workers, rate=None, progress=False)
        instances, ok = result.instances, result.ok
    else:
        from dicomweb_client.api import DICOMwebClient

        start = time.monotonic()
        client = DICOMwebClient(args.url)
        instances = ok = 0
        for study, series in pairs:
            instances += len(client.retrieve_series_metadata(study, series))
            ok += 1
    seconds = time.monotonic() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "series": ok, "instances": instances, "peak_rss_mb": peak}))


def run_child(kind: str, url: str, pairs: list, workers: int, work: Path) -> dict:
    pairs_file = work / f"pairs-{len(pairs)}-{time.monotonic_ns()}.json"
    pairs_file.write_text(json.dumps(pairs))
    out = work / f"out-{kind}-{time.monotonic_ns()}"
    cmd = [sys.executable, __file__, "--child", kind, "--url", url, "--pairs", str(pairs_file),
           "--out", str(out), "--workers", str(workers)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--fast", type=int, default=1, help="instances per series of the throughput cohort")
    parser.add_argument("--small", type=int, default=10, help="instances per series of the small RSS cohort")
    parser.add_argument("--big", type=int, default=100, help="instances per series of the big-series cohort")
    parser.add_argument("--no-big", action="store_true", help="skip the big-series cohort")
    parser.add_argument("--single", default="2000,8000",
                        help="instances of the single-series memory cases, comma-separated ('' to skip)")
    parser.add_argument("--only-single", action="store_true", help="run only the single-series memory cases")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the proxy adds to each request")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--child", choices=["ours", "sequential"])
    parser.add_argument("--url")
    parser.add_argument("--pairs")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from tests.support.data import bulk_series
    from tests.support.orthanc import Orthanc
    from tests.support.proxy import FaultProxy

    with tempfile.TemporaryDirectory(prefix="bench-harvest-") as tmp, Orthanc() as orthanc:
        work = Path(tmp)
        cohorts = {}
        singles = [int(n) for n in args.single.split(",") if n.strip()]
        plan = [] if args.only_single else [
            ("fast", args.series, args.fast), ("small", args.series, args.small),
            ("large", 10 * args.series, args.small)] + ([] if args.no_big else [("big", args.series, args.big)])
        plan += [(f"single-{n}", 1, n) for n in singles]
        for name, n_series, per_series in plan:
            t = time.monotonic()
            generated = bulk_series(n_series, per_series, work / name, with_pixels=False)
            orthanc.upload_many([p for s in generated for p in s.paths], threads=4)
            cohorts[name] = [[s.StudyInstanceUID, s.SeriesInstanceUID] for s in generated]
            print(f"loaded {name}: {n_series} series x {per_series} instances in {time.monotonic() - t:.0f} s",
                  file=sys.stderr)
        with FaultProxy(orthanc.url, latency=args.latency) as proxy:
            url = proxy.dicomweb_url
            runs = {} if args.only_single else {
                "sequential dicomweb-client, fast": run_child("sequential", url, cohorts["fast"], 1, work),
                f"ours ({args.workers} workers), fast": run_child("ours", url, cohorts["fast"], args.workers, work),
                "ours, small": run_child("ours", url, cohorts["small"], args.workers, work),
                "ours, large (10x the series)": run_child("ours", url, cohorts["large"], args.workers, work),
            }
            if not args.no_big and not args.only_single:
                runs["ours, big (10x the series size)"] = run_child("ours", url, cohorts["big"], args.workers, work)
            single = {n: run_child("ours", url, cohorts[f"single-{n}"], args.workers, work) for n in singles}
    print("\n".join(_report(args, runs) + _single_report(single)))
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")


def _single_report(single: dict[int, dict]) -> list[str]:
    """Peak RSS of one series of each size, and its growth from the smallest to the largest."""
    if not single:
        return []
    lines = [f"ours, one series of {n:>6,} instances: {r['seconds']:6.2f} s, peak RSS {r['peak_rss_mb']:4.0f} MB"
             for n, r in single.items()]
    low, high = min(single), max(single)
    if low != high:
        growth = single[high]["peak_rss_mb"] / single[low]["peak_rss_mb"] - 1
        lines.append(f"peak RSS one series of {high:,} vs {low:,} instances: {single[high]['peak_rss_mb']:.0f} MB "
                     f"(target <= 300 MB), growth {100 * growth:+.0f}% (target < 20%)")
    return lines


def _report(args: argparse.Namespace, runs: dict[str, dict]) -> list[str]:
    if not runs:
        return []
    seq, ours, small, large = list(runs.values())[:4]
    rtt = seq["seconds"] / seq["series"]
    bound = args.workers / rtt
    rate = {name: r["series"] / r["seconds"] for name, r in runs.items()}
    rate_seq, rate_ours = rate["sequential dicomweb-client, fast"], rate[f"ours ({args.workers} workers), fast"]
    rss_ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    lines = [f"proxy latency {args.latency * 1000:.0f} ms/request; round trip (sequential s/series) {rtt * 1000:.0f} ms"]
    for name, r in runs.items():
        lines.append(f"{name:34s} {r['series']} series, {r['instances']:>6,} instances in {r['seconds']:6.2f} s = "
                     f"{rate[name]:6.1f} series/s, peak RSS {r['peak_rss_mb']:4.0f} MB")
    lines += [
        f"throughput ratio ours/sequential: {rate_ours / rate_seq:.1f}x (target >= 10x)",
        f"latency bound {args.workers} / {rtt * 1000:.0f} ms = {bound:.1f} series/s; ours = "
        f"{100 * rate_ours / bound:.0f}% of it (target >= 80%)",
        f"peak RSS {large['instances']:,} vs {small['instances']:,} instances (10x the series): {rss_ratio:.2f}x "
        "(target < 1.20x)",
    ]
    if not args.no_big:
        big = runs["ours, big (10x the series size)"]
        lines.append(f"peak RSS with 10x bigger series: {big['peak_rss_mb'] / small['peak_rss_mb']:.2f}x (no target)")
    return lines


if __name__ == "__main__":
    main()
