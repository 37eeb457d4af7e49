"""Held-out error of a power model: per-component MAE, MAPE and R², and the headline figures.

`mae` is the largest component MAE, as upstream defines it. `mape` is the largest component MAPE:
upstream reports the last component's value instead (a bug that made DRAM's MAPE the headline).

Three ways to hold data out (docs/quality.md): `random` rows (upstream's protocol; optimistic, since
neighbouring samples of one load step land on both sides), `time` (the last part of the window), and
`workload`: leave one run out in turn, a run being a workload's own stretch of samples, labelled by
the data or found from pauses in the sampling (`runs`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("random", "time", "workload")
RUN_GAP_STEPS = 3.0   # a pause longer than this many sampling steps ends a run
FALLBACK_BLOCKS = 5


def split(n: int, test_size: float = 0.1, method: str = "random", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row positions for training and testing: a seeded shuffle, or the last `test_size` of time."""
    n_test = max(1, round(n * test_size))
    if method == "time":
        return np.arange(n - n_test), np.arange(n - n_test, n)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def runs(timestamps, max_gap: float | None = None, blocks: int = FALLBACK_BLOCKS) -> np.ndarray:
    """A run number per row of a time-ordered table.

    A run ends where the timestamps pause for more than `max_gap` seconds (default: `RUN_GAP_STEPS`
    times the median sampling step), i.e. where collection stopped between workloads. A table without
    such a pause (one continuous collection, like nx12) is cut into `blocks` contiguous windows of
    equal length instead, so that leaving one out still tests on a stretch of time the model never saw.
    """
    t = np.asarray(timestamps, dtype=float)
    n = len(t)
    if n == 0:
        return np.zeros(0, dtype=int)
    steps = np.diff(t)
    if len(steps) and (steps < 0).any():
        raise ValueError("timestamps must be in time order")
    positive = steps[steps > 0]
    gap = max_gap if max_gap is not None else (RUN_GAP_STEPS * float(np.median(positive)) if len(positive) else np.inf)
    labels = np.concatenate([[0], np.cumsum(steps > gap)]).astype(int)
    if labels[-1] >= 1:
        return labels
    return np.minimum((np.arange(n) * blocks) // n, blocks - 1)


def run_labels(data: pd.DataFrame) -> np.ndarray:
    """The run of each row of a table: its `workload` labels if it has them, else `runs` of its timestamps.

    A table of several machines (`instance`) holds each machine's rows in that machine's own time order,
    so its runs are found per machine and named `<machine>/<run>`: a run never spans two machines."""
    if "instance" not in data or data["instance"].nunique() <= 1:
        return _one_machine_runs(data)
    labels = np.empty(len(data), dtype=object)
    machines = data["instance"].astype(str).to_numpy()
    for machine in dict.fromkeys(machines.tolist()):
        rows = np.flatnonzero(machines == machine)
        labels[rows] = [f"{machine}/{run}" for run in _one_machine_runs(data.iloc[rows])]
    return labels


def _one_machine_runs(data: pd.DataFrame) -> np.ndarray:
    if "workload" in data:
        return data["workload"].astype(str).to_numpy()
    return runs(data["timestamp"].to_numpy(float))


def leave_one_out(groups) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) for each group in turn: test on the group, train on all the others."""
    groups = np.asarray(groups)
    labels = list(dict.fromkeys(groups.tolist()))
    if len(labels) < 2:
        raise ValueError("leaving one workload out needs at least two workloads")
    rows = np.arange(len(groups))
    return [(rows[groups != g], rows[groups == g]) for g in labels]


def folds(n: int, method: str = "random", test_size: float = 0.1, seed: int = 0,
          groups=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The held-out splits of a method: one for `random` and `time`, one per run for `workload`
    (`groups`: a run label per row; default: `runs` of the row order alone, i.e. equal blocks)."""
    if method == "workload":
        return leave_one_out(groups if groups is not None else runs(np.arange(n, dtype=float)))
    if method not in SPLITS:
        raise ValueError(f"unknown split {method!r} (known: {', '.join(SPLITS)})")
    return [split(n, test_size, method, seed)]


def _mape(y: np.ndarray, p: np.ndarray) -> float:
    positive = y > 0
    if not positive.any():
        return -1.0
    return float(np.mean(np.abs(y[positive] - p[positive]) / y[positive]) * 100.0)


def _r2(y: np.ndarray, p: np.ndarray) -> float | None:
    total = float(np.sum((y - y.mean()) ** 2))
    return None if total == 0 else 1.0 - float(np.sum((y - p) ** 2)) / total


def pooled_errors(measured: pd.DataFrame, predictions: list[pd.DataFrame]) -> dict[str, float | None]:
    """`errors` over the held-out rows of several folds together, each predicted by the model that did
    not see it (`predictions` share `measured`'s index)."""
    predicted = pd.concat(predictions)
    return errors(measured.loc[predicted.index], predicted)


def errors(measured: pd.DataFrame, predicted: pd.DataFrame) -> dict[str, float | None]:
    """`mae`, `mape` (largest over components), and `<component>_{mae,mape,r2}` for each component."""
    out: dict[str, float | None] = {}
    maes, mapes = [], []
    for column in measured.columns:
        component = column.removesuffix("_power")
        y, p = measured[column].to_numpy(float), predicted[column].to_numpy(float)
        mae = float(np.mean(np.abs(y - p)))
        mape = _mape(y, p)
        out[f"{component}_mae"], out[f"{component}_mape"], out[f"{component}_r2"] = mae, mape, _r2(y, p)
        maes.append(mae)
        mapes.append(mape)
    out["mae"] = max(maes)
    out["mape"] = max(mapes)
    return out


IDLE_ROWS = "busy CPU time <= its minimum + 5 % of its range over the training table"
IDLE_FRACTION = 0.05


def idle_rows(busy: np.ndarray) -> np.ndarray:
    """Rows of a machine at rest: busy CPU time (cores) within `IDLE_FRACTION` of its range above the
    minimum. Relative to the table, so it needs the table to include rest; a table that never rested
    has its least busy rows called idle (documented in docs/vm-models.md)."""
    lo, hi = float(np.min(busy)), float(np.max(busy))
    return busy <= lo + IDLE_FRACTION * (hi - lo)


def idle_bias(measured: pd.DataFrame, predictions: list[pd.DataFrame], idle: np.ndarray) -> dict[str, float | None]:
    """Mean (predicted - measured) over the held-out idle rows per zone, and the largest in magnitude as
    `idle_bias`; None where no held-out row is idle."""
    predicted = pd.concat(predictions)
    mask = pd.Series(idle, index=measured.index).loc[predicted.index].to_numpy()
    out: dict[str, float | None] = {}
    for column in measured.columns:
        zone = column.removesuffix("_power")
        diff = predicted[column].to_numpy(float)[mask] - measured.loc[predicted.index, column].to_numpy(float)[mask]
        out[f"{zone}_idle_bias"] = float(diff.mean()) if diff.size else None
    values = [v for k, v in out.items() if v is not None]
    out["idle_bias"] = max(values, key=abs) if values else None
    out["idle_test_rows"] = int(mask.sum())
    return out
