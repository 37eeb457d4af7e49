"""deploy/: the compose file, its Prometheus configuration and the OpenTelemetry Collector configuration.

There is no Docker engine here, so the compose file is checked offline against the Compose
Specification's JSON schema. tests/data/compose-spec.json is the schema file shipped in the PyPI
package docker-compose 1.29.2 (compose/config/compose_spec.json, Apache-2.0; the Compose
Specification as of May 2021: it predates top-level `name`, which deploy/compose.yaml therefore
does not use). The Prometheus configuration is checked by promtool and then used by a real
Prometheus against a real model server; the collector configuration (no collector binary here) is
parsed and its pipeline wiring checked.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support import checkout

ROOT = checkout.ROOT
DEPLOY = ROOT / "deploy"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
SERVER_PORT = 8100


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "prometheus.yml").read_text())


def otel_config() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())


def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    return jsonschema.Draft201909Validator(schema)


# ------------------------------------------------------------------------------------- compose

def test_compose_file_matches_the_compose_specification() -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(compose())]
    assert not errors, errors


@pytest.mark.parametrize("mutation", ["unknown-key", "bad-port-type", "bad-depends-condition"])
def test_schema_rejects_broken_compose_files(mutation: str) -> None:
    doc = compose()
    server = doc["services"]["model-server"]
    if mutation == "unknown-key":
        server["imagee"] = server.pop("image")
    elif mutation == "bad-port-type":
        server["ports"] = [{"target": "eighty"}]
    else:
        doc["services"]["prometheus"]["depends_on"]["model-server"]["condition"] = "when_ready"
    assert list(validator().iter_errors(doc))


def test_model_server_serves_the_models_folder_read_only_as_in_the_cluster() -> None:
    from tests.unit.manifests.test_render import find, render

    server = compose()["services"]["model-server"]
    mounts = [v for v in server["volumes"] if v["target"] == "/models"]
    assert mounts == [{"type": "bind", "source": "${MODELS_DIR:-./models}", "target": "/models", "read_only": True}]
    cluster = find(render("base"), "Deployment", "kepler-model-server")["spec"]["template"]["spec"]["containers"][0]
    assert [cluster["command"][0], *server["command"]] == [*cluster["command"], *cluster["args"]]
    assert server["image"] == cluster["image"]
    assert server["user"] == "65532:65532" and server["read_only"] is True and server["cap_drop"] == ["ALL"]
    assert "/healthz" in " ".join(server["healthcheck"]["test"])
    assert all(p.startswith("127.0.0.1:") for s in compose()["services"].values() for p in s.get("ports", []))


def test_every_interpolated_variable_has_a_default() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    uncommented = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    variables = re.findall(r"\$\{([^}]*)\}", uncommented)
    assert variables and all(":-" in v for v in variables), variables


def test_prometheus_scrapes_the_model_server_service() -> None:
    doc = compose()
    prometheus = doc["services"]["prometheus"]
    assert prometheus["depends_on"]["model-server"]["condition"] == "service_healthy"
    config_mount = next(v for v in prometheus["volumes"] if v["target"] == "/etc/prometheus/prometheus.yml")
    assert (DEPLOY / config_mount["source"]).resolve() == DEPLOY / "prometheus.yml"
    job = _only_job(prometheus_config())
    assert job["static_configs"][0]["targets"] == [f"model-server:{SERVER_PORT}"]
    assert "model-server" in doc["services"]


def test_promtool_accepts_the_prometheus_configuration(tmp_path: Path) -> None:
    from tests.support.prometheus import require_binaries

    require_binaries()
    proc = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus.yml")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = tmp_path / "prometheus.yml"
    broken.write_text((DEPLOY / "prometheus.yml").read_text().replace("scrape_interval: 15s", "scrape_interval: 15x"))
    assert subprocess.run(["promtool", "check", "config", str(broken)], capture_output=True).returncode != 0


def _only_job(config: dict[str, Any]) -> dict[str, Any]:
    jobs = config["scrape_configs"]
    assert len(jobs) == 1 and jobs[0]["job_name"] == "kepler-model-server"
    return jobs[0]


# ---------------------------------------------------------------------------- otel collector

COMPONENT_KINDS = ("receivers", "processors", "exporters", "connectors")


def test_collector_pipeline_wiring_is_complete() -> None:
    config = otel_config()
    service = config["service"]
    used: dict[str, set[str]] = {kind: set() for kind in COMPONENT_KINDS}
    for name, pipeline in service["pipelines"].items():
        assert name.split("/")[0] in {"metrics", "traces", "logs"}, name
        assert pipeline.get("receivers") and pipeline.get("exporters"), f"pipeline {name} is open-ended"
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in (config.get(kind) or {}), f"{name} uses undefined {kind[:-1]} {component}"
                used[kind].add(component)
    for kind in ("receivers", "processors", "exporters"):
        assert set(config.get(kind) or {}) == used[kind], f"defined but unused {kind}"
    for extension in service.get("extensions", []):
        assert extension in config["extensions"], f"undefined extension {extension}"
    metrics = service["pipelines"]["metrics"]
    assert metrics["receivers"] == ["prometheus"]
    assert metrics["processors"][0] == "memory_limiter" and "batch" in metrics["processors"]
    assert "otlp" in metrics["exporters"]


def test_collector_scrapes_what_prometheus_scrapes_and_exports_where_compose_says() -> None:
    config = otel_config()
    collector_job = _only_job(config["receivers"]["prometheus"]["config"])
    prometheus_job = _only_job(prometheus_config())
    for key in ("metrics_path", "scheme", "static_configs"):
        assert collector_job[key] == prometheus_job[key], key
    endpoint = config["exporters"]["otlp"]["endpoint"]
    variable = re.fullmatch(r"\$\{env:(\w+)\}", endpoint).group(1)
    collector = compose()["services"]["otel-collector"]
    assert variable in collector["environment"]
    assert collector["profiles"] == ["otel"]
    mount = next(v for v in collector["volumes"] if v["source"] == "./otel-collector.yaml")
    assert collector["command"] == [f"--config={mount['target']}"]


# ------------------------------------------------------------------- a real scrape, no engine

def _free_port() -> int:
    from tests.support.prometheus import free_port

    return free_port()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if _get(url)[0] == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.prometheus
def test_compose_prometheus_configuration_scrapes_a_real_model_server(tmp_path: Path) -> None:
    """deploy/prometheus.yml, with only the target's address and the interval changed for the test,
    scrapes `kepler-model-server` (the compose model-server command) on an empty models folder."""
    from tests.support.prometheus import require_binaries

    require_binaries()
    server_cmd = compose()["services"]["model-server"]["command"]
    server_port, prom_port = _free_port(), _free_port()
    models = tmp_path / "models"
    models.mkdir()
    args = list(server_cmd)
    args[args.index("--models-dir") + 1] = str(models)
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(server_port)
    config = prometheus_config()
    job = _only_job(config)
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{server_port}"]
    job["scrape_interval"] = job["scrape_timeout"] = "1s"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    procs = []
    try:
        with open(tmp_path / "server.log", "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "kepler_model_server", *args], stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env={**os.environ, "MODEL_PATH": str(models)}))
        _wait(f"http://127.0.0.1:{server_port}/healthz", procs[0], tmp_path / "server.log")
        with open(tmp_path / "prometheus.log", "wb") as log:
            procs.append(subprocess.Popen(
                ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        _wait(f"http://127.0.0.1:{prom_port}/-/ready", procs[1], tmp_path / "prometheus.log")
        query = urllib.request.quote('up{job="kepler-model-server"} == 1')
        deadline = time.monotonic() + 30
        result: list[Any] = []
        while time.monotonic() < deadline and not result:
            result = json.loads(_get(f"http://127.0.0.1:{prom_port}/api/v1/query?query={query}")[1])["data"]["result"]
            time.sleep(0.2)
        assert result, (tmp_path / "prometheus.log").read_text()[-2000:]
        names = json.loads(_get(f"http://127.0.0.1:{prom_port}/api/v1/label/__name__/values")[1])["data"]
        assert [n for n in names if not n.startswith(("up", "scrape_", "prometheus_"))], names
    finally:
        for proc in reversed(procs):
            _stop(proc)
