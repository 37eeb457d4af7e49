"""The contract package: its tables agree with the docs, the trainer implements its vocabulary, the
operator's Jobs follow its retry rules, and its summary reader takes whatever a pod may leave."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import kepler_contract
from kepler_contract import exits, vocabulary
from kepler_contract.summary import ModelSummary, parse_summary
from tests.support import checkout

REPO = checkout.ROOT
CONTRACT = Path(kepler_contract.__file__).parent


def test_the_contract_imports_only_the_standard_library():
    for path in CONTRACT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in sys.stdlib_module_names or root == "kepler_contract", f"{path.name} imports {root}"


# ------------------------------------------------------------------------------- exit codes

def test_exit_code_table_matches_the_contract_document():
    text = (REPO / "docs" / "contracts.md").read_text()
    documented = {int(code): reason for code, reason in re.findall(r"^\| (\d+) \| `(\w+)` \|", text, re.M)}
    assert documented == exits.EXIT_CODES


def test_codes_and_reasons_are_unique():
    assert len({e.code for e in exits.TABLE}) == len({e.reason for e in exits.TABLE}) == len(exits.TABLE)
    assert {1, 8, 12} == exits.RETRYABLE_EXIT_CODES
    assert set(exits.PERMANENT_EXIT_CODES) == set(exits.EXIT_CODES) - exits.RETRYABLE_EXIT_CODES


def test_every_trainer_error_carries_a_row_of_the_table():
    errors = pytest.importorskip("kepler_trainer.errors")
    rows = set()
    stack = [errors.KeplerModelError]
    while stack:
        cls = stack.pop()
        rows.add((cls.exit_code, cls.reason))
        stack += cls.__subclasses__()
    assert rows == {(e.code, e.reason) for e in exits.TABLE}


def test_the_operator_fails_a_job_at_once_only_on_permanent_codes():
    from kepler_operator import api, jobs

    spec = api.TrainingPipelineSpec.model_validate({"prometheus": {"url": "http://p:9090"},
                                                    "window": {"intervalSeconds": 600}, "pipelineName": "std"})
    owner = jobs.Owner(kind="TrainingPipeline", name="tp", namespace="ns", uid="u")
    manifest = jobs.training_job(owner, spec, jobs.RunRequest(key="g1", trigger="Created", generation=1),
                                 jobs.JobDefaults(image="trainer:1"))
    rule = manifest["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == list(exits.PERMANENT_EXIT_CODES)


# ------------------------------------------------------------------------------- vocabulary

def test_the_trainer_implements_every_name_of_the_vocabulary():
    features = pytest.importorskip("kepler_trainer.features")
    trainers = pytest.importorskip("kepler_trainer.trainers")
    assert list(trainers.TRAINERS) == [t.value for t in vocabulary.Trainer]
    assert list(features.FEATURE_GROUPS) == [g.value for g in vocabulary.FeatureGroup]
    assert set(vocabulary.DEFAULT_FEATURE_GROUPS) <= set(features.FEATURE_GROUPS)
    for alias, name in vocabulary.ENERGY_SOURCE_ALIASES.items():
        assert features.energy_source(alias).name == name


def test_the_operator_offers_only_energy_sources_of_the_vocabulary():
    from kepler_operator import api

    assert {s.value for s in api.EnergySource} <= set(vocabulary.ENERGY_SOURCE_COMPONENTS)


@pytest.mark.parametrize("name, problem", [
    ("std_v0.7.11", None), ("a", None), ("x" * 128, None), ("x" * 129, "at most 128"), (".hidden", "letters"),
    ("a/b", "letters"), ("", "letters"), ("x.zip", ".zip"), ("X.Zip", ".zip"), ("estimations", "reserved"),
])
def test_pipeline_name_rule(name, problem):
    found = vocabulary.pipeline_name_problem(name)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_output_types_are_listed_once():
    assert [o.value for o in vocabulary.OutputType] == list(vocabulary.OUTPUT_TYPES)


# ------------------------------------------------------------------------------- run summary

def test_a_train_summary_reads_back_typed():
    best = {"energy_source": "acpi", "output_type": "AbsPower", "feature_group": "BPFOnly", "model_name": "SGD_0",
            "trainer": "SGDRegressorTrainer", "mae": 4, "path": "acpi/AbsPower/BPFOnly/SGD_0",
            "kepler_weights": True, "kepler_weights_model": "BPFOnly/SGD_0", "onnx_model": "BPFOnly/LR_0"}
    summary = parse_summary(json.dumps({"ok": True, "command": "train", "path": "/m/std", "models": 3,
                                        "best": [best, "junk"], "unknown": {"kept": "out"}}))
    assert summary is not None and summary.ok and summary.models == 3 and summary.path == "/m/std"
    assert summary.best == (ModelSummary(**{**best, "mae": 4.0}),)


def test_a_failure_summary_reads_its_error():
    summary = parse_summary('{"ok": false, "command": "estimate", '
                            '"error": {"reason": "ModelNotFound", "exit_code": 11, "message": "none"}}')
    assert summary is not None and not summary.ok and summary.error is not None
    assert (summary.error.reason, summary.error.exit_code, summary.error.message) == ("ModelNotFound", 11, "none")


def test_an_estimation_summary_reads_its_components():
    summary = parse_summary(json.dumps({"ok": True, "samples": 10, "result": "/m/r.csv",
                                        "components": {"package": {"energy_joules": 1.5, "mae": None}, "x": 3}}))
    assert summary is not None and summary.samples == 10 and list(summary.components) == ["package"]
    assert summary.components["package"].energy_joules == 1.5 and summary.components["package"].mae is None


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                max_size=6), max_leaves=20)
FIELDS = st.sampled_from(["ok", "command", "error", "path", "archive", "report", "models", "best", "result",
                          "model", "samples", "components", "energy_source", "mae", "reason", "kepler_weights"])


@settings(deadline=None)  # a loaded CI machine: the first example pays for imports
@given(st.dictionaries(FIELDS, JSON, max_size=10))
def test_any_json_object_reads_without_error_and_types_hold(obj):
    summary = parse_summary(json.dumps(obj))
    assert (summary is not None) is isinstance(obj.get("ok"), bool)
    if summary is not None:
        assert isinstance(summary.models, int) and all(isinstance(m, ModelSummary) for m in summary.best)
        assert summary.path is None or isinstance(summary.path, str)
        assert all(m.mae is None or isinstance(m.mae, float) for m in summary.best)
