"""The real `kepler-model` command on real Kepler data: the pipeline tree, its schemas, estimation,
atomic publishing, and every user error with its exit code."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kepler_trainer import promjson
from kepler_trainer.persist import predict_from_weights
from tests.support.checkout import DATA, REAL, kepler_model
from tests.support.synthetic import generate

IDLE = DATA / "kepler-metrics" / "idle.json"
FAST = "LinearRegressionTrainer,SGDRegressorTrainer,GradientBoostingRegressorTrainer,LogarithmicRegressionTrainer"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One real training run on the 2023 Kepler dump, shared by the tests that read its output."""
    work = tmp_path_factory.mktemp("train")
    log = work / "termination.json"
    run = kepler_model("train", "-i", str(REAL), "-p", "real", "-e", "rapl-sysfs,acpi", "--abs-trainers", FAST,
                       "--dyn-trainers", FAST, "--data-path", str(work), "--termination-log", str(log))
    assert run.returncode == 0, run.stderr
    return {"work": work, "pipeline": work / "models" / "real", "log": log, "stdout": run.stdout}


def test_pipeline_tree_is_the_documented_layout(trained):
    p = trained["pipeline"]
    for name in ("metadata.json", "train_arguments.json", "node_type_index.json",
                 "rapl-sysfs_AbsPower_model_metadata.csv", "rapl-sysfs_DynPower_model_metadata.csv",
                 "acpi_AbsPower_model_metadata.csv", "acpi_DynPower_model_metadata.csv"):
        assert (p / name).is_file(), name
    assert (p.parent / "real.zip").is_file()
    groups = {d.name for d in (p / "rapl-sysfs" / "AbsPower").iterdir()}
    assert {"CounterOnly", "CounterIRQCombined", "KubeletOnly", "CgroupOnly"} <= groups
    for group in groups:
        assert (p / "preprocessed_data" / f"{group}_abs_data.csv").is_file()
        assert (p / "preprocessed_data" / f"{group}_dyn_data.csv").is_file()
    model = p / "rapl-sysfs" / "AbsPower" / "CounterOnly" / "SGDRegressorTrainer_0"
    assert {f.name for f in model.iterdir()} >= {"metadata.json", "SGDRegressorTrainer_0.json", "weight.json",
                                                  "package.skops", "dram.skops"}
    assert model.with_suffix(".zip").is_file() and model.with_suffix(".json").is_file()
    with zipfile.ZipFile(model.with_suffix(".zip")) as archive:
        assert "metadata.json" in archive.namelist() and "weight.json" in archive.namelist()
        assert all("/" not in n for n in archive.namelist()), "model zips are flat"
    assert not list(p.parent.glob(".tmp-*")), "no temporary folder is left"


def test_metadata_schemas(trained):
    p = trained["pipeline"]
    meta = json.loads((p / "metadata.json").read_text())
    assert meta["name"] == "real" and meta["isolator"] == "min" and meta["extractor"] == "default"
    assert meta["abs_trainers"] == FAST.split(",")  # one entry per trainer, not per instance
    assert set(meta["energy_sources"]) == {"rapl-sysfs", "acpi"}
    model = json.loads((p / "rapl-sysfs/AbsPower/CounterOnly/GradientBoostingRegressorTrainer_0" / "metadata.json")
                       .read_text())
    for key in ("model_name", "model_class", "model_file", "features", "fe_files", "output_type", "mae", "mape",
                "package_mae", "core_mae", "uncore_mae", "dram_mae", "package_mape", "dram_mape"):
        assert key in model, key
    assert model["mae"] == max(model[f"{c}_mae"] for c in ("package", "core", "uncore", "dram"))
    assert model["features"] == ["cache_miss", "cpu_cycles", "cpu_instructions"]
    table = pd.read_csv(p / "rapl-sysfs_AbsPower_model_metadata.csv", index_col=0)
    assert list(table.columns[:8]) == ["model_name", "model_class", "model_file", "features", "fe_files",
                                       "output_type", "mae", "mape"]
    assert {"trainer", "node_type", "feature_group", "package_mae", "dram_mape"} <= set(table.columns)
    for _, rows in table.groupby("feature_group"):
        assert rows["mae"].is_monotonic_increasing
    assert table["features"].iloc[0].startswith("['")
    args = json.loads((p / "train_arguments.json").read_text())
    assert args["command"] == "train" and args["energy_source"] == "rapl-sysfs,acpi"
    summary = json.loads(trained["log"].read_text())
    published = sum(len(pd.read_csv(f)) for f in p.glob("*_model_metadata.csv"))
    assert summary["ok"] and summary["models"] == published
    assert len(trained["log"].read_bytes()) <= 4096
    assert {b["output_type"] for b in summary["best"]} == {"AbsPower", "DynPower"}


