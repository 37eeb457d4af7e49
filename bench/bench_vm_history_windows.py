"""How much the history windows matter, and what choosing them on the training blocks alone gives.

    python bench/bench_vm_history_windows.py [--data DIR] [--tables Cgroup,Kubelet] [--trainer T]

bench_vm_models.py feeds its `+history` models fixed windows (15, 60 and 180 s, set before any
measurement). Here, on the same tables, folds and baselines, with gradient boosting (ONNX-exportable):
  * the held-out ratio to the better baseline for each of a few window sets (sensitivity: a choice made by
    looking at these figures would be tuning on the held-out blocks, so they are only for reading);
  * `inner CV`: for each held-out block, the window set with the lowest MAE when each of the other four
    blocks is left out in turn among those four (the held-out block is never seen), then scored on the
    held-out block: what a procedure that chooses the windows on training data alone reaches.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_vm_models import BASELINES, figures, guest_tables, held_out_figures, with_history  # noqa: E402

from kepler_trainer import evaluate  # noqa: E402
from kepler_trainer.trainers import PowerModel  # noqa: E402

SHARED = Path(os.environ.get("SHARED", ROOT.parent / "shared"))
WINDOW_SETS = ((15,), (30,), (60,), (180,), (15, 60), (60, 300), (15, 60, 180), (30, 120, 600))


def better_baseline(data, power, busy, folds, idle) -> float:
    x = data[busy].to_numpy(float)
    maes = []
    for fit in BASELINES.values():
        predictions = [pd.DataFrame({p: fit(x[tr], data[p].to_numpy(float)[tr], x[te]) for p in power},
                                    index=data.index[te]) for tr, te in folds]
        maes.append(figures(data, power, predictions, idle)["mae"])
    return min(maes)


def inner_choice(tables: dict, train: np.ndarray, groups: np.ndarray, power, trainer: str) -> tuple[int, ...]:
    """The window set with the lowest leave-one-block-out MAE among the training blocks only."""
    inner = evaluate.leave_one_out(groups[train])
    scores = {}
    for windows, (past, inputs) in tables.items():
        rows = past.iloc[train]
        predictions = [PowerModel(trainer).fit(rows[inputs].iloc[tr], rows[power].iloc[tr])
                       .predict_components(rows[inputs].iloc[te]) for tr, te in inner]
        scores[windows] = evaluate.pooled_errors(rows[power], predictions)["mae"]
    return min(scores, key=lambda w: scores[w])


def bench_table(data, features, power, busy, trainer: str) -> dict:
    groups = evaluate.runs(data["timestamp"].to_numpy(float))
    folds = evaluate.leave_one_out(groups)
    idle = evaluate.idle_rows(data[busy].to_numpy(float))
    base = better_baseline(data, power, busy, folds, idle)
    tables = {w: with_history(data, features, busy, w) for w in WINDOW_SETS}
    fixed = {w: held_out_figures(past, inputs, power, trainer, folds, idle, onnx=False)["mae"] / base
             for w, (past, inputs) in tables.items()}
    predictions, chosen = [], []
    for train, test in folds:
        windows = inner_choice(tables, train, groups, power, trainer)
        chosen.append(windows)
        past, inputs = tables[windows]
        model = PowerModel(trainer).fit(past[inputs].iloc[train], past[power].iloc[train])
        predictions.append(model.predict_components(past[inputs].iloc[test]))
    inner = figures(data, power, predictions, idle)["mae"] / base
    return {"fixed": fixed, "inner": inner, "chosen": chosen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "model-db" / "nx12" / "preprocessed")
    parser.add_argument("--tables", default="Cgroup,Kubelet", help="substrings of the table names to run")
    parser.add_argument("--trainer", default="GradientBoostingRegressorTrainer")
    args = parser.parse_args()
    wanted = [t for t in args.tables.split(",") if t]
    sets = " | ".join("+".join(map(str, w)) + " s" for w in WINDOW_SETS)
    print(f"| table | {sets} | inner CV | chosen per block |")
    print("|---|" + "---:|" * (len(WINDOW_SETS) + 1) + "---|")
    for name, data, features, power, busy in guest_tables(args.data):
        if wanted and not any(t in name for t in wanted):
            continue
        r = bench_table(data, features, power, busy, args.trainer)
        cells = " | ".join(f"{r['fixed'][w]:.2f}" for w in WINDOW_SETS)
        chosen = "; ".join("+".join(map(str, w)) for w in r["chosen"])
        print(f"| {name} | {cells} | {r['inner']:.2f} | {chosen} |", flush=True)


if __name__ == "__main__":
    main()
