"""The loop: read procfs, compute the model's inputs as its manifest says, evaluate, integrate joules.

Everything a scrape shows comes from one immutable `State`, replaced whole (one reference assignment) after
each evaluation or reload, so a scrape never sees one model's power beside another model's name.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import KeplerModelError
from . import model as models, procfs

log = logging.getLogger("kepler_model.exporter")


@dataclass(frozen=True)
class State:
    model: models.Model
    loaded_at: float                                   # unix seconds of the last successful (re)load
    watts: dict[str, float] = field(default_factory=dict)
    joules: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (pipeline, model, zone)
    inputs: dict[str, float] = field(default_factory=dict)
    evaluated_at: float | None = None
    evaluations: int = 0
    evaluation_errors: int = 0
    reload_failures: int = 0
    gaps: dict[str, int] = field(default_factory=dict)


class Exporter:
    def __init__(self, source: str, pipeline: str, procfs_root: str, interval: float, reload_interval: float):
        self.source, self.pipeline, self.root = source, pipeline, procfs_root
        self.interval, self.reload_interval = interval, reload_interval
        self.stop = threading.Event()
        self.signature = models.signature(source)  # before the load: a change during it is seen next tick
        first = models.load(source, pipeline, procfs_root)  # a bad first model is the user's error: raised
        self.state = State(first, time.time())
        if models.is_url(source):
            self.signature = models.read_manifest(source)
        self.refused: tuple | bytes | None = None       # what failed last, so it is not retried every tick
        self.previous: procfs.Snapshot | None = None
        self.past: collections.deque[tuple[float, tuple[float, ...]]] = collections.deque()  # for history inputs
        self.last_gap: str | None = None
        self.next_remote_check = time.monotonic() + reload_interval
        log.info("model %s/%s loaded (sha256 %s, inputs %s, zones %s)", first.pipeline, first.name,
                 first.sha256[:12], ",".join(i.name for i in first.inputs), ",".join(first.zones))

    # -- reload ----------------------------------------------------------------------------------------

    def maybe_reload(self) -> None:
        """A changed folder (stat of both files) or a changed manifest at the URL: load it whole, then swap."""
        if models.is_url(self.source):
            if time.monotonic() < self.next_remote_check:
                return
            self.next_remote_check = time.monotonic() + self.reload_interval
            try:
                marker = models.read_manifest(self.source)
            except KeplerModelError as exc:
                return self._refuse(None, str(exc))

            def build():
                return models.parse(marker, models.read_graph(self.source), self.pipeline, procfs.read(self.root))
        else:
            marker = models.signature(self.source)

            def build():
                return models.load(self.source, self.pipeline, self.root)
        if marker == self.signature or marker == self.refused:
            return
        try:
            new = build()
        except KeplerModelError as exc:
            return self._refuse(marker, str(exc))
        self.signature, self.refused, old = marker, None, self.state.model
        self.state = replace(self.state, model=new, loaded_at=time.time(), watts={}, inputs={})
        self.past.clear()
        log.info("model reloaded: %s/%s (sha256 %s) replaces %s/%s (sha256 %s)", new.pipeline, new.name,
                 new.sha256[:12], old.pipeline, old.name, old.sha256[:12])

    def _refuse(self, marker, reason: str) -> None:
        if marker is not None and marker == self.refused:
            return
        self.refused = marker
        self.state = replace(self.state, reload_failures=self.state.reload_failures + 1)
        m = self.state.model
        log.warning("model reload refused, keeping %s/%s (sha256 %s): %s", m.pipeline, m.name, m.sha256[:12], reason)

    # -- evaluation ------------------------------------------------------------------------------------

    def _gap(self, reason: str, detail: str) -> None:
        self.past.clear()  # a gap starts the history afresh, as a pause starts a new run in training
        gaps = dict(self.state.gaps)
        gaps[reason] = gaps.get(reason, 0) + 1
        self.state = replace(self.state, gaps=gaps)
        if reason != self.last_gap:  # one line per run of like gaps, not one per interval
            log.warning("gap (%s): %s", reason, detail)
        self.last_gap = reason

    def evaluate(self) -> None:
        state, m = self.state, self.state.model
        now = procfs.read(self.root, m.files)
        prev, self.previous = self.previous, now
        if now.problems:
            return self._gap("missing_field", "; ".join(now.problems))
        if prev is None or prev.uptime is None or now.uptime is None:
            return
        dt = now.uptime - prev.uptime
        if dt == 0:
            return  # no new sample since the last read
        if dt < 0:
            return self._gap("clock", f"uptime went back {-dt:.2f} s (a reboot?)")
        values = []
        for item in m.inputs:
            current = item.total(now)
            if current is None:
                return self._gap("missing_field", f"input {item.name}: no series for {item.promql}")
            if item.counter:
                before = item.total(prev)
                if before is None:
                    return  # appeared just now: a rate needs two reads
                if current < before:
                    return self._gap("counter_reset", f"input {item.name} ({item.promql}) went from {before} to "
                                     f"{current}")
                current = (current - before) / dt
            values.append(current * item.scale)
        values += self._history(m, now.uptime, values)
        x = np.array(values, dtype=float)
        try:
            watts = m.predict(x)
        except Exception as exc:  # onnxruntime failing on one row: counted and logged, the loop goes on
            self.state = replace(state, evaluation_errors=state.evaluation_errors + 1)
            log.error("evaluation failed: %s", str(exc).splitlines()[0][:200])
            return
        if not all(math.isfinite(w) and w >= 0 for w in watts.values()):
            self.state = replace(state, evaluation_errors=state.evaluation_errors + 1)
            log.error("evaluation gave %s: not reported", watts)
            return
        joules = dict(state.joules)
        for zone, w in watts.items():
            key = (m.pipeline, m.name, zone)
            joules[key] = joules.get(key, 0.0) + w * dt
        inputs = dict(zip(m.input_names, values, strict=True))
        self.state = replace(state, watts=watts, joules=joules, inputs=inputs, evaluated_at=time.time(),
                             evaluations=state.evaluations + 1)
        self.last_gap = None

    def _history(self, m: models.Model, now: float, values: list[float]) -> list[float]:
        """The history inputs, this evaluation's procfs inputs recorded first (uptime seconds as the clock)."""
        if not m.history:
            return []
        self.past.append((now, tuple(values)))
        while self.past and self.past[0][0] <= now - m.memory_seconds:
            self.past.popleft()
        samples = list(self.past)
        return [h.value(samples, now) for h in m.history]

    def run(self) -> None:
        deadline = time.monotonic()
        while not self.stop.is_set():
            try:
                self.maybe_reload()
                self.evaluate()
            except Exception:  # a bug must not stop the estimates: logged whole, the loop goes on
                log.exception("unexpected error in the evaluation loop")
            deadline += self.interval
            self.stop.wait(max(0.0, deadline - time.monotonic()))
