"""Checks of what the catalog reads from the models folder, which it trusts no more than a request.

A models volume can hold anything: a FIFO where a zip should be (opening it would block the server),
a zip replaced by random bytes, a weight file Kepler cannot decode, a negative error. Each check here
raises `Rejected` with a short reason (a metric label) and a message; the catalog then skips that
model, so garbage is never listed, let alone selected as the best model.

The weight schema is the one Kepler 0.7's Go estimator decodes (`ComponentModelWeights` in
pkg/model/estimator/local/regressor/model_weights.go of Kepler 0.7.11/0.7.12): a field of the wrong
JSON type fails the whole decode, so one bad component makes the file unusable. Go matches field
names case-insensitively, so known fields are recognised the same way here.
"""

from __future__ import annotations

import io
import math
import os
import stat
import zipfile
from typing import Any

from kepler_contract import layout

MAX_ZIP_BYTES = 512 * 1024 * 1024
"""A model zip larger than this is not ours (the biggest default model is a few MB)."""
COMPONENTS = ("platform", "core", "uncore", "package", "dram")
"""The components of Kepler's ComponentModelWeights."""
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Rejected(Exception):
    """An artefact that must not be served; `reason` is a fixed word for the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def open_regular(dir_fd: int, name: str) -> tuple[int, os.stat_result]:
    """(descriptor, stat) of a regular file, opened without following a symlink or blocking on a FIFO.

    FileNotFoundError when absent; Rejected when it is not a regular file; other OSErrors as raised."""
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Rejected("not_a_file", f"{name} is not a regular file")
    return fd, st


def file_identity(st: os.stat_result) -> tuple[int, int, int]:
    """What tells a file apart from a replacement or an edit in place."""
    return st.st_ino, st.st_size, st.st_mtime_ns


def check_zip(dir_fd: int, name: str) -> tuple[int, int, int]:
    """The identity of an intact model zip (every member's CRC checked, metadata.json present)."""
    try:
        fd, st = open_regular(dir_fd, name)
    except OSError as exc:
        raise Rejected("zip", f"cannot read {name}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if st.st_size > MAX_ZIP_BYTES:
            raise Rejected("zip", f"{name} is larger than {MAX_ZIP_BYTES} bytes")
        data = handle.read(MAX_ZIP_BYTES + 1)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            corrupt = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise Rejected("zip", f"{name} is not a valid zip ({exc})") from None
    if corrupt is not None:
        raise Rejected("zip", f"{name}: member {corrupt!r} is corrupt")
    if layout.METADATA not in names:
        raise Rejected("zip", f"{name} holds no {layout.METADATA}")
    return file_identity(st)


def check_errors(metadata: dict[str, Any]) -> None:
    """`mae` and every `<component>_mae` are finite numbers >= 0 (selection ranks by them). MAPEs are
    not checked: -1 is how the trainer says a component had no positive power to divide by."""
    for key, value in metadata.items():
        if (key == "mae" or key.endswith("_mae")) and not (_finite(value) and value >= 0):
            raise Rejected("errors", f"{key} is {value!r}, not a finite number >= 0")


def check_weight(document: Any) -> None:
    """The weight document as Kepler's Go code decodes it; Rejected at the first thing it would refuse."""
    if not isinstance(document, dict):
        raise Rejected("weight", "the weight file is not a JSON object")
    fields = {k.lower(): (k, v) for k, v in document.items() if isinstance(k, str)}
    components = [(k, v) for c, (k, v) in fields.items() if c in COMPONENTS]
    if not any(v is not None for _, v in components):
        raise Rejected("weight", "the weight file has no component (" + ", ".join(COMPONENTS) + ")")
    for key, body in components:
        if body is not None:
            _check_component(key, body)
    if "model_name" in fields and not isinstance(fields["model_name"][1], (str, type(None))):
        raise Rejected("weight", "model_name is not a string")
    if "machine_spec" in fields and not isinstance(fields["machine_spec"][1], (dict, type(None))):
        raise Rejected("weight", "machine_spec is not an object")


def _check_component(component: str, body: Any) -> None:
    where = f"{component}.All_Weights"
    if not isinstance(body, dict):
        raise Rejected("weight", f"{component} is not an object")
    weights = next((v for k, v in body.items() if isinstance(k, str) and k.lower() == "all_weights"), None)
    if not isinstance(weights, dict):
        raise Rejected("weight", f"{where} is {type(weights).__name__}, not an object")
    fields = {k.lower(): v for k, v in weights.items() if isinstance(k, str)}
    bias = fields.get("bias_weight")
    if bias is not None and not _finite(bias):
        raise Rejected("weight", f"{where}.Bias_Weight is not a finite number")
    curve = fields.get("curvefit_weights")
    if curve is not None and not (isinstance(curve, list) and all(_finite(v) for v in curve)):
        raise Rejected("weight", f"{where}.CurveFit_Weights is not a list of finite numbers")
    numerical = fields.get("numerical_variables")
    if numerical is not None:
        if not isinstance(numerical, dict):
            raise Rejected("weight", f"{where}.Numerical_Variables is not an object")
        for feature, variable in numerical.items():
            _check_numbers(variable, ("scale", "weight"), f"{where}.Numerical_Variables.{feature}")
    categorical = fields.get("categorical_variables")
    if categorical is not None:
        if not isinstance(categorical, dict):
            raise Rejected("weight", f"{where}.Categorical_Variables is not an object")
        for feature, values in categorical.items():
            if not isinstance(values, dict):
                raise Rejected("weight", f"{where}.Categorical_Variables.{feature} is not an object")
            for value, variable in values.items():
                _check_numbers(variable, ("weight",), f"{where}.Categorical_Variables.{feature}.{value}")
    if not numerical and not curve and bias is None:
        raise Rejected("weight", f"{where} holds no weight")


def _check_numbers(variable: Any, names: tuple[str, ...], where: str) -> None:
    if not isinstance(variable, dict):
        raise Rejected("weight", f"{where} is not an object")
    for key, value in variable.items():
        if isinstance(key, str) and key.lower() in names and value is not None and not _finite(value):
            raise Rejected("weight", f"{where}.{key} is not a finite number")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _number(value) and math.isfinite(value)
