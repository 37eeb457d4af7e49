"""A real Prometheus for tests: backfilled with promtool, optionally scraping live exporters.

    handle = start_prometheus(tmp_path, openmetrics=KeplerData(...) or "text" or Path, scrape=[...])
    handle.url ... handle.stop()

The server listens on 127.0.0.1 on a free port, keeps its TSDB under the given folder and is
ended by PID. `kepler_exporter()` serves Kepler-style counters with prometheus_client for
live-scrape tests. Reusable from any test tier (the operator end-to-end tests use it too).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

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
    ca_file: Path | None = None  # set when serving https

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

    def __enter__(self) -> PrometheusHandle:
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


def make_tls(workdir: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost: (ca.crt, server.crt, server.key)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (workdir / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = workdir / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=kepler-model test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=60)
    return ca, cert, key


def start_prometheus(workdir: Path, *, openmetrics: KeplerData | str | Path | None = None,
                     scrape: Iterable[ScrapeTarget] = (), extra_args: Iterable[str] = (),
                     tls: bool = False, ready_timeout: float = 30.0) -> PrometheusHandle:
    """Backfill (optional), start Prometheus on a free loopback port and wait for /-/ready.

    With tls=True it serves https with a certificate from a throw-away CA (`handle.ca_file`).
    """
    require_binaries()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "tsdb"
    if openmetrics is not None:
        backfill(openmetrics, data_dir)
    config = workdir / "prometheus.yml"
    config.write_text(_config(scrape))
    ca_file, scheme = None, "http"
    if tls:
        if not shutil.which("openssl"):
            pytest.skip("openssl is not installed")
        ca_file, cert, key = make_tls(workdir / "tls")
        web_config = workdir / "web.yml"
        web_config.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
        extra_args = [*extra_args, f"--web.config.file={web_config}"]
        scheme = "https"
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
        handle = PrometheusHandle(f"{scheme}://127.0.0.1:{port}", port, data_dir, log_path, process, ca_file)
        if _wait_ready(handle, ready_timeout):
            return handle
        handle.stop()
        last_error = handle.log_tail()
        if "address already in use" not in last_error:
            break
    raise RuntimeError(f"prometheus did not become ready:\n{last_error}")


def _wait_ready(handle: PrometheusHandle, timeout: float) -> bool:
    context = ssl.create_default_context(cafile=str(handle.ca_file)) if handle.ca_file else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{handle.url}/-/ready", timeout=1, context=context) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    return False


def parse_query_args(*argv: str):
    """Options as `kepler-model query` parses them (the Prometheus group, plus -o)."""
    import argparse

    from kepler_trainer.cli import add_prometheus_arguments

    parser = argparse.ArgumentParser()
    add_prometheus_arguments(parser)
    parser.add_argument("-o", "--output", default="output")
    return parser.parse_args(list(argv))


def query_args(url: str, start: float, end: float, *extra: str):
    """The parsed options of `kepler-model query -s URL --start-time S --end-time E ...`."""
    return parse_query_args("-s", url, "--start-time", str(start), "--end-time", str(end), *extra)


def instant(handle: PrometheusHandle, query: str) -> list[dict]:
    """The result of an instant query (plain urllib: independent of the code under test)."""
    with urllib.request.urlopen(f"{handle.url}/api/v1/query?query={quote(query)}", timeout=5) as response:
        return json.load(response)["data"]["result"]


def wait_scraped(handle: PrometheusHandle, job: str, samples: int = 3, timeout: float = 20.0) -> None:
    """Block until `job` has been scraped successfully `samples` times within the last minute."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = instant(handle, f'sum(sum_over_time(up{{job="{job}"}}[1m]))')
        if result and float(result[0]["value"][1]) >= samples:
            return
        time.sleep(0.2)
    raise TimeoutError(f"job {job} was not scraped {samples} times within {timeout} s")


# -- an HTTP hop in front of Prometheus, as a cluster has (auth proxy, flaky ingress) -------------

class GatewayProxy:
    """Forwards GETs to a real Prometheus; can demand a bearer token and fail the first N requests.

    This stands for kube-rbac-proxy/oauth-proxy (Prometheus 2.42 has no bearer-token auth of its
    own) and for an ingress that answers 503 while a backend restarts.
    """

    def __init__(self, upstream: str, *, token: str | None = None, fail_first: int = 0, status: int = 503):
        proxy = self
        self.upstream, self.token, self.fail_first, self.status = upstream, token, fail_first, status
        self.requests: list[tuple[str, int]] = []  # (path, status answered)
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                status, body, headers = proxy._answer(self.path, self.headers.get("Authorization"))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _answer(self, path: str, authorization: str | None) -> tuple[int, bytes, list[tuple[str, str]]]:
        json_type = [("Content-Type", "application/json")]
        with self._lock:
            failing = self.fail_first > 0
            self.fail_first -= failing
        if self.token is not None and authorization != f"Bearer {self.token}":
            status, body, headers = 401, b'{"status":"error","error":"Unauthorized"}', json_type
        elif failing:
            status, body, headers = self.status, b"upstream temporarily unavailable", [("Content-Type", "text/plain")]
        else:
            try:
                with urllib.request.urlopen(self.upstream + path, timeout=60) as response:
                    status, body = response.status, response.read()
            except urllib.error.HTTPError as err:
                status, body = err.code, err.read()
            headers = json_type
        with self._lock:
            self.requests.append((path, status))
        return status, body, headers

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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


# -- pytest fixtures (import them by name into a test module) ------------------------------------
#
# A session fixture imported into several modules is instantiated once per module by pytest, so
# the shared server lives here, counted by its users: the first starts it, the last stops it.

@dataclass
class SessionPrometheus:
    """The shared server: a day of backfilled history plus a 1 s scrape of a live exporter."""

    handle: PrometheusHandle
    data: KeplerData
    exporter: KeplerExporter

    @property
    def url(self) -> str:
        return self.handle.url


_shared: dict[str, object] = {"env": None, "users": 0}
_shared_lock = threading.Lock()


def _acquire(tmp_path_factory) -> SessionPrometheus:
    from .openmetrics import history

    with _shared_lock:
        if _shared["env"] is None:
            require_binaries()
            data = history()
            exporter = KeplerExporter()
            try:
                handle = start_prometheus(tmp_path_factory.mktemp("prometheus"), openmetrics=data,
                                          scrape=[ScrapeTarget(exporter.address, job="kepler-live")])
            except BaseException:
                exporter.stop()
                raise
            _shared["env"] = SessionPrometheus(handle, data, exporter)
        _shared["users"] += 1
        return _shared["env"]


def _release() -> None:
    with _shared_lock:
        _shared["users"] -= 1
        env = _shared["env"]
        if _shared["users"] == 0 and env is not None:
            env.handle.stop()
            env.exporter.stop()
            _shared["env"] = None


@pytest.fixture(scope="session")
def session_prometheus(tmp_path_factory) -> Iterator[SessionPrometheus]:
    env = _acquire(tmp_path_factory)
    yield env
    _release()


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
