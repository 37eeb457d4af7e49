"""The pydantic models of the resources, the generated CRDs, and the exit-code table."""

from __future__ import annotations

import re

import pytest
import yaml
from pydantic import ValidationError

from kepler_operator import api, crdgen
from tests.support import checkout

REPO = checkout.ROOT
BASE_TP = {"prometheus": {"url": "http://prometheus:9090"}, "window": {"intervalSeconds": 600},
           "pipelineName": "std_v1"}
BASE_EE = {"model": {"pipelineRef": {"name": "tp"}}, "input": {"file": "data/input.json"}}


@pytest.mark.parametrize("resource", api.RESOURCES, ids=lambda r: r.kind)
def test_checked_in_crds_are_generated_from_the_models(resource):
    path = REPO / "crds" / crdgen.FILE_NAMES[resource.kind]
    assert path.read_text() == crdgen.render(resource), "crds/ is stale: run `python -m kepler_operator.crdgen`"


def test_crdgen_check_reports_a_stale_file(tmp_path, capsys):
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 0
    target = tmp_path / "trainingpipelines.yaml"
    target.write_text(target.read_text().replace("Pending", "Waiting"))
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1
    assert "trainingpipelines.yaml" in capsys.readouterr().err


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


@pytest.mark.parametrize("resource", api.RESOURCES, ids=lambda r: r.kind)
def test_schema_is_structural_and_every_field_is_described(resource):
    schema = crdgen.crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "const"} & node.keys(), path
        assert node.get("additionalProperties") is not False, path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path
        for name, sub in (node.get("properties") or {}).items():
            if path == "$" and name == "metadata":
                continue  # the API server forbids describing metadata
            assert sub.get("description"), f"{path}.properties.{name} has no description"
            assert "type" in sub, f"{path}.properties.{name} has no type"


def test_status_schema_carries_no_defaults():
    for resource in api.RESOURCES:
        status = crdgen.crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert not [p for p, node in _walk(status) if "default" in node]


def test_cross_field_rules_are_in_the_crd():
    spec = crdgen.crd(api.TrainingPipeline)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {r["rule"] for _, node in _walk(spec) for r in node.get("x-kubernetes-validations", [])}
    assert "self == oldSelf" in rules  # storage is immutable
    assert any("timestamp(self.start) < timestamp(self.end)" in r for r in rules)
    assert any("has(self.intervalSeconds)" in r for r in rules)
    ee = crdgen.crd(api.EnergyEstimation)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    ee_rules = {r["rule"] for _, node in _walk(ee) for r in node.get("x-kubernetes-validations", [])}
    assert any("has(self.pipelineRef) != has(self.pipelinePath)" in r for r in ee_rules)
    assert any("has(self.prometheus) != has(self.file)" in r for r in ee_rules)


