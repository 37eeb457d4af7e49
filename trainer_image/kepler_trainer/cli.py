"""`kepler-model`: the command line, and the one place where errors become messages and exit codes."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kepler_contract.vocabulary import EXTRACTORS, ISOLATORS, OUTPUT_TYPES, SPLITS, TUNINGS

from . import __version__
from .errors import ConfigError, InputError, KeplerModelError, PrometheusQueryError, TooFewSamplesError
from .features import DEFAULT_FEATURE_GROUPS, FEATURE_GROUPS, energy_source, output_type, pipeline_name_problem

# The scientific stack (pandas, scikit-learn, skops, scipy) takes seconds to import on a busy node:
# commands import what they use, so `--help`, usage errors and `serve` start at once.
if TYPE_CHECKING:
    from .checks import InputReport
    from .data import QueryResult
    from .pipeline import Trained, TrainSettings
    from .prom import PromSettings

TERMINATION_LOG_LIMIT = 4096
DEFAULT_PIPELINE = "std_v0.7.11"


class Progress:
    """Per-stage lines on stderr when a person is watching (a terminal, or -v); silent otherwise."""

    def __init__(self, enabled: bool):
        self.enabled, self.start = enabled, time.monotonic()
        self.tty = enabled and sys.stderr.isatty()

    def stage(self, message: str) -> None:
        if self.enabled:
            print(f"[{time.monotonic() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True)

    def counter(self, total: int) -> Callable[[Trained], None]:
        done = 0

        def tick(_: Trained) -> None:
            nonlocal done
            done += 1
            if self.tty:
                end = "\n" if done == total else ""
                print(f"\r[{time.monotonic() - self.start:6.1f}s] trained {done}/{total}", end=end,
                      file=sys.stderr, flush=True)
        return tick


# -- input ---------------------------------------------------------------------------------------------

def _data_path(args) -> Path:
    return Path(args.data_path)


def _model_path(args) -> Path:
    return Path(args.model_path) if args.model_path else _data_path(args) / "models"


def _sources(args):
    names = [n.strip() for n in args.energy_source.split(",") if n.strip()]
    if not names:
        raise ConfigError("no energy source given (-e rapl-sysfs, acpi, ...)")
    return [energy_source(n) for n in names]


def _load_inputs(args, progress: Progress) -> QueryResult:
    """The query result from `-i` files (comma list) or, with `-s`, straight from Prometheus."""
    from . import prom, promjson
    from .data import QueryResult

    paths = _input_paths(args)  # raises when there is neither -i nor -s
    if not paths:
        settings = settings_from_args(args)
        progress.stage(f"querying {settings.url}")
        return prom.fetch(settings)
    merged = QueryResult()
    for path in paths:
        progress.stage(f"reading {path}")
        for metric, series in promjson.load(path).metrics.items():
            merged.metrics.setdefault(metric, []).extend(series)
    return merged


def _load_checked(args, progress: Progress) -> tuple[QueryResult, InputReport]:
    """The inputs with bad counter samples dropped and repeated series merged (checks.py)."""
    from .checks import check_input

    result, checks = check_input(_load_inputs(args, progress))
    if checks.dropped or checks.repeated_series:
        progress.stage(f"input checks: {checks.dropped:,} bad samples dropped, "
                       f"{checks.repeated_series:,} repeated series merged")
    return result, checks


def _preflight(args, output: Path, what: str) -> None:
    """Everything that can be refused before the inputs are read: options, machine spec, output."""
    from .preflight import check_output_folder, check_train_options

    check_train_options(args)
    _machine_spec(args)
    check_output_folder(output, what)


def _input_paths(args) -> list[Path]:
    """The `-i` files, resolved (and checked) before anything slow happens."""
    from . import promjson

    names = [n.strip() for n in (args.input or "").split(",") if n.strip()]
    if not names and not getattr(args, "server_given", False):
        raise InputError("no input: give -i FILE (a query output JSON) or -s URL with a time window")
    return [promjson.resolve_input(name, _data_path(args)) for name in names]


def _feature_groups(args, available: set[str] | None = None) -> list[str]:
    if args.feature_group:
        groups = [g.strip() for g in args.feature_group.split(",") if g.strip()]
        for g in groups:
            if g not in FEATURE_GROUPS:
                raise ConfigError(f"unknown feature group {g!r} (known: {', '.join(FEATURE_GROUPS)})")
        return groups
    return list(DEFAULT_FEATURE_GROUPS)


def _profiles(args, sources) -> dict[str, dict]:
    from . import promjson
    from .checks import check_input
    from .extract import node_power
    from .isolate import idle_profile

    if args.profile_start_time is not None:
        raw = _idle_window(args)
    elif args.profile:
        raw = promjson.load(promjson.resolve_input(args.profile, _data_path(args)))
    else:
        return {}
    idle, _ = check_input(raw)  # the idle profile is held to the same sample checks as the training data
    return {s.name: idle_profile(node_power(idle, s)) for s in sources}


def _idle_window(args) -> QueryResult:
    """The idle machine's metrics from the same Prometheus (and filters) as the training data, over
    --profile-start-time .. --profile-end-time: what a TrainingPipeline's isolator.idleWindow asks for."""
    from . import prom

    if args.profile_end_time is None or not getattr(args, "server_given", False):
        raise ConfigError("--profile-start-time needs --profile-end-time and -s (the Prometheus to query)")
    window = argparse.Namespace(**{**vars(args), "start_time": args.profile_start_time,
                                   "end_time": args.profile_end_time, "step": args.profile_step or args.step})
    return prom.fetch(settings_from_args(window))


