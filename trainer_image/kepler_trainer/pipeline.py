"""A training run: feature tables in, a published pipeline folder out.

`plan` turns extracted data into one training table per (energy source, feature group, output
type); `train` fits every requested trainer on each (in parallel, each fit independent); `publish`
writes the whole pipeline in a hidden temporary folder beside the target and swaps it into place,
so readers only ever see the previous complete version or the new complete version.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import posixpath
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, parallel_config

from kepler_contract import layout

from . import evaluate, machine, publish_lock, report, workers
from .errors import AccuracyGateError, TooFewSamplesError
from .extract import Extracted
from .features import EnergySource, OutputType, main_feature, resolve_group
from .isolate import make_isolator
from .persist import copy_tree, kepler_weights_of, save_model, write_json, zip_folder
from .trainers import TRAINERS, PowerModel, TrainerSkipped, fresh

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MIN_ROWS = 10  # below this a 90/10 split leaves a single test row: no honest error figure


@dataclass
class TrainSettings:
    """What to train, and how to evaluate it."""

    pipeline_name: str
    sources: list[EnergySource]
    feature_groups: list[str]
    abs_trainers: list[str]
    dyn_trainers: list[str]
    extractor: str = "default"
    isolator: str = "min"
    profiles: dict[str, dict] = field(default_factory=dict)  # energy source -> idle profile
    node_type: int = 0
    seed: int = 0
    tuning: str = "blocked"  # how trainers with candidate settings pick one (trainers.PowerModel)
    split: str = "random"
    test_size: float = 0.1
    max_mae: float | None = None
    machine_spec: dict | None = None
    n_jobs: int = 2
    arguments: dict = field(default_factory=dict)
    lock_timeout: float = publish_lock.DEFAULT_TIMEOUT  # seconds to wait for another run of this pipeline
    input_checks: dict = field(default_factory=dict)  # checks.InputReport of the inputs
    max_mape: float | None = None        # accuracy gate on the largest zone MAPE (%)
    max_idle_bias: float | None = None   # accuracy gate on the largest |idle bias| (W)
    onnx: bool = False                   # export each model to ONNX, checked (onnx_export)
    inputs: list[dict] | None = None     # the models' inputs as the ONNX manifest describes them


@dataclass
class Table:
    """The training table of one (source, feature group, output type)."""

    source: str
    group: str
    output_type: OutputType
    features: list[str]
    power: list[str]
    data: pd.DataFrame
    idle: dict[str, float] = field(default_factory=dict)
    shift_of: Table | None = None  # the AbsPower table this one equals minus `idle`, if exactly so
    busy: list[str] = field(default_factory=list)  # features summing to busy CPU time (idle rows)


@dataclass
class Trained:
    """The outcome of one fit: its held-out errors and model metadata, or why it was skipped."""

    table: Table
    trainer: str
    metrics: dict = field(default_factory=dict)
    reason: str | None = None       # why the trainer was skipped
    train_rows: int = 0
    test_rows: int = 0
    metadata: dict | None = None
    held_out: dict | None = None    # a bounded sample of the held-out predictions, for the report

    @property
    def ok(self) -> bool:
        return self.reason is None


def plan(extracted: Extracted, settings: TrainSettings) -> tuple[list[Table], list[dict]]:
    """Training tables for every valid (source, group, output type); the skipped groups with reasons."""
    tables, skipped = [], []
    for source in settings.sources:
        for group in settings.feature_groups:
            features = resolve_group(group, extracted.available_features)
            if features is None:
                skipped.append({"energy_source": source.name, "feature_group": group,
                                "reason": "the data lacks a feature of this group"})
                continue
            data = extracted.table(features, source.name, smooth=settings.extractor == "smooth")
            data.insert(2, "node_type", settings.node_type)
            power = [f"{c}_power" for c in source.components]
            tables.append(Table(source.name, group, OutputType.ABS, features, power, data))
            isolator = make_isolator(settings.isolator, settings.profiles.get(source.name)).fit(data)
            unclipped = all((data[c] >= isolator.idle_.get(c, 0.0)).all() for c in power)
            tables.append(Table(source.name, group, OutputType.DYN, features, power, isolator.transform(data),
                                idle=dict(isolator.idle_), shift_of=tables[-1] if unclipped else None))
    return tables, skipped


def _score(table: Table, trainer: str, model: PowerModel, held_out: list[tuple[PowerModel, object]], train_rows,
           settings: TrainSettings, offsets: dict | None = None) -> Trained:
    """Errors on the held-out rows, each predicted by the model that did not see it (one model and
    its test rows for a single split; one per run when leaving workloads out)."""
    X, Y = table.data[table.features], table.data[table.power]
    predicted = [(m.shifted(offsets) if offsets else m).predict_components(X.iloc[rows]) for m, rows in held_out]
    test_rows = sum(len(rows) for _, rows in held_out)
    result = Trained(table, trainer, evaluate.pooled_errors(Y, predicted), train_rows=len(train_rows),
                     test_rows=test_rows)
    if table.busy:
        idle = evaluate.idle_rows(table.data[table.busy].sum(axis=1).to_numpy(float))
        result.metrics.update(evaluate.idle_bias(Y, predicted, idle))
    result.metadata = model_metadata(result, model, settings, folds=len(held_out))
    result.held_out = report.held_out_sample(table.data, table.power, predicted, _fold_labels(table.data, held_out))
    return result


def _fold_labels(data: pd.DataFrame, held_out: list[tuple[PowerModel, object]]) -> list[str]:
    """The name of each held-out part: its run (workload split), else just `held-out`."""
    if len(held_out) == 1:
        return ["held-out"]
    runs = evaluate.run_labels(data)
    return [str(runs[rows[0]]) for _, rows in held_out]


def _model_folder(folder: Path, result: Trained) -> Path:
    table = result.table
    return folder / layout.model_relative_dir(table.source, table.output_type.value, table.group,
                                             result.metadata["model_name"])


def _fit(model: PowerModel, X: pd.DataFrame, Y: pd.DataFrame, data: pd.DataFrame, settings: TrainSettings):
    """Fit `model`; returns the (model, held-out rows) pairs to score and the training rows."""
    if settings.split == "workload":
        # Leave each run out in turn for the errors; the published model is fitted on every row.
        folds = evaluate.folds(len(data), "workload", groups=evaluate.run_labels(data))
        held_out = [(fresh(model).fit(X.iloc[train], Y.iloc[train]), test) for train, test in folds]
        model.fit(X, Y)
        return held_out, range(len(data))
    train_rows, test_rows = evaluate.split(len(data), settings.test_size, settings.split, settings.seed)
    model.fit(X.iloc[train_rows], Y.iloc[train_rows])
    return [(model, test_rows)], train_rows


def fit_and_score(table: Table, trainer: str, settings: TrainSettings, folder: Path | None = None,
                  derived: list[Table] = ()) -> list[Trained]:
    """Fit one trainer on the training split of one table, score it on the held-out split, and save it
    into the pipeline folder being built; the same for the `derived` tables (this table minus a constant,
    see `PowerModel.shifted`). Runs in a worker: what it returns carries no model."""
    data = table.data
    if len(data) < MIN_ROWS:
        return [Trained(t, trainer, reason=f"too few rows ({len(data)} < {MIN_ROWS})") for t in (table, *derived)]
    mains = {p.removesuffix("_power"): main_feature(table.group, p.removesuffix("_power"), table.features)
             for p in table.power}
    model = PowerModel(trainer, main_features=mains, random_state=settings.seed, tuning=settings.tuning)
    X, Y = data[table.features], data[table.power]
    try:
        with warnings.catch_warnings(record=True) as caught:  # e.g. SGD's ConvergenceWarning: recorded, not printed
            warnings.simplefilter("always")
            held_out, train_rows = _fit(model, X, Y, data, settings)
    except TrainerSkipped as exc:
        return [Trained(t, trainer, reason=str(exc)) for t in (table, *derived)]
    fit_warnings = sorted({f"{w.category.__name__}: {str(w.message).split('.')[0]}" for w in caught})
    first = _score(table, trainer, model, held_out, train_rows, settings)
    if not _finite_errors(first.metrics):  # an overflowing fit: never published as a model
        return [Trained(t, trainer, reason="the fit's held-out error is not a finite number")
                for t in (table, *derived)]
    first.metadata["fit_warnings"] = fit_warnings
    results = [first]
    if folder is not None:
        save_model(_model_folder(folder, first), model, first.metadata)
        _export_onnx(_model_folder(folder, first), model, first, data, held_out, settings)
    for twin in derived:
        result = _score(twin, trainer, model.shifted(twin.idle), held_out, train_rows, settings, offsets=twin.idle)
        result.metadata.update(derived_from=table.output_type.value, fit_warnings=fit_warnings)
        if folder is not None:
            save_model(_model_folder(folder, result), model.shifted(twin.idle), result.metadata,
                       same_regressors=_model_folder(folder, first))
            _export_onnx(_model_folder(folder, result), model.shifted(twin.idle), result, data, held_out, settings)
        results.append(result)
    return results


def _finite_errors(metrics: dict) -> bool:
    return all(math.isfinite(v) and v >= 0 for k, v in metrics.items() if k == "mae" or k.endswith("_mae"))


def plan_jobs(tables: list[Table], settings: TrainSettings) -> list[tuple[Table, str, list[Table]]]:
    """(table, trainer, derived tables) for every requested fit; a DynPower table that is its AbsPower
    twin minus a constant rides along with the twin's fit of the same trainer."""
    jobs = []
    for table in tables:
        is_abs = table.output_type is OutputType.ABS
        for trainer in settings.abs_trainers if is_abs else settings.dyn_trainers:
            if not is_abs and table.shift_of is not None and trainer in settings.abs_trainers:
                continue
            derived = [t for t in tables if t.shift_of is table] if is_abs and trainer in settings.dyn_trainers else []
            jobs.append((table, trainer, derived))
    return jobs


