"""Benchmark: `kepler-model query` of a day at 3 s from a local Prometheus, against the reference way.

Data: one Kepler node, 25 containers x 8 counters = 200 container series plus 10 node energy series
(RAPL package/core/uncore/dram and ACPI platform, idle and dynamic), 28,800 samples each: about
6.05M samples, backfilled once with promtool (cached under --cache, ~1 min the first time).

Measured, each in its own process (wall time, peak RSS of that process), alternating, medians:
  ours       kepler_trainer.cli.run_query: discovery, 11,000-point chunks fetched concurrently,
             numpy parsing, promjson.dump of the query JSON
  ours-fetch the same without writing the file
  reference  the upstream way: one sequential query_range per metric with prometheus-api-client's
             custom_query_range (JSON decoded into Python lists), json.dump of the response map.
             Upstream sends the whole window in one request, which Prometheus refuses beyond
             11,000 points, so the reference is given the same chunks, fetched one after another.
Both outputs are compared sample for sample once (outside the timings).

    python bench/bench_query.py [--runs 3] [--cache /tmp/kepler-bench-query] [--concurrency 4]
Targets: ours <= 20 s, <= 800 MB peak RSS, and >= 3x faster than the reference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.openmetrics import EPOCH, Exporter, KeplerData  # noqa: E402
from tests.support.prometheus import backfill, start_prometheus  # noqa: E402

HOURS, STEP, CONTAINERS = 24, 3, 25


def scenario() -> KeplerData:
    samples = HOURS * 3600 // STEP
    return KeplerData((Exporter("bench-node:9102", EPOCH, samples, containers=CONTAINERS, seed=11),), STEP)


def cached_blocks(cache: Path) -> Path:
    """TSDB blocks of the scenario, built once per version of the generator."""
    source = (ROOT / "tests/support/openmetrics.py").read_bytes() + f"{HOURS},{STEP},{CONTAINERS}".encode()
    blocks = cache / f"tsdb-{hashlib.sha256(source).hexdigest()[:12]}"
    if not blocks.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
        began = time.perf_counter()
        data = scenario()
        print(f"backfilling {data.sample_count:,} samples ({len(data.series())} series) ...", flush=True)
        backfill(data, building / "tsdb")
        (building / "tsdb").rename(blocks)
        shutil.rmtree(building, ignore_errors=True)
        print(f"  built {blocks} in {time.perf_counter() - began:.1f} s", flush=True)
    return blocks


# -- the measured workers (run in a child process each) ---------------------------------------------

def worker(kind: str, url: str, start: float, end: float, out: Path, concurrency: int) -> None:
    if kind == "reference":
        reference_query(url, start, end, out)
        return
    from kepler_trainer import cli, prom

    parser = argparse.ArgumentParser()
    cli.add_prometheus_arguments(parser)
    parser.add_argument("-o", "--output")
    args = parser.parse_args(["-s", url, "--start-time", str(start), "--end-time", str(end), "--step", str(STEP),
                              "--concurrency", str(concurrency), "-o", str(out)])
    if kind == "ours":
        cli.run_query(args, out.parent)
    else:
        result = prom.fetch(cli.settings_from_args(args))
        assert result.sample_count > 0


def reference_query(url: str, start: float, end: float, out: Path) -> None:
    """Upstream's query loop (kepler_model/cmd/main.py query): sequential custom_query_range per metric."""
    from datetime import UTC, datetime

    from prometheus_api_client import PrometheusConnect

    pc = PrometheusConnect(url=url, disable_ssl=True)
    names = [n for n in pc.all_metrics() if "kepler_" in n]
    span = 11_000 * STEP  # the only way the server accepts a day at 3 s
    response: dict[str, list] = {}
    for name in names:
        by_labels: dict[str, dict] = {}
        t = start
        while t <= end:
            chunk_end = min(t + span - STEP, end)
            data = pc.custom_query_range(name, start_time=datetime.fromtimestamp(t, UTC),
                                         end_time=datetime.fromtimestamp(chunk_end, UTC), step=str(STEP))
            for item in data:
                key = json.dumps(item["metric"], sort_keys=True)
                by_labels.setdefault(key, {"metric": item["metric"], "values": []})["values"].extend(item["values"])
            t = chunk_end + STEP
        response[name] = list(by_labels.values())
    with open(out, "w") as f:
        json.dump(response, f)


def measure(kind: str, url: str, start: float, end: float, out: Path, concurrency: int) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one worker process."""
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, "--url", url, "--start", str(start),
                             "--end", str(end), "--out", str(out), "--concurrency", str(concurrency)])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed with exit code {proc.returncode}")
    return wall, usage.ru_maxrss / 1024


def same_samples(a: Path, b: Path) -> int:
    import numpy as np

    from kepler_trainer import promjson

    ra, rb = promjson.load(a), promjson.load(b)
    assert sorted(ra.metrics) == sorted(rb.metrics)
    for name in ra.metrics:
        key = lambda s: tuple(sorted(s.labels.items()))  # noqa: E731
        sa, sb = sorted(ra.get(name), key=key), sorted(rb.get(name), key=key)
        assert [key(s) for s in sa] == [key(s) for s in sb], name
        for x, y in zip(sa, sb, strict=True):
            np.testing.assert_array_equal(x.timestamps, y.timestamps)
            np.testing.assert_array_equal(x.values, y.values)
    return ra.sample_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "kepler-bench-query")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--worker"), parser.add_argument("--url"), parser.add_argument("--out", type=Path)
    parser.add_argument("--start", type=float), parser.add_argument("--end", type=float)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.url, args.start, args.end, args.out, args.concurrency)
        return

    blocks = cached_blocks(args.cache)
    start, end = float(EPOCH), float(EPOCH + (HOURS * 3600 // STEP - 1) * STEP)
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        tmp = Path(tmp)
        shutil.copytree(blocks, tmp / "prom" / "tsdb")  # Prometheus may compact its data folder
        handle = start_prometheus(tmp / "prom")
        try:
            outputs = {"ours": tmp / "ours.json", "reference": tmp / "reference.json", "ours-fetch": tmp / "x.json"}
            measure("ours-fetch", handle.url, start, end, outputs["ours-fetch"], args.concurrency)  # warm the TSDB
            figures: dict[str, list[tuple[float, float]]] = {k: [] for k in outputs}
            for run in range(args.runs):
                for kind in ("reference", "ours", "ours-fetch"):
                    wall, rss = measure(kind, handle.url, start, end, outputs[kind], args.concurrency)
                    figures[kind].append((wall, rss))
                    print(f"run {run + 1} {kind:10s} {wall:6.2f} s  {rss:6.0f} MiB", flush=True)
            samples = same_samples(outputs["ours"], outputs["reference"])
        finally:
            handle.stop()

    med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in figures.items()}
    print(f"\n{samples:,} samples ({HOURS} h at {STEP} s, {CONTAINERS * 8} container series + 10 node series); "
          f"outputs identical; medians of {args.runs} runs, concurrency {args.concurrency}, {os.cpu_count()} CPUs")
    print(f"{'':12s}{'wall (s)':>10s}{'peak RSS (MiB)':>16s}")
    for kind, (wall, rss) in med.items():
        print(f"{kind:12s}{wall:10.2f}{rss:16.0f}")
    speedup = med["reference"][0] / med["ours"][0]
    print(f"speed-up of ours over the reference: {speedup:.1f}x (target >= 3x); "
          f"ours {'meets' if med['ours'][0] <= 20 and med['ours'][1] <= 800 else 'MISSES'} <= 20 s and <= 800 MB")


if __name__ == "__main__":
    main()
