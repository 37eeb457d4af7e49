"""Run planning and Job manifests: pure functions from a resource to what should run."""

from __future__ import annotations

import datetime

import kubernetes_validate
import pytest
from hypothesis import given, settings, strategies as st

from kepler_operator import api, jobs
from kepler_operator.errors import PipelineNotFoundError, PipelineNotReadyError

UTC = datetime.UTC
NOW = datetime.datetime(2026, 11, 23, 12, 30, 10, tzinfo=UTC)
CREATED = "2026-11-23T10:00:00Z"
OWNER = jobs.Owner(kind="TrainingPipeline", name="demo", namespace="ns", uid="uid-1")
DEFAULTS = jobs.JobDefaults(image="trainer:1", pvc="default-pvc", run_as_user=1234)
BASE = {"prometheus": {"url": "http://prometheus:9090"}, "window": {"intervalSeconds": 600},
        "pipelineName": "std_v1"}


def tp(**change) -> api.TrainingPipelineSpec:
    return api.TrainingPipelineSpec.model_validate({**BASE, **change})


def view(name="demo-train-g1", key="g1", generation=1, trigger="Created", created=CREATED, finished=True, **kw):
    return jobs.JobView(name=name, key=key, generation=generation, trigger=trigger, created=created,
                        finished=finished, **kw)


def plan(**kw):
    args = {"generation": 1, "status": {}, "jobs": [], "created": CREATED, "now": NOW}
    return jobs.next_run(**{**args, **kw})


# ---------------------------------------------------------------------------------- next_run

def test_a_new_resource_starts_its_first_run():
    assert plan() == jobs.RunRequest(key="g1", trigger="Created", generation=1)


def test_the_same_spec_never_starts_a_second_run_from_status():
    assert plan(status={"lastRun": {"generation": 1, "jobName": "demo-train-g1"}}) is None


def test_the_same_spec_never_starts_a_second_run_from_jobs_even_before_status_is_written():
    assert plan(jobs=[view(finished=False)]) is None


def test_a_spec_change_waits_for_the_running_run_then_starts():
    assert plan(generation=2, jobs=[view(finished=False)]) is None  # one writer per pipeline
    run = plan(generation=2, jobs=[view(finished=True)])
    assert run == jobs.RunRequest(key="g2", trigger="SpecChanged", generation=2)


def test_suspend_starts_nothing():
    assert plan(suspend=True) is None
    assert plan(suspend=True, rerun="again") is None


def test_a_rerun_annotation_starts_one_more_run_of_the_same_generation():
    run = plan(jobs=[view()], rerun="2026-11-23")
    assert run is not None and run.trigger == "Rerun" and run.rerun == "2026-11-23"
    assert run.key == jobs.rerun_key(1, "2026-11-23") and run.key.startswith("g1-r")


def test_a_handled_rerun_token_does_nothing():
    assert plan(jobs=[view()], rerun="t", status={"handledRerun": "t", "lastRun": {"generation": 1}}) is None
    assert plan(jobs=[view(), view(name="x", key="g1-rabc", rerun="t")], rerun="t") is None


def test_a_rerun_waits_for_the_running_run():
    assert plan(jobs=[view(finished=False)], rerun="t") is None


def test_different_tokens_give_different_keys():
    assert jobs.rerun_key(1, "a") != jobs.rerun_key(1, "b") != jobs.rerun_key(2, "a")


def test_a_schedule_tick_after_the_last_run_starts_a_run():
    run = plan(jobs=[view()], schedule="0 * * * *")
    assert run is not None and run.trigger == "Schedule"
    assert run.schedule_time == datetime.datetime(2026, 11, 23, 12, 0, tzinfo=UTC) and run.key == "s202611231200"


def test_a_schedule_does_not_fire_for_ticks_before_creation():
    assert plan(jobs=[view()], schedule="0 * * * *", created="2026-11-23T12:10:00Z") is None


