"""Held-out error of a power model: per-component MAE, MAPE and R², and the headline figures.

`mae` is the largest component MAE, as upstream defines it. `mape` is the largest component MAPE:
upstream reports the last component's value instead (a bug that made DRAM's MAPE the headline).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("random", "time")


def split(n: int, test_size: float = 0.1, method: str = "random", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row positions for training and testing: a seeded shuffle, or the last `test_size` of time."""
    n_test = max(1, int(round(n * test_size)))
    if method == "time":
        return np.arange(n - n_test), np.arange(n - n_test, n)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _mape(y: np.ndarray, p: np.ndarray) -> float:
    positive = y > 0
    if not positive.any():
        return -1.0
    return float(np.mean(np.abs(y[positive] - p[positive]) / y[positive]) * 100.0)


def _r2(y: np.ndarray, p: np.ndarray) -> float | None:
    total = float(np.sum((y - y.mean()) ** 2))
    return None if total == 0 else 1.0 - float(np.sum((y - p) ** 2)) / total


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
