"""Subprocesses that run this checkout's code, whichever checkout the editable install points at."""

from __future__ import annotations

import os
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
