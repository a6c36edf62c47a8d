"""Benchmark: our harvester vs a plain sequential dicomweb-client loop, same server, same run.

Setup: one Orthanc on loopback with two generated cohorts (``bulk_series``):
SMALL = 200 series x 10 instances (2,000) and LARGE = 200 series x 100 instances
(20,000), behind a proxy that adds 100 ms to every request (a real network's
round trip; loopback alone would measure Orthanc's CPU, not the harvester).

Measured, each harvest in its own subprocess so that peak RSS is its own:
- throughput (series/s) on SMALL: ours with 16 workers vs the anchor,
  ``DICOMwebClient.retrieve_series_metadata`` for one series after another;
- the latency bound = workers / round trip, the round trip being the anchor's
  seconds per series; ours as % of that bound;
- peak RSS of ours on SMALL vs LARGE (10x the instances).

Targets (issue 5): ours >= 10x the anchor, >= 80% of the latency bound, and
peak RSS on LARGE < 1.2x peak RSS on SMALL.

    python bench/bench_harvest.py [--series 200] [--latency 0.1] [--workers 16]
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
    """Run one harvest and print {seconds, series, instances, peak_rss_mb} as JSON."""
    pairs = json.loads(Path(args.pairs).read_text())
    start = time.monotonic()
    if args.child == "ours":
        from cohort import custom
        from cohort.harvest import harvest

        result = harvest(pairs, args.out, custom(args.url), workers=args.workers, rate=None, progress=False)
        instances, ok = result.instances, result.ok
    else:
        from dicomweb_client.api import DICOMwebClient

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
    parser.add_argument("--small", type=int, default=10, help="instances per series of the small cohort")
    parser.add_argument("--large", type=int, default=100, help="instances per series of the large cohort")
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
        for name, per_series in (("small", args.small), ("large", args.large)):
            t = time.monotonic()
            generated = bulk_series(args.series, per_series, work / name)
            orthanc.upload_many([p for s in generated for p in s.paths], threads=4)
            cohorts[name] = [[s.StudyInstanceUID, s.SeriesInstanceUID] for s in generated]
            print(f"loaded {name}: {args.series} series x {per_series} instances in {time.monotonic() - t:.0f} s",
                  file=sys.stderr)
        with FaultProxy(orthanc.url, latency=args.latency) as proxy:
            url = proxy.dicomweb_url
            seq = run_child("sequential", url, cohorts["small"], 1, work)
            ours = run_child("ours", url, cohorts["small"], args.workers, work)
            ours_large = run_child("ours", url, cohorts["large"], args.workers, work)

    rtt = seq["seconds"] / seq["series"]
    bound = args.workers / rtt
    rate_seq, rate_ours = seq["series"] / seq["seconds"], ours["series"] / ours["seconds"]
    rate_large = ours_large["series"] / ours_large["seconds"]
    rss_ratio = ours_large["peak_rss_mb"] / ours["peak_rss_mb"]
    lines = [
        f"proxy latency {args.latency * 1000:.0f} ms/request; round trip (sequential s/series) {rtt * 1000:.0f} ms",
        f"sequential dicomweb-client: {seq['series']} series, {seq['instances']:,} instances in "
        f"{seq['seconds']:.2f} s = {rate_seq:.1f} series/s, peak RSS {seq['peak_rss_mb']:.0f} MB",
        f"ours, {args.workers} workers:      {ours['series']} series, {ours['instances']:,} instances in "
        f"{ours['seconds']:.2f} s = {rate_ours:.1f} series/s, peak RSS {ours['peak_rss_mb']:.0f} MB",
        f"ours, large cohort:       {ours_large['series']} series, {ours_large['instances']:,} instances in "
        f"{ours_large['seconds']:.2f} s = {rate_large:.1f} series/s, peak RSS {ours_large['peak_rss_mb']:.0f} MB",
        f"throughput ratio ours/sequential: {rate_ours / rate_seq:.1f}x (target >= 10x)",
        f"latency bound {args.workers} / {rtt * 1000:.0f} ms = {bound:.1f} series/s; ours = "
        f"{100 * rate_ours / bound:.0f}% of it (target >= 80%)",
        f"peak RSS {ours_large['instances']:,} vs {ours['instances']:,} instances: {rss_ratio:.2f}x "
        f"(target < 1.20x)",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
