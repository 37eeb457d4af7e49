"""The trainer engine's pure parts: query JSON, extraction, trainers, evaluation, weight export."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kepler_trainer import evaluate, promjson
from kepler_trainer.data import QueryResult, Series
from kepler_trainer.errors import ConfigError, InputError, NoKeplerMetricsError, NoPowerMetricsError
from kepler_trainer.extract import extract
from kepler_trainer.features import energy_source, resolve_group
from kepler_trainer.isolate import MinIdleIsolator, TrainerIsolator
from kepler_trainer.persist import LoadedModel, predict_from_weights, save_model, weight_document
from kepler_trainer.trainers import TRAINERS, PowerModel, TrainerSkipped, trainer_names
from tests.support import checkout
from tests.support.synthetic import generate

DATA = checkout.DATA
RAPL, ACPI = energy_source("rapl-sysfs"), energy_source("acpi")


# -- query JSON ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["idle.json", "prom_response_2023.json"])
def test_load_matches_the_standard_json_parser(name):
    path = DATA / "kepler-metrics" / name
    expected = json.loads(path.read_text())
    loaded = promjson.load(path)
    assert list(loaded.metrics) == list(expected)
    for metric, series_list in expected.items():
        for raw, series in zip(series_list, loaded.metrics[metric], strict=True):
            assert dict(series.labels) == raw["metric"]
            np.testing.assert_array_equal(series.timestamps, [float(t) for t, _ in raw["values"]])
            np.testing.assert_array_equal(series.values, [float(v) for _, v in raw["values"]])


def test_dump_then_load_round_trips_pretty_and_special_values(tmp_path):
    result = QueryResult({"kepler_x_total": [
        Series({"a": "1", "q": 'needs "escaping" ]]'}, np.array([1.0, 2.5, 4.0]), np.array([0.0, np.nan, np.inf])),
        Series({}, np.array([]), np.array([])),
    ]})
    path = promjson.dump(result, tmp_path / "out.json")
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(path.read_text()), indent=2))
    for p in (path, pretty):
        again = promjson.load(p)
        s = again.metrics["kepler_x_total"][0]
        assert s.labels["q"] == 'needs "escaping" ]]'
        np.testing.assert_array_equal(s.timestamps, [1.0, 2.5, 4.0])
        assert s.values[0] == 0 and np.isnan(s.values[1]) and np.isinf(s.values[2])
        assert len(again.metrics["kepler_x_total"][1]) == 0
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file is left behind"


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("[1, 2]", "expected '{'"),
    ('{"m": [{"metric": {}, "values": [[1, "2"], [3, "x"]]}]}', "malformed sample"),
    ('{"m": [{"metric": {}, "values": [[1, "2"]', "unterminated"),
    ('{"m": []} trailing', "trailing data"),
])
def test_malformed_query_output_is_an_input_error(tmp_path, text, fragment):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError, match=fragment):
        promjson.load(path)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        promjson.load(tmp_path / "nope.json")


# -- extraction ---------------------------------------------------------------------------------------

def test_extracted_power_and_features_equal_the_ground_truth_despite_a_counter_reset():
    result, truth, rates = generate(containers=4, samples=120, reset_at=40)
    extracted = extract(result, [RAPL, ACPI])
    power = extracted.power["rapl-sysfs"]
    np.testing.assert_allclose(power["package_power"], truth.power("package", rates), rtol=1e-9)
    np.testing.assert_allclose(power["core_power"], 0.0)
    np.testing.assert_allclose(extracted.power["acpi"]["platform_power"], truth.power("platform", rates), rtol=1e-9)
    np.testing.assert_allclose(extracted.features["cpu_instructions"]["cpu_instructions"],
                               rates["cpu_instructions"], rtol=1e-9)


def test_two_exporters_stay_two_nodes():
    a, truth, rates_a = generate(containers=3, samples=50, instance="node-a", seed=1)
    b, _, rates_b = generate(containers=3, samples=50, instance="node-b", seed=2)
    for name, series in b.metrics.items():
        a.metrics[name].extend(series)
    table = extract(a, [RAPL]).table(["cpu_instructions"], "rapl-sysfs")
    assert sorted(table["instance"].unique()) == ["node-a", "node-b"]
    node_b = table[table.instance == "node-b"]
    np.testing.assert_allclose(node_b["package_power"], truth.power("package", rates_b), rtol=1e-9)


def test_no_power_for_the_source_and_no_features_are_named_errors():
    result, _, _ = generate(containers=2, samples=20)
    only_acpi = QueryResult({k: v for k, v in result.metrics.items() if "package" not in k and "core" not in k
                             and "dram" not in k and "uncore" not in k})
    with pytest.raises(NoPowerMetricsError, match="rapl-sysfs"):
        extract(only_acpi, [RAPL])
    only_power = QueryResult({k: v for k, v in result.metrics.items() if k.startswith("kepler_node_")})
    with pytest.raises(NoKeplerMetricsError):
        extract(only_power, [RAPL])


def test_feature_groups_resolve_against_both_metric_generations():
    new = promjson.load(DATA / "kepler-metrics" / "idle.json")
    old = promjson.load(DATA / "kepler-metrics" / "prom_response_2023.json")
    new_features = extract(new, [RAPL]).available_features
    old_features = extract(old, [RAPL]).available_features
    assert resolve_group("BPFOnly", new_features) == ["bpf_cpu_time_ms", "bpf_page_cache_hit"]
    assert resolve_group("BPFOnly", old_features) == ["bpf_cpu_time_us"]
    assert resolve_group("CounterOnly", old_features) == ["cache_miss", "cpu_cycles", "cpu_instructions"]
    assert resolve_group("KubeletOnly", old_features) == ["kubelet_cpu_usage", "kubelet_memory_bytes"]
    with pytest.raises(ConfigError, match="unknown feature group"):
        resolve_group("Nope", new_features)


def test_energy_source_aliases():
    assert energy_source("rapl").name == energy_source("intel_rapl").name == "rapl-sysfs"
    with pytest.raises(ConfigError, match="unknown energy source"):
        energy_source("solar")


# -- trainers ------------------------------------------------------------------------------------------

def _linear_table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"cpu_instructions": rng.uniform(0, 3e9, n), "bpf_cpu_time_ms": rng.uniform(0, 900, n)})
    Y = pd.DataFrame({"package_power": 40 + 3e-8 * X.cpu_instructions + 0.02 * X.bpf_cpu_time_ms,
                      "core_power": 0.0})
    return X, Y


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_every_trainer_fits_and_predicts_every_component(trainer):
    X, Y = _linear_table()
    model = PowerModel(trainer, main_features={"package": "cpu_instructions", "core": "cpu_instructions"})
    try:
        model.fit(X, Y)
    except TrainerSkipped as exc:
        pytest.skip(f"{trainer} cannot fit here: {exc}")
    predicted = model.predict_components(X)
    assert list(predicted.columns) == ["package_power", "core_power"]
    assert model.is_constant("core") and (predicted["core_power"] == 0).all()
    assert (predicted["package_power"] >= 0).all()
    assert np.mean(np.abs(predicted["package_power"] - Y["package_power"])) < 0.1 * Y["package_power"].std() + 5


def test_linear_trainer_recovers_the_ground_truth():
    X, Y = _linear_table()
    model = PowerModel("LinearRegressionTrainer").fit(X, Y)
    predicted = model.predict_components(X)
    assert np.max(np.abs(predicted["package_power"] - Y["package_power"])) < 1e-6


def test_trainer_is_skipped_on_too_few_rows_or_constant_power():
    X, Y = _linear_table(n=4)
    with pytest.raises(TrainerSkipped, match="too few rows"):
        PowerModel("LinearRegressionTrainer").fit(X, Y)
    X, Y = _linear_table(n=50)
    with pytest.raises(TrainerSkipped, match="constant"):
        PowerModel("LinearRegressionTrainer").fit(X, Y.assign(package_power=7.0))


def test_trainer_names_accept_short_names_and_reject_unknown():
    assert trainer_names("SGDRegressor,LinearRegressionTrainer") == ["SGDRegressorTrainer", "LinearRegressionTrainer"]
    assert trainer_names("default") == list(TRAINERS)[:10] and trainer_names("all") == list(TRAINERS)
    with pytest.raises(ConfigError, match="unknown trainer 'Magic'"):
        trainer_names("Magic")


# -- weight export: predict as Kepler's Go estimator does --------------------------------------------------

@pytest.mark.parametrize("trainer", ["LinearRegressionTrainer", "SGDRegressorTrainer"])
def test_weight_json_predicts_what_the_model_predicts(trainer, tmp_path):
    X, Y = _linear_table()
    Y = Y.assign(core_power=3.5)
    model = PowerModel(trainer, random_state=0).fit(X, Y)
    document = weight_document(model)
    assert set(document) == {"package", "core"}
    numerical = document["package"]["All_Weights"]["Numerical_Variables"]
    assert numerical["cpu_instructions"]["scale"] == pytest.approx(X.cpu_instructions.abs().max())
    rows = X.head(25).to_dict("records")
    by_weights = predict_from_weights(document, rows)
    by_model = model.predict_components(X.head(25))
    np.testing.assert_allclose(by_weights["package"], by_model["package_power"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(by_weights["core"], 3.5)


def test_no_weight_file_for_tree_models():
    X, Y = _linear_table()
    assert weight_document(PowerModel("GradientBoostingRegressorTrainer").fit(X, Y)) is None


@pytest.mark.parametrize("trainer", ["GradientBoostingRegressorTrainer", "KNeighborsRegressorTrainer",
                                     "LogisticRegressionTrainer", "PolynomialRegressionTrainer", "XgboostFitTrainer"])
def test_saved_model_loads_back_and_predicts_the_same(trainer, tmp_path):
    X, Y = _linear_table()
    try:
        model = PowerModel(trainer, main_features={"package": "cpu_instructions", "core": "cpu_instructions"}).fit(X, Y)
    except TrainerSkipped as exc:
        pytest.skip(str(exc))
    save_model(tmp_path / f"{trainer}_0", model, {"model_name": f"{trainer}_0", "model_file": f"{trainer}_0.json",
                                                  "features": list(X.columns)})
    assert (tmp_path / f"{trainer}_0.zip").is_file()
    loaded = LoadedModel(tmp_path / f"{trainer}_0")
    again = loaded.predict(X.to_numpy())
    np.testing.assert_allclose(again["package"], model.predict_components(X)["package_power"], rtol=1e-6)


def test_a_tampered_model_file_is_refused(tmp_path):
    import skops.io as sio

    X, Y = _linear_table()
    model = PowerModel("LinearRegressionTrainer").fit(X, Y)
    folder = tmp_path / "LinearRegressionTrainer_0"
    save_model(folder, model, {"model_name": folder.name, "model_file": f"{folder.name}.json",
                               "features": list(X.columns)})
    sio.dump({"evil": pd.Timestamp("2020-01-01")}, folder / "package.skops")  # a type off the allow-list
    with pytest.raises(InputError, match="refusing to load"):
        LoadedModel(folder)


# -- evaluation and isolation ------------------------------------------------------------------------------

def test_split_is_seeded_and_time_split_holds_out_the_end():
    a, b = evaluate.split(100, 0.1, "random", seed=3), evaluate.split(100, 0.1, "random", seed=3)
    np.testing.assert_array_equal(a[1], b[1])
    assert len(a[1]) == 10 and not set(a[0]) & set(a[1])
    train, test = evaluate.split(100, 0.1, "time")
    assert test.tolist() == list(range(90, 100)) and train.max() == 89


def test_headline_mape_is_the_largest_component_not_the_last():
    measured = pd.DataFrame({"package_power": [100.0, 100.0], "dram_power": [10.0, 10.0]})
    predicted = pd.DataFrame({"package_power": [50.0, 50.0], "dram_power": [10.0, 10.0]})
    errors = evaluate.errors(measured, predicted)
    assert errors["mae"] == 50.0 and errors["mape"] == 50.0 and errors["dram_mape"] == 0.0


def test_isolators_learn_idle_power():
    X, Y = _linear_table()
    table = pd.concat([X, Y], axis=1)
    iso = MinIdleIsolator().fit(table)
    assert iso.idle_["package_power"] == pytest.approx(Y.package_power.min())
    assert iso.transform(table)["package_power"].min() == pytest.approx(0.0)
    trainer_iso = TrainerIsolator().fit(table)
    assert trainer_iso.idle_["package_power"] == pytest.approx(40.0, abs=0.5)


@pytest.mark.parametrize("trainer", ["LinearRegressionTrainer", "GradientBoostingRegressorTrainer",
                                     "KNeighborsRegressorTrainer", "SVRRegressorTrainer"])
def test_a_dynpower_model_derived_from_the_abspower_fit_equals_a_direct_fit(trainer, tmp_path):
    X, Y = _linear_table()
    Y = Y.assign(package_power=Y.package_power + np.random.default_rng(1).normal(0, 2, len(Y)))
    idle = {"package_power": float(Y.package_power.min()), "core_power": 0.0}
    direct = PowerModel(trainer).fit(X, Y - pd.Series(idle))
    derived = PowerModel(trainer).fit(X, Y).shifted(idle)
    np.testing.assert_allclose(derived.predict_components(X)["package_power"],
                               direct.predict_components(X)["package_power"], atol=0.05)
    save_model(tmp_path / "abs", PowerModel(trainer).fit(X, Y), {"model_file": "abs.json", "features": list(X)})
    save_model(tmp_path / "dyn", derived, {"model_file": "dyn.json", "features": list(X)},
               same_regressors=tmp_path / "abs")
    loaded = LoadedModel(tmp_path / "dyn").predict(X.to_numpy())
    np.testing.assert_allclose(loaded["package"], derived.predict_components(X)["package_power"], rtol=1e-9)


def test_derived_linear_weights_subtract_idle_from_the_bias():
    X, Y = _linear_table()
    model = PowerModel("LinearRegressionTrainer").fit(X, Y)
    derived = model.shifted({"package_power": 40.0})
    assert weight_document(derived)["package"]["All_Weights"]["Bias_Weight"] == pytest.approx(
        weight_document(model)["package"]["All_Weights"]["Bias_Weight"] - 40.0)
