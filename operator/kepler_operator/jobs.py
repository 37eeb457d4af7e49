"""From a resource to the Job that runs the trainer: pure functions, no I/O.

A run is identified by a key computed from the resource alone, so the Job name is deterministic and a
retried create is harmless (409 means "already started"):

* `g<generation>`                  the spec's own run (creation or a spec change);
* `g<generation>-r<hash of token>` a re-run requested with the `modeltraining.kepler.io/rerun` annotation;
* `s<YYYYmmddHHMM>`                a tick of `spec.schedule`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from croniter import croniter

from kepler_contract.exits import PERMANENT_EXIT_CODES

from . import api
from .errors import InvalidSpecError, PipelineNotFoundError, PipelineNotReadyError

MANAGED_BY = "kepler-model-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_KIND = f"{api.GROUP}/kind"
LABEL_OWNER_UID = f"{api.GROUP}/owner-uid"
LABEL_RUN = f"{api.GROUP}/run"
LABEL_LOCATION = f"{api.GROUP}/pipeline-location"
ANN_OWNER = f"{api.GROUP}/owner"
ANN_TRIGGER = f"{api.GROUP}/trigger"
ANN_GENERATION = f"{api.GROUP}/generation"
ANN_RERUN = f"{api.GROUP}/rerun-token"
ANN_SCHEDULE = f"{api.GROUP}/schedule-time"

CONTAINER = "trainer"
MODELS_MOUNT = "/models"
TMP_MOUNT = "/tmp"
WORK_DIR = "/tmp/work"
TERMINATION_LOG = "/dev/termination-log"
TOKEN_DIR = "/var/run/secrets/kepler-model/prometheus-token"
CA_DIR = "/var/run/secrets/kepler-model/prometheus-ca"
JOB_SUFFIX = {api.TrainingPipeline.kind: "train", api.EnergyEstimation.kind: "estimate"}
MAX_NAME = 63


@dataclasses.dataclass(frozen=True)
class JobDefaults:
    """What the operator's settings add to every Job."""

    image: str
    image_pull_policy: str = "IfNotPresent"
    pvc: str = "kepler-models"
    service_account: str | None = None
    run_as_user: int = 1000


@dataclasses.dataclass(frozen=True)
class Owner:
    """The identity of the resource a Job belongs to."""

    kind: str
    name: str
    namespace: str
    uid: str


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """A run to start: its key and why."""

    key: str
    trigger: str
    generation: int
    rerun: str | None = None
    schedule_time: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class JobView:
    """What the planner needs to know about an existing Job of the resource."""

    name: str
    key: str
    generation: int
    trigger: str
    created: str
    finished: bool
    rerun: str | None = None
    schedule_time: str | None = None

    @property
    def order(self) -> tuple[str, int, str]:
        """Sort key, oldest first (creation times have a one-second resolution)."""
        return self.created, self.generation, self.name


@dataclasses.dataclass(frozen=True)
class ModelLocation:
    """Where an estimation finds its pipeline, and where it writes its result (volume-relative)."""

    pvc: str
    pipeline_parent: str
    pipeline_name: str
    results_dir: str


# ------------------------------------------------------------------------------------ planning