def test_weight_file_predicts_like_kepler_on_the_real_table(trained):
    p = trained["pipeline"]
    weights = json.loads((p / "rapl-sysfs/AbsPower/CounterOnly/LinearRegressionTrainer_0/weight.json").read_text())
    table = pd.read_csv(p / "preprocessed_data" / "CounterOnly_abs_data.csv").dropna()
    features = ["cache_miss", "cpu_cycles", "cpu_instructions"]
    by_weights = predict_from_weights(weights, table[features].to_dict("records"))
    from kepler_trainer.persist import LoadedModel

    by_model = LoadedModel(p / "rapl-sysfs/AbsPower/CounterOnly/LinearRegressionTrainer_0").predict(
        table[features].to_numpy())
    np.testing.assert_allclose(np.clip(by_weights["package"], 0, None), by_model["package"], rtol=1e-7, atol=1e-6)
    published = json.loads((p / "rapl-sysfs/AbsPower/CounterOnly/LinearRegressionTrainer_0.json").read_text())
    assert published["model_name"] == "LinearRegressionTrainer_0" and published["package"] == weights["package"]


def test_estimate_with_the_best_model_and_a_named_one(trained):
    work = trained["work"]
    log = work / "estimate.json"
    run = kepler_model("estimate", "-i", str(REAL), "-p", "real", "-e", "rapl", "--data-path", str(work),
                       "--termination-log", str(log))
    assert run.returncode == 0, run.stderr
    result = pd.read_csv(work / "output" / "estimation_result.csv")
    assert {"timestamp", "predicted_package_power", "measured_package_power", "predicted_dram_power"} <= set(result)
    summary = json.loads(log.read_text())
    best = summary["model"]
    table = pd.read_csv(trained["pipeline"] / "rapl-sysfs_AbsPower_model_metadata.csv")
    assert best["mae"] == pytest.approx(table["mae"].min())
    assert summary["components"]["package"]["mae"] < 20
    assert summary["components"]["package"]["energy_joules"] > 0
    with zipfile.ZipFile(work / "output" / "model.zip") as archive:
        assert json.loads(archive.read("metadata.json"))["model_name"] == best["model_name"]
    named = kepler_model("estimate", "-i", str(REAL), "-p", "real", "-e", "acpi", "-ot", "DynPower",
                         "-fg", "KubeletOnly", "--model-name", "SGDRegressorTrainer_0", "--data-path", str(work))
    assert named.returncode == 0, named.stderr
    assert "SGDRegressorTrainer_0 (KubeletOnly)" in named.stdout


def test_synthetic_truth_is_recovered_by_the_linear_trainer(tmp_path):
    result, truth, rates = generate(containers=8, samples=400, noise_watts=0.5, seed=7)
    promjson.dump(result, tmp_path / "synthetic.json")
    run = kepler_model("train", "-i", str(tmp_path / "synthetic.json"), "-p", "truth", "-e", "rapl-sysfs",
                       "-fg", "Basic", "--abs-trainers", "LinearRegression", "--dyn-trainers", "LinearRegression",
                       "--data-path", str(tmp_path))
    assert run.returncode == 0, run.stderr
    folder = tmp_path / "models/truth/rapl-sysfs/AbsPower/Basic/LinearRegressionTrainer_0"
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["package_mae"] < 1.0, "within 2 sigma of the 0.5 W noise"
    weights = json.loads((folder / "weight.json").read_text())
    w = weights["package"]["All_Weights"]
    assert w["Bias_Weight"] == pytest.approx(truth.idle["package"], abs=1.5)
    instr = w["Numerical_Variables"]["cpu_instructions"]
    assert instr["weight"] / instr["scale"] == pytest.approx(truth.coef["package"]["cpu_instructions"], rel=0.05)


def test_train_from_data_on_the_reference_tables(tmp_path):
    run = kepler_model("train_from_data", "-i", str(DATA / "nx12" / "preprocess_abs_default_rapl_CounterOnly.csv"),
                       "-p", "nx12", "-e", "rapl", "-ot", "AbsPower", "-fg", "CounterOnly", "--trainers",
                       "GradientBoostingRegressor,LinearRegression", "--data-path", str(tmp_path))
    assert run.returncode == 0, run.stderr
    run = kepler_model("train_from_data", "-i", str(DATA / "nx12" / "preprocess_dyn_default_min_acpi_KubeletOnly.csv"),
                       "-p", "nx12", "-e", "acpi", "-ot", "DynPower", "-fg", "KubeletOnly", "--trainers",
                       "LinearRegression", "--data-path", str(tmp_path))
    assert run.returncode == 0, run.stderr
    p = tmp_path / "models" / "nx12"
    rapl = pd.read_csv(p / "rapl-sysfs_AbsPower_model_metadata.csv", index_col=0)
    assert set(rapl["model_name"]) == {"GradientBoostingRegressorTrainer_1", "LinearRegressionTrainer_1"}
    assert (rapl["mae"] > 0).all() and (rapl["mae"] < 20).all()
    acpi = pd.read_csv(p / "acpi_DynPower_model_metadata.csv", index_col=0)
    assert acpi["features"].iloc[0] == "['kubelet_cpu_usage', 'kubelet_memory_bytes']", "stray index and id ignored"
    assert (p / "metadata.json").is_file() and (p.parent / "nx12.zip").is_file()


