"""Model accuracy on the real nx12 training set, against the reference table; and the cost of training it.

    python bench/bench_nx12.py [--seeds 10] [--jobs 2] [--data DIR] [--out bench/out]

For every energy source (rapl, acpi), output type (AbsPower from preprocess_abs_*, DynPower from
preprocess_dyn_*) and feature group of kepler-model-db's nx12 training set (`--data`):
  (a) the best upstream trainer by the reference protocol: random 90/10 split, MAE = the largest
      per-component MAE, mean over `--seeds` seeds (parity target: no worse than the reference);
  (b) the best of all trainers, ours included, by the same protocol (target: <= 0.8 x the reference);
  (c) beside it, honest figures for the trainers of (a) and (b): the last 10 % of time held out, and
      leave-one-run-out over 5 contiguous time blocks (nx12 is one continuous collection: no pause to
      cut runs at; evaluate.runs);
  (d) wall time, CPU time and peak RSS of training the whole nx12 pipeline (every default trainer on
      all 28 tables, published to a temporary folder; target < 60 s),
and runs `kepler-model train_from_data` once with the new trainers.

Features are every column but timestamp, node_type, id, index columns, `*_power`, `packge_ratio*`.
DynPower models are derived from the AbsPower fit when the DynPower table is the AbsPower one minus a
constant per component (it is, for all 14 nx12 pairs: the `min` isolator), exactly as the pipeline does.
Hyperparameter tuning runs inside each training split only: shuffled folds for the random protocol,
contiguous folds for the time-held-out ones. Tables are printed as markdown and written to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from joblib import Parallel, delayed

from kepler_trainer import evaluate, pipeline
from kepler_trainer.features import OutputType
from kepler_trainer.trainers import (
    QUALITY_TRAINERS,
    UPSTREAM_TRAINERS,
    PowerModel,
    TrainerSkipped,
    trainer_names,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED", ROOT.parent / "shared"))
GROUPS = ("BPFIRQ", "BPFOnly", "Basic", "CounterIRQCombined", "CounterOnly", "KubeletOnly", "CgroupOnly")
SOURCES = {"rapl": "rapl", "acpi": "acpi"}
REFERENCE = {  # upstream's trainers retrained on these tables: best per row, random 90/10, mean of 10 seeds (W)
    ("rapl", "Basic"): 2.92, ("rapl", "CounterOnly"): 3.29, ("rapl", "CounterIRQCombined"): 3.44,
    ("rapl", "BPFIRQ"): 12.97, ("rapl", "BPFOnly"): 13.10, ("rapl", "KubeletOnly"): 33.94,
    ("rapl", "CgroupOnly"): 37.45, ("acpi", "Basic"): 5.33, ("acpi", "CounterOnly"): 6.16,
    ("acpi", "CounterIRQCombined"): 6.27, ("acpi", "BPFIRQ"): 18.99, ("acpi", "BPFOnly"): 19.57,
    ("acpi", "KubeletOnly"): 47.24, ("acpi", "CgroupOnly"): 52.02,
}
META = ("timestamp", "node_type", "id", "instance")


def load(path: Path) -> tuple[list[str], list[str], pd.DataFrame]:
    data = pd.read_csv(path).sort_values("timestamp", kind="stable").reset_index(drop=True)
    power = [c for c in data.columns if c.endswith("_power")]
    features = sorted(c for c in data.columns if c not in META and not c.endswith("_power")
                      and not c.startswith(("Unnamed", "packge_ratio")) and c != "")
    data = data.assign(instance="nx12", node_type=1)
    return features, power, data[["timestamp", "instance", "node_type", *features, *power]]


def tables(folder: Path) -> list[pipeline.Table]:
    out = []
    for source in SOURCES:
        for group in GROUPS:
            features, power, absolute = load(folder / f"preprocess_abs_default_{source}_{group}.csv")
            abs_table = pipeline.Table(source, group, OutputType.ABS, features, power, absolute)
            _, _, dynamic = load(folder / f"preprocess_dyn_default_min_{source}_{group}.csv")
            idle = {c: float(absolute[c].min()) for c in power}
            derivable = all(np.allclose(dynamic[c], absolute[c] - idle[c], atol=1e-6) for c in power)
            out += [abs_table, pipeline.Table(source, group, OutputType.DYN, features, power, dynamic,
                                              idle=idle, shift_of=abs_table if derivable else None)]
    return out


def score(abs_table: pipeline.Table, dyn_table: pipeline.Table, trainer: str,
          folds: list[tuple[np.ndarray, np.ndarray]], seed: int, tuning: str) -> dict[str, float]:
    """Pooled held-out MAE of one trainer over `folds`, for the AbsPower table and its DynPower twin."""
    X, Y = abs_table.data[abs_table.features], abs_table.data[abs_table.power]
    predictions: dict[str, list[pd.DataFrame]] = {"AbsPower": [], "DynPower": []}
    for train, test in folds:
        try:
            model = PowerModel(trainer, random_state=seed, tuning=tuning).fit(X.iloc[train], Y.iloc[train])
        except TrainerSkipped:
            return {}
        predictions["AbsPower"].append(model.predict_components(X.iloc[test]))
        if dyn_table.shift_of is abs_table:
            predictions["DynPower"].append(model.shifted(dyn_table.idle).predict_components(X.iloc[test]))
    out = {"AbsPower": evaluate.pooled_errors(Y, predictions["AbsPower"])["mae"]}
    if predictions["DynPower"]:
        out["DynPower"] = evaluate.pooled_errors(dyn_table.data[dyn_table.power], predictions["DynPower"])["mae"]
    return out


def random_job(abs_table, dyn_table, trainers, seed):
    folds = evaluate.folds(len(abs_table.data), "random", 0.1, seed)
    return [(abs_table.source, abs_table.group, t, seed, score(abs_table, dyn_table, t, folds, seed, "random"))
            for t in trainers]


def honest_job(abs_table, dyn_table, trainer, method):
    n = len(abs_table.data)
    groups = evaluate.runs(abs_table.data["timestamp"]) if method == "workload" else None
    folds = evaluate.folds(n, method, 0.1, 0, groups)
    return abs_table.source, abs_table.group, trainer, method, score(abs_table, dyn_table, trainer, folds, 0, "blocked")


def pairs(all_tables):
    by_key = {(t.source, t.group, t.output_type): t for t in all_tables}
    return [(by_key[(s, g, OutputType.ABS)], by_key[(s, g, OutputType.DYN)]) for s in SOURCES for g in GROUPS]


def best(records: list, trainers: set[str]) -> dict:
    """(source, group, output type) -> (trainer, mean MAE over seeds) of the lowest mean."""
    sums: dict = {}
    for source, group, trainer, _seed, maes in records:
        if trainer not in trainers:
            continue
        for ot, mae in maes.items():
            sums.setdefault((source, group, ot, trainer), []).append(mae)
    winners: dict = {}
    for (source, group, ot, trainer), values in sums.items():
        mean = float(np.mean(values))
        key = (source, group, ot)
        if key not in winners or mean < winners[key][1]:
            winners[key] = (trainer, mean)
    return winners


def short(trainer: str) -> str:
    return trainer.removesuffix("Trainer").replace("Regression", "").replace("Regressor", "")


def _cpu_seconds() -> float:
    """CPU time of this process and its live worker processes (loky's workers are never reaped)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            continue
    return total


def _peak_rss_mib() -> float:
    """Largest peak RSS among this process and its live workers (VmHWM)."""
    peaks = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
    for child in psutil.Process().children(recursive=True):
        try:
            for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return max(peaks)


def whole_pipeline(all_tables) -> dict:
    """Train and publish every default trainer on all tables, as `kepler-model train` would."""
    names = trainer_names("default")
    settings = pipeline.TrainSettings("nx12", [], list(GROUPS), names, names, node_type=1, n_jobs=2)
    out = Path(tempfile.mkdtemp(prefix="bench-nx12-"))
    try:
        before = _cpu_seconds()
        start = time.perf_counter()
        summary = pipeline.train_and_publish(all_tables, settings, out, []).summary
        wall = time.perf_counter() - start
        cpu = _cpu_seconds() - before
        peak = _peak_rss_mib()
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_rss_mib": round(peak, 1),
            "models": summary["models"], "skipped": summary["skipped"], "trainers": len(names),
            "published_mib": round(size / 2**20, 1), "load_average": os.getloadavg()[0]}


