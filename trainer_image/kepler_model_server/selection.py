"""Model selection: pure functions from the served models and a request to the chosen model.

Rules (docs/serve.md has the user-facing version):
1. One pipeline per request: `pipeline_name` when given, else the default pipeline for the source
   (`--default-pipeline` when it has the source, else the most recently trained pipeline that has).
2. Eligible models: the asked source and output type; every model feature among the request's
   metrics; the trainer (exact trainer or model name) when asked; weight-capable when `weight`;
   every `filter` condition met.
3. Node type: an explicit `node_type >= 0` keeps exactly that node type (not a substring match);
   else a `machine_spec` keeps the node types whose index attributes equal every given attribute.
   When that leaves nothing and `loose_node_type` holds, the fallback is the node type most similar
   to the spec (upstream's weighted similarity, kepler_contract.machine), or any node type when there is no spec.
4. The winner is the lowest MAE; ties go to the lexically first model path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kepler_contract.machine import covers, similarity

from .catalog import ModelEntry, NodeType, Pipeline
from .errors import InvalidRequest, NoMatchingModel
from .schema import CURVE_TRAINERS, FEATURE_PATTERN, SYSTEM_FEATURES, WEIGHT_TRAINERS

HIGHER_IS_BETTER = frozenset({"abs_max_corr"})
_FILTER_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_FEATURE = re.compile(FEATURE_PATTERN)


@dataclass(frozen=True, slots=True)
class Condition:
    """One `filter` term: a metadata threshold, or (`features`) an allowed feature set."""

    key: str
    threshold: float = math.nan
    allowed: frozenset[str] = frozenset()

    def accepts(self, entry: ModelEntry) -> bool:
        if self.key == "features":
            return entry.features <= self.allowed
        value = entry.metadata.get(self.key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return False
        return value >= self.threshold if self.key in HIGHER_IS_BETTER else value <= self.threshold


@dataclass(frozen=True, slots=True)
class Criteria:
    """What a request asks for, validated and normalized."""

    source: str
    output_type: str
    metrics: frozenset[str] | None = None   # None: no constraint on features
    feature_group: str | None = None
    trainer: str | None = None
    weight: bool = False
    conditions: tuple[Condition, ...] = ()
    node_type: int = -1
    spec: Mapping[str, Any] | None = None
    loose: bool = True
    # Who reads the weights (docs/contracts.md, "Kepler compatibility"): Kepler 0.7.11 (a request without
    # machine_spec) picks its predictor from its configured trainer, not from the answer; an init URL
    # not named after the model gives 0.7.12 no trainer either. Curve fits only go to who can tell.
    trainer_from_answer: bool = True


@dataclass(frozen=True, slots=True)
class Choice:
    """The selected model and how its node type was matched: exact, spec, similar or any."""

    entry: ModelEntry
    node_type_match: str


def parse_filter(text: str) -> tuple[Condition, ...]:
    """`key:value;key:value` -> conditions; InvalidRequest on anything malformed."""
    conditions = []
    for term in filter(None, (t.strip() for t in text.split(";"))):
        key, sep, value = term.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not _FILTER_KEY.match(key) or not value:
            raise InvalidRequest(f"invalid filter term {term[:60]!r}: expected key:value")
        if key == "features":
            names = frozenset(v.strip() for v in value.split(",") if v.strip())
            if not names or not all(_FEATURE.match(n) for n in names):
                raise InvalidRequest("invalid filter: features must be a comma list of feature names")
            conditions.append(Condition(key, allowed=names))
            continue
        try:
            threshold = float(value)
        except ValueError:
            raise InvalidRequest(f"invalid filter term {term[:60]!r}: {key} needs a number") from None
        if not math.isfinite(threshold):
            raise InvalidRequest(f"invalid filter term {term[:60]!r}: the number must be finite")
        conditions.append(Condition(key, threshold))
    return tuple(conditions)


def default_pipeline(pipelines: Iterable[Pipeline], source: str, preferred: str | None = None) -> Pipeline | None:
    """The pipeline answering requests that name none: the preferred one, else the newest with the source."""
    having = [p for p in pipelines if source in p.sources]
    for pipeline in having:
        if pipeline.name == preferred:
            return pipeline
    return max(having, key=lambda p: (p.published_ns, p.name), default=None)


def choose_pipeline(pipelines: Mapping[str, Pipeline], source: str, name: str = "",
                    preferred: str | None = None) -> Pipeline:
    if name:
        if name not in pipelines:
            raise NoMatchingModel(f"pipeline {name!r} is not served")
        return pipelines[name]
    pipeline = default_pipeline(pipelines.values(), source, preferred)
    if pipeline is None:
        raise NoMatchingModel(f"no served pipeline has models for source {source!r}")
    return pipeline


def eligible(models: Iterable[ModelEntry], criteria: Criteria) -> list[ModelEntry]:
    """The models passing rule 2; NoMatchingModel names the first condition that left none."""
    stages = (
        (f"source {criteria.source!r} and output type {criteria.output_type!r}",
         lambda m: m.source == criteria.source and m.output_type == criteria.output_type),
        (f"feature group {criteria.feature_group!r}",
         None if criteria.feature_group is None else lambda m: m.feature_group == criteria.feature_group),
        ("features all among the request's metrics",
         None if criteria.metrics is None else lambda m: m.features <= criteria.metrics),
        (f"trainer {criteria.trainer!r}",
         None if not criteria.trainer else lambda m: criteria.trainer in (m.trainer, m.model_name)),
        ("weights Kepler evaluates as we do (trainers " + ", ".join(sorted(WEIGHT_TRAINERS)) + "; curve fits "
         "over one feature, for a request of that one feature and a Kepler that knows the trainer)",
         None if not criteria.weight else lambda m: kepler_weights_for(m, criteria)),
        ("the zip archive", None if criteria.weight else lambda m: m.zip_rel is not None),
        ("the filter", None if not criteria.conditions else lambda m: all(c.accepts(m) for c in criteria.conditions)),
    )
    remaining = list(models)
    for what, keep in stages:
        if keep is None:
            continue
        remaining = [m for m in remaining if keep(m)]
        if not remaining:
            raise NoMatchingModel(f"no model with {what}")
    return remaining


def kepler_weights_for(entry: ModelEntry, criteria: Criteria) -> bool:
    """Kepler's regressor, asking this, computes the entry's power as we do.

    A curve fit is evaluated on `x[0]`, the first of Kepler's own metrics: right only when the
    request's metrics (Kepler's list plus its system features) hold the model's one feature alone.
    Kepler takes the predictor kind from the answer's model_name (0.7.12) or else from its configured
    trainer, so a curve fit goes to an old-shape request only when that trainer was asked for."""
    if not entry.kepler_weights:
        return False
    if entry.trainer not in CURVE_TRAINERS:
        return True
    if criteria.metrics is not None and criteria.metrics - SYSTEM_FEATURES != entry.features:
        return False
    return criteria.trainer_from_answer or criteria.trainer == entry.trainer


def best(models: Sequence[ModelEntry]) -> ModelEntry:
    return min(models, key=lambda m: (m.mae, m.path))


def select(pipeline: Pipeline, criteria: Criteria) -> Choice:
    """Rules 2-4 on one pipeline."""
    candidates = eligible(pipeline.models, criteria)
    if criteria.node_type >= 0:
        exact = [m for m in candidates if m.node_type == criteria.node_type]
        if exact:
            return Choice(best(exact), "exact")
        missing = f"no eligible model of node type {criteria.node_type}"
    elif criteria.spec:
        wanted = covering_node_types(pipeline.node_types, criteria.spec)
        hits = [m for m in candidates if m.node_type in wanted]
        if hits:
            return Choice(best(hits), "spec")
        missing = "no eligible model of a node type matching the machine spec"
    else:
        return Choice(best(candidates), "any")
    if not criteria.loose:
        raise NoMatchingModel(missing + " (loose_node_type is false)")
    if criteria.spec:
        node_type = most_similar(pipeline.node_types, {m.node_type for m in candidates}, criteria.spec)
        return Choice(best([m for m in candidates if m.node_type == node_type]), "similar")
    return Choice(best(candidates), "any")


def covering_node_types(node_types: Mapping[int, NodeType], spec: Mapping[str, Any]) -> set[int]:
    """Node types whose attributes equal every attribute the spec gives."""
    return {n for n, t in node_types.items() if covers(t.attrs, spec)}


def most_similar(node_types: Mapping[int, NodeType], among: set[int], spec: Mapping[str, Any]) -> int:
    """The node type in `among` most similar to the spec; ties go to more members, then the lower index."""
    def rank(n: int) -> tuple[float, int, int]:
        node = node_types.get(n)
        return (similarity(spec, node.attrs) if node else 0.0, node.members if node else 0, -n)
    return max(among, key=rank)


def best_models(pipeline: Pipeline, source: str, output_types: Sequence[str], feature_group: str | None,
                node_type: int, conditions: tuple[Condition, ...]) -> dict[str, dict[str, str]]:
    """`{output_type: {feature_group: model_name}}`, lowest MAE, strict node type (no fallback)."""
    groups = _groups(pipeline, source, output_types, feature_group, node_type, conditions)
    return {ot: {g: best(ms).model_name for g, ms in sorted(by_group.items())} for ot, by_group in groups.items()}


def best_kepler_weights(pipeline: Pipeline, source: str, output_types: Sequence[str], feature_group: str | None,
                        node_type: int, conditions: tuple[Condition, ...]) -> dict[str, dict[str, str | None]]:
    """`{output_type: {feature_group: model_name or None}}`: the lowest-MAE model of each group that
    Kepler's regressor runs from weights (None: only the estimator sidecar can run this group's models)."""
    groups = _groups(pipeline, source, output_types, feature_group, node_type, conditions)
    answer: dict[str, dict[str, str | None]] = {}
    for output_type, by_group in groups.items():
        answer[output_type] = {}
        for group, ms in sorted(by_group.items()):
            loadable = [m for m in ms if m.kepler_weights]
            answer[output_type][group] = best(loadable).model_name if loadable else None
    return answer


def _groups(pipeline: Pipeline, source: str, output_types: Sequence[str], feature_group: str | None,
            node_type: int, conditions: tuple[Condition, ...]) -> dict[str, dict[str, list[ModelEntry]]]:
    answer: dict[str, dict[str, list[ModelEntry]]] = {}
    for output_type in output_types:
        groups: dict[str, list[ModelEntry]] = {}
        for m in pipeline.models:
            if (m.source == source and m.output_type == output_type
                    and feature_group in (None, m.feature_group)
                    and node_type in (-1, m.node_type)
                    and all(c.accepts(m) for c in conditions)):
                groups.setdefault(m.feature_group, []).append(m)
        answer[output_type] = groups
    return answer
