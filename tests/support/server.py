"""Helpers for the model-server tests and benchmark (no tests here).

`write_pipeline` lays out a hand-made pipeline folder in the published format (docs/contracts.md)
for selection rules that a trained pipeline cannot pin down (chosen MAEs, node types, specs);
`publish` renames it into place as the trainer does; `ServerProcess` runs the real server as a
subprocess on a free loopback port.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from kepler_trainer import pipeline

from .checkout import stop

COMPONENTS = {"rapl-sysfs": ("package", "core", "uncore", "dram"), "acpi": ("platform",)}
GROUP_FEATURES = {
    "CounterOnly": ["cache_miss", "cpu_cycles", "cpu_instructions"],
    "BPFOnly": ["bpf_cpu_time_ms", "bpf_page_cache_hit"],
    "BPFIRQ": ["bpf_block_irq", "bpf_cpu_time_ms", "bpf_net_rx_irq", "bpf_net_tx_irq", "bpf_page_cache_hit"],
    "CounterIRQCombined": ["bpf_block_irq", "bpf_net_rx_irq", "bpf_net_tx_irq", "cache_miss", "cpu_cycles",
                           "cpu_instructions"],
    "Basic": ["bpf_cpu_time_ms", "bpf_page_cache_hit", "cache_miss", "cpu_cycles", "cpu_instructions"],
}
WEIGHT_TRAINERS = {"SGDRegressorTrainer", "LinearRegressionTrainer", "LogarithmicRegressionTrainer",
                   "LogisticRegressionTrainer", "ExponentialRegressionTrainer"}


@dataclass
class FakeModel:
    """One model to lay out; its weight file is written when the trainer has one."""

    trainer: str
    node_type: int = 0
    mae: float = 10.0
    source: str = "rapl-sysfs"
    output_type: str = "AbsPower"
    feature_group: str = "BPFOnly"
    features: list[str] | None = None
    extra_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.trainer}_{self.node_type}"


def weight_doc(model: FakeModel) -> dict[str, Any]:
    features = model.features or GROUP_FEATURES[model.feature_group]
    doc = {}
    for i, component in enumerate(COMPONENTS[model.source]):
        variables = {f: {"scale": 1000.0 + j, "weight": round(model.mae + i + j / 10, 3)} for j,
                     f in enumerate(features)}
        doc[component] = {"All_Weights": {"Bias_Weight": 100.0 + i, "Categorical_Variables": {},
                                          "Numerical_Variables": variables}}
    return doc


def write_pipeline(folder: Path, name: str, models: list[FakeModel], node_types: dict[int, dict] | None = None,
                   last_update: str = "2026-01-01 00:00:00") -> Path:
    """Lay out pipeline `name` in `folder` (which becomes the pipeline folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    _dump(folder / "metadata.json", {"name": name, "extractor": "default", "isolator": "min",
                                     "abs_trainers": sorted({m.trainer for m in models}), "dyn_trainers": [],
                                     "init_time": last_update, "last_update_time": last_update})
    index = {str(k): {"attrs": v, "members": [f"machine-{k}"]} for k, v in (node_types or {}).items()}
    _dump(folder / "node_type_index.json", index)
    rows: dict[tuple[str, str], list[str]] = {}
    for m in models:
        group = folder / m.source / m.output_type / m.feature_group
        model_dir = group / m.name
        model_dir.mkdir(parents=True)
        features = m.features or GROUP_FEATURES[m.feature_group]
        components = COMPONENTS[m.source]
        metadata = {"model_name": m.name, "model_class": "scikit", "model_file": f"{m.name}.json",
                    "features": features, "fe_files": [], "output_type": m.output_type, "mae": m.mae,
                    "mape": 5.0, **{f"{c}_mae": m.mae for c in components}, "trainer": m.trainer,
                    "feature_group": m.feature_group, "energy_source": m.source, "node_type": m.node_type,
                    **m.extra_metadata}
        _dump(model_dir / "metadata.json", metadata)
        _dump(model_dir / f"{m.name}.json",
              {c: {"model_file": f"{c}.skops", "features": features, "fe_files": ["scaler.skops"]} for c in components})
        for c in components:
            (model_dir / f"{c}.skops").write_bytes(os.urandom(256))
        if m.trainer in WEIGHT_TRAINERS:
            _dump(model_dir / "weight.json", weight_doc(m))
            shutil.copyfile(model_dir / "weight.json", group / f"{m.name}.json")
        with zipfile.ZipFile(group / f"{m.name}.zip", "w") as archive:
            for item in sorted(model_dir.iterdir()):
                archive.write(item, item.name)
        rows.setdefault((m.source, m.output_type), []).append(f"{m.name},{m.mae},{m.feature_group}")
    for (source, output_type), lines in rows.items():
        (folder / f"{source}_{output_type}_model_metadata.csv").write_text(
            "model_name,mae,feature_group\n" + "\n".join(lines) + "\n")
    return folder


def publish(models_dir: Path, name: str, models: list[FakeModel], **kwargs: Any) -> Path:
    """Publish with the trainer's own atomic publish (build in a dot folder, swap it into place)."""
    return pipeline.publish(models_dir, name, lambda tmp, previous: write_pipeline(tmp, name, models, **kwargs))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def zip_names(data: bytes) -> list[str]:
    """The member names of a zip; raises when the bytes are not a complete, valid archive."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        bad = archive.testzip()
        assert bad is None, f"corrupt member {bad}"
        return archive.namelist()


def _dump(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))


class ServerProcess:
    """`python -m kepler_model_server` on a free loopback port, stopped on exit."""

    def __init__(self, models_dir: Path, *extra: str, workers: int = 1,
                 command: tuple[str, ...] = (sys.executable, "-m", "kepler_model_server")) -> None:
        self.models_dir = models_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [*command, "--models-dir", str(models_dir), "--port", str(self.port),
                     "--workers", str(workers), "--log-level", "warning", *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start (or, after `stop`, start again on the same port) and wait until /healthz answers."""
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.proc.stdout.read().decode()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server did not start within 30 s")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=10)
