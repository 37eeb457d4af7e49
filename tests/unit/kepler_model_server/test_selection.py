"""Selection rules of the model server, on hand-made pipelines read by the real catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from kepler_contract.machine import normalise_processor, processor_similarity, similarity
from kepler_model_server.catalog import Catalog, Pipeline
from kepler_model_server.errors import InvalidRequest, NoMatchingModel
from kepler_model_server.schema import (
    MachineSpec,
    canonical_source,
)
from kepler_model_server.selection import (
    Criteria,
    best_models,
    choose_pipeline,
    covering_node_types,
    parse_filter,
    select,
)
from tests.support.server import FakeModel, publish

BPF = frozenset({"bpf_cpu_time_ms", "bpf_page_cache_hit", "cpu_architecture"})
ALL = BPF | {"cache_miss", "cpu_cycles", "cpu_instructions", "bpf_block_irq", "bpf_net_rx_irq", "bpf_net_tx_irq"}
M5 = {"processor": "intel_xeon_platinum_8259cl", "cores": 96, "chips": 2, "memory": 377, "frequency": 3500}
I3 = {"processor": "intel_xeon_e5_2686v4", "cores": 72, "chips": 2, "memory": 503, "frequency": 3000}
SMALL = {"processor": "amd_epyc_7r13", "cores": 8, "chips": 1, "memory": 16, "frequency": 3600}


def load(tmp_path: Path, models: list[FakeModel], name: str = "p", **kwargs) -> Pipeline:
    publish(tmp_path, name, models, **kwargs)
    return Catalog(tmp_path).snapshot().pipelines[name]


def crit(**kwargs) -> Criteria:
    return Criteria(**{"source": "rapl-sysfs", "output_type": "AbsPower", "metrics": ALL, **kwargs})


def test_lowest_mae_among_models_whose_features_are_available(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        FakeModel("SGDRegressorTrainer", mae=9.0, feature_group="BPFOnly"),
        FakeModel("GradientBoostingRegressorTrainer", mae=4.0, feature_group="BPFOnly"),
        FakeModel("XgboostFitTrainer", mae=1.0, feature_group="CounterOnly"),
    ])
    assert select(pipeline, crit()).entry.model_name == "XgboostFitTrainer_0"
    # Without counters the counter model is out of reach, whatever its MAE.
    assert select(pipeline, crit(metrics=BPF)).entry.model_name == "GradientBoostingRegressorTrainer_0"
    with pytest.raises(NoMatchingModel, match="features"):
        select(pipeline, crit(metrics=frozenset({"cpu_architecture"})))


def test_source_and_output_type_are_respected(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        FakeModel("SGDRegressorTrainer", mae=9.0),
        FakeModel("LinearRegressionTrainer", mae=1.0, output_type="DynPower"),
        FakeModel("GradientBoostingRegressorTrainer", mae=2.0, source="acpi"),
    ])
    assert select(pipeline, crit()).entry.model_name == "SGDRegressorTrainer_0"
    assert select(pipeline, crit(output_type="DynPower")).entry.model_name == "LinearRegressionTrainer_0"
    assert select(pipeline, crit(source="acpi")).entry.model_name == "GradientBoostingRegressorTrainer_0"


def test_weight_requests_only_get_weight_capable_trainers(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        FakeModel("SGDRegressorTrainer", mae=9.0),
        FakeModel("GradientBoostingRegressorTrainer", mae=1.0),
    ])
    assert select(pipeline, crit(weight=True)).entry.model_name == "SGDRegressorTrainer_0"
    assert select(pipeline, crit(weight=False)).entry.model_name == "GradientBoostingRegressorTrainer_0"


def test_trainer_name_is_an_exact_match(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [FakeModel("SGDRegressorTrainer", mae=9.0), FakeModel("XgboostFitTrainer", mae=1.0)])
    assert select(pipeline, crit(trainer="SGDRegressorTrainer")).entry.model_name == "SGDRegressorTrainer_0"
    assert select(pipeline, crit(trainer="SGDRegressorTrainer_0")).entry.model_name == "SGDRegressorTrainer_0"
    with pytest.raises(NoMatchingModel, match="trainer"):
        select(pipeline, crit(trainer="SGD"))


def test_explicit_node_type_is_exact_not_a_substring(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        FakeModel("SGDRegressorTrainer", node_type=1, mae=9.0),
        FakeModel("SGDRegressorTrainer", node_type=10, mae=1.0),
        FakeModel("XgboostFitTrainer", node_type=0, mae=0.5),
    ])
    choice = select(pipeline, crit(node_type=1))
    assert (choice.entry.model_name, choice.node_type_match) == ("SGDRegressorTrainer_1", "exact")
    # Node type 2 has no model: the documented fallback is any node type, lowest MAE...
    choice = select(pipeline, crit(node_type=2))
    assert (choice.entry.model_name, choice.node_type_match) == ("XgboostFitTrainer_0", "any")
    # ...unless the request forbids it.
    with pytest.raises(NoMatchingModel, match="node type 2"):
        select(pipeline, crit(node_type=2, loose=False))


def test_node_type_fallback_happens_after_the_other_filters(tmp_path: Path) -> None:
    """Upstream kept the node type first; a weight request for a node type with only trees must not 400."""
    pipeline = load(tmp_path, [
        FakeModel("GradientBoostingRegressorTrainer", node_type=1, mae=1.0),
        FakeModel("SGDRegressorTrainer", node_type=0, mae=9.0),
    ])
    choice = select(pipeline, crit(node_type=1, weight=True))
    assert (choice.entry.model_name, choice.node_type_match) == ("SGDRegressorTrainer_0", "any")


def test_machine_spec_selects_the_matching_node_type(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        FakeModel("SGDRegressorTrainer", node_type=0, mae=9.0),
        FakeModel("SGDRegressorTrainer", node_type=1, mae=5.0),
        FakeModel("XgboostFitTrainer", node_type=2, mae=1.0),
    ], node_types={0: M5, 1: I3, 2: SMALL})
    spec = MachineSpec(processor="Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", cores=96, chips=2,
                       memory=377, frequency=3500).attrs()
    choice = select(pipeline, crit(spec=spec))
    assert (choice.entry.model_name, choice.node_type_match) == ("SGDRegressorTrainer_0", "spec")
    # A partial spec keeps every node type it covers.
    assert covering_node_types(pipeline.node_types, {"chips": 2}) == {0, 1}
    assert select(pipeline, crit(spec={"chips": 2})).entry.model_name == "SGDRegressorTrainer_1"


def test_unknown_machine_falls_back_to_the_most_similar_node_type(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        FakeModel("SGDRegressorTrainer", node_type=0, mae=9.0),
        FakeModel("XgboostFitTrainer", node_type=2, mae=1.0),
    ], node_types={0: M5, 2: SMALL})
    near_m5 = {**M5, "cores": 64, "memory": 256}
    choice = select(pipeline, crit(spec=near_m5))
    assert (choice.entry.model_name, choice.node_type_match) == ("SGDRegressorTrainer_0", "similar")
    near_small = {**SMALL, "cores": 16}
    assert select(pipeline, crit(spec=near_small)).entry.model_name == "XgboostFitTrainer_2"
    with pytest.raises(NoMatchingModel, match="machine spec"):
        select(pipeline, crit(spec=near_m5, loose=False))


def test_similarity_is_bounded_and_exact_for_equal_specs() -> None:
    assert similarity(M5, M5) == pytest.approx(1.0)
    assert 0.0 <= similarity(M5, SMALL) < similarity(M5, {**M5, "cores": 48}) < 1.0
    assert similarity({}, M5) == 0.0
    assert processor_similarity("abcd", "abcdefgh") == pytest.approx(0.25)  # upstream's model_select_test case


def test_filters_are_thresholds_and_feature_sets(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        FakeModel("SGDRegressorTrainer", mae=9.0, extra_metadata={"abs_max_corr": 0.9}),
        FakeModel("XgboostFitTrainer", mae=1.0, feature_group="CounterOnly", extra_metadata={"abs_max_corr": 0.2}),
    ])
    def pick(text):
        return select(pipeline, crit(conditions=parse_filter(text))).entry.model_name

    assert pick("") == "XgboostFitTrainer_0"
    assert pick("abs_max_corr:0.5") == "SGDRegressorTrainer_0"
    assert pick("features:bpf_cpu_time_ms,bpf_page_cache_hit") == "SGDRegressorTrainer_0"
    assert pick("mae:2") == "XgboostFitTrainer_0"
    with pytest.raises(NoMatchingModel, match="filter"):
        pick("mae:0.5")
    with pytest.raises(NoMatchingModel):
        pick("no_such_key:1")


@pytest.mark.parametrize("text", ["mae", "mae:", ":1", "mae:abc", "mae:nan", "features:../x", "a b:1"])
def test_malformed_filters_are_rejected(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_filter(text)


def test_best_models_is_strict_about_node_types(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        FakeModel("SGDRegressorTrainer", node_type=0, mae=9.0),
        FakeModel("XgboostFitTrainer", node_type=1, mae=1.0),
        FakeModel("SGDRegressorTrainer", node_type=0, mae=3.0, feature_group="CounterOnly", output_type="DynPower"),
    ])
    assert best_models(pipeline, "rapl-sysfs", ("AbsPower", "DynPower"), None, -1, ()) == {
        "AbsPower": {"BPFOnly": "XgboostFitTrainer_1"}, "DynPower": {"CounterOnly": "SGDRegressorTrainer_0"}}
    assert best_models(pipeline, "rapl-sysfs", ("AbsPower",), None, 0, ()) == {
        "AbsPower": {"BPFOnly": "SGDRegressorTrainer_0"}}
    assert best_models(pipeline, "rapl-sysfs", ("AbsPower",), None, 5, ()) == {"AbsPower": {}}


def test_default_pipeline_is_the_newest_with_the_source(tmp_path: Path) -> None:
    publish(tmp_path, "old", [FakeModel("SGDRegressorTrainer")], last_update="2025-01-01 00:00:00")
    publish(tmp_path, "new", [FakeModel("SGDRegressorTrainer")], last_update="2026-01-01 00:00:00")
    publish(tmp_path, "acpi-only", [FakeModel("SGDRegressorTrainer", source="acpi")],
            last_update="2027-01-01 00:00:00")
    pipelines = Catalog(tmp_path).snapshot().pipelines
    assert choose_pipeline(pipelines, "rapl-sysfs").name == "new"
    assert choose_pipeline(pipelines, "rapl-sysfs", preferred="old").name == "old"
    assert choose_pipeline(pipelines, "rapl-sysfs", preferred="acpi-only").name == "new"
    assert choose_pipeline(pipelines, "acpi").name == "acpi-only"
    assert choose_pipeline(pipelines, "rapl-sysfs", name="old").name == "old"
    with pytest.raises(NoMatchingModel, match="not served"):
        choose_pipeline(pipelines, "rapl-sysfs", name="missing")
    with pytest.raises(NoMatchingModel, match="no served pipeline"):
        choose_pipeline(pipelines, "redfish")


@pytest.mark.parametrize(("given", "expected"), [
    ("", "rapl-sysfs"), ("rapl", "rapl-sysfs"), ("intel_rapl", "rapl-sysfs"), ("rapl-sysfs", "rapl-sysfs"),
    ("acpi", "acpi"), ("rapl-msr", "rapl-msr"),
])
def test_source_aliases(given: str, expected: str) -> None:
    assert canonical_source(given) == expected


@pytest.mark.parametrize(("raw", "normalized"), [
    ("Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "intel_xeon_platinum_8259cl"),
    ("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "intel_xeon_e5_2686v4"),
    ("intel_xeon_platinum_8259cl", "intel_xeon_platinum_8259cl"),
    ("AMD EPYC 7R13 Processor", "amd_epyc_7r13"),
])
def test_processor_names_are_normalized_like_the_index(raw: str, normalized: str) -> None:
    assert normalise_processor(raw) == normalized


def test_weights_go_only_where_kepler_computes_them_as_we_do(tmp_path: Path) -> None:
    """Curve fits: over one feature only, to a request of that feature alone, and to Kepler 0.7.11 (no
    machine_spec: it takes the predictor from its configured trainer) only when it asked that trainer."""
    one = ["bpf_cpu_time_ms"]
    pipeline = load(tmp_path, [
        FakeModel("LogarithmicRegressionTrainer", mae=1.0, feature_group="BPFOnly", features=one),
        FakeModel("ExponentialRegressionTrainer", mae=0.5, feature_group="Basic"),   # five features
        FakeModel("SGDRegressorTrainer", mae=3.0, feature_group="BPFOnly", features=one)])
    alone = frozenset(one) | {"cpu_architecture"}
    assert select(pipeline, crit(metrics=alone, weight=True)).entry.trainer == "LogarithmicRegressionTrainer"
    assert select(pipeline, crit(metrics=ALL, weight=True)).entry.trainer == "SGDRegressorTrainer"
    assert select(pipeline, crit(metrics=alone, weight=True, trainer_from_answer=False)).entry.trainer \
        == "SGDRegressorTrainer"
    chosen = select(pipeline, crit(metrics=alone, weight=True, trainer_from_answer=False,
                                   trainer="LogarithmicRegressionTrainer"))
    assert chosen.entry.trainer == "LogarithmicRegressionTrainer"
    with pytest.raises(NoMatchingModel, match="curve fits over one feature"):
        select(pipeline, crit(metrics=ALL, weight=True, trainer="ExponentialRegressionTrainer"))
    assert not next(m for m in pipeline.models if m.trainer == "ExponentialRegressionTrainer").kepler_weights
