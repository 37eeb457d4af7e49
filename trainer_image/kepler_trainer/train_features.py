"""`kepler-model train --features PRESET_OR_FILE`: training on a PromQL feature set (featuresets.py).

One AbsPower table per energy source of the set's targets (and its DynPower twin through the isolator),
the feature set's name as the feature group, workloads held out by default, every model exported to
ONNX with its manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from . import featuresets, history
from .errors import TooFewSamplesError
from .extract import Extracted
from .features import EnergySource, OutputType
from .isolate import make_isolator
from .pipeline import MIN_ROWS, Published, Table, TrainSettings, train_and_publish


def plan(extracted: Extracted, feature_set: featuresets.FeatureSet, settings: TrainSettings) -> list[Table]:
    features = feature_set.input_names
    tables = []
    for source, zones in feature_set.sources().items():
        if source not in extracted.power:
            continue
        data = extracted.table(sorted(feature_set.features), source, smooth=settings.extractor == "smooth")
        data.insert(2, "node_type", settings.node_type)
        if feature_set.history:
            past = history.columns(data, feature_set.busy_features, feature_set.history.windows,
                                   list(feature_set.history.stats))
            data = pd.concat([data, past], axis=1)
        power = [f"{z}_power" for z in zones]
        absolute = Table(source, feature_set.name, OutputType.ABS, features, power, data,
                         busy=feature_set.busy_features)
        isolator = make_isolator(settings.isolator, settings.profiles.get(source)).fit(data)
        unclipped = all((data[c] >= isolator.idle_.get(c, 0.0)).all() for c in power)
        tables += [absolute, Table(source, feature_set.name, OutputType.DYN, features, power, isolator.transform(data),
                                   idle=dict(isolator.idle_), shift_of=absolute if unclipped else None,
                                   busy=feature_set.busy_features)]
    return tables


def sources(feature_set: featuresets.FeatureSet) -> list[EnergySource]:
    return [EnergySource(name, tuple(zones)) for name, zones in feature_set.sources().items()]


def run(extracted: Extracted, feature_set: featuresets.FeatureSet, settings: TrainSettings, model_path: Path,
        progress: Callable = lambda t: None) -> Published:
    tables = plan(extracted, feature_set, settings)
    if not tables or all(len(t.data) < MIN_ROWS for t in tables):
        most = max((len(t.data) for t in tables), default=0)
        raise TooFewSamplesError(f"feature set {feature_set.name!r}: the largest joined table has {most} rows (need "
                                 f"at least {MIN_ROWS}); check the window and the join "
                                 f"({feature_set.join.feature_label} -> {feature_set.join.target_label})")
    settings.inputs = featuresets.manifest_inputs(feature_set, feature_set.input_names)
    return train_and_publish(tables, settings, model_path, [], progress)
