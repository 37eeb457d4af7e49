"""The operator's Kubernetes client: the few blocking calls it makes, and what their failures mean.

API errors are translated here, once: `_calling` turns every `ApiException` into the `KubeApiError`
subclass that `API_ERRORS` names for its HTTP status, and each call says what that means for it:
an `OperatorError` (shown in status), `kopf.TemporaryError` (retried later) or "gone is fine".
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import api, jobs
from .errors import (
    ApiUnavailableError,
    ConflictError,
    ForbiddenError,
    JobRejectedError,
    KubeApiError,
    NotFoundError,
    PolicyDeniedError,
    RefusedError,
)
from .onnx_configmap import OnnxConfigMapError, owned_by

PLURAL = {api.TrainingPipeline.kind: api.TrainingPipeline.plural,
          api.EnergyEstimation.kind: api.EnergyEstimation.plural}
API_ERRORS: dict[int, type[KubeApiError]] = {
    400: RefusedError, 403: ForbiddenError, 404: NotFoundError, 409: ConflictError, 422: RefusedError,
}
"""The HTTP status of a Kubernetes API answer -> what it means; any other status: `ApiUnavailableError`."""
REFUSED_FOR_GOOD = (RefusedError, ForbiddenError)
"""Refusals a retry cannot fix (admission, quota, RBAC): said in status rather than retried."""


@contextlib.contextmanager
def _calling(what: str) -> Iterator[None]:
    """Run one API call; its `ApiException` leaves as the `KubeApiError` of its status."""
    try:
        yield
    except ApiException as exc:
        error = API_ERRORS.get(exc.status, ApiUnavailableError)
        raise error(what, exc.status, str(exc.reason), _api_message(exc)) from exc


def _temporary(exc: KubeApiError) -> kopf.TemporaryError:
    return kopf.TemporaryError(str(exc), delay=10)


def _now_text() -> str:
    return jobs.format_time(datetime.datetime.now(datetime.UTC))


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
            with _calling(f"creating Job {meta['name']}"):
                response = self.batch.create_namespaced_job(meta["namespace"], manifest, _preload_content=False)
        except ConflictError:
            with _calling(f"reading Job {meta['name']}"):
                response = self.batch.read_namespaced_job(meta["name"], meta["namespace"], _preload_content=False)
        except REFUSED_FOR_GOOD as exc:
            raise JobRejectedError(f"Job {meta['name']} was rejected: {exc.message}") from exc
        except KubeApiError as exc:
            raise _temporary(exc) from exc
        job: dict[str, Any] = json.loads(response.data)
        return job

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods matching a label selector (filtered by the API server)."""
        with _calling(f"listing pods {selector}"):
            response = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        return list(json.loads(response.data).get("items") or [])

    def secret_labels(self, namespace: str, name: str) -> dict[str, str] | None:
        """The labels of a Secret (None when it does not exist), asked for as metadata only: the
        operator never needs, and so never receives, a Secret's data where the server can avoid it."""
        accept = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"
        try:
            with _calling(f"reading Secret {name}"):
                response = self.core.read_namespaced_secret(name, namespace, _headers={"Accept": accept},
                                                            _preload_content=False)
        except NotFoundError:
            return None
        except ForbiddenError as exc:
            raise PolicyDeniedError(f"the operator may not read Secret {name!r}: {exc.message}") from exc
        except KubeApiError as exc:
            raise _temporary(exc) from exc
        body = json.loads(response.data)
        return dict((body.get("metadata") or {}).get("labels") or {})

    def apply_configmap(self, manifest: dict[str, Any], owner_uid: str) -> None:
        """Create the ConfigMap, or replace it when this owner's; refuse one that belongs to someone else."""
        meta = manifest["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        try:
            with _calling(f"reading ConfigMap {name}"):
                existing = json.loads(self.core.read_namespaced_config_map(name, namespace,
                                                                           _preload_content=False).data)
        except NotFoundError:
            existing = None
        except KubeApiError as exc:
            raise _configmap_error(name, exc) from exc
        if existing is not None and not owned_by(existing, owner_uid):
            raise OnnxConfigMapError("ConfigMapNotOwned", f"ConfigMap {name!r} exists and is not this "
                                                          "TrainingPipeline's: choose another name")
        try:
            with _calling(f"writing ConfigMap {name}"):
                if existing is None:
                    self.core.create_namespaced_config_map(namespace, manifest, _preload_content=False)
                else:
                    version = existing["metadata"]["resourceVersion"]
                    body = {**manifest, "metadata": {**meta, "resourceVersion": version}}
                    self.core.replace_namespaced_config_map(name, namespace, body, _preload_content=False)
        except KubeApiError as exc:
            raise _configmap_error(name, exc) from exc

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and its pods; a Job already gone is fine."""
        with contextlib.suppress(NotFoundError), _calling(f"deleting Job {name}"):
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")

    def patch_status(self, kind: str, namespace: str, name: str, new_status: dict[str, Any]) -> None:
        """Merge-patch the status subresource; the resource being gone is fine."""
        with contextlib.suppress(NotFoundError), _calling(f"writing the status of {kind} {name}"):
            self.custom.patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, namespace, PLURAL[kind], name, {"status": new_status})

    def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event on a resource; losing one is not worth failing a reconcile."""
        meta = involved["metadata"]
        now = _now_text()
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


def _configmap_error(name: str, exc: KubeApiError) -> Exception:
    """A refusal for good becomes the condition; anything else is retried (a conflict on the next pass)."""
    if isinstance(exc, REFUSED_FOR_GOOD):
        return OnnxConfigMapError("ConfigMapRejected", f"ConfigMap {name} was rejected: {exc.message}")
    return OnnxConfigMapError("ConfigMapWriteFailed", f"writing ConfigMap {name}: {exc.status} {exc.reason}")


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)
