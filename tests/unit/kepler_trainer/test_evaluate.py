"""Held-out evaluation: runs found from pauses, leave-one-run-out folds, pooled errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kepler_trainer import evaluate


def test_a_pause_in_sampling_ends_a_run():
    t = np.concatenate([np.arange(0, 60, 3), np.arange(600, 660, 3), np.arange(5000, 5030, 3)]).astype(float)
    labels = evaluate.runs(t)
    assert labels.tolist() == [0] * 20 + [1] * 20 + [2] * 10


def test_a_jitter_of_the_step_is_not_a_pause():
    t = np.cumsum(np.r_[0, np.full(50, 3.0)] + np.random.default_rng(0).uniform(-0.4, 0.4, 51))
    assert set(evaluate.runs(t).tolist()) == set(range(evaluate.FALLBACK_BLOCKS))


def test_one_continuous_collection_is_cut_into_contiguous_equal_blocks():
    labels = evaluate.runs(np.arange(0, 3 * 103, 3.0), blocks=4)
    assert np.all(np.diff(labels) >= 0), "blocks follow time"
    counts = np.bincount(labels)
    assert len(counts) == 4 and counts.max() - counts.min() <= 1 and counts.sum() == 103


def test_an_explicit_gap_bound_is_used_and_unordered_timestamps_are_refused():
    assert evaluate.runs([0, 3, 6, 10, 13], max_gap=3.5).tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="time order"):
        evaluate.runs([0, 6, 3])
    assert evaluate.runs([]).tolist() == []


def test_leave_one_out_tests_every_row_once_and_never_trains_on_it():
    groups = np.array(["b", "b", "a", "a", "a", "c"])
    folds = evaluate.leave_one_out(groups)
    assert len(folds) == 3
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(6))
    for train, test in folds:
        assert not set(train) & set(test)
        assert len(set(groups[test])) == 1 and set(groups[test]).isdisjoint(groups[train])
    with pytest.raises(ValueError, match="at least two"):
        evaluate.leave_one_out(["x", "x"])


def test_folds_by_method():
    assert len(evaluate.folds(100, "random", 0.1, 1)) == 1
    (train, test), = evaluate.folds(100, "time", 0.2)
    assert test.min() == 80 and train.max() == 79
    workload = evaluate.folds(100, "workload")
    assert len(workload) == evaluate.FALLBACK_BLOCKS
    assert [t.min() for _, t in workload] == sorted(t.min() for _, t in workload)
    by_label = evaluate.folds(4, "workload", groups=[1, 2, 1, 2])
    assert [t.tolist() for _, t in by_label] == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="unknown split"):
        evaluate.folds(10, "psychic")


def test_pooled_errors_score_each_row_once_with_its_own_fold():
    measured = pd.DataFrame({"package_power": [10.0, 20.0, 30.0, 40.0], "dram_power": [5.0, 5.0, 5.0, 5.0]})
    first = pd.DataFrame({"package_power": [12.0, 18.0], "dram_power": [5.0, 5.0]}, index=[0, 1])
    second = pd.DataFrame({"package_power": [30.0, 48.0], "dram_power": [6.0, 4.0]}, index=[2, 3])
    pooled = evaluate.pooled_errors(measured, [first, second])
    assert pooled["package_mae"] == pytest.approx((2 + 2 + 0 + 8) / 4)
    assert pooled["dram_mae"] == pytest.approx(0.5)
    assert pooled["mae"] == pooled["package_mae"]
    assert pooled["package_r2"] == pytest.approx(1 - (4 + 4 + 0 + 64) / 500)


def test_idle_rows_and_idle_bias():
    import numpy as np
    import pandas as pd

    from kepler_trainer import evaluate

    busy = np.array([0.0, 0.04, 0.5, 2.0, 0.01, 1.0])
    idle = evaluate.idle_rows(busy)  # within 5 % of the 0..2 range: <= 0.1 cores
    assert idle.tolist() == [True, True, False, False, True, False]
    measured = pd.DataFrame({"package_power": [10.0, 11, 30, 60, 10, 40], "dram_power": [5.0] * 6})
    held_out = [pd.DataFrame({"package_power": [13.0, 31], "dram_power": [4.0, 5]}, index=[0, 2]),
                pd.DataFrame({"package_power": [12.0], "dram_power": [5.0]}, index=[4])]
    bias = evaluate.idle_bias(measured, held_out, idle)
    assert bias["package_idle_bias"] == pytest.approx(2.5)  # rows 0 and 4: +3, +2
    assert bias["dram_idle_bias"] == pytest.approx(-0.5)
    assert bias["idle_bias"] == pytest.approx(2.5) and bias["idle_test_rows"] == 2
    none = evaluate.idle_bias(measured, [held_out[0].loc[[2]]], idle)
    assert none["idle_bias"] is None and none["package_idle_bias"] is None