def cli_check(folder: Path) -> dict:
    """`kepler-model train_from_data` with the new trainers on one nx12 table."""
    work = Path(tempfile.mkdtemp(prefix="bench-nx12-cli-"))
    try:
        names = ",".join(s.name for s in QUALITY_TRAINERS)
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "kepler_trainer", "train_from_data", "-q",
                              "-i", str(folder / "preprocess_abs_default_rapl_Basic.csv"), "-p", "nx12q",
                              "-e", "rapl", "-ot", "AbsPower", "-fg", "Basic", "--trainers", names,
                              "--data-path", str(work)], capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        csv = work / "models" / "nx12q" / "rapl-sysfs_AbsPower_model_metadata.csv"
        rows = pd.read_csv(csv)[["model_name", "mae"]].to_dict("records") if csv.is_file() else []
        return {"exit_code": run.returncode, "wall_s": round(wall, 1), "models": rows,
                "stderr": run.stderr.strip()[-500:]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pair(honest: dict, source: str, group: str, ot: str, method: str, first: str, second: str) -> str:
    values = [honest.get((source, group, t, method), {}).get(ot) for t in (first, second)]
    return "-" if None in values else f"{values[0]:.2f} / {values[1]:.2f}"


def render(upstream: dict, ours: dict, honest: dict, seeds: int) -> str:
    header = ("| source | output | feature group | reference | (a) upstream trainers | (a)/ref | (b) all trainers "
              "| (b)/ref | (c) time-held-out 10 % (b's trainer / a's) | (c) leave-one-block-out (b's / a's) |")
    lines = [f"### nx12: best MAE (W), random 90/10, largest component MAE, mean of {seeds} seeds", "", header,
             "|---|---|---|---|---|---|---|---|---|---|"]
    for source in SOURCES:
        for ot in ("AbsPower", "DynPower"):
            for group in GROUPS:
                ref = REFERENCE[(source, group)]
                key = (source, group, ot)
                if key not in upstream or key not in ours:
                    continue
                (ta, a), (tb, b) = upstream[key], ours[key]
                time_cell, block_cell = (_pair(honest, source, group, ot, method, tb, ta)
                                         for method in ("time", "workload"))
                lines.append(f"| {source} | {ot} | {group} | {ref:.2f} | {a:.2f} {short(ta)} | {a / ref:.2f} "
                             f"| {b:.2f} {short(tb)} | {b / ref:.2f} | {time_cell} | {block_cell} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data", type=Path, default=SHARED / "data/model-db/nx12/preprocessed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out")
    parser.add_argument("--skip-pipeline", action="store_true", help="accuracy tables only")
    parser.add_argument("--pipeline-only", action="store_true", help="only (d): the whole pipeline's cost")
    args = parser.parse_args()
    all_tables = tables(args.data)
    if args.pipeline_only:
        print(json.dumps(whole_pipeline(all_tables)))
        return
    todo = pairs(all_tables)
    names = list(UPSTREAM_TRAINERS) + [s.name for s in QUALITY_TRAINERS]
    start = time.perf_counter()
    with Parallel(n_jobs=args.jobs) as run:
        records = [r for batch in run(delayed(random_job)(a, d, names, seed) for a, d in todo
                                      for seed in range(args.seeds)) for r in batch]
        upstream, ours = best(records, set(UPSTREAM_TRAINERS)), best(records, set(names))
        wanted = sorted({(a.source, a.group, t) for a, _ in todo for ot in ("AbsPower", "DynPower")
                         for t in (upstream[(a.source, a.group, ot)][0], ours[(a.source, a.group, ot)][0])})
        by_key = {(a.source, a.group): (a, d) for a, d in todo}
        honest_rows = run(delayed(honest_job)(*by_key[(s, g)], t, m) for s, g, t in wanted
                          for m in ("time", "workload"))
    honest = {(s, g, t, m): maes for s, g, t, m, maes in honest_rows}
    accuracy_s = time.perf_counter() - start
    table = render(upstream, ours, honest, args.seeds)
    print(table)
    print(f"\naccuracy runs: {accuracy_s:.0f} s wall")
    report = {"upstream": {"/".join(k): v for k, v in upstream.items()}, "ours": {"/".join(k): v for k,
                                                                                  v in ours.items()},
              "honest": {"/".join(k): v for k, v in honest.items()},
              "per_trainer": records, "accuracy_wall_s": accuracy_s}
    if not args.skip_pipeline:
        report["pipeline"] = whole_pipeline(all_tables)
        p = report["pipeline"]
        pipeline_line = (f"\n### whole nx12 pipeline: {p['trainers']} trainers x 28 tables: {p['wall_s']} s wall, "
                         f"{p['cpu_s']} s CPU, peak RSS {p['peak_rss_mib']} MiB, {p['models']} models "
                         f"({p['skipped']} skipped), {p['published_mib']} MiB published, "
                         f"load average {p['load_average']:.1f}")
        print(pipeline_line)
        table += "\n" + pipeline_line
        report["cli"] = cli_check(args.data)
        print(f"\ntrain_from_data with the new trainers: exit {report['cli']['exit_code']}, "
              f"{report['cli']['wall_s']} s, "
              f"{report['cli']['models']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nx12.md").write_text(table + "\n")
    (args.out / "nx12.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
