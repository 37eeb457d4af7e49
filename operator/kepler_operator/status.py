"""From what is observed (the latest Job, its pod's termination message) to status: pure functions.

The reduction is level-based: it reads the world as it is, never the history of events, so a
restarted operator computes the same status. `lastTransitionTime` only moves when a condition's
status flips.
"""

from __future__ import annotations

import dataclasses
import datetime
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from kepler_contract import exits
from kepler_contract.exits import EXIT_CODES
from kepler_contract.summary import ModelSummary, RunSummary, parse_summary as parse_summary

from . import api
from .errors import InvalidSpecError, JobRejectedError, OperatorError, PolicyDeniedError
from .jobs import ANN_GENERATION, ANN_RERUN, ANN_SCHEDULE, ANN_TRIGGER, LABEL_RUN, MODELS_MOUNT
from .observed import FAILED, JobCondition, ObservedJob, Terminated
from .onnx_configmap import CONDITION as ONNX_CONDITION

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
TP_STAGES = ("DataAvailable", "Trained", "Published")
STAGE_OF_REASON = {
    **{e.reason: "DataAvailable" for e in (exits.INVALID_INPUT, exits.NO_KEPLER_METRICS, exits.NO_POWER_METRICS,
                                           exits.TOO_FEW_SAMPLES, exits.PROMETHEUS_UNREACHABLE,
                                           exits.PROMETHEUS_QUERY_FAILED)},
    exits.ACCURACY_GATE_FAILED.reason: "Published",
}
"""Which TrainingPipeline stage a failure reason belongs to (others: Trained)."""
SOURCE_ORDER = {s.value: i for i, s in enumerate(api.EnergySource)}
OUTPUT_ORDER = {o.value: i for i, o in enumerate(api.OutputType)}
MAX_MESSAGE = 4096
RESULT_GRACE_SECONDS = 60
"""How long a completed Job may lack its pod's result before the run counts as failed."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The state of one run, read from its Job and its pod."""

    state: str  # one of api.Phase
    reason: str
    message: str
    summary: RunSummary | None = None


@dataclasses.dataclass(frozen=True)
class Transition:
    """A change worth a Kubernetes Event."""

    type: str  # Normal or Warning
    reason: str
    message: str


def _failure(job: ObservedJob, terminated: Terminated | None, summary: RunSummary | None) -> Outcome:
    if summary is not None and not summary.ok and summary.error is not None and summary.error.reason:
        return Outcome(api.Phase.FAILED.value, summary.error.reason, summary.error.message, summary)
    failed = job.failed_condition or JobCondition(FAILED, TRUE)
    code = terminated.exit_code if terminated else None
    if code is not None and code in EXIT_CODES and code != 0:
        message = (terminated.message if terminated else "") or failed.message or f"the trainer exited with {code}"
        return Outcome(api.Phase.FAILED.value, EXIT_CODES[code], message[:MAX_MESSAGE])
    if terminated is not None and terminated.reason not in (None, "Error", "Completed"):  # e.g. OOMKilled
        return Outcome(api.Phase.FAILED.value, str(terminated.reason),
                       f"the trainer container was {terminated.reason} (exit code {code})")
    return Outcome(api.Phase.FAILED.value, failed.reason or "JobFailed", failed.message or "the Job failed")


