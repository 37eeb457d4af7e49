"""Every error the trainer raises on purpose, with the exit code and reason it maps to.

The CLI translates these once, at its boundary, into one line on stderr, a non-zero exit code and
the `error` part of the termination summary. Codes and reasons come from the contract package
(`kepler_contract.exits`), which the operator reads too (see docs/contracts.md).
"""

from __future__ import annotations

from kepler_contract import exits


class KeplerModelError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code, reason = exits.ERROR.code, exits.ERROR.reason


class UsageError(KeplerModelError):
    """An option's value is out of its range (found after argparse, before anything slow)."""

    exit_code, reason = exits.USAGE.code, exits.USAGE.reason


class InputError(KeplerModelError):
    """An input file is missing, unreadable, or not in the expected format."""

    exit_code, reason = exits.INVALID_INPUT.code, exits.INVALID_INPUT.reason


class NoKeplerMetricsError(KeplerModelError):
    """The input holds no Kepler workload metric usable as a feature."""

    exit_code, reason = exits.NO_KEPLER_METRICS.code, exits.NO_KEPLER_METRICS.reason


class NoPowerMetricsError(KeplerModelError):
    """The input holds no node power metric for the requested energy source."""

    exit_code, reason = exits.NO_POWER_METRICS.code, exits.NO_POWER_METRICS.reason


class TooFewSamplesError(KeplerModelError):
    """The data has too few usable samples to train or evaluate a model."""

    exit_code, reason = exits.TOO_FEW_SAMPLES.code, exits.TOO_FEW_SAMPLES.reason


class ConfigError(KeplerModelError):
    """An option names something unknown (trainer, feature group, energy source, ...)."""

    exit_code, reason = exits.INVALID_CONFIGURATION.code, exits.INVALID_CONFIGURATION.reason


class PrometheusUnreachableError(KeplerModelError):
    """Prometheus could not be reached (connection error, timeout, or 5xx after retries)."""

    exit_code, reason = exits.PROMETHEUS_UNREACHABLE.code, exits.PROMETHEUS_UNREACHABLE.reason


class PrometheusQueryError(KeplerModelError):
    """Prometheus answered a query with a client error (bad query, bad window, or auth)."""

    exit_code, reason = exits.PROMETHEUS_QUERY_FAILED.code, exits.PROMETHEUS_QUERY_FAILED.reason


class AccuracyGateError(KeplerModelError):
    """No trained model passed the accuracy gate, so nothing was published."""

    exit_code, reason = exits.ACCURACY_GATE_FAILED.code, exits.ACCURACY_GATE_FAILED.reason


class ModelNotFoundError(KeplerModelError):
    """No published model matches the request."""

    exit_code, reason = exits.MODEL_NOT_FOUND.code, exits.MODEL_NOT_FOUND.reason


class PipelineLockedError(KeplerModelError):
    """Another run held the pipeline's publishing lock for longer than this run would wait."""

    exit_code, reason = exits.PIPELINE_LOCKED.code, exits.PIPELINE_LOCKED.reason


class OutputError(KeplerModelError):
    """The model or data path cannot take the output: not a folder, read-only, or full."""

    exit_code, reason = exits.OUTPUT_NOT_WRITABLE.code, exits.OUTPUT_NOT_WRITABLE.reason


EXIT_CODES = exits.EXIT_CODES
"""Exit code -> reason (argparse also exits 2 on its own usage errors)."""
