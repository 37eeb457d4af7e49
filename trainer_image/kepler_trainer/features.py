"""The features behind each feature group, energy sources and their components, output types.

The names themselves are the contract's (`kepler_contract.vocabulary`, see docs/contracts.md): this
module says what they mean in Kepler's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from kepler_contract.vocabulary import (  # noqa: F401  (re-exported: the trainer's modules import them from here)
    DEFAULT_FEATURE_GROUPS,
    ENERGY_SOURCE_ALIASES,
    ENERGY_SOURCE_COMPONENTS,
    PIPELINE_NAME,
    RESERVED_PIPELINE_NAMES,
    FeatureGroup,
    OutputType,
    pipeline_name_problem,
)

from .errors import ConfigError

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

_GROUP_FEATURES: dict[FeatureGroup, tuple[str, ...]] = {
    FeatureGroup.COUNTER_ONLY: COUNTERS,
    FeatureGroup.BPF_ONLY: (_CPU_TIME, PAGE_CACHE),
    FeatureGroup.BPF_IRQ: (_CPU_TIME, PAGE_CACHE, *IRQS),
    FeatureGroup.COUNTER_IRQ_COMBINED: (*COUNTERS, *IRQS),
    FeatureGroup.BASIC: (*COUNTERS, _CPU_TIME, PAGE_CACHE),
    FeatureGroup.WORKLOAD_ONLY: (*COUNTERS, _CPU_TIME, PAGE_CACHE, *IRQS, "accelerator_intel_qat"),
    FeatureGroup.KUBELET_ONLY: KUBELET,   # Kepler before 2024-01
    FeatureGroup.CGROUP_ONLY: CGROUP,     # Kepler before 2024-08
}
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {group.value: _GROUP_FEATURES[group] for group in FeatureGroup}
"""Group -> its features, in the contract's order (a group the contract adds fails here, at import;
order within a group is not significant: tables sort them, as upstream does)."""


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
    name: EnergySource(name, components,
                       tuple(alias for alias, target in ENERGY_SOURCE_ALIASES.items() if target == name))
    for name, components in ENERGY_SOURCE_COMPONENTS.items()
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


def output_type(name: str) -> OutputType:
    try:
        return OutputType(name)
    except ValueError:
        raise ConfigError(f"unknown output type {name!r} (known: AbsPower, DynPower)") from None


def power_column(component: str) -> str:
    return f"{component}_power"
