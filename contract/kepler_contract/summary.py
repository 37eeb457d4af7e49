"""The run summary: the JSON object `kepler-model` writes to its termination log, and the operator reads.

The trainer writes plain JSON (`{"ok": true, "command": "train", ...}`); `parse_summary` reads it back
into these types. Reading is tolerant on purpose: the message comes from a pod and may be truncated or
written by another version, so a field of the wrong type reads as absent instead of failing the
whole summary. Only `ok` is required: without a boolean `ok` the message is not a summary at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _str(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ModelSummary:
    """One published (or chosen) model: where it is, what it predicts, how accurate it is."""

    energy_source: str = ""
    output_type: str = ""
    feature_group: str = ""
    model_name: str = ""
    trainer: str = ""
    mae: float | None = None
    path: str = ""
    kepler_weights: bool | None = None
    """Whether Kepler's own regressor can run this model from its weights file."""
    kepler_weights_model: str | None = None
    """The best model of the same group that Kepler's regressor can load."""
    onnx_model: str | None = None
    """The lowest-MAE model of this energy source and output type with a checked `model.onnx`, as
    <feature group>/<model> (feature-set runs only; empty when none could be exported)."""

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> ModelSummary:
        weights = entry.get("kepler_weights")
        return cls(energy_source=_str(entry.get("energy_source")), output_type=_str(entry.get("output_type")),
                   feature_group=_str(entry.get("feature_group")), model_name=_str(entry.get("model_name")),
                   trainer=_str(entry.get("trainer")), mae=_float(entry.get("mae")), path=_str(entry.get("path")),
                   kepler_weights=weights if isinstance(weights, bool) else None,
                   kepler_weights_model=_optional_str(entry.get("kepler_weights_model")),
                   onnx_model=_optional_str(entry.get("onnx_model")))


@dataclass(frozen=True)
class ComponentSummary:
    """What an estimation found for one node component."""

    energy_joules: float | None = None
    mean_power_watts: float | None = None
    mae: float | None = None

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> ComponentSummary:
        return cls(energy_joules=_float(entry.get("energy_joules")),
                   mean_power_watts=_float(entry.get("mean_power_watts")), mae=_float(entry.get("mae")))


@dataclass(frozen=True)
class ErrorSummary:
    """Why a run failed: the exit code's reason (`kepler_contract.exits`) and a message for the user."""

    reason: str = ""
    message: str = ""
    exit_code: int | None = None

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> ErrorSummary:
        return cls(reason=_str(entry.get("reason")), message=_str(entry.get("message")),
                   exit_code=_int(entry.get("exit_code")))


@dataclass(frozen=True)
class RunSummary:
    """A run's result. `train` fills the pipeline fields, `estimate` the estimation fields, a failure `error`."""

    ok: bool
    command: str = ""
    error: ErrorSummary | None = None
    # train
    path: str | None = None
    archive: str | None = None
    report: str | None = None
    models: int = 0
    best: tuple[ModelSummary, ...] = ()
    # estimate
    result: str | None = None
    model: ModelSummary | None = None
    samples: int | None = None
    components: Mapping[str, ComponentSummary] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RunSummary:
        error, model, best, components = obj.get("error"), obj.get("model"), obj.get("best"), obj.get("components")
        best_list = best if isinstance(best, list) else []
        return cls(
            ok=obj.get("ok") is True, command=_str(obj.get("command")),
            error=ErrorSummary.from_json(error) if isinstance(error, dict) else None,
            path=_optional_str(obj.get("path")), archive=_optional_str(obj.get("archive")),
            report=_optional_str(obj.get("report")), models=_int(obj.get("models")) or 0,
            best=tuple(ModelSummary.from_json(e) for e in best_list if isinstance(e, dict)),
            result=_optional_str(obj.get("result")),
            model=ModelSummary.from_json(model) if isinstance(model, dict) else None,
            samples=_int(obj.get("samples")),
            components={name: ComponentSummary.from_json(c) for name, c in components.items() if isinstance(c, dict)}
            if isinstance(components, dict) else {})


def parse_summary(message: str | None) -> RunSummary | None:
    """The summary in a termination message, or None when the message is not one (empty, not JSON, no `ok`)."""
    if not message:
        return None
    try:
        obj = json.loads(message)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        return None
    return RunSummary.from_json(obj)