def _seconds_between(earlier: str | None, later: str | None) -> float:
    try:
        start = datetime.datetime.fromisoformat(str(earlier).replace("Z", "+00:00"))
        end = datetime.datetime.fromisoformat(str(later).replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    return (end - start).total_seconds()


def job_outcome(job: ObservedJob | None, terminated: Terminated | None, now: str | None = None) -> Outcome | None:
    """The state of a run from its Job's conditions and the terminated state of its newest pod."""
    if job is None:
        return None
    summary = terminated.summary if terminated else None
    if job.failed_condition is not None:
        return _failure(job, terminated, summary)
    complete = job.complete
    if complete is not None:
        if terminated is None and _seconds_between(complete.last_transition_time, now) < RESULT_GRACE_SECONDS:
            # the Job's watch event can overtake its pod's: wait a little for the termination message
            return Outcome(api.Phase.RUNNING.value, "AwaitingResult",
                           f"Job {job.name} completed; waiting for its pod's termination message")
        if summary is None or not summary.ok:
            return Outcome(api.Phase.FAILED.value, "InvalidSummary",
                           "the Job completed but its pod left no valid termination summary")
        return Outcome(api.Phase.SUCCEEDED.value, "Succeeded", "", summary)
    if job.active or job.start_time:
        return Outcome(api.Phase.RUNNING.value, "RunInProgress", f"Job {job.name} is running")
    return Outcome(api.Phase.PENDING.value, "JobPending", f"Job {job.name} is waiting to start")


def volume_path(path: str | None) -> str | None:
    """A path inside the Job's volume mount, made relative to the volume root."""
    if not path:
        return None
    norm = posixpath.normpath(path)
    if norm == MODELS_MOUNT:
        return ""
    if norm.startswith(MODELS_MOUNT + "/"):
        return norm[len(MODELS_MOUNT) + 1:]
    return norm


def best_models(summary: RunSummary) -> list[dict[str, Any]]:
    """The summary's best models in status form, ordered by energy source then output type."""
    out = [_model_entry(entry) for entry in summary.best]
    out.sort(key=lambda m: (SOURCE_ORDER.get(m["energySource"], 99), OUTPUT_ORDER.get(m["outputType"], 99),
                            m["featureGroup"]))
    return out[:32]


def _model_entry(entry: ModelSummary) -> dict[str, Any]:
    return {"energySource": entry.energy_source, "outputType": entry.output_type,
            "featureGroup": entry.feature_group, "modelName": entry.model_name, "trainer": entry.trainer,
            "mae": entry.mae, "path": entry.path,
            **({"keplerWeights": entry.kepler_weights} if entry.kepler_weights is not None else {}),
            **({"keplerWeightsModel": entry.kepler_weights_model[:256]}
               if entry.kepler_weights_model is not None else {}),
            **({"onnxModel": entry.onnx_model[:256]} if entry.onnx_model is not None else {})}


def merge_conditions(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], now: str,
                     generation: int) -> list[dict[str, Any]]:
    """New conditions, keeping each old `lastTransitionTime` whose status did not flip."""
    before = {c.get("type"): c for c in old}
    merged = []
    for cond in new:
        prior = before.get(cond["type"])
        kept = prior["lastTransitionTime"] if prior is not None and prior.get("status") == cond["status"] else None
        merged.append({"type": cond["type"], "status": cond["status"], "reason": cond["reason"],
                       "message": cond.get("message", "")[:MAX_MESSAGE],
                       "lastTransitionTime": now if kept is None else kept,
                       "observedGeneration": generation})
    return merged


def _cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def _tp_conditions(outcome: Outcome | None, problem: OperatorError | None, suspended: bool) -> list[dict[str, str]]:
    if outcome is None:
        if problem is not None:
            reason, message = problem.reason, str(problem)
        elif suspended:
            reason, message = "Suspended", "spec.suspend is true: no run was started"
        else:
            reason, message = "RunNotStarted", "no run was started yet"
        return [_cond("Ready", FALSE, reason, message), *(_cond(s, UNKNOWN, reason, message) for s in TP_STAGES)]
    if outcome.state == api.Phase.SUCCEEDED.value:
        models = outcome.summary.models if outcome.summary else 0
        path = outcome.summary.path if outcome.summary else None
        return [_cond("Ready", TRUE, "Succeeded", f"published {models} models"),
                _cond("DataAvailable", TRUE, "MetricsQueried"),
                _cond("Trained", TRUE, "ModelsTrained", f"{models} models"),
                _cond("Published", TRUE, "PipelinePublished", volume_path(path) or "")]
    if outcome.state != api.Phase.FAILED.value:
        return [_cond("Ready", FALSE, outcome.reason, outcome.message),
                *(_cond(s, UNKNOWN, outcome.reason, outcome.message) for s in TP_STAGES)]
    failed_stage = STAGE_OF_REASON.get(outcome.reason, "Trained")
    stage_index = TP_STAGES.index(failed_stage)
    conds = [_cond("Ready", FALSE, outcome.reason, outcome.message)]
    for i, stage in enumerate(TP_STAGES):
        if i < stage_index:  # only the accuracy gate proves the earlier stages passed
            ok = failed_stage == "Published"
            conds.append(_cond(stage, TRUE if ok else UNKNOWN, "Passed" if ok else outcome.reason))
        elif i == stage_index:
            conds.append(_cond(stage, FALSE, outcome.reason, outcome.message))
        else:
            conds.append(_cond(stage, FALSE, outcome.reason, f"not attempted: {failed_stage} failed"))
    return conds