def _machine_spec(args) -> dict | None:
    from .preflight import machine_spec

    return machine_spec(args.machine_spec)


def _pipeline_name(args) -> str:
    name = DEFAULT_PIPELINE if args.pipeline_name is None else args.pipeline_name  # "" is not the default
    problem = pipeline_name_problem(name)
    if problem:
        raise ConfigError(f"invalid pipeline name {name!r}: {problem}")
    return name


def _settings(args, sources, groups, abs_trainers, dyn_trainers, profiles=None) -> TrainSettings:
    from .pipeline import TrainSettings

    return TrainSettings(
        pipeline_name=_pipeline_name(args), sources=sources, feature_groups=groups,
        abs_trainers=abs_trainers, dyn_trainers=dyn_trainers, extractor=args.extractor, isolator=args.isolator,
        profiles=profiles or {}, node_type=args.node_type, seed=args.seed, split=args.split or "random",
        max_mae=args.max_mae, machine_spec=_machine_spec(args), n_jobs=args.jobs, tuning=args.tuning,
        lock_timeout=args.lock_timeout, max_mape=args.max_mape, max_idle_bias=args.max_idle_bias,
        arguments={k: v for k, v in vars(args).items() if not callable(v) and k != "server_given"})


# -- commands ------------------------------------------------------------------------------------------

def cmd_train(args, progress: Progress) -> dict:
    if args.features:
        return cmd_train_features(args, progress)
    _input_paths(args)
    _pipeline_name(args)
    _preflight(args, _model_path(args), "model path")
    from .extract import extract
    from .pipeline import run
    from .preflight import output_errors
    from .trainers import trainer_names

    sources = _sources(args)
    groups = _feature_groups(args)
    abs_trainers, dyn_trainers = trainer_names(args.abs_trainers), trainer_names(args.dyn_trainers)
    if args.isolator == "profile" and not args.profile and args.profile_start_time is None:
        raise ConfigError("--isolator profile needs --profile IDLE_QUERY_OUTPUT or --profile-start-time/-end-time")
    result, checks = _load_checked(args, progress)
    progress.stage(f"extracting features ({result.sample_count:,} samples)")
    extracted = extract(result, sources, report=checks)
    del result
    settings = _settings(args, sources, groups, abs_trainers, dyn_trainers, _profiles(args, sources))
    settings.input_checks = checks.as_dict()
    progress.stage("training")
    fits = len(groups) * len(sources) * (len(abs_trainers) + len(dyn_trainers))
    with output_errors(_model_path(args)):
        published = run(extracted, settings, _model_path(args), progress.counter(fits))
    summary, results = published.summary, published.results
    summary["input_checks"] = settings.input_checks
    progress.stage(f"published {summary['path']} ({summary['models']} models, {summary['skipped']} skipped)")
    _print_best(results)
    return summary


