"""The CRDs and the operator against a real Kubernetes API server (the CRD apiserver, or $KUBECONFIG).

The trainer is not run here (tests/e2e does that): the kubelet stand-in finishes each pod with the
exit code and termination summary a test chooses, exactly as a real cluster reports them.
"""

from __future__ import annotations

import copy
import json
import time
import uuid

import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.apiserver import SELECTOR, OperatorProcess, condition, phase
from tests.support.kubelet import Kubelet

pytestmark = [pytest.mark.apiserver, pytest.mark.slow, pytest.mark.timeout(300)]

TP, EE = "TrainingPipeline", "EnergyEstimation"
TP_SPEC = {"prometheus": {"url": "http://prometheus:9090"}, "window": {"intervalSeconds": 600},
           "pipelineName": "std_v1", "storage": {"pvcName": "models", "subPath": "team"}}
EE_SPEC = {"model": {"pipelineRef": {"name": "tp"}}, "input": {"file": "inputs/q.json"}}
BEST = {"energy_source": "rapl-sysfs", "output_type": "AbsPower", "feature_group": "BPFOnly",
        "model_name": "SGDRegressorTrainer_0", "trainer": "SGDRegressorTrainer", "mae": 2.75,
        "path": "rapl-sysfs/AbsPower/BPFOnly/SGDRegressorTrainer_0"}
TRAINED = {"ok": True, "command": "train", "pipeline": "std_v1", "path": "/models/team/std_v1",
           "archive": "/models/team/std_v1.zip", "report": "/models/team/std_v1/report.html", "models": 8,
           "best": [BEST]}
ESTIMATED = {"ok": True, "command": "estimate", "result": "/models/team/estimations/est/estimation_result.csv",
             "model": BEST, "samples": 200,
             "components": {"package": {"energy_joules": 1500.0, "mean_power_watts": 2.5, "mae": 0.4}}}


POLICY = {"allowed_prometheus_urls": "http://prometheus:9090,https://prom:9091", "allowed_pvcs": "models"}
"""What the admin allows these tests (the operator's policy is default deny:
tests/integration/kepler_operator/test_policy_apiserver.py)."""


def succeed(job: dict) -> tuple[int, str]:
    """Finish every pod as a successful trainer run of its kind would."""
    kind = job["metadata"]["labels"]["modeltraining.kepler.io/kind"]
    return 0, json.dumps(TRAINED if kind == TP else ESTIMATED)


@pytest.fixture
def operator_settings() -> dict[str, str]:
    """The `operator` fixture (tests/support/apiserver.py) runs with this policy."""
    return POLICY


def ready(resource: dict) -> bool:
    return phase(resource) == "Succeeded" and condition(resource, "Ready") == ("True", "Succeeded")


# ------------------------------------------------------------------------------ schema checks

def with_change(base: dict, path: str, value) -> dict:
    spec = copy.deepcopy(base)
    node = spec
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(keys[-1])
    else:
        node[keys[-1]] = value
    return spec


