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