def test_crd_names_and_printer_columns():
    tp = crdgen.crd(api.TrainingPipeline)
    assert tp["metadata"]["name"] == "trainingpipelines.modeltraining.kepler.io"
    assert tp["spec"]["names"]["shortNames"] == ["tp"]
    columns = [c["name"] for c in tp["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns[:4] == ["Phase", "Ready", "Best", "MAE"] and columns[-1] == "Age"
    assert crdgen.crd(api.EnergyEstimation)["spec"]["names"]["shortNames"] == ["ee"]


def test_defaults_come_from_the_models():
    spec = api.TrainingPipelineSpec.model_validate(BASE_TP)
    assert spec.energy_sources == ["rapl-sysfs", "acpi"]
    assert spec.window.step_seconds == 3 and spec.isolator.type == "min" and spec.history_limit == 3
    schema = crdgen.openapi_schema(api.TrainingPipelineSpec)
    assert schema["properties"]["energySources"]["default"] == ["rapl-sysfs", "acpi"]
    assert schema["properties"]["job"]["default"] == {"activeDeadlineSeconds": 3600, "backoffLimit": 1,
                                                      "ttlSecondsAfterFinished": 86400}


@pytest.mark.parametrize("change, message", [
    ({"window": {}}, "set either intervalSeconds or start and end"),
    ({"window": {"intervalSeconds": 600, "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}},
     "set either intervalSeconds"),
    ({"window": {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}}, "start must be before end"),
    ({"window": {"start": "2026-01-02T00:00:00Z"}}, "start and end go together"),
    ({"isolator": {"type": "profile"}}, "needs a profile"),
    ({"prometheus": {"url": "https://p", "tls": {"caSecret": {"name": "ca"}, "insecureSkipVerify": True}}},
     "mutually exclusive"),
    ({"prometheus": {"url": "ftp://p"}}, "pattern"),
    ({"energySources": []}, "at least 1"),
    ({"absTrainers": ["NoSuchTrainer"]}, "Input should be"),
    ({"storage": {"subPath": "../escape"}}, "pattern"),
    ({"storage": {"subPath": "/abs"}}, "pattern"),
    ({"unknownField": 1}, "Extra inputs"),
    ({"historyLimit": 0}, "greater than or equal"),
    ({"accuracyGate": {"maxMae": 0}}, "greater than 0"),
])
def test_training_spec_rejects(change, message):
    with pytest.raises(ValidationError, match=message):
        api.TrainingPipelineSpec.model_validate({**BASE_TP, **change})


@pytest.mark.parametrize("change, message", [
    ({"model": {"pipelineRef": {"name": "tp"}, "pipelinePath": "p"}}, "exactly one of pipelineRef"),
    ({"model": {}}, "exactly one of pipelineRef"),
    ({"input": {}}, "exactly one of prometheus or file"),
    ({"input": {"file": "x.json", "window": {"intervalSeconds": 600}}}, "window goes with prometheus"),
    ({"input": {"prometheus": {"url": "http://p"}}}, "window goes with prometheus"),
    ({"storage": {"pvcName": "other"}}, "leave storage.pvcName unset"),
    ({"model": {"pipelinePath": "a/../b"}}, "pattern"),
])
def test_estimation_spec_rejects(change, message):
    with pytest.raises(ValidationError, match=message):
        api.EnergyEstimationSpec.model_validate({**BASE_EE, **change})


def test_the_operator_never_imports_the_trainer_stack():
    for path in (REPO / "operator" / "kepler_operator").glob("*.py"):
        source = path.read_text()
        for banned in ("pandas", "sklearn", "kepler_trainer", "numpy"):
            assert not re.search(rf"^\s*(import|from) {banned}\b", source, re.M), f"{path.name} imports {banned}"


def test_generated_yaml_is_a_valid_crd_document():
    for name in crdgen.FILE_NAMES.values():
        doc = yaml.safe_load((REPO / "crds" / name).read_text())
        assert doc["apiVersion"] == "apiextensions.k8s.io/v1" and doc["kind"] == "CustomResourceDefinition"
        version = doc["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}} and version["storage"] is True


@pytest.mark.parametrize("change, message", [
    ({"featureSet": {}}, "set exactly one of preset or file"),
    ({"featureSet": {"preset": "kepler-vm", "file": "sets/a.yaml"}}, "set exactly one of preset or file"),
    ({"featureSet": {"preset": "gpu"}}, "Input should be"),
    ({"featureSet": {"file": "../etc/passwd"}}, "String should match pattern"),
    ({"featureSet": {"preset": "kepler-vm", "joinMap": {"a,b": "vm"}}}, "String should match pattern"),
    ({"featureSet": {"preset": "kepler-vm"}, "featureGroups": ["BPFOnly"]}, "featureSet replaces featureGroups"),
    ({"featureSet": {"preset": "kepler-vm"}, "labelFilters": {"job": "node"}}, "labelFilters do not apply"),
    ({"featureSet": {"preset": "kepler-vm", "historySeconds": [60, 60]}}, "each window at most once"),
    ({"featureSet": {"preset": "kepler-vm", "historySeconds": [2]}}, "greater than or equal to 5"),
    ({"featureSet": {"preset": "kepler-vm", "historySeconds": [15, 30, 60, 120, 240]}}, "at most 4"),
    ({"accuracyGate": {"maxMape": 0}}, "greater than 0"),
    ({"onnxConfigMap": {"name": "vm-model"}}, "onnxConfigMap needs a featureSet"),
    ({"featureSet": {"preset": "node-exporter"}, "onnxConfigMap": {"name": "Not_DNS"}}, "String should match"),
])
def test_feature_set_validation(change, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        api.TrainingPipelineSpec.model_validate({**BASE_TP, **change})


def test_feature_set_rules_are_in_the_crd():
    spec = crdgen.crd(api.TrainingPipeline)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {r["rule"] for _, node in _walk(spec) for r in node.get("x-kubernetes-validations", [])}
    assert "has(self.preset) != has(self.file)" in rules
    assert "!(has(self.featureSet) && has(self.featureGroups))" in rules
    assert any("size(self.labelFilters) == 0" in r for r in rules)
    assert "!has(self.onnxConfigMap) || has(self.featureSet)" in rules
    presets = spec["properties"]["featureSet"]["properties"]["preset"]["enum"]
    from kepler_trainer.featuresets import PRESETS

    assert sorted(presets) == sorted(PRESETS)  # the operator offers exactly the trainer's presets