def cmd_train_features(args, progress: Progress) -> dict:
    """`train --features`: a PromQL feature set, from Prometheus (-s) or a query dump (-i)."""
    from . import featuresets, train_features
    from .checks import check_input, prometheus_counter
    from .trainers import trainer_names

    if getattr(args, "label_filter", None) or getattr(args, "label_equals", None):
        raise ConfigError("--label-filter/--label-equals do not apply to --features: the feature set's selectors "
                          "and join say which series count (docs/vm-models.md)")
    feature_set = featuresets.load(args.features, featuresets.parse_mapping(args.join_map or ""))
    if getattr(args, "history", None):
        feature_set = featuresets.with_history(feature_set, args.history)
    paths = _input_paths(args)
    abs_trainers, dyn_trainers = trainer_names(args.abs_trainers), trainer_names(args.dyn_trainers)
    if paths:
        result = _load_inputs(args, progress)
    else:
        settings = settings_from_args(args)
        progress.stage(f"querying {settings.url} for feature set {feature_set.name}")
        result = featuresets.fetch(settings, feature_set)
    result, checks = check_input(result, is_counter=prometheus_counter)
    progress.stage(f"extracting feature set {feature_set.name} ({result.sample_count:,} samples)")
    extracted = featuresets.extract(result, feature_set)
    del result
    args.split = args.split or "workload"  # honest figures for models meant for other machines
    sources = train_features.sources(feature_set)
    settings = _settings(args, sources, [feature_set.name], abs_trainers, dyn_trainers)
    settings.onnx = args.onnx
    settings.input_checks = checks.as_dict()
    progress.stage("training")
    fits = len(extracted.power) * (len(abs_trainers) + len(dyn_trainers))
    published = train_features.run(extracted, feature_set, settings, _model_path(args), progress.counter(fits))
    summary, results = published.summary, published.results
    progress.stage(f"published {summary['path']} ({summary['models']} models, {summary['skipped']} skipped)")
    _print_best(results)
    summary["input_checks"] = settings.input_checks
    summary["onnx_exportable"] = sum(1 for r in results if r.ok and _exportable(summary["path"], r))
    _add_onnx_models(summary, results)
    return summary


def _add_onnx_models(summary: dict, results: list[Trained]) -> None:
    """Each best entry's `onnx_model`: the lowest-MAE published model of its energy source and output type
    with a checked model.onnx (what the operator writes into a ConfigMap), or "" when there is none."""
    exportable = sorted((r for r in results if r.ok and r.metadata.get("passed_gate", True)
                         and _exportable(summary["path"], r)), key=lambda r: r.metrics["mae"])
    for entry in summary.get("best") or []:
        match = next((r for r in exportable if r.table.source == entry["energy_source"]
                      and r.table.output_type.value == entry["output_type"]), None)
        entry["onnx_model"] = f"{match.table.group}/{match.metadata['model_name']}" if match else ""


def _exportable(path: str, result: Trained) -> bool:
    table = result.table
    return (Path(path) / table.source / table.output_type.value / table.group / result.metadata["model_name"]
            / "model.onnx").is_file()


def _print_best(results: list[Trained]) -> None:
    rows = sorted((r for r in results if r.ok), key=lambda r: (r.table.source, r.table.output_type.value,
                                                             r.table.group, r.metrics["mae"]))
    seen = set()
    print(f"{'energy source':<12} {'output':<9} {'feature group':<19} {'best trainer':<34} {'mae (W)':>8}")
    for r in rows:
        key = (r.table.source, r.table.output_type, r.table.group)
        if key in seen:
            continue
        seen.add(key)
        print(f"{r.table.source:<12} {r.table.output_type.value:<9} {r.table.group:<19} {r.trainer:<34} "
              f"{r.metrics['mae']:8.3f}")


def cmd_estimate(args, progress: Progress) -> dict:
    _input_paths(args)
    _preflight(args, _data_path(args) / args.output, "output folder")
    from .estimate import choose_model, estimate, write_outputs
    from .extract import extract

    source = _sources(args)[0]
    result, checks = _load_checked(args, progress)
    extracted = extract(result, [source], require_power=False, report=checks)
    choice = choose_model(_model_path(args), args.pipeline_name, source.name, output_type(args.output_type),
                          args.feature_group or None, args.model_name, extracted.available_features)
    progress.stage(f"estimating with {choice.pipeline.name}/{choice.describe()['path']}")
    table, summary = estimate(extracted, choice)
    if table.empty:
        raise TooFewSamplesError("the input has no sample of the model's features")
    from . import report

    out = _data_path(args) / args.output
    source_of_input = args.input or getattr(args, "server", None)
    csv = write_outputs(out, table, choice, {"model": choice.describe(), "input": source_of_input, **summary})
    page = report.write_estimation_report(out)
    print(f"estimated {summary['samples']} samples with {choice.name} ({choice.group}); wrote {csv}")
    print(f"report: {page}")
    for component, entry in summary["components"].items():
        mae = "" if entry["mae"] is None else f", mae {entry['mae']:.3f} W"
        print(f"  {component:<9} {entry['energy_joules']:12.1f} J, mean {entry['mean_power_watts']:8.3f} W{mae}")
    return {"result": str(csv), "report": str(page), "model": choice.describe(), **summary,
            "input_checks": checks.as_dict()}