def _ee_conditions(outcome: Outcome | None, problem: OperatorError | None, resolved: str | None) \
        -> list[dict[str, str]]:
    if outcome is None:
        reason, message = (problem.reason, str(problem)) if problem else ("RunNotStarted", "no run was started yet")
        resolved_cond = _cond("ModelResolved", FALSE, reason, message) if problem else \
            _cond("ModelResolved", TRUE, "PipelineFound", resolved or "")
        return [_cond("Ready", FALSE, reason, message), resolved_cond]
    if outcome.state == api.Phase.SUCCEEDED.value:
        model = outcome.summary.model if outcome.summary else None
        result = volume_path(outcome.summary.result if outcome.summary else None) or ""
        return [_cond("Ready", TRUE, "Succeeded", f"result written to {result}"),
                _cond("ModelResolved", TRUE, "ModelLoaded", (model.path or model.model_name) if model else "")]
    if outcome.reason == exits.MODEL_NOT_FOUND.reason:
        return [_cond("Ready", FALSE, outcome.reason, outcome.message),
                _cond("ModelResolved", FALSE, outcome.reason, outcome.message)]
    return [_cond("Ready", FALSE, outcome.reason, outcome.message),
            _cond("ModelResolved", TRUE, "PipelineFound", resolved or "")]


def _last_run(job: ObservedJob) -> dict[str, Any]:
    finished = job.complete or job.failed_condition
    run = {"jobName": job.name, "key": job.labels.get(LABEL_RUN),
           "generation": int(job.annotations.get(ANN_GENERATION) or 0) or None,
           "trigger": job.annotations.get(ANN_TRIGGER) or "Unknown",
           "startTime": job.start_time or job.created,
           "completionTime": job.completion_time or (finished.last_transition_time if finished else None)}
    return {k: v for k, v in run.items() if v is not None}


def _phase(outcome: Outcome | None, problem: OperatorError | None) -> str:
    if outcome is not None:
        return outcome.state
    if isinstance(problem, (InvalidSpecError, JobRejectedError, PolicyDeniedError)):  # waiting cannot fix them
        return api.Phase.FAILED.value
    return api.Phase.PENDING.value


def _common(old: Mapping[str, Any], job: ObservedJob | None, outcome: Outcome | None,
            problem: OperatorError | None, conditions: list[dict[str, str]], generation: int,
            now: str) -> dict[str, Any]:
    status = dict(old)
    status.update(observedGeneration=generation, phase=_phase(outcome, problem),
                  conditions=merge_conditions(old.get("conditions") or [], conditions, now, generation))
    if job is not None:
        status["lastRun"] = _last_run(job)
        annotations = job.annotations
        if annotations.get(ANN_RERUN):
            status["handledRerun"] = annotations[ANN_RERUN]
        if annotations.get(ANN_SCHEDULE) and annotations[ANN_SCHEDULE] > (status.get("lastScheduleTime") or ""):
            status["lastScheduleTime"] = annotations[ANN_SCHEDULE]
    return status


def _already_recorded(old: Mapping[str, Any], job: ObservedJob | None, terminated: Terminated | None,
                      problem: OperatorError | None) -> bool:
    """True when the observed run's result is in status already and its evidence has since gone.

    Finished Jobs are deleted after `ttlSecondsAfterFinished` and pods may be collected before
    their Job: what was recorded from them stays as it is.
    """
    if problem is not None or old.get("phase") not in (api.Phase.SUCCEEDED.value, api.Phase.FAILED.value):
        return False
    recorded = (old.get("lastRun") or {}).get("jobName")
    if job is None:
        return recorded is not None
    return job.finished and terminated is None and recorded == job.name


