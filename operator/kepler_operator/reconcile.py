"""The reconcile step: from a resource, its Jobs and its Job's pod to the run that should exist and the status.

Level-based: it reads the world as it is (kopf indexes, filled from watches before any handler runs,
and the pods of a finished Job) and asks the pure planners in `jobs` and `status` what should exist.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import hashlib
import logging
import posixpath
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from . import api, jobs, onnx_configmap, policy, status
from .errors import InvalidSpecError, OperatorError, PipelineBusyError, PolicyDeniedError
from .kube import Kube
from .observed import ObservedJob, Terminated, newest_terminated

TERMINAL = (api.Phase.SUCCEEDED.value, api.Phase.FAILED.value)


@dataclasses.dataclass(frozen=True)
class ModelServer:
    """The model server the operator fetches ONNX models from, and the PVC it serves."""

    url: str = "http://kepler-model-server.kepler-model.svc:8100"
    pvc: str = "kepler-models"


@dataclasses.dataclass
class State:
    """What one operator process remembers: its own last status writes, and one lock per resource."""

    kube: Kube
    defaults: jobs.JobDefaults
    policy: policy.Policy
    model_server: ModelServer = dataclasses.field(default_factory=ModelServer)
    written: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    indexes: dict[str, kopf.Index[Any, Any]] = dataclasses.field(default_factory=dict)
    resync: asyncio.Task[None] | None = None
    pending_events: set[asyncio.Future[None]] = dataclasses.field(default_factory=set)
    locks: collections.defaultdict[str, asyncio.Lock] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(asyncio.Lock))

    def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event in the background: reconciling never waits for one."""
        future = asyncio.get_running_loop().run_in_executor(None, self.kube.post_event, involved, type_, reason,
                                                            message)
        self.pending_events.add(future)
        future.add_done_callback(self.pending_events.discard)

    def forget(self, uid: str) -> None:
        self.written.pop(uid, None)
        self.locks.pop(uid, None)


def indexed(index: kopf.Index[Any, Any], key: Any) -> Any:
    """The newest object a kopf index holds under `key`, or None."""
    values = list(index.get(key, []))
    return values[-1] if values else None



def plain(value: Any) -> Any:
    """Plain dicts and lists of a kopf body (its views are read-only and live)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value



def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _newest(job_bodies: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The latest run: creation times have a one-second resolution, so the generation breaks ties."""
    return max(job_bodies, key=lambda j: jobs.job_view(j).order, default=None)


async def reconcile(kind: str, body: Mapping[str, Any], memo: kopf.Memo, jobs_by_owner: kopf.Index[Any, Any],
                    pipelines: kopf.Index[Any, Any],
                    logger: logging.Logger | kopf.Logger) -> None:
    """Start the run that should exist, prune old runs, and write the status of what is observed."""
    state: State = memo.state
    meta = body["metadata"]
    uid = meta["uid"]
    async with state.locks[uid]:
        old = state.written.get(uid, plain(body.get("status") or {}))
        known = {j["metadata"]["name"]: j for j in jobs_by_owner.get(uid, [])}
        problem: OperatorError | None = None
        plan: Plan | None = None
        try:
            plan = _plan(kind, body, pipelines, state.defaults, state.policy)
            await _run_and_prune(state, kind, body, plan, old, known, jobs_by_owner, logger)
        except OperatorError as exc:
            problem = exc
        # a refused spec shows as refused, not as the result of a run the policy allowed earlier
        newest = None if isinstance(problem, PolicyDeniedError) else _newest(known.values())
        latest = ObservedJob.from_body(newest) if newest is not None else None
        terminated = await _result_of(state, latest, old)
        generation, now = int(meta.get("generation") or 1), jobs.format_time(_now())
        if kind == api.TrainingPipeline.kind:
            new = status.training_status(old, generation=generation, job=latest, terminated=terminated,
                                         problem=problem, suspended=bool(plan and plan.suspend), now=now)
            new = await _onnx_configmap(state, body, plan, old, new, now, generation)
        else:
            new = status.estimation_status(old, generation=generation, job=latest, terminated=terminated,
                                           problem=problem, resolved=plan.resolved if plan else None, now=now)
        if new != old:
            await asyncio.to_thread(state.kube.patch_status, kind, meta["namespace"], meta["name"], new)
            state.written[uid] = new
            for change in status.transitions(old, new):
                state.post_event(_ref(kind, body), change.type, change.reason, change.message)


async def _onnx_configmap(state: State, body: Mapping[str, Any], plan: Plan | None, old: Mapping[str, Any],
                          new: dict[str, Any], now: str, generation: int) -> dict[str, Any]:
    """Write the latest successful run's best ONNX model into the ConfigMap spec.onnxConfigMap names, once per
    run; a failure is a condition (retried on the next pass), never a failed run."""
    wanted = plan.onnx_config_map if plan else None
    if not status.onnx_configmap_due(wanted, new):
        return status.with_onnx_configmap(new, old, wanted=wanted is not None, now=now, generation=generation)
    assert wanted is not None  # noqa: S101 (due implies wanted)
    try:
        choice = onnx_configmap.choose(new.get("pipelinePath"), new.get("bestModels") or [],
                                       served_pvc=plan is not None and plan.pvc == state.model_server.pvc)
        graph, manifest = await asyncio.to_thread(onnx_configmap.fetch, state.model_server.url, choice)
        await asyncio.to_thread(state.kube.apply_configmap,
                                onnx_configmap.manifest(body, wanted, choice, graph, manifest), body["metadata"]["uid"])
    except onnx_configmap.OnnxConfigMapError as exc:
        return status.with_onnx_configmap(new, old, wanted=True, problem=exc, now=now, generation=generation)
    written = {"name": wanted, "jobName": new["lastRun"]["jobName"], "model": choice.model,
               "sha256": hashlib.sha256(graph).hexdigest(), "bytes": len(graph)}
    return status.with_onnx_configmap(new, old, wanted=True, written=written, now=now, generation=generation)


