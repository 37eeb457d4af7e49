"""A floor under the held-out MAE of any guest-feedable model on the nx12 tables (the goal: 0.8x the reference MAE).

    python bench/bench_vm_bound.py [--data DIR]            # a few seconds

`bench_vm_models.py` evaluates each table leaving one time block out at a time (five blocks), on the
features a guest could feed (CPU time, with IRQ counts where present). Whatever a model is, within one
held-out block it gives one prediction per distinct feature vector: rows whose features are exactly equal
get the same watts. So its error on a block is at least what an oracle reaches that sees the block's
measured power and predicts, for each group of identical feature vectors, that group's median power (the
constant with the lowest absolute error). Summed over the five blocks and divided by the rows, that is a
lower bound of the pooled held-out MAE of every zone, and the largest over zones a lower bound of the
headline `mae`. It is a proof, not an estimate, but a weak one where feature vectors rarely repeat: it
only binds where many rows share a vector, such as the rows whose CPU time reads 0.

The goal is met on a table only if 0.8 x the better baseline is at least the floor; where the floor is
above it, no model fed these features can reach the goal on that table.

The same floor is given for the inputs with their history (bench_vm_models.with_history: the mean and the
largest busy CPU time over the last 15, 60 and 180 s of the run): a row's history sets it apart from other
rows with the same instantaneous features, so that floor is far lower, and it is what the models fed with
history reach under.
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

from bench_vm_models import BASELINES, figures, guest_tables, with_history  # noqa: E402  (a sibling script)

from kepler_trainer import evaluate  # noqa: E402

SHARED = Path(os.environ.get("SHARED", ROOT.parent / "shared"))
GOAL = 0.8


def oracle_floor(data: pd.DataFrame, features: list[str], power: list[str],
                 folds: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Per zone, the pooled MAE of the best constant per (held-out block, identical feature vector)."""
    total = dict.fromkeys(power, 0.0)
    for _, test in folds:
        block = data.iloc[test]
        for _, rows in block.groupby(features, sort=False):
            for zone in power:
                y = rows[zone].to_numpy(float)
                total[zone] += float(np.abs(y - np.median(y)).sum())
    return {zone: err / len(data) for zone, err in total.items()}


def share_of_repeated_vectors(data: pd.DataFrame, features: list[str]) -> float:
    """The fraction of rows whose feature vector occurs more than once in the table."""
    return float(data.duplicated(features, keep=False).mean())


def bound_table(name: str, data: pd.DataFrame, features: list[str], power: list[str], busy: str) -> dict:
    folds = evaluate.leave_one_out(evaluate.runs(data["timestamp"].to_numpy(float)))
    idle = evaluate.idle_rows(data[busy].to_numpy(float))
    x = data[busy].to_numpy(float)
    baselines = {}
    for baseline, fit in BASELINES.items():
        predictions = [pd.DataFrame({p: fit(x[tr], data[p].to_numpy(float)[tr], x[te]) for p in power},
                                    index=data.index[te]) for tr, te in folds]
        baselines[baseline] = figures(data, power, predictions, idle)["mae"]
    floor = oracle_floor(data, features, power, folds)
    past, with_past = with_history(data, features, busy)
    floor_with_history = oracle_floor(past, with_past, power, folds)
    best_baseline = min(baselines.values())
    return {"table": name, "rows": len(data), "repeated": share_of_repeated_vectors(data, features),
            "zero_cpu": float((data[busy] == 0).mean()), "best_baseline": best_baseline,
            "goal": GOAL * best_baseline, "floor": max(floor.values()), "floor_by_zone": floor,
            "floor_with_history": max(floor_with_history.values()),
            "repeated_with_history": share_of_repeated_vectors(past, with_past)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "model-db" / "nx12" / "preprocessed")
    args = parser.parse_args()
    print("| table | rows | rows sharing a feature vector | CPU time 0 | better baseline MAE | 0.8x goal "
          "| floor of any model | goal reachable | with history: rows sharing a vector | floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for name, data, features, power, busy in guest_tables(args.data):
        r = bound_table(name, data, features, power, busy)
        verdict = "no (floor above the goal)" if r["floor"] > r["goal"] else "not excluded"
        print(f"| {r['table']} | {r['rows']} | {r['repeated']:.0%} | {r['zero_cpu']:.0%} | {r['best_baseline']:.2f} "
              f"| {r['goal']:.2f} | {r['floor']:.2f} | {verdict} | {r['repeated_with_history']:.0%} "
              f"| {r['floor_with_history']:.2f} |")


if __name__ == "__main__":
    main()