def cmd_train_from_data(args, progress: Progress) -> dict:
    import pandas as pd

    from . import promjson
    from .checks import check_table
    from .features import OutputType
    from .pipeline import MIN_ROWS, Table, train_and_publish
    from .trainers import trainer_names

    _pipeline_name(args)
    _preflight(args, _model_path(args), "model path")
    source = _sources(args)[0]
    ot = output_type(args.output_type)
    group = args.feature_group
    if not group:
        raise ConfigError("train_from_data needs -fg FEATURE_GROUP (the group the table was extracted for)")
    path = promjson.resolve_input(args.input or "", _data_path(args), suffix=".csv")
    try:
        data = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read table {path}: {exc}") from None
    power = [f"{c}_power" for c in source.components if f"{c}_power" in data]
    if not power:
        columns = ", ".join(c + "_power" for c in source.components)
        raise InputError(f"{path}: no power column of {source.name} ({columns})")
    meta = {"timestamp", "node_type", "instance", "id", "workload"}
    features = sorted(c for c in data.columns if c not in meta and not c.endswith("_power")
                      and not c.startswith(("Unnamed", "packge_ratio", "package_ratio")) and c != "")
    if not features:
        raise InputError(f"{path}: no feature column")
    data = check_table(data, features, power, path)
    if "timestamp" in data:
        data = data.sort_values("timestamp", kind="stable")
    node_types = sorted(data["node_type"].dropna().astype(int).unique()) if "node_type" in data else [args.node_type]
    args.node_type = int(node_types[0]) if len(node_types) == 1 else args.node_type
    data = data.assign(instance=data.get("instance", ""), timestamp=data.get("timestamp", range(len(data))),
                       node_type=args.node_type).reset_index(drop=True)
    trainers = trainer_names(args.trainers)
    if len(data) < MIN_ROWS:
        raise TooFewSamplesError(f"{path}: {len(data)} rows, need at least {MIN_ROWS}")
    keys = ["timestamp", "instance", "node_type"] + (["workload"] if "workload" in data else [])
    table = Table(source.name, group, ot, features, power, data[keys + features + power])
    settings = _settings(args, [source], [group], trainers if ot is OutputType.ABS else [],
                         trainers if ot is OutputType.DYN else [])
    published = train_and_publish([table], settings, _model_path(args), [], progress.counter(len(trainers)))
    _print_best(published.results)
    return published.summary


def cmd_report(args, progress: Progress) -> dict:
    """The report page of a published pipeline (`-p`), or of an estimation's output folder (`--estimation`)."""
    from . import report
    from .errors import ModelNotFoundError

    out = _data_path(args) / args.output if args.output else None
    if args.estimation:
        folder, write = _data_path(args) / args.estimation, report.write_estimation_report
        if not (folder / report.ESTIMATION_RESULT).is_file():
            raise InputError(f"no estimation under {folder}: {report.ESTIMATION_RESULT} is missing")
    else:
        if not args.pipeline_name:
            raise ConfigError("report needs -p PIPELINE (a published pipeline) or --estimation FOLDER")
        folder, write = _model_path(args) / _pipeline_name(args), report.write_pipeline_report
        if not (folder / "metadata.json").is_file():
            raise ModelNotFoundError(f"no published pipeline {args.pipeline_name!r} under {_model_path(args)}")
    try:
        written = write(folder, out)
    except OSError as exc:
        raise InputError(f"cannot write the report to {out or folder}: {exc.strerror or exc}") from None
    size = written.stat().st_size
    print(f"report: {written} ({size / 1024:.0f} KiB)")
    return {"report": str(written), "bytes": size}


def cmd_query(args, progress: Progress) -> dict:
    progress.stage("querying Prometheus")
    return run_query(args, _data_path(args))


def cmd_serve(args, progress: Progress) -> dict:
    import kepler_model_server  # its own package (docs/serve.md): `kepler-model serve` is `kepler-model-server`

    raise SystemExit(kepler_model_server.run(args))


def cmd_estimator(args, progress: Progress) -> dict:
    from . import sidecar

    raise SystemExit(sidecar.run(args))


# -- parser --------------------------------------------------------------------------------------------

