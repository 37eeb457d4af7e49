"""Real pipelines to report on, trained by the real `kepler-model` command: one on the 2023 Kepler dump
(random split, both energy sources), one on the nx12 table with held-out workload blocks, and an
estimation with measured power to compare against."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.checkout import DATA, REAL, kepler_model

NX12 = DATA / "nx12" / "preprocess_abs_default_rapl_CounterOnly.csv"
TRAINERS = "LinearRegressionTrainer,GradientBoostingRegressorTrainer,LogarithmicRegressionTrainer"
GROUPS = "CounterOnly,BPFOnly"


def check(run: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert run.returncode == 0, run.stdout[-1000:] + run.stderr[-3000:]
    return run


def train_all(work: Path) -> dict:
    """Publish `real` and `blocks` under `<work>/models`, estimate with `real` into `<work>/output`."""
    log = work / "train.json"
    check(kepler_model("train", "-q", "-i", str(REAL), "-p", "real", "-e", "rapl-sysfs,acpi", "-fg", GROUPS,
                       "--abs-trainers", TRAINERS, "--dyn-trainers", TRAINERS, "--data-path", str(work),
                       "--termination-log", str(log)))
    check(kepler_model("train_from_data", "-q", "-i", str(NX12), "-p", "blocks", "-e", "rapl", "-ot", "AbsPower",
                       "-fg", "CounterOnly", "--trainers", TRAINERS, "--split", "workload", "--data-path", str(work)))
    estimate = check(kepler_model("estimate", "-q", "-i", str(REAL), "-p", "real", "-e", "rapl-sysfs",
                                  "--data-path", str(work)))
    return {"work": work, "models": work / "models", "summary": json.loads(log.read_text()),
            "estimation": work / "output", "estimate_stdout": estimate.stdout}


def models_on_disk(pipeline: Path) -> dict[str, dict]:
    """`<source>/<ot>/<group>/<model>` -> its metadata.json, read independently of the report code."""
    return {"/".join(meta.parent.relative_to(pipeline).parts): json.loads(meta.read_text())
            for meta in sorted(pipeline.glob("*/*/*/*/metadata.json"))}