DELETE = object()
MALFORMED = [
    (TP, "prometheus.url", "ftp://prometheus", "spec.prometheus.url"),
    (TP, "prometheus", DELETE, "spec.prometheus"),
    (TP, "pipelineName", DELETE, "spec.pipelineName"),
    (TP, "pipelineName", "has space", "spec.pipelineName"),
    (TP, "window.start", "2026-01-01T00:00:00Z", "spec.window"),
    (TP, "window", {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "spec.window.start"),
    (TP, "window", {"start": "2026-01-02T00:00:00Z"}, "spec.window"),
    (TP, "window.intervalSeconds", 10, "spec.window.intervalSeconds"),
    (TP, "window.stepSeconds", 0, "spec.window.stepSeconds"),
    (TP, "energySources", ["solar"], "spec.energySources[0]"),
    (TP, "energySources", [], "spec.energySources"),
    (TP, "energySources", ["acpi", "acpi"], "spec.energySources[1]"),
    (TP, "absTrainers", ["MagicTrainer"], "spec.absTrainers[0]"),
    (TP, "extractor", "fancy", "spec.extractor"),
    (TP, "isolator", {"type": "profile"}, "spec.isolator.profile"),
    (TP, "storage.subPath", "../escape", "spec.storage.subPath"),
    (TP, "storage.pvcName", "Not_A_Name", "spec.storage.pvcName"),
    (TP, "labelFilters", {"bad-label": "x"}, "spec.labelFilters"),
    (TP, "schedule", "every day", "spec.schedule"),
    (TP, "historyLimit", 50, "spec.historyLimit"),
    (TP, "accuracyGate", {"maxMae": -1}, "spec.accuracyGate.maxMae"),
    (TP, "job", {"backoffLimit": 11}, "spec.job.backoffLimit"),
    (TP, "job", {"resources": {"requests": {"gpu": "1"}}}, "spec.job.resources.requests"),
    (TP, "job", {"resources": {"limits": {"cpu": "lots"}}}, "spec.job.resources.limits.cpu"),
    (TP, "metricPrefix", "bad prefix", "spec.metricPrefix"),
    (TP, "prometheus.tls", {"caSecret": {"name": "ca"}, "insecureSkipVerify": True}, "spec.prometheus.tls"),
    (TP, "prometheus.bearerTokenSecret", {"key": "token"}, "spec.prometheus.bearerTokenSecret.name"),
    (TP, "featureGroups", ["Everything"], "spec.featureGroups[0]"),
    (TP, "surprise", 1, "spec.surprise"),
    (EE, "model.pipelinePath", "std_v1", "spec.model"),
    (EE, "model", {"pipelinePath": "../etc"}, "spec.model.pipelinePath"),
    (EE, "model", {"pipelinePath": "team/old.zip"}, "spec.model.pipelinePath"),
    (EE, "model", {"pipelinePath": "team/_hidden"}, "spec.model.pipelinePath"),
    (EE, "model", {"pipelinePath": "estimations"}, "spec.model.pipelinePath"),
    (EE, "model.outputType", "HalfPower", "spec.model.outputType"),
    (EE, "input.prometheus", {"url": "http://p:9090"}, "spec.input"),
    (EE, "input.window", {"intervalSeconds": 600}, "spec.input.window"),
    (EE, "storage", {"pvcName": "other"}, "spec.storage.pvcName"),
    (EE, "model.energySource", "battery", "spec.model.energySource"),
    # issue 12: refused at admission, before the operator sees them
    (TP, "schedule", "61 * * * *", "spec.schedule"),
    (TP, "schedule", "0 0 1 13 *", "spec.schedule"),
    (TP, "pipelineName", "other.zip", "spec.pipelineName"),
    (TP, "pipelineName", "Other.ZIP", "spec.pipelineName"),
    (TP, "pipelineName", "estimations", "spec.pipelineName"),
    (TP, "pipelineName", "", "spec.pipelineName"),
    (TP, "labelFilters", {"instance=~": ".*"}, "spec.labelFilters"),
    (TP, "labelFilters", {"instance": "x" * 1025}, "spec.labelFilters"),
    (TP, "labelFilters", {f"l{i}": "x" for i in range(17)}, "spec.labelFilters"),
    (EE, "input", {"prometheus": {"url": "http://p:9090"}, "window": {"intervalSeconds": 600},
                   "labelFilters": {"job=~": "k.*"}}, "spec.input.labelFilters"),
    # issue 15: feature sets
    (TP, "featureSet", {}, "spec.featureSet"),
    (TP, "featureSet", {"preset": "kepler-vm", "file": "sets/a.yaml"}, "spec.featureSet"),
    (TP, "featureSet", {"preset": "gpu"}, "spec.featureSet.preset"),
    (TP, "featureSet", {"file": "../etc/passwd"}, "spec.featureSet.file"),
    (TP, "featureSet", {"preset": "kepler-vm", "joinMap": {"guest 1": "vm"}}, "spec.featureSet.joinMap"),
    (TP, "featureSet", {"preset": "kepler-vm", "joinMap": {"guest": "vm,other=x"}}, "spec.featureSet.joinMap"),
    (TP, "accuracyGate.maxMape", 0, "spec.accuracyGate.maxMape"),
]


@pytest.mark.parametrize("kind, path, value, field", MALFORMED,
                         ids=[f"{k[0]}-{p}-{i}" for i, (k, p, _, _) in enumerate(MALFORMED)])
def test_malformed_resources_are_rejected_with_the_field_named(res, kind, path, value, field):
    spec = with_change(TP_SPEC if kind == TP else EE_SPEC, path, value)
    with pytest.raises(ApiException) as caught:
        res.create(kind, f"bad-{uuid.uuid4().hex[:6]}", spec)
    assert caught.value.status in (400, 422), caught.value.body  # 400: unknown field (strict decoding)
    body = json.loads(caught.value.body)
    fields = [c.get("field", "") for c in (body.get("details") or {}).get("causes", [])]
    assert any(f == field or f.startswith(field + ".") or f.startswith(field + "[") for f in fields) \
        or field in body["message"], f"{field} not named in: {body['message']}"


def test_storage_is_immutable(res):
    res.create(TP, "fixed", TP_SPEC)
    with pytest.raises(ApiException) as caught:
        res.patch(TP, "fixed", {"spec": {"storage": {"subPath": "elsewhere"}}})
    assert caught.value.status == 422 and "storage is immutable" in caught.value.body
    res.patch(TP, "fixed", {"spec": {"historyLimit": 5}})  # other fields may change


def test_defaults_are_applied_by_the_api_server(res):
    tp = res.create(TP, "minimal", {k: TP_SPEC[k] for k in ("prometheus", "window", "pipelineName")})
    spec = tp["spec"]
    assert spec["energySources"] == ["rapl-sysfs", "acpi"] and spec["metricPrefix"] == "kepler_"
    assert spec["window"]["stepSeconds"] == 3 and spec["isolator"] == {"type": "min"}
    assert spec["job"] == {"activeDeadlineSeconds": 3600, "backoffLimit": 1, "ttlSecondsAfterFinished": 86400}
    assert spec["storage"] == {"subPath": ""} and spec["suspend"] is False and spec["historyLimit"] == 3
    assert "featureGroups" not in spec and "schedule" not in spec
    ee = res.create(EE, "minimal-ee", EE_SPEC)
    assert ee["spec"]["model"]["energySource"] == "rapl-sysfs" and ee["spec"]["model"]["outputType"] == "AbsPower"
    assert ee["spec"]["input"]["metricPrefix"] == "kepler_"


def _table(kube, ns: str, plural: str) -> dict:
    method, url, headers, body, _ = kube.client.param_serialize(
        "GET", f"/apis/modeltraining.kepler.io/v1alpha1/namespaces/{ns}/{plural}",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}, auth_settings=["BearerToken"])
    response = kube.client.call_api(method, url, header_params=headers, body=body)
    response.read()
    return json.loads(response.data)


