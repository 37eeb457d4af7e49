"""Errors the operator raises on purpose.

Handlers translate these once, at the kopf boundary, into conditions with a reason and a message.
The trainer's exit codes are not here: both programs read them from `kepler_contract.exits`.
"""

from __future__ import annotations


class OperatorError(Exception):
    """Base class: an expected failure with a reason and a message meant for the user."""

    reason = "OperatorError"


class InvalidSpecError(OperatorError):
    """The resource's spec breaks a rule of the API (a cluster without CEL let it in)."""

    reason = "InvalidSpec"


class PipelineNotFoundError(OperatorError):
    """The referenced TrainingPipeline does not exist."""

    reason = "PipelineNotFound"


class PipelineNotReadyError(OperatorError):
    """The referenced TrainingPipeline has not published a pipeline yet."""

    reason = "PipelineNotReady"


class JobRejectedError(OperatorError):
    """The API server refused the run's Job (admission policy, quota, permissions)."""

    reason = "JobRejected"


class PolicyDeniedError(OperatorError):
    """The spec asks for something the operator's policy (set by the cluster admin) does not allow."""

    reason = "PolicyDenied"


class PipelineBusyError(OperatorError):
    """Another resource's Job is publishing the same pipeline location: this run waits for it."""

    reason = "PipelineBusy"


class KubeApiError(Exception):
    """A Kubernetes API call failed (`kube.API_ERRORS` picks the subclass from the HTTP status).

    Not an `OperatorError`: each call of `kube.Kube` decides what a failure means there (a 409 on create
    is the same run, a 403 on a Secret is a policy refusal, ...); one that nobody handles reaches kopf,
    which retries the handler.
    """

    def __init__(self, what: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"{what}: {status} {reason}")
        self.what, self.status, self.reason, self.message = what, status, reason, message


class NotFoundError(KubeApiError):
    """404: the object (or its namespace) does not exist."""


class ConflictError(KubeApiError):
    """409: it exists already, or it changed since it was read."""


class RefusedError(KubeApiError):
    """400, 422: the API server refused the object for good (validation, an admission policy)."""


class ForbiddenError(KubeApiError):
    """403: RBAC, a quota, or an admission policy forbids it."""


class ApiUnavailableError(KubeApiError):
    """Any other status (429, 5xx): worth trying again later."""