def train(tables: list[Table], settings: TrainSettings, folder: Path | None = None,
          progress: Callable[[Trained], None] = lambda t: None) -> list[Trained]:
    """Every requested fit, in `n_jobs` worker processes; models are saved into `folder`."""
    jobs = plan_jobs(tables, settings)
    # Processes, not threads: curve fitting and model serialisation are Python code that holds the GIL.
    # The biggest fits go first so that the last ones to finish are short.
    jobs.sort(key=lambda job: -len(job[0].data) * TRAINERS[job[1]].relative_cost)
    in_processes = settings.n_jobs > 1 and len(jobs) > 1
    backend = workers.exiting_with_this_process(settings.n_jobs) if in_processes else \
        parallel_config(backend="sequential")
    results = []
    try:
        with backend, Parallel(return_as="generator_unordered") as runner:
            fit = delayed(fit_and_score)
            for batch in runner(fit(t, name, settings, folder, derived) for t, name, derived in jobs):
                for result in batch:
                    progress(result)
                    results.append(result)
    finally:
        if in_processes:
            workers.stop()
    return sorted(results, key=lambda r: (r.table.source, r.table.output_type.value, r.table.group, r.trainer))


# -- publishing -----------------------------------------------------------------------------------

def model_name(trained: Trained, node_type: int) -> str:
    return layout.model_name(trained.trainer, node_type)


