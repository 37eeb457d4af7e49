"""Errors the operator raises on purpose, and the trainer's exit-code table it reads.

Handlers translate these once, at the kopf boundary, into conditions with a reason and a message.
The exit-code table is copied from docs/contracts.md (the trainer's `kepler_trainer.errors`): the
operator image does not ship the trainer package; a unit test keeps both tables in step.
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


EXIT_CODES: dict[int, str] = {
    1: "Error",
    2: "UsageError",
    3: "InvalidInput",
    4: "NoKeplerMetrics",
    5: "NoPowerMetrics",
    6: "TooFewSamples",
    7: "InvalidConfiguration",
    8: "PrometheusUnreachable",
    9: "PrometheusQueryFailed",
    10: "AccuracyGateFailed",
    11: "ModelNotFound",
    12: "PipelineLocked",
    13: "OutputNotWritable",
}
"""The trainer's exit code -> reason (docs/contracts.md)."""

RETRYABLE_EXIT_CODES = frozenset({1, 8, 12})
"""Worth a pod retry (a crash, Prometheus down, another writer held the pipeline too long); the other
codes fail the Job at once."""
