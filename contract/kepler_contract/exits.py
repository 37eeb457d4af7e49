"""The trainer's exit codes: what each means, the reason string it carries, and whether the operator retries it.

The trainer raises errors that carry one of these (`kepler_trainer.errors`); the operator turns an exit
code without a readable summary into a condition reason, and fails a Job at once on the codes that
a retry cannot fix (`podFailurePolicy`). Code 2 is also what argparse exits with on a usage error.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExitCode:
    """One row of the table (docs/contracts.md)."""

    code: int
    reason: str
    retryable: bool = False
    """Worth a pod retry: a crash, Prometheus down, or another writer held the pipeline too long."""


ERROR = ExitCode(1, "Error", retryable=True)
USAGE = ExitCode(2, "UsageError")
INVALID_INPUT = ExitCode(3, "InvalidInput")
NO_KEPLER_METRICS = ExitCode(4, "NoKeplerMetrics")
NO_POWER_METRICS = ExitCode(5, "NoPowerMetrics")
TOO_FEW_SAMPLES = ExitCode(6, "TooFewSamples")
INVALID_CONFIGURATION = ExitCode(7, "InvalidConfiguration")
PROMETHEUS_UNREACHABLE = ExitCode(8, "PrometheusUnreachable", retryable=True)
PROMETHEUS_QUERY_FAILED = ExitCode(9, "PrometheusQueryFailed")
ACCURACY_GATE_FAILED = ExitCode(10, "AccuracyGateFailed")
MODEL_NOT_FOUND = ExitCode(11, "ModelNotFound")
PIPELINE_LOCKED = ExitCode(12, "PipelineLocked", retryable=True)
OUTPUT_NOT_WRITABLE = ExitCode(13, "OutputNotWritable")

TABLE: tuple[ExitCode, ...] = (
    ERROR, USAGE, INVALID_INPUT, NO_KEPLER_METRICS, NO_POWER_METRICS, TOO_FEW_SAMPLES, INVALID_CONFIGURATION,
    PROMETHEUS_UNREACHABLE, PROMETHEUS_QUERY_FAILED, ACCURACY_GATE_FAILED, MODEL_NOT_FOUND, PIPELINE_LOCKED,
    OUTPUT_NOT_WRITABLE,
)

EXIT_CODES: dict[int, str] = {e.code: e.reason for e in TABLE}
"""Exit code -> reason."""

RETRYABLE_EXIT_CODES = frozenset(e.code for e in TABLE if e.retryable)
PERMANENT_EXIT_CODES = tuple(sorted(e.code for e in TABLE if not e.retryable))
"""The codes that fail a Job at once: a retry would only fail the same way."""
