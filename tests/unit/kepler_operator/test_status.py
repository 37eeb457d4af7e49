"""Status reduction: from the latest Job and its pod's termination message to status and conditions."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from kepler_contract.exits import EXIT_CODES
from kepler_operator import jobs, status
from kepler_operator.errors import InvalidSpecError, PipelineNotReadyError

T0, T1, T2 = "2026-11-23T12:00:00Z", "2026-11-23T12:05:00Z", "2026-11-23T12:10:00Z"
BEST = [
    {"energy_source": "acpi", "output_type": "AbsPower", "feature_group": "BPFOnly", "model_name": "SGD_0",
     "trainer": "SGDRegressorTrainer", "mae": 4.0, "path": "acpi/AbsPower/BPFOnly/SGD_0"},
    {"energy_source": "rapl-sysfs", "output_type": "DynPower", "feature_group": "BPFOnly", "model_name": "GB_0",
     "trainer": "GradientBoostingRegressorTrainer", "mae": 2.5, "path": "rapl-sysfs/DynPower/BPFOnly/GB_0"},
    {"energy_source": "rapl-sysfs", "output_type": "AbsPower", "feature_group": "BPFOnly", "model_name": "LR_0",
     "trainer": "LinearRegressionTrainer", "mae": 1.25, "path": "rapl-sysfs/AbsPower/BPFOnly/LR_0"},
]
OK = {"ok": True, "command": "train", "pipeline": "std", "path": "/models/team/std",
      "archive": "/models/team/std.zip", "report": "/models/team/std/report.html", "models": 12, "best": BEST}


def job(state="running", name="demo-train-g1", generation=1, reason="", message="", **annotations):
    conds = {"complete": [{"type": "Complete", "status": "True", "lastTransitionTime": T1}],
             "failed": [{"type": "Failed", "status": "True", "reason": reason, "message": message,
                         "lastTransitionTime": T1}],
             "running": [], "pending": []}[state]
    body = {"metadata": {"name": name, "creationTimestamp": T0, "labels": {jobs.LABEL_RUN: "g1"},
                         "annotations": {jobs.ANN_GENERATION: str(generation), jobs.ANN_TRIGGER: "Created",
                                         **annotations}},
            "status": {"conditions": conds}}
    if state != "pending":
        body["status"]["startTime"] = T0
    if state == "running":
        body["status"]["active"] = 1
    return body


def term(code=0, message="", reason=None):
    return {"exitCode": code, "message": message, "reason": reason or ("Completed" if code == 0 else "Error")}


def failure(reason, code, message="boom"):
    return json.dumps({"ok": False, "command": "train", "error": {"reason": reason, "exit_code": code,
                                                                   "message": message}})


def tp_status(old=None, **kw):
    args = {"generation": 1, "job": None, "terminated": None, "now": T2}
    return status.training_status(old or {}, **{**args, **kw})


def conds(st_):
    return {c["type"]: (c["status"], c["reason"]) for c in st_["conditions"]}


# ------------------------------------------------------------------------------- summaries

@pytest.mark.parametrize("message, ok", [
    (json.dumps(OK), True),
    ('{"ok": false, "error": {}}', True),
    ("", False), ("not json", False), ("[1, 2]", False), ('{"no": "ok"}', False), ('{"ok": "yes"}', False),
    ("Traceback (most recent call last):", False),
])
def test_parse_summary(message, ok):
    assert (status.parse_summary(message) is not None) is ok


# ------------------------------------------------------------------------------- outcomes

def test_no_job_no_outcome():
    assert status.job_outcome(None, None) is None


@pytest.mark.parametrize("state, expected", [("pending", "Pending"), ("running", "Running")])
def test_unfinished_jobs(state, expected):
    assert status.job_outcome(job(state), None).state == expected


def test_a_completed_job_with_a_summary_succeeded():
    outcome = status.job_outcome(job("complete"), term(0, json.dumps(OK)))
    assert outcome.state == "Succeeded" and outcome.summary.models == 12


@pytest.mark.parametrize("message", ["", "garbage", json.dumps({**OK, "ok": False})])
def test_a_completed_job_without_a_valid_summary_is_not_a_success(message):
    outcome = status.job_outcome(job("complete"), term(0, message))
    assert (outcome.state, outcome.reason) == ("Failed", "InvalidSummary")


@pytest.mark.parametrize("code, reason", sorted((c, r) for c, r in EXIT_CODES.items()))
def test_the_trainer_reason_wins(code, reason):
    outcome = status.job_outcome(job("failed", reason="PodFailurePolicy"), term(code, failure(reason, code, "why")))
    assert (outcome.state, outcome.reason, outcome.message) == ("Failed", reason, "why")


@pytest.mark.parametrize("code", sorted(EXIT_CODES))
def test_an_exit_code_without_summary_maps_through_the_table(code):
    outcome = status.job_outcome(job("failed", reason="BackoffLimitExceeded"), term(code, ""))
    assert outcome.reason == EXIT_CODES[code]


def test_an_oom_kill_is_reported_as_such():
    outcome = status.job_outcome(job("failed", reason="BackoffLimitExceeded"), term(137, "", reason="OOMKilled"))
    assert outcome.reason == "OOMKilled" and "137" in outcome.message


def test_a_deadline_without_a_pod_result_uses_the_job_condition():
    outcome = status.job_outcome(job("failed", reason="DeadlineExceeded", message="Job was active longer"), None)
    assert (outcome.reason, outcome.message) == ("DeadlineExceeded", "Job was active longer")


# ------------------------------------------------------------------------------- TP status

def test_a_successful_run():
    new = tp_status(job=job("complete"), terminated=term(0, json.dumps(OK)))
    assert new["phase"] == "Succeeded" and new["observedGeneration"] == 1
    assert conds(new) == {"Ready": ("True", "Succeeded"), "DataAvailable": ("True", "MetricsQueried"),
                          "Trained": ("True", "ModelsTrained"), "Published": ("True", "PipelinePublished")}
    assert new["modelCount"] == 12 and new["pipelinePath"] == "team/std" and new["archive"] == "team/std.zip"
    assert new["reportPath"] == "team/std/report.html"
    assert [(m["energySource"], m["outputType"]) for m in new["bestModels"]] == [
        ("rapl-sysfs", "AbsPower"), ("rapl-sysfs", "DynPower"), ("acpi", "AbsPower")]
    assert new["bestModels"][0] == {"energySource": "rapl-sysfs", "outputType": "AbsPower", "featureGroup": "BPFOnly",
                                    "modelName": "LR_0", "trainer": "LinearRegressionTrainer", "mae": 1.25,
                                    "path": "rapl-sysfs/AbsPower/BPFOnly/LR_0"}
    assert new["lastRun"] == {"jobName": "demo-train-g1", "key": "g1", "generation": 1, "trigger": "Created",
                              "startTime": T0, "completionTime": T1}


@pytest.mark.parametrize("reason, stage", [
    ("InvalidInput", "DataAvailable"), ("NoKeplerMetrics", "DataAvailable"), ("NoPowerMetrics", "DataAvailable"),
    ("TooFewSamples", "DataAvailable"), ("PrometheusUnreachable", "DataAvailable"),
    ("PrometheusQueryFailed", "DataAvailable"), ("InvalidConfiguration", "Trained"), ("Error", "Trained"),
    ("UsageError", "Trained"), ("AccuracyGateFailed", "Published"),
])
def test_failures_name_the_stage_that_failed(reason, stage):
    code = {v: k for k, v in EXIT_CODES.items()}[reason]
    new = tp_status(job=job("failed", reason="PodFailurePolicy"), terminated=term(code, failure(reason, code)))
    c = conds(new)
    assert new["phase"] == "Failed" and c["Ready"] == ("False", reason) and c[stage] == ("False", reason)
    order = list(status.TP_STAGES)
    for later in order[order.index(stage) + 1:]:
        assert c[later][0] == "False"
    for earlier in order[: order.index(stage)]:
        assert c[earlier][0] == ("True" if stage == "Published" else "Unknown")
    ready = next(x for x in new["conditions"] if x["type"] == "Ready")
    assert ready["message"] == "boom"


def test_running_keeps_the_results_of_the_last_success():
    done = tp_status(job=job("complete"), terminated=term(0, json.dumps(OK)))
    running = tp_status(done, generation=2, job=job("running", name="demo-train-g2", generation=2), now="later")
    assert running["phase"] == "Running" and conds(running)["Ready"] == ("False", "RunInProgress")
    assert running["bestModels"] == done["bestModels"] and running["pipelinePath"] == "team/std"
    assert running["lastRun"]["jobName"] == "demo-train-g2" and running["observedGeneration"] == 2


def test_last_transition_time_moves_only_when_status_flips():
    first = tp_status(job=job("running"), now=T0)
    again = tp_status(first, job=job("running"), now=T1)
    assert again == first  # nothing changed: nothing to write
    failed = tp_status(again, job=job("failed", reason="DeadlineExceeded"), now=T2)
    times = {c["type"]: c["lastTransitionTime"] for c in failed["conditions"]}
    assert times["Ready"] == T0  # False -> False with a new reason is not a transition
    assert times["Trained"] == T2  # Unknown -> False is


def test_no_job_yet():
    assert conds(tp_status())["Ready"] == ("False", "RunNotStarted")
    assert conds(tp_status(suspended=True))["Ready"] == ("False", "Suspended")
    new = tp_status(problem=InvalidSpecError("spec.window: bad"))
    assert new["phase"] == "Failed" and conds(new)["Ready"] == ("False", "InvalidSpec")


def test_rerun_and_schedule_markers_are_recorded_from_the_job():
    new = tp_status(job=job("running", **{jobs.ANN_RERUN: "tok", jobs.ANN_SCHEDULE: T1}))
    assert new["handledRerun"] == "tok" and new["lastScheduleTime"] == T1
    older = tp_status(new, job=job("running", **{jobs.ANN_SCHEDULE: T0}))
    assert older["lastScheduleTime"] == T1  # never goes back


def test_status_validates_and_drops_unknown_keys_in_the_summary():
    summary = {**OK, "best": [*BEST, "junk", {"energy_source": "acpi", "mae": "NaN?"}], "models": 3}
    new = tp_status(job=job("complete"), terminated=term(0, json.dumps(summary)))
    assert len(new["bestModels"]) == 4 and "mae" not in new["bestModels"][-1]


@pytest.mark.parametrize("path, expected", [
    ("/models/std", "std"), ("/models", ""), ("/models/a/../b", "b"), ("/elsewhere/x", "/elsewhere/x"), (None, None),
])
def test_volume_path(path, expected):
    assert status.volume_path(path) == expected


# ------------------------------------------------------------------------------- EE status

EE_OK = {"ok": True, "command": "estimate", "result": "/models/estimations/e/estimation_result.csv",
         "report": "/models/estimations/e/report.html",
         "model": BEST[2], "samples": 1200,
         "components": {"package": {"energy_joules": 3600.0, "mean_power_watts": 3.0, "mae": 0.5},
                        "dram": {"energy_joules": 120.0, "mean_power_watts": 0.1, "mae": None}}}


def ee_status(old=None, **kw):
    args = {"generation": 1, "job": None, "terminated": None, "now": T2}
    return status.estimation_status(old or {}, **{**args, **kw})


def test_an_estimation_succeeds_with_its_summary():
    new = ee_status(job=job("complete", name="e-estimate-g1"), terminated=term(0, json.dumps(EE_OK)))
    assert new["phase"] == "Succeeded" and conds(new) == {"Ready": ("True", "Succeeded"),
                                                          "ModelResolved": ("True", "ModelLoaded")}
    assert new["resultPath"] == "estimations/e/estimation_result.csv" and new["model"]["modelName"] == "LR_0"
    assert new["reportPath"] == "estimations/e/report.html"
    assert new["summary"] == {"samples": 1200, "components": [
        {"component": "dram", "energyJoules": 120.0, "meanPowerWatts": 0.1},
        {"component": "package", "energyJoules": 3600.0, "meanPowerWatts": 3.0, "mae": 0.5}]}


def test_an_estimation_waits_for_its_pipeline():
    new = ee_status(problem=PipelineNotReadyError("TrainingPipeline 'tp' has not published a pipeline yet"))
    assert new["phase"] == "Pending" and conds(new)["ModelResolved"] == ("False", "PipelineNotReady")


def test_an_estimation_whose_model_is_missing():
    new = ee_status(job=job("failed"), terminated=term(11, failure("ModelNotFound", 11)))
    assert conds(new) == {"Ready": ("False", "ModelNotFound"), "ModelResolved": ("False", "ModelNotFound")}


def test_an_estimation_failing_otherwise_keeps_the_model_resolved():
    new = ee_status(job=job("failed"), terminated=term(5, failure("NoPowerMetrics", 5)), resolved="pvc/std")
    assert conds(new) == {"Ready": ("False", "NoPowerMetrics"), "ModelResolved": ("True", "PipelineFound")}


# ------------------------------------------------------------------------------- events, pods

def test_transitions_emit_one_event_per_phase_change():
    assert status.transitions({"phase": "Running"}, {"phase": "Running"}) == []
    failed = tp_status(job=job("failed", reason="DeadlineExceeded", message="too long"))
    (event,) = status.transitions({"phase": "Running"}, failed)
    assert (event.type, event.reason) == ("Warning", "DeadlineExceeded") and "Running -> Failed" in event.message
    ok = tp_status(job=job("complete"), terminated=term(0, json.dumps(OK)))
    assert status.transitions({}, ok)[0].type == "Normal"


def pod(name, job_name, finished_at, code=0, message="", container="trainer"):
    return {"metadata": {"name": name, "labels": {"job-name": job_name}}, "status": {"containerStatuses": [
        {"name": container, "state": {"terminated": {"exitCode": code, "message": message,
                                                     "finishedAt": finished_at}}}]}}


def test_the_newest_pod_of_the_job_gives_the_result():
    pods = [pod("a", "j1", T0, 8), pod("b", "j1", T1, 0, "last"), pod("c", "j2", T2, 1),
            pod("d", "j1", T2, 3, container="sidecar"),
            {"metadata": {"name": "e", "labels": {"job-name": "j1"}}, "status": {"containerStatuses": [
                {"name": "trainer", "state": {"running": {}}}]}}]
    assert status.newest_terminated(pods, "j1")["message"] == "last"
    assert status.newest_terminated(pods, "j3") is None


conditions_strategy = st.lists(st.fixed_dictionaries({
    "type": st.sampled_from(["Ready", "Trained", "Published"]), "status": st.sampled_from(["True", "False", "Unknown"]),
    "reason": st.sampled_from(["A", "B"])}), unique_by=lambda c: c["type"])


@given(old=conditions_strategy, new=conditions_strategy)
def test_merge_conditions_moves_times_only_on_flips(old, new):
    before = status.merge_conditions([], old, T0, 1)
    after = status.merge_conditions(before, new, T1, 1)
    prior = {c["type"]: c["status"] for c in old}
    for cond in after:
        flipped = prior.get(cond["type"]) != cond["status"]
        assert cond["lastTransitionTime"] == (T1 if flipped else T0)
    assert status.merge_conditions(after, new, T2, 1) == after


def test_a_completed_job_waits_briefly_for_its_pods_result():
    """The Job's watch event may overtake the pod's: no flapping to Failed in between."""
    soon = "2026-11-23T12:05:30Z"  # 30 s after completion (T1)
    waiting = status.job_outcome(job("complete"), None, soon)
    assert (waiting.state, waiting.reason) == ("Running", "AwaitingResult")
    late = status.job_outcome(job("complete"), None, "2026-11-23T12:06:01Z")
    assert (late.state, late.reason) == ("Failed", "InvalidSummary")
    assert tp_status(job=job("complete"), now=soon)["phase"] == "Running"


def test_results_stay_when_jobs_and_pods_are_collected():
    done = tp_status(job=job("complete"), terminated=term(0, json.dumps(OK)))
    assert tp_status(done, job=job("complete"), terminated=None, now="2027-01-01T00:00:00Z") == done  # pod gone
    assert tp_status(done, job=None, now="2027-01-01T00:00:00Z") == done  # Job gone (ttlSecondsAfterFinished)
    later = tp_status(done, generation=2, job=None, suspended=True)
    assert later["observedGeneration"] == 2 and later["bestModels"] == done["bestModels"]
    failed = ee_status(job=job("failed"), terminated=term(5, failure("NoPowerMetrics", 5)))
    assert ee_status(failed, job=None) == failed


def test_a_new_job_replaces_the_recorded_result():
    done = tp_status(job=job("complete"), terminated=term(0, json.dumps(OK)))
    running = tp_status(done, generation=2, job=job("pending", name="demo-train-g2", generation=2))
    assert running["phase"] == "Pending" and running["lastRun"]["jobName"] == "demo-train-g2"


def test_a_rejected_job_is_a_failure_with_the_servers_reason():
    from kepler_operator.errors import JobRejectedError

    new = tp_status(problem=JobRejectedError("Job demo-train-g1 was rejected: exceeded quota"))
    assert new["phase"] == "Failed" and conds(new)["Ready"] == ("False", "JobRejected")
    assert "exceeded quota" in next(c for c in new["conditions"] if c["type"] == "Ready")["message"]


def test_best_models_say_which_model_kepler_runs_from_weights():
    """The trainer's summary marks each best model, and names the best one Kepler's regressor can load."""
    best = [{**BEST[1], "kepler_weights": False, "kepler_weights_model": "BPFOnly/SGD_0"},
            {**BEST[2], "kepler_weights": True, "kepler_weights_model": "BPFOnly/LR_0"}]
    new = tp_status(job=job("complete"), terminated=term(0, json.dumps({**OK, "best": best})))
    marks = {m["modelName"]: (m["keplerWeights"], m["keplerWeightsModel"]) for m in new["bestModels"]}
    assert marks == {"GB_0": (False, "BPFOnly/SGD_0"), "LR_0": (True, "BPFOnly/LR_0")}
