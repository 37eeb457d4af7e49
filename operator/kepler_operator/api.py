"""The TrainingPipeline and EnergyEstimation resources, as pydantic models.

These classes are the single source of truth: `crdgen` turns them into the CRD schemas in crds/,
and the handlers validate every spec with them before acting. Cross-field rules are written twice
on purpose, next to each other: as CEL (`x-kubernetes-validations`, enforced by the API server) and
as a pydantic validator (enforced at handler entry, for clusters that lack CEL or for bad objects
that slipped in before a rule existed).
"""

from __future__ import annotations

import datetime
import enum
import posixpath
import re
from typing import Annotated, Any, ClassVar

from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from kepler_contract.vocabulary import (  # the vocabulary the trainer accepts (re-exported: the API's names)
    PIPELINE_NAME,
    RESERVED_PIPELINE_NAMES as RESERVED_PIPELINE_NAMES,
    EnergySource as EnergySource,
    Extractor as Extractor,
    FeatureGroup as FeatureGroup,
    FeatureSetPreset as FeatureSetPreset,
    IsolatorType as IsolatorType,
    OutputType as OutputType,
    Trainer as Trainer,
    pipeline_name_problem,
)

GROUP = "modeltraining.kepler.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
RERUN_ANNOTATION = f"{GROUP}/rerun"
"""Set (or change) this annotation to any new value to start one more run of the current spec."""

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SAFE_REL_PATH = r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*)(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"
"""A relative path of plain segments: no leading `/`, no `..`, no hidden segments."""

CEL = "x-kubernetes-validations"


def cel(rule: str, message: str, **extra: str) -> dict[str, Any]:
    """One CEL rule for `x-kubernetes-validations`."""
    return {"rule": rule, "message": message, **extra}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              use_enum_values=True, frozen=True)

    def dump(self) -> dict[str, Any]:
        """The camelCase JSON form, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# ----------------------------------------------------------------------------------------- enums

class Phase(str, enum.Enum):
    """A display summary of the conditions."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ConditionStatus(str, enum.Enum):
    """The three values Kubernetes conventions allow."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class PullPolicy(str, enum.Enum):
    """When the kubelet pulls the trainer image."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


# ----------------------------------------------------------------------------------- spec parts

class SecretKeyRef(_Model):
    """A key of a Secret in the resource's namespace."""

    name: Annotated[str, Field(description="Name of the Secret.", max_length=253, pattern=DNS_SUBDOMAIN)]
    key: Annotated[str, Field(description="Key inside the Secret.", max_length=253,
                              pattern=r"^[-._a-zA-Z0-9]+$")]


class BearerTokenSecret(SecretKeyRef):
    """A Secret key holding a bearer token for Prometheus."""

    key: Annotated[str, Field(description="Key inside the Secret holding the token.", max_length=253,
                              pattern=r"^[-._a-zA-Z0-9]+$")] = "token"


class CASecret(SecretKeyRef):
    """A Secret key holding a PEM CA bundle."""

    key: Annotated[str, Field(description="Key inside the Secret holding the PEM bundle.", max_length=253,
                              pattern=r"^[-._a-zA-Z0-9]+$")] = "ca.crt"


class TLSConfig(_Model):
    """How to verify Prometheus' certificate."""

    model_config = ConfigDict(json_schema_extra={CEL: [
        cel("!(has(self.caSecret) && self.insecureSkipVerify)",
            "caSecret and insecureSkipVerify are mutually exclusive")]})

    ca_secret: Annotated[CASecret | None, Field(
        description="Secret key with the CA bundle that signed Prometheus' certificate.")] = None
    insecure_skip_verify: Annotated[bool, Field(
        description="Do not verify Prometheus' certificate (test setups only).")] = False

    @model_validator(mode="after")
    def _exclusive(self) -> TLSConfig:
        if self.ca_secret is not None and self.insecure_skip_verify:
            raise ValueError("caSecret and insecureSkipVerify are mutually exclusive")
        return self


