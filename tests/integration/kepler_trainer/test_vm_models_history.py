"""Issue 15's benchmark goal on real tables: with its recent past (history.py), a model a guest can feed has a
held-out MAE at most 0.8x the better of Kepler's method and a linear fit on CPU time.

On two of nx12's tables whose CPU time is mostly missing (cgroupfs reads 0 in 74 % of rows, kubelet in 38 %),
gradient boosting (ONNX-exportable) on the CPU time alone stays at 0.9x; with the mean and the largest busy
CPU time of the last 15, 60 and 180 s it must reach 0.8x. Same protocol as bench/bench_vm_models.py (which
this test imports): five contiguous blocks, each left out in turn, each starting its history afresh.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from kepler_trainer import evaluate
from tests.support.checkout import DATA as TEST_DATA, ROOT

DATA = TEST_DATA / "nx12"
GOAL = 0.8
TRAINER = "GradientBoostingRegressorTrainer"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_vm_models", ROOT / "bench" / "bench_vm_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("table", ["rapl_CgroupOnly", "acpi_KubeletOnly"])
def test_history_inputs_reach_the_goal_on_a_table_without_cpu_time_in_most_rows(table):
    bench = _bench()
    [(name, data, features, power, busy)] = [t for t in bench.guest_tables(DATA) if t[0] == table]
    folds = evaluate.leave_one_out(evaluate.runs(data["timestamp"].to_numpy(float)))
    idle = evaluate.idle_rows(data[busy].to_numpy(float))
    x = data[busy].to_numpy(float)
    baselines = []
    for fit in bench.BASELINES.values():
        predictions = [pd.DataFrame({p: fit(x[tr], data[p].to_numpy(float)[tr], x[te]) for p in power},
                                    index=data.index[te]) for tr, te in folds]
        baselines.append(bench.figures(data, power, predictions, idle)["mae"])
    past, with_past = bench.with_history(data, features, busy)
    plain = bench.held_out_figures(data, features, power, TRAINER, folds, idle, onnx=False)["mae"] / min(baselines)
    ratio = bench.held_out_figures(past, with_past, power, TRAINER, folds, idle, onnx=False)["mae"] / min(baselines)
    assert ratio <= GOAL, f"{name}: {ratio:.3f} x the better baseline (without history {plain:.3f})"
    assert ratio < plain - 0.1  # what reaches it is the history, not a change elsewhere
    # the inputs come from the busy CPU time's past alone: no power column, no time of day
    assert set(with_past) - set(features) == {f"busy_cpu_{s}_{w}s" for s in ("mean", "max") for w in (15, 60, 180)}
    assert np.isfinite(past[with_past].to_numpy(float)).all()
