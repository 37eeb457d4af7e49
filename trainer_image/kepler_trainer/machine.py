"""Machine specs and node types: what a training machine was, and which known type a machine is closest to.

A spec has five attributes (upstream kepler-model-server's `NodeAttribute`): `processor` (normalised
model name), `cores` (logical CPUs), `chips` (sockets), `memory` (GiB) and `frequency` (MHz, rounded to
100). A pipeline's `node_type_index.json` maps a node type number to `{"attrs": spec, "members": [machine ids]}`;
`index_machine` adds a training machine to it, `closest_node_type` picks the entry a serving machine
resembles most. Pure functions, except `discover`, which reads this machine's /proc and /sys.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

ATTRIBUTES = ("processor", "cores", "chips", "memory", "frequency")
NUMERIC = ATTRIBUTES[1:]
WEIGHTS = {"processor": 5.0, "cores": 1.0, "chips": 1.0, "memory": 0.5, "frequency": 0.5}

_TRADEMARKS = re.compile(r"\(r\)|\(tm\)|®|™", re.IGNORECASE)
_AFTER_BRACKET = re.compile(r"[(\[@].*$")
_NOISE = re.compile(r"\b(?:cpu|processor|\d+-bit multi-core)\b|,|\b\d+(?:\.\d+)?\s*[gm]hz\b", re.IGNORECASE)


def normalise_processor(name: str) -> str:
    """`Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz` -> `intel_xeon_platinum_8259cl`, as upstream
    names processors: trademarks, the clock, bracketed text and filler words dropped; lower case;
    spaces and dashes to `_`; a version suffix joined (`E5-2686 v4` -> `e5_2686v4`)."""
    text = _TRADEMARKS.sub(" ", name)
    text = _AFTER_BRACKET.sub("", text)
    text = _NOISE.sub(" ", text)
    text = "_".join(text.lower().replace("-", " ").split())
    return re.sub(r"_v(\d)", r"v\1", text)


def normalise_spec(raw: dict) -> dict:
    """A spec with the five attributes (None where unknown), the processor normalised, numbers as int.

    Accepts a bare attribute dict or an index entry (`{"attrs": ...}`); `memory_gb`/`cpu_freq_mhz` (the
    SPECpower data's names) are read too."""
    attrs = raw.get("attrs", raw) if isinstance(raw, dict) else None
    if not isinstance(attrs, dict):
        raise InputError("a machine spec must be a JSON object")
    aliases = {"memory": ("memory", "memory_gb"), "frequency": ("frequency", "cpu_freq_mhz")}
    spec: dict = {}
    for attribute in ATTRIBUTES:
        value = next((attrs[k] for k in aliases.get(attribute, (attribute,)) if attrs.get(k) is not None), None)
        if value is None:
            spec[attribute] = None
        elif attribute == "processor":
            spec[attribute] = normalise_processor(str(value)) or None
        else:
            try:
                spec[attribute] = round(float(value))
            except (TypeError, ValueError):
                raise InputError(f"machine spec: {attribute} must be a number, not {value!r}") from None
            if spec[attribute] < 0:
                raise InputError(f"machine spec: {attribute} must not be negative")
    return spec


def go_spec(raw: dict) -> dict:
    """The known attributes of a spec, normalised, in the shape Kepler 0.7.12's `config.MachineSpec`
    decodes (a string processor, whole numbers): what models and the model server publish. An invalid
    spec gives an empty one."""
    try:
        spec = normalise_spec({k: v for k, v in raw.items() if not isinstance(v, bool)})  # JSON true is no count
    except (InputError, AttributeError):
        return {}
    return {k: v for k, v in spec.items() if v is not None}


def complete(spec: dict) -> bool:
    return all(spec.get(a) is not None for a in ATTRIBUTES)


def covers(attrs: dict, spec: dict) -> bool:
    """Every attribute the spec gives equals the entry's (numbers compared as numbers)."""
    for attribute in ATTRIBUTES:
        wanted = spec.get(attribute)
        if wanted is None:
            continue
        have = attrs.get(attribute)
        if attribute == "processor":
            if have != wanted:
                return False
        elif have is None or float(have) != float(wanted):
            return False
    return True


def index_machine(index: dict, spec: dict, member: str) -> tuple[dict, int]:
    """The index with the machine added, and its node type: the entry that covers its complete spec
    if one exists, else a new entry numbered one above the highest. The input index is not changed."""
    spec = normalise_spec(spec)
    if not complete(spec):
        missing = [a for a in ATTRIBUTES if spec[a] is None]
        raise InputError(f"machine spec lacks {', '.join(missing)}: a node type needs all of {', '.join(ATTRIBUTES)}")
    updated = {k: {"attrs": dict(v["attrs"]), "members": list(v.get("members", []))} for k, v in index.items()}
    for key, entry in sorted(updated.items(), key=lambda kv: int(kv[0])):
        if covers(entry["attrs"], spec):
            if member not in entry["members"]:
                entry["members"].append(member)
            return updated, int(key)
    node_type = max((int(k) for k in updated), default=-1) + 1
    updated[str(node_type)] = {"attrs": spec, "members": [member]}
    return updated, node_type


def _processor_similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    left, right = set(a), set(b)
    return 0.5 * len(left & right) / len(left | right) if left | right else 0.0


def _number_similarity(a: float, b: float) -> float:
    mean = (a + b) / 2.0
    if mean == 0:
        return 1.0
    return max(0.0, 1.0 - abs(a - b) / mean)


def similarity(attrs: dict, spec: dict) -> float:
    """0..1: upstream's weighted attribute similarity (processor 5, cores 1, chips 1, memory 0.5,
    frequency 0.5), over the attributes both sides know; 0 when they share none."""
    total = weight = 0.0
    for attribute, w in WEIGHTS.items():
        a, b = attrs.get(attribute), spec.get(attribute)
        if a is None or b is None:
            continue
        score = _processor_similarity(a, b) if attribute == "processor" else _number_similarity(float(a), float(b))
        total += w * score
        weight += w
    return total / weight if weight else 0.0


@dataclass(frozen=True)
class Match:
    """The chosen node type, how alike it is (1 = every known attribute equal), and why."""

    node_type: int
    similarity: float
    exact: bool
    known_attributes: int

    @property
    def looseness(self) -> float:
        return 1.0 - self.similarity


NO_MATCH = Match(-1, 0.0, False, 0)


def closest_node_type(index: dict, spec: dict) -> Match:
    """The index entry most like `spec`: one that covers it exactly if any (most members first), else
    the most similar (ties: more members, then the lower number). `NO_MATCH` for an empty index or a
    spec sharing no attribute with any entry."""
    spec = normalise_spec(spec)
    known = sum(spec[a] is not None for a in ATTRIBUTES)
    if not index or known == 0:
        return NO_MATCH

    def rank(item):
        key, entry = item
        return (-similarity(entry["attrs"], spec), -len(entry.get("members", [])), int(key))

    exact = [item for item in index.items() if covers(item[1]["attrs"], spec)]
    key, entry = min(exact or index.items(), key=rank)
    score = similarity(entry["attrs"], spec)
    if score == 0.0:
        return NO_MATCH
    return Match(int(key), round(score, 6), bool(exact), known)


# -- discovery ---------------------------------------------------------------------------------------

def discover(proc: Path = Path("/proc"), sys_cpu: Path = Path("/sys/devices/system/cpu")) -> dict:
    """This machine's spec from /proc/cpuinfo, /proc/meminfo and cpufreq (None where unreadable)."""
    try:
        cpuinfo = (proc / "cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    chips = set(re.findall(r"^physical id\s*:\s*(\d+)$", cpuinfo, re.MULTILINE))
    logical = len(re.findall(r"^processor\s*:", cpuinfo, re.MULTILINE)) or os.cpu_count()
    memory = None
    try:
        found = re.search(r"^MemTotal:\s*(\d+)\s*kB", (proc / "meminfo").read_text(), re.MULTILINE)
        memory = round(int(found.group(1)) / (1024 * 1024)) if found else None
    except OSError:
        pass
    return normalise_spec({"processor": models[0] if models else None, "cores": logical,
                           "chips": len(chips) or (1 if models else None), "memory": memory,
                           "frequency": _frequency_mhz(cpuinfo, sys_cpu)})


def _frequency_mhz(cpuinfo: str, sys_cpu: Path) -> int | None:
    """max(maximum, current) clock in MHz, rounded to 100 (cpufreq reports kHz, cpuinfo MHz)."""
    values = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)$", cpuinfo, re.MULTILINE)]
    for name in ("cpuinfo_max_freq", "scaling_max_freq", "scaling_cur_freq"):
        try:
            values.append(float((sys_cpu / "cpu0" / "cpufreq" / name).read_text()) / 1000.0)
        except (OSError, ValueError):
            continue
    return int(round(max(values) / 100.0) * 100) if values else None
