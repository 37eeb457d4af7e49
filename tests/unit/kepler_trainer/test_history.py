"""History inputs (history.py): trailing windows of the busy CPU time per machine and run, the feature set's
`history` and its manifest entries, and the exporter computing the same numbers from its own samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kepler_trainer import featuresets, history
from kepler_trainer.errors import ConfigError
from kepler_trainer.exporter.model import HistoryInput


def _table(rng) -> pd.DataFrame:
    """Two machines, 3 s samples, a pause in each (a new run: a minute in a, 12 s in b)."""
    t = np.arange(0, 300, 3.0)
    first = np.concatenate([t, t[-1] + 60 + t])
    second = np.concatenate([t[:40], t[39] + 12 + t[:60]])
    rows = [pd.DataFrame({"instance": "a", "timestamp": first}), pd.DataFrame({"instance": "b", "timestamp": second})]
    data = pd.concat(rows, ignore_index=True)
    data["cpu_user"] = rng.exponential(1.0, len(data))
    data["cpu_system"] = rng.exponential(0.3, len(data))
    return data


def _by_hand(data: pd.DataFrame, row: int, seconds: int, stat: str) -> float:
    """Same machine, no pause of more than 3 steps in between, time in (now - W, now]."""
    me = data.iloc[row]
    same = data[data["instance"] == me["instance"]]
    start = me["timestamp"]
    for t in reversed(same["timestamp"][same["timestamp"] <= start].to_numpy()):  # walk back to the run start
        if start - t > 3 * 3.0:
            break
        start = t
    window = same[(same["timestamp"] >= start) & (same["timestamp"] > me["timestamp"] - seconds)
                  & (same["timestamp"] <= me["timestamp"])]
    busy = window["cpu_user"] + window["cpu_system"]
    return float(busy.mean() if stat == "mean" else busy.max())


def test_trailing_windows_per_machine_and_run_from_the_past_only():
    data = _table(np.random.default_rng(1))
    busy = ["cpu_system", "cpu_user"]
    past = history.columns(data, busy, [15, 60], ["mean", "max"])
    assert list(past.columns) == ["busy_cpu_mean_15s", "busy_cpu_max_15s", "busy_cpu_mean_60s", "busy_cpu_max_60s"]
    for row in (0, 1, 4, 5, 30, 99, 100, 101, 120, 199, 200, 205, 239, 240, 241, 250, 299):
        for seconds in (15, 60):
            for stat in ("mean", "max"):
                want = _by_hand(data, row, seconds, stat)
                assert past.iloc[row][f"busy_cpu_{stat}_{seconds}s"] == pytest.approx(want)
    # nothing after a row reaches it: changing the future leaves the past's inputs as they were
    later = data.copy()
    later.loc[50:, "cpu_user"] += 10
    assert past.iloc[:50].equals(history.columns(later, busy, [15, 60], ["mean", "max"]).iloc[:50])


def test_the_exporter_computes_the_training_tables_numbers():
    data = _table(np.random.default_rng(2)).query("instance == 'a'").reset_index(drop=True)
    one_run = np.zeros(len(data))  # (by default a pause-free collection is cut into evaluate.runs' blocks)
    past = history.columns(data, ["cpu_system", "cpu_user"], [15, 60], ["mean", "max"], one_run)
    columns = zip(data["timestamp"], data["cpu_system"], data["cpu_user"], strict=True)
    samples = [(t, (s, u, 7.0)) for t, s, u in columns]  # a third input outside the busy sum
    for seconds in (15, 60):
        for stat in ("mean", "max"):
            item = HistoryInput(history.input_name(stat, seconds), (0, 1), stat, float(seconds))
            got = [item.value(samples[: k + 1], samples[k][0]) for k in range(len(samples))]
            np.testing.assert_allclose(got, past[item.name], rtol=1e-12)


def test_feature_set_history_inputs_validation_and_manifest():
    with_past = featuresets.with_history(featuresets.PRESETS["kepler-vm"], "15,60")
    names = with_past.input_names
    assert names[: len(with_past.features)] == sorted(with_past.features)
    assert names[len(with_past.features):] == ["busy_cpu_mean_15s", "busy_cpu_max_15s", "busy_cpu_mean_60s",
                                               "busy_cpu_max_60s"]
    entry = featuresets.manifest_inputs(with_past, names)[-1]
    assert entry["history"] == {"of": with_past.busy_features, "stat": "max", "window_seconds": 60}
    assert "cpu_iowait" not in entry["history"]["of"] and entry["unit"] == "cores"
    for bad, reason in (("15,15", "distinct"), ("2", "between 5 and 3600"), ("15,x", "whole seconds"),
                        ("5,10,15,20,25", "at most 4")):
        with pytest.raises(ConfigError, match=reason):
            featuresets.with_history(featuresets.PRESETS["kepler-vm"], bad)
    clash = {"name": "x", "features": {"busy_cpu_mean_15s": {"query": "up", "unit": "cores", "cpu_busy": True}},
             "targets": {"package": {"query": "y", "unit": "W"}}, "history": {"windows": [15]}}
    with pytest.raises(ConfigError, match="taken by a history input"):
        featuresets.parse(clash)
