"""Feature and target sets defined by PromQL: models for machines that cannot measure their own power.

A feature set names its model inputs as `name: PromQL series selector` and its targets as one selector
per power zone; a join says which feature series and which target series describe the same machine.
Every query is a plain series selector (`metric{label="value",...}`), so the same set reads a live
Prometheus (one range query per entry) and an existing query dump (the selector is matched against the
dump's series): rates, sums and counter resets are computed here, as `extract` does for Kepler 0.7.

Two presets ship (docs/vm-models.md): `kepler-vm` (a guest's node-exporter against the power the host's
Kepler >= 0.10 attributes to that VM) and `node-exporter` (a measuring node's node-exporter against its
own Kepler >= 0.10 zone power), for machines of the same type that cannot measure.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import history
from .data import QueryResult, Series
from .errors import ConfigError, InputError, NoPowerMetricsError
from .extract import KEYS, Extracted, counter_rates
from .selectors import matches as _matches, parse_selector

MAX_FILE_BYTES = 256 * 1024
_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$"
ZONES = ("package", "core", "uncore", "dram", "platform")
class Entry(BaseModel):
    """One query: a feature's input or a zone's target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: str = Field(description="PromQL series selector; every matching series counts (summed per machine)")
    kind: Literal["counter", "gauge"] = Field("counter", description="counter: per-second rate over the step")
    unit: str = Field(description="unit after the rate and scale, e.g. 'cores' or 'W'")
    scale: float = Field(1.0, gt=0, description="multiplier applied after the rate (e.g. bytes -> GiB)")

    @field_validator("query")
    @classmethod
    def _selector(cls, value: str) -> str:
        parse_selector(value)
        return value.strip()

    @property
    def metric(self) -> str:
        return parse_selector(self.query)[0]


class Feature(Entry):
    cpu_busy: bool = Field(False, description="part of the busy CPU time that defines idle rows")


class Target(Entry):
    source: str = Field("rapl-sysfs", pattern=_NAME.replace("_]{0,63}", "_-]{0,63}"),
                        description="energy source folder of the published models (zones of one source "
                                    "train together)")


class Join(BaseModel):
    """How feature series and target series are matched to one machine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature_label: str = Field("instance", pattern=_NAME)
    target_label: str = Field("instance", pattern=_NAME)
    mapping: dict[str, str] = Field(default_factory=dict, description="feature label value -> target label "
                                    "value; unmapped values must be equal")
    ignore_port: bool = Field(False, description="compare values without a trailing ':port' (host:9100 is "
                              "host:28282)")

    def feature_key(self, labels) -> str:
        value = labels.get(self.feature_label, "")
        return self._strip(self.mapping.get(value, value))

    def target_key(self, labels) -> str:
        return self._strip(labels.get(self.target_label, ""))

    def _strip(self, value: str) -> str:
        return re.sub(r":\d+$", "", value) if self.ignore_port else value


class History(BaseModel):
    """Inputs from the machine's own recent past (history.py): trailing-window statistics of its busy CPU
    time (the sum of the `cpu_busy` features) over the last `windows` seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    windows: list[int] = Field(min_length=1, max_length=4, description="window lengths in seconds (5-3600)")
    stats: list[Literal["mean", "max"]] = Field(default=["mean", "max"], min_length=1, max_length=2)

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or not all(5 <= w <= 3600 for w in value):
            raise ValueError("windows: distinct lengths between 5 and 3600 seconds")
        return value

    @field_validator("stats")
    @classmethod
    def _stats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("stats: each at most once")
        return value

    @property
    def inputs(self) -> list[str]:
        return history.input_names(self.windows, list(self.stats))


class FeatureSet(BaseModel):
    """A named set of PromQL features, per-zone PromQL targets and the join between them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                      description="also the feature-group folder of the published models")
    description: str = ""
    features: dict[str, Feature] = Field(min_length=1, max_length=64)
    targets: dict[str, Target] = Field(min_length=1, max_length=len(ZONES))
    join: Join = Field(default_factory=Join)
    history: History | None = Field(None, description="add trailing-window inputs of the busy CPU time")

    @field_validator("features")
    @classmethod
    def _feature_names(cls, value: dict) -> dict:
        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"feature name {name!r}: letters, digits and '_' (not first), at most 64")
        return value

    @field_validator("targets")
    @classmethod
    def _zones(cls, value: dict) -> dict:
        for zone in value:
            if zone not in ZONES:
                raise ValueError(f"target zone {zone!r}: one of {', '.join(ZONES)}")
        return value

    @model_validator(mode="after")
    def _busy(self) -> FeatureSet:
        if not self.busy_features:
            raise ValueError("no feature has cpu_busy: true (idle rows, hence the idle bias, are defined by it)")
        clash = sorted(set(self.history.inputs) & set(self.features)) if self.history else []
        if clash:
            raise ValueError(f"feature name {clash[0]!r} is taken by a history input")
        return self

    @property
    def input_names(self) -> list[str]:
        """The model's inputs in order: the features alphabetically, then the history inputs."""
        return sorted(self.features) + (self.history.inputs if self.history else [])

    @property
    def busy_features(self) -> list[str]:
        return sorted(n for n, f in self.features.items() if f.cpu_busy)

    def sources(self) -> dict[str, list[str]]:
        """Energy source -> its zones, in ZONES order."""
        out: dict[str, list[str]] = {}
        for zone in ZONES:
            if zone in self.targets:
                out.setdefault(self.targets[zone].source, []).append(zone)
        return out

    def metric_names(self) -> list[str]:
        return sorted({e.metric for e in (*self.features.values(), *self.targets.values())})