async def _result_of(state: State, job: ObservedJob | None, old: Mapping[str, Any]) -> Terminated | None:
    """The terminated trainer container of a finished Job's newest pod, unless status has it already."""
    if job is None or not job.finished:
        return None
    if (old.get("lastRun") or {}).get("jobName") == job.name and old.get("phase") in TERMINAL:
        return None
    selector = (f"{jobs.LABEL_OWNER_UID}={job.labels.get(jobs.LABEL_OWNER_UID)},"
                f"{jobs.LABEL_RUN}={job.labels.get(jobs.LABEL_RUN)}")
    pods = await asyncio.to_thread(state.kube.list_pods, job.namespace, selector)
    return newest_terminated(pods, job.name, jobs.CONTAINER)


async def _run_and_prune(state: State, kind: str, body: Mapping[str, Any], plan: Plan, old: Mapping[str, Any],
                         known: dict[str, Mapping[str, Any]], jobs_by_owner: kopf.Index[Any, Any],
                         logger: logging.Logger | kopf.Logger) -> None:
    """Create the Job of the run that is due (if any) and delete runs beyond the history limit."""
    meta = body["metadata"]
    run = jobs.next_run(generation=int(meta.get("generation") or 1), status=old,
                        jobs=[jobs.job_view(j) for j in known.values()], created=meta.get("creationTimestamp") or "",
                        now=_now(), rerun=(meta.get("annotations") or {}).get(api.RERUN_ANNOTATION),
                        schedule=plan.schedule, suspend=plan.suspend)
    if run is not None:
        await _check_before_creating(state, meta, plan, jobs_by_owner)
        created = await asyncio.to_thread(state.kube.create_job, plan.build(run))
        name = created["metadata"]["name"]
        known[name] = created
        logger.info(f"Started Job {name} ({run.trigger}).")
        state.post_event(_ref(kind, body), "Normal", "RunStarted", f"started Job {name} ({run.trigger})")
    for stale in jobs.jobs_to_prune([jobs.job_view(j) for j in known.values()], plan.keep):
        await asyncio.to_thread(state.kube.delete_job, meta["namespace"], stale)
        known.pop(stale, None)


async def _check_before_creating(state: State, meta: Mapping[str, Any], plan: Plan,
                                 jobs_by_owner: kopf.Index[Any, Any]) -> None:
    """What is checked right before each Job is created: the Secrets' opt-in labels as they are now,
    and that no other resource's Job is publishing the same pipeline location (one writer at a time)."""
    for field, name in plan.secrets:
        labels = await asyncio.to_thread(state.kube.secret_labels, meta["namespace"], name)
        policy.check_secret(field, name, labels)
    if plan.location is None:
        return
    for other in jobs_by_owner.get(("location", plan.location), []):
        view = jobs.job_view(other)
        owner_uid = (other["metadata"].get("labels") or {}).get(jobs.LABEL_OWNER_UID)
        if owner_uid != meta["uid"] and not view.finished:
            owner = (other["metadata"].get("annotations") or {}).get(jobs.ANN_OWNER, "?")
            raise PipelineBusyError(f"waiting for Job {view.name} (TrainingPipeline {owner!r}), which publishes "
                                    "the same pipeline on the same volume")


@dataclasses.dataclass(frozen=True)
class Plan:
    """A valid resource, ready to run: how to build a run's Job, and what decides when to run."""

    build: Callable[[jobs.RunRequest], dict[str, Any]]
    schedule: str | None = None
    suspend: bool = False
    keep: int = 1
    resolved: str | None = None
    secrets: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    location: str | None = None
    pvc: str | None = None
    onnx_config_map: str | None = None


def _plan(kind: str, body: Mapping[str, Any], pipelines: kopf.Index[Any, Any], defaults: jobs.JobDefaults,
          rules: policy.Policy) -> Plan:
    """Validate the spec (and resolve an estimation's model) and apply the policy; raises OperatorError."""
    meta = body["metadata"]
    owner = jobs.Owner(kind=kind, name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    try:
        if kind == api.TrainingPipeline.kind:
            tp = api.TrainingPipelineSpec.model_validate(body.get("spec") or {})
            policy.check_training(rules, tp)
            return Plan(build=lambda run: jobs.training_job(owner, tp, run, defaults), schedule=tp.schedule,
                        suspend=tp.suspend, keep=tp.history_limit,
                        secrets=policy.secrets_used(tp.prometheus, "spec.prometheus"),
                        location=jobs.pipeline_location(tp, defaults), pvc=tp.storage.pvc_name or defaults.pvc,
                        onnx_config_map=tp.onnx_config_map.name if tp.onnx_config_map else None)
        ee = api.EnergyEstimationSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        raise InvalidSpecError(_validation_message(exc)) from exc
    ref = ee.model.pipeline_ref
    where = jobs.resolve_model(ee, meta["name"], indexed(pipelines, (meta["namespace"], ref.name)) if ref else None,
                               defaults.pvc)
    policy.check_estimation(rules, ee, where.pvc)
    return Plan(build=lambda run: jobs.estimation_job(owner, ee, where, run, defaults),
                resolved=posixpath.join(where.pvc, where.pipeline_parent, where.pipeline_name),
                secrets=policy.secrets_used(ee.input.prometheus, "spec.input.prometheus"))


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        parts.append(f"spec.{where}: {err['msg']}")
    return "; ".join(parts)


def _ref(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": api.API_VERSION, "kind": kind,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]}}
