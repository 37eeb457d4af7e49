"""This machine's spec, and the trainer's face of `kepler_contract.machine`.

The spec's attributes, the processor normaliser, `covers` and `go_spec` are the contract's, shared
with the model server so both name a machine alike (docs/contracts.md); here a bad spec becomes the
trainer's InputError. `discover` reads this machine's /proc and /sys.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from kepler_contract.machine import (  # noqa: F401  (re-exported: the trainer's modules use them from here)
    ATTRIBUTES,
    SpecError,
    complete,
    covers,
    go_spec,
    normalise_processor,
    normalise_spec as _normalise_spec,
)

from .errors import InputError


def normalise_spec(raw: Any) -> dict:
    """`kepler_contract.machine.normalise_spec`, its SpecError as the trainer's InputError."""
    try:
        return _normalise_spec(raw)
    except SpecError as exc:
        raise InputError(str(exc)) from None


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
