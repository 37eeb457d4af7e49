"""The names the trainer accepts and the operator's resources use.

Names follow upstream Kepler 0.7 (docs/contracts.md); they are persisted as names, never as enum
integers, because upstream renumbered its enum between releases. The enums' docstrings are the
descriptions `kubectl explain` shows for the CRD fields that use them.
"""

from __future__ import annotations

import enum
import re

from . import layout


class FeatureGroup(str, enum.Enum):
    """A set of Kepler workload metrics used as model inputs (the trainer's groups)."""

    COUNTER_ONLY = "CounterOnly"
    BPF_ONLY = "BPFOnly"
    BPF_IRQ = "BPFIRQ"
    COUNTER_IRQ_COMBINED = "CounterIRQCombined"
    BASIC = "Basic"
    WORKLOAD_ONLY = "WorkloadOnly"
    KUBELET_ONLY = "KubeletOnly"
    CGROUP_ONLY = "CgroupOnly"


DEFAULT_FEATURE_GROUPS = tuple(g.value for g in FeatureGroup if g is not FeatureGroup.WORKLOAD_ONLY)
"""What `train` tries when no group is named (WorkloadOnly needs an accelerator metric few nodes have)."""


class Trainer(str, enum.Enum):
    """A regressor family the trainer image knows."""

    POLYNOMIAL = "PolynomialRegressionTrainer"
    GRADIENT_BOOSTING = "GradientBoostingRegressorTrainer"
    KNEIGHBORS = "KNeighborsRegressorTrainer"
    LINEAR = "LinearRegressionTrainer"
    SVR = "SVRRegressorTrainer"
    XGBOOST = "XgboostFitTrainer"
    SGD = "SGDRegressorTrainer"
    LOGARITHMIC = "LogarithmicRegressionTrainer"
    LOGISTIC = "LogisticRegressionTrainer"
    EXPONENTIAL = "ExponentialRegressionTrainer"
    HIST_GRADIENT_BOOSTING = "HistGradientBoostingTrainer"
    MONOTONIC_HIST_GRADIENT_BOOSTING = "MonotonicHistGradientBoostingTrainer"
    EXTRA_TREES = "ExtraTreesTrainer"


class Extractor(str, enum.Enum):
    """How features are extracted from the raw series."""

    DEFAULT = "default"
    SMOOTH = "smooth"


class IsolatorType(str, enum.Enum):
    """How idle power is separated from dynamic power."""

    NONE = "none"
    MIN = "min"
    PROFILE = "profile"
    TRAINER = "trainer"


class OutputType(str, enum.Enum):
    """Absolute node power, or the dynamic part above idle."""

    ABS = "AbsPower"
    DYN = "DynPower"


class EnergySource(str, enum.Enum):
    """Where node power is measured."""

    RAPL_SYSFS = "rapl-sysfs"
    ACPI = "acpi"


class FeatureSetPreset(str, enum.Enum):
    """The trainer's PromQL feature-set presets (docs/vm-models.md)."""

    KEPLER_VM = "kepler-vm"
    NODE_EXPORTER = "node-exporter"


ENERGY_SOURCE_COMPONENTS: dict[str, tuple[str, ...]] = {
    "rapl-sysfs": ("package", "core", "uncore", "dram"),
    "rapl-msr": ("package", "core", "uncore", "dram"),
    "acpi": ("platform",),
    "hmc": ("platform",),
    "redfish": ("platform",),
    "trained_power_model": ("package", "core", "uncore", "dram"),
}
"""A power meter Kepler reads -> the node components it reports. `EnergySource` names the ones a
TrainingPipeline or EnergyEstimation may choose; the trainer also reads the others from query outputs."""
ENERGY_SOURCE_ALIASES: dict[str, str] = {"rapl": "rapl-sysfs", "intel_rapl": "rapl-sysfs"}

ISOLATORS = tuple(i.value for i in IsolatorType)
EXTRACTORS = tuple(e.value for e in Extractor)
OUTPUT_TYPES = tuple(o.value for o in OutputType)
SPLITS = ("random", "time", "workload")
"""How `train` holds out its test rows (see `kepler-model train --help`)."""
TUNINGS = ("blocked", "random", "off")
"""How trainers with candidate settings pick one by cross-validation."""

PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A pipeline name is also a folder name: no separators, no leading dot (hidden = being written)."""
RESERVED_PIPELINE_NAMES = frozenset({layout.ESTIMATIONS})
"""Folder names beside the pipelines that are not pipelines: `estimations/` holds EnergyEstimation results."""


def pipeline_name_problem(name: str) -> str | None:
    """Why `name` cannot name a published pipeline, or None. The archive of pipeline X is X.zip, so a
    pipeline named X.zip would overwrite another pipeline's archive."""
    if not PIPELINE_NAME.fullmatch(name):
        return "letters, digits, '.', '_', '-' (not first), at most 128"
    if name.lower().endswith(".zip"):
        return "it may not end in .zip (the archive of pipeline X is X.zip)"
    if name in RESERVED_PIPELINE_NAMES:
        return "it is reserved"
    return None
