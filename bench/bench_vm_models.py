"""Models a guest could feed, held out by workload, against Kepler's method and a linear fit; ONNX cost.

    python bench/bench_vm_models.py [--data DIR] [--trainers T1,T2,...] [--history-trainers T1,...]
                                    [--history 15,60,180] [--out bench/out]

On every AbsPower table of kepler-model-db's nx12 training set (`--data`) that has CPU time and measured power:
  * inputs a guest can see: the table's CPU-time columns (bpf_cpu_time_us, cgroupfs_*cpu_usage_us,
    kubelet_cpu_usage) and its IRQ counts where present (bpf_*_irq); no hardware counters, no page cache;
  * held out by workload: leave one run out in turn (nx12 is one continuous collection, so its runs are
    5 contiguous time blocks: evaluate.runs), every model refitted without the run it is scored on;
  * per zone (rapl: package and dram, core/uncore read 0 W; acpi: platform): MAE, MAPE, idle bias (mean
    error on held-out idle rows: busy CPU time within 5 % of its range above the minimum, evaluate.idle_rows);
  * two baselines on the same folds: Kepler's method (idle power = the training rows' minimum, active power
    proportional to the CPU time: P = idle + slope * cpu, the slope a least-squares fit through the idle
    point), and an ordinary linear fit on the CPU time (free intercept);
  * the same trainers named `<trainer>+history` fed also the machine's recent past (history.py, the
    product's `--history`): the mean and the largest busy CPU time over the last 15, 60 and 180 s of the
    same run, the current sample included; each held-out block starts its history afresh, so no row of
    another block reaches it (and no power, no time, no label ever does);
  * the ratio of each trainer's MAE to the better baseline (goal: <= 0.8 on every table);
  * ONNX: model file size and onnxruntime's cost of one prediction (one row, median of 2000 calls).
Prints markdown tables; writes them and a JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kepler_trainer import evaluate, history
from kepler_trainer.onnx_export import export, predict, session
from kepler_trainer.trainers import PowerModel, TrainerSkipped

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED", ROOT.parent / "shared"))
CPU_TIME = ("bpf_cpu_time_us", "cgroupfs_cpu_usage_us", "cgroupfs_user_cpu_usage_us", "cgroupfs_system_cpu_usage_us",
            "kubelet_cpu_usage")
BUSY_ORDER = ("bpf_cpu_time_us", "cgroupfs_cpu_usage_us", "kubelet_cpu_usage")  # the one CPU-time measure baselines use
IRQS = ("bpf_block_irq", "bpf_net_rx_irq", "bpf_net_tx_irq")
TRAINERS = ("LinearRegressionTrainer", "GradientBoostingRegressorTrainer", "HistGradientBoostingTrainer",
            "ExtraTreesTrainer", "KNeighborsRegressorTrainer")
HISTORY_TRAINERS = ("GradientBoostingRegressorTrainer", "HistGradientBoostingTrainer", "ExtraTreesTrainer")
HISTORY_WINDOWS = (15, 60, 180)  # seconds: a quarter minute, a minute, three minutes (fixed beforehand, not tuned)
HISTORY = "+history"
ONNX_CALLS = 2000


def guest_tables(folder: Path):
    for path in sorted(folder.glob("preprocess_abs_default_*.csv")):
        data = pd.read_csv(path).sort_values("timestamp", kind="stable").reset_index(drop=True)
        cpu = [c for c in CPU_TIME if c in data]
        if not cpu:
            continue
        power = [c for c in data.columns if c.endswith("_power") and np.ptp(data[c].to_numpy(float)) > 0]
        features = cpu + [c for c in IRQS if c in data]
        busy = next(c for c in BUSY_ORDER if c in data)
        yield path.stem.removeprefix("preprocess_abs_default_"), data, features, power, busy


def _kepler_method(x_train, y_train, x_test):
    idle = float(np.min(y_train))
    denominator = float(np.dot(x_train, x_train))
    slope = float(np.dot(x_train, y_train - idle)) / denominator if denominator else 0.0
    return idle + slope * x_test


def _linear(x_train, y_train, x_test):
    slope, intercept = np.polyfit(x_train, y_train, 1)
    return intercept + slope * x_test


BASELINES = {"kepler-method": _kepler_method, "linear-cpu": _linear}


def figures(data, power, predictions, idle) -> dict:
    Y = data[power]
    out = evaluate.pooled_errors(Y, predictions)
    out.update(evaluate.idle_bias(Y, predictions, idle))
    return out


def with_history(data: pd.DataFrame, features: list[str], busy: str, windows=HISTORY_WINDOWS):
    """The table with the history inputs of its busy CPU time (per run: the held-out blocks), and the inputs."""
    past = history.columns(data, [busy], list(windows), list(history.STATS))
    return pd.concat([data, past], axis=1), features + list(past.columns)


def bench_table(name, data, features, power, busy, trainers, history_trainers=(), windows=HISTORY_WINDOWS) -> dict:
    folds = evaluate.leave_one_out(evaluate.runs(data["timestamp"].to_numpy(float)))
    idle = evaluate.idle_rows(data[busy].to_numpy(float))
    rows = {}
    x = data[busy].to_numpy(float)
    for baseline, fit in BASELINES.items():
        predictions = [pd.DataFrame({p: fit(x[tr], data[p].to_numpy(float)[tr], x[te]) for p in power},
                                    index=data.index[te]) for tr, te in folds]
        rows[baseline] = figures(data, power, predictions, idle)
    past, with_past = with_history(data, features, busy, windows)
    for label, trainer, inputs in ([(t, t, features) for t in trainers]
                                   + [(t + HISTORY, t, with_past) for t in history_trainers]):
        rows[label] = held_out_figures(past, inputs, power, trainer, folds, idle)
    best_baseline = min(rows[b]["mae"] for b in BASELINES)
    for model in rows:
        if "mae" in rows[model] and model not in BASELINES:
            rows[model]["ratio_to_best_baseline"] = rows[model]["mae"] / best_baseline
    return {"table": name, "rows": len(data), "features": features, "busy": busy, "zones": power,
            "folds": len(folds), "idle_rows": int(idle.sum()), "results": rows}


def held_out_figures(data, features, power, trainer, folds, idle, onnx: bool = True) -> dict:
    """One trainer's pooled held-out figures on `folds`, and its ONNX check, size and cost (fitted on all)."""
    X, Y = data[features], data[power]
    try:
        predictions = [PowerModel(trainer).fit(X.iloc[tr], Y.iloc[tr]).predict_components(X.iloc[te])
                       for tr, te in folds]
    except TrainerSkipped as exc:
        return {"skipped": str(exc)}
    out = figures(data, power, predictions, idle)
    if onnx:
        onnx_bytes, check = export(PowerModel(trainer).fit(X, Y), X)
        out["onnx"] = check
        if onnx_bytes is not None:
            out["onnx"]["predict_us"] = _onnx_cost(onnx_bytes, X.to_numpy(float)[:1])
    return out


