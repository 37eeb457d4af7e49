"""Machine specs: one processor normaliser, one similarity, and the spec shape Kepler decodes.

A spec has five attributes (the node-type index's, docs/contracts.md): `processor` (normalised model
name), `cores` (logical CPUs), `chips` (sockets), `memory` (GiB) and `frequency` (MHz, rounded to 100).
The trainer writes them to `node_type_index.json` and to each model's `machine_spec`; the model server
matches a request's spec against them. Both use this module, so a CPU string names the same node type
on both sides.

Which rules, and why:
* the processor name is normalised as Kepler 0.7.12 does before it sends its spec (`formatProcessor` in
  Kepler's `pkg/config/spec.go`): Kepler is the client whose names must match the index. Its rules:
  drop `(R)`, `(r)`, `CPU`, `Processor`, `processor`, `@`, `®`, `,`, `<n>-Bit Multi-Core`, anything in
  round or square brackets and clock figures (`2.50GHz`); lower case; dashes and blanks to one `_`;
  every `_v` joined (`e5_2686_v4` -> `e5_2686v4`). We also drop `™`, which Kepler keeps but no
  /proc/cpuinfo writes (the kernel spells it `(TM)`, a bracket). Normalising a normalised name changes
  nothing, so the server may normalise what Kepler already did.
* similarity is upstream's loose node-type search (its `model_select` rules): a weighted sum over the
  attributes both sides give (processor 5, cores 1, chips 1, memory 0.5, frequency 0.5) divided by the
  sum of all weights (8), so a spec that gives fewer attributes is less similar, never "equal"; the
  processor scores 1 when equal else half the Jaccard index of the two names' character sets; a number
  `1 - |a - b| / mean(a, b)`, at least 0.

Standard library only: the trainer, the model server and the operator images all install this package.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

ATTRIBUTES = ("processor", "cores", "chips", "memory", "frequency")
"""The node-type attributes, in the index's order."""
WEIGHTS: Mapping[str, float] = {"processor": 5.0, "cores": 1.0, "chips": 1.0, "memory": 0.5, "frequency": 0.5}
"""Upstream's loose-search weights; a similarity is the weighted sum over their total (8)."""

_SPEC_ALIASES = {"memory": ("memory", "memory_gb"), "frequency": ("frequency", "cpu_freq_mhz")}
"""SPECpower data's names for two attributes, read as well."""
_DROPPED_WORDS = ("(R)", "(r)", "CPU", "Processor", "processor", "@", "®", "™", ",")
_BIT_MULTI_CORE = re.compile(r"\d+-Bit Multi-Core")
_BRACKETED = re.compile(r"[(\[].*?[)\]]")
_CLOCK = re.compile(r"\d+(?:\.\d+)?\s?[GMgm][Hh]z")


class SpecError(ValueError):
    """A machine spec attribute that is not what the index can hold (the message names it)."""


def normalise_processor(name: str) -> str:
    """`Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz` -> `intel_xeon_platinum_8259cl`: the name
    Kepler 0.7.12 sends for that CPU (rules in the module docstring)."""
    for word in _DROPPED_WORDS:
        name = name.replace(word, "")
    name = _CLOCK.sub("", _BRACKETED.sub("", _BIT_MULTI_CORE.sub("", name)))
    name = "_".join(name.lower().replace("-", "_").split())
    return name.replace("_v", "v")


def normalise_spec(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A spec with the five attributes (None where unknown), the processor normalised, numbers as int.

    Accepts a bare attribute mapping or an index entry (`{"attrs": ...}`); SpecError on a value that is
    not a number or is negative."""
    attrs = raw.get("attrs", raw) if isinstance(raw, Mapping) else None
    if not isinstance(attrs, Mapping):
        raise SpecError("a machine spec must be a JSON object")
    spec: dict[str, Any] = {}
    for attribute in ATTRIBUTES:
        value = next((attrs[k] for k in _SPEC_ALIASES.get(attribute, (attribute,)) if attrs.get(k) is not None),
                     None)
        if value is None:
            spec[attribute] = None
        elif attribute == "processor":
            spec[attribute] = normalise_processor(str(value)) or None
        else:
            spec[attribute] = _whole_number(attribute, value)
    return spec


def _whole_number(attribute: str, value: Any) -> int:
    try:
        number = round(float(value))
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"machine spec: {attribute} must be a number, not {str(value)[:40]!r}") from None
    if number < 0:
        raise SpecError(f"machine spec: {attribute} must not be negative")
    return number


def go_spec(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The known attributes of a spec, normalised, in the shape Kepler 0.7.12's `config.MachineSpec`
    decodes (a string processor, whole numbers): what models and the model server publish. An invalid
    spec gives an empty one (Kepler would fail to decode it, and a spec is optional)."""
    if not isinstance(raw, Mapping):
        return {}
    try:
        spec = normalise_spec({k: v for k, v in raw.items() if not isinstance(v, bool)})  # JSON true is no count
    except SpecError:
        return {}
    return {k: v for k, v in spec.items() if v is not None}


def complete(spec: Mapping[str, Any]) -> bool:
    """Every attribute known: what indexing a training machine needs."""
    return all(spec.get(a) is not None for a in ATTRIBUTES)


def covers(attrs: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """Every attribute the spec gives equals the entry's (numbers compared as numbers, processors as
    normalised names)."""
    for attribute in ATTRIBUTES:
        wanted = spec.get(attribute)
        if wanted is None:
            continue
        have = attrs.get(attribute)
        if have is None:
            return False
        if attribute == "processor":
            if have != wanted:
                return False
        elif not _same_number(have, wanted):
            return False
    return True


def _same_number(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def similarity(spec: Mapping[str, Any], attrs: Mapping[str, Any]) -> float:
    """0..1: upstream's weighted attribute similarity over the attributes both sides give, divided by
    the total weight; 1 only when all five are given and equal. Symmetric."""
    total = 0.0
    for attribute, weight in WEIGHTS.items():
        a, b = spec.get(attribute), attrs.get(attribute)
        if a is None or b is None:
            continue
        same = processor_similarity(str(a), str(b)) if attribute == "processor" else _closeness(float(a), float(b))
        total += weight * same
    return total / sum(WEIGHTS.values())


def processor_similarity(a: str, b: str) -> float:
    """1 for equal names, else half the Jaccard index of their character sets."""
    if a == b:
        return 1.0
    union = set(a) | set(b)
    return 0.5 * len(set(a) & set(b)) / len(union) if union else 0.0


def _closeness(a: float, b: float) -> float:
    if a == b:
        return 1.0
    mean = (a + b) / 2
    return max(0.0, 1.0 - abs(a - b) / mean) if mean > 0 else 0.0
