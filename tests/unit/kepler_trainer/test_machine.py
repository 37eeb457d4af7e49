"""The trainer's machine specs: processor names as Kepler normalises them, this machine's spec discovered."""

from __future__ import annotations

import pytest

from kepler_trainer.errors import InputError
from kepler_trainer.machine import discover, normalise_processor, normalise_spec

M5 = {"processor": "intel_xeon_platinum_8259cl", "cores": 96, "chips": 2, "memory": 377, "frequency": 3500}


@pytest.mark.parametrize("raw, expected", [
    ("Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "intel_xeon_platinum_8259cl"),
    ("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "intel_xeon_e5_2686v4"),
    ("AMD EPYC 7R13 Processor", "amd_epyc_7r13"),
    ("Intel® Core™ i7-8650U CPU @ 1.90GHz", "intel_core_i7_8650u"),
    ("Neoverse-N1 64-Bit Multi-Core Processor", "neoverse_n1"),
    ("AMD Ryzen 9 5950X 16-Core Processor [family 25]", "amd_ryzen_9_5950x_16_core"),
    ("intel_xeon_platinum_8259cl", "intel_xeon_platinum_8259cl"),
])
def test_processor_names_normalise_as_kepler(raw, expected):
    assert normalise_processor(raw) == expected


def test_spec_normalisation_reads_aliases_and_rejects_bad_numbers():
    spec = normalise_spec({"attrs": {"processor": "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "cores": "96",
                                     "chips": 2, "memory_gb": 377.2, "cpu_freq_mhz": 3500}})
    assert spec == M5
    assert normalise_spec({"cores": 4})["processor"] is None
    with pytest.raises(InputError, match="cores must be a number"):
        normalise_spec({"cores": "many"})
    with pytest.raises(InputError, match="negative"):
        normalise_spec({"memory": -1})


def test_discover_reads_cpuinfo_meminfo_and_cpufreq(tmp_path):
    proc, cpu = tmp_path / "proc", tmp_path / "cpu"
    proc.mkdir()
    (cpu / "cpu0" / "cpufreq").mkdir(parents=True)
    block = ("processor\t: {i}\nmodel name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz\n"
             "physical id\t: {p}\ncpu MHz\t\t: 2499.998\n\n")
    (proc / "cpuinfo").write_text("".join(block.format(i=i, p=i // 2) for i in range(4)))
    (proc / "meminfo").write_text("MemTotal:       395312500 kB\nMemFree: 1 kB\n")
    (cpu / "cpu0" / "cpufreq" / "cpuinfo_max_freq").write_text("3499000\n")
    assert discover(proc, cpu) == {**M5, "cores": 4}


def test_discover_tolerates_missing_files(tmp_path):
    spec = discover(tmp_path, tmp_path)
    assert spec["processor"] is None and spec["memory"] is None and spec["frequency"] is None