class PrometheusSource(_Model):
    """The Prometheus server holding Kepler's metrics."""

    url: Annotated[str, Field(description="Base URL of the Prometheus HTTP API, e.g. http://prometheus:9090.",
                              max_length=2048, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")]
    bearer_token_secret: Annotated[BearerTokenSecret | None, Field(
        description="Secret key holding a bearer token sent with every query.")] = None
    tls: Annotated[TLSConfig | None, Field(description="TLS verification settings for https URLs.")] = None


class Window(_Model):
    """The time range of samples to query: the last `intervalSeconds`, or from `start` to `end`."""

    model_config = ConfigDict(json_schema_extra={CEL: [
        cel("has(self.intervalSeconds) != (has(self.start) || has(self.end))",
            "set either intervalSeconds or start and end"),
        cel("has(self.start) == has(self.end)", "start and end go together"),
        cel("!has(self.start) || !has(self.end) || timestamp(self.start) < timestamp(self.end)",
            "start must be before end", fieldPath=".start"),
    ]})

    interval_seconds: Annotated[int | None, Field(
        description="Query the last N seconds before the run starts.", ge=60, le=90 * 86400)] = None
    start: Annotated[datetime.datetime | None, Field(description="Start of a fixed window (RFC 3339, UTC).")] = None
    end: Annotated[datetime.datetime | None, Field(description="End of a fixed window (RFC 3339, UTC).")] = None
    step_seconds: Annotated[int, Field(description="Query resolution in seconds.", ge=1, le=3600)] = 3

    @model_validator(mode="after")
    def _one_window(self) -> Window:
        fixed = self.start is not None or self.end is not None
        if (self.interval_seconds is not None) == fixed:
            raise ValueError("set either intervalSeconds or start and end")
        if fixed and (self.start is None or self.end is None):
            raise ValueError("start and end go together")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("start must be before end")
        return self


LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
LabelName = Annotated[str, Field(min_length=1, max_length=128, pattern=LABEL_NAME)]
LabelValue = Annotated[str, Field(max_length=1024)]
LabelFilters = Annotated[dict[LabelName, LabelValue], Field(
    description="Only series whose labels equal these values (equality, values taken literally), "
                "e.g. {instance: node-1}.", max_length=16,
    json_schema_extra={"maxProperties": 16, "additionalProperties": {"type": "string", "maxLength": 1024}, CEL: [
        cel("self.all(k, k.matches('" + LABEL_NAME + "') && size(k) <= 128)",
            "label names must be Prometheus label names of at most 128 characters")]})]

MetricPrefix = Annotated[str, Field(description="Prefix of Kepler's metric names.", min_length=1, max_length=64,
                                    pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")]


class IdleWindow(_Model):
    """A fixed time range when the machine was idle, queried from the spec's Prometheus."""

    model_config = ConfigDict(json_schema_extra={CEL: [
        cel("timestamp(self.start) < timestamp(self.end)", "start must be before end", fieldPath=".start")]})

    start: Annotated[datetime.datetime, Field(description="Start of the idle window (RFC 3339, UTC).")]
    end: Annotated[datetime.datetime, Field(description="End of the idle window (RFC 3339, UTC).")]
    step_seconds: Annotated[int, Field(description="Query resolution in seconds.", ge=1, le=3600)] = 3

    @model_validator(mode="after")
    def _ordered(self) -> IdleWindow:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class Isolator(_Model):
    """How idle power is isolated from dynamic power before DynPower models are trained."""

    model_config = ConfigDict(json_schema_extra={CEL: [
        cel("self.type != 'profile' || has(self.profile) || has(self.idleWindow)",
            "the profile isolator needs a profile or an idleWindow", fieldPath=".profile"),
        cel("!(has(self.profile) && has(self.idleWindow))", "set profile or idleWindow, not both",
            fieldPath=".idleWindow")]})

    type: Annotated[IsolatorType, Field(description="none, min (minimum power), profile (an idle profile) "
                                                    "or trainer (idle power: the zero-usage intercept of a linear fit "
                                                    "of power over usage on the window itself).")] = IsolatorType.MIN
    profile: Annotated[str | None, Field(
        description="Idle profile for the profile isolator: a query-output JSON file of the idle machine, "
                    "relative to the root of the pipeline's volume (spec.storage).",
        max_length=253, pattern=SAFE_REL_PATH)] = None
    idle_window: Annotated[IdleWindow | None, Field(
        description="Idle profile for the profile isolator: when the machine was idle, queried from "
                    "spec.prometheus with spec.labelFilters.")] = None

    @model_validator(mode="after")
    def _profile_needed(self) -> Isolator:
        if self.type == IsolatorType.PROFILE.value and not self.profile and self.idle_window is None:
            raise ValueError("the profile isolator needs a profile or an idleWindow")
        if self.profile and self.idle_window is not None:
            raise ValueError("set profile or idleWindow, not both")
        return self


class Storage(_Model):
    """The PersistentVolumeClaim where pipelines are published (Kepler's model server reads it)."""

    pvc_name: Annotated[str | None, Field(
        description="Name of the PersistentVolumeClaim; the operator's default PVC when unset.",
        max_length=253, pattern=DNS_LABEL)] = None
    sub_path: Annotated[str, Field(description="Folder inside the volume, relative, without `..`.",
                                   max_length=253, pattern=r"^$|" + SAFE_REL_PATH)] = ""


IMMUTABLE_STORAGE = {CEL: [cel("self == oldSelf", "storage is immutable; create a new resource instead")]}


Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$", max_length=32)]


class Resources(_Model):
    """CPU and memory for the trainer container."""

    requests: Annotated[dict[str, Quantity], Field(
        description="Requested cpu and memory, e.g. {cpu: 500m, memory: 1Gi}.",
        json_schema_extra={CEL: [cel("self.all(k, k in ['cpu', 'memory'])", "only cpu and memory")]})] = {}
    limits: Annotated[dict[str, Quantity], Field(
        description="Limits for cpu and memory.",
        json_schema_extra={CEL: [cel("self.all(k, k in ['cpu', 'memory'])", "only cpu and memory")]})] = {}


class JobSettings(_Model):
    """How the trainer Job runs."""

    image: Annotated[str | None, Field(description="Trainer image; the operator's default when unset.",
                                       max_length=512, pattern=r"^[^\s]+$")] = None
    image_pull_policy: Annotated[PullPolicy | None, Field(description="Pull policy of the trainer image.")] = None
    resources: Annotated[Resources | None, Field(description="Trainer container resources.")] = None
    active_deadline_seconds: Annotated[int, Field(description="Kill a run that lasts longer than this.",
                                                  ge=60, le=7 * 86400)] = 3600
    backoff_limit: Annotated[int, Field(description="Retries of a failed pod (permanent failures never retry).",
                                        ge=0, le=10)] = 1
    ttl_seconds_after_finished: Annotated[int, Field(
        description="Delete a finished Job after this many seconds (its result stays in status).",
        ge=0, le=30 * 86400)] = 86400


class AccuracyGate(_Model):
    """Publish only models whose mean absolute error is under a bound."""

    max_mae: Annotated[float | None, Field(description="Largest MAE in watts a published model may have.",
                                           gt=0, le=1e6)] = None
    max_mape: Annotated[float | None, Field(description="Largest zone MAPE in percent a published model may have.",
                                            gt=0, le=1e6)] = None
    max_idle_bias: Annotated[float | None, Field(
        description="Largest |mean error| in watts on held-out idle rows (feature sets; docs/vm-models.md).",
        gt=0, le=1e6)] = None


JOIN_VALUE = r"^[^,=\s]+$"
JoinValue = Annotated[str, Field(min_length=1, max_length=253, pattern=JOIN_VALUE)]


class FeatureSet(_Model):
    """Train on a PromQL feature set instead of Kepler 0.7's feature groups: a preset, or a file."""

    model_config = ConfigDict(json_schema_extra={CEL: [
        cel("has(self.preset) != has(self.file)", "set exactly one of preset or file")]})

    preset: Annotated[FeatureSetPreset | None, Field(description="A shipped feature set.")] = None
    file: Annotated[str | None, Field(description="A feature-set YAML/JSON file, relative to the volume root.",
                                      max_length=512, pattern=SAFE_REL_PATH)] = None
    join_map: Annotated[dict[JoinValue, JoinValue], Field(
        description="Feature-side label value -> target-side value, e.g. a guest's instance -> its host's vm_id.",
        max_length=256, json_schema_extra={
            "maxProperties": 256,
            "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": JOIN_VALUE},
            # CEL unescapes the pattern once more, so its backslashes are doubled
            CEL: [cel("self.all(k, k.matches('" + JOIN_VALUE.replace("\\", "\\\\") + "') && size(k) <= 253)",
                      "join keys: at most 253 characters, no ',', '=' or white space")]})] = {}

    history_seconds: Annotated[list[Annotated[int, Field(ge=5, le=3600)]] | None, Field(
        description="Windows (seconds) of the history inputs: the mean and the largest busy CPU time over each "
                    "(the trainer's --history, docs/vm-models.md).",
        min_length=1, max_length=4, json_schema_extra={"x-kubernetes-list-type": "set"})] = None

    @model_validator(mode="after")
    def _one_source(self) -> FeatureSet:
        if (self.preset is None) == (self.file is None):
            raise ValueError("set exactly one of preset or file")
        if self.history_seconds and len(set(self.history_seconds)) != len(self.history_seconds):
            raise ValueError("historySeconds: each window at most once")
        return self


def _pipeline_name_free(name: str) -> str:
    if name.lower().endswith(".zip"):
        raise ValueError("a pipeline name may not end in .zip (the archive of pipeline X is X.zip)")
    if name in RESERVED_PIPELINE_NAMES:
        raise ValueError(f"{name!r} is reserved")
    return name


def _pipeline_path_free(path: str) -> str:
    """The trainer publishes pipeline X at <volume>/<sub path>/X: a path whose last folder could not be
    a pipeline name names nothing the trainer would read."""
    problem = pipeline_name_problem(posixpath.basename(path))
    if problem:
        raise ValueError(f"the last folder of a pipeline path is a pipeline name: {problem}")
    return path


PipelineName = Annotated[str, Field(
    description="Name of the published pipeline folder (not ending in .zip, not `estimations`).",
    min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    json_schema_extra={CEL: [
        cel("!self.lowerAscii().endsWith('.zip')",
            "a pipeline name may not end in .zip (the archive of pipeline X is X.zip)"),
        cel("!(self in " + str(sorted(RESERVED_PIPELINE_NAMES)) + ")", "this pipeline name is reserved")]}),
    AfterValidator(_pipeline_name_free)]


_CRON_STEP = r"(/[1-9][0-9]?)?"


def _cron_field(value: str, *, names: bool = False, question: bool = False) -> str:
    """One cron field as a regex: `*`, values and ranges, each with an optional step, comma-separated."""
    atom = rf"({value}|[A-Za-z]{{3}})" if names else f"({value})"
    item = rf"(\*|{atom}(-{atom})?){_CRON_STEP}"
    return rf"({item}(,{item}){{0,31}}{'|[?]' if question else ''})"


CRON_PATTERN = "^(@(hourly|daily|weekly|monthly|yearly|annually))$|^" + " ".join((
    _cron_field("[0-5]?[0-9]"),
    _cron_field("[01]?[0-9]|2[0-3]"),
    _cron_field("0?[1-9]|[12][0-9]|3[01]", question=True),
    _cron_field("0?[1-9]|1[0-2]", names=True),
    _cron_field("[0-7]", names=True, question=True))) + "$"
"""Five fields in their ranges (minute, hour, day of month, month, day of week): admission refuses `61 * * * *`."""


def _cron_fires(expression: str) -> str:
    """A schedule must parse and fire at least once within eight years (`0 0 30 2 *` never does)."""
    if not re.fullmatch(CRON_PATTERN, expression):
        raise ValueError(f"{expression!r} is not a cron expression of 5 fields (minute 0-59, hour 0-23, "
                         "day 1-31, month 1-12, weekday 0-7) or @hourly/@daily/@weekly/@monthly/@yearly")
    if not croniter.is_valid(expression):
        raise ValueError(f"{expression!r} is not a valid cron expression")
    try:
        croniter(expression, datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
                 max_years_between_matches=8).get_next(datetime.datetime)
    except Exception as exc:  # noqa: BLE001 (croniter's errors have no common base worth naming)
        raise ValueError(f"{expression!r} never fires ({exc})") from None
    return expression


Schedule = Annotated[str, Field(
    description="Cron schedule (5 fields, UTC) for retraining; one run per spec change when unset.",
    max_length=128, json_schema_extra={"pattern": CRON_PATTERN}), AfterValidator(_cron_fires)]


# ------------------------------------------------------------------------------------ resources

class OnnxConfigMap(_Model):
    """Where the operator writes the best ONNX model of each successful run (docs/vm-models.md)."""

    name: Annotated[str, Field(description="Name of the ConfigMap, in the TrainingPipeline's namespace; the "
                                           "operator creates it and updates only a ConfigMap it owns.",
                               max_length=253, pattern=DNS_SUBDOMAIN)]


class TrainingPipelineSpec(_Model):
    """What to train, from which data, and where to publish it."""

    model_config = ConfigDict(json_schema_extra={CEL: [
        cel("!(has(self.featureSet) && has(self.featureGroups))", "featureSet replaces featureGroups: set one",
            fieldPath=".featureSet"),
        cel("!has(self.featureSet) || !has(self.labelFilters) || size(self.labelFilters) == 0",
            "labelFilters do not apply to a featureSet (its selectors and join say which series count)",
            fieldPath=".labelFilters"),
        cel("!has(self.onnxConfigMap) || has(self.featureSet)", "onnxConfigMap needs a featureSet (only "
            "feature-set runs export ONNX)", fieldPath=".onnxConfigMap")]})

    prometheus: Annotated[PrometheusSource, Field(description="Where Kepler's metrics are queried.")]
    window: Annotated[Window, Field(description="Time range and step of the training data.")]
    pipeline_name: PipelineName
    metric_prefix: MetricPrefix = "kepler_"
    label_filters: LabelFilters = {}
    energy_sources: Annotated[list[EnergySource], Field(
        description="Energy sources to train for.", min_length=1, max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set"})] = [EnergySource.RAPL_SYSFS, EnergySource.ACPI]
    extractor: Annotated[Extractor, Field(description="Feature extractor.")] = Extractor.DEFAULT
    isolator: Annotated[Isolator, Field(description="Idle-power isolator.")] = Isolator()
    abs_trainers: Annotated[list[Trainer], Field(
        description="Trainers for AbsPower models.", min_length=1, max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "set"})] = [Trainer.LINEAR, Trainer.SGD,
                                                                  Trainer.GRADIENT_BOOSTING]
    dyn_trainers: Annotated[list[Trainer], Field(
        description="Trainers for DynPower models.", min_length=1, max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "set"})] = [Trainer.LINEAR, Trainer.SGD,
                                                                  Trainer.GRADIENT_BOOSTING]
    feature_groups: Annotated[list[FeatureGroup] | None, Field(
        description="Feature groups to train; every group the data supports when unset.", min_length=1,
        max_length=8, json_schema_extra={"x-kubernetes-list-type": "set"})] = None
    feature_set: Annotated[FeatureSet | None, Field(
        description="Train on a PromQL feature set (models for machines that cannot measure power); "
                    "replaces featureGroups.")] = None
    onnx_config_map: Annotated[OnnxConfigMap | None, Field(
        description="Write the best ONNX model of each successful run into this ConfigMap (under 1 MiB), "
                    "fetched from the operator's model server; needs featureSet.")] = None
    accuracy_gate: Annotated[AccuracyGate, Field(description="Publish only accurate enough models.")] = \
        AccuracyGate()
    storage: Annotated[Storage, Field(description="Where pipelines are published. Immutable.",
                                      json_schema_extra=IMMUTABLE_STORAGE)] = Storage()
    job: Annotated[JobSettings, Field(description="Trainer image, resources and Job limits.")] = JobSettings()
    schedule: Schedule | None = None
    suspend: Annotated[bool, Field(description="Start no new runs while true; a running one finishes.")] = False
    history_limit: Annotated[int, Field(description="How many finished runs (Jobs) to keep.", ge=1, le=20)] = 3

    @model_validator(mode="after")
    def _feature_set_or_groups(self) -> TrainingPipelineSpec:
        if self.feature_set is not None and self.feature_groups:
            raise ValueError("featureSet replaces featureGroups: set one")
        if self.feature_set is not None and self.label_filters:
            raise ValueError("labelFilters do not apply to a featureSet "
                             "(its selectors and join say which series count)")
        if self.onnx_config_map is not None and self.feature_set is None:
            raise ValueError("onnxConfigMap needs a featureSet (only feature-set runs export ONNX)")
        return self


class EstimationInput(_Model):
    """The metrics to estimate from: a Prometheus window, or a query-output file on the volume."""

    model_config = ConfigDict(json_schema_extra={CEL: [
        cel("has(self.prometheus) != has(self.file)", "set exactly one of prometheus or file"),
        cel("has(self.prometheus) == has(self.window)", "window goes with prometheus, and only with it",
            fieldPath=".window"),
    ]})

    prometheus: Annotated[PrometheusSource | None, Field(description="Query this Prometheus.")] = None
    window: Annotated[Window | None, Field(description="Time range and step of the input.")] = None
    metric_prefix: MetricPrefix = "kepler_"
    label_filters: LabelFilters = {}
    file: Annotated[str | None, Field(description="A query-output JSON file, relative to the volume root.",
                                      max_length=512, pattern=SAFE_REL_PATH)] = None

    @model_validator(mode="after")
    def _one_input(self) -> EstimationInput:
        if (self.prometheus is None) == (self.file is None):
            raise ValueError("set exactly one of prometheus or file")
        if (self.prometheus is None) != (self.window is None):
            raise ValueError("window goes with prometheus, and only with it")
        return self


class PipelineRef(_Model):
    """A TrainingPipeline in the same namespace."""

    name: Annotated[str, Field(description="Name of the TrainingPipeline.", min_length=1, max_length=253)]


class ModelSelector(_Model):
    """Which published model estimates: a TrainingPipeline's, or a pipeline folder on the volume."""

    model_config = ConfigDict(json_schema_extra={CEL: [
        cel("has(self.pipelineRef) != has(self.pipelinePath)", "set exactly one of pipelineRef or pipelinePath")]})

    pipeline_ref: Annotated[PipelineRef | None, Field(
        description="Use the pipeline this TrainingPipeline published (its volume and folder).")] = None
    pipeline_path: Annotated[str | None, Field(
        description="A pipeline folder relative to the volume root (spec.storage); its last folder is a "
                    "pipeline name.",
        max_length=512, pattern=SAFE_REL_PATH, json_schema_extra={CEL: [
            cel(f"self.matches('(^|/){PIPELINE_NAME.pattern}$')",
                "the last folder of a pipeline path is a pipeline name: letters, digits, '.', '_', '-' "
                "(not first), at most 128"),
            cel("!self.lowerAscii().endsWith('.zip')", "a pipeline path may not end in .zip (that is an archive)"),
            cel(" && ".join(f"self != '{n}' && !self.endsWith('/{n}')" for n in sorted(RESERVED_PIPELINE_NAMES)),
                "the last folder of a pipeline path is reserved")]}),
        AfterValidator(_pipeline_path_free)] = None
    energy_source: Annotated[EnergySource, Field(description="Energy source of the model.")] = \
        EnergySource.RAPL_SYSFS
    output_type: Annotated[OutputType, Field(description="AbsPower or DynPower.")] = OutputType.ABS
    feature_group: Annotated[FeatureGroup | None, Field(
        description="Feature group; the best one available when unset.")] = None
    model_name: Annotated[str | None, Field(description="A model folder name; the best (lowest MAE) when unset.",
                                            max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = None

    @model_validator(mode="after")
    def _one_model(self) -> ModelSelector:
        if (self.pipeline_ref is None) == (self.pipeline_path is None):
            raise ValueError("set exactly one of pipelineRef or pipelinePath")
        return self


class EnergyEstimationSpec(_Model):
    """Estimate per-component energy of a metrics window with a published model."""

    model_config = ConfigDict(json_schema_extra={CEL: [
        cel("!has(self.model.pipelineRef) || !has(self.storage.pvcName)",
            "with model.pipelineRef the pipeline's volume is used: leave storage.pvcName unset",
            fieldPath=".storage.pvcName")]})

    model: Annotated[ModelSelector, Field(description="The model to use.")]
    input: Annotated[EstimationInput, Field(description="The metrics to estimate from.")]
    storage: Annotated[Storage, Field(
        description="The volume holding models, input file and results (with pipelineRef: the pipeline's "
                    "own volume is used and this must be left unset). Immutable.",
        json_schema_extra=IMMUTABLE_STORAGE)] = Storage()
    job: Annotated[JobSettings, Field(description="Estimator image, resources and Job limits.")] = JobSettings()

    @model_validator(mode="after")
    def _one_volume(self) -> EnergyEstimationSpec:
        if self.model.pipeline_ref is not None and self.storage.pvc_name is not None:
            raise ValueError("with model.pipelineRef the pipeline's volume is used: leave storage.pvcName unset")
        return self


# --------------------------------------------------------------------------------------- status

class Condition(_Model):
    """A standard Kubernetes condition."""

    type: Annotated[str, Field(description="Condition type, e.g. Ready.", max_length=316)]
    status: Annotated[ConditionStatus, Field(description="True, False or Unknown.")]
    reason: Annotated[str, Field(description="CamelCase reason for the status.", max_length=1024)]
    message: Annotated[str, Field(description="Human-readable details.", max_length=32768)] = ""
    last_transition_time: Annotated[str, Field(description="When status last changed.",
                                               json_schema_extra={"format": "date-time"})]
    observed_generation: Annotated[int | None, Field(description="Generation this condition was set for.",
                                                     ge=0)] = None


Conditions = Annotated[list[Condition], Field(
    description="Current state as standard conditions.", max_length=16,
    json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})]


class RunRecord(_Model):
    """One run (one Job) of the resource."""

    job_name: Annotated[str, Field(description="Name of the Job.")]
    key: Annotated[str | None, Field(description="Run key: g<generation>[-r<hash>] or s<schedule time>.")] = None
    generation: Annotated[int | None, Field(description="The spec generation the run was started for.")] = None
    trigger: Annotated[str, Field(description="What started it: Created, SpecChanged, Rerun or Schedule.")]
    start_time: Annotated[str | None, Field(description="When the Job was created.",
                                            json_schema_extra={"format": "date-time"})] = None
    completion_time: Annotated[str | None, Field(description="When the Job finished.",
                                                 json_schema_extra={"format": "date-time"})] = None


class BestModel(_Model):
    """The lowest-MAE model of one energy source and output type."""

    energy_source: Annotated[str, Field(description="Energy source.")]
    output_type: Annotated[str, Field(description="AbsPower or DynPower.")]
    feature_group: Annotated[str, Field(description="Feature group.")]
    model_name: Annotated[str, Field(description="Model folder name.")]
    trainer: Annotated[str, Field(description="Trainer that produced it.")]
    mae: Annotated[float | None, Field(description="Mean absolute error in watts on held-out data.")] = None
    path: Annotated[str, Field(description="Model folder, relative to the pipeline folder.")]
    kepler_weights: Annotated[bool | None, Field(
        description="Kepler 0.7's regressor runs this model from its weight file (false: only through the "
                    "estimator sidecar).")] = None
    kepler_weights_model: Annotated[str | None, Field(
        description="The lowest-MAE model of this energy source and output type that Kepler's regressor runs "
                    "from weights, as <feature group>/<model>; empty when none.", max_length=256)] = None
    onnx_model: Annotated[str | None, Field(
        description="The lowest-MAE model of this energy source and output type with a checked model.onnx, as "
                    "<feature group>/<model>; empty when none (feature-set runs only).", max_length=256)] = None


class OnnxConfigMapStatus(_Model):
    """The ConfigMap holding a run's ONNX model."""

    name: Annotated[str, Field(description="Name of the ConfigMap (keys model.onnx and onnx_manifest.json).")]
    job_name: Annotated[str, Field(description="The run (Job) whose model it holds.")]
    model: Annotated[str, Field(description="<energy source>/<output type>/<feature group>/<model>.")]
    sha256: Annotated[str, Field(description="SHA-256 of model.onnx, as its manifest states.")]
    bytes: Annotated[int, Field(description="Size of model.onnx.", ge=0)]


class TrainingPipelineStatus(_Model):
    """What the operator observed."""

    observed_generation: Annotated[int | None, Field(description="The generation the status reflects.")] = None
    phase: Annotated[Phase | None, Field(description="Pending, Running, Succeeded or Failed (display only).")] = None
    conditions: Conditions = []
    last_run: Annotated[RunRecord | None, Field(description="The latest run.")] = None
    best_models: Annotated[list[BestModel], Field(
        description="Best model per energy source and output type of the last successful run.",
        max_length=32)] = []
    model_count: Annotated[int | None, Field(description="Models published by the last successful run.")] = None
    pipeline_path: Annotated[str | None, Field(description="Published pipeline folder on the volume.")] = None
    archive: Annotated[str | None, Field(description="Zip archive of the pipeline on the volume.")] = None
    report_path: Annotated[str | None, Field(description=(
        "The pipeline's report page (report.html: held-out accuracy of every model, with plots) on the volume; "
        "the model server answers it at /pipelines/<name>/report."))] = None
    handled_rerun: Annotated[str | None, Field(description="The last rerun annotation value acted upon.")] = None
    last_schedule_time: Annotated[str | None, Field(description="The last schedule tick that started a run.",
                                                    json_schema_extra={"format": "date-time"})] = None
    onnx_config_map: Annotated[OnnxConfigMapStatus | None, Field(
        description="The ConfigMap the operator wrote the run's ONNX model into (spec.onnxConfigMap); "
                    "condition OnnxConfigMapReady says why when it could not.")] = None


class ComponentEnergy(_Model):
    """Estimated energy of one power component."""

    component: Annotated[str, Field(description="Component, e.g. package, core, dram, platform.")]
    energy_joules: Annotated[float | None, Field(description="Estimated energy over the window in joules.")] = None
    mean_power_watts: Annotated[float | None, Field(description="Mean estimated power in watts.")] = None
    mae: Annotated[float | None, Field(description="MAE against measured power, when the input has it.")] = None


class EstimationSummary(_Model):
    """Totals of the last estimation."""

    samples: Annotated[int | None, Field(description="Samples estimated.")] = None
    components: Annotated[list[ComponentEnergy], Field(description="Per-component results.", max_length=16)] = []


class EnergyEstimationStatus(_Model):
    """What the operator observed."""

    observed_generation: Annotated[int | None, Field(description="The generation the status reflects.")] = None
    phase: Annotated[Phase | None, Field(description="Pending, Running, Succeeded or Failed (display only).")] = None
    conditions: Conditions = []
    last_run: Annotated[RunRecord | None, Field(description="The latest run.")] = None
    model: Annotated[BestModel | None, Field(description="The model that was used.")] = None
    result_path: Annotated[str | None, Field(description="estimation_result.csv on the volume.")] = None
    report_path: Annotated[str | None, Field(description=(
        "The estimation's report page (report.html: power and energy over the window, error against "
        "measured power) on the volume."))] = None
    summary: Annotated[EstimationSummary | None, Field(description="Samples and per-component totals.")] = None
    handled_rerun: Annotated[str | None, Field(description="The last rerun annotation value acted upon.")] = None


class _Resource:
    """What crdgen needs to know about a kind beyond its schema."""

    kind: ClassVar[str]
    plural: ClassVar[str]
    short_names: ClassVar[list[str]]
    spec: ClassVar[type[_Model]]
    status: ClassVar[type[_Model]]
    description: ClassVar[str]
    printer_columns: ClassVar[list[dict[str, Any]]]


READY = '.status.conditions[?(@.type=="Ready")].status'


class TrainingPipeline(_Resource):
    kind = "TrainingPipeline"
    plural = "trainingpipelines"
    short_names = ["tp"]
    spec = TrainingPipelineSpec
    status = TrainingPipelineStatus
    description = ("Trains Kepler power models from Prometheus metrics in a Job, publishes the pipeline "
                   "to a volume, and reports the best models in status.")
    printer_columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Ready", "type": "string", "jsonPath": READY},
        {"name": "Best", "type": "string", "jsonPath": ".status.bestModels[0].modelName"},
        {"name": "MAE", "type": "number", "jsonPath": ".status.bestModels[0].mae"},
        {"name": "Models", "type": "integer", "jsonPath": ".status.modelCount", "priority": 1},
        {"name": "Pipeline", "type": "string", "jsonPath": ".spec.pipelineName", "priority": 1},
        {"name": "Last Run", "type": "string", "jsonPath": ".status.lastRun.jobName", "priority": 1},
        {"name": "Report", "type": "string", "jsonPath": ".status.reportPath", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


class EnergyEstimation(_Resource):
    kind = "EnergyEstimation"
    plural = "energyestimations"
    short_names = ["ee"]
    spec = EnergyEstimationSpec
    status = EnergyEstimationStatus
    description = ("Estimates per-component energy of a metrics window with a published power model, "
                   "in a Job, and reports the totals in status.")
    printer_columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Ready", "type": "string", "jsonPath": READY},
        {"name": "Model", "type": "string", "jsonPath": ".status.model.modelName"},
        {"name": "Samples", "type": "integer", "jsonPath": ".status.summary.samples"},
        {"name": "Result", "type": "string", "jsonPath": ".status.resultPath", "priority": 1},
        {"name": "Report", "type": "string", "jsonPath": ".status.reportPath", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


RESOURCES: tuple[type[_Resource], ...] = (TrainingPipeline, EnergyEstimation)