def _parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(value: datetime.datetime) -> str:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times."""
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def argv_time(value: datetime.datetime) -> str:
    """A time for the trainer's command line: `format_time`, with the fraction when there is one (a window
    shorter than a second, or ending mid-second, must keep its meaning: found by the argv property test)."""
    if value.microsecond == 0:
        return format_time(value)
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rerun_key(generation: int, token: str) -> str:
    """The run key of a re-run request."""
    return f"g{generation}-r{hashlib.sha256(token.encode()).hexdigest()[:8]}"


def next_run(*, generation: int, status: Mapping[str, Any], jobs: Sequence[JobView], created: str,
             now: datetime.datetime, rerun: str | None = None, schedule: str | None = None,
             suspend: bool = False) -> RunRequest | None:
    """The run that should start now, or None. The same world always gives the same answer.

    What was already started is read both from status and from the Jobs themselves, so a crash
    between creating a Job and writing status never starts a second run.
    """
    if suspend:
        return None
    if any(not j.finished for j in jobs):
        return None  # every new run waits for the running one: one writer per pipeline (docs/operator.md)
    last_run = status.get("lastRun") or {}
    started_generation = max([j.generation for j in jobs] + [int(last_run.get("generation") or 0)])
    if generation > started_generation:
        trigger = "Created" if started_generation == 0 else "SpecChanged"
        return RunRequest(key=f"g{generation}", trigger=trigger, generation=generation)
    if rerun and rerun != status.get("handledRerun") and all(j.rerun != rerun for j in jobs):
        return RunRequest(key=rerun_key(generation, rerun), trigger="Rerun", generation=generation, rerun=rerun)
    if schedule:
        anchors = [_parse_time(status.get("lastScheduleTime")), _parse_time(created)]
        anchors += [_parse_time(j.schedule_time) for j in jobs]
        anchor = max(a for a in anchors if a is not None)
        tick = croniter(schedule, now).get_prev(datetime.datetime)
        if tick > anchor:
            return RunRequest(key=f"s{tick:%Y%m%d%H%M}", trigger="Schedule", generation=generation,
                              schedule_time=tick)
    return None


def jobs_to_prune(jobs: Sequence[JobView], keep: int) -> list[str]:
    """Finished Jobs beyond the newest `keep` runs; running ones are never pruned."""
    newest_first = sorted(jobs, key=lambda j: j.order, reverse=True)
    return [j.name for j in newest_first[keep:] if j.finished]


def job_name(owner: Owner, key: str) -> str:
    """`<owner>-<train|estimate>-<key>`, shortened with a hash of the owner name to fit 63 characters."""
    tail = f"-{JOB_SUFFIX[owner.kind]}-{key}"
    if len(owner.name) + len(tail) <= MAX_NAME:
        return owner.name + tail
    digest = hashlib.sha256(owner.name.encode()).hexdigest()[:6]
    head = owner.name[: MAX_NAME - len(tail) - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}{tail}"


# ------------------------------------------------------------------------------------ commands

def _volume_path(*parts: str | None) -> str:
    return posixpath.join(MODELS_MOUNT, *[p for p in parts if p])


def _window_args(window: api.Window) -> list[str]:
    if window.interval_seconds is not None:
        args = ["--interval", str(window.interval_seconds)]
    else:
        assert window.start is not None and window.end is not None  # guaranteed by Window's validator
        args = ["--start-time", argv_time(window.start), "--end-time", argv_time(window.end)]
    return args + ["--step", str(window.step_seconds)]


def _prometheus_args(prom: api.PrometheusSource, window: api.Window, prefix: str,
                     label_filters: Mapping[str, str]) -> list[str]:
    args = ["-s", prom.url, *_window_args(window), "--metric-prefix", prefix]
    for name in sorted(label_filters):  # equality only: the value is taken verbatim (no `=~` smuggled in)
        args += ["--label-equals", f"{name}={label_filters[name]}"]
    if prom.bearer_token_secret is not None:
        args += ["--bearer-token-file", posixpath.join(TOKEN_DIR, prom.bearer_token_secret.key)]
    if prom.tls is not None and prom.tls.ca_secret is not None:
        args += ["--ca-file", posixpath.join(CA_DIR, prom.tls.ca_secret.key)]
    if prom.tls is not None and prom.tls.insecure_skip_verify:
        args.append("--insecure-skip-tls-verify")
    return args


def train_command(spec: api.TrainingPipelineSpec) -> list[str]:
    """The `kepler-model train` command line of a TrainingPipeline (docs/contracts.md)."""
    args = ["kepler-model", "train",
            *_prometheus_args(spec.prometheus, spec.window, spec.metric_prefix, spec.label_filters),
            "-p", spec.pipeline_name, "-e", ",".join(spec.energy_sources),
            "--extractor", spec.extractor, "--isolator", spec.isolator.type]
    if spec.isolator.profile:  # a file on the pipeline's volume (the Job's working folder is empty)
        args += ["--profile", _volume_path(spec.isolator.profile)]
    if spec.isolator.idle_window is not None:
        idle = spec.isolator.idle_window
        args += ["--profile-start-time", argv_time(idle.start), "--profile-end-time", argv_time(idle.end),
                 "--profile-step", str(idle.step_seconds)]
    args += ["--abs-trainers", ",".join(spec.abs_trainers), "--dyn-trainers", ",".join(spec.dyn_trainers)]
    if spec.feature_groups:
        args += ["-fg", ",".join(spec.feature_groups)]
    args += _feature_set_args(spec.feature_set)
    if spec.accuracy_gate.max_mae is not None:
        args += ["--max-mae", repr(spec.accuracy_gate.max_mae)]
    gate = spec.accuracy_gate
    for flag, bound in (("--max-mape", gate.max_mape), ("--max-idle-bias", gate.max_idle_bias)):
        if bound is not None:
            args += [flag, repr(bound)]
    return args + ["--data-path", WORK_DIR, "--model-path", _volume_path(spec.storage.sub_path),
                   "--termination-log", TERMINATION_LOG]


def _feature_set_args(feature_set: api.FeatureSet | None) -> list[str]:
    """`--features` (a preset, or the file on the pipeline's volume), `--join-map` pairs and `--history`."""
    if feature_set is None:
        return []
    args = ["--features", feature_set.preset or _volume_path(feature_set.file)]
    if feature_set.join_map:  # values carry no ',' or '=' (api.JoinValue): the list cannot be split wrongly
        args += ["--join-map", ",".join(f"{k}={v}" for k, v in sorted(feature_set.join_map.items()))]
    if feature_set.history_seconds:
        args += ["--history", ",".join(str(w) for w in feature_set.history_seconds)]
    return args


def estimate_command(spec: api.EnergyEstimationSpec, where: ModelLocation) -> list[str]:
    """The `kepler-model estimate` command line of an EnergyEstimation (docs/contracts.md)."""
    source = spec.input
    if source.file is not None:
        args = ["-i", _volume_path(source.file)]
    else:
        assert source.prometheus is not None and source.window is not None  # EstimationInput's validator
        args = _prometheus_args(source.prometheus, source.window, source.metric_prefix, source.label_filters)
    model = spec.model
    args += ["-p", where.pipeline_name, "-e", model.energy_source, "-ot", model.output_type]
    if model.feature_group:
        args += ["-fg", model.feature_group]
    if model.model_name:
        args += ["--model-name", model.model_name]
    return ["kepler-model", "estimate", *args, "-o", _volume_path(where.results_dir),
            "--model-path", _volume_path(where.pipeline_parent), "--data-path", WORK_DIR,
            "--termination-log", TERMINATION_LOG]


def resolve_model(spec: api.EnergyEstimationSpec, owner_name: str, pipeline: Mapping[str, Any] | None,
                  default_pvc: str) -> ModelLocation:
    """Where an EnergyEstimation's model lives; raises when the referenced pipeline is not usable yet."""
    if spec.model.pipeline_path is not None:
        parent, name = posixpath.split(spec.model.pipeline_path)
        return ModelLocation(pvc=spec.storage.pvc_name or default_pvc, pipeline_parent=parent, pipeline_name=name,
                             results_dir=posixpath.join(spec.storage.sub_path, "estimations", owner_name))
    ref = spec.model.pipeline_ref
    assert ref is not None  # ModelSelector's validator
    if pipeline is None:
        raise PipelineNotFoundError(f"TrainingPipeline {ref.name!r} does not exist")
    published = (pipeline.get("status") or {}).get("pipelinePath")
    if not published:
        raise PipelineNotReadyError(f"TrainingPipeline {ref.name!r} has not published a pipeline yet")
    try:
        tp_spec = api.TrainingPipelineSpec.model_validate(pipeline.get("spec") or {})
    except ValueError as exc:
        raise InvalidSpecError(f"TrainingPipeline {ref.name!r} has an invalid spec: {exc}") from exc
    parent, name = posixpath.split(published)
    return ModelLocation(pvc=tp_spec.storage.pvc_name or default_pvc, pipeline_parent=parent, pipeline_name=name,
                         results_dir=posixpath.join(tp_spec.storage.sub_path, "estimations", owner_name))


# ----------------------------------------------------------------------------------- manifests

def _secret_volume(name: str, secret: api.SecretKeyRef) -> dict[str, Any]:
    return {"name": name, "secret": {"secretName": secret.name, "defaultMode": 0o440,
                                     "items": [{"key": secret.key, "path": secret.key}]}}


def _secret_volumes(prom: api.PrometheusSource | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if prom is not None and prom.bearer_token_secret is not None:
        volumes.append(_secret_volume("prometheus-token", prom.bearer_token_secret))
        mounts.append({"name": "prometheus-token", "mountPath": TOKEN_DIR, "readOnly": True})
    if prom is not None and prom.tls is not None and prom.tls.ca_secret is not None:
        volumes.append(_secret_volume("prometheus-ca", prom.tls.ca_secret))
        mounts.append({"name": "prometheus-ca", "mountPath": CA_DIR, "readOnly": True})
    return volumes, mounts


def job_manifest(owner: Owner, run: RunRequest, command: list[str], job: api.JobSettings, pvc: str,
                 prometheus: api.PrometheusSource | None, defaults: JobDefaults) -> dict[str, Any]:
    """The batch/v1 Job of one run: adopted, labelled, non-root, bounded in time and retries."""
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_KIND: owner.kind, LABEL_OWNER_UID: owner.uid, LABEL_RUN: run.key,
              "app.kubernetes.io/name": "kepler-model-trainer"}
    annotations = {ANN_OWNER: owner.name, ANN_TRIGGER: run.trigger, ANN_GENERATION: str(run.generation)}
    if run.rerun is not None:
        annotations[ANN_RERUN] = run.rerun
    if run.schedule_time is not None:
        annotations[ANN_SCHEDULE] = format_time(run.schedule_time)
    secret_volumes, secret_mounts = _secret_volumes(prometheus)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": job.image or defaults.image,
        "imagePullPolicy": job.image_pull_policy or defaults.image_pull_policy,
        "command": command,
        "env": [{"name": "HOME", "value": TMP_MOUNT}],
        "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT},
                         {"name": "tmp", "mountPath": TMP_MOUNT}, *secret_mounts],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    }
    if job.resources is not None:
        container["resources"] = {k: dict(v) for k, v in job.resources.dump().items() if v}
    uid = defaults.run_as_user
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": pvc}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}}, *secret_volumes],
    }
    if defaults.service_account:
        pod_spec["serviceAccountName"] = defaults.service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(owner, run.key),
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": api.API_VERSION, "kind": owner.kind, "name": owner.name,
                                 "uid": owner.uid, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "backoffLimit": job.backoff_limit,
            "activeDeadlineSeconds": job.active_deadline_seconds,
            "ttlSecondsAfterFinished": job.ttl_seconds_after_finished,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                                      "values": list(PERMANENT_EXIT_CODES)}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
        },
    }


