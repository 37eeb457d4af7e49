"""ONNX export: onnxruntime equals the native model (scaler, offsets, clip, constant zones) or a reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kepler_trainer.onnx_export import RELATIVE_TOLERANCE, export, predict, session
from kepler_trainer.trainers import PowerModel


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.uniform(0, 4, (240, 3)) * [1, 1e5, 1], columns=["busy", "intr", "mem"])
    Y = pd.DataFrame({"package_power": 30 + 20 * X["busy"] + 1e-5 * X["intr"] + rng.normal(0, 1, 240),
                      "core_power": 0.0, "dram_power": 8 + 0.5 * X["busy"]})
    return X, Y


@pytest.mark.parametrize("trainer", ["LinearRegressionTrainer", "KNeighborsRegressorTrainer",
                                     "GradientBoostingRegressorTrainer", "SVRRegressorTrainer",
                                     "ExtraTreesTrainer", "SGDRegressorTrainer", "XgboostFitTrainer"])
def test_exported_graph_equals_native(data, trainer):
    X, Y = data
    model = PowerModel(trainer).fit(X, Y)
    for variant in (model, model.shifted({"package_power": 45.0, "dram_power": 9.0})):  # DynPower: clipped
        onnx_bytes, check = export(variant, X.iloc[:60])
        assert check["exportable"], check
        if trainer in ("GradientBoostingRegressorTrainer", "ExtraTreesTrainer", "XgboostFitTrainer"):
            assert check["arithmetic"] == "scaled-float32"  # what the native trees compute in
        got = predict(session(onnx_bytes), X.to_numpy(float))  # all rows, not only the checked ones
        want = variant.predict_components(X)
        for column in want:
            zone = column.removesuffix("_power")
            scale = np.maximum(want[column].abs() + variant.offsets_[zone], 1e-3)  # the zone's absolute power
            assert (np.abs(got[zone] - want[column]) <= RELATIVE_TOLERANCE * scale).all()
        assert (got["core"] == 0).all()  # the constant zone


def test_unconvertible_model_has_a_reason(data):
    X, Y = data
    Y = Y.assign(package_power=30 + 10 * np.log1p(X["busy"]), dram_power=8 + np.log1p(X["busy"]))
    model = PowerModel("LogarithmicRegressionTrainer", main_features={"package": "busy", "dram": "busy",
                                                                       "core": "busy"}).fit(X, Y)
    onnx_bytes, check = export(model, X.iloc[:20])
    assert onnx_bytes is None and not check["exportable"] and "no ONNX converter" in check["reason"]