# -- presets ---------------------------------------------------------------------------------------

# node-exporter's CPU modes that are work done on the machine's behalf. `idle` is left out on purpose:
# idle seconds grow with the number of vCPUs at rest, the one input that would tie a model to a VM size.
# `steal` is time the hypervisor gave to others: not this guest's work, also left out.
BUSY_MODES = ("user", "nice", "system", "iowait", "irq", "softirq")


def _guest_features() -> dict[str, Feature]:
    features = {f"cpu_{mode}": Feature(query=f'node_cpu_seconds_total{{mode="{mode}"}}', unit="cores",
                                       cpu_busy=mode != "iowait")
                for mode in BUSY_MODES}
    features["context_switches"] = Feature(query="node_context_switches_total", unit="1/s")
    features["interrupts"] = Feature(query="node_intr_total", unit="1/s")
    features["memory_active"] = Feature(query="node_memory_Active_bytes", kind="gauge", unit="GiB",
                                        scale=1 / 2**30)
    return features


def _zones(metric: str, zones=("package", "core", "uncore", "dram")) -> dict[str, Target]:
    return {z: Target(query=f'{metric}{{zone="{z}"}}', unit="W") for z in zones}


PRESETS: dict[str, FeatureSet] = {p.name: p for p in (
    FeatureSet(
        name="kepler-vm",
        description="a guest's node-exporter against the power its host's Kepler (>= 0.10) attributes to it",
        features=_guest_features(),
        targets=_zones("kepler_vm_cpu_joules_total"),
        join=Join(feature_label="instance", target_label="vm_id"),
    ),
    FeatureSet(
        name="node-exporter",
        description="a measuring node's node-exporter against its Kepler (>= 0.10) zone power",
        features=_guest_features(),
        targets={**_zones("kepler_node_cpu_joules_total"),
                 "platform": Target(query="kepler_platform_watts", kind="gauge", unit="W", source="platform")},
        join=Join(feature_label="instance", target_label="instance", ignore_port=True),
    ),
)}


def load(name_or_path: str, mapping: dict[str, str] | None = None) -> FeatureSet:
    """A preset by name, or a YAML/JSON feature-set file; `mapping` adds join pairs (guest -> host)."""
    feature_set = PRESETS[name_or_path] if name_or_path in PRESETS else _from_file(Path(name_or_path))
    if mapping:
        join = feature_set.join.model_copy(update={"mapping": {**feature_set.join.mapping, **mapping}})
        feature_set = feature_set.model_copy(update={"join": join})
    return feature_set


def with_history(feature_set: FeatureSet, windows: str) -> FeatureSet:
    """The set with history inputs over these windows (`15,60,180`: seconds; `--history` on the command line)."""
    try:
        seconds = [int(w) for w in windows.split(",") if w.strip()]
    except ValueError:
        raise ConfigError(f"--history {windows!r}: window lengths in whole seconds, e.g. 15,60,180") from None
    return parse({**feature_set.model_dump(), "history": {"windows": seconds}}, f"feature set {feature_set.name}")


def _read_regular(path: Path) -> str:
    """The file's text, if it is a regular file (not followed through a symlink, not a FIFO) of at most
    MAX_FILE_BYTES: on the operator's volume, a feature-set path is not trusted to point where it says."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise ConfigError(f"unknown feature set {str(path)!r}: not a preset ({', '.join(PRESETS)}) nor a "
                          "regular file (symlinks are not followed)") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"feature set {path}: not a regular file")
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"feature set {path}: larger than {MAX_FILE_BYTES // 1024} KiB")
    return data.decode(errors="replace")


def _from_file(path: Path) -> FeatureSet:
    text = _read_regular(path)
    try:
        if path.suffix == ".json":
            document = json.loads(text)
        else:
            import yaml

            document = yaml.safe_load(text)
    except Exception as exc:  # any parse error of a user's file is their mistake, said once
        raise InputError(f"feature set {path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                         f"{str(exc).splitlines()[0][:200]}") from None
    return parse(document, str(path))


def parse(document: object, where: str = "feature set") -> FeatureSet:
    try:
        return FeatureSet.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise ConfigError(f"{where}: {location}: {first['msg']} ({exc.error_count()} problem(s))") from None


def parse_mapping(text: str) -> dict[str, str]:
    """`guest=host,guest2=host2` (the join's mapping on the command line)."""
    pairs = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"bad --join-map item {item!r}: expected FEATURE_VALUE=TARGET_VALUE")
        pairs[key] = value
    return pairs


