"""The vocabulary: feature groups, energy sources and their components, output types.

Names follow upstream Kepler 0.7 (see docs/contracts.md); they are persisted as names, never as enum
integers, because upstream renumbered its enum between releases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .errors import ConfigError

PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A pipeline name is also a folder name: no separators, no leading dot (hidden = being written)."""
RESERVED_PIPELINE_NAMES = frozenset({"estimations"})
"""Folder names beside the pipelines that are not pipelines: EnergyEstimation results (kept equal to the
operator's `api.RESERVED_PIPELINE_NAMES` by a unit test)."""


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

CONTAINER_PREFIX = "kepler_container_"
NODE_PREFIX = "kepler_node_"

# Feature names as Kepler exports them (`kepler_container_<feature>_total`). The CPU-time feature
# changed unit between Kepler generations; a group names it once and takes whichever the data has.
BPF_CPU_TIME = ("bpf_cpu_time_ms", "bpf_cpu_time_us")
COUNTERS = ("cache_miss", "cpu_cycles", "cpu_instructions")
IRQS = ("bpf_block_irq", "bpf_net_rx_irq", "bpf_net_tx_irq")
PAGE_CACHE = "bpf_page_cache_hit"
KUBELET = ("kubelet_cpu_usage", "kubelet_memory_bytes")
CGROUP = ("cgroupfs_cpu_usage_us", "cgroupfs_memory_usage_bytes", "cgroupfs_system_cpu_usage_us",
          "cgroupfs_user_cpu_usage_us")
_CPU_TIME = "<bpf_cpu_time>"  # placeholder resolved against the data

FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "CounterOnly": COUNTERS,
    "BPFOnly": (_CPU_TIME, PAGE_CACHE),
    "BPFIRQ": (_CPU_TIME, PAGE_CACHE, *IRQS),
    "CounterIRQCombined": (*COUNTERS, *IRQS),
    "Basic": (*COUNTERS, _CPU_TIME, PAGE_CACHE),
    "WorkloadOnly": (*COUNTERS, _CPU_TIME, PAGE_CACHE, *IRQS, "accelerator_intel_qat"),
    "KubeletOnly": KUBELET,   # Kepler before 2024-01
    "CgroupOnly": CGROUP,     # Kepler before 2024-08
}
"""Group -> its features (order is not significant: tables sort them, as upstream does)."""

DEFAULT_FEATURE_GROUPS = ("CounterOnly", "BPFOnly", "BPFIRQ", "CounterIRQCombined", "Basic",
                          "KubeletOnly", "CgroupOnly")


def main_feature(group: str, component: str, features: list[str]) -> str:
    """The single input of curve-fit models: instructions or CPU time, cache activity for DRAM."""
    counters = any(f in features for f in COUNTERS)
    if component == "dram":
        preferred = ["cache_miss", PAGE_CACHE] if counters else [PAGE_CACHE, "cache_miss"]
    else:
        preferred = ["cpu_instructions", *BPF_CPU_TIME] if counters else [*BPF_CPU_TIME, "cpu_instructions"]
    for name in preferred:
        if name in features:
            return name
    return features[0]


def resolve_group(group: str, available: set[str]) -> list[str] | None:
    """The group's features as named in the data (sorted), or None when the data lacks one."""
    try:
        wanted = FEATURE_GROUPS[group]
    except KeyError:
        raise ConfigError(f"unknown feature group {group!r} (known: {', '.join(FEATURE_GROUPS)})") from None
    cpu_time = next((n for n in BPF_CPU_TIME if n in available), BPF_CPU_TIME[0])
    resolved: list[str] = []
    for name in wanted:
        name = cpu_time if name == _CPU_TIME else name
        if name == PAGE_CACHE and name not in available and cpu_time.endswith("_us"):
            continue  # the older (`_us`) generation of Kepler had no page-cache feature
        if name not in available:
            return None
        resolved.append(name)
    return sorted(resolved)


@dataclass(frozen=True)
class EnergySource:
    """A power meter Kepler reads, and the node components it reports."""

    name: str
    components: tuple[str, ...]
    aliases: tuple[str, ...] = ()


ENERGY_SOURCES = {
    s.name: s
    for s in (
        EnergySource("rapl-sysfs", ("package", "core", "uncore", "dram"), ("rapl", "intel_rapl")),
        EnergySource("rapl-msr", ("package", "core", "uncore", "dram")),
        EnergySource("acpi", ("platform",)),
        EnergySource("hmc", ("platform",)),
        EnergySource("redfish", ("platform",)),
        EnergySource("trained_power_model", ("package", "core", "uncore", "dram")),
    )
}


def energy_source(name: str) -> EnergySource:
    """Look a source up by name or alias (`rapl` and `intel_rapl` mean `rapl-sysfs`)."""
    for source in ENERGY_SOURCES.values():
        if name == source.name or name in source.aliases:
            return source
    raise ConfigError(f"unknown energy source {name!r} (known: {', '.join(ENERGY_SOURCES)}, rapl)")


def source_labels(source: EnergySource) -> set[str]:
    """The `source` label values that mean this energy source in Kepler's node power metrics."""
    return {source.name, *source.aliases}


class OutputType(str, Enum):
    """What a model predicts: node power including idle, or the dynamic part only."""

    ABS = "AbsPower"
    DYN = "DynPower"


def output_type(name: str) -> OutputType:
    try:
        return OutputType(name)
    except ValueError:
        raise ConfigError(f"unknown output type {name!r} (known: AbsPower, DynPower)") from None


def power_column(component: str) -> str:
    return f"{component}_power"