def model_metadata(trained: Trained, model: PowerModel, settings: TrainSettings, folds: int = 1) -> dict:
    table, spec = trained.table, model.spec
    rounded = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in trained.metrics.items()}
    return {
        "model_name": model_name(trained, settings.node_type),
        "model_class": spec.model_class,
        "model_file": layout.model_file(model_name(trained, settings.node_type)),
        "features": table.features,
        "fe_files": [],
        "output_type": table.output_type.value,
        **rounded,
        "trainer": trained.trainer,
        "feature_group": table.group,
        "energy_source": table.source,
        "node_type": settings.node_type,
        **({"machine_spec": machine.go_spec(settings.machine_spec)} if settings.machine_spec else {}),
        "evaluation": {"split": settings.split, "test_size": settings.test_size, "seed": settings.seed,
                       "train_rows": trained.train_rows, "test_rows": trained.test_rows, "folds": folds,
                       "tuning": settings.tuning},
        "hyperparameters": getattr(model, "tuned_", {}),
        "constant_components": [c for c in model.components_ if model.is_constant(c)],
        "passed_gate": passes_gate(trained.metrics, settings),
        **({"idle_rows": evaluate.IDLE_ROWS} if table.busy else {}),
    }


def passes_gate(metrics: dict, settings: TrainSettings) -> bool:
    """Every bound the run was given holds: MAE and MAPE (largest zone), |idle bias| (largest zone)."""
    bias = metrics.get("idle_bias")
    return ((settings.max_mae is None or metrics["mae"] <= settings.max_mae)
            and (settings.max_mape is None or 0 <= metrics["mape"] <= settings.max_mape)
            and (settings.max_idle_bias is None or (bias is not None and abs(bias) <= settings.max_idle_bias)))


