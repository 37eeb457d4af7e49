"""A `kepler-model train` or `estimate` run as typed settings, and the one place that writes its command line.

The operator maps a resource's spec onto a `TrainInvocation` or an `EstimateInvocation` (pure field
mapping, `kepler_operator.jobs`); `train_argv`/`estimate_argv` turn that into the argv of the Job's
container. The flag names live in `Flag` constants below and nowhere else: the trainer's argparse
parser declares its options with `Flag.names`, so a renamed flag renames both sides. The property test
(tests/unit/kepler_operator/test_jobs_argv.py) parses every argv the operator can build from a
CRD-valid spec with the trainer's real parser and checks that it reads back each field of the invocation.

Values are written in the trainer's own syntax: times as RFC 3339 UTC (with a fraction only when there
is one), lists comma-joined, label filters as `--label-equals K=V` (equality, value taken verbatim), one
per label in name order so the argv of a spec is stable.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass

from .vocabulary import EnergySource, Extractor, FeatureGroup, IsolatorType, OutputType, Trainer

PROGRAM = "kepler-model"


@dataclass(frozen=True)
class Flag:
    """One option of `kepler-model`: its long name, and the short spelling the argv uses when it has one."""

    long: str
    short: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """What `add_argument` takes: the short spelling first (argparse's help shows it that way)."""
        return (self.short, self.long) if self.short else (self.long,)

    @property
    def spelling(self) -> str:
        """How `train_argv`/`estimate_argv` write it."""
        return self.short or self.long


# Prometheus (`query`, `train -s`, `estimate -s`)
SERVER = Flag("--server", "-s")
INTERVAL = Flag("--interval")
START_TIME = Flag("--start-time")
END_TIME = Flag("--end-time")
STEP = Flag("--step")
METRIC_PREFIX = Flag("--metric-prefix")
LABEL_EQUALS = Flag("--label-equals")
BEARER_TOKEN_FILE = Flag("--bearer-token-file")
CA_FILE = Flag("--ca-file")
INSECURE_SKIP_TLS_VERIFY = Flag("--insecure-skip-tls-verify")
# files
INPUT = Flag("--input", "-i")
OUTPUT = Flag("--output", "-o")
DATA_PATH = Flag("--data-path")
MODEL_PATH = Flag("--model-path")
TERMINATION_LOG = Flag("--termination-log")
# model
PIPELINE_NAME = Flag("--pipeline-name", "-p")
ENERGY_SOURCE = Flag("--energy-source", "-e")
OUTPUT_TYPE = Flag("--output-type", "-ot")
FEATURE_GROUP = Flag("--feature-group", "-fg")
MODEL_NAME = Flag("--model-name")
# training
EXTRACTOR = Flag("--extractor")
ISOLATOR = Flag("--isolator")
PROFILE = Flag("--profile")
PROFILE_START_TIME = Flag("--profile-start-time")
PROFILE_END_TIME = Flag("--profile-end-time")
PROFILE_STEP = Flag("--profile-step")
ABS_TRAINERS = Flag("--abs-trainers")
DYN_TRAINERS = Flag("--dyn-trainers")
FEATURES = Flag("--features")
JOIN_MAP = Flag("--join-map")
HISTORY = Flag("--history")
MAX_MAE = Flag("--max-mae")
MAX_MAPE = Flag("--max-mape")
MAX_IDLE_BIAS = Flag("--max-idle-bias")


@dataclass(frozen=True)
class Files:
    """Where a run reads and writes (paths inside the trainer's container)."""

    model_path: str
    """The folder holding the pipeline folders."""
    data_path: str
    """Scratch space for query outputs and relative `-i`/`-o` names."""
    termination_log: str | None = None
    """Where the run summary (`kepler_contract.summary`) is written."""


@dataclass(frozen=True)
class PrometheusQuery:
    """Which series a run queries: the last `interval_seconds`, or `start` to `end`, every `step_seconds`."""

    server: str
    step_seconds: int
    interval_seconds: int | None = None
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None
    metric_prefix: str = "kepler_"
    label_equals: tuple[tuple[str, str], ...] = ()
    """(label, value) pairs every series must carry, in label order."""
    bearer_token_file: str | None = None
    ca_file: str | None = None
    insecure_skip_tls_verify: bool = False

    def __post_init__(self) -> None:
        if (self.interval_seconds is None) == (self.start is None or self.end is None):
            raise ValueError("a query has an interval, or a start and an end")


@dataclass(frozen=True)
class IdleWindow:
    """When the machine was idle: the `profile` isolator queries it from the run's Prometheus."""

    start: datetime.datetime
    end: datetime.datetime
    step_seconds: int


@dataclass(frozen=True)
class TrainInvocation:
    """The settings of one `kepler-model train` run."""

    query: PrometheusQuery
    pipeline_name: str
    files: Files
    energy_sources: tuple[EnergySource, ...]
    extractor: Extractor = Extractor.DEFAULT
    isolator: IsolatorType = IsolatorType.MIN
    profile: str | None = None
    """A query-output file of the idle machine (the `profile` isolator), or None."""
    idle_window: IdleWindow | None = None
    abs_trainers: tuple[Trainer, ...] = ()
    dyn_trainers: tuple[Trainer, ...] = ()
    feature_groups: tuple[FeatureGroup, ...] = ()
    """Empty: every group the data supports."""
    features: str | None = None
    """A feature-set preset name or file; replaces the feature groups."""
    join_map: tuple[tuple[str, str], ...] = ()
    history_seconds: tuple[int, ...] = ()
    """With `features`: windows (seconds) of the history inputs."""
    max_mae: float | None = None
    max_mape: float | None = None
    max_idle_bias: float | None = None


@dataclass(frozen=True)
class EstimateInvocation:
    """The settings of one `kepler-model estimate` run: from a Prometheus query, or from a query-output file."""

    source: PrometheusQuery | str
    pipeline_name: str
    output: str
    """The folder the estimation writes."""
    files: Files
    energy_source: EnergySource = EnergySource.RAPL_SYSFS
    output_type: OutputType = OutputType.ABS
    feature_group: FeatureGroup | None = None
    """None: the best group available."""
    model_name: str | None = None
    """None: the best (lowest MAE) model."""


def argv_time(value: datetime.datetime) -> str:
    """RFC 3339 in UTC with a Z, with the fraction only when there is one (a window shorter than a second,
    or ending mid-second, keeps its meaning)."""
    utc = value.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if utc.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def _pair(flag: Flag, value: str) -> tuple[str, str]:
    return flag.spelling, value


def _query_args(query: PrometheusQuery) -> Iterator[str]:
    yield from _pair(SERVER, query.server)
    if query.interval_seconds is not None:
        yield from _pair(INTERVAL, str(query.interval_seconds))
    else:
        assert query.start is not None and query.end is not None  # noqa: S101 (__post_init__)
        yield from (*_pair(START_TIME, argv_time(query.start)), *_pair(END_TIME, argv_time(query.end)))
    yield from (*_pair(STEP, str(query.step_seconds)), *_pair(METRIC_PREFIX, query.metric_prefix))
    for name, value in query.label_equals:
        yield from _pair(LABEL_EQUALS, f"{name}={value}")
    if query.bearer_token_file is not None:
        yield from _pair(BEARER_TOKEN_FILE, query.bearer_token_file)
    if query.ca_file is not None:
        yield from _pair(CA_FILE, query.ca_file)
    if query.insecure_skip_tls_verify:
        yield INSECURE_SKIP_TLS_VERIFY.spelling


def _files_args(files: Files) -> Iterator[str]:
    yield from (*_pair(MODEL_PATH, files.model_path), *_pair(DATA_PATH, files.data_path))
    if files.termination_log is not None:
        yield from _pair(TERMINATION_LOG, files.termination_log)


def _optional(flag: Flag, value: object) -> tuple[str, ...]:
    """`flag value`, or nothing when the value is unset (None or empty); floats in their exact `repr`."""
    if value is None or value == "" or value == ():
        return ()
    return _pair(flag, repr(value) if isinstance(value, float) else str(value))


def _names(values: tuple[EnergySource, ...] | tuple[Trainer, ...] | tuple[FeatureGroup, ...]) -> str:
    return ",".join(v.value for v in values)


def _train_args(run: TrainInvocation) -> Iterator[str]:
    yield from _query_args(run.query)
    yield from (*_pair(PIPELINE_NAME, run.pipeline_name), *_pair(ENERGY_SOURCE, _names(run.energy_sources)),
                *_pair(EXTRACTOR, run.extractor.value), *_pair(ISOLATOR, run.isolator.value))
    yield from _optional(PROFILE, run.profile)
    if run.idle_window is not None:
        idle = run.idle_window
        yield from (*_pair(PROFILE_START_TIME, argv_time(idle.start)), *_pair(PROFILE_END_TIME, argv_time(idle.end)),
                    *_pair(PROFILE_STEP, str(idle.step_seconds)))
    yield from (*_optional(ABS_TRAINERS, _names(run.abs_trainers)), *_optional(DYN_TRAINERS, _names(run.dyn_trainers)),
                *_optional(FEATURE_GROUP, _names(run.feature_groups)), *_optional(FEATURES, run.features),
                *_optional(JOIN_MAP, ",".join(f"{k}={v}" for k, v in run.join_map)),
                *_optional(HISTORY, ",".join(str(w) for w in run.history_seconds)),
                *_optional(MAX_MAE, run.max_mae), *_optional(MAX_MAPE, run.max_mape),
                *_optional(MAX_IDLE_BIAS, run.max_idle_bias))
    yield from _files_args(run.files)


def _estimate_args(run: EstimateInvocation) -> Iterator[str]:
    if isinstance(run.source, str):
        yield from _pair(INPUT, run.source)
    else:
        yield from _query_args(run.source)
    yield from (*_pair(PIPELINE_NAME, run.pipeline_name), *_pair(ENERGY_SOURCE, run.energy_source.value),
                *_pair(OUTPUT_TYPE, run.output_type.value),
                *_optional(FEATURE_GROUP, run.feature_group.value if run.feature_group else None),
                *_optional(MODEL_NAME, run.model_name), *_pair(OUTPUT, run.output))
    yield from _files_args(run.files)


def train_argv(run: TrainInvocation) -> list[str]:
    """`kepler-model train ...` for this run (docs/contracts.md)."""
    return [PROGRAM, "train", *_train_args(run)]


def estimate_argv(run: EstimateInvocation) -> list[str]:
    """`kepler-model estimate ...` for this run (docs/contracts.md)."""
    return [PROGRAM, "estimate", *_estimate_args(run)]
