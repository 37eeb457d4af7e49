"""Inputs from a machine's own recent past: trailing-window statistics of its busy CPU time.

A guest (or a node) sees its own counters over time, not only the last interval's. Where the CPU time of
one interval is a poor witness of the power (cgroup or kubelet accounting that reads 0 for most samples
while the machine works: nx12's CgroupOnly and KubeletOnly tables), its recent history is a better one:
the mean and the largest busy CPU time over the last seconds say whether the machine is in a busy phase.

A feature set's `history` (featuresets.History) asks for them: for each window W seconds and each
statistic (mean, max), the input `busy_cpu_<stat>_<W>s` is that statistic of the busy CPU time (the sum
of the `cpu_busy` inputs) over the samples of the same machine and the same run taken in the last W
seconds, the current one included (times t with now - W < t <= now). Only past samples of the machine's
own inputs count: no power, no time of day, no label. A run (evaluate.run_labels: a pause in the samples, a
`workload` label, or the blocks a continuous collection is cut into) starts its history afresh, so a
held-out run never sees another run's samples; the exporter starts afresh after any gap the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import evaluate

STATS = ("mean", "max")


def input_name(stat: str, seconds: int) -> str:
    return f"busy_cpu_{stat}_{seconds}s"


def input_names(windows: list[int], stats: list[str]) -> list[str]:
    return [input_name(stat, w) for w in windows for stat in stats]


def columns(data: pd.DataFrame, busy: list[str], windows: list[int], stats: list[str],
            groups: np.ndarray | None = None) -> pd.DataFrame:
    """The history inputs of every row of `data` (time-ordered within each group), indexed like it."""
    groups = evaluate.run_labels(data) if groups is None else np.asarray(groups)
    total = data[busy].sum(axis=1).to_numpy(float)
    out = {name: np.empty(len(data)) for name in input_names(windows, stats)}
    for group in dict.fromkeys(groups.tolist()):
        rows = np.flatnonzero(groups == group)
        series = pd.Series(total[rows], index=pd.to_datetime(data["timestamp"].to_numpy(float)[rows], unit="s"))
        for seconds in windows:
            window = series.rolling(f"{seconds}s")  # (now - W, now], as the exporter keeps it
            for stat in stats:
                out[input_name(stat, seconds)][rows] = getattr(window, stat)().to_numpy()
    return pd.DataFrame(out, index=data.index)