def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("files")
    g.add_argument("--data-path", default=os.environ.get("DATAPATH", "data"),
                   help="working folder for inputs and outputs (default: $DATAPATH or ./data)")
    g.add_argument("--model-path", default=os.environ.get("MODEL_PATH"),
                   help="where pipelines are published (default: $MODEL_PATH or <data-path>/models)")
    g.add_argument("-i", "--input", default="", help="query output JSON (path, or a stem under --data-path); "
                   "comma list for train")
    g.add_argument("-o", "--output", default="output", help="output name under --data-path (default: output)")
    g.add_argument("--termination-log", default=os.environ.get("KEPLER_MODEL_TERMINATION_LOG"),
                   help="write a JSON summary of the run here (the operator passes /dev/termination-log)")
    g.add_argument("-v", "--verbose", action="store_true", help="progress lines even when not on a terminal")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    m = parser.add_argument_group("model")
    m.add_argument("-p", "--pipeline-name", default=None, help=f"pipeline name (train default: {DEFAULT_PIPELINE})")
    m.add_argument("-e", "--energy-source", default="rapl-sysfs",
                   help="energy source(s): rapl-sysfs (alias rapl: package, core, uncore, dram), acpi (platform)")
    m.add_argument("-ot", "--output-type", default="AbsPower", choices=OUTPUT_TYPES,
                   help="node power with idle (AbsPower) or dynamic power only (DynPower)")
    m.add_argument("-fg", "--feature-group", default="",
                   help="feature group(s), comma list (default: all the data supports: "
                   f"{', '.join(DEFAULT_FEATURE_GROUPS)})")
    m.add_argument("--model-name", default=None, help="a model by name, e.g. SGDRegressorTrainer_0 (estimate)")
    m.add_argument("--node-type", type=int, default=0, help="node type index of the training machine (default 0)")
    m.add_argument("--id", default=None, help="machine id recorded in node_type_index.json")
    m.add_argument("--machine-spec", default=None, help="JSON file with the machine's processor, cores, chips, "
                   "memory, frequency")


def _training(parser: argparse.ArgumentParser) -> None:
    t = parser.add_argument_group("training")
    t.add_argument("--extractor", default="default", choices=EXTRACTORS,
                   help="default: per-interval rates; smooth: 30-sample rolling mean")
    t.add_argument("--isolator", default="min", choices=ISOLATORS,
                   help="how idle power is removed for DynPower models (default: min)")
    t.add_argument("--profile", default=None, help="query output of the idle machine (isolator 'profile')")
    t.add_argument("--profile-start-time", type=parse_time, default=None,
                   help="instead of --profile: query the idle machine from -s over this window (with "
                   "--profile-end-time; the same label filters)")
    t.add_argument("--profile-end-time", type=parse_time, default=None, help="end of the idle window")
    t.add_argument("--profile-step", type=parse_seconds, default=None, help="step of the idle window (default: --step)")
    t.add_argument("--abs-trainers", default="default", help="AbsPower trainers, comma list (e.g. "
                   "LinearRegression,GradientBoostingRegressor,XgboostFit); 'default': upstream's ten; 'all': "
                   "also HistGradientBoosting, MonotonicHistGradientBoosting, ExtraTrees (more accurate, bigger)")
    t.add_argument("--dyn-trainers", default="default", help="DynPower trainers, as --abs-trainers")
    t.add_argument("--trainers", default="default", help="trainers for train_from_data, as --abs-trainers")
    t.add_argument("--seed", type=int, default=0, help="random seed of the split and the trainers")
    t.add_argument("--features", default=None, metavar="PRESET_OR_FILE",
                   help="train on a PromQL feature set instead of Kepler 0.7's groups: a preset (kepler-vm, "
                   "node-exporter) or a YAML/JSON file (docs/vm-models.md)")
    t.add_argument("--join-map", default=None, metavar="F=T,...",
                   help="with --features: feature-side label value = target-side value, e.g. the guest's "
                   "instance=the host's vm_id")
    t.add_argument("--history", default=None, metavar="SECONDS,...",
                   help="with --features: add inputs from the machine's recent past, the mean and the largest "
                   "busy CPU time over each window, e.g. 15,60,180 (docs/vm-models.md)")
    t.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                   help="with --features: export every convertible model to ONNX, checked against the "
                   "native model (default: on)")
    t.add_argument("--max-mape", type=float, default=None, help="accuracy gate: largest zone MAPE in %%")
    t.add_argument("--max-idle-bias", type=float, default=None,
                   help="accuracy gate: largest |mean error| on idle rows, in watts (feature sets)")
    t.add_argument("--split", default=None, choices=SPLITS,
                   help="held-out 10%%: random rows (upstream default) or the last 10%% of time; or 'workload' "
                   "(the default with --features): leave "
                   "each run out in turn (runs: a 'workload' column, else pauses in the timestamps, else 5 "
                   "time blocks) and publish the model fitted on every row")
    t.add_argument("--tuning", default="blocked", choices=TUNINGS,
                   help="how trainers with candidate settings pick one, by cross-validation on the training "
                   "rows only: contiguous time folds (default), shuffled folds, or no tuning")
    t.add_argument("--max-mae", type=float, default=None, help="accuracy gate in watts: only models under it "
                   "count as published; the run fails if none passes")
    t.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel fits")
    t.add_argument("--lock-timeout", type=_non_negative_seconds, default=3600.0,
                   help="seconds to wait while another run publishes the same pipeline; then exit 12 "
                   "(default: 3600)")


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid seconds {text!r}: a number >= 0")
    return value


