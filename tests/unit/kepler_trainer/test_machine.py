"""Machine specs: processor names as upstream normalises them, the node-type index, closest match."""

from __future__ import annotations

import pytest

from kepler_trainer.errors import InputError
from kepler_trainer.machine import (
    NO_MATCH,
    closest_node_type,
    discover,
    index_machine,
    normalise_processor,
    normalise_spec,
    similarity,
)

M5 = {"processor": "intel_xeon_platinum_8259cl", "cores": 96, "chips": 2, "memory": 377, "frequency": 3500}
I3 = {"processor": "intel_xeon_e5_2686v4", "cores": 72, "chips": 2, "memory": 503, "frequency": 3000}
C5 = {"processor": "intel_xeon_platinum_8275cl", "cores": 96, "chips": 2, "memory": 188, "frequency": 3900}


@pytest.mark.parametrize("raw, expected", [
    ("Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "intel_xeon_platinum_8259cl"),
    ("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "intel_xeon_e5_2686v4"),
    ("AMD EPYC 7R13 Processor", "amd_epyc_7r13"),
    ("Intel® Core™ i7-8650U CPU @ 1.90GHz", "intel_core_i7_8650u"),
    ("Neoverse-N1 64-Bit Multi-Core Processor", "neoverse_n1"),
    ("AMD Ryzen 9 5950X 16-Core Processor [family 25]", "amd_ryzen_9_5950x_16_core"),
    ("intel_xeon_platinum_8259cl", "intel_xeon_platinum_8259cl"),
])
def test_processor_names_normalise_as_upstream(raw, expected):
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


def test_indexing_reuses_a_covering_entry_and_appends_new_types():
    index, m5 = index_machine({}, {**M5, "processor": "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz"}, "m5-a")
    index, again = index_machine(index, M5, "m5-b")
    index, i3 = index_machine(index, I3, "i3")
    index, same = index_machine(index, M5, "m5-a")
    assert (m5, again, i3, same) == (0, 0, 1, 0)
    assert index["0"] == {"attrs": M5, "members": ["m5-a", "m5-b"]}
    assert index["1"]["members"] == ["i3"]


def test_indexing_needs_a_complete_spec_and_leaves_the_input_alone():
    original = {"0": {"attrs": dict(M5), "members": ["m5"]}}
    with pytest.raises(InputError, match="lacks memory, frequency"):
        index_machine(original, {k: v for k, v in I3.items() if k not in ("memory", "frequency")}, "x")
    _, node_type = index_machine(original, C5, "c5")
    assert node_type == 1 and original == {"0": {"attrs": M5, "members": ["m5"]}}
    _, gap = index_machine({"3": {"attrs": M5, "members": []}}, I3, "i3")
    assert gap == 4


def test_closest_prefers_an_exact_cover_then_similarity_then_members():
    index = {"0": {"attrs": M5, "members": ["a"]}, "1": {"attrs": I3, "members": ["b"]},
             "2": {"attrs": C5, "members": ["c"]}}
    exact = closest_node_type(index, I3)
    assert exact.node_type == 1 and exact.exact and exact.similarity == 1.0 and exact.looseness == 0.0
    r5 = closest_node_type(index, {**M5, "memory": 755})
    assert r5.node_type == 0 and not r5.exact and 0.9 < r5.similarity < 1.0
    partial = closest_node_type(index, {"processor": "Intel Xeon Platinum 8275CL"})
    assert partial.node_type == 2 and partial.exact and partial.known_attributes == 1
    twins = {"0": {"attrs": M5, "members": ["a"]}, "1": {"attrs": M5, "members": ["b", "c"]}}
    assert closest_node_type(twins, M5).node_type == 1


def test_no_match_for_an_empty_index_or_an_empty_spec():
    assert closest_node_type({}, M5) == NO_MATCH
    assert closest_node_type({"0": {"attrs": M5, "members": []}}, {}) == NO_MATCH


def test_similarity_weights_processor_most():
    same_cpu_other_box = similarity(M5, {**M5, "cores": 48, "memory": 64})
    other_cpu_same_box = similarity(M5, {**M5, "processor": "amd_epyc_7r13"})
    assert 0 < other_cpu_same_box < same_cpu_other_box < 1
    assert similarity(M5, M5) == 1.0


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
