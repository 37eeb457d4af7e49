"""The trainer and the model server name a machine alike: a node type the trainer indexed from a raw CPU
string is the one the server selects for a request carrying that string (or Kepler's normalised name).

These pairs used to disagree: the trainer's normaliser kept `_v` before letters and dropped
`64-Bit Multi-Core`, the server's the reverse, so the server fell back to a "similar" node type."""

from __future__ import annotations

from pathlib import Path

import pytest

from kepler_contract.machine import normalise_processor
from kepler_model_server.catalog import Catalog
from kepler_model_server.schema import MachineSpec
from kepler_model_server.selection import Criteria, select
from kepler_trainer.machine import normalise_spec
from tests.support.server import FakeModel, publish

RAW = {
    0: {"processor": "Neoverse-N1 64-Bit Multi-Core Processor", "cores": 64, "chips": 1, "memory": 256,
        "frequency": 3000},
    1: {"processor": "QEMU Virtual CPU version 2.5+", "cores": 4, "chips": 1, "memory": 16, "frequency": 2400},
    2: {"processor": "Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "cores": 72, "chips": 2, "memory": 503,
        "frequency": 3000},
}
FEATURES = frozenset({"bpf_cpu_time_ms", "bpf_page_cache_hit", "cpu_architecture"})


@pytest.fixture
def served(tmp_path: Path):
    """A pipeline whose node-type index holds the specs as the trainer normalises them."""
    index = {n: normalise_spec(raw) for n, raw in RAW.items()}
    publish(tmp_path, "p", [FakeModel("SGDRegressorTrainer", node_type=n, mae=1.0 + n) for n in RAW],
            node_types=index)
    return Catalog(tmp_path).snapshot().pipelines["p"]


@pytest.mark.parametrize("node_type", sorted(RAW))
@pytest.mark.parametrize("given", ["raw", "kepler", "processor only"])
def test_the_server_selects_the_node_type_the_trainer_indexed(served, node_type: int, given: str) -> None:
    raw = RAW[node_type]
    spec = {"raw": raw, "kepler": {**raw, "processor": normalise_processor(raw["processor"])},
            "processor only": {"processor": raw["processor"]}}[given]
    criteria = Criteria(source="rapl-sysfs", output_type="AbsPower", metrics=FEATURES,
                        spec=MachineSpec.model_validate(spec).attrs(), loose=False)
    choice = select(served, criteria)
    assert (choice.entry.node_type, choice.node_type_match) == (node_type, "spec")
    assert served.node_types[node_type].attrs["processor"] == normalise_spec(raw)["processor"]
