"""One processor name on every side: Kepler 0.7.12's own `formatProcessor` (spec.go, run through the
driver) and `kepler_contract.machine.normalise_processor`, which the trainer and the model server use,
give the same name for real /proc/cpuinfo model strings, and normalising Kepler's name changes nothing
(the server normalises what Kepler already did)."""

from __future__ import annotations

import pytest

from kepler_contract.machine import normalise_processor
from tests.conformance import kepler

pytestmark = [pytest.mark.conformance, pytest.mark.usefixtures("drivers")]

CPU_MODEL_NAMES = (
    "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz",
    "Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz",
    "Intel(R) Core(TM) i9-9900K CPU @ 3.60GHz",
    "Intel(R) Celeron(R) CPU  N3050  @ 1.60GHz",
    "Intel Xeon Processor (Cascadelake)",
    "Intel Core Processor (Broadwell, IBRS)",
    "AMD EPYC 7R13 Processor",
    "AMD Ryzen 9 5950X 16-Core Processor",
    "AMD EPYC 9654 96-Core Processor",
    "Neoverse-N1 64-Bit Multi-Core Processor",    # the trainer and the server used to disagree here
    "QEMU Virtual CPU version 2.5+",               # ... and here (every `_v` is joined, not only `_v<digit>`)
    "Common KVM processor",
    "ARMv8 Processor rev 1 (v8l)",
    "Ampere(R) Altra(R) Processor Q80-30 CPU @ 3.0GHz",
    "intel_xeon_platinum_8259cl",
)


def test_processor_names_are_keplers() -> None:
    cases = [{"id": str(i), "mode": "processor", "processor": name} for i, name in enumerate(CPU_MODEL_NAMES)]
    results = kepler.run("v0.7.12", cases)
    for case in cases:
        keplers = results[case["id"]]["processor"]
        assert normalise_processor(case["processor"]) == keplers, case["processor"]
        assert normalise_processor(keplers) == keplers, case["processor"]