def _report(parser: argparse.ArgumentParser) -> None:
    r = parser.add_argument_group("report")
    r.add_argument("--estimation", default=None, help="report on this estimation output folder (under "
                   "--data-path, as estimate's -o) instead of a pipeline")
    parser.set_defaults(output=None)
    # the common options that mean nothing here are accepted but not shown
    shown = {"help", "data_path", "model_path", "output", "termination_log", "verbose", "quiet", "pipeline_name",
             "estimation"}
    for action in parser._actions:
        if action.dest not in shown:
            action.help = argparse.SUPPRESS
        elif action.dest == "output":
            action.help = ("the page's path under --data-path (default: report.html in the pipeline or "
                           "estimation folder)")
        elif action.dest == "pipeline_name":
            action.help = "the published pipeline to report on"


def _prometheus(parser: argparse.ArgumentParser) -> None:
    add_prometheus_arguments(parser)


# -- Prometheus options -> prom.PromSettings ------------------------------------------------------------

def parse_time(text: str) -> float:
    """An argparse type: `prom.parse_time`, its ValueError as argparse's own message."""
    from . import prom

    return _argument_type(prom.parse_time, text)


def parse_seconds(text: str) -> float:
    """An argparse type: `prom.parse_seconds`, its ValueError as argparse's own message."""
    from . import prom

    return _argument_type(prom.parse_seconds, text)


def _argument_type(parse: Callable[[str], float], text: str) -> float:
    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _label_filter(text: str) -> str:
    """Checked at parse time, kept as text: parsed arguments stay JSON (train_arguments.json records them)."""
    from .prom import LabelMatcher

    try:
        return str(LabelMatcher.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).splitlines()[0]) from None


