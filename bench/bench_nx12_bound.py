"""How low can the MAE go on nx12's one-feature tables? Generous estimates of the best any model can do.

    python bench/bench_nx12_bound.py [--data DIR]            # ~10 s

The goal: on every nx12 row, a best MAE at most 0.8 x the reference (random 90/10 split,
largest per-component MAE, mean of 10 seeds). A model served to Kepler sees only its feature group's
columns, so on a table with one feature (BPFOnly: `bpf_cpu_time_us`) its prediction is a function of
that one number, and the lowest mean absolute error any such function reaches is that of the
conditional median of power given the feature. This script estimates it three ways, each kinder
to the model than the protocol is:

  protocol   the median power of the k nearest training rows, random 90/10 split, 10 seeds, with
             the k that is best on the held-out rows themselves (chosen with hindsight);
  leave-one  the same, with every other row for training (99.95 % instead of 90 %);
  in-sample  rows sorted by the feature, cut into runs of n neighbours, each predicted by its own
             run's median, the row itself included (an oracle that has seen the answer).

Each column prints the largest per-component MAE and its ratio to the reference. The first two are
models that could really be trained (with hindsight in k, and more data); the in-sample figures are
not (the row's own answer is in its run: with runs of 5 it is a fifth of the median) and only show how
far apart the power of rows with nearly equal features lies. This is evidence, not a proof: another
estimator of the conditional median could do somewhat better than nearest neighbours.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED", ROOT.parent / "shared"))
REFERENCE = {"rapl": 13.10, "acpi": 19.57}  # bench_nx12.REFERENCE's BPFOnly rows (W)
KS = (3, 5, 9, 15, 25, 41, 60)
RUNS = (5, 10, 20, 40)
SEEDS = 10


def table(data: Path, source: str) -> tuple[np.ndarray, np.ndarray]:
    frame = pd.read_csv(data / f"preprocess_abs_default_{source}_BPFOnly.csv")
    targets = [c for c in frame.columns if c.endswith("_power")]
    return frame["bpf_cpu_time_us"].to_numpy(float), frame[targets].to_numpy(float)


def largest_mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.abs(predicted - actual).mean(axis=0).max())


def neighbour_medians(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, k: int,
                      skip_self: bool = False) -> np.ndarray:
    """Per component, the median power of the k nearest training rows of each query row."""
    index = NearestNeighbors(n_neighbors=k + skip_self).fit(train_x[:, None])
    _, nearest = index.kneighbors(query_x[:, None])
    return np.median(train_y[nearest[:, int(skip_self):]], axis=1)


def protocol(x: np.ndarray, y: np.ndarray) -> float:
    per_k = {k: [] for k in KS}
    for seed in range(SEEDS):
        order = np.random.default_rng(seed).permutation(len(x))
        test, train = order[: len(x) // 10], order[len(x) // 10:]
        for k in KS:
            per_k[k].append(largest_mae(neighbour_medians(x[train], y[train], x[test], k), y[test]))
    return min(float(np.mean(v)) for v in per_k.values())


def leave_one_out(x: np.ndarray, y: np.ndarray) -> float:
    return min(largest_mae(neighbour_medians(x, y, x, k, skip_self=True), y) for k in KS)


def in_sample(x: np.ndarray, y: np.ndarray, run: int) -> float:
    ordered = y[np.argsort(x, kind="stable")]
    predicted = np.concatenate([np.broadcast_to(np.median(ordered[i:i + run], axis=0), ordered[i:i + run].shape)
                                for i in range(0, len(ordered), run)])
    return largest_mae(predicted, ordered)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "model-db" / "nx12" / "preprocessed")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"no nx12 tables at {args.data}", file=sys.stderr)
        return 2
    heads = ["protocol", "leave-one", *(f"in-sample {n}" for n in RUNS)]
    print("| source | reference | target 0.8 x | " + " | ".join(heads) + " |")
    print("|---|---|---|" + "---|" * len(heads))
    for source, reference in REFERENCE.items():
        x, y = table(args.data, source)
        figures = [protocol(x, y), leave_one_out(x, y), *(in_sample(x, y, n) for n in RUNS)]
        cells = " | ".join(f"{f:.2f} ({f / reference:.2f})" for f in figures)
        print(f"| {source} BPFOnly | {reference:.2f} | {0.8 * reference:.2f} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
