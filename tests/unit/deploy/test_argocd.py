"""The Argo CD health check (deploy/argocd/health.lua), run in Lua 5.1 as Argo CD's gopher-lua does.

The objects it judges carry statuses computed by the operator's own pure status functions
(kepler_operator.status), so the check is tested against what the operator really writes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.support import checkout

ROOT = checkout.ROOT
HEALTH_LUA = ROOT / "deploy" / "argocd" / "health.lua"
ARGOCD_CM = ROOT / "deploy" / "argocd" / "argocd-cm.yaml"
NOW = "2026-11-23T12:00:00Z"

lupa = pytest.importorskip("lupa", reason="lupa (a Lua runtime from PyPI) is not installed")


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the script as Argo CD does: `obj` is a global, the result a table {status, message}."""
    from lupa import lua51

    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(json.loads(json.dumps(obj)), recursive=True)
    result = runtime.execute(HEALTH_LUA.read_text())
    out = dict(result.items())
    assert out["status"] in {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
    assert isinstance(out.get("message", ""), str)
    return out


def pipeline(status: dict[str, Any] | None, generation: int = 1, suspend: bool = False) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "modeltraining.kepler.io/v1alpha1", "kind": "TrainingPipeline",
                           "metadata": {"name": "p", "namespace": "kepler-model", "generation": generation},
                           "spec": {"pipelineName": "p", "suspend": suspend}}
    if status is not None:
        obj["status"] = status
    return obj


def job(*conditions: str, active: int = 0) -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": NOW} if active or conditions else {}
    if active:
        status["active"] = active
    status["conditions"] = [{"type": c, "status": "True", "lastTransitionTime": NOW} for c in conditions]
    return {"metadata": {"name": "p-train-g1", "creationTimestamp": NOW,
                         "labels": {"modeltraining.kepler.io/run": "g1"},
                         "annotations": {"modeltraining.kepler.io/generation": "1",
                                         "modeltraining.kepler.io/trigger": "Created"}},
            "status": status}


SUCCESS = {"ok": True, "command": "train", "pipeline": "p", "path": "/models/p", "archive": "/models/p.zip",
           "models": 4, "best": [{"energy_source": "rapl-sysfs", "output_type": "AbsPower",
                                  "feature_group": "BPFOnly", "model_name": "SGDRegressorTrainer_0",
                                  "trainer": "SGDRegressorTrainer", "mae": 1.5,
                                  "path": "rapl-sysfs/AbsPower/BPFOnly/SGDRegressorTrainer_0"}]}
FAILURE = {"ok": False, "command": "train",
           "error": {"reason": "NoPowerMetrics", "exit_code": 5, "message": "no node power metric for rapl-sysfs"}}


def training_status(**kwargs: Any) -> dict[str, Any]:
    from kepler_operator import status

    return status.training_status({}, generation=kwargs.pop("generation", 1), now=NOW, **kwargs)


def test_succeeded_pipeline_is_healthy() -> None:
    status = training_status(job=job("Complete"), terminated={"exitCode": 0, "message": json.dumps(SUCCESS)})
    result = health(pipeline(status))
    assert result["status"] == "Healthy"
    assert "4 models" in result["message"]


def test_running_and_pending_pipelines_are_progressing() -> None:
    running = training_status(job=job(active=1), terminated=None)
    assert health(pipeline(running))["status"] == "Progressing"
    assert "running" in health(pipeline(running))["message"]
    not_started = training_status(job=None, terminated=None)
    assert health(pipeline(not_started))["status"] == "Progressing"


def test_failed_pipeline_is_degraded_with_the_trainer_reason() -> None:
    status = training_status(job=job("Failed"), terminated={"exitCode": 5, "message": json.dumps(FAILURE)})
    result = health(pipeline(status))
    assert result["status"] == "Degraded"
    assert "no node power metric" in result["message"]


def test_status_of_an_older_generation_is_progressing_even_if_ready() -> None:
    status = training_status(job=job("Complete"), terminated={"exitCode": 0, "message": json.dumps(SUCCESS)})
    result = health(pipeline(status, generation=2))
    assert result["status"] == "Progressing"
    assert "generation 2" in result["message"]


def test_no_status_yet_is_progressing() -> None:
    assert health(pipeline(None))["status"] == "Progressing"


def test_suspended_pipeline_is_suspended() -> None:
    status = training_status(job=None, terminated=None, suspended=True)
    assert health(pipeline(status, suspend=True))["status"] == "Suspended"


def test_stalled_condition_is_degraded() -> None:
    status = {"observedGeneration": 1, "phase": "Running",
              "conditions": [{"type": "Ready", "status": "False", "reason": "X", "message": "",
                              "lastTransitionTime": NOW},
                             {"type": "Stalled", "status": "True", "reason": "Stuck", "message": "stuck",
                              "lastTransitionTime": NOW}]}
    assert health(pipeline(status)) == {"status": "Degraded", "message": "stuck"}


def test_succeeded_estimation_is_healthy() -> None:
    from kepler_operator import status as st

    summary = {"ok": True, "command": "estimate", "result": "/models/p/results/estimation_result.csv",
               "model": SUCCESS["best"][0], "samples": 100,
               "components": {"package": {"energy_joules": 10.0, "mean_power_watts": 2.0, "mae": None}}}
    status = st.estimation_status({}, generation=3, job=job("Complete"),
                                  terminated={"exitCode": 0, "message": json.dumps(summary)}, now=NOW)
    obj = pipeline(status, generation=3)
    obj["kind"] = "EnergyEstimation"
    assert health(obj)["status"] == "Healthy"


def test_argocd_cm_embeds_the_script_for_both_kinds() -> None:
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    keys = {f"resource.customizations.health.modeltraining.kepler.io_{k}" for k in
            ("TrainingPipeline", "EnergyEstimation")}
    assert set(data) == keys
    for key in keys:
        assert data[key] == HEALTH_LUA.read_text(), f"{key} differs from health.lua"
