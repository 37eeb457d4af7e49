"""The quality trainers: tuning inside the training rows only, monotonic power, persistence, the gate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold

from kepler_trainer import evaluate, pipeline
from kepler_trainer.errors import ConfigError
from kepler_trainer.features import OutputType
from kepler_trainer.persist import LoadedModel, save_model
from kepler_trainer.trainers import (
    QUALITY_TRAINERS,
    TRAINERS,
    TUNING_FOLDS,
    UPSTREAM_TRAINERS,
    PowerModel,
    cross_validated_mae,
    grows_with_load,
    trainer_names,
)
from tests.support import checkout

QUALITY = [s.name for s in QUALITY_TRAINERS]
REAL = checkout.DATA / "nx12" / "preprocess_abs_default_rapl_CounterOnly.csv"


def _steps(n=600, seed=0):
    """Load steps with a misaligned sample at each edge, like Kepler data: power grows with activity."""
    rng = np.random.default_rng(seed)
    level = np.repeat(rng.uniform(0, 1, n // 10), 10)
    X = pd.DataFrame({"cpu_instructions": level * 3e10 + rng.normal(0, 1e8, n),
                      "kubelet_memory_bytes": rng.uniform(1e9, 2e9, n)})
    package = 40 + 150 * level ** 4 + rng.normal(0, 1.0, n)
    package[::10] += 50  # the edge sample: power already at the next step's level
    Y = pd.DataFrame({"package_power": package, "core_power": 0.0})
    return X, Y


def test_upstream_names_are_kept_and_new_ones_added():
    assert list(UPSTREAM_TRAINERS) == list(TRAINERS)[:10]
    assert trainer_names("upstream") == list(UPSTREAM_TRAINERS)
    assert trainer_names("default") == list(UPSTREAM_TRAINERS)
    assert set(QUALITY) <= set(trainer_names("all"))
    assert trainer_names("HistGradientBoosting,ExtraTrees") == ["HistGradientBoostingTrainer", "ExtraTreesTrainer"]


@pytest.mark.parametrize("trainer", QUALITY)
def test_quality_trainers_beat_a_line_and_median_fits_ignore_edge_samples(trainer):
    X, Y = _steps()
    train, test = evaluate.split(len(X), 0.2, "time")
    model = PowerModel(trainer).fit(X.iloc[train], Y.iloc[train])
    line = PowerModel("LinearRegressionTrainer").fit(X.iloc[train], Y.iloc[train])
    ours = evaluate.errors(Y.iloc[test], model.predict_components(X.iloc[test]))["mae"]
    linear = evaluate.errors(Y.iloc[test], line.predict_components(X.iloc[test]))["mae"]
    assert ours < linear
    assert model.is_constant("core") and "core" not in model.tuned_


def test_tuning_picks_the_candidate_with_the_lowest_error_on_training_folds_only():
    X, Y = _steps(seed=3)
    train = np.arange(400)
    model = PowerModel("ExtraTreesTrainer", tuning="blocked").fit(X.iloc[train], Y.iloc[train])
    x, y = X.to_numpy(float)[train], Y["package_power"].to_numpy()[train]
    scores = []
    for candidate in TRAINERS["ExtraTreesTrainer"].grid:
        pipe = PowerModel("ExtraTreesTrainer")._component_pipeline("package", list(X.columns))
        pipe.set_params(**{f"model__{k}": v for k, v in candidate.items()})
        scores.append(cross_validated_mae(pipe, x, y, KFold(TUNING_FOLDS)))
    assert model.tuned_["package"] == TRAINERS["ExtraTreesTrainer"].grid[int(np.argmin(scores))]
    # The held-out rows play no part: changing them changes nothing in the fitted model.
    Y2 = Y.copy()
    Y2.loc[400:, "package_power"] = 1e6
    again = PowerModel("ExtraTreesTrainer", tuning="blocked").fit(X.iloc[train], Y2.iloc[train])
    np.testing.assert_array_equal(again.predict_components(X)["package_power"],
                                  model.predict_components(X)["package_power"])


def test_tuning_modes():
    X, Y = _steps()
    off = PowerModel("HistGradientBoostingTrainer", tuning="off").fit(X, Y)
    assert off.tuned_["package"] == TRAINERS["HistGradientBoostingTrainer"].grid[0]
    shuffled = PowerModel("HistGradientBoostingTrainer", tuning="random", random_state=1).fit(X, Y)
    assert shuffled.tuned_["package"] in TRAINERS["HistGradientBoostingTrainer"].grid
    with pytest.raises(ConfigError, match="unknown tuning"):
        PowerModel("HistGradientBoostingTrainer", tuning="guess").fit(X, Y)


def test_monotonic_model_never_predicts_less_power_for_more_activity():
    X, Y = _steps(seed=5)
    model = PowerModel("MonotonicHistGradientBoostingTrainer").fit(X, Y)
    constraints = model.models_["package"][-1].monotonic_cst
    assert list(constraints) == [int(grows_with_load(f)) for f in X.columns] == [1, 0]
    grid = pd.DataFrame({"cpu_instructions": np.linspace(0, 3e10, 400), "kubelet_memory_bytes": 1.5e9})
    assert np.all(np.diff(model.predict_components(grid)["package_power"].to_numpy()) >= -1e-9)
    plain = PowerModel("HistGradientBoostingTrainer").fit(X, Y).predict_components(grid)["package_power"]
    assert np.any(np.diff(plain.to_numpy()) < 0), "without the constraint the fit does wiggle"


@pytest.mark.parametrize("trainer", QUALITY)
def test_a_dynpower_model_derived_by_shifting_equals_a_direct_fit(trainer):
    X, Y = _steps()
    idle = {"package_power": float(Y.package_power.min()), "core_power": 0.0}
    direct = PowerModel(trainer).fit(X, Y - pd.Series(idle)).predict_components(X)["package_power"]
    derived = PowerModel(trainer).fit(X, Y).shifted(idle).predict_components(X)["package_power"]
    np.testing.assert_allclose(derived, direct, atol=1e-6)


@pytest.mark.parametrize("trainer", QUALITY)
def test_quality_models_persist_without_pickle_and_load_back(trainer, tmp_path):
    X, Y = _steps()
    model = PowerModel(trainer).fit(X, Y)
    folder = tmp_path / f"{trainer}_0"
    save_model(folder, model, {"model_name": folder.name, "model_file": f"{folder.name}.json", "features": list(X)})
    assert not list(folder.glob("*.pkl")) and (folder / "package.skops").is_file()
    loaded = LoadedModel(folder)  # needs persist.TRUSTED_TYPES to hold HGB's TreePredictor
    np.testing.assert_allclose(loaded.predict(X.to_numpy())["package"], model.predict_components(X)["package_power"])


def test_real_nx12_table_new_trainers_beat_upstream_on_the_reference_protocol():
    data = pd.read_csv(REAL).sort_values("timestamp")
    X, Y = data[["cache_miss", "cpu_cycles", "cpu_instructions"]], data[[c for c in data if c.endswith("_power")]]
    best = {}
    for group, names in (("upstream", ["XgboostFitTrainer", "KNeighborsRegressorTrainer"]),
                         ("ours", ["ExtraTreesTrainer"])):
        maes = []
        for name in names:
            per_seed = []
            for seed in range(2):
                train, test = evaluate.split(len(X), 0.1, "random", seed)
                model = PowerModel(name, random_state=seed, tuning="random").fit(X.iloc[train], Y.iloc[train])
                per_seed.append(evaluate.errors(Y.iloc[test], model.predict_components(X.iloc[test]))["mae"])
            maes.append(np.mean(per_seed))
        best[group] = min(maes)
    assert best["ours"] < best["upstream"]


# -- the accuracy gate ------------------------------------------------------------------------------------

def test_the_gate_marks_models_over_the_bound_and_publishes_the_rest(tmp_path):
    X, Y = _steps()
    data = pd.concat([X, Y], axis=1).assign(timestamp=np.arange(len(X)) * 3, instance="n", node_type=0)
    table = pipeline.Table("rapl-sysfs", "Custom", OutputType.ABS, list(X.columns), list(Y.columns), data)
    trainers = ["LinearRegressionTrainer", "ExtraTreesTrainer"]
    free = pipeline.TrainSettings("free", [], ["Custom"], trainers, [], n_jobs=1)
    scores = {r.trainer: r.metrics["mae"] for r in pipeline.train([table], free)}
    assert scores["ExtraTreesTrainer"] < scores["LinearRegressionTrainer"]
    bound = (scores["ExtraTreesTrainer"] + scores["LinearRegressionTrainer"]) / 2
    gated = pipeline.TrainSettings("gated", [], ["Custom"], trainers, [], n_jobs=1, max_mae=bound)
    summary = pipeline.train_and_publish([table], gated, tmp_path, []).summary
    group = tmp_path / "gated" / "rapl-sysfs" / "AbsPower" / "Custom"
    passed = {t: json.loads((group / f"{t}_0" / "metadata.json").read_text())["passed_gate"] for t in trainers}
    assert passed == {"LinearRegressionTrainer": False, "ExtraTreesTrainer": True}
    assert [b["trainer"] for b in summary["best"]] == ["ExtraTreesTrainer"]
    csv = pd.read_csv(tmp_path / "gated" / "rapl-sysfs_AbsPower_model_metadata.csv")
    assert dict(zip(csv.trainer, csv.passed_gate, strict=False)) == passed
