"""kepler_contract.machine: the one processor normaliser, spec shape and similarity."""

from __future__ import annotations

import pytest

from kepler_contract.machine import (
    SpecError,
    covers,
    go_spec,
    normalise_processor,
    normalise_spec,
    processor_similarity,
    similarity,
)

M5 = {"processor": "intel_xeon_platinum_8259cl", "cores": 96, "chips": 2, "memory": 377, "frequency": 3500}


@pytest.mark.parametrize(("raw", "expected"), [
    ("Neoverse-N1 64-Bit Multi-Core Processor", "neoverse_n1"),
    ("QEMU Virtual CPU version 2.5+", "qemuvirtualversion_2.5+"),   # Kepler joins every `_v`
    ("Intel(R) Core(TM) i9-9900K CPU @ 3.60GHz", "intel_core_i9_9900k"),
    ("", ""),
])
def test_processor_names(raw: str, expected: str) -> None:
    assert normalise_processor(raw) == expected
    assert normalise_processor(expected) == expected


def test_spec_numbers_are_whole_and_checked() -> None:
    assert normalise_spec({"attrs": {"processor": "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "cores": "96",
                                     "chips": 2, "memory_gb": 377.2, "cpu_freq_mhz": 3500}}) == M5
    with pytest.raises(SpecError, match="cores must be a number"):
        normalise_spec({"cores": "many"})
    with pytest.raises(SpecError, match="negative"):
        normalise_spec({"memory": -1})
    with pytest.raises(SpecError, match="JSON object"):
        normalise_spec(["processor"])  # type: ignore[arg-type]


def test_go_spec_keeps_what_kepler_decodes() -> None:
    assert go_spec({**M5, "vendor": "intel", "memory": 377.4}) == M5
    assert go_spec({"cores": True, "chips": 2}) == {"chips": 2}   # JSON true is no count
    assert go_spec({"cores": "many"}) == {} and go_spec("x") == {}  # type: ignore[arg-type]


def test_covers_compares_given_attributes_only() -> None:
    assert covers(M5, {"processor": M5["processor"], "cores": 96.0})
    assert not covers(M5, {"cores": 48}) and not covers({"cores": 96}, {"chips": 2})


def test_similarity_is_upstreams_weighted_sum_over_all_weights() -> None:
    """Weights 5/1/1/0.5/0.5 over their total 8: a spec giving only the processor scores 5/8 against an
    entry with that processor (the trainer's old matching said 1.0, the server 0.625)."""
    assert similarity(M5, M5) == 1.0
    assert similarity({"processor": M5["processor"]}, M5) == pytest.approx(5 / 8)
    small = {"processor": M5["processor"], "cores": 4}
    assert similarity(small, {**M5, "cores": 4, "chips": 1}) == pytest.approx(6 / 8)
    assert similarity(M5, {**M5, "cores": 48}) == pytest.approx((7 + 1 / 3) / 8)   # cores: 1 - 48 / 72
    assert similarity({}, M5) == 0.0
    assert similarity(M5, {**M5, "memory": 0}) == similarity({**M5, "memory": 0}, M5)  # symmetric
    assert processor_similarity("abcd", "abcdefgh") == pytest.approx(0.25)   # upstream's model_select_test case
