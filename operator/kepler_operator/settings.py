"""Operator configuration, from environment variables prefixed `KEPLER_OPERATOR_`."""

from __future__ import annotations

import functools
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """Everything an operator deployment may tune; the defaults suit the manifests in manifests/."""

    model_config = SettingsConfigDict(env_prefix="KEPLER_OPERATOR_", frozen=True)

    namespaces: Annotated[list[str], NoDecode, Field(
        description="Namespaces to watch, comma-separated; all namespaces when empty.")] = []
    trainer_image: str = Field("ghcr.io/kepler-model-operator/trainer:0.1.0",
                               description="Image of Jobs whose spec.job.image is unset.")
    image_pull_policy: str = Field("IfNotPresent", description="Pull policy when spec.job sets none.")
    default_pvc: str = Field("kepler-models", description="PVC of resources whose storage.pvcName is unset.")
    job_service_account: str | None = Field(None, description="ServiceAccount of the Jobs (none: default).")
    run_as_user: int = Field(1000, ge=1, description="UID (and GID, fsGroup) the Jobs run as; never root.")
    resync_seconds: float = Field(60.0, gt=0, description="Re-check every resource this often.")
    liveness_endpoint: str = Field("http://0.0.0.0:8080/healthz", description="kopf's liveness probe URL.")
    model_server_url: str = Field(
        "http://kepler-model-server.kepler-model.svc:8100", pattern=r"^https?://",
        description="The model server the operator fetches ONNX models from for spec.onnxConfigMap.")
    model_server_pvc: str | None = Field(None, description="The PVC that model server serves (default: defaultPvc); "
                                                           "pipelines on other PVCs get no ONNX ConfigMap.")
    max_workers: int = Field(16, ge=1, description="Threads (and connections) for the blocking Kubernetes calls.")

    # -- policy (kepler_operator.policy): what a resource's author may ask for; default deny ---------------------
    allowed_images: Annotated[list[str], NoDecode, Field(
        description="Trainer images a spec.job.image may name, comma-separated; an entry ending in `*` is a prefix. "
                    "trainerImage is always allowed; when empty, nothing else is.")] = []
    allowed_prometheus_urls: Annotated[list[str], NoDecode, Field(
        description="Prometheus URL prefixes (scheme, host and port exact; path on a segment boundary), "
                    "comma-separated; when empty, every spec.prometheus.url is refused.")] = []
    allowed_pvcs: Annotated[list[str], NoDecode, Field(
        description="PVCs a storage.pvcName may name besides defaultPvc, comma-separated; `*` for any.")] = []

    @field_validator("namespaces", "allowed_images", "allowed_prometheus_urls", "allowed_pvcs", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [ns.strip() for ns in value.split(",") if ns.strip()]
        return value


@functools.lru_cache(maxsize=1)
def get_settings() -> OperatorSettings:
    """The settings, read from the environment once per process."""
    return OperatorSettings()
