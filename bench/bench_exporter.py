"""CPU and memory of `kepler-model exporter` on this machine's real /proc.

    python bench/bench_exporter.py [--windows 3] [--window 20] [--intervals 1,5]
                                   [--trainers LinearRegression,GradientBoostingRegressor]

Trains node-exporter preset models from the dump derived from the bundled real Kepler dump (as
tests/integration/kepler_trainer/exporter/test_server.py does), starts the exporter on /proc for each model
and interval, scrapes it every 15 s as Prometheus would, and measures the process's CPU time (user + system,
psutil) over --windows windows of --window seconds after a warm-up: the median fraction of one core, and the RSS at the
end. If Debian's prometheus-node-exporter is on PATH it is measured the same way beside it.
Goals: < 0.5 % of one core at 5 s, < 80 MB RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'trainer_image'}:{ROOT / 'operator'}:{ROOT / 'contract'}", "CI": "1"}
SCRAPE_EVERY_S = 15.0


def train(tmp: Path, trainers: list[str]) -> dict[str, Path]:
    from kepler_trainer import promjson
    from kepler_trainer.data import QueryResult, Series
    from tests.support.vmdata import derive, measuring_node

    derived = derive()
    result = QueryResult()
    for s in derived.series + measuring_node(derived):
        result.metrics.setdefault(s.name, []).append(Series(s.labels, s.timestamps.astype(float), s.values))
    dump = promjson.dump(result, tmp / "dump.json")
    subprocess.run([sys.executable, "-m", "kepler_trainer", "train", "-i", str(dump), "--features", "node-exporter",
                    "-p", "ne", "--abs-trainers", ",".join(trainers), "--dyn-trainers", "LinearRegression",
                    "--model-path", str(tmp / "models")], env=ENV, check=True, capture_output=True)
    base = tmp / "models" / "ne" / "rapl-sysfs" / "AbsPower" / "node-exporter"
    return {t: base / f"{t}Trainer_0" for t in trainers}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(command: list[str], port: int, windows: int, window: float, warmup: float) -> tuple[float, float]:
    """(median fraction of one core, RSS in MB at the end) of the process `command` starts."""
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()

    def scraper():
        while not stop.wait(SCRAPE_EVERY_S):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()

    try:
        time.sleep(warmup)
        threading.Thread(target=scraper, daemon=True).start()
        ps = psutil.Process(proc.pid)
        fractions = []
        for _ in range(windows):
            t0, c0 = time.monotonic(), sum(ps.cpu_times()[:2])
            time.sleep(window)
            fractions.append((sum(ps.cpu_times()[:2]) - c0) / (time.monotonic() - t0))
        return statistics.median(fractions), ps.memory_info().rss / 1e6
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--intervals", default="1,5")
    parser.add_argument("--trainers", default="LinearRegression,GradientBoostingRegressor")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = train(Path(tmp), args.trainers.split(","))
        print(f"{'process':<44}{'interval':>9}{'CPU (% of a core)':>19}{'RSS (MB)':>10}")
        for trainer, folder in models.items():
            for interval in args.intervals.split(","):
                port = _free_port()
                cpu, rss = measure([sys.executable, "-m", "kepler_trainer", "exporter", "--model", str(folder),
                                    "--interval", f"{interval}s", "--port", str(port), "--address", "127.0.0.1"],
                                   port, args.windows, args.window, args.warmup)
                print(f"{'exporter ' + trainer:<44}{interval + ' s':>9}{cpu * 100:>19.3f}{rss:>10.1f}", flush=True)
        node_exporter = shutil.which("prometheus-node-exporter")
        if node_exporter:
            port = _free_port()
            cpu, rss = measure([node_exporter, f"--web.listen-address=127.0.0.1:{port}"], port, args.windows,
                               args.window, args.warmup)
            print(f"{'prometheus-node-exporter (scraped every 15 s)':<44}{'-':>9}{cpu * 100:>19.3f}{rss:>10.1f}")
        else:
            print("prometheus-node-exporter is not installed: not measured beside it")


if __name__ == "__main__":
    main()
