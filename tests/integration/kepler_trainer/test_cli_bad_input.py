"""The real `kepler-model train` given bad data, bad options and bad volumes (issue 13): either a
right model with the bad part dropped and counted, or one line with its exit code, never a traceback
and never a wrong model published with exit 0."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kepler_trainer import promjson
from kepler_trainer.data import QueryResult, Series
from tests.support.checkout import REAL, kepler_model

ONE_FIT = ["-e", "rapl-sysfs", "-fg", "CounterOnly", "--abs-trainers", "LinearRegression",
           "--dyn-trainers", "LinearRegression"]
PACKAGE = "kepler_node_package_joules_total"


def train(tmp_path: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, dict]:
    log = tmp_path / "termination.json"
    run = kepler_model("train", "-i", ",".join(map(str, inputs)), "-p", "p", *ONE_FIT, "--data-path",
                       str(tmp_path), "--termination-log", str(log), *extra)
    return run, json.loads(log.read_text()) if log.exists() else {}


def refused(run: subprocess.CompletedProcess, summary: dict, code: int, fragment: str) -> None:
    """One line naming the problem, the documented exit code (also in the summary), no traceback."""
    assert run.returncode == code, (run.returncode, run.stderr[-2000:])
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kepler-model: error:") and fragment in lines[0], run.stderr
    assert summary["ok"] is False and summary["error"]["exit_code"] == code


def altered(tmp_path: Path, name: str, change) -> Path:
    """REAL with `change(result)` applied, written as a new query output."""
    result = promjson.load(REAL)
    change(result)
    return promjson.dump(result, tmp_path / f"{name}.json")


def set_sample(metric: str, value: float, index: int = 40, series: int = 0):
    def change(result: QueryResult) -> None:
        s = result.metrics[metric][series]
        values = s.values.copy()
        values[index] = value
        result.metrics[metric][series] = Series(s.labels, s.timestamps, values)
    return change


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("clean")
    run, summary = train(work, REAL)
    assert run.returncode == 0, run.stderr
    return {"summary": summary, "pipeline": work / "models" / "p"}


def test_an_infinite_power_sample_is_dropped_not_read_as_a_counter_reset(tmp_path, clean):
    run, summary = train(tmp_path, altered(tmp_path, "inf", set_sample(PACKAGE, np.inf)))
    assert run.returncode == 0, run.stderr
    assert summary["input_checks"]["non_finite"] == 1 and summary["input_checks"]["dropped"] == 1
    assert summary["best"][0]["mae"] < 2 * clean["summary"]["best"][0]["mae"]  # ~9 W, not ~4,000 W
    meta = json.loads((tmp_path / "models/p/metadata.json").read_text())
    assert meta["input_checks"]["non_finite"] == 1


def test_a_huge_counter_value_is_dropped_and_counted(tmp_path, clean):
    feature = "kepler_container_cpu_instructions_total"
    run, summary = train(tmp_path, altered(tmp_path, "huge", set_sample(feature, 1e308)))
    assert run.returncode == 0, run.stderr
    assert summary["input_checks"]["out_of_range"] == 1
    assert summary["best"][0]["mae"] < 2 * clean["summary"]["best"][0]["mae"]


def test_power_made_of_huge_values_is_refused(tmp_path):
    def everything_huge(result: QueryResult) -> None:
        result.metrics[PACKAGE] = [Series(s.labels, s.timestamps, np.full(len(s), 1e308))
                                   for s in result.metrics[PACKAGE]]
    run, summary = train(tmp_path, altered(tmp_path, "all-huge", everything_huge))
    refused(run, summary, 3, f"samples of {PACKAGE} are not usable")
    assert not (tmp_path / "models" / "p").exists()


def test_millisecond_timestamps_are_refused(tmp_path):
    def milliseconds(result: QueryResult) -> None:
        for name, series in result.metrics.items():
            result.metrics[name] = [Series(s.labels, s.timestamps * 1000, s.values) for s in series]
    run, summary = train(tmp_path, altered(tmp_path, "ms", milliseconds))
    refused(run, summary, 3, "milliseconds")
    assert not (tmp_path / "models" / "p").exists()


def test_the_same_dump_twice_is_merged_once(tmp_path, clean):
    run, summary = train(tmp_path, REAL, REAL)
    assert run.returncode == 0, run.stderr
    assert summary["input_checks"]["repeated_series"] > 0
    assert summary["best"] == clean["summary"]["best"]
    table = "preprocessed_data/CounterOnly_abs_data.csv"
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "models/p" / table), pd.read_csv(clean["pipeline"] / table))


def test_a_series_contradicting_itself_is_refused(tmp_path):
    other = altered(tmp_path, "other", set_sample(PACKAGE, 123.0, index=10))
    run, summary = train(tmp_path, REAL, other)
    refused(run, summary, 3, "different values")


def test_json_nested_100000_deep_is_refused(tmp_path):
    deep = tmp_path / "deep.json"
    nested = "[" * 100_000 + "]" * 100_000
    deep.write_text(f'{{"{PACKAGE}": [{{"metric": {{}}, "x": {nested}, "values": []}}]}}')
    run, summary = train(tmp_path, deep)
    refused(run, summary, 3, "nested deeper")


@pytest.mark.parametrize("extra, code, fragment", [
    (("--jobs", "0"), 2, "--jobs must be at least 1"),
    (("--max-mae", "nan"), 2, "--max-mae must be a finite number"),
    (("--max-mae", "-1"), 2, "--max-mae must be a finite number"),
    (("-p", ""), 7, "invalid pipeline name ''"),
])
def test_options_out_of_range_are_refused_before_reading_the_input(tmp_path, extra, code, fragment):
    missing_power = tmp_path / "never-read.json"
    missing_power.write_text("{}")  # would fail later with exit 4 if it were read
    run, summary = train(tmp_path, missing_power, extra=extra)
    refused(run, summary, code, fragment)


@pytest.mark.parametrize("spec, fragment", [
    ("[1, 2]", "must be a JSON object"),
    ('{"attrs": "x"}', "must be a JSON object"),
    ("deep", "cannot read machine spec"),
    ('{"cores": 1e999}', "cannot read machine spec"),
    ('{"cores": "many"}', "cores must be a number"),
])
def test_a_bad_machine_spec_is_refused(tmp_path, spec, fragment):
    (tmp_path / "spec.json").write_text("[" * 100_000 + "]" * 100_000 if spec == "deep" else spec)
    run, summary = train(tmp_path, REAL, extra=("--machine-spec", str(tmp_path / "spec.json")))
    refused(run, summary, 3, fragment)


def test_a_model_or_data_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    run, summary = train(tmp_path, REAL, extra=("--model-path", str(tmp_path / "file")))
    refused(run, summary, 13, "is not a folder")
    run = kepler_model("train", "-i", str(REAL), *ONE_FIT, "--data-path", str(tmp_path / "file"))
    assert run.returncode == 13 and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def _in_private_tmpfs(tmp_path: Path, mount_options: str, *args: str) -> subprocess.CompletedProcess:
    """`kepler-model train` with its model path on a fresh tmpfs (a private mount namespace)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a private tmpfs")
    volume = tmp_path / "volume"
    volume.mkdir()
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    command = " ".join(f"'{a}'" for a in args)
    script = (f"mount -t tmpfs -o {mount_options} tmpfs '{volume}' && "
              f"{command} --model-path '{volume}/models'")
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)


