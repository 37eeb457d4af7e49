"""One writer per pipeline, and staging leftovers that cannot look alive.

A run holds an exclusive `flock` on `<models>/.lock-<name>` from before it reads the published
version it builds on until after its swap, so the groups it carries over come from the version that
is current when it publishes, and two runs of one pipeline publish one after the other: the second
builds on the first. flock works on local file systems and on NFS-backed PVCs (Linux maps it to a
POSIX lock there). The kernel drops the lock when its holder dies, whatever killed it.

Staging entries (`.tmp-<name>-<run id>` and `.tmp-<name>-<run id>.zip`) carry a run id that is random,
not a PID: PIDs repeat across pods and a trainer running as PID 1 in a container always looks alive.
Every staging entry of a pipeline is written under its lock, so whoever holds the lock knows every
staging entry it finds for that pipeline belongs to a dead run, and removes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from kepler_contract import layout

from .errors import InputError, PipelineLockedError

LOCK_PREFIX, STAGING_PREFIX = layout.LOCK_PREFIX, layout.STAGING_PREFIX
RUN_ID = re.compile(r"r[0-9a-f]{24}")
DEFAULT_TIMEOUT = 3600.0
"""Seconds to wait for another run of the same pipeline (the operator's default Job deadline)."""
_POLL = 0.2


@dataclasses.dataclass(frozen=True)
class Staging:
    """Where one run writes its new version before the swap."""

    run_id: str
    folder: Path
    archive: Path


def new_run_id() -> str:
    """96 random bits: unique across pods and restarts, unlike a PID."""
    return "r" + secrets.token_hex(12)


def staging_entries(model_path: Path, name: str) -> list[Path]:
    """The staging folders and archives of pipeline `name`; not those of `name-x` (the run id is matched)."""
    prefix = f"{STAGING_PREFIX}{name}-"
    found = []
    for entry in model_path.iterdir() if model_path.is_dir() else ():
        rest = entry.name[len(prefix):] if entry.name.startswith(prefix) else ""
        if RUN_ID.fullmatch(rest.removesuffix(layout.ARCHIVE_SUFFIX)):
            found.append(entry)
    return found


def remove_stale(model_path: Path, name: str) -> int:
    """Remove every staging entry of `name`; call only while holding its lock. Returns how many."""
    entries = staging_entries(model_path, name)
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return len(entries)


def _open_lock_file(path: Path) -> int:
    """The lock file, never through a symlink and never anything but a regular file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise InputError(f"cannot open the pipeline lock {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{path} is not a regular file: refusing to use it as the pipeline lock")
    return fd


def _acquire(fd: int, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise PipelineLockedError(f"pipeline {name!r} is being published by another run; gave up after "
                                          f"{timeout:g} s (--lock-timeout)") from None
            time.sleep(_POLL)


@contextlib.contextmanager
def locked(model_path: Path, name: str, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Hold pipeline `name`'s exclusive lock (waiting up to `timeout` seconds for it)."""
    fd = _open_lock_file(model_path / layout.lock_file(name))
    try:
        _acquire(fd, name, timeout)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


@contextlib.contextmanager
def staging(model_path: Path, name: str, timeout: float = DEFAULT_TIMEOUT) -> Iterator[Staging]:
    """Lock pipeline `name`, clear dead runs' staging entries, and give this run a fresh staging
    folder (readable by the model server) and archive path; both are removed on the way out."""
    with locked(model_path, name, timeout):
        remove_stale(model_path, name)
        run_id = new_run_id()
        stage = Staging(run_id, model_path / f"{STAGING_PREFIX}{name}-{run_id}",
                        model_path / f"{STAGING_PREFIX}{name}-{run_id}{layout.ARCHIVE_SUFFIX}")
        stage.folder.mkdir()
        stage.folder.chmod(0o755)  # the model server reads it as another user
        try:
            yield stage
        finally:
            shutil.rmtree(stage.folder, ignore_errors=True)
            stage.archive.unlink(missing_ok=True)