def _export_onnx(folder: Path, model: PowerModel, trained: Trained, data: pd.DataFrame, held_out, settings) -> None:
    """`model.onnx` and `onnx_manifest.json` beside the native model when the run asks for ONNX."""
    if not settings.onnx:
        return
    from .onnx_export import export  # onnx and onnxruntime: imported only by runs that export

    rows = np.unique(np.concatenate([np.asarray(r) for _, r in held_out]))
    onnx_bytes, check = export(model, data.iloc[rows][trained.table.features])
    if onnx_bytes is not None:
        (folder / layout.ONNX_MODEL).write_bytes(onnx_bytes)
    meta = trained.metadata
    by_name = {i["name"]: i for i in settings.inputs or []}
    write_json(folder / layout.ONNX_MANIFEST, {
        "format": "onnx", "file": layout.ONNX_MODEL if onnx_bytes is not None else None, "check": check,
        "input": {"name": "features", "shape": ["rows", len(trained.table.features)],
                  "type": check.get("input_type")},
        "inputs": [by_name.get(f, {"name": f}) for f in trained.table.features],
        "outputs": [{"name": p.removesuffix("_power"), "unit": "W", "shape": ["rows", 1]} for p in trained.table.power],
        "output_type": meta["output_type"], "energy_source": meta["energy_source"],
        "feature_group": meta["feature_group"], "trainer": meta["trainer"], "model_name": meta["model_name"],
        "machine": {"node_type": settings.node_type, "machine_spec": settings.machine_spec},
        "evaluation": {**meta["evaluation"], **{k: v for k, v in meta.items()
                                                if k.endswith(("_mae", "_mape", "_r2", "_idle_bias"))
                                                or k in ("mae", "mape", "idle_bias", "idle_rows")}},
        "passed_gate": meta["passed_gate"],
    })


METADATA_COLUMNS = ["model_name", "model_class", "model_file", "features", "fe_files", "output_type", "mae", "mape"]


