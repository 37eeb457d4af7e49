"""Worker processes end with the run that started them, however it ends.

joblib keeps its loky workers alive after a `Parallel` call, for reuse, until they have been idle
for 300 s; and when the run is killed (SIGTERM or SIGKILL from a shell) nothing tells them. So
`stop()` ends them when training is done, and each worker watches its parent: when the parent is
gone (the worker was re-parented) it exits at once instead of idling with its memory.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_SECONDS = 0.5
_watching = False


def child_of(parent: int, func: Callable[..., T]) -> Callable[..., T]:
    """`func`, which when run in a worker process first makes that worker exit with `parent`."""
    return functools.partial(_run_in_child, parent, func)


def _run_in_child(parent: int, func: Callable[..., T], *args, **kwargs) -> T:
    if os.getpid() != parent:
        _watch(parent)
    return func(*args, **kwargs)


def _watch(parent: int) -> None:
    global _watching
    if _watching:
        return
    _watching = True

    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        os._exit(1)  # the run is gone: nothing here is worth finishing

    threading.Thread(target=loop, name="exit-with-parent", daemon=True).start()


def stop() -> None:
    """End joblib's reusable loky workers now (they would otherwise idle for 300 s)."""
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor  # no public accessor that would not start one
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)