def test_printer_columns(kube, ns, res):
    res.create(TP, "shown", TP_SPEC)
    status = {"phase": "Succeeded", "modelCount": 8, "conditions": [
        {"type": "Ready", "status": "True", "reason": "Succeeded", "message": "",
         "lastTransitionTime": "2026-11-23T12:00:00Z"}],
        "bestModels": [{"energySource": "rapl-sysfs", "outputType": "AbsPower", "featureGroup": "BPFOnly",
                        "modelName": "SGDRegressorTrainer_0", "trainer": "SGDRegressorTrainer", "mae": 2.75,
                        "path": "p"}], "reportPath": "team/std_v1/report.html"}
    res.custom.patch_namespaced_custom_object_status("modeltraining.kepler.io", "v1alpha1", ns, "trainingpipelines",
                                                     "shown", {"status": status})
    table = _table(kube, ns, "trainingpipelines")
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Phase", "Ready", "Best", "MAE", "Models", "Pipeline", "Last Run", "Report", "Age"]
    row = dict(zip(names, table["rows"][0]["cells"], strict=False))
    assert (row["Phase"], row["Ready"], row["Best"], row["MAE"], row["Models"], row["Pipeline"]) == \
        ("Succeeded", "True", "SGDRegressorTrainer_0", 2.75, 8, "std_v1")
    assert row["Report"] == "team/std_v1/report.html"
    priority = {c["name"]: c["priority"] for c in table["columnDefinitions"]}
    assert priority["Report"] == 1  # shown by `kubectl get tp -o wide` only
    ee_names = [c["name"] for c in _table(kube, ns, "energyestimations")["columnDefinitions"]]
    assert ee_names == ["Name", "Phase", "Ready", "Model", "Samples", "Result", "Report", "Age"]


