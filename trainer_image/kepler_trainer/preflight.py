"""Checks that run before anything slow: option ranges, the machine spec, and the output folder.

A run that is going to fail for a reason known at start (`--jobs 0`, a read-only or full volume, a
model path that is a file) fails at start, with one line and its own exit code, instead of after the
whole training with a traceback. Storage errors that only show while writing (the volume fills up
during the run) are translated by `output_errors` into the same exit code.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from .errors import InputError, OutputError, UsageError

MIN_FREE_BYTES = 64 * 1024 * 1024
"""A pipeline of the default trainers on a day of data takes tens of MB: refuse below this."""
MAX_SPEC_BYTES = 1024 * 1024
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                            errno.EEXIST, errno.EISDIR, errno.EFBIG})


def check_train_options(args) -> None:
    """The numeric options of `train`/`estimate`: UsageError (exit 2) when out of range."""
    jobs = getattr(args, "jobs", 1)
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1 (got {jobs})")
    max_mae = getattr(args, "max_mae", None)
    if max_mae is not None and not (math.isfinite(max_mae) and max_mae >= 0):
        raise UsageError(f"--max-mae must be a finite number of watts >= 0 (got {max_mae})")


def read_regular(path: Path, limit: int) -> bytes:
    """A whole regular file of at most `limit` bytes; InputError for anything else (a FIFO, a device
    or a folder is refused without blocking on it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path} is not a regular file")
        if st.st_size > limit:
            raise InputError(f"{path} is larger than {limit:,} bytes")
        return handle.read(limit + 1)[:limit]


def machine_spec(path: str | None) -> dict | None:
    """The `--machine-spec` JSON object (or its `attrs`), checked as machine.normalise_spec reads it."""
    from . import machine

    if not path:
        return None
    try:
        spec = orjson.loads(read_regular(Path(path), MAX_SPEC_BYTES))
    except orjson.JSONDecodeError as exc:  # also what refuses very deep nesting
        raise InputError(f"cannot read machine spec {path}: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("attrs", spec), dict):
        raise InputError(f"machine spec {path}: must be a JSON object (optionally under \"attrs\"), "
                         f"not {type(spec.get('attrs', spec) if isinstance(spec, dict) else spec).__name__}")
    machine.normalise_spec(spec)  # raises InputError on a bad attribute
    return spec.get("attrs", spec)


def check_output_folder(folder: Path, what: str) -> None:
    """`folder` exists (created if needed) as a writable folder with MIN_FREE_BYTES free; else OutputError."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is not a folder")
    with output_errors(folder, what):
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
        fs = os.statvfs(folder)
    free = fs.f_bavail * fs.f_frsize
    if free < MIN_FREE_BYTES:
        raise OutputError(f"{what} {folder} has {free / 2**20:.1f} MiB free; a pipeline needs at least "
                          f"{MIN_FREE_BYTES / 2**20:.0f} MiB")


@contextmanager
def output_errors(folder: Path, what: str = "model path") -> Iterator[None]:
    """Storage failures (full, read-only, not a folder, permission) as OutputError (exit 13)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        raise OutputError(f"cannot write to {what} {folder}: {exc.strerror}{where}") from None
