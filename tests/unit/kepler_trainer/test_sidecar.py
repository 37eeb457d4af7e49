"""`kepler-model estimator` (kepler_trainer.sidecar): the answers to bad requests and hostile archives,
the 4096-byte reply limit, and the manifests example. Kepler's own client is driven against it in
tests/conformance/test_kepler_sidecar.py."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from kepler_trainer import sidecar
from kepler_trainer.cli import build_parser
from kepler_trainer.persist import LoadedModel
from tests.support import checkout

REPO = checkout.ROOT
TABLE = REPO / "tests" / "data" / "nx12" / "preprocess_abs_default_rapl_CounterOnly.csv"
FEATURES = ["cache_miss", "cpu_cycles", "cpu_instructions"]


@pytest.fixture(scope="module")
def model_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model (SGD on the nx12 table), as the model server would send it."""
    work = tmp_path_factory.mktemp("sidecar")
    done = subprocess.run([sys.executable, "-m", "kepler_trainer.cli", "train_from_data", "-i", str(TABLE), "-p", "p",
                           "-e", "rapl-sysfs", "-ot", "AbsPower", "-fg", "CounterOnly", "--trainers", "SGDRegressor",
                           "--model-path", str(work / "models"), "--data-path", str(work), "-q"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return next((work / "models" / "p").glob("rapl-sysfs/AbsPower/CounterOnly/SGDRegressorTrainer_*.zip"))


def models_with(tmp_path: Path, archive: Path | None) -> sidecar.Models:
    """The sidecar's model store, with `archive` as the rapl model already unpacked (upstream's step 2)."""
    if archive is not None:
        sidecar._unpack(archive.read_bytes(), tmp_path / "dl" / "rapl-sysfs" / "AbsPower")
    settings = sidecar.Settings(str(tmp_path / "no-config"), environ={})
    return sidecar.Models(settings, tmp_path / "dl", {"cores": 8})


def request(rows: int, **extra) -> bytes:
    values = [[1e6 * (i + 1), 2e9, 1e9] for i in range(rows)]
    return json.dumps({"metrics": FEATURES, "values": values, "output_type": "AbsPower", "source": "intel_rapl",
                       "system_features": ["cpu_architecture"], "system_values": ["x"], "trainer_name": "",
                       "filter": "", **extra}).encode()


@pytest.mark.parametrize("raw, says", [
    (b"not json", "not JSON"), (b"[1]", "JSON object"),
    (json.dumps({"metrics": ["a"], "values": [[1, 2]], "output_type": "AbsPower"}).encode(), "one number per metric"),
    (request(1, source="gpu"), "unknown energy source"), (request(1, output_type="Watts"), "output_type"),
])
def test_a_bad_request_is_answered_with_the_reason_and_no_powers(tmp_path: Path, raw: bytes, says: str) -> None:
    answer = json.loads(sidecar.reply(models_with(tmp_path, None), raw))
    assert answer["powers"] == {} and says in answer["msg"]


def test_without_a_model_server_or_init_url_the_reply_says_so(tmp_path: Path) -> None:
    answer = json.loads(sidecar.reply(models_with(tmp_path, None), request(1)))
    assert answer["powers"] == {} and "NODE_COMPONENTS_INIT_URL" in answer["msg"]


def test_the_powers_are_the_models_and_the_reply_fits_keplers_read(tmp_path: Path, model_zip: Path) -> None:
    models = models_with(tmp_path, model_zip)
    ours = LoadedModel(tmp_path / "dl" / "rapl-sysfs" / "AbsPower")
    x = np.array([[1e6 * (i + 1), 2e9, 1e9] for i in range(120)])
    expected = ours.predict(x)
    small = json.loads(sidecar.reply(models, request(5)))
    assert small["msg"] == "" and small["core_ratio"] == 1.0  # the model's machine is unknown
    for component, values in expected.items():
        assert small["powers"][component] == values[:5].tolist()
    assert len(json.dumps({c: v.tolist() for c, v in expected.items()})) > sidecar.REPLY_LIMIT
    big = sidecar.reply(models, request(120))  # full precision would not fit: milliwatts, Kepler's precision
    assert len(big) <= sidecar.REPLY_LIMIT
    for component, values in expected.items():
        assert json.loads(big)["powers"][component] == [round(v, 3) for v in values.tolist()]
    huge = json.loads(sidecar.reply(models, request(400)))
    assert huge["powers"] == {} and "4096" in huge["msg"]


def test_a_request_lacking_the_models_features_is_refused(tmp_path: Path, model_zip: Path) -> None:
    raw = json.dumps({"metrics": ["cpu_cycles"], "values": [[1.0]], "output_type": "AbsPower",
                      "source": "intel_rapl"}).encode()
    answer = json.loads(sidecar.reply(models_with(tmp_path, model_zip), raw))
    assert answer["powers"] == {} and "cache_miss" in answer["msg"]


def _zip(members: dict[str, bytes], link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize("archive", [
    _zip({"../escape.json": b"{}"}), _zip({"sub/metadata.json": b"{}"}), _zip({}, link="metadata.json"),
    b"not a zip at all",
])
def test_a_hostile_archive_is_refused_and_leaves_nothing(tmp_path: Path, archive: bytes) -> None:
    with pytest.raises(sidecar.RequestError):
        sidecar._unpack(archive, tmp_path / "rapl-sysfs" / "AbsPower")
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "rapl-sysfs" / "AbsPower").exists()


def test_a_request_written_in_pieces_is_answered_over_the_socket(tmp_path: Path, model_zip: Path) -> None:
    path = str(tmp_path / "estimator.sock")
    ready = threading.Event()
    threading.Thread(target=sidecar.serve, args=(path, models_with(tmp_path, model_zip), ready.set),
                     daemon=True).start()
    assert ready.wait(10)
    raw = request(3)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(path)
        for i in range(0, len(raw), 7):  # Kepler writes once; a slow peer must not cut the request
            client.sendall(raw[i:i + 7])
        answer = json.loads(client.recv(4096))
    assert answer["msg"] == "" and set(answer["powers"]) == {"package", "core", "uncore", "dram"}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(path)
        client.sendall(b"{oops}")
        client.shutdown(socket.SHUT_WR)
        assert "not JSON" in json.loads(client.recv(4096))["msg"]


def test_the_manifests_example_runs_the_estimator_with_upstreams_arguments() -> None:
    example = REPO / "manifests" / "examples" / "kepler-estimator-sidecar.yaml"
    daemonset, config = yaml.safe_load_all(example.read_text())
    containers = {c["name"]: c for c in daemonset["spec"]["template"]["spec"]["containers"]}
    estimator = containers["estimator"]
    assert estimator["args"] == ["estimator"] and estimator["securityContext"]["runAsNonRoot"] is True
    args = build_parser("estimator").parse_args(["estimator"])
    assert args.socket == "/tmp/estimator.sock"
    shared = {m["name"] for m in estimator["volumeMounts"] if m["mountPath"] == "/tmp"}
    assert shared == {m["name"] for m in containers["kepler-exporter"]["volumeMounts"] if m["mountPath"] == "/tmp"}
    tokens = dict(t.split("=", 1) for t in config["data"]["MODEL_CONFIG"].split())
    assert tokens["NODE_COMPONENTS_ESTIMATOR"] == tokens["NODE_TOTAL_ESTIMATOR"] == "true"
    assert all(tokens[k].endswith(".zip") for k in tokens if k.endswith("_INIT_URL"))