def test_users_cannot_write_status_through_the_main_endpoint(res):
    res.create(TP, "nostatus", TP_SPEC)
    patched = res.patch(TP, "nostatus", {"status": {"phase": "Succeeded"}})
    assert "status" not in patched or patched["status"].get("phase") != "Succeeded"


# ------------------------------------------------------------------------------ the operator

def test_training_then_estimation(kube, ns, res, operator):
    with Kubelet(kube.client, ns, SELECTOR, mode=succeed):
        ee = res.create(EE, "est", EE_SPEC)
        waiting = res.wait_for(EE, "est", lambda r: condition(r, "ModelResolved") == ("False", "PipelineNotFound"))
        assert phase(waiting) == "Pending" and res.jobs(ee["metadata"]["uid"]) == []
        tp = res.create(TP, "tp", TP_SPEC)
        done = res.wait_for(TP, "tp", ready)
        status = done["status"]
        assert status["observedGeneration"] == 1 and status["modelCount"] == 8
        assert status["pipelinePath"] == "team/std_v1" and status["archive"] == "team/std_v1.zip"
        assert status["reportPath"] == "team/std_v1/report.html"
        assert status["bestModels"][0]["modelName"] == "SGDRegressorTrainer_0"
        assert status["bestModels"][0]["mae"] == 2.75
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "Ready": "True", "DataAvailable": "True", "Trained": "True", "Published": "True"}
        assert status["lastRun"]["jobName"] == "tp-train-g1" and status["lastRun"]["completionTime"]
        estimated = res.wait_for(EE, "est", ready)
        assert estimated["status"]["summary"] == {"samples": 200, "components": [
            {"component": "package", "energyJoules": 1500.0, "meanPowerWatts": 2.5, "mae": 0.4}]}
        assert estimated["status"]["resultPath"] == "team/estimations/est/estimation_result.csv"
        assert condition(estimated, "ModelResolved") == ("True", "ModelLoaded")
    (train_job,) = res.jobs(tp["metadata"]["uid"])
    assert train_job["metadata"]["ownerReferences"][0]["uid"] == tp["metadata"]["uid"]
    command = train_job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["kepler-model", "train"] and "/models/team" in command
    (est_job,) = res.jobs(ee["metadata"]["uid"])
    est_command = " ".join(est_job["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "-i /models/inputs/q.json -p std_v1" in est_command and "--model-path /models/team" in est_command
    assert est_job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "models"
    reasons = [e["reason"] for e in res.events("tp")]
    assert "RunStarted" in reasons and "Succeeded" in reasons


def test_a_feature_set_pipeline_runs_the_trainer_with_the_preset_and_its_gate(kube, ns, res, operator):
    """Issue 15: spec.featureSet reaches the Job's command; featureSet with featureGroups is refused."""
    spec = {**TP_SPEC, "featureSet": {"preset": "kepler-vm", "joinMap": {"guest-1:9100": "vm-0001"}},
            "accuracyGate": {"maxMape": 15, "maxIdleBias": 5}}
    with pytest.raises(ApiException) as caught:
        res.create(TP, "both", {**spec, "featureGroups": ["BPFOnly"]})
    assert "featureSet replaces featureGroups" in caught.value.body
    with pytest.raises(ApiException) as caught:
        res.create(TP, "filtered", {**spec, "labelFilters": {"job": "node"}})
    assert "labelFilters do not apply to a featureSet" in caught.value.body
    with Kubelet(kube.client, ns, SELECTOR, mode=succeed):
        tp = res.create(TP, "vm", spec)
        res.wait_for(TP, "vm", ready)
    (job,) = res.jobs(tp["metadata"]["uid"])
    command = " ".join(job["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "--features kepler-vm --join-map guest-1:9100=vm-0001" in command
    assert "--max-mape 15.0 --max-idle-bias 5.0" in command and " -fg " not in command


def test_a_trainer_failure_becomes_a_condition_and_an_event(kube, ns, res, operator):
    error = {"ok": False, "command": "train",
             "error": {"reason": "NoPowerMetrics", "exit_code": 5, "message": "no kepler_node_package_joules_total"}}
    with Kubelet(kube.client, ns, SELECTOR, mode=lambda job: (5, json.dumps(error))):
        res.create(TP, "nopower", TP_SPEC)
        failed = res.wait_for(TP, "nopower", lambda r: phase(r) == "Failed")
    assert condition(failed, "DataAvailable") == ("False", "NoPowerMetrics")
    assert condition(failed, "Ready") == ("False", "NoPowerMetrics")
    ready_cond = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
    assert ready_cond["message"] == "no kepler_node_package_joules_total"
    (job,) = res.jobs(failed["metadata"]["uid"])
    assert job["status"]["conditions"][-1]["reason"] == "PodFailurePolicy"  # exit 5 is permanent: no retry
    warnings = [e for e in res.events("nopower") if e["type"] == "Warning"]
    assert warnings and warnings[0]["reason"] == "NoPowerMetrics"


def test_reapply_rerun_and_spec_change(kube, ns, res, operator):
    with Kubelet(kube.client, ns, SELECTOR, mode=succeed):
        tp = res.create(TP, "again", TP_SPEC)
        uid = tp["metadata"]["uid"]
        res.wait_for(TP, "again", ready)
        res.patch(TP, "again", {"spec": {"pipelineName": "std_v1"}})  # the same spec: no new generation
        res.patch(TP, "again", {"metadata": {"labels": {"team": "a"}}})  # metadata only: no new run
        time.sleep(2)
        assert [j["metadata"]["name"] for j in res.jobs(uid)] == ["again-train-g1"]

        res.patch(TP, "again", {"metadata": {"annotations": {"modeltraining.kepler.io/rerun": "first"}}})
        rerun = res.wait_for(TP, "again", lambda r: (r["status"].get("lastRun") or {}).get("trigger") == "Rerun"
                             and ready(r))
        assert rerun["status"]["handledRerun"] == "first"
        assert len(res.jobs(uid)) == 2

        res.patch(TP, "again", {"spec": {"historyLimit": 1}})
        changed = res.wait_for(TP, "again", lambda r: (r["status"].get("lastRun") or {}).get("key") == "g2"
                               and ready(r))
        assert changed["status"]["observedGeneration"] == 2
        deadline = time.monotonic() + 20
        while len(res.jobs(uid)) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [j["metadata"]["name"] for j in res.jobs(uid)] == ["again-train-g2"]  # historyLimit 1 pruned


def test_suspend_starts_nothing_until_resumed(kube, ns, res, operator):
    with Kubelet(kube.client, ns, SELECTOR, mode=succeed):
        tp = res.create(TP, "paused", {**TP_SPEC, "suspend": True})
        res.wait_for(TP, "paused", lambda r: condition(r, "Ready") == ("False", "Suspended"))
        assert res.jobs(tp["metadata"]["uid"]) == []
        res.patch(TP, "paused", {"spec": {"suspend": False}})
        res.wait_for(TP, "paused", ready)


def test_operator_killed_mid_run_converges_with_one_job(kube, ns, res):
    first = OperatorProcess(kube, ns, **POLICY).start()
    second = None
    try:
        with Kubelet(kube.client, ns, SELECTOR, mode="manual") as kubelet:
            tp = res.create(TP, "crash", TP_SPEC)
            uid = tp["metadata"]["uid"]
            res.wait_for(TP, "crash", lambda r: phase(r) == "Running")
            first.kill()
            kubelet.finish("crash-train-g1", 0, json.dumps(TRAINED))  # the run ends while no operator runs
            second = OperatorProcess(kube, ns, **POLICY).start()
            done = res.wait_for(TP, "crash", ready)
            time.sleep(1)
            assert [j["metadata"]["name"] for j in res.jobs(uid)] == ["crash-train-g1"]
            assert done["status"]["bestModels"][0]["mae"] == 2.75
            second.kill()  # and once more, with nothing left to do
            third = OperatorProcess(kube, ns, **POLICY).start()
            time.sleep(2)
            third.close()
            assert len(res.jobs(uid)) == 1 and res.get(TP, "crash")["status"] == done["status"]
    finally:
        first.close()
        if second is not None:
            second.close()


def test_deletion_is_never_blocked_by_the_operator(kube, ns, res, operator):
    with Kubelet(kube.client, ns, SELECTOR, mode=succeed):
        tp = res.create(TP, "gone", TP_SPEC)
        res.wait_for(TP, "gone", ready)
    assert not tp["metadata"].get("finalizers")
    assert not res.get(TP, "gone")["metadata"].get("finalizers")
    operator.stop()
    res.delete(TP, "gone")
    with pytest.raises(ApiException) as caught:
        res.get(TP, "gone")
    assert caught.value.status == 404


def test_kopf_bookkeeping_uses_the_project_group(kube, ns, res, operator):
    with Kubelet(kube.client, ns, SELECTOR, mode=succeed):
        res.create(TP, "marks", TP_SPEC)
        done = res.wait_for(TP, "marks", ready)
    annotations = done["metadata"].get("annotations") or {}
    assert "kopf.modeltraining.kepler.io/last-handled-configuration" in annotations
    assert not [k for k in annotations if k.startswith("kopf.zalando.org")]


def test_a_secret_is_mounted_for_the_token(kube, ns, res, operator):
    for name in ("prom-token", "prom-ca"):
        res.core.create_namespaced_secret(ns, {"apiVersion": "v1", "kind": "Secret", "metadata": {
            "name": name, "labels": {"modeltraining.kepler.io/prometheus-credentials": "true"}}})
    spec = {**TP_SPEC, "prometheus": {"url": "https://prom:9091", "bearerTokenSecret": {"name": "prom-token"},
                                      "tls": {"caSecret": {"name": "prom-ca"}}}}
    tp = res.create(TP, "secure", spec)
    deadline = time.monotonic() + 20
    while not res.jobs(tp["metadata"]["uid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    (job,) = res.jobs(tp["metadata"]["uid"])
    pod = job["spec"]["template"]["spec"]
    assert {v["name"]: v.get("secret", {}).get("secretName") for v in pod["volumes"]} == {
        "models": None, "tmp": None, "prometheus-token": "prom-token", "prometheus-ca": "prom-ca"}
    command = pod["containers"][0]["command"]
    assert command[command.index("--bearer-token-file") + 1].endswith("/token")
    assert command[command.index("--ca-file") + 1].endswith("/ca.crt")


def test_a_schedule_starts_runs_on_time_and_keeps_the_last_n(kube, ns, res):
    proc = OperatorProcess(kube, ns, resync_seconds="1", **POLICY).start()
    try:
        with Kubelet(kube.client, ns, SELECTOR, mode=succeed):
            tp = res.create(TP, "cron", {**TP_SPEC, "schedule": "* * * * *", "historyLimit": 1})
            res.wait_for(TP, "cron", ready)
            scheduled = res.wait_for(TP, "cron", lambda r: (r["status"].get("lastRun") or {}).get("trigger")
                                     == "Schedule" and ready(r), timeout=75)
        tick = scheduled["status"]["lastScheduleTime"]
        assert tick.endswith(":00Z") and scheduled["status"]["lastRun"]["key"] == "s" + tick[:16].replace(
            "-", "").replace("T", "").replace(":", "")
        started = scheduled["status"]["lastRun"]["startTime"]
        assert started >= tick  # never early
        deadline = time.monotonic() + 10
        while len(res.jobs(tp["metadata"]["uid"])) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(res.jobs(tp["metadata"]["uid"])) == 1  # historyLimit 1: the first run was pruned
    finally:
        proc.close()
