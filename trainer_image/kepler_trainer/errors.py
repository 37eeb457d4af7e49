"""Every error the trainer raises on purpose, with the exit code and reason it maps to.

The CLI translates these once, at its boundary, into one line on stderr, a non-zero exit code and
the `error` part of the termination summary. The operator maps the same `reason` strings to
condition reasons, so both sides read them from here (see docs/contracts.md).
"""

from __future__ import annotations


class KeplerModelError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1
    reason = "Error"


class UsageError(KeplerModelError):
    """An option's value is out of its range (found after argparse, before anything slow)."""

    exit_code = 2
    reason = "UsageError"


class InputError(KeplerModelError):
    """An input file is missing, unreadable, or not in the expected format."""

    exit_code = 3
    reason = "InvalidInput"


class NoKeplerMetricsError(KeplerModelError):
    """The input holds no Kepler workload metric usable as a feature."""

    exit_code = 4
    reason = "NoKeplerMetrics"


class NoPowerMetricsError(KeplerModelError):
    """The input holds no node power metric for the requested energy source."""

    exit_code = 5
    reason = "NoPowerMetrics"


class TooFewSamplesError(KeplerModelError):
    """The data has too few usable samples to train or evaluate a model."""

    exit_code = 6
    reason = "TooFewSamples"


class ConfigError(KeplerModelError):
    """An option names something unknown (trainer, feature group, energy source, ...)."""

    exit_code = 7
    reason = "InvalidConfiguration"


class PrometheusUnreachableError(KeplerModelError):
    """Prometheus could not be reached (connection error, timeout, or 5xx after retries)."""

    exit_code = 8
    reason = "PrometheusUnreachable"


class PrometheusQueryError(KeplerModelError):
    """Prometheus answered a query with a client error (bad query, bad window, or auth)."""

    exit_code = 9
    reason = "PrometheusQueryFailed"


class AccuracyGateError(KeplerModelError):
    """No trained model passed the accuracy gate, so nothing was published."""

    exit_code = 10
    reason = "AccuracyGateFailed"


class ModelNotFoundError(KeplerModelError):
    """No published model matches the request."""

    exit_code = 11
    reason = "ModelNotFound"


class PipelineLockedError(KeplerModelError):
    """Another run held the pipeline's publishing lock for longer than this run would wait."""

    exit_code = 12
    reason = "PipelineLocked"


class OutputError(KeplerModelError):
    """The model or data path cannot take the output: not a folder, read-only, or full."""

    exit_code = 13
    reason = "OutputNotWritable"


EXIT_CODES: dict[int, str] = {
    cls.exit_code: cls.reason
    for cls in (
        KeplerModelError, InputError, NoKeplerMetricsError, NoPowerMetricsError, TooFewSamplesError,
        ConfigError, PrometheusUnreachableError, PrometheusQueryError, AccuracyGateError,
        ModelNotFoundError, PipelineLockedError, UsageError, OutputError,
    )
}
"""Exit code -> reason, for the operator and the docs (argparse also exits 2 on its own usage errors)."""
