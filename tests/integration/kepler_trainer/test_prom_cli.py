"""`kepler-model query` and `kepler-model train -s` as the trainer Job runs them, against a real Prometheus."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kepler_trainer import promjson
from tests.support.openmetrics import GROUND_TRUTH, assert_matches_backfill
from tests.support.prometheus import free_port

pytestmark = pytest.mark.prometheus

# Tolerance of the ground-truth recovery: the data is an exact linear function of the counter rates,
# rounded to whole millijoules per 3 s step, so LinearRegression must land very close.
COEF_RTOL = 0.01      # each coefficient within 1 % ...
COEF_ATOL_W = 0.05    # ... plus 0.05 W of contribution at the feature's largest value (for zero weights)
IDLE_ATOL_W = 0.5     # the intercept (idle power) within 0.5 W
MAE_MAX_W = 0.1


def kepler_model(*argv: str, cwd: Path) -> tuple[subprocess.CompletedProcess, dict | None]:
    log = cwd / "termination.json"
    proc = subprocess.run([sys.executable, "-m", "kepler_trainer.cli", *argv, "--termination-log", str(log)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)
    return proc, (json.loads(log.read_text()) if log.exists() else None)


def command_supports(command: str, flag: str) -> bool:
    proc = subprocess.run([sys.executable, "-m", "kepler_trainer.cli", command, "--help"],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode == 0 and flag in proc.stdout


@pytest.fixture(scope="module", autouse=True)
def _cli_has_query():
    if not command_supports("query", "--label-filter"):
        pytest.skip("kepler-model query is not wired to kepler_trainer.prom yet")


def window(env, hours: float | None = None) -> list[str]:
    data = env.data
    start = data.end - hours * 3600 if hours else data.start
    return ["-s", env.url, "--start-time", str(start), "--end-time", str(data.end)]


def test_query_writes_what_prometheus_holds(session_prometheus, tmp_path):
    env = session_prometheus
    node_b = env.data.exporters[1]
    proc, summary = kepler_model("query", *window(env, hours=1), "--label-filter", f"instance={node_b.instance}",
                                 "--data-path", str(tmp_path / "data"), "-o", "kepler_query", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "data" / "kepler_query.json"
    assert summary["ok"] and summary["command"] == "query" and summary["path"] == str(path)
    raws = [s for s in env.data.series() if s.labels["instance"] == node_b.instance]
    points = assert_matches_backfill(promjson.load(path), raws, env.data.end - 3600, env.data.end, env.data.step)
    assert summary["samples"] == points


def test_query_takes_its_window_from_a_benchmark_file(session_prometheus, tmp_path):
    env = session_prometheus
    data = tmp_path / "data"
    data.mkdir()
    start, end = env.data.end - 600, env.data.end
    iso = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    (data / "stressng.json").write_text(json.dumps({"startTimeUTC": iso(start), "endTimeUTC": iso(end)}))
    proc, summary = kepler_model("query", "-s", env.url, "--benchmark", "stressng", "--data-path", str(data),
                                 "--label-filter", "job=kepler-exporter", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert summary["window"]["start"] == iso(start) and summary["window"]["end"] == iso(end)
    assert_matches_backfill(promjson.load(data / "output.json"), env.data.series(), start, end, env.data.step)


@pytest.mark.parametrize("case, extra, code, reason", [
    ("unreachable", ["--retries", "0"], 8, "PrometheusUnreachable"),
    ("bad query", ["--label-filter", "job=~("], 9, "PrometheusQueryFailed"),
    ("no metrics", ["--metric-prefix", "nothing_"], 4, "NoKeplerMetrics"),
    ("one point", ["--step", "3600"], 6, "TooFewSamples"),
])
def test_query_failures_exit_with_their_code_and_leave_nothing(session_prometheus, tmp_path, case, extra, code, reason):
    argv = window(session_prometheus, hours=0.5)
    if case == "unreachable":
        argv[1] = f"http://127.0.0.1:{free_port()}"
    data = tmp_path / "data"
    proc, summary = kepler_model("query", *argv, *extra, "--data-path", str(data), cwd=tmp_path)
    assert proc.returncode == code, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert summary == {"ok": False, "command": "query",
                       "error": {"reason": reason, "exit_code": code, "message": summary["error"]["message"]}}
    assert not data.exists() or not any(data.iterdir())


def test_train_without_power_metrics_exits_5(session_prometheus, tmp_path):
    # Only container metrics: the node energy counters are outside the prefix.
    proc, summary = kepler_model("train", *window(session_prometheus, hours=0.5),
                                 "--metric-prefix", "kepler_container_", "-e", "rapl-sysfs",
                                 "--data-path", str(tmp_path / "data"), cwd=tmp_path)
    assert proc.returncode == 5, proc.stderr
    assert summary["error"]["reason"] == "NoPowerMetrics"
    assert not (tmp_path / "data" / "models").exists() or not any((tmp_path / "data" / "models").iterdir())


def recovered(weights: dict) -> tuple[float, dict[str, tuple[float, float]]]:
    """(intercept, feature -> (coefficient in raw units, scale)), undoing the scaler of weight.json."""
    numeric = weights["All_Weights"]["Numerical_Variables"]
    coef = {f: (v["weight"] / v["scale"], v["scale"]) for f, v in numeric.items()}
    bias = weights["All_Weights"]["Bias_Weight"] - sum(v["weight"] * v.get("mean", 0.0) / v["scale"]
                                                       for v in numeric.values())
    return bias, coef


@pytest.fixture(scope="module")
def trained(session_prometheus, tmp_path_factory):
    """`train -s` on the last hour of node-a (filtered from node-b): (models folder, process, summary)."""
    if not command_supports("train", "--label-filter"):
        pytest.skip("kepler-model train does not take -s with Prometheus options yet")
    env = session_prometheus
    node_a = env.data.exporters[0]
    tmp = tmp_path_factory.mktemp("train-s")
    models = tmp / "models"
    proc, summary = kepler_model(
        "train", *window(env, hours=1), "--label-filter", f"instance={node_a.instance}",
        "-e", "rapl-sysfs,acpi", "-fg", "Basic", "--abs-trainers", "LinearRegressionTrainer",
        "--dyn-trainers", "LinearRegressionTrainer", "-p", "prom_truth", "--model-path", str(models),
        "--data-path", str(tmp / "data"), cwd=tmp)
    return models, proc, summary


def test_train_from_prometheus_recovers_the_ground_truth(trained):
    models, proc, summary = trained
    assert proc.returncode == 0, proc.stderr
    best = {(b["energy_source"], b["output_type"]): b for b in summary["best"]}
    assert set(best) == {("rapl-sysfs", "AbsPower"), ("rapl-sysfs", "DynPower"), ("acpi", "AbsPower"),
                         ("acpi", "DynPower")}
    assert all(b["mae"] <= MAE_MAX_W for b in best.values()), best

    for source in ("rapl-sysfs", "acpi"):
        folder = models / "prom_truth" / best[(source, "AbsPower")]["path"]
        weights = json.loads((folder / "weight.json").read_text())
        components = [c for c in GROUND_TRUTH if (c == "platform") == (source == "acpi")]
        for component in components:
            truth = GROUND_TRUTH[component]
            bias, coef = recovered(weights[component])
            assert bias == pytest.approx(truth.idle, abs=IDLE_ATOL_W), component
            for feature, (value, scale) in coef.items():
                want = truth.coef.get(feature, 0.0)
                assert abs(value - want) * scale <= COEF_RTOL * abs(want) * scale + COEF_ATOL_W, \
                    (component, feature, value, want)


def test_estimate_from_prometheus_matches_the_true_power(trained, session_prometheus, tmp_path):
    models, train_proc, _ = trained
    assert train_proc.returncode == 0, train_proc.stderr
    env = session_prometheus
    node_a = env.data.exporters[0]
    start, end = env.data.end - 2 * 3600, env.data.end - 3600  # an hour the model has not seen
    proc, summary = kepler_model(
        "estimate", "-s", env.url, "--start-time", str(start), "--end-time", str(end),
        "--label-filter", f"instance={node_a.instance}", "-e", "rapl-sysfs", "-fg", "Basic", "-p", "prom_truth",
        "--model-path", str(models), "--data-path", str(tmp_path / "data"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # the true power over each step that ends inside the window (the first point has no rate)
    ts = env.data.timestamps(node_a)
    inside = (ts > start) & (ts <= end)
    truth = env.data.power(node_a)
    assert summary["samples"] == inside.sum()
    for component in ("package", "core", "uncore", "dram"):
        got = summary["components"][component]
        assert got["mean_power_watts"] == pytest.approx(truth[component][inside].mean(), abs=0.05), component
        assert got["mae"] <= MAE_MAX_W


def test_the_profile_isolator_takes_the_idle_window_from_prometheus(session_prometheus, tmp_path):
    """What a TrainingPipeline's isolator.idleWindow runs (issue 12): the idle profile queried over its own
    window from the same Prometheus and filters equals the profile read from that window's query output."""
    env = session_prometheus
    node_a = env.data.exporters[0]
    idle_start, idle_end = env.data.start, env.data.start + 600
    common = [*window(env, hours=0.5), "--label-equals", f"instance={node_a.instance}", "-e", "rapl-sysfs",
              "-fg", "Basic", "--abs-trainers", "LinearRegressionTrainer", "--dyn-trainers", "LinearRegressionTrainer",
              "--isolator", "profile", "--data-path", str(tmp_path / "data"), "-q"]
    proc, _ = kepler_model("query", "-s", env.url, "--start-time", str(idle_start), "--end-time", str(idle_end),
                           "--label-equals", f"instance={node_a.instance}", "--data-path", str(tmp_path / "data"),
                           "-o", "idle", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    idle_power = {}
    for how, extra in (("window", ["--profile-start-time", str(idle_start), "--profile-end-time", str(idle_end)]),
                       ("file", ["--profile", str(tmp_path / "data" / "idle.json")])):
        proc, summary = kepler_model("train", *common, *extra, "-p", how, "--model-path", str(tmp_path / "m"),
                                     cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        idle_power[how] = json.loads((tmp_path / "m" / how / "metadata.json").read_text())["idle_power"]
    assert idle_power["window"] == idle_power["file"]
    assert idle_power["window"]["rapl-sysfs/Basic"]["package_power"] > 0
    proc, summary = kepler_model("train", *common, "--profile-start-time", str(idle_start), "-p", "half",
                                 cwd=tmp_path)
    assert proc.returncode == 7 and "--profile-end-time" in proc.stderr
