"""What the cluster admin lets a resource's author ask for. Default deny.

Whoever may create a TrainingPipeline or EnergyEstimation gets a Job run by the operator, with the
namespace's volumes and Secrets. So the operator only builds Jobs the admin's settings allow
(`KEPLER_OPERATOR_ALLOWED_*`, settings.py): the trainer image, the Prometheus URL its token is sent
to, the PVC it writes, and only Secrets whose owner labelled them as Prometheus credentials.

Pure functions except for the Secret labels, which the handler reads and hands in. Every refusal is
a `PolicyDeniedError` naming the field, which the handler turns into `Ready=False, PolicyDenied`
without creating a Job.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from . import api
from .errors import PolicyDeniedError
from .settings import OperatorSettings

CREDENTIALS_LABEL = f"{api.GROUP}/prometheus-credentials"
"""A Secret is mounted into a Job only when it carries this label with the value "true"."""

_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_DEFAULT_PORT = {"http": 80, "https": 443}


@dataclasses.dataclass(frozen=True)
class Policy:
    """The admin's allow-lists; what is not on them is refused."""

    trainer_image: str
    default_pvc: str
    allowed_images: tuple[str, ...] = ()
    allowed_prometheus_urls: tuple[str, ...] = ()
    allowed_pvcs: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> Policy:
        return cls(trainer_image=settings.trainer_image, default_pvc=settings.default_pvc,
                   allowed_images=tuple(settings.allowed_images),
                   allowed_prometheus_urls=tuple(settings.allowed_prometheus_urls),
                   allowed_pvcs=tuple(settings.allowed_pvcs))

    def image_allowed(self, image: str | None) -> bool:
        if image is None or image == self.trainer_image:
            return True
        return any(image == entry or (entry.endswith("*") and image.startswith(entry[:-1]))
                   for entry in self.allowed_images)

    def pvc_allowed(self, pvc: str | None) -> bool:
        return pvc is None or pvc == self.default_pvc or pvc in self.allowed_pvcs or "*" in self.allowed_pvcs

    def url_allowed(self, url: str) -> bool:
        target = _origin_and_path(url)
        if target is None:
            return False
        for prefix in self.allowed_prometheus_urls:
            allowed = _origin_and_path(prefix)
            if allowed is not None and allowed[0] == target[0] and _under(target[1], allowed[1]):
                return True
        return False


def _origin_and_path(url: str) -> tuple[tuple[str, str, int], str] | None:
    """(scheme, host, port) and path of a plain http(s) URL; None for anything a client might read
    differently (user info, backslashes, percent escapes, `.` or `..` segments)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORT or not _HOST.match(parts.netloc) or parts.query or parts.fragment:
        return None
    segments = parts.path.split("/")
    if "%" in parts.path or "\\" in parts.path or any(s in (".", "..") for s in segments):
        return None
    host = (parts.hostname or "").lower().rstrip(".")
    return (parts.scheme, host, port or _DEFAULT_PORT[parts.scheme]), parts.path


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return not prefix or path.rstrip("/") == prefix or path.startswith(prefix + "/")


# ------------------------------------------------------------------------------------ checks

def check_job(policy: Policy, job: api.JobSettings, field: str = "spec.job.image") -> None:
    if not policy.image_allowed(job.image):
        raise PolicyDeniedError(f"{field}: image {job.image!r} is not allowed by the operator's policy "
                                f"(allowed: the operator's trainer image{_listed(policy.allowed_images)})")


def check_pvc(policy: Policy, pvc: str | None, field: str = "spec.storage.pvcName") -> None:
    if not policy.pvc_allowed(pvc):
        raise PolicyDeniedError(f"{field}: PVC {pvc!r} is not allowed by the operator's policy "
                                f"(allowed: {policy.default_pvc!r}{_listed(policy.allowed_pvcs)})")


def check_prometheus(policy: Policy, prom: api.PrometheusSource | None, field: str) -> None:
    if prom is not None and not policy.url_allowed(prom.url):
        raise PolicyDeniedError(f"{field}.url: {prom.url!r} is not under an allowed Prometheus URL "
                                f"(allowed: {', '.join(policy.allowed_prometheus_urls) or 'none'})")


def _listed(entries: Iterable[str]) -> str:
    entries = list(entries)
    return f", {', '.join(entries)}" if entries else ""


def check_training(policy: Policy, spec: api.TrainingPipelineSpec) -> None:
    """Everything of a TrainingPipeline's spec the policy decides, except the Secrets' labels."""
    check_job(policy, spec.job)
    check_pvc(policy, spec.storage.pvc_name)
    check_prometheus(policy, spec.prometheus, "spec.prometheus")


def check_estimation(policy: Policy, spec: api.EnergyEstimationSpec, pvc: str) -> None:
    """The same for an EnergyEstimation; `pvc` is the volume it resolved to (its own or its pipeline's)."""
    check_job(policy, spec.job)
    field = "spec.storage.pvcName" if spec.model.pipeline_ref is None else "spec.model.pipelineRef (its PVC)"
    check_pvc(policy, pvc, field)
    check_prometheus(policy, spec.input.prometheus, "spec.input.prometheus")


def secrets_used(prom: api.PrometheusSource | None, field: str) -> list[tuple[str, str]]:
    """(field, Secret name) of every Secret a Job would mount for this Prometheus source."""
    if prom is None:
        return []
    used = []
    if prom.bearer_token_secret is not None:
        used.append((f"{field}.bearerTokenSecret", prom.bearer_token_secret.name))
    if prom.tls is not None and prom.tls.ca_secret is not None:
        used.append((f"{field}.tls.caSecret", prom.tls.ca_secret.name))
    return used


def check_secret(field: str, name: str, labels: Mapping[str, str] | None) -> None:
    """`labels` is None when the Secret does not exist."""
    if labels is None:
        raise PolicyDeniedError(f"{field}: Secret {name!r} does not exist")
    if labels.get(CREDENTIALS_LABEL) != "true":
        raise PolicyDeniedError(f"{field}: Secret {name!r} lacks the label {CREDENTIALS_LABEL}=\"true\" that "
                                "makes it usable as Prometheus credentials")