# -- user errors: one line, a named problem, a distinct exit code -----------------------------------------

@pytest.mark.parametrize("args, code, fragment", [
    (["train", "-i", "missing.json"], 3, "not found"),
    (["train", "-i", str(IDLE), "-e", "solar"], 7, "unknown energy source 'solar'"),
    (["train", "-i", str(IDLE), "--abs-trainers", "Magic"], 7, "unknown trainer 'Magic'"),
    (["train", "-i", str(IDLE), "-fg", "Nope"], 7, "unknown feature group 'Nope'"),
    (["train", "-i", str(IDLE), "-e", "hmc"], 5, "no node power metric for energy source 'hmc'"),
    (["train", "-i", str(IDLE)], 6, "too few usable samples"),
    (["train", "-i", str(REAL), "-p", "../escape"], 7, "invalid pipeline name"),
    (["estimate", "-i", str(REAL), "-p", "nothing-here"], 11, "no pipeline 'nothing-here'"),
    (["train"], 3, "no input"),
])
def test_user_errors(tmp_path, args, code, fragment):
    run = kepler_model(*args, "--data-path", str(tmp_path))
    assert run.returncode == code, (run.returncode, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("kepler-model: error:")
    assert "Traceback" not in run.stderr


def test_unreadable_and_featureless_inputs(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    run = kepler_model("train", "-i", "bad", "--data-path", str(tmp_path))
    assert run.returncode == 3 and "bad.json" in run.stderr
    (tmp_path / "power_only.json").write_text(json.dumps({"kepler_node_package_joules_total": []}))
    run = kepler_model("train", "-i", "power_only", "--data-path", str(tmp_path), "--termination-log",
                       str(tmp_path / "log"))
    assert run.returncode == 4 and "no Kepler workload metric" in run.stderr
    summary = json.loads((tmp_path / "log").read_text())
    assert summary == {"ok": False, "command": "train", "error": {
        "reason": "NoKeplerMetrics", "exit_code": 4, "message": summary["error"]["message"]}}


def test_accuracy_gate_refuses_to_publish(tmp_path):
    run = kepler_model("train", "-i", str(REAL), "-p", "gated", "-fg", "KubeletOnly", "--abs-trainers",
                       "LinearRegression", "--dyn-trainers", "LinearRegression", "--max-mae", "0.001",
                       "--data-path", str(tmp_path))
    assert run.returncode == 10 and "nothing was published" in run.stderr
    assert not (tmp_path / "models" / "gated").exists()


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def test_a_killed_run_leaves_the_previous_pipeline_intact(tmp_path):
    first = kepler_model("train", "-i", str(REAL), "-p", "atomic", "-fg", "CounterOnly", "--abs-trainers",
                         "LinearRegression", "--dyn-trainers", "LinearRegression", "--data-path", str(tmp_path))
    assert first.returncode == 0, first.stderr
    models = tmp_path / "models"
    before = _tree_digest(models / "atomic")
    big, _, _ = generate(containers=30, samples=3000, seed=3)
    promjson.dump(big, tmp_path / "big.json")
    proc = subprocess.Popen([sys.executable, "-m", "kepler_trainer", "train", "-i", str(tmp_path / "big.json"),
                             "-p", "atomic", "--data-path", str(tmp_path)], env={**os.environ, "CI": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(models.glob(".tmp-atomic-*/*/*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until the new version is being written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _tree_digest(models / "atomic") == before
    assert sorted(p.name for p in models.iterdir() if not p.name.startswith(".")) == ["atomic", "atomic.zip"]
    again = kepler_model("train", "-i", str(REAL), "-p", "atomic", "-fg", "CounterOnly", "--abs-trainers",
                         "SGDRegressor", "--dyn-trainers", "SGDRegressor", "--data-path", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert not list(models.glob(".tmp-*")), "the dead run's leftovers are cleaned by the next run"
    assert (models / "atomic/rapl-sysfs/AbsPower/CounterOnly/SGDRegressorTrainer_0").is_dir()


def test_help_explains_the_commands():
    run = kepler_model("--help")
    assert run.returncode == 0
    for command in ("train", "estimate", "query", "train_from_data"):
        assert command in run.stdout
    train_help = kepler_model("train", "--help").stdout
    for flag in ("-i INPUT", "-p PIPELINE_NAME", "--extractor", "--isolator", "--profile", "-e ENERGY_SOURCE",
                 "--abs-trainers", "--dyn-trainers", "-fg FEATURE_GROUP", "--data-path", "--max-mae"):
        assert flag in train_help, flag
