"""The Job and Pod fields the operator reads, parsed once: what a real object says, and odd objects read as absent."""

from __future__ import annotations

from kepler_operator.observed import JobCondition, ObservedJob, Terminated, newest_terminated

T0, T1, T2 = "2026-11-23T12:00:00Z", "2026-11-23T12:05:00Z", "2026-11-23T12:10:00Z"


def pod(name, job_name, finished_at, code=0, message="", container="trainer", label="job-name"):
    return {"metadata": {"name": name, "labels": {label: job_name}}, "status": {"containerStatuses": [
        {"name": container, "state": {"terminated": {"exitCode": code, "message": message, "reason": "Error",
                                                     "finishedAt": finished_at}}}]}}


def test_the_newest_pod_of_the_job_gives_the_result():
    pods = [pod("a", "j1", T0, 8), pod("b", "j1", T1, 0, "last"), pod("c", "j2", T2, 1),
            pod("d", "j1", T2, 3, container="sidecar"),
            {"metadata": {"name": "e", "labels": {"job-name": "j1"}}, "status": {"containerStatuses": [
                {"name": "trainer", "state": {"running": {}}}]}}]
    assert newest_terminated(pods, "j1", "trainer") == Terminated(exit_code=0, reason="Error", message="last",
                                                                  finished_at=T1)
    assert newest_terminated(pods, "j3", "trainer") is None
    assert newest_terminated([pod("f", "j3", T0, 5, label="batch.kubernetes.io/job-name")], "j3",
                             "trainer").exit_code == 5


def test_a_job_as_the_api_server_writes_it():
    body = {"metadata": {"name": "j", "namespace": "ns", "labels": {"a": "b"}, "annotations": {"x": "y"},
                         "creationTimestamp": T0},
            "status": {"active": 0, "succeeded": 1, "startTime": T0, "completionTime": T1, "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": T1},
                {"type": "Complete", "status": "True", "lastTransitionTime": T1}]}}
    job = ObservedJob.from_body(body)
    assert (job.name, job.namespace, job.labels, job.annotations, job.created) == ("j", "ns", {"a": "b"}, {"x": "y"},
                                                                                   T0)
    assert job.complete == JobCondition("Complete", "True", last_transition_time=T1)
    assert job.finished and job.failed_condition is None and job.succeeded == 1
    assert (job.start_time, job.completion_time) == (T0, T1)


def test_a_condition_that_does_not_hold_is_not_finished():
    job = ObservedJob.from_body({"metadata": {"name": "j"}, "status": {"active": 1, "conditions": [
        {"type": "Failed", "status": "False"}]}})
    assert not job.finished and job.active == 1


def test_fields_of_the_wrong_type_read_as_absent():
    job = ObservedJob.from_body({"metadata": {"name": 3, "labels": ["x"], "annotations": {"n": 1}},
                                 "status": {"active": True, "conditions": {"type": "Complete"}, "startTime": 7}})
    assert (job.name, job.labels, job.annotations, job.active, job.conditions, job.start_time) == \
        ("", {}, {}, 0, (), None)
    assert Terminated.from_json({"exitCode": "1", "message": None}) == Terminated()
    assert ObservedJob.from_body({}).finished is False


def test_the_termination_message_is_read_as_a_run_summary():
    assert Terminated(message='{"ok": true, "command": "train", "models": 2}').summary.models == 2
    assert Terminated(message="Traceback (most recent call last):").summary is None