def test_a_read_only_volume_is_refused_before_training(tmp_path):
    import sys
    run = _in_private_tmpfs(tmp_path, "size=256m,ro", "env", "CI=1", sys.executable, "-m", "kepler_trainer", "train",
                            "-i", str(REAL), *ONE_FIT, "--data-path", str(tmp_path))
    assert run.returncode == 13, run.stderr
    assert "Read-only file system" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_a_full_volume_is_refused_before_training(tmp_path):
    import sys
    run = _in_private_tmpfs(tmp_path, "size=1m", "env", "CI=1", sys.executable, "-m", "kepler_trainer", "train",
                            "-i", str(REAL), *ONE_FIT, "--data-path", str(tmp_path))
    assert run.returncode == 13, run.stderr
    assert "MiB free" in run.stderr and len(run.stderr.strip().splitlines()) == 1


NX12 = REAL.parents[1] / "nx12" / "preprocess_abs_default_rapl_CounterOnly.csv"


@pytest.mark.parametrize("rows, code", [(slice(0, 20), 0), (slice(0, None), 3)], ids=["a-few-rows", "every-row"])
def test_a_table_with_huge_and_infinite_values(tmp_path, rows, code):
    table = pd.read_csv(NX12)
    table.loc[table.index[rows], "cpu_cycles"] = 1e308
    table.loc[table.index[rows][::2], "package_power"] = np.inf
    table.to_csv(tmp_path / "table.csv", index=False)
    log = tmp_path / "termination.json"
    run = kepler_model("train_from_data", "-i", str(tmp_path / "table.csv"), "-p", "t", "-e", "rapl", "-ot", "AbsPower",
                       "-fg", "CounterOnly", "--trainers", "LinearRegression", "--data-path", str(tmp_path),
                       "--termination-log", str(log))
    if code:
        refused(run, json.loads(log.read_text()), code, "the table is refused")
    else:
        assert run.returncode == 0, run.stderr
        model = tmp_path / "models/t/rapl-sysfs/AbsPower/CounterOnly/LinearRegressionTrainer_1"
        meta = json.loads((model / "metadata.json").read_text())
        assert 0 <= meta["mae"] < 50
