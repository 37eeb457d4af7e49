"""The kopf glue: watch the resources and their Jobs; start runs and write status.

Every handler ends in the same level-based `reconcile`: it reads the resource and its Jobs (kopf
indexes, filled from watches before any handler runs) and, once a run's Job has finished, the pods
of that Job (one list call with a label selector, so the operator never watches every pod of the
cluster); it asks the pure planners in `jobs` and `status` what should exist, and makes it so. Jobs have
deterministic names, so a retried or duplicated create
is a harmless 409, and a restarted operator converges without a second Job. There is no delete
handler and so no finalizer: Jobs go with their owner through owner references, and the volume
(shared with Kepler) is never touched.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import posixpath
import secrets
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from . import api, jobs, policy, status
from .errors import InvalidSpecError, JobRejectedError, OperatorError, PipelineBusyError, PolicyDeniedError
from .settings import get_settings

TP = (api.GROUP, api.VERSION, api.TrainingPipeline.plural)
EE = (api.GROUP, api.VERSION, api.EnergyEstimation.plural)
PLURAL = {api.TrainingPipeline.kind: api.TrainingPipeline.plural,
          api.EnergyEstimation.kind: api.EnergyEstimation.plural}
OURS = {jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY}
INDEXES = ("jobs_by_owner", "pipelines", "estimations")
TERMINAL = (api.Phase.SUCCEEDED.value, api.Phase.FAILED.value)
KOPF_PREFIX = f"kopf.{api.GROUP}"


# ------------------------------------------------------------------------------ Kubernetes calls

class Kube:
    """The few blocking Kubernetes calls the operator makes (run in threads)."""

    def __init__(self, connections: int) -> None:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            # read $KUBECONFIG now: the library's default was fixed when it was imported
            path = os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]
            config.load_kube_config(config_file=path, client_configuration=configuration)
        configuration.connection_pool_maxsize = connections  # one per worker thread
        api_client = client.ApiClient(configuration)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the Job, or return the existing one of the same (deterministic) name."""
        meta = manifest["metadata"]
        try:
            response = self.batch.create_namespaced_job(meta["namespace"], manifest, _preload_content=False)
        except ApiException as exc:
            if exc.status == 409:
                response = self.batch.read_namespaced_job(meta["name"], meta["namespace"], _preload_content=False)
            elif exc.status in (400, 403, 422):  # refused for good (admission, quota, RBAC): say so in status
                raise JobRejectedError(f"Job {meta['name']} was rejected: {_api_message(exc)}") from exc
            else:
                raise kopf.TemporaryError(f"creating Job {meta['name']}: {exc.status} {exc.reason}", delay=10) \
                    from exc
        job: dict[str, Any] = json.loads(response.data)
        return job

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods matching a label selector (filtered by the API server)."""
        response = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        return list(json.loads(response.data).get("items") or [])

    def secret_labels(self, namespace: str, name: str) -> dict[str, str] | None:
        """The labels of a Secret (None when it does not exist), asked for as metadata only: the
        operator never needs, and so never receives, a Secret's data where the server can avoid it."""
        accept = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"
        try:
            response = self.core.read_namespaced_secret(name, namespace, _headers={"Accept": accept},
                                                        _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 403:
                raise PolicyDeniedError(f"the operator may not read Secret {name!r}: {_api_message(exc)}") from exc
            raise kopf.TemporaryError(f"reading Secret {name}: {exc.status} {exc.reason}", delay=10) from exc
        body = json.loads(response.data)
        return dict((body.get("metadata") or {}).get("labels") or {})

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and its pods; a Job already gone is fine."""
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def patch_status(self, kind: str, namespace: str, name: str, new_status: dict[str, Any]) -> None:
        """Merge-patch the status subresource; the resource being gone is fine."""
        try:
            self.custom.patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, namespace, PLURAL[kind], name, {"status": new_status})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event on a resource; losing one is not worth failing a reconcile."""
        meta = involved["metadata"]
        now = jobs.format_time(_now())
        event = {"apiVersion": "v1", "kind": "Event", "type": type_, "reason": reason, "message": message[:1024],
                 "metadata": {"name": f"{meta['name'][:230]}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
                 "involvedObject": {"apiVersion": involved["apiVersion"], "kind": involved["kind"],
                                    "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
                 "source": {"component": jobs.MANAGED_BY}, "reportingComponent": jobs.MANAGED_BY,
                 "firstTimestamp": now, "lastTimestamp": now, "count": 1}
        try:
            self.core.create_namespaced_event(meta["namespace"], event, _preload_content=False)
        except Exception as exc:  # noqa: BLE001 (an Event is best effort, whatever went wrong)
            logging.getLogger(__name__).warning("could not post event %s: %s", reason, exc)


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


@dataclasses.dataclass
class State:
    """What one operator process remembers: its own last status writes, and one lock per resource."""

    kube: Kube
    defaults: jobs.JobDefaults
    policy: policy.Policy
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


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Our own group for kopf's bookkeeping, no finalizers, and the shared client."""
    ours = get_settings()
    # the blocking Kubernetes calls run in this many threads (asyncio.to_thread)
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(ours.max_workers, "kube"))
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    # kopf ignores every annotation under its storage prefix, so it gets a sub-domain of our group and
    # user-facing annotations such as `modeltraining.kepler.io/rerun` still count as changes.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration")
    settings.posting.enabled = False  # we post our own transition events, not kopf's per-handler chatter
    settings.scanning.disabled = True  # resources are known: no RBAC on CRDs and namespaces needed
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    memo.state = State(kube=Kube(ours.max_workers), defaults=jobs.JobDefaults(
        image=ours.trainer_image, image_pull_policy=ours.image_pull_policy, pvc=ours.default_pvc,
        service_account=ours.job_service_account, run_as_user=ours.run_as_user),
        policy=policy.Policy.from_settings(ours))


@kopf.on.startup()
async def start_resync(memo: kopf.Memo, **_: Any) -> None:
    """Re-check every resource periodically (schedules, missed events).

    Not a kopf timer: kopf puts a finalizer on every object with a timer, and a finalizer would
    block `kubectl delete` (and GitOps pruning) whenever the operator is down.
    """
    memo.state.resync = asyncio.create_task(_resync_forever(memo, get_settings().resync_seconds))


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_: Any) -> None:
    """Stop the resync loop with the operator."""
    if memo.state.resync is not None:
        memo.state.resync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await memo.state.resync


async def _resync_forever(memo: kopf.Memo, interval: float) -> None:
    logger = logging.getLogger(__name__)
    while True:
        await asyncio.sleep(interval)
        indexes = memo.state.indexes  # captured by the handlers; empty until the first resource shows up
        if not indexes:
            continue
        for kind, index in ((api.TrainingPipeline.kind, "pipelines"), (api.EnergyEstimation.kind, "estimations")):
            for key in [k for k in indexes[index] if isinstance(k, str)]:  # uid keys only
                body = _one(indexes[index], key)
                if body is None:
                    continue
                try:
                    await reconcile(kind, body, memo, indexes["jobs_by_owner"], indexes["pipelines"], logger)
                except Exception:  # one broken resource must not stop the loop for the others
                    logger.exception("resync of %s %s failed", kind, key)


# ------------------------------------------------------------------------------------- indexes

def _slim(body: Mapping[str, Any], *, spec: bool = False) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    keep = {"metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "generation", "labels",
                                                  "annotations", "creationTimestamp")},
            "status": dict(body.get("status") or {})}
    if spec:
        keep["spec"] = dict(body.get("spec") or {})
    plain: dict[str, Any] = _plain(keep)
    return plain


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@kopf.index("batch", "v1", "jobs", labels=OURS)
def jobs_by_owner(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    """Our Jobs, by owner uid, and training Jobs also by the pipeline location they publish."""
    slim = _slim(body)
    out: dict[Any, Any] = {labels.get(jobs.LABEL_OWNER_UID): slim}
    if labels.get(jobs.LABEL_LOCATION):
        out[("location", labels[jobs.LABEL_LOCATION])] = slim
    return out


@kopf.index(*TP)
def pipelines(body: kopf.Body, namespace: str | None, name: str, uid: str, **_: Any) -> dict[Any, Any]:
    """TrainingPipelines by uid and by (namespace, name)."""
    slim = _slim(body, spec=True)
    return {uid: slim, (namespace, name): slim}


@kopf.index(*EE)
def estimations(body: kopf.Body, uid: str, namespace: str | None, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
    """EnergyEstimations by uid, and their uids by the (namespace, name) of the pipeline they use."""
    ref = ((spec.get("model") or {}).get("pipelineRef") or {}).get("name")
    out: dict[Any, Any] = {uid: _slim(body, spec=True)}
    if ref:
        out[("ref", namespace, ref)] = uid
    return out


def _one(index: kopf.Index[Any, Any], key: Any) -> Any:
    values = list(index.get(key, []))
    return values[-1] if values else None


# ----------------------------------------------------------------------------------- reconcile

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
        old = state.written.get(uid, _plain(body.get("status") or {}))
        known = {j["metadata"]["name"]: j for j in jobs_by_owner.get(uid, [])}
        problem: OperatorError | None = None
        plan: Plan | None = None
        try:
            plan = _plan(kind, body, pipelines, state.defaults, state.policy)
            await _run_and_prune(state, kind, body, plan, old, known, jobs_by_owner, logger)
        except OperatorError as exc:
            problem = exc
        # a refused spec shows as refused, not as the result of a run the policy allowed earlier
        latest = None if isinstance(problem, PolicyDeniedError) else _newest(known.values())
        terminated = await _result_of(state, latest, old)
        generation, now = int(meta.get("generation") or 1), jobs.format_time(_now())
        if kind == api.TrainingPipeline.kind:
            new = status.training_status(old, generation=generation, job=latest, terminated=terminated,
                                         problem=problem, suspended=bool(plan and plan.suspend), now=now)
        else:
            new = status.estimation_status(old, generation=generation, job=latest, terminated=terminated,
                                           problem=problem, resolved=plan.resolved if plan else None, now=now)
        if new != old:
            await asyncio.to_thread(state.kube.patch_status, kind, meta["namespace"], meta["name"], new)
            state.written[uid] = new
            for change in status.transitions(old, new):
                state.post_event(_ref(kind, body), change.type, change.reason, change.message)


async def _result_of(state: State, job: Mapping[str, Any] | None, old: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The terminated trainer container of a finished Job's newest pod, unless status has it already."""
    if job is None or not jobs.job_view(job).finished:
        return None
    name = job["metadata"]["name"]
    if (old.get("lastRun") or {}).get("jobName") == name and old.get("phase") in TERMINAL:
        return None
    labels = job["metadata"].get("labels") or {}
    selector = (f"{jobs.LABEL_OWNER_UID}={labels.get(jobs.LABEL_OWNER_UID)},"
                f"{jobs.LABEL_RUN}={labels.get(jobs.LABEL_RUN)}")
    pods = await asyncio.to_thread(state.kube.list_pods, job["metadata"]["namespace"], selector)
    return status.newest_terminated(pods, name)


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
                        location=jobs.pipeline_location(tp, defaults))
        ee = api.EnergyEstimationSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        raise InvalidSpecError(_validation_message(exc)) from exc
    ref = ee.model.pipeline_ref
    where = jobs.resolve_model(ee, meta["name"], _one(pipelines, (meta["namespace"], ref.name)) if ref else None,
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


# ------------------------------------------------------------------------------------ handlers

@kopf.on.resume(*TP)
@kopf.on.create(*TP)
@kopf.on.update(*TP)
async def training_pipeline(body: kopf.Body, **kwargs: Any) -> None:
    """A TrainingPipeline appeared or changed (or the operator started)."""
    await _reconcile_kwargs(api.TrainingPipeline.kind, body, kwargs)


@kopf.on.resume(*EE)
@kopf.on.create(*EE)
@kopf.on.update(*EE)
async def energy_estimation(body: kopf.Body, **kwargs: Any) -> None:
    """An EnergyEstimation appeared or changed (or the operator started)."""
    await _reconcile_kwargs(api.EnergyEstimation.kind, body, kwargs)


async def _reconcile_kwargs(kind: str, body: Mapping[str, Any], kwargs: dict[str, Any]) -> None:
    kwargs["memo"].state.indexes = {name: kwargs[name] for name in INDEXES}
    await reconcile(kind, _plain(body), kwargs["memo"], kwargs["jobs_by_owner"], kwargs["pipelines"],
                    kwargs["logger"])


@kopf.on.event("batch", "v1", "jobs", labels=OURS)
async def child_changed(labels: kopf.Labels, **kwargs: Any) -> None:
    """A Job of ours changed: re-compute its owner's status now, not at the next resync."""
    owner_uid = labels.get(jobs.LABEL_OWNER_UID)
    kind = labels.get(jobs.LABEL_KIND)
    owner = _one(kwargs["pipelines"] if kind == api.TrainingPipeline.kind else kwargs["estimations"], owner_uid)
    if owner is not None and kind is not None:
        await _reconcile_kwargs(kind, owner, kwargs)
    if labels.get(jobs.LABEL_LOCATION):
        await _wake_waiting_writers(kwargs)


async def _wake_waiting_writers(kwargs: dict[str, Any]) -> None:
    """Pipelines waiting for another resource's Job at their location try again now, not at the next resync."""
    index = kwargs["pipelines"]
    for uid in [k for k in index if isinstance(k, str)]:
        body = _one(index, uid)
        ready = {c.get("type"): c.get("reason") for c in ((body or {}).get("status") or {}).get("conditions") or []}
        if body is not None and ready.get("Ready") == PipelineBusyError.reason:
            await _reconcile_kwargs(api.TrainingPipeline.kind, body, kwargs)


@kopf.on.event(*TP)
async def pipeline_event(type: str, body: kopf.Body, uid: str, namespace: str | None, name: str, **kwargs: Any) -> None:
    """Forget deleted pipelines; wake the estimations waiting for a pipeline that just published."""
    if type == "DELETED":
        kwargs["memo"].state.forget(uid)
        return
    if not (body.get("status") or {}).get("pipelinePath"):
        return
    for ee_uid in list(kwargs["estimations"].get(("ref", namespace, name), [])):
        ee = _one(kwargs["estimations"], ee_uid)
        ready = {c.get("type"): c.get("status") for c in (ee or {}).get("status", {}).get("conditions") or []}
        if ee is not None and ready.get("ModelResolved") != "True":
            await _reconcile_kwargs(api.EnergyEstimation.kind, ee, kwargs)


@kopf.on.event(*EE)
async def estimation_event(type: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Forget deleted estimations."""
    if type == "DELETED":
        memo.state.forget(uid)
