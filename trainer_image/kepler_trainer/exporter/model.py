"""A published ONNX model and its manifest (onnx_export, pipeline._export_onnx), loaded and checked whole.

The model comes from a folder (`onnx_manifest.json` + `model.onnx`, e.g. a mounted ConfigMap: its files are
symlinks the kubelet swaps, so they are followed) or from the model server's `/onnx/...` folder URL. A
model is accepted only if every part agrees: the manifest's inputs are all providable from procfs, the
graph's SHA-256 is the one the manifest recorded (a manifest and a graph from two different publications
never load together), the graph's input width and output names are the manifest's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from ..selectors import matches, parse_selector
from . import procfs

MANIFEST, GRAPH = "onnx_manifest.json", "model.onnx"
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_GRAPH_BYTES = 64 * 1024 * 1024
HTTP_TIMEOUT_S = 10


@dataclass(frozen=True)
class Input:
    name: str
    promql: str
    metric: str
    matchers: tuple
    counter: bool
    scale: float
    file: str

    def total(self, snap: procfs.Snapshot) -> float | None:
        """The sum over every local series the selector matches (PromQL's `sum`), None if none does."""
        values = [v for labels, v in snap.series.get(self.metric, {}).items() if matches(dict(labels), self.matchers)]
        return math.fsum(values) if values else None


@dataclass(frozen=True)
class HistoryInput:
    """A statistic of the summed inputs `of` (positions among the model's inputs) over its last `seconds`."""

    name: str
    of: tuple[int, ...]
    stat: str
    seconds: float

    def value(self, past: list[tuple[float, tuple[float, ...]]], now: float) -> float:
        """From (time, the procfs inputs) samples: the sum of `of` over those with now - seconds < time <= now
        (as history.columns computes it in training)."""
        values = [math.fsum(x[i] for i in self.of) for t, x in past if now - self.seconds < t <= now]
        return max(values) if self.stat == "max" else math.fsum(values) / len(values)


@dataclass(frozen=True)
class Model:
    pipeline: str
    name: str
    sha256: str
    inputs: tuple[Input, ...]
    zones: tuple[str, ...]
    session: object
    dtype: type
    history: tuple[HistoryInput, ...] = ()

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs) + tuple(h.name for h in self.history)

    @property
    def memory_seconds(self) -> float:
        return max((h.seconds for h in self.history), default=0.0)

    @property
    def files(self) -> frozenset[str]:
        return frozenset(i.file for i in self.inputs)

    def predict(self, x: np.ndarray) -> dict[str, float]:
        spec = self.session.get_inputs()[0]
        outputs = self.session.run(list(self.zones), {spec.name: x.reshape(1, -1).astype(self.dtype)})
        return {zone: float(out.ravel()[0]) for zone, out in zip(self.zones, outputs, strict=True)}


