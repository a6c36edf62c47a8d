"""Benchmark: the harvest sharded on a Dask LocalCluster (2 and 4 worker processes) vs the single-process
harvester, same cohort, same server, same run.

Setup: one Orthanc on loopback with a generated cohort (``bulk_series``: --series series of one
CT header each, no pixels) behind the fault proxy adding --latency (100 ms) to every request: a
real network's round trip, so that what is measured is how many requests are in flight, not
Orthanc's CPU. Every harvester sends --threads concurrent requests per process, without a rate
cap, into a new directory:

- the anchor: ``harvest()`` in a process of its own (``python bench_dask.py --child``);
- ``harvest_on_cluster()`` on a LocalCluster of W worker processes (1 Dask thread each, one
  shard each: ``shards=W``), W = 2 and 4. The cluster is started, and every worker has imported
  idc-cohort, before the clock starts (a long harvest pays that once); the coordinator's
  routing, the shards' stores, their probes and their commits are inside the time.

The round trip is measured first: one request after another for --rtt-series series' metadata.
The latency bound of a run is processes x threads / round trip (series a second, one request a
series); each run prints its rate as % of its bound, and the Dask runs their speed-up over the
anchor. Orthanc is warmed by one untimed harvest first. A last row runs the single process with as
many requests in flight as the biggest cluster: the ceiling of this server and proxy on this machine
(when the clusters reach it, the setup is the limit, not Dask). Targets: each run >= 80% of its latency
bound (the bar of bench_harvest.py), and the speed-up of W workers >= 0.8 W. On a 2-core machine
shared with other work, Orthanc's and the proxy's CPU (one process each) cap the rate well before
4 x threads requests in flight: the rows say how far each run got, with the load average.

    python bench/bench_dask.py [--series 400] [--threads 4] [--latency 0.1] [--workers 2,4] [--no-check]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_BOUND = 0.8  # of the latency bound
TARGET_SCALING = 0.8  # of linear speed-up


def child(args: argparse.Namespace) -> None:
    """The anchor: one harvest() in this process; prints {seconds, series, instances} as JSON."""
    from cohort import custom
    from cohort.harvest import harvest

    pairs = json.loads(Path(args.pairs).read_text())
    start = time.monotonic()
    result = harvest(pairs, args.out, custom(args.url), workers=args.threads, rate=None, progress=False)
    print(json.dumps({"seconds": time.monotonic() - start, "series": result.ok, "instances": result.instances}))


def single(url: str, pairs: list, threads: int, work: Path, name: str) -> dict:
    pairs_file = work / "pairs.json"
    pairs_file.write_text(json.dumps(pairs))
    cmd = [sys.executable, __file__, "--child", "--url", url, "--pairs", str(pairs_file),
           "--out", str(work / name), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def sharded(url: str, pairs: list, threads: int, n_workers: int, work: Path) -> dict:
    import distributed

    from cohort import custom
    from cohort.harvest import harvest_on_cluster

    t = time.monotonic()
    with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0", worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        client.run(_import_cohort)
        startup = time.monotonic() - t
        start = time.monotonic()
        result = harvest_on_cluster(pairs, work / f"dask-{n_workers}", custom(url), cluster=client, shards=n_workers,
                                    workers=threads, rate=None, progress=False)
        seconds = time.monotonic() - start
    return {"seconds": seconds, "series": result.ok, "instances": result.instances, "startup": startup,
            "concurrency": result.concurrency}


def _import_cohort() -> None:
    import cohort.harvest.cluster  # noqa: F401 - what a worker imports to run a shard


def round_trip(url: str, pairs: list) -> float:
    """Seconds a metadata request takes, one after another (the proxy's latency and the server's time)."""
    import requests

    with requests.Session() as session:
        start = time.monotonic()
        for study, series in pairs:
            response = session.get(f"{url}/studies/{study}/series/{series}/metadata",
                                   headers={"Accept": "application/dicom+json"}, timeout=30)
            response.raise_for_status()
        return (time.monotonic() - start) / len(pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=400)
    parser.add_argument("--threads", type=int, default=4, help="concurrent requests per process")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the proxy adds to each request")
    parser.add_argument("--workers", default="2,4", help="Dask worker processes of each run, comma-separated")
    parser.add_argument("--rtt-series", type=int, default=20)
    parser.add_argument("--no-check", action="store_true", help="exit 0 even when a target is missed")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--url")
    parser.add_argument("--pairs")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    from tests.support.data import bulk_series
    from tests.support.orthanc import Orthanc
    from tests.support.proxy import FaultProxy

    sizes = [int(w) for w in args.workers.split(",") if w.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp, Orthanc() as orthanc:
        work = Path(tmp)
        t = time.monotonic()
        generated = bulk_series(args.series, 1, work / "data", with_pixels=False)
        orthanc.upload_many([p for s in generated for p in s.paths], threads=4)
        pairs = [[s.StudyInstanceUID, s.SeriesInstanceUID] for s in generated]
        print(f"loaded {args.series} series x 1 instance in {time.monotonic() - t:.0f} s", file=sys.stderr)
        with FaultProxy(orthanc.url, latency=args.latency) as proxy:
            url = proxy.dicomweb_url
            single(url, pairs, 4 * args.threads, work, "warm-up")  # Orthanc's caches, untimed
            rtt = round_trip(url, pairs[: args.rtt_series])
            load_before = os.getloadavg()
            runs = {1: single(url, pairs, args.threads, work, "single")}
            for n in sizes:
                runs[n] = sharded(url, pairs, args.threads, n, work)
            # what this server and proxy deliver with as many requests in flight as the biggest cluster, from
            # one process: when it is no faster than the clusters, the setup (not Dask) is the ceiling
            ceiling = single(url, pairs, max(sizes) * args.threads, work, "ceiling")
            load_after = os.getloadavg()

    load = f"load {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores"
    rate = {n: r["series"] / r["seconds"] for n, r in runs.items()}
    bound = {n: n * args.threads / rtt for n in runs}
    print(f"{args.series} series x 1 instance; proxy latency {args.latency * 1000:.0f} ms, measured round trip "
          f"{rtt * 1000:.0f} ms; {args.threads} requests in flight per process; {load}")
    met_all = True
    for n, r in runs.items():
        what = "single process" if n == 1 else f"Dask {n} workers"
        extra = "" if n == 1 else f" (cluster start {r['startup']:.1f} s, not counted)"
        print(f"  {what:18s} {r['series']} series in {r['seconds']:6.2f} s = {rate[n]:6.1f} series/s, "
              f"{100 * rate[n] / bound[n]:3.0f}% of the latency bound {bound[n]:.0f}/s{extra}")
        assert r["series"] == args.series, f"{what} harvested {r['series']} of {args.series} series"
    share = rate[1] / bound[1]
    met = share >= TARGET_BOUND
    met_all &= met
    print(f"ROW|single-process harvest, {args.threads} threads, {args.latency * 1000:.0f} ms latency|"
          f"{rate[1]:.1f} series/s|latency bound {args.threads} / {rtt * 1000:.0f} ms = {bound[1]:.0f}/s|"
          f"{100 * share:.0f}% of bound|>= {100 * TARGET_BOUND:.0f}%|{'met' if met else 'MISSED'}")
    top = max(sizes) * args.threads
    ceiling_rate = ceiling["series"] / ceiling["seconds"]
    print(f"ROW|single process, {top} threads (the setup's ceiling at {top} in flight)|{ceiling_rate:.1f} series/s|"
          f"latency bound {top} / {rtt * 1000:.0f} ms = {top / rtt:.0f}/s|{100 * ceiling_rate * rtt / top:.0f}% of bound|"
          "-|-")
    for n in sizes:
        speedup, share = rate[n] / rate[1], rate[n] / bound[n]
        met = speedup >= TARGET_SCALING * n and share >= TARGET_BOUND
        met_all &= met
        print(f"ROW|Dask {n} workers x {args.threads} threads vs single process|{rate[n]:.1f} series/s, "
              f"{100 * share:.0f}% of bound {bound[n]:.0f}/s|single process: {rate[1]:.1f} series/s|"
              f"{speedup:.2f}x|>= {TARGET_SCALING * n:.1f}x, >= {100 * TARGET_BOUND:.0f}% of bound|"
              f"{'met' if met else 'MISSED'}")
    return 0 if met_all or args.no_check else 1


if __name__ == "__main__":
    sys.exit(main())