def test_a_schedule_tick_already_started_is_not_started_again():
    status = {"lastScheduleTime": "2026-11-23T12:00:00Z", "lastRun": {"generation": 1}}
    assert plan(jobs=[view()], schedule="0 * * * *", status=status) is None
    started = view(name="demo-train-s202611231200", key="s202611231200", schedule_time="2026-11-23T12:00:00Z")
    assert plan(jobs=[view(), started], schedule="0 * * * *") is None


def test_a_schedule_tick_waits_for_the_running_run():
    assert plan(jobs=[view(finished=False)], schedule="* * * * *") is None


def test_the_next_tick_after_a_scheduled_run():
    status = {"lastScheduleTime": "2026-11-23T11:00:00Z", "lastRun": {"generation": 1}}
    run = plan(jobs=[view()], schedule="0 * * * *", status=status)
    assert run is not None and run.key == "s202611231200"


# ---------------------------------------------------------------------------------- pruning

def test_prune_keeps_the_newest_runs_and_never_a_running_one():
    views = [view(name=f"j{i}", created=f"2026-11-23T1{i}:00:00Z", finished=i != 0) for i in range(5)]
    assert jobs.jobs_to_prune(views, keep=2) == ["j2", "j1"]  # j0 is still running
    assert jobs.jobs_to_prune(views, keep=10) == []


# ---------------------------------------------------------------------------------- names

def test_job_names_are_deterministic_and_per_kind():
    assert jobs.job_name(OWNER, "g3") == "demo-train-g3"
    ee = jobs.Owner(kind="EnergyEstimation", name="demo", namespace="ns", uid="u")
    assert jobs.job_name(ee, "g3") == "demo-estimate-g3"


@pytest.mark.parametrize("length", [50, 63, 120, 253])
def test_long_owner_names_fit_63_characters_and_stay_distinct(length):
    a = jobs.Owner(kind="TrainingPipeline", name="a" * length, namespace="ns", uid="1")
    b = jobs.Owner(kind="TrainingPipeline", name="a" * (length - 1) + "b", namespace="ns", uid="2")
    key = "s202611231200"
    assert len(jobs.job_name(a, key)) <= 63 and jobs.job_name(a, key).endswith(key)
    assert jobs.job_name(a, key) == jobs.job_name(a, key)
    assert jobs.job_name(a, key) != jobs.job_name(b, key)


# ---------------------------------------------------------------------------------- commands

def test_train_command_follows_the_contract():
    cmd = jobs.train_command(tp(storage={"subPath": "team-a"}))
    assert cmd[:4] == ["kepler-model", "train", "-s", "http://prometheus:9090"]
    pairs = dict(zip(cmd[2::1], cmd[3::1], strict=False))
    assert pairs["--interval"] == "600" and pairs["--step"] == "3" and pairs["--metric-prefix"] == "kepler_"
    assert pairs["-p"] == "std_v1" and pairs["-e"] == "rapl-sysfs,acpi" and pairs["--isolator"] == "min"
    assert pairs["--abs-trainers"] == "LinearRegressionTrainer,SGDRegressorTrainer,GradientBoostingRegressorTrainer"
    assert pairs["--model-path"] == "/models/team-a" and pairs["--data-path"] == "/tmp/work"
    assert cmd[-2:] == ["--termination-log", "/dev/termination-log"]
    assert "-fg" not in cmd and "--max-mae" not in cmd and "--profile" not in cmd