def _read_file(path: Path, limit: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise InputError(f"model: cannot open {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise InputError(f"model: {path} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"model: {path} is larger than {limit} bytes")
    return data


def _fetch(url: str, limit: int) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as answer:  # noqa: S310 (http(s) checked)
            data = answer.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise InputError(f"model: {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise InputError(f"model: {url}: {getattr(exc, 'reason', exc)}") from None
    if len(data) > limit:
        raise InputError(f"model: {url} is larger than {limit} bytes")
    return data


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def read_manifest(source: str) -> bytes:
    if is_url(source):
        return _fetch(source.rstrip("/") + "/manifest", MAX_MANIFEST_BYTES)
    return _read_file(Path(source) / MANIFEST, MAX_MANIFEST_BYTES)


def read_graph(source: str) -> bytes:
    if is_url(source):
        return _fetch(source.rstrip("/") + "/model.onnx", MAX_GRAPH_BYTES)
    return _read_file(Path(source) / GRAPH, MAX_GRAPH_BYTES)


def signature(source: str) -> tuple | None:
    """What changes when a folder's model is replaced (None for a URL: its manifest is compared instead)."""
    if is_url(source):
        return None
    out = []
    for name in (MANIFEST, GRAPH):
        try:
            info = os.stat(Path(source) / name)
        except OSError:
            out.append(None)
            continue
        out.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(out)


def pipeline_of(source: str, override: str | None) -> str:
    """The pipeline label: given, or the folder five levels up in `<pipeline>/<source>/<type>/<group>/<model>`."""
    if override:
        return override
    parts = source.rstrip("/").split("/")
    return parts[-5] if len(parts) >= 5 and parts[-5] else "unknown"


def _input(entry: object, position: int, local: procfs.Snapshot) -> Input:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InputError(f"model manifest: inputs[{position}] is not an object with a name")
    name, promql = entry["name"], entry.get("promql")
    if not isinstance(promql, str):
        raise ConfigError(f"model input {name!r} has no PromQL selector: this exporter computes inputs from "
                          "node-exporter metrics only (train with a feature set, e.g. --features node-exporter)")
    try:
        metric, matchers = parse_selector(promql)
    except ValueError as exc:
        raise ConfigError(f"model input {name!r}: {exc}") from None
    kind, scale = entry.get("kind", "counter"), entry.get("scale", 1.0)
    if kind not in ("counter", "gauge") or not isinstance(scale, (int, float)) or not (0 < scale < math.inf):
        raise InputError(f"model manifest: input {name!r}: kind must be counter or gauge, scale a positive number")
    source_file = procfs.file_of(metric)
    item = Input(name, promql, metric, tuple(matchers), kind == "counter", float(scale), source_file or "")
    if source_file is None or item.total(local) is None:
        raise ConfigError(f"model input {name!r} ({promql}) cannot be provided here: no such node-exporter "
                          "series in the procfs (this exporter reads /proc/stat, /proc/meminfo, /proc/loadavg)")
    return item


def _history_input(entry: dict, names: list[str]) -> HistoryInput:
    spec, name = entry["history"], entry["name"]
    of = spec.get("of") if isinstance(spec, dict) else None
    if (not isinstance(of, list) or not of or not all(o in names for o in of) or spec.get("stat") not in ("mean", "max")
            or not isinstance(spec.get("window_seconds"), (int, float)) or not 0 < spec["window_seconds"] <= 86400):
        raise InputError(f"model manifest: history input {name!r}: needs 'of' (inputs listed before it), 'stat' "
                         "(mean or max) and 'window_seconds' (0-86400)")
    return HistoryInput(name, tuple(names.index(o) for o in of), spec["stat"], float(spec["window_seconds"]))


def _split_inputs(inputs: list, local: procfs.Snapshot) -> tuple[tuple[Input, ...], tuple[HistoryInput, ...]]:
    """The procfs inputs, then the history inputs (which must all come after them: the graph's order)."""
    plain = [e for e in inputs if not (isinstance(e, dict) and "history" in e)]
    past = inputs[len(plain):]
    if any(not (isinstance(e, dict) and "history" in e) for e in past):
        raise InputError("model manifest: history inputs must come after every other input")
    items = tuple(_input(entry, i, local) for i, entry in enumerate(plain))
    names = [i.name for i in items]
    return items, tuple(_history_input(entry, names) for entry in past)


def parse(manifest_bytes: bytes, graph_bytes: bytes, pipeline: str, local: procfs.Snapshot) -> Model:
    """A Model, or InputError (unreadable, inconsistent) / ConfigError (inputs this exporter cannot provide)."""
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as exc:
        raise InputError(f"model manifest: not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "onnx":
        raise InputError("model manifest: not an ONNX manifest (format must be 'onnx')")
    check = manifest.get("check") or {}
    if not check.get("exportable") or not manifest.get("file"):
        raise ConfigError(f"model has no ONNX graph: {check.get('reason', 'not exportable')}")
    inputs = manifest.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InputError("model manifest: no inputs")
    items, past = _split_inputs(inputs, local)
    digest = hashlib.sha256(graph_bytes).hexdigest()
    if digest != check.get("sha256"):
        raise InputError(f"model: graph SHA-256 {digest[:12]} is not the manifest's {str(check.get('sha256'))[:12]} "
                         "(a graph and a manifest of two publications)")
    zones = tuple(o.get("name") for o in manifest.get("outputs") or [] if isinstance(o, dict))
    session = _session(graph_bytes)
    spec = session.get_inputs()[0]
    width = len(items) + len(past)
    if spec.shape[-1] != width or sorted(o.name for o in session.get_outputs()) != sorted(zones) or not zones:
        raise InputError(f"model: the graph's input width {spec.shape[-1]} or outputs "
                         f"{[o.name for o in session.get_outputs()]} are not the manifest's")
    dtype = np.float64 if spec.type == "tensor(double)" else np.float32
    return Model(pipeline, str(manifest.get("model_name") or "unknown"), digest, items, zones, session, dtype, past)


def _session(graph_bytes: bytes):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(graph_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's refusal of a graph: the reason is the message
        raise InputError(f"model: onnxruntime cannot load the graph: {str(exc).splitlines()[0][:200]}") from None


def load(source: str, pipeline: str, procfs_root: str) -> Model:
    manifest_bytes = read_manifest(source)
    local = procfs.read(procfs_root)
    return parse(manifest_bytes, read_graph(source), pipeline, local)
