"""The real `kepler-model train_from_data` with the quality trainers on a real nx12 table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd

from tests.support import checkout

DATA = checkout.DATA / "nx12"


def test_train_from_data_publishes_the_quality_trainers_with_their_errors(tmp_path):
    run = subprocess.run([sys.executable, "-m", "kepler_trainer", "train_from_data", "-q",
                          "-i", str(DATA / "preprocess_abs_default_rapl_CounterOnly.csv"), "-p", "quality",
                          "-e", "rapl", "-ot", "AbsPower", "-fg", "CounterOnly", "--trainers",
                          "HistGradientBoosting,MonotonicHistGradientBoosting,ExtraTrees,LinearRegression",
                          "--split", "time", "--data-path", str(tmp_path)],
                         capture_output=True, text=True, env={**os.environ, "CI": "1"}, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    pipeline = tmp_path / "models" / "quality"
    table = pd.read_csv(pipeline / "rapl-sysfs_AbsPower_model_metadata.csv")
    maes = dict(zip(table.trainer, table.mae, strict=False))
    assert set(maes) == {"HistGradientBoostingTrainer", "MonotonicHistGradientBoostingTrainer",
                         "ExtraTreesTrainer", "LinearRegressionTrainer"}
    assert all(m > 0 for m in maes.values())
    # Held-out later time: the tree ensembles still beat a line through the same counters.
    assert min(maes["ExtraTreesTrainer"], maes["HistGradientBoostingTrainer"]) < maes["LinearRegressionTrainer"]
    model = pipeline / "rapl-sysfs" / "AbsPower" / "CounterOnly" / "ExtraTreesTrainer_1"
    meta = json.loads((model / "metadata.json").read_text())
    assert meta["evaluation"]["split"] == "time" and meta["weight"] is False
    assert {p.name for p in model.iterdir()} >= {"metadata.json", "ExtraTreesTrainer_1.json", "package.skops"}
    assert not list(pipeline.rglob("*.pkl"))