def test_train_command_with_every_option():
    cmd = jobs.train_command(tp(
        window={"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00+00:00", "stepSeconds": 15},
        labelFilters={"job": "kepler", "instance": "node-1"}, featureGroups=["BPFOnly", "CounterOnly"],
        isolator={"type": "profile", "profile": "idle"}, accuracyGate={"maxMae": 7.5},
        prometheus={"url": "https://prom:9091", "bearerTokenSecret": {"name": "tok"},
                    "tls": {"caSecret": {"name": "ca", "key": "bundle.pem"}}}))
    text = " ".join(cmd)
    assert "--start-time 2026-11-01T00:00:00Z --end-time 2026-11-02T00:00:00Z --step 15" in text
    assert "--label-equals instance=node-1 --label-equals job=kepler" in text  # sorted, stable, equality only
    assert "--label-filter" not in text
    assert "-fg BPFOnly,CounterOnly" in text and "--profile /models/idle" in text and "--max-mae 7.5" in text
    assert f"--bearer-token-file {jobs.TOKEN_DIR}/token" in text and f"--ca-file {jobs.CA_DIR}/bundle.pem" in text
    assert "--interval" not in text and "--insecure-skip-tls-verify" not in text


def test_the_profile_isolator_reads_the_volume_or_an_idle_window_of_the_same_prometheus():
    cmd = " ".join(jobs.train_command(tp(isolator={"type": "profile", "profile": "profiles/idle.json"},
                                         storage={"subPath": "team"})))
    assert "--isolator profile --profile /models/profiles/idle.json" in cmd  # volume root, as estimation inputs
    window = {"start": "2026-11-01T00:00:00Z", "end": "2026-11-01T00:10:00Z", "stepSeconds": 5}
    cmd = " ".join(jobs.train_command(tp(isolator={"type": "profile", "idleWindow": window})))
    assert ("--profile-start-time 2026-11-01T00:00:00Z --profile-end-time 2026-11-01T00:10:00Z --profile-step 5"
            in cmd) and "--profile " not in cmd
    for bad in ({"type": "profile"}, {"type": "profile", "profile": "p.json", "idleWindow": window},
                {"type": "profile", "idleWindow": {**window, "end": window["start"]}}):
        with pytest.raises(ValueError):
            tp(isolator=bad)


def test_insecure_tls_flag():
    cmd = jobs.train_command(tp(prometheus={"url": "https://p", "tls": {"insecureSkipVerify": True}}))
    assert "--insecure-skip-tls-verify" in cmd


def ee(**change) -> api.EnergyEstimationSpec:
    base = {"model": {"pipelinePath": "pipelines/std_v1"}, "input": {"file": "inputs/q.json"}}
    return api.EnergyEstimationSpec.model_validate({**base, **change})


def test_estimate_command_from_a_file_and_a_pipeline_path():
    spec = ee(model={"pipelinePath": "pipelines/std_v1", "featureGroup": "BPFOnly", "modelName": "SGD_0",
                     "outputType": "DynPower"})
    where = jobs.resolve_model(spec, "est", None, "default-pvc")
    assert where == jobs.ModelLocation(pvc="default-pvc", pipeline_parent="pipelines", pipeline_name="std_v1",
                                       results_dir="estimations/est")
    text = " ".join(jobs.estimate_command(spec, where))
    assert text.startswith("kepler-model estimate -i /models/inputs/q.json -p std_v1 -e rapl-sysfs -ot DynPower")
    assert "-fg BPFOnly --model-name SGD_0 -o /models/estimations/est --model-path /models/pipelines" in text


def test_estimate_command_from_prometheus():
    spec = ee(input={"prometheus": {"url": "http://p:9090"}, "window": {"intervalSeconds": 300}})
    text = " ".join(jobs.estimate_command(spec, jobs.resolve_model(spec, "est", None, "pvc")))
    assert "-s http://p:9090 --interval 300 --step 3 --metric-prefix kepler_" in text and " -i " not in text


def test_resolving_a_pipeline_reference():
    spec = ee(model={"pipelineRef": {"name": "tp"}})
    with pytest.raises(PipelineNotFoundError):
        jobs.resolve_model(spec, "est", None, "pvc")
    pipeline = {"spec": {**BASE, "storage": {"pvcName": "models", "subPath": "team"}}, "status": {}}
    with pytest.raises(PipelineNotReadyError):
        jobs.resolve_model(spec, "est", pipeline, "pvc")
    pipeline["status"] = {"pipelinePath": "team/std_v1"}
    assert jobs.resolve_model(spec, "est", pipeline, "pvc") == jobs.ModelLocation(
        pvc="models", pipeline_parent="team", pipeline_name="std_v1", results_dir="team/estimations/est")