def _label_equals(text: str) -> str:
    """`K=V` as an equality matcher whatever V holds; checked at parse time, kept as text."""
    from .prom import LabelMatcher

    try:
        LabelMatcher.equals(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_prometheus_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every command that reads from Prometheus (query, and train/estimate with -s)."""
    from .prom import DEFAULT_SERVER

    group = parser.add_argument_group("Prometheus")
    group.add_argument("-s", "--server", default=os.environ.get("PROM_SERVER", DEFAULT_SERVER),
                       help="Prometheus URL (default: $PROM_SERVER or %(default)s)")
    group.add_argument("--interval", type=parse_seconds, default=os.environ.get("PROM_QUERY_INTERVAL", "300"),
                       help="window length ending now, seconds or e.g. 1h (default: $PROM_QUERY_INTERVAL or 300)")
    group.add_argument("--start-time", type=parse_time, default=None,
                       help="window start, UTC %%Y-%%m-%%dT%%H:%%M:%%SZ or unix seconds")
    group.add_argument("--end-time", type=parse_time, default=None,
                       help="window end (default: now, or start + interval)")
    group.add_argument("--step", type=parse_seconds, default=os.environ.get("PROM_QUERY_STEP", "3"),
                       help="evaluation step in seconds (default: $PROM_QUERY_STEP or 3)")
    group.add_argument("--metric-prefix", default="kepler_", help="metric name prefix (default: %(default)s)")
    group.add_argument("--label-filter", type=_label_filter, action="append", default=[], metavar="K=V",
                       help="only series with this label (repeatable; also K!=V, K=~RE, K!~RE), e.g. "
                            "instance=node-1:9102 when several Kepler exporters share one Prometheus")
    group.add_argument("--label-equals", type=_label_equals, action="append", default=[], metavar="K=V",
                       help="only series whose label K equals V, V taken verbatim (repeatable): what the "
                            "operator passes, so a value such as '~.*' stays a literal")
    group.add_argument("-tm", "--thirdparty-metrics", nargs="+", action="extend", metavar="METRIC", default=None,
                       help="extra metric names to fetch (default: $PROM_THIRDPARTY_METRICS)")
    group.add_argument("--benchmark", metavar="FILE", default=None,
                       help="JSON file whose startTimeUTC/endTimeUTC give the window (or a CPE Benchmark)")
    group.add_argument("--bearer-token-file",
                       default=os.environ.get("PROM_BEARER_TOKEN_FILE") or None,
                       help="file holding a bearer token, e.g. a mounted service-account token")
    group.add_argument("--ca-file", default=os.environ.get("PROM_CA_FILE") or None,
                       help="CA bundle that signs the server's certificate")
    group.add_argument("--insecure-skip-tls-verify", action="store_true",
                       default=os.environ.get("PROM_SSL_DISABLE", "").lower() == "true",
                       help="do not verify the server's certificate")
    group.add_argument("--timeout", type=parse_seconds, default=120.0, help="per request, seconds (default: 120)")
    group.add_argument("--retries", type=int, default=3,
                       help="retries with backoff on connection errors and 5xx (default: 3)")
    group.add_argument("--concurrency", type=int, default=4, help="requests in flight (default: 4)")


def settings_from_args(args: argparse.Namespace) -> PromSettings:
    """Resolve the window (start/end > --benchmark file > last --interval) and validate everything;
    a refused value is the one-line error of its kind (errors.py), as for every other option."""
    from .prom import LabelMatcher, PromSettings

    start, end = _window_from_args(args)
    try:
        matchers = [LabelMatcher.parse(text) for text in args.label_filter or ()]
        matchers += [LabelMatcher.equals(text) for text in getattr(args, "label_equals", None) or ()]
        return PromSettings(
            server=args.server, start=start, end=end, step=args.step, metric_prefix=args.metric_prefix,
            label_filters=tuple(matchers), thirdparty_metrics=_thirdparty(args.thirdparty_metrics),
            bearer_token_file=args.bearer_token_file, ca_file=args.ca_file,
            insecure_skip_tls_verify=args.insecure_skip_tls_verify, timeout=args.timeout,
            retries=args.retries, concurrency=args.concurrency)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise _settings_error(exc) from None


def _thirdparty(given: list[str] | None) -> tuple[str, ...]:
    # default None, not the environment's list: argparse's "extend" appends to a default in place
    items = given if given is not None else [
        item for item in re.split(r"[,\s]+", os.environ.get("PROM_THIRDPARTY_METRICS", "")) if item]
    return tuple(dict.fromkeys(m for item in items for m in item.split(",") if m))


def _settings_error(exc: ValueError) -> KeplerModelError:
    errors = getattr(exc, "errors", lambda: [])()
    message = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'window'}: {e['msg'].removeprefix('Value error, ')}"
                        for e in errors) or str(exc)
    if any(not e["loc"] for e in errors):  # the window check: Prometheus would answer 400 for it
        return PrometheusQueryError(message)
    return InputError(f"invalid Prometheus settings: {message}")


def _window_from_args(args: argparse.Namespace) -> tuple[float, float]:
    from .prom import parse_seconds as seconds, read_window

    now = datetime.now(UTC).timestamp()
    interval = seconds(args.interval)
    if args.start_time is not None or args.end_time is not None:
        end = args.end_time if args.end_time is not None else (
            min(now, args.start_time + interval) if args.start_time is not None else now)
        start = args.start_time if args.start_time is not None else end - interval
    elif args.benchmark:
        start, end = read_window(_benchmark_file(args.benchmark, getattr(args, "data_path", None)))
    else:
        start, end = now - interval, now
    return round(start, 3), round(end, 3)


def _benchmark_file(name: str, data_path: str | Path | None) -> Path:
    given = Path(name)
    candidates = [given]
    if data_path is not None:
        candidates += [Path(data_path) / given, Path(data_path) / f"{given}.json"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"benchmark file {name!r} not found (looked for {', '.join(map(str, candidates))})")


def run_query(args: argparse.Namespace, data_path: Path) -> dict:
    """`kepler-model query`: fetch the window and write the query JSON atomically; a summary back."""
    from . import prom

    settings = settings_from_args(args)
    return prom.write_query(settings, prom.output_path(getattr(args, "output", None) or "output", Path(data_path)))


def cmd_exporter(args, progress: Progress) -> dict:
    from .exporter import run

    return run(args)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; `command` (the word after `kepler-model`) limits imports to what that command needs."""
    parser = argparse.ArgumentParser(
        prog="kepler-model",
        description="Train, evaluate, publish and use power models for Kepler from its Prometheus metrics.",
        epilog="Example: kepler-model train -i kepler_query.json -p my_pipeline -e rapl-sysfs,acpi; "
               "then: kepler-model estimate -i kepler_query.json -p my_pipeline -e rapl-sysfs")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = {
        "query": ("dump Kepler metrics from Prometheus to a query output JSON", cmd_query, [_common, _prometheus]),
        "train": ("train every trainer on every feature group and publish a pipeline", cmd_train,
                  [_common, _training, _prometheus]),
        "estimate": ("predict power with a published model; compare with measured power", cmd_estimate,
                     [_common, _training, _prometheus]),
        "train_from_data": ("train on a preprocessed feature table (CSV) and publish a pipeline",
                            cmd_train_from_data, [_common, _training]),
        "report": ("write the HTML report page of a published pipeline or of an estimation", cmd_report,
                   [_common, _report]),
    }
    for name, (help_text, func, groups) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        for add in groups if command in (None, name) else groups[:1]:
            add(p)
        p.set_defaults(func=func)
    p = sub.add_parser("serve", help="serve published models to Kepler over HTTP",
                       description="serve published models to Kepler over HTTP")
    if command == "serve":  # the web stack is imported only to serve
        import kepler_model_server

        kepler_model_server.add_arguments(p)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("estimator", help="the estimator sidecar: answer Kepler's power requests on a unix socket",
                       description="the estimator sidecar Kepler 0.7 uses with ESTIMATOR=true (upstream's arguments)")
    if command == "estimator":
        from . import sidecar

        sidecar.add_arguments(p)
    p.set_defaults(func=cmd_estimator)
    p = sub.add_parser("exporter", help="estimate power from procfs with a published ONNX model; serve it to "
                       "Prometheus", description="estimate power where it cannot be measured (docs/vm-models.md)")
    if command == "exporter":  # onnxruntime and prometheus-client only for this command
        from . import exporter

        exporter.add_arguments(p)
    p.set_defaults(func=cmd_exporter)
    return parser


# -- the boundary --------------------------------------------------------------------------------------

def _fit_summary(summary: dict) -> str:
    """JSON of at most TERMINATION_LOG_LIMIT bytes: long lists are shortened, never the JSON cut."""
    text = json.dumps(summary, default=str)
    while len(text.encode()) > TERMINATION_LOG_LIMIT:
        lists = [k for k, v in summary.items() if isinstance(v, list) and v]
        if lists:
            key = max(lists, key=lambda k: len(json.dumps(summary[k], default=str)))
            summary[key] = summary[key][: len(summary[key]) // 2]
            summary["truncated"] = True
        elif "error" in summary:
            summary["error"]["message"] = summary["error"]["message"][:1000]
        else:
            summary = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
        text = json.dumps(summary, default=str)
    return text


def _write_termination_log(path: str | None, summary: dict) -> None:
    if not path:
        return
    try:
        Path(path).write_text(_fit_summary(summary))
    except OSError as exc:
        print(f"kepler-model: warning: cannot write termination log {path}: {exc.strerror}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    command = next((a for a in raw if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    explicit = any(a == "--server" or a.startswith(("--server=", "-s")) for a in raw)
    args.server_given = explicit or (not getattr(args, "input", "") and "PROM_SERVER" in os.environ)
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)  # `serve` has neither
    progress = Progress(enabled=not quiet and (verbose or (sys.stderr.isatty() and not os.environ.get("CI"))))
    log = getattr(args, "termination_log", None)  # `serve` writes none
    try:
        summary = args.func(args, progress)
    except KeplerModelError as exc:
        print(f"kepler-model: error: {exc}", file=sys.stderr)
        _write_termination_log(log, {"ok": False, "command": args.command, "error": {
            "reason": exc.reason, "exit_code": exc.exit_code, "message": str(exc)}})
        return exc.exit_code
    except KeyboardInterrupt:
        print("kepler-model: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: show everything
        traceback.print_exc()
        _write_termination_log(log, {"ok": False, "command": args.command, "error": {
            "reason": "Error", "exit_code": 1, "message": f"internal error: {exc!r}"}})
        return 1
    _write_termination_log(log, {"ok": True, "command": args.command, **summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