def pipeline_location(spec: api.TrainingPipelineSpec, defaults: JobDefaults) -> str:
    """A label-sized digest of where a TrainingPipeline publishes: (PVC, sub-path, pipeline name)."""
    where = "\0".join((spec.storage.pvc_name or defaults.pvc, posixpath.normpath(spec.storage.sub_path or "."),
                       spec.pipeline_name))
    return hashlib.sha256(where.encode()).hexdigest()[:40]


def training_job(owner: Owner, spec: api.TrainingPipelineSpec, run: RunRequest,
                 defaults: JobDefaults) -> dict[str, Any]:
    """The Job of one TrainingPipeline run, labelled with the location it publishes to."""
    manifest = job_manifest(owner, run, train_command(spec), spec.job, spec.storage.pvc_name or defaults.pvc,
                            spec.prometheus, defaults)
    for meta in (manifest["metadata"], manifest["spec"]["template"]["metadata"]):
        meta["labels"] = {**meta["labels"], LABEL_LOCATION: pipeline_location(spec, defaults)}
    return manifest


def estimation_job(owner: Owner, spec: api.EnergyEstimationSpec, where: ModelLocation, run: RunRequest,
                   defaults: JobDefaults) -> dict[str, Any]:
    """The Job of one EnergyEstimation run."""
    return job_manifest(owner, run, estimate_command(spec, where), spec.job, where.pvc, spec.input.prometheus,
                        defaults)


def job_view(job: Mapping[str, Any]) -> JobView:
    """The planner's view of a Job read from the API."""
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    conditions = (job.get("status") or {}).get("conditions") or []
    finished = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)
    return JobView(name=meta.get("name", ""), key=labels.get(LABEL_RUN, ""),
                   generation=int(annotations.get(ANN_GENERATION) or 0), trigger=annotations.get(ANN_TRIGGER, ""),
                   created=meta.get("creationTimestamp") or "", finished=finished,
                   rerun=annotations.get(ANN_RERUN), schedule_time=annotations.get(ANN_SCHEDULE))