def training_status(old: Mapping[str, Any], *, generation: int, job: ObservedJob | None,
                    terminated: Terminated | None, problem: OperatorError | None = None,
                    suspended: bool = False, now: str) -> dict[str, Any]:
    """The TrainingPipeline status for what is observed now (results of older successes are kept)."""
    if _already_recorded(old, job, terminated, problem):
        return api.TrainingPipelineStatus.model_validate({**old, "observedGeneration": generation}).dump()
    outcome = job_outcome(job, terminated, now)
    status = _common(old, job, outcome, problem, _tp_conditions(outcome, problem, suspended), generation, now)
    if outcome is not None and outcome.state == api.Phase.SUCCEEDED.value and outcome.summary:
        summary = outcome.summary
        status.update(bestModels=best_models(summary), modelCount=summary.models,
                      pipelinePath=volume_path(summary.path), archive=volume_path(summary.archive),
                      reportPath=volume_path(summary.report))
    return api.TrainingPipelineStatus.model_validate(status).dump()


def estimation_status(old: Mapping[str, Any], *, generation: int, job: ObservedJob | None,
                      terminated: Terminated | None, problem: OperatorError | None = None,
                      resolved: str | None = None, now: str) -> dict[str, Any]:
    """The EnergyEstimation status for what is observed now."""
    if _already_recorded(old, job, terminated, problem):
        return api.EnergyEstimationStatus.model_validate({**old, "observedGeneration": generation}).dump()
    outcome = job_outcome(job, terminated, now)
    status = _common(old, job, outcome, problem, _ee_conditions(outcome, problem, resolved), generation, now)
    if outcome is not None and outcome.state == api.Phase.SUCCEEDED.value and outcome.summary:
        summary = outcome.summary
        status.update(
            resultPath=volume_path(summary.result),
            reportPath=volume_path(summary.report),
            model=_model_entry(summary.model) if summary.model is not None else None,
            summary={"samples": summary.samples,
                     "components": [{"component": name, "energyJoules": c.energy_joules,
                                     "meanPowerWatts": c.mean_power_watts, "mae": c.mae}
                                    for name, c in sorted(summary.components.items())][:16]})
    return api.EnergyEstimationStatus.model_validate(status).dump()


def with_onnx_configmap(new: Mapping[str, Any], old: Mapping[str, Any], *, wanted: bool,
                        written: Mapping[str, Any] | None = None, problem: OperatorError | None = None,
                        now: str, generation: int) -> dict[str, Any]:
    """`new` with the ONNX ConfigMap's condition and status field: the attempt's result when one was made
    (`written` or `problem`), else what `old` said (a new status of the run does not know about it)."""
    status = dict(new)
    conditions = [c for c in new.get("conditions") or [] if c["type"] != ONNX_CONDITION]
    old_condition = [c for c in old.get("conditions") or [] if c["type"] == ONNX_CONDITION]
    status.pop("onnxConfigMap", None)
    if not wanted:
        status["conditions"] = conditions
        return api.TrainingPipelineStatus.model_validate(status).dump()
    attempt = (_cond(ONNX_CONDITION, TRUE, "ConfigMapWritten", f"ConfigMap {written['name']} holds {written['model']}")
               if written is not None else
               _cond(ONNX_CONDITION, FALSE, problem.reason, str(problem)) if problem is not None else None)
    conditions += merge_conditions(old_condition, [attempt], now, generation) if attempt else old_condition
    if written is not None or old.get("onnxConfigMap"):
        status["onnxConfigMap"] = dict(written or old["onnxConfigMap"])  # a failure leaves the last one written
    status["conditions"] = conditions
    return api.TrainingPipelineStatus.model_validate(status).dump()


def onnx_configmap_due(spec_name: str | None, status: Mapping[str, Any]) -> bool:
    """Whether the ConfigMap should be (re)written: the latest run succeeded and its model is not written yet."""
    if spec_name is None or status.get("phase") != api.Phase.SUCCEEDED.value:
        return False
    written = status.get("onnxConfigMap") or {}
    job = (status.get("lastRun") or {}).get("jobName")
    return not (written.get("name") == spec_name and written.get("jobName") == job)


def transitions(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Transition]:
    """Events for a status change: one per phase change, carrying the Ready condition's reason."""
    if old.get("phase") == new.get("phase"):
        return []
    ready: Mapping[str, Any] = next((c for c in new.get("conditions") or [] if c["type"] == "Ready"), {})
    kind = "Warning" if new.get("phase") == api.Phase.FAILED.value else "Normal"
    message = f"{old.get('phase') or 'None'} -> {new.get('phase')}: {ready.get('message') or ready.get('reason', '')}"
    return [Transition(kind, str(ready.get("reason") or new.get("phase")), message[:1024])]
