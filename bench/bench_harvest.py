"""Benchmark: our harvester vs a plain sequential dicomweb-client loop, same server, same run.

Setup: one Orthanc on loopback with generated cohorts (``bulk_series``, CT headers
without pixels) behind a proxy that adds 100 ms to every request (a real network's
round trip; loopback alone would measure Orthanc's CPU, not the harvester):

- FAST = 200 series x 1 instance: throughput. Ours with 16 workers vs two anchors,
  ``DICOMwebClient.retrieve_series_metadata`` for one series after another, and
  the same in a plain ``ThreadPoolExecutor(16)`` (one client per thread, so no
  shared connection pool; it writes nothing). The latency bound is workers /
  round trip, the round trip being the sequential anchor's seconds per series.
  One instance a series keeps Orthanc's own CPU (about 1 ms an instance,
  effectively one core) from being the limit on a 2-core machine. Issue 13 item 5:
  ours >= 90% of the bound and >= 1.1x the threaded loop.
  Beside them, the floor of any client with the same concurrency: the same GETs from
  a thread pool over one urllib3 pool, each body read and dropped (nothing parsed or
  written); its share of the bound is the most a client can reach here.
- SERVER-BOUND: SMALL (below) straight from Orthanc, no proxy: instances a second,
  ours vs the threaded loop (target: at least as many).
- STUDIES: studies of 5 series (IDC's median; its mean is 6.2, and 97% of its series
  share their study): through the proxy, as many studies as FAST has series (so the
  same requests when asked by study: 1,000 series), and server-bound, the instances
  of SMALL (40 studies of 5 series of 10). Ours is asked ``by_study=True`` (``--by-study``:
  one request a study; a Cohort of whole studies does so by default); the anchors are
  the same threaded loop over series, and the same loop over studies
  (``retrieve_study_metadata``), the best a plain loop can do with this shape.
- SMALL = 200 x 10 (2,000 instances) and LARGE = 2,000 x 10 (20,000): peak RSS of
  ours on each, the cohort 10x longer. BIG = 200 x 100 (20,000) is printed too:
  there each series is 10x bigger, and a series' whole metadata must be in memory
  at once, so its peak is expected to be higher. Their throughput is bounded by
  Orthanc's CPU here, not by the harvester.
- SINGLE = one series of 2,000 and one of 8,000 instances (issue 9): a series'
  response is streamed and written in bounded parts, so its peak RSS must not
  grow with the series' size: <= 300 MB at 8,000 and < 20% growth from 2,000.
  The anchor is dicomweb-client's ``retrieve_series_metadata`` of the same series
  (the whole body in memory). The body is CT_small's header as pydicom writes it in
  DICOM JSON (``Dataset.to_json_dict``), one per instance with its own SOP UID,
  served from a file by a local HTTP server: loading 8,000 files into Orthanc takes
  8 minutes here and its answer for such a series over 30 s, which would measure
  Orthanc.

Each harvest runs in its own subprocess so that peak RSS and CPU seconds are its own; the
CPU seconds a series of the client, the proxy (this process) and Orthanc are printed for FAST.
Targets (issue 5): ours >= 10x the anchor, >= 80% of the latency bound, and
peak RSS on LARGE < 1.2x peak RSS on SMALL; (issue 9) SINGLE as above.

    python bench/bench_harvest.py [--series 200] [--latency 0.1] [--workers 16] [--single 2000,8000] [--repeat 2]
    python bench/bench_harvest.py --only-single     # just the single-series memory case
    python bench/bench_harvest.py --no-big --no-large --single '' --no-check   # throughput only; exit 0 on a missed target
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
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
    if args.child in ("ours", "ours-by-study"):
        from cohort import custom
        from cohort.harvest import harvest

        start, cpu = time.monotonic(), time.process_time()  # imports not counted
        result = harvest(pairs, args.out, custom(args.url), workers=args.workers, rate=None, progress=False,
                         by_study=args.child == "ours-by-study")
        instances, ok = result.instances, result.ok
    elif args.child in ("threaded", "threaded-by-study"):  # the loop a user writes, over series or studies:
        import threading  # a thread pool, one dicomweb-client per thread
        from concurrent.futures import ThreadPoolExecutor

        from dicomweb_client.api import DICOMwebClient

        local = threading.local()
        by_study = args.child == "threaded-by-study"
        items = list(dict.fromkeys(study for study, _ in pairs)) if by_study else pairs

        def one(item) -> int:
            if not hasattr(local, "client"):
                local.client = DICOMwebClient(args.url)
            if by_study:
                return len(local.client.retrieve_study_metadata(item))
            return len(local.client.retrieve_series_metadata(*item))

        start, cpu = time.monotonic(), time.process_time()  # imports not counted
        with ThreadPoolExecutor(args.workers) as pool:
            counts = list(pool.map(one, items))
        instances, ok = sum(counts), len(pairs)
    elif args.child == "bare":  # the floor of any client: the same GETs in a thread pool, bodies read and dropped
        from concurrent.futures import ThreadPoolExecutor

        import urllib3

        pool = urllib3.PoolManager(maxsize=args.workers, headers={"Accept": "application/dicom+json"})

        def get(pair: list[str]) -> int:
            response = pool.request("GET", f"{args.url}/studies/{pair[0]}/series/{pair[1]}/metadata")
            assert response.status == 200, response.status
            return 1

        start, cpu = time.monotonic(), time.process_time()  # imports not counted
        with ThreadPoolExecutor(args.workers) as threads:
            ok = sum(threads.map(get, pairs))
        instances = 0  # not parsed
    else:
        from dicomweb_client.api import DICOMwebClient

        start, cpu = time.monotonic(), time.process_time()  # imports not counted
        client = DICOMwebClient(args.url)
        instances = ok = 0
        for study, series in pairs:
            instances += len(client.retrieve_series_metadata(study, series))
            ok += 1
    seconds = time.monotonic() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": seconds, "series": ok, "instances": instances, "peak_rss_mb": usage.ru_maxrss / 1024,
                      "cpu": time.process_time() - cpu}))


class _StaticSeries:
    """A loopback HTTP server answering ``.../series/SE/metadata`` with a file's bytes, streamed."""

    def __init__(self, bodies: dict[str, Path]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0].endswith("/studies"):  # the harvester's probe of the service
                    self.send_response(200)
                    self.send_header("Content-Type", "application/dicom+json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"[]")
                    return
                series = self.path.rstrip("/").split("/")[-2] if self.path.endswith("/metadata") else None
                body = bodies.get(series or "")
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(body.stat().st_size))
                self.end_headers()
                with open(body, "rb") as fh:
                    shutil.copyfileobj(fh, self.wfile, 1 << 20)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/dicom-web"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def single_series_body(n: int, path: Path) -> tuple[str, str]:
    """Write the DICOM JSON metadata of one n-instance series (CT_small's header) to ``path``."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    study, series = generate_uid(), generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = study, series, "9.9.9.9", 999999
    template = json.dumps(ds.to_json_dict())
    with open(path, "w") as fh:
        fh.write("[")
        for i in range(n):
            instance = template.replace("9.9.9.9", f"{series}.{i + 1}").replace("999999", str(i + 1))
            fh.write(("," if i else "") + instance)
        fh.write("]")
    return study, series


def run_child(kind: str, url: str, pairs: list, workers: int, work: Path) -> dict:
    pairs_file = work / f"pairs-{len(pairs)}-{time.monotonic_ns()}.json"
    pairs_file.write_text(json.dumps(pairs))
    out = work / f"out-{kind}-{time.monotonic_ns()}"
    cmd = [sys.executable, __file__, "--child", kind, "--url", url, "--pairs", str(pairs_file),
           "--out", str(out), "--workers", str(workers)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {kind} child failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--fast", type=int, default=1, help="instances per series of the throughput cohort")
    parser.add_argument("--small", type=int, default=10, help="instances per series of the small RSS cohort")
    parser.add_argument("--big", type=int, default=100, help="instances per series of the big-series cohort")
    parser.add_argument("--no-big", action="store_true", help="skip the big-series cohort")
    parser.add_argument("--no-large", action="store_true", help="skip the large cohort (and its peak-RSS ratio)")
    parser.add_argument("--single", default="2000,8000",
                        help="instances of the single-series memory cases, comma-separated ('' to skip)")
    parser.add_argument("--only-single", action="store_true", help="run only the single-series memory cases")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the proxy adds to each request")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2, help="runs of FAST and server-bound each; best reported")
    parser.add_argument("--no-check", action="store_true", help="exit 0 even when a target is missed")
    parser.add_argument("--child", choices=["ours", "ours-by-study", "sequential", "threaded", "threaded-by-study",
                                            "bare"])
    parser.add_argument("--url")
    parser.add_argument("--pairs")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    singles = [int(n) for n in args.single.split(",") if n.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-harvest-") as tmp:
        work = Path(tmp)
        bodies = {}
        single_pairs = {}
        for n in singles:
            study, series = single_series_body(n, work / f"single-{n}.json")
            bodies[series], single_pairs[n] = work / f"single-{n}.json", [[study, series]]
            print(f"wrote one series of {n:,} instances: {bodies[series].stat().st_size / 1e6:.0f} MB of DICOM JSON",
                  file=sys.stderr)
        server = _StaticSeries(bodies)
        try:
            single = {n: {kind: run_child(kind, server.url, single_pairs[n], 1, work)
                          for kind in ("sequential", "ours")} for n in singles}
        finally:
            server.close()
        runs = {} if args.only_single else cohort_runs(args, work)
    lines, met = _report(args, runs)
    print("\n".join(lines + _single_report(single)))
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")
    raise SystemExit(0 if met or args.no_check else 1)


def cohort_runs(args: argparse.Namespace, work: Path) -> dict[str, dict]:
    """The cohort cases (FAST, SMALL, LARGE, BIG) against Orthanc behind the latency proxy."""
    from pydicom.uid import generate_uid

    from tests.support.data import bulk_series
    from tests.support.orthanc import Orthanc
    from tests.support.proxy import FaultProxy

    with Orthanc() as orthanc:
        cohorts = {}
        plan = [("fast", args.series, args.fast), ("small", args.series, args.small),
                ("large", 10 * args.series, args.small)] + ([] if args.no_big else [("big", args.series, args.big)])
        plan = [p for p in plan if not (args.no_large and p[0] == "large")]
        for name, n_series, per_series in plan:
            t = time.monotonic()
            generated = bulk_series(n_series, per_series, work / name, with_pixels=False)
            orthanc.upload_many([p for s in generated for p in s.paths], threads=4)
            cohorts[name] = [[s.StudyInstanceUID, s.SeriesInstanceUID] for s in generated]
            print(f"loaded {name}: {n_series} series x {per_series} instances in {time.monotonic() - t:.0f} s",
                  file=sys.stderr)
        for name, n_studies, per_series in (("studies fast", args.series, args.fast),
                                            ("studies small", args.series // 5, args.small)):  # 5 series a study
            t = time.monotonic()
            uids = [(study, generate_uid()) for study in (generate_uid() for _ in range(n_studies)) for _ in range(5)]
            generated = bulk_series(len(uids), per_series, work / name.replace(" ", "-"), uids=uids, with_pixels=False)
            orthanc.upload_many([p for s in generated for p in s.paths], threads=4)
            cohorts[name] = [list(pair) for pair in uids]
            print(f"loaded {name}: {len(uids) // 5} studies x 5 series x {per_series} instances in "
                  f"{time.monotonic() - t:.0f} s", file=sys.stderr)
        import psutil

        server = psutil.Process(orthanc.process.pid)

        def best(cases: dict[str, tuple[str, str, list]]) -> dict[str, dict]:
            """Each case's fastest of ``--repeat`` runs, with Orthanc's and this process' (the proxy's) CPU
            seconds. The cases take turns (one run of each per round), so that a server that drifts
            (caches filling, a neighbour's load) weighs on all of them alike rather than on whichever ran last."""
            results: dict[str, list[dict]] = {name: [] for name in cases}
            for _ in range(args.repeat):
                for name, (kind, url, pairs) in cases.items():
                    before = (sum(server.cpu_times()[:2]), time.process_time())
                    result = run_child(kind, url, pairs, args.workers, work)
                    result["orthanc_cpu"] = sum(server.cpu_times()[:2]) - before[0]
                    result["proxy_cpu"] = time.process_time() - before[1]
                    results[name].append(result)
            return {name: min(rs, key=lambda r: r["seconds"]) for name, rs in results.items()}

        direct = orthanc.dicomweb_url
        server_bound = best({  # no proxy, no added latency: Orthanc and the client share the CPUs
            "threaded dicomweb-client, small, no latency": ("threaded", direct, cohorts["small"]),
            "ours, small, no latency": ("ours", direct, cohorts["small"]),
            "studies: threaded dicomweb-client by series, small, no latency": ("threaded", direct,
                                                                               cohorts["studies small"]),
            "studies: threaded dicomweb-client by study, small, no latency": ("threaded-by-study", direct,
                                                                              cohorts["studies small"]),
            "studies: ours by study, small, no latency": ("ours-by-study", direct, cohorts["studies small"]),
        })
        with FaultProxy(orthanc.url, latency=args.latency) as proxy:
            url = proxy.dicomweb_url
            runs = {"sequential dicomweb-client, fast": run_child("sequential", url, cohorts["fast"], 1, work)}
            fast = best({
                f"ours ({args.workers} workers), fast": ("ours", url, cohorts["fast"]),
                f"threaded dicomweb-client ({args.workers}), fast": ("threaded", url, cohorts["fast"]),
                f"floor: bare urllib3 GETs ({args.workers} threads, bodies dropped), fast": ("bare", url,
                                                                                              cohorts["fast"]),
            })
            floor_name = next(name for name in fast if name.startswith("floor:"))
            # _report reads the first four runs as: sequential, ours, the threaded loop, ours on SMALL
            runs.update({name: r for name, r in fast.items() if name != floor_name})
            runs["ours, small"] = run_child("ours", url, cohorts["small"], args.workers, work)
            runs[floor_name] = fast[floor_name]
            runs.update(best({f"studies: {label}, fast": (kind, url, cohorts["studies fast"])
                              for kind, label in (("threaded", "threaded dicomweb-client by series"),
                                                  ("threaded-by-study", "threaded dicomweb-client by study"),
                                                  ("ours-by-study", "ours by study"))}))
            if not args.no_large:
                runs["ours, large (10x the series)"] = run_child("ours", url, cohorts["large"], args.workers, work)
            if not args.no_big:
                runs["ours, big (10x the series size)"] = run_child("ours", url, cohorts["big"], args.workers, work)
    return {**runs, **server_bound}


def _single_report(single: dict[int, dict[str, dict]]) -> list[str]:
    """Peak RSS of one series of each size, ours and the anchor's, and ours' growth from smallest to largest."""
    if not single:
        return []
    lines = [f"one series of {n:>6,} instances: ours {r['ours']['seconds']:6.2f} s, peak RSS "
             f"{r['ours']['peak_rss_mb']:4.0f} MB; dicomweb-client (whole body) {r['sequential']['seconds']:6.2f} s, "
             f"peak RSS {r['sequential']['peak_rss_mb']:4.0f} MB" for n, r in single.items()]
    low, high = min(single), max(single)
    if low != high:
        peak_low, peak_high = single[low]["ours"]["peak_rss_mb"], single[high]["ours"]["peak_rss_mb"]
        lines.append(f"peak RSS one series of {high:,} vs {low:,} instances: {peak_high:.0f} MB "
                     f"(target <= 300 MB), growth {100 * (peak_high / peak_low - 1):+.0f}% (target < 20%)")
    return lines


def _report(args: argparse.Namespace, runs: dict[str, dict]) -> tuple[list[str], bool]:
    """Lines to print (ROW| lines for bench/run_all.py among them) and whether every target is met."""
    if not runs:
        return [], True
    seq, ours, threaded, small = list(runs.values())[:4]
    large = runs.get("ours, large (10x the series)")
    rtt = seq["seconds"] / seq["series"]
    bound = args.workers / rtt
    rate = {name: r["series"] / r["seconds"] for name, r in runs.items()}
    rate_seq, rate_ours, rate_thr = (r["series"] / r["seconds"] for r in (seq, ours, threaded))
    lines = [f"proxy latency {args.latency * 1000:.0f} ms/request; round trip (sequential s/series) {rtt * 1000:.0f} ms"
             f"; best of {args.repeat} for FAST and server-bound"]
    for name, r in runs.items():
        lines.append(f"{name:44s} {r['series']} series, {r['instances']:>6,} instances in {r['seconds']:6.2f} s = "
                     f"{rate[name]:6.1f} series/s, {r['instances'] / r['seconds']:6.0f} instances/s, "
                     f"peak RSS {r['peak_rss_mb']:4.0f} MB")
    for name, r in (("ours", ours), ("threaded", threaded)):
        if "orthanc_cpu" in r:
            lines.append(f"CPU a series in FAST, {name}: client {1000 * r['cpu'] / r['series']:.1f} ms, proxy "
                         f"{1000 * r['proxy_cpu'] / r['series']:.1f} ms, Orthanc {1000 * r['orthanc_cpu'] / r['series']:.1f}"
                         f" ms")
    ratio_thr, share = rate_ours / rate_thr, rate_ours / bound
    # one GET a series, each worker one at a time: ceil(series / workers) round trips at the least
    ceiling = ours["series"] / (math.ceil(ours["series"] / args.workers) * rtt)
    wanted = 1.1 * rate_thr
    floor = next((r for name, r in runs.items() if name.startswith("floor:")), None)
    rate_floor = None if floor is None else floor["series"] / floor["seconds"]
    thr_sb, ours_sb = runs["threaded dicomweb-client, small, no latency"], runs["ours, small, no latency"]
    sb_ours, sb_thr = (r["instances"] / r["seconds"] for r in (ours_sb, thr_sb))
    studies = {kind: {speed: runs[f"studies: {label}, {speed}"] for speed in ("fast", "small, no latency")}
               for kind, label in (("series", "threaded dicomweb-client by series"),
                                   ("study", "threaded dicomweb-client by study"), ("ours", "ours by study"))}
    st_rate = {kind: r["fast"]["series"] / r["fast"]["seconds"] for kind, r in studies.items()}
    st_sb = {kind: r["small, no latency"]["instances"] / r["small, no latency"]["seconds"] for kind, r in studies.items()}
    checks = [ratio_thr >= 1.1, share >= 0.9, round(sb_ours / sb_thr, 2) >= 1.0,
              st_rate["ours"] / st_rate["series"] >= 1.1, round(st_sb["ours"] / st_sb["series"], 2) >= 1.0]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines += [
        f"throughput ratio ours/sequential: {rate_ours / rate_seq:.1f}x (issue 5 target >= 10x)",
        f"throughput ratio ours/threaded dicomweb-client: {ratio_thr:.2f}x (target >= 1.1x)",
        f"latency bound {args.workers} / {rtt * 1000:.0f} ms = {bound:.1f} series/s; ours = "
        f"{100 * share:.0f}% of it (target >= 90%)",
        f"ceiling of any client making one GET a series, {args.workers} at a time: {ours['series']} series in "
        f"{math.ceil(ours['series'] / args.workers)} round trips of {rtt * 1000:.0f} ms = {ceiling:.1f} series/s "
        f"({100 * ceiling / bound:.0f}% of the bound); 1.1x the threaded loop = {wanted:.1f} series/s = "
        f"{100 * wanted / ceiling:.0f}% of that ceiling",
        *([] if rate_floor is None else [
            f"floor (bare urllib3, same GETs, nothing parsed or written): {rate_floor:.1f} series/s = "
            f"{100 * rate_floor / bound:.0f}% of the bound; ours = {100 * rate_ours / rate_floor:.0f}% of the floor, "
            f"threaded dicomweb-client = {100 * rate_thr / rate_floor:.0f}%"]),
        f"server-bound (no latency), {ours_sb['instances']:,} instances: ours {sb_ours:.0f} instances/s, threaded "
        f"dicomweb-client {sb_thr:.0f} instances/s: {sb_ours / sb_thr:.2f}x (target >= 1.0x)",
        f"ROW|harvest {ours['series']} series, {args.latency * 1000:.0f} ms latency, {args.workers} workers|"
        f"{rate_ours:.1f} series/s ({100 * share:.0f}% of the bound {bound:.0f})|threaded dicomweb-client: "
        f"{rate_thr:.1f} series/s"
        + ("" if rate_floor is None else f"; floor, bare urllib3 GETs with the bodies dropped: "
           f"{rate_floor:.1f} series/s = {100 * rate_floor / bound:.0f}% of the bound")
        + f"|{ratio_thr:.2f}x|>= 1.1x, >= 90% of bound|"
        f"{'met' if checks[0] and checks[1] else 'MISSED'}"
        + ("" if wanted <= ceiling else f"; 1.1x the loop ({wanted:.0f}/s) is above the ceiling of one GET a series "
           f"({ceiling:.0f}/s)") + f" (load {load})",
        f"ROW|harvest {ours_sb['instances']:,} instances, no latency (server-bound)|{sb_ours:.0f} instances/s, "
        f"{ours_sb['peak_rss_mb']:.0f} MB|threaded dicomweb-client: {sb_thr:.0f} instances/s, "
        f"{thr_sb['peak_rss_mb']:.0f} MB|{sb_ours / sb_thr:.2f}x|>= 1.0x|{'met' if checks[2] else 'MISSED'} (load {load})",
        f"studies of 5 series, {args.latency * 1000:.0f} ms latency: ours by study {st_rate['ours']:.1f} series/s = "
        f"{st_rate['ours'] / st_rate['series']:.2f}x the threaded loop by series ({st_rate['series']:.1f}), "
        f"{st_rate['ours'] / st_rate['study']:.2f}x the threaded loop by study ({st_rate['study']:.1f}); "
        f"{100 * st_rate['ours'] / bound:.0f}% of the one-request-a-series bound",
        f"studies of 5 series, server-bound: ours by study {st_sb['ours']:.0f} instances/s = "
        f"{st_sb['ours'] / st_sb['series']:.2f}x the threaded loop by series ({st_sb['series']:.0f}), "
        f"{st_sb['ours'] / st_sb['study']:.2f}x the threaded loop by study ({st_sb['study']:.0f})",
        f"ROW|harvest {studies['ours']['fast']['series']:,} series in studies of 5, {args.latency * 1000:.0f} ms latency, "
        f"{args.workers} workers, by study|{st_rate['ours']:.1f} series/s|threaded dicomweb-client by series: "
        f"{st_rate['series']:.1f} series/s; by study: {st_rate['study']:.1f}|{st_rate['ours'] / st_rate['series']:.2f}x"
        f"|>= 1.1x|{'met' if checks[3] else 'MISSED'} (load {load})",
        f"ROW|harvest {studies['ours']['small, no latency']['instances']:,} instances in studies of 5, no latency "
        f"(server-bound), by study|{st_sb['ours']:.0f} instances/s|threaded dicomweb-client by series: "
        f"{st_sb['series']:.0f} instances/s; by study: {st_sb['study']:.0f}|{st_sb['ours'] / st_sb['series']:.2f}x|"
        f">= 1.0x|{'met' if checks[4] else 'MISSED'} (load {load})",
    ]
    if large is not None:
        lines.append(f"peak RSS {large['instances']:,} vs {small['instances']:,} instances (10x the series): "
                     f"{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x (target < 1.20x)")
    if not args.no_big:
        big = runs["ours, big (10x the series size)"]
        lines.append(f"peak RSS with 10x bigger series: {big['peak_rss_mb'] / small['peak_rss_mb']:.2f}x (no target)")
    return lines, all(checks)


if __name__ == "__main__":
    main()
