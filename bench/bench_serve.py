"""Benchmark the model server against nginx serving the same weight files, with wrk on loopback.

    python bench/bench_serve.py [--duration 5] [--rounds 3] [--workers 2] [--connections 32]
                                [--servers granian,uvicorn] [--router]

Lays out a pipeline of 100 models (2 sources x 2 output types x 5 feature groups x 5 trainers;
60 of them have weight files) in a temp folder, starts `python -m kepler_model_server` (with granian and with
uvicorn) and a
plain nginx process (same number of workers; and one with a single worker, nginx's fastest setting
when wrk shares the 2 cores) over it, and runs wrk (one thread, a Lua script cycling
through every weight path or POST body) against each in turn, alternating for --rounds rounds.
Prints the median req/s and p99 per target and the median of its per-round ratios to nginx (each
run divided by nginx's run of the same round), plus the server's peak RSS.
Targets: weights >= 2000 req/s with p99 < 20 ms, and >= half of nginx's rate.
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
import textwrap
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.checkout import stop
from tests.support.server import FakeModel, free_port, publish

SOURCES = ("rapl-sysfs", "acpi")
OUTPUT_TYPES = ("AbsPower", "DynPower")
GROUPS = ("CounterOnly", "BPFOnly", "BPFIRQ", "CounterIRQCombined", "Basic")
TRAINERS = ("SGDRegressorTrainer", "LinearRegressionTrainer", "LogarithmicRegressionTrainer",
            "GradientBoostingRegressorTrainer", "XgboostFitTrainer")
KEPLER_METRICS = ["bpf_cpu_time_ms", "bpf_page_cache_hit", "bpf_block_irq", "bpf_net_rx_irq", "bpf_net_tx_irq",
                  "cache_miss", "cpu_cycles", "cpu_instructions", "cpu_architecture"]

LUA = """
local paths = {%(items)s}
local method, i = "%(method)s", 0
request = function()
  i = i %% #paths + 1
  if method == "GET" then return wrk.format("GET", paths[i]) end
  return wrk.format("POST", "/model", {["Content-Type"] = "application/json"}, paths[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\nRESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"non2xx": %%d, "socket_errors": %%d}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def build_models(root: Path) -> list[str]:
    """The 100-model pipeline; returns the URL paths of the weight files."""
    models = [FakeModel(t, node_type=n % 2, mae=round(1 + (i * 7919 % 97) / 3, 2), source=s, output_type=ot,
                        feature_group=g)
              for i, (s, ot, g, t, n) in enumerate((s, ot, g, t, n) for s in SOURCES for ot in OUTPUT_TYPES
                                                   for g in GROUPS for n, t in enumerate(TRAINERS))]
    publish(root, "bench", models)
    return sorted(f"/model-weights/bench/{m.source}/{m.output_type}/{m.feature_group}/{m.name}.json"
                  for m in models
                  if (root / "bench" / m.source / m.output_type / m.feature_group / f"{m.name}.json").exists())


def post_bodies(weight: bool) -> list[str]:
    """Kepler-like requests: both sources and output types, a few feature sets and trainers."""
    bodies = []
    for source in ("intel_rapl", "acpi"):
        for ot in OUTPUT_TYPES:
            for metrics in (KEPLER_METRICS, KEPLER_METRICS[:2] + ["cpu_architecture"], KEPLER_METRICS[5:]):
                for trainer in (("SGDRegressorTrainer", "") if weight else ("",)):
                    bodies.append(json.dumps({"metrics": metrics, "output_type": ot, "source": source,
                                              "node_type": 0, "weight": weight, "trainer_name": trainer,
                                              "filter": "", "machine_spec": {"processor": "intel_xeon_platinum_8259cl",
                                                                             "cores": 96, "chips": 2}}))
    return bodies


def lua_script(folder: Path, name: str, method: str, items: list[str]) -> Path:
    quoted = ", ".join(json.dumps(item) for item in items)  # JSON string literals are valid Lua strings here
    path = folder / f"{name}.lua"
    path.write_text(LUA % {"items": quoted, "method": method})
    return path


def wrk(url: str, script: Path, duration: float, connections: int) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    result = json.loads(line[len("RESULT "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class PeakRss:
    """Samples the RSS of a process tree every 50 ms; `peak` in MiB."""

    def __init__(self, pid: int) -> None:
        self.proc, self.peak, self._stop = psutil.Process(pid), 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs) / 2**20)
            except psutil.Error:
                pass

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def start_nginx(work: Path, models: Path, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    prefix = work / f"nginx-{workers}"
    (prefix / "logs").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""
        worker_processes {workers};
        daemon off;
        pid {prefix}/nginx.pid;
        error_log {prefix}/logs/error.log;
        events {{ worker_connections 1024; }}
        http {{
          access_log off;
          default_type application/json;
          client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
          fastcgi_temp_path {prefix}/fastcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
          server {{
            listen 127.0.0.1:{port};
            location /model-weights/ {{ alias {models}/; }}
            location = /healthz {{ return 200 "ok"; }}
          }}
        }}
    """))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(prefix)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/healthz")
    return proc, url


def start_server(models: Path, workers: int, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kepler_model_server", "--models-dir", str(models),
                             "--port", str(port), "--workers", str(workers), "--log-level", "warning", *extra],
                            stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/readyz")
    return proc, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers and nginx worker_processes")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--servers", default="granian,uvicorn", help="HTTP servers to measure (comma list)")
    parser.add_argument("--router", action="store_true", help="also measure uvicorn with --no-fast-path")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        models = work / "models"
        work.chmod(0o755)  # nginx workers run as nobody
        paths = build_models(models)
        subprocess.run(["chmod", "-R", "a+rX", str(models)], check=True)  # publish makes 0700 folders
        scripts = {
            "GET /model-weights": lua_script(work, "weights", "GET", paths),
            "POST /model weight": lua_script(work, "post_weight", "POST", post_bodies(True)),
            "POST /model zip": lua_script(work, "post_zip", "POST", post_bodies(False)),
        }
        results: dict[str, list[dict]] = {}
        peaks: dict[str, float] = {}
        nginx, nginx_url = start_nginx(work, models, args.workers)
        # wrk takes a core of its own: on 2 cores, one nginx worker is nginx's fastest setting
        nginx1 = start_nginx(work, models, 1) if args.workers != 1 else None
        servers: dict[str, tuple[subprocess.Popen, str]] = {}
        try:
            for name in args.servers.split(","):
                servers[name] = start_server(models, args.workers, "--http-server", name)
            samplers = {name: PeakRss(proc.pid) for name, (proc, _) in servers.items()}
            for _, url in (("nginx", nginx_url), *servers.values()):  # the same weights everywhere before timing
                # the server answers the file's JSON re-encoded compactly (catalog.py), nginx its bytes
                on_disk = json.loads((models / paths[0][len("/model-weights/"):]).read_bytes())
                assert httpx.get(url + paths[0]).json() == on_disk, url
            for _ in range(args.rounds):
                results.setdefault("nginx GET /model-weights", []).append(
                    wrk(nginx_url, scripts["GET /model-weights"], args.duration, args.connections))
                if nginx1:
                    results.setdefault("nginx, 1 worker, GET /model-weights", []).append(
                        wrk(nginx1[1], scripts["GET /model-weights"], args.duration, args.connections))
                for server_name, (_, url) in servers.items():
                    for name, script in scripts.items():
                        results.setdefault(f"{server_name} {name}", []).append(
                            wrk(url, script, args.duration, args.connections))
            peaks = {name: sampler.stop() for name, sampler in samplers.items()}
            if args.router:
                router = start_server(models, args.workers, "--http-server", "uvicorn", "--no-fast-path")
                servers["router"] = router
                for name in ("GET /model-weights", "POST /model weight"):
                    results[f"uvicorn, no fast path: {name}"] = [wrk(router[1], scripts[name], args.duration,
                                                                     args.connections)]
        finally:
            for proc, _ in servers.values():
                stop(proc)
            stop(nginx)
            if nginx1:
                stop(nginx1[0])
    print(f"pipeline: {len(SOURCES) * len(OUTPUT_TYPES) * len(GROUPS) * len(TRAINERS)} models, {len(paths)} weight "
          f"files; wrk -t1 -c{args.connections} -d{args.duration}s; {args.workers} workers each; "
          f"{args.rounds} rounds; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    nginx_runs = [r["rps"] for r in results["nginx GET /model-weights"]]
    best_runs = [r["rps"] for r in results.get("nginx, 1 worker, GET /model-weights", [])]
    print(f"{'target':44} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'vs nginx':>8} "
          f"{'vs 1w':>6}  per round (vs nginx)")
    for name, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        p50 = statistics.median(r["p50_us"] for r in runs) / 1000
        p99 = statistics.median(r["p99_us"] for r in runs) / 1000
        errors = sum(r["non2xx"] + r["socket_errors"] for r in runs)
        # each run against nginx's run of the same round (seconds apart): the machine's noise cancels
        ratios = [r["rps"] / n for r, n in zip(runs, nginx_runs, strict=False)]
        best = statistics.median(r["rps"] / n for r, n in zip(runs, best_runs, strict=False)) if best_runs else None
        vs_best = f"{best:6.2f}" if best is not None else "     -"
        rounds = " ".join(f"{x:.2f}" for x in ratios)
        print(f"{name:44} {rps:9.0f} {p50:7.2f} {p99:7.2f} {errors:6d} {statistics.median(ratios):8.2f} {vs_best}  "
              f"{rounds}")
    rss = ", ".join(f"{name} {peak:.0f} MiB" for name, peak in peaks.items())
    print(f"server peak RSS (all workers): {rss}; wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
