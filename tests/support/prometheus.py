"""A real Prometheus for tests: backfilled with promtool, optionally scraping live exporters.

    handle = start_prometheus(tmp_path, openmetrics=KeplerData(...) or "text" or Path, scrape=[...])
    handle.url ... handle.stop()

The server listens on 127.0.0.1 on a free port, keeps its TSDB under the given folder and is
ended by PID. `kepler_exporter()` serves Kepler-style counters with prometheus_client for
live-scrape tests. Reusable from any test tier (the operator end-to-end tests use it too).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pytest

from .openmetrics import KeplerData

RETENTION = "100y"  # backfilled data has fixed timestamps in the past; never let retention drop it


def binaries_available() -> bool:
    return bool(shutil.which("prometheus") and shutil.which("promtool"))


def require_binaries() -> None:
    """Skip the calling test when Debian's prometheus/promtool are not installed."""
    if not binaries_available():
        pytest.skip("prometheus and promtool are not installed (apt-get install prometheus)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def backfill(openmetrics: KeplerData | str | Path, data_dir: Path) -> Path:
    """Turn OpenMetrics (a scenario, its text, or a .om file) into TSDB blocks under data_dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    written = data_dir.parent / f"{data_dir.name}.om"
    if isinstance(openmetrics, KeplerData):
        source = openmetrics.write(written)
    elif isinstance(openmetrics, str):
        source = written
        source.write_text(openmetrics if openmetrics.rstrip().endswith("# EOF") else openmetrics + "# EOF\n")
    else:
        source = Path(openmetrics)
    # One block per 48 h: promtool re-reads the whole input once per block window, so the default
    # 2 h blocks make a day of data four times slower to backfill.
    proc = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                           "--max-block-duration=48h", str(source), str(data_dir)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"promtool failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    if source == written:
        source.unlink()  # a day of text is ~150 MB; the blocks are ~3 MB
    return data_dir


@dataclass
class ScrapeTarget:
    address: str               # host:port
    job: str = "kepler-live"
    interval: str = "1s"


@dataclass
class PrometheusHandle:
    url: str
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> "PrometheusHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _config(targets: Iterable[ScrapeTarget]) -> str:
    lines = ["global:", "  scrape_interval: 15s", "  evaluation_interval: 15s", "scrape_configs:"]
    targets = list(targets)
    if not targets:
        return "global:\n  scrape_interval: 15s\nscrape_configs: []\n"
    for t in targets:
        # honor_labels: the exporter's own `instance`/`job` labels win, as Kepler's do in a cluster.
        lines += [f"  - job_name: {t.job}", f"    scrape_interval: {t.interval}",
                  f"    scrape_timeout: {t.interval}", "    honor_labels: true",
                  "    static_configs:", f"      - targets: ['{t.address}']"]
    return "\n".join(lines) + "\n"


def start_prometheus(workdir: Path, *, openmetrics: KeplerData | str | Path | None = None,
                     scrape: Iterable[ScrapeTarget] = (), extra_args: Iterable[str] = (),
                     ready_timeout: float = 30.0) -> PrometheusHandle:
    """Backfill (optional), start Prometheus on a free loopback port and wait for /-/ready."""
    require_binaries()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "tsdb"
    if openmetrics is not None:
        backfill(openmetrics, data_dir)
    config = workdir / "prometheus.yml"
    config.write_text(_config(scrape))
    last_error = ""
    for _ in range(3):  # the free port can be taken between probe and bind: try another
        port = free_port()
        log_path = workdir / f"prometheus-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
                 f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.retention.time={RETENTION}",
                 "--web.enable-lifecycle", *extra_args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
        handle = PrometheusHandle(f"http://127.0.0.1:{port}", port, data_dir, log_path, process)
        if _wait_ready(handle, ready_timeout):
            return handle
        handle.stop()
        last_error = handle.log_tail()
        if "address already in use" not in last_error:
            break
    raise RuntimeError(f"prometheus did not become ready:\n{last_error}")


def _wait_ready(handle: PrometheusHandle, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{handle.url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    return False


@dataclass
class TargetUp:
    handle: PrometheusHandle

    def wait(self, job: str, samples: int = 3, timeout: float = 20.0) -> None:
        """Block until `job` has been scraped `samples` times (counted with count_over_time)."""
        import json
        from urllib.parse import quote

        query = quote(f'max(count_over_time(up{{job="{job}"}}[1m]))')
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{self.handle.url}/api/v1/query?query={query}", timeout=2) as r:
                result = json.load(r)["data"]["result"]
            if result and float(result[0]["value"][1]) >= samples:
                return
            time.sleep(0.2)
        raise TimeoutError(f"job {job} was not scraped {samples} times within {timeout} s")


# -- a live Kepler-style exporter -----------------------------------------------------------------

class KeplerExporter:
    """prometheus_client counters shaped like Kepler's, advanced on demand by `tick()`.

    Every tick adds fixed increments, so every value Prometheus scrapes is a whole number of ticks:
    tests can check scraped values exactly without racing the scraper.
    """

    INCREMENTS = {"bpf_cpu_time_ms": 250, "cpu_instructions": 1_000_000, "cpu_cycles": 2_000_000}
    PACKAGE_JOULES_PER_TICK = 12.5

    def __init__(self, instance: str = "live-node:9102", containers: int = 2):
        from prometheus_client import CollectorRegistry, Counter, start_http_server

        self.instance = instance
        self.containers = [f"live-{i}" for i in range(containers)]
        self.registry = CollectorRegistry()
        labels = ["instance", "job", "container_id", "container_name", "container_namespace", "pod_name"]
        self._features = {f: Counter(f"kepler_container_{f}", f"Kepler-style {f}.", labels, registry=self.registry)
                          for f in self.INCREMENTS}
        self._package = Counter("kepler_node_package_joules", "Kepler-style package energy.",
                                ["instance", "job", "mode", "package", "source"], registry=self.registry)
        self.ticks = 0
        self._lock = threading.Lock()
        self.server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = self.server.server_port
        self.tick()  # series exist (non-zero) from the first scrape

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tick(self, n: int = 1) -> None:
        with self._lock:
            for _ in range(n):
                for feature, step in self.INCREMENTS.items():
                    for c in self.containers:
                        self._features[feature].labels(self.instance, "kepler-live", c, c, "live", f"{c}-pod").inc(step)
                self._package.labels(self.instance, "kepler-live", "dynamic", "0", "rapl-sysfs").inc(
                    self.PACKAGE_JOULES_PER_TICK)
                self.ticks += 1

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- pytest fixtures (import them into a test module, or a conftest, by name) --------------------

@pytest.fixture(scope="session")
def kepler_history() -> KeplerData:
    """A day of Kepler data at 3 s for two nodes with a reset and a gap (see openmetrics.history)."""
    from .openmetrics import history

    return history()


@pytest.fixture(scope="session")
def live_exporter() -> Iterator[KeplerExporter]:
    exporter = KeplerExporter()
    yield exporter
    exporter.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory, kepler_history, live_exporter) -> Iterator[PrometheusHandle]:
    """One Prometheus for the session: the backfilled history plus a 1 s scrape of the live exporter."""
    require_binaries()
    handle = start_prometheus(tmp_path_factory.mktemp("prometheus"), openmetrics=kepler_history,
                              scrape=[ScrapeTarget(live_exporter.address)])
    yield handle
    handle.stop()


@pytest.fixture
def prometheus_factory(tmp_path) -> Iterator:
    """Start extra Prometheus servers (own data) inside one test; all are stopped at teardown."""
    started: list[PrometheusHandle] = []

    def start(**kwargs) -> PrometheusHandle:
        handle = start_prometheus(tmp_path / f"prom{len(started)}", **kwargs)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()
