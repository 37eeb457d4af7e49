"""The fields of a Job and of its pods that the operator reads, typed, parsed once where they come in.

A Job body comes from a kopf index (a watch) and pods from `Kube.list_pods`; `ObservedJob.from_body`
and `newest_terminated` turn them into these frozen records, and the status reduction works on them
only. Parsing is tolerant like `kepler_contract.summary`: a field of the wrong type reads as absent, so
an odd object written by another controller cannot fail a reconcile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from kepler_contract.summary import RunSummary, parse_summary

TRUE = "True"
COMPLETE, FAILED = "Complete", "Failed"
JOB_NAME_LABELS = ("job-name", "batch.kubernetes.io/job-name")
"""The labels the Job controller puts on its pods (the second since Kubernetes 1.27)."""


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _strings(value: object) -> dict[str, str]:
    return {k: v for k, v in _mapping(value).items() if isinstance(v, str)}


@dataclasses.dataclass(frozen=True)
class JobCondition:
    """One of `status.conditions` of a Job (the operator reads Complete and Failed)."""

    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> JobCondition:
        return cls(type=_text(entry.get("type")), status=_text(entry.get("status")), reason=_text(entry.get("reason")),
                   message=_text(entry.get("message")),
                   last_transition_time=_optional_text(entry.get("lastTransitionTime")))


@dataclasses.dataclass(frozen=True)
class ObservedJob:
    """A Job of a run as the operator sees it: identity, run annotations and progress."""

    name: str
    namespace: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    created: str | None = None
    conditions: tuple[JobCondition, ...] = ()
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    start_time: str | None = None
    completion_time: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ObservedJob:
        meta, status = _mapping(body.get("metadata")), _mapping(body.get("status"))
        conditions = status.get("conditions")
        return cls(
            name=_text(meta.get("name")), namespace=_text(meta.get("namespace")), labels=_strings(meta.get("labels")),
            annotations=_strings(meta.get("annotations")), created=_optional_text(meta.get("creationTimestamp")),
            conditions=tuple(JobCondition.from_json(c) for c in conditions if isinstance(c, Mapping))
            if isinstance(conditions, list) else (),
            active=_count(status.get("active")), succeeded=_count(status.get("succeeded")),
            failed=_count(status.get("failed")), start_time=_optional_text(status.get("startTime")),
            completion_time=_optional_text(status.get("completionTime")))

    def condition(self, kind: str) -> JobCondition | None:
        """The condition `kind` when it holds (status True), else None."""
        return next((c for c in self.conditions if c.type == kind and c.status == TRUE), None)

    @property
    def complete(self) -> JobCondition | None:
        return self.condition(COMPLETE)

    @property
    def failed_condition(self) -> JobCondition | None:
        return self.condition(FAILED)

    @property
    def finished(self) -> bool:
        return self.complete is not None or self.failed_condition is not None


@dataclasses.dataclass(frozen=True)
class Terminated:
    """The trainer container's terminated state: its exit code and its termination message (the run summary)."""

    exit_code: int | None = None
    reason: str | None = None
    """The kubelet's reason: Completed, Error, OOMKilled, ..."""
    message: str = ""
    finished_at: str = ""

    @classmethod
    def from_json(cls, state: Mapping[str, Any]) -> Terminated:
        code = state.get("exitCode")
        return cls(exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
                   reason=_optional_text(state.get("reason")), message=_text(state.get("message")),
                   finished_at=_text(state.get("finishedAt")))

    @property
    def summary(self) -> RunSummary | None:
        """The run summary the trainer wrote as its termination message, if it is one."""
        return parse_summary(self.message)


def newest_terminated(pods: Sequence[Mapping[str, Any]], job_name: str, container_name: str) -> Terminated | None:
    """The terminated state of the container `container_name` in the newest finished pod of a Job."""
    candidates: list[tuple[str, str, Terminated]] = []
    for pod in pods:
        meta = _mapping(pod.get("metadata"))
        labels = _strings(meta.get("labels"))
        owner = next((labels[k] for k in JOB_NAME_LABELS if k in labels), job_name)
        if owner != job_name:
            continue  # selected by the run's labels, but another Job's pod
        statuses = _mapping(pod.get("status")).get("containerStatuses")
        for container in statuses if isinstance(statuses, list) else []:
            state = _mapping(_mapping(container).get("state")).get("terminated")
            if _mapping(container).get("name") == container_name and isinstance(state, Mapping) and state:
                terminated = Terminated.from_json(state)
                candidates.append((terminated.finished_at, _text(meta.get("name")), terminated))
    return max(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None