def _onnx_cost(onnx_bytes: bytes, row: np.ndarray) -> float:
    sess = session(onnx_bytes)
    times = []
    for _ in range(ONNX_CALLS):
        start = time.perf_counter()
        predict(sess, row)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def _zone_cell(result: dict, zone: str) -> str:
    bias = result.get(f"{zone}_idle_bias")
    return (f"{result[f'{zone}_mae']:.2f} / {result[f'{zone}_mape']:.1f}% / "
            f"{'n/a' if bias is None else f'{bias:+.2f}'}")


def markdown(report: list[dict], models) -> str:
    lines = ["| table | model | MAE (W) | MAPE (%) | per zone: MAE / MAPE / idle bias | MAE / best baseline | "
             "ONNX (bytes, µs/row) |", "|---|---|---:|---:|---|---:|---|"]
    for t in report:
        for model in (*BASELINES, *models):
            r = t["results"][model]
            if "mae" not in r:
                lines.append(f"| {t['table']} | {model} | skipped: {r.get('skipped', '')[:60]} | | | | |")
                continue
            names = [z.removesuffix("_power") for z in t["zones"]]
            zones = "; ".join(f"{z} {_zone_cell(r, z)}" for z in names)
            onnx = r.get("onnx", {})
            onnx_cell = (f"{onnx['bytes']:,}, {onnx['predict_us']:.0f}" if onnx.get("exportable")
                         else ("not exportable" if onnx else ""))
            ratio = f"{r['ratio_to_best_baseline']:.2f}" if "ratio_to_best_baseline" in r else ""
            lines.append(f"| {t['table']} | {model} | {r['mae']:.2f} | {r['mape']:.1f} | {zones} | {ratio} "
                         f"| {onnx_cell} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "model-db" / "nx12" / "preprocessed")
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    parser.add_argument("--history-trainers", default=",".join(HISTORY_TRAINERS),
                        help="trainers also run with the history inputs (empty: none)")
    parser.add_argument("--history", default=",".join(map(str, HISTORY_WINDOWS)), help="window lengths, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    trainers = [t.strip() for t in args.trainers.split(",") if t.strip()]
    history_trainers = [t.strip() for t in args.history_trainers.split(",") if t.strip()]
    windows = [int(w) for w in args.history.split(",") if w.strip()]
    report = [bench_table(*table, trainers, history_trainers, windows) for table in guest_tables(args.data)]
    models = trainers + [t + HISTORY for t in history_trainers]
    text = markdown(report, models)
    print(text)
    summary = ["", "| trainer | tables with MAE <= 0.8 x best baseline | median ratio | worst ratio |",
               "|---|---:|---:|---:|"]
    for trainer in models:
        ratios = [t["results"][trainer].get("ratio_to_best_baseline") for t in report]
        ratios = [r for r in ratios if r is not None]
        if ratios:
            summary.append(f"| {trainer} | {sum(r <= 0.8 for r in ratios)}/{len(report)} | {np.median(ratios):.2f} | "
                           f"{max(ratios):.2f} |")
    print("\n".join(summary))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vm_models.md").write_text(text + "\n" + "\n".join(summary) + "\n")
    (args.out / "vm_models.json").write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
