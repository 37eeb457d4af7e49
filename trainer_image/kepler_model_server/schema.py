"""Names and request shapes: the allow-lists every name from a request passes before use.

The pydantic models here are the single source of truth for request validation and for the
OpenAPI document. Names are checked against regular expressions; they are then only used as
dictionary keys into the catalog (never joined into a path).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from kepler_contract.machine import normalise_processor

from .errors import InvalidName, InvalidRequest

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""Pipelines, sources, output types, feature groups, model and trainer names: no `/`, no leading dot."""

FEATURE_PATTERN = r"^[A-Za-z_:][A-Za-z0-9_:]{0,199}$"
"""Feature (metric) names, Prometheus style (third-party metrics are used verbatim)."""

MODEL_NAME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)_(\d{1,9})$")
"""`<Trainer>_<node_type>`, e.g. `SGDRegressorTrainer_0`."""

_NAME_RE = re.compile(NAME_PATTERN)
OUTPUT_TYPES = ("AbsPower", "DynPower")
DEFAULT_SOURCE = "rapl-sysfs"
SOURCE_ALIASES = {"rapl": "rapl-sysfs", "intel_rapl": "rapl-sysfs"}
SYSTEM_FEATURES = frozenset({"cpu_architecture"})
"""Names Kepler 0.7 appends to a request's metrics that are not workload features (regressor.go)."""
CURVE_TRAINERS = frozenset({"LogarithmicRegressionTrainer", "LogisticRegressionTrainer",
                            "ExponentialRegressionTrainer"})
WEIGHT_TRAINERS = frozenset({
    "SGDRegressorTrainer", "LinearRegressionTrainer", "LogarithmicRegressionTrainer",
    "LogisticRegressionTrainer", "ExponentialRegressionTrainer",
})
"""Trainers whose models Kepler's Go estimator can run from a weight file (Kepler 0.7.12's
pkg/model/estimator/local/regressor: linear weights and the curve-fit predictors)."""

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Feature = Annotated[str, StringConstraints(pattern=FEATURE_PATTERN)]


def check_name(value: str, what: str) -> str:
    """`value` if it is an allowed name, else InvalidName (traversal tries like `..` end here)."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidName(f"invalid {what} {value[:80]!r}: allowed are letters, digits, '_', '-', '.'"
                          " (not first), at most 128 characters")
    return value


def canonical_source(value: str) -> str:
    """Request and folder source names mapped as upstream does: empty or any `rapl*` -> rapl-sysfs."""
    if not value or value in SOURCE_ALIASES or (value.startswith("rapl") and value != "rapl-msr"):
        return DEFAULT_SOURCE
    return value


def check_output_type(value: str) -> str:
    if value not in OUTPUT_TYPES:
        raise InvalidRequest(f"unknown output type {value[:40]!r} (known: AbsPower, DynPower)")
    return value


class MachineSpec(BaseModel):
    """The machine a model is asked for; unknown keys (Kepler sends vendor, threads_per_core) are ignored."""

    model_config = ConfigDict(extra="ignore")

    processor: Annotated[str, StringConstraints(max_length=200)] | None = None
    cores: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    chips: Annotated[int, Field(ge=0, le=10_000)] | None = None
    memory: Annotated[float, Field(ge=0, le=1e9)] | None = None
    frequency: Annotated[float, Field(ge=0, le=1e7)] | None = None

    def attrs(self) -> dict[str, Any]:
        """The given attributes, processor normalised (kepler_contract.machine); missing ones left out."""
        values = self.model_dump(exclude_none=True)
        if "processor" in values:
            values["processor"] = normalise_processor(values["processor"])
            if not values["processor"]:
                del values["processor"]
        return values


class ModelRequest(BaseModel):
    """`POST /model` body: the reference's shape, which Kepler's local regressor and estimator send."""

    model_config = ConfigDict(extra="ignore")

    metrics: Annotated[list[Feature], Field(max_length=512)] = Field(
        description="Feature names available on the node; models needing anything else are skipped.")
    output_type: Annotated[str, StringConstraints(max_length=40)] = Field(description="AbsPower or DynPower")
    source: Annotated[str, StringConstraints(max_length=128)] = Field(
        DEFAULT_SOURCE, description="Energy source; `rapl`, `intel_rapl` and empty mean rapl-sysfs")
    node_type: Annotated[int, Field(ge=-1, le=999_999_999)] = Field(
        -1, description="Node type in the pipeline's index; -1: use machine_spec, or any")
    weight: bool = Field(False, description="true: answer the weight JSON instead of the zip")
    trainer_name: Annotated[str, StringConstraints(max_length=128)] = Field(
        "", description="Only models of this trainer (exact trainer or model name); empty: any")
    filter: Annotated[str, StringConstraints(max_length=1024)] = Field(
        "", description="`key:value;...`: metadata thresholds (lower is better, abs_max_corr higher);"
                        " `features:a,b` keeps models whose features are all listed")
    pipeline_name: Annotated[str, StringConstraints(max_length=128)] = Field(
        "", description="Only this pipeline; empty: the default pipeline for the source")
    machine_spec: MachineSpec | None = None
    loose_node_type: bool = Field(True, description="Fall back to other node types when none match")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    error: str = Field(description="reason, e.g. ModelNotFound, InvalidName, BodyTooLarge")
    message: str


def parse_model_request(raw: Any) -> ModelRequest:
    """Validate a decoded JSON body into a ModelRequest; InvalidRequest names the bad fields."""
    if not isinstance(raw, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return ModelRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRequest(describe_validation_error(exc.errors())) from None


def describe_validation_error(errors: Sequence[Mapping[str, Any]]) -> str:
    """One line naming each invalid field (values are not echoed back)."""
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more
