"""Subprocesses that run this checkout's code, whichever checkout the editable install points at."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_FOLDERS: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
    "find"]["where"]
"""Where the distribution's packages live (pyproject's `packages.find`): trainer, operator, contract."""


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment plus a PYTHONPATH of this checkout's package folders, and `CI=1`."""
    path = os.pathsep.join(str(ROOT / folder) for folder in PACKAGE_FOLDERS)
    return {**os.environ, "PYTHONPATH": path, "CI": "1", **extra}

DATA = ROOT / "tests" / "data"
"""The tests' recorded inputs (tests/data/README.md says where each comes from)."""
REAL = DATA / "kepler-metrics" / "prom_response_2023.json"
"""A real Kepler 0.7 dump (query output of a 2023 cluster)."""


def kepler_model(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`kepler-model ARGS` run from this checkout, its output captured."""
    return subprocess.run([sys.executable, "-m", "kepler_trainer", *args], capture_output=True, text=True,
                          cwd=cwd, env=subprocess_env(), timeout=timeout)


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Ask a child process to end (SIGTERM), and kill it if it has not within `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