# ---------------------------------------------------------------------------------- manifests

def manifest(spec=None, run=None, defaults=DEFAULTS):
    return jobs.training_job(OWNER, spec or tp(), run or jobs.RunRequest("g1", "Created", 1), defaults)


def test_the_job_is_owned_labelled_and_bounded():
    job = manifest(tp(job={"backoffLimit": 2, "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 60}))
    meta = job["metadata"]
    assert meta["name"] == "demo-train-g1" and meta["namespace"] == "ns"
    assert meta["ownerReferences"] == [{"apiVersion": "modeltraining.kepler.io/v1alpha1", "kind": "TrainingPipeline",
                                        "name": "demo", "uid": "uid-1", "controller": True,
                                        "blockOwnerDeletion": True}]
    assert meta["labels"][jobs.LABEL_OWNER_UID] == "uid-1" and meta["labels"][jobs.LABEL_RUN] == "g1"
    assert job["spec"]["template"]["metadata"]["labels"] == meta["labels"]  # pods are found by owner too
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"],
            job["spec"]["ttlSecondsAfterFinished"]) == (2, 600, 60)


def test_the_pod_runs_as_non_root_with_a_read_only_root():
    pod = manifest()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1234
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_permanent_exit_codes_fail_the_job_at_once():
    rules = manifest()["spec"]["podFailurePolicy"]["rules"]
    fail = rules[0]["onExitCodes"]
    assert rules[0]["action"] == "FailJob" and fail["operator"] == "In"
    assert 1 not in fail["values"] and 8 not in fail["values"]  # a crash or Prometheus down may be retried
    assert {3, 4, 5, 6, 7, 9, 10, 11} <= set(fail["values"])


def test_volumes_image_and_resources():
    job = manifest(tp(storage={"pvcName": "mine"}, job={"image": "custom:2", "resources": {
        "requests": {"cpu": "500m", "memory": "1Gi"}}},
        prometheus={"url": "http://p", "bearerTokenSecret": {"name": "tok", "key": "t"}}))
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "mine"}
    assert volumes["prometheus-token"]["secret"]["secretName"] == "tok"
    container = pod["containers"][0]
    assert container["image"] == "custom:2" and container["resources"] == {"requests": {"cpu": "500m",
                                                                                        "memory": "1Gi"}}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {jobs.MODELS_MOUNT, jobs.TMP_MOUNT, jobs.TOKEN_DIR} <= mounts


def test_the_default_pvc_and_image_come_from_settings():
    pod = manifest()["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "default-pvc"
    assert pod["containers"][0]["image"] == "trainer:1"


def test_run_metadata_is_recorded_on_the_job():
    run = jobs.RunRequest("s202611231200", "Schedule", 4,
                          schedule_time=datetime.datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    job = manifest(run=run)
    annotations = job["metadata"]["annotations"]
    assert annotations[jobs.ANN_SCHEDULE] == "2026-11-23T12:00:00Z" and annotations[jobs.ANN_GENERATION] == "4"
    back = jobs.job_view({**job, "status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    assert (back.key, back.generation, back.trigger, back.finished) == ("s202611231200", 4, "Schedule", True)
    assert back.schedule_time == "2026-11-23T12:00:00Z"


@pytest.mark.parametrize("conditions, finished", [
    ([], False),
    ([{"type": "Complete", "status": "True"}], True),
    ([{"type": "Failed", "status": "True"}], True),
    ([{"type": "Failed", "status": "False"}], False),
    ([{"type": "Suspended", "status": "True"}], False),
])
def test_job_view_finished(conditions, finished):
    assert jobs.job_view({"metadata": {"name": "j"}, "status": {"conditions": conditions}}).finished is finished


@pytest.mark.parametrize("spec", [
    tp(),
    tp(prometheus={"url": "https://p", "bearerTokenSecret": {"name": "tok"}, "tls": {"caSecret": {"name": "ca"}}},
       job={"resources": {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}}}),
])
def test_job_manifests_are_valid_kubernetes_jobs(spec):
    kubernetes_validate.validate(manifest(spec), "1.33", strict=True)


def test_estimation_job_is_a_valid_kubernetes_job():
    spec = ee()
    job = jobs.estimation_job(jobs.Owner("EnergyEstimation", "est", "ns", "u"), spec,
                              jobs.resolve_model(spec, "est", None, "pvc"), jobs.RunRequest("g1", "Created", 1),
                              DEFAULTS)
    kubernetes_validate.validate(job, "1.33", strict=True)
    assert job["metadata"]["name"] == "est-estimate-g1"


def test_runs_created_in_the_same_second_are_ordered_by_generation():
    same = "2026-11-23T12:00:00Z"
    views = [view(name="demo-train-g10", key="g10", generation=10, created=same),
             view(name="demo-train-g9", key="g9", generation=9, created=same)]
    assert jobs.jobs_to_prune(views, keep=1) == ["demo-train-g9"]

minutes = st.integers(min_value=0, max_value=3 * 24 * 60)


@settings(max_examples=200, deadline=None)
@given(generation=st.integers(1, 5), started=st.integers(0, 5), rerun=st.one_of(st.none(), st.sampled_from(["a", "b"])),
       schedule=st.one_of(st.none(), st.sampled_from(["*/5 * * * *", "0 * * * *", "0 3 * * *"])),
       now_minute=minutes, running=st.booleans())
def test_a_started_run_is_never_started_again(generation, started, rerun, schedule, now_minute, running):
    """Whatever the world looks like, once the planned run's Job exists the planner wants nothing more."""
    started = min(started, generation)
    created = "2026-11-20T00:00:00Z"
    now = datetime.datetime(2026, 11, 20, tzinfo=UTC) + datetime.timedelta(minutes=now_minute)
    existing = [view(name=f"j{started}", key=f"g{started}", generation=started, finished=not running)] \
        if started else []
    args = {"generation": generation, "status": {}, "created": created, "now": now, "rerun": rerun,
            "schedule": schedule}
    run = jobs.next_run(jobs=existing, **args)
    assert run == jobs.next_run(jobs=existing, **args)  # deterministic
    if run is None:
        return
    assert run.generation == generation
    started_view = view(name=jobs.job_name(OWNER, run.key), key=run.key, generation=run.generation,
                        trigger=run.trigger, created=jobs.format_time(now), finished=False, rerun=run.rerun,
                        schedule_time=jobs.format_time(run.schedule_time) if run.schedule_time else None)
    assert jobs.next_run(jobs=[*existing, started_view], **args) is None
    if run.schedule_time is not None:
        assert run.schedule_time <= now  # never early


def test_train_command_with_a_feature_set():
    cmd = jobs.train_command(tp(featureSet={"preset": "kepler-vm", "joinMap": {"guest-2:9100": "vm-b",
                                                                              "guest-1:9100": "vm-a"}},
                                accuracyGate={"maxMape": 12.5, "maxIdleBias": 3.0}))
    text = " ".join(cmd)
    assert "--features kepler-vm --join-map guest-1:9100=vm-a,guest-2:9100=vm-b" in text  # sorted pairs
    assert "--max-mape 12.5 --max-idle-bias 3.0" in text and "-fg" not in cmd
    from_file = jobs.train_command(tp(featureSet={"file": "sets/guests.yaml"}, storage={"subPath": "team-a"}))
    assert from_file[from_file.index("--features") + 1] == "/models/sets/guests.yaml"
    assert "--join-map" not in from_file
    assert "--history" not in from_file
    with_past = jobs.train_command(tp(featureSet={"preset": "kepler-vm", "historySeconds": [15, 60, 180]}))
    assert with_past[with_past.index("--history") + 1] == "15,60,180"