# -- from series to tables -------------------------------------------------------------------------

def select(result: QueryResult, entry: Entry) -> list[Series]:
    """The series of a query dump that the entry's selector matches."""
    name, matchers = parse_selector(entry.query)
    return [s for s in result.get(name) if _matches(s.labels, matchers)]


def _per_machine(series: list[Series], entry: Entry, key) -> pd.DataFrame | None:
    """Rates (counters) or values (gauges) of every series, scaled and summed per machine and time."""
    frames = []
    for s in series:
        ts, values = counter_rates(s) if entry.kind == "counter" else (s.timestamps, s.values)
        ok = np.isfinite(values)
        if ok.any():
            frames.append(pd.DataFrame({"instance": key(s.labels), "timestamp": ts[ok],
                                        "value": values[ok] * entry.scale, "n": 1}))
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True).groupby(KEYS, as_index=False)[["value", "n"]].sum()


def extract(result: QueryResult, feature_set: FeatureSet) -> Extracted:
    """Per-machine features and per-source zone power from a query dump or the entries' own answers."""
    features: dict[str, pd.DataFrame] = {}
    for name, entry in feature_set.features.items():
        frame = _per_machine(select(result, entry), entry, feature_set.join.feature_key)
        if frame is not None:
            features[name] = frame.rename(columns={"value": name, "n": f"__n_{name}"})
    missing = sorted(set(feature_set.features) - set(features))
    if missing:
        raise InputError(f"feature set {feature_set.name!r}: no samples for {', '.join(missing)} (queries: "
                         + "; ".join(feature_set.features[m].query for m in missing[:3]) + ")")
    power = {}
    for source, zones in feature_set.sources().items():
        table = _zone_power(result, feature_set, zones)
        if table is not None:
            power[source] = table
    if not power:
        raise NoPowerMetricsError(f"feature set {feature_set.name!r}: no target series ("
                                  + "; ".join(t.query for t in feature_set.targets.values()) + ")")
    return Extracted(features, power)


def _zone_power(result: QueryResult, feature_set: FeatureSet, zones: list[str]) -> pd.DataFrame | None:
    """`<zone>_power` columns of one source, rows where every series of every zone was seen."""
    table = None
    for zone in zones:
        entry = feature_set.targets[zone]
        frame = _per_machine(select(result, entry), entry, feature_set.join.target_key)
        if frame is None:
            return None
        # a series missing at a timestamp would under-count the machine: keep full rows only
        frame = frame[frame["n"] == frame.groupby("instance")["n"].transform("max")]
        frame = frame.rename(columns={"value": f"{zone}_power"}).drop(columns="n")
        table = frame if table is None else table.merge(frame, on=KEYS, how="inner")
    return table.reset_index(drop=True)


def fetch(settings, feature_set: FeatureSet) -> QueryResult:
    """Every entry's selector over the window from Prometheus (`prom.PromSettings`), as a query dump."""
    from . import prom

    queries = {e.query for e in (*feature_set.features.values(), *feature_set.targets.values())}
    answers = prom.fetch_queries(settings, sorted(queries))
    result = QueryResult()
    for query, series_list in answers.items():
        name = parse_selector(query)[0]
        result.metrics.setdefault(name, []).extend(series_list)
    for name, series_list in result.metrics.items():  # two selectors may both match a series
        unique = {tuple(sorted(s.labels.items())): s for s in series_list}
        result.metrics[name] = list(unique.values())
    return result


def manifest_inputs(feature_set: FeatureSet, features: list[str]) -> list[dict]:
    """The model's inputs in order, each with its PromQL, how it becomes a number, and its unit; a history
    input says which inputs it sums, over how many seconds and with which statistic."""
    out = []
    for name in features:
        if name not in feature_set.features:
            out.append(_history_input(feature_set, name))
            continue
        f = feature_set.features[name]
        out.append({"name": name, "promql": f.query, "kind": f.kind, "unit": f.unit, "scale": f.scale,
                    "transform": (f"sum by ({feature_set.join.feature_label}) (rate({f.query}[step]))"
                                  if f.kind == "counter" else
                                  f"sum by ({feature_set.join.feature_label}) ({f.query})")
                    + (f" * {f.scale:g}" if f.scale != 1 else "")})
    return out


def _history_input(feature_set: FeatureSet, name: str) -> dict:
    assert feature_set.history is not None and name in feature_set.history.inputs, name
    busy = feature_set.busy_features
    stat, seconds = next((s, w) for w in feature_set.history.windows for s in feature_set.history.stats
                         if history.input_name(s, w) == name)
    function = {"mean": "avg_over_time", "max": "max_over_time"}[stat]
    return {"name": name, "kind": "history", "unit": feature_set.features[busy[0]].unit,
            "history": {"of": busy, "stat": stat, "window_seconds": seconds},
            "transform": f"{function}(({' + '.join(busy)})[{seconds}s]) over this machine's samples of this run "
                         "(the current one included)"}