def metadata_csv(rows: list[dict], components: Iterable[str]) -> pd.DataFrame:
    """The `<source>_<OutputType>_model_metadata.csv` table, in upstream's column order; R² per
    component and the gate's verdict follow upstream's columns."""
    components = list(components)
    columns = (METADATA_COLUMNS + [f"{c}_mae" for c in components] + [f"{c}_mape" for c in components]
               + ["trainer", "node_type", "feature_group"])
    frame = pd.DataFrame([{k: (repr(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows])
    extra = [f"{c}_r2" for c in components] + ["passed_gate", "kepler_weights", "kepler_weights_reason"]
    frame = frame.reindex(columns=columns + [c for c in extra if c in frame])
    return frame.sort_values(["feature_group", "mae"], kind="stable").reset_index(drop=True)


def _exchange(new: Path, old: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(old), rename_exchange) == 0


def swap_into_place(tmp: Path, final: Path) -> None:
    """Make `tmp` visible as `final`; the old `final` (if any) ends up at `tmp` for removal."""
    if final.exists():
        if not _exchange(tmp, final):
            aside = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.rename(final, aside)
            os.rename(tmp, final)
            os.rename(aside, tmp)
    else:
        os.rename(tmp, final)


def publish(model_path: Path, name: str, build: Callable[[Path, Path | None], None],
            lock_timeout: float = publish_lock.DEFAULT_TIMEOUT) -> Path:
    """Build a pipeline with `build(tmp_folder, previous_folder_or_None)` and publish it atomically.

    The pipeline's lock is held from before `build` reads the previous version until after the swap
    (publish_lock): runs of one pipeline publish one after the other, each on top of the last."""
    model_path.mkdir(parents=True, exist_ok=True)
    final = model_path / name
    with publish_lock.staging(model_path, name, lock_timeout) as stage:
        build(stage.folder, final if final.is_dir() else None)
        # The archive lives inside the folder: the one swap publishes folder and archive together.
        archive = posixpath.basename(layout.pipeline_archive_member(name))
        zip_folder(stage.folder, stage.folder / archive, exclude=frozenset({archive}))
        swap_into_place(stage.folder, final)
        link_archive(model_path, name, stage.archive)
    return final


def link_archive(model_path: Path, name: str, tmp: Path) -> None:
    """`<name>.zip` as a symlink to `<name>/<name>.zip`, the archive inside the folder: the folder and
    its archive are swapped by one rename, so they are always the same version, even after a kill.
    `tmp` is this run's staging name for the link (removed by the next run if this one dies)."""
    link, target = model_path / layout.pipeline_archive(name), layout.pipeline_archive_member(name)
    try:
        if os.readlink(link) == target:
            return
    except OSError:  # absent, or a regular file (as older versions published it)
        pass
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def carry_over(folder: Path, previous: Path | None, tables: list[Table]) -> None:
    """Copy from the previous version the model groups this run does not retrain. Nothing is followed
    through a symlink (a planted link must not copy outside files into the new version)."""
    if previous is None:
        return
    retrained = {(t.source, t.output_type.value, t.group) for t in tables}
    left = 0
    for key in _group_folders(previous):
        if key[1] in ("AbsPower", "DynPower") and key not in retrained:
            left += copy_tree(previous.joinpath(*key), folder.joinpath(*key))
            report.carry_over_held_out(previous, folder, key)
    if left:
        warnings.warn(f"carry-over left {left} symlink(s) or special file(s) of {previous} behind", stacklevel=2)


def _group_folders(previous: Path) -> list[tuple[str, str, str]]:
    """(source, output type, group) of every real folder three levels down; no symlink followed."""
    def real_dirs(path: Path) -> list[str]:
        with os.scandir(path) as entries:
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    return [(s, o, g) for s in real_dirs(previous) for o in real_dirs(previous / s)
            for g in real_dirs(previous / s / o)]


def write_pipeline(folder: Path, previous: Path | None, results: list[Trained], tables: list[Table],
                   settings: TrainSettings, skipped_groups: list[dict]) -> None:
    """Lay out the pipeline-level files in `folder` (the temporary one), around the saved models."""
    now = datetime.now(UTC).strftime(TIME_FORMAT)
    init_time = (_previous_init_time(previous) if previous is not None else None) or now
    _write_metadata_csvs(folder)
    report.keep_held_out(folder, (((r.table.source, r.table.output_type.value, r.table.group), r.metadata, r.held_out)
                                  for r in results if r.ok))
    _write_preprocessed(folder / layout.PREPROCESSED_DIR, tables)
    if settings.profiles:
        (folder / layout.PROFILE_DIR).mkdir()
        for source, profile in settings.profiles.items():
            write_json(folder / layout.profile_file(source), {c: {str(settings.node_type): v}
                                                                 for c, v in profile.items()})
    write_json(folder / layout.METADATA, {
        "name": settings.pipeline_name,
        "version": "v0.7",
        "extractor": settings.extractor,
        "isolator": settings.isolator,
        "abs_trainers": settings.abs_trainers,
        "dyn_trainers": settings.dyn_trainers,
        "metric_type": "bm_metrics",
        "energy_sources": sorted({p.name for p in (folder.iterdir()) if p.is_dir()} - layout.NOT_SOURCE_DIRS),
        "feature_groups": sorted({t.group for t in tables}),
        "init_time": init_time,
        "last_update_time": now,
        "idle_power": {f"{t.source}/{t.group}": t.idle for t in tables if t.output_type is OutputType.DYN},
        "evaluation": {"split": settings.split, "test_size": settings.test_size, "seed": settings.seed},
        "max_mae": settings.max_mae,
        "input_checks": settings.input_checks,
        "skipped": skipped_groups + [
            {"energy_source": r.table.source, "output_type": r.table.output_type.value,
             "feature_group": r.table.group, "trainer": r.trainer, "reason": r.reason}
            for r in results if not r.ok],
    })
    write_json(folder / layout.TRAIN_ARGUMENTS, settings.arguments)
    write_json(folder / layout.NODE_TYPE_INDEX, _node_type_index(previous, settings))


def _node_type_index(previous: Path | None, settings: TrainSettings) -> dict:
    """The previous version's index with this run's node type set to the machine's normalised spec
    (machine.py), its id added to the members when the spec is unchanged."""
    member = settings.arguments.get("id") or "unknown"
    try:
        index = json.loads((previous / layout.NODE_TYPE_INDEX).read_text()) if previous else {}
    except (OSError, ValueError):
        index = {}
    spec = machine.normalise_spec(settings.machine_spec or {})
    entry = index.get(str(settings.node_type))
    if entry and machine.covers(entry.get("attrs", {}), spec) and machine.complete(spec):
        entry["members"] = list(dict.fromkeys([*entry.get("members", []), member]))
    else:
        index[str(settings.node_type)] = {"attrs": spec, "members": [member]}
    return index


def _write_metadata_csvs(folder: Path) -> None:
    """Rebuild every `<source>_<OutputType>_model_metadata.csv` from the model folders present."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for meta_file in sorted(folder.glob(layout.MODEL_METADATA_GLOB)):
        source, ot = meta_file.relative_to(folder).parts[:2]
        rows.setdefault((source, ot), []).append(json.loads(meta_file.read_text()))
    for (source, ot), entries in rows.items():
        components = [k.removesuffix("_mae") for k in entries[0] if k.endswith("_mae")]
        metadata_csv(entries, components).to_csv(folder / layout.metadata_table(source, ot))


def _previous_init_time(previous: Path) -> str | None:
    try:
        return json.loads((previous / layout.METADATA).read_text()).get("init_time")
    except (OSError, ValueError):
        return None


def _write_preprocessed(folder: Path, tables: list[Table]) -> None:
    """`<group>_{abs,dyn}_data.csv`: the training rows, with the power columns of every source."""
    folder.mkdir()
    by_file: dict[str, pd.DataFrame] = {}
    for table in tables:
        kind = "abs" if table.output_type is OutputType.ABS else "dyn"
        key = f"{table.group}_{kind}_data.csv"
        keys = ["timestamp", "instance", "node_type", *table.features]
        frame = table.data[keys + table.power]
        by_file[key] = frame if key not in by_file else by_file[key].merge(frame, on=keys, how="outer")
    for name, frame in by_file.items():
        frame.sort_values(["instance", "timestamp"]).to_csv(folder / name, index=False)


def best_models(results: list[Trained], node_type: int, max_mae: float | None = None) -> list[dict]:
    """Lowest-MAE model per (source, output type): the headline of a run."""
    best: dict[tuple[str, str], Trained] = {}
    best_weights: dict[tuple[str, str], Trained] = {}  # the best Kepler's regressor runs from weight.json
    for r in results:
        if not r.ok or (max_mae is not None and r.metrics["mae"] > max_mae) or not r.metadata.get("passed_gate", True):
            continue
        key = (r.table.source, r.table.output_type.value)
        loadable = kepler_weights_of(TRAINERS[r.trainer], len(r.table.features))[0]
        for chosen, eligible in ((best, True), (best_weights, loadable)):
            if eligible and (key not in chosen or r.metrics["mae"] < chosen[key].metrics["mae"]):
                chosen[key] = r
    return [{"energy_source": s, "output_type": ot, "feature_group": r.table.group,
             "model_name": model_name(r, node_type), "trainer": r.trainer, "mae": round(r.metrics["mae"], 4),
             "path": layout.model_relative_dir(s, ot, r.table.group, model_name(r, node_type)),
             "kepler_weights": best_weights.get((s, ot)) is r,
             "kepler_weights_model": _weights_path(best_weights.get((s, ot)), node_type)}
            for (s, ot), r in sorted(best.items())]


def _weights_path(result: Trained | None, node_type: int) -> str | None:
    if result is None:
        return None
    return posixpath.join(result.table.group, model_name(result, node_type))


@dataclass(frozen=True)
class Published:
    """What a training run published: `summary` is the JSON of the run summary (the termination log's
    body, read back by `kepler_contract.summary.parse_summary`); `results` every fit, in memory only."""

    summary: dict
    results: list[Trained]


def run(extracted: Extracted, settings: TrainSettings, model_path: Path,
        progress: Callable[[Trained], None] = lambda t: None) -> Published:
    """Plan, train, gate and publish; returns what was published and every fit."""
    tables, skipped_groups = plan(extracted, settings)
    if not tables or all(len(t.data) < MIN_ROWS for t in tables):
        most = max((len(t.data) for t in tables), default=0)
        raise TooFewSamplesError(f"too few usable samples: the largest training table has {most} rows "
                                 f"(need at least {MIN_ROWS}); use a longer window or a smaller step")
    return train_and_publish(tables, settings, model_path, skipped_groups, progress)


def train_and_publish(tables: list[Table], settings: TrainSettings, model_path: Path, skipped_groups: list[dict],
                      progress: Callable[[Trained], None] = lambda t: None) -> Published:
    """Train into a hidden copy of the pipeline; publish it only if something worth publishing came out."""
    results: list[Trained] = []

    def build(folder: Path, previous: Path | None) -> None:
        carry_over(folder, previous, tables)
        results.extend(train(tables, settings, folder, progress))
        if not any(r.ok for r in results):
            reasons = sorted({r.reason for r in results if r.reason})
            raise TooFewSamplesError(f"no trainer could fit the data: {'; '.join(reasons)[:300]}")
        if settings.max_mae is None and not best_models(results, settings.node_type):
            raise AccuracyGateError(f"no model passed the gate (MAPE <= {settings.max_mape} %, |idle bias| <= "
                                    f"{settings.max_idle_bias} W); nothing was published")
        if settings.max_mae is not None and not best_models(results, settings.node_type, settings.max_mae):
            lowest = min(r.metrics["mae"] for r in results if r.ok)
            raise AccuracyGateError(f"no model reached MAE <= {settings.max_mae} W (best was {lowest:.2f} W); "
                                    "nothing was published")
        write_pipeline(folder, previous, results, tables, settings, skipped_groups)
        report.write_pipeline_report(folder)

    final = publish(model_path, settings.pipeline_name, build, settings.lock_timeout)
    summary = {"pipeline": settings.pipeline_name, "path": str(final), "archive": str(final) + ".zip",
               "report": str(final / report.REPORT_FILE),
               "models": sum(r.ok for r in results), "skipped": sum(not r.ok for r in results),
               "best": best_models(results, settings.node_type, settings.max_mae)}
    return Published(summary, results)
