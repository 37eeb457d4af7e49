"""The kopf registrations: watch the resources and their Jobs; every handler ends in `reconcile.reconcile`.

The reconcile step reads the resource and its Jobs (kopf indexes, filled from watches before any
handler runs) and, once a run's Job has finished, the pods of that Job (one list call with a label
selector, so the operator never watches every pod of the cluster); it asks the pure planners in
`jobs` and `status` what should exist, and makes it so through `kube`. Jobs have deterministic
names, so a retried or duplicated create is a harmless 409, and a restarted operator converges without
a second Job. There is no delete handler and so no finalizer: Jobs go with their owner through owner
references, and the volume (shared with Kepler) is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from . import api, jobs, policy
from .errors import PipelineBusyError
from .kube import Kube
from .reconcile import ModelServer, State, indexed, plain, reconcile
from .settings import get_settings

TP = (api.GROUP, api.VERSION, api.TrainingPipeline.plural)
EE = (api.GROUP, api.VERSION, api.EnergyEstimation.plural)
OURS = {jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY}
INDEXES = ("jobs_by_owner", "pipelines", "estimations")
KOPF_PREFIX = f"kopf.{api.GROUP}"


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
        policy=policy.Policy.from_settings(ours),
        model_server=ModelServer(url=ours.model_server_url, pvc=ours.model_server_pvc or ours.default_pvc))


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
                body = indexed(indexes[index], key)
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
    slim: dict[str, Any] = plain(keep)
    return slim



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
    await reconcile(kind, plain(body), kwargs["memo"], kwargs["jobs_by_owner"], kwargs["pipelines"],
                    kwargs["logger"])


@kopf.on.event("batch", "v1", "jobs", labels=OURS)
async def child_changed(labels: kopf.Labels, **kwargs: Any) -> None:
    """A Job of ours changed: re-compute its owner's status now, not at the next resync."""
    owner_uid = labels.get(jobs.LABEL_OWNER_UID)
    kind = labels.get(jobs.LABEL_KIND)
    owner = indexed(kwargs["pipelines"] if kind == api.TrainingPipeline.kind else kwargs["estimations"], owner_uid)
    if owner is not None and kind is not None:
        await _reconcile_kwargs(kind, owner, kwargs)
    if labels.get(jobs.LABEL_LOCATION):
        await _wake_waiting_writers(kwargs)


async def _wake_waiting_writers(kwargs: dict[str, Any]) -> None:
    """Pipelines waiting for another resource's Job at their location try again now, not at the next resync."""
    index = kwargs["pipelines"]
    for uid in [k for k in index if isinstance(k, str)]:
        body = indexed(index, uid)
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
        ee = indexed(kwargs["estimations"], ee_uid)
        ready = {c.get("type"): c.get("status") for c in (ee or {}).get("status", {}).get("conditions") or []}
        if ee is not None and ready.get("ModelResolved") != "True":
            await _reconcile_kwargs(api.EnergyEstimation.kind, ee, kwargs)


@kopf.on.event(*EE)
async def estimation_event(type: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Forget deleted estimations."""
    if type == "DELETED":
        memo.state.forget(uid)
