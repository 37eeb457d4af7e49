"""The catalog: what the models folder holds, read into memory, kept fresh without restarts.

A published pipeline is an immutable folder renamed into place (docs/contracts.md), so the catalog
reads each pipeline once, through a directory file descriptor opened before reading. Files read
later (model zips) are opened relative to that descriptor: a request always gets the bytes of the
pipeline version it selected from, even while a newer one is being renamed over it; if that
version was deleted meanwhile, the read fails with StaleSnapshot and the caller rescans.

Freshness costs one stat() of the models folder per request: a rename into or out of the folder
changes its mtime. Because mtimes are coarse (a rename in the same clock tick as our scan would
leave it unchanged), a scan that saw an mtime younger than `racy_window` re-lists the folder on the
following requests until the mtime is old enough to be trusted (git's "racy" rule). A full
re-listing also runs every `rescan_interval` seconds, for file systems with cached attributes.
Weight files are read fully at scan time and served from memory. Model files are never loaded.

Nothing read is trusted (artefacts.py): only regular files are opened, without blocking (a FIFO
must not hang the server), and every model is validated before it is listed (finite non-negative
errors, a weight file Kepler can decode, an intact zip). A bad model is skipped with a log line and
counted (`rejected`, exported as a metric), so it can never be selected. A served zip whose file
changed after validation is not sent: its pipeline is read and validated again.
"""

from __future__ import annotations

import calendar
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kepler_contract import layout
from kepler_contract.machine import ATTRIBUTES, go_spec, normalise_processor

from .artefacts import COMPONENTS, Rejected, check_errors, check_weight, check_zip, file_identity, open_regular
from .errors import StaleSnapshot
from .schema import (
    _NAME_RE,
    CURVE_TRAINERS,
    MODEL_NAME_RE,
    OUTPUT_TYPES,
    WEIGHT_TRAINERS,
    canonical_source,
)

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 16 * 1024 * 1024
"""Metadata and weight files larger than this are not read (they would not be ours)."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # --models-dir itself may be a symlink
MAX_PAGE_BYTES = 64 << 20
"""The largest report page served (nx12's is under 1 MiB)."""


@dataclass(frozen=True, slots=True)
class NodeType:
    """One entry of a pipeline's node_type_index.json."""

    index: int
    attrs: dict[str, Any]
    members: int


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One servable model: its identity, what selection needs, and its answers precomputed."""

    pipeline: str
    source: str                 # canonical (rapl-sysfs for a `rapl` folder)
    output_type: str
    feature_group: str
    model_name: str
    trainer: str
    node_type: int
    features: frozenset[str]
    mae: float
    metadata: dict[str, Any]
    rel_dir: str                # <source dir>/<ot>/<fg>/<model>, relative to the pipeline folder
    zip_rel: str | None         # the flat zip beside the folder, when present (and validated)
    weight: dict[str, Any] | None
    weight_file: bytes | None   # the plain component map: Kepler 0.7.11's shape (init URLs, 0.7.11's requests)
    weight_answer: bytes | None  # weight + model_name, mae, machine_spec: Kepler 0.7.12's shape
    machine_spec: dict[str, Any] | None
    kepler_weights: bool = False  # Kepler's regressor evaluates the weights as we do (docs/contracts.md)

    @property
    def path(self) -> str:
        """`<pipeline>/<source>/<ot>/<fg>/<model>`: the kepler-model-db URL layout."""
        return f"{self.pipeline}/{self.rel_dir}"


@dataclass(eq=False)
class Pipeline:
    """A published pipeline as read by one scan; `fd` pins that version of the folder."""

    name: str
    inode: int
    fd: int
    published_ns: int
    metadata: dict[str, Any]
    node_types: dict[int, NodeType]
    models: list[ModelEntry]
    _finalizer: Any = field(default=None, repr=False)
    rejected: dict[str, int] = field(default_factory=dict)  # why -> models skipped at scan
    verified: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # rel -> identity when checked
    changed: bool = False  # a file differed from what was validated: read the pipeline again

    def read(self, rel: str) -> bytes:
        """A whole file of this pipeline version, as validated at scan time; StaleSnapshot when it was
        removed or changed since (then the pipeline is read and validated again)."""
        try:
            fd, st = open_regular(self.fd, rel)
        except FileNotFoundError:
            raise StaleSnapshot(f"{self.name}/{rel} vanished") from None
        except (OSError, Rejected) as exc:
            self._changed(rel, str(exc))
        with os.fdopen(fd, "rb") as handle:
            if file_identity(st) != self.verified.get(rel):
                self._changed(rel, "modified after it was checked")
            return handle.read()

    def read_page(self, rel: str, limit: int = MAX_PAGE_BYTES) -> bytes | None:
        """A page of this version that is no model artefact (the report), read as it is now: it may be
        rebuilt in place by `kepler-model report`, so it has no identity checked at scan time. Regular
        files only, never through a symlink or from a FIFO, at most `limit` bytes; None when there is none."""
        try:
            fd, st = open_regular(self.fd, rel)
        except FileNotFoundError:
            return None
        except (OSError, Rejected) as exc:
            log.warning("not serving %s/%s: %s", self.name, rel, exc)
            return None
        with os.fdopen(fd, "rb") as handle:
            if st.st_size > limit:
                log.warning("not serving %s/%s: larger than %d bytes", self.name, rel, limit)
                return None
            return handle.read(limit)

    def has(self, rel: str) -> bool:
        """Whether this pipeline version still holds the file `rel`."""
        try:
            os.stat(rel, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def _changed(self, rel: str, why: str) -> None:
        if not self.changed:
            log.warning("%s/%s: %s; reading the pipeline again", self.name, rel, why)
        self.changed = True
        raise StaleSnapshot(f"{self.name}/{rel} changed")

    @property
    def sources(self) -> set[str]:
        return {m.source for m in self.models}


@dataclass(frozen=True)
class Snapshot:
    """The served pipelines at one moment; requests work on one snapshot from start to end."""

    pipelines: dict[str, Pipeline]
    by_path: dict[str, ModelEntry]
    scanned_ns: int
    answers: AnswerCache = field(default_factory=lambda: AnswerCache())

    @classmethod
    def of(cls, pipelines: dict[str, Pipeline]) -> Snapshot:
        by_path = {m.path: m for p in pipelines.values() for m in p.models}
        return cls(pipelines, by_path, time.time_ns())

    def models(self) -> Iterator[ModelEntry]:
        for pipeline in self.pipelines.values():
            yield from pipeline.models


class AnswerCache:
    """Successful answers of one snapshot, by request (it dies with the snapshot, so never stale).

    Kepler's requests repeat byte for byte across the nodes of a cluster; an answer computed once
    is sent again without parsing or selecting. Bounded in entries and in archive bytes.
    """

    MAX_ENTRIES = 4096
    MAX_BYTES = 64 * 1024 * 1024

    def __init__(self) -> None:
        self._answers: dict[Any, Any] = {}
        self._bytes = 0

    def get(self, key: Any) -> Any:
        return self._answers.get(key)

    def put(self, key: Any, answer: Any, size: int = 0) -> None:
        if len(self._answers) < self.MAX_ENTRIES and self._bytes + size <= self.MAX_BYTES:
            self._answers[key] = answer
            self._bytes += size


class Catalog:
    """The models folder, read lazily and re-read when a pipeline is published or removed."""

    def __init__(self, root: Path, *, racy_window: float = 1.0, rescan_interval: float = 5.0) -> None:
        self.root = Path(root).absolute()
        self._root_str = str(self.root)  # stat() on every request: skip pathlib's conversion
        self.racy_window_ns = int(racy_window * 1e9)
        self.rescan_interval = rescan_interval
        self.error: str | None = "the models folder has not been read yet"
        self.reloads = 0
        self._snapshot = Snapshot({}, {}, 0)
        self._signature: tuple[int, int, int] | None = None
        self._trust_signature = False
        self._next_listing = 0.0
        self._listing: dict[str, int] = {}
        self._broken: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.error is None

    def snapshot(self) -> Snapshot:
        """The current snapshot, after a stat() of the models folder (re-listed when it changed)."""
        try:
            st = os.stat(self._root_str)
        except OSError as exc:
            return self._lost(f"cannot read the models folder {self.root}: {exc.strerror}")
        signature = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if signature == self._signature and self._trust_signature and time.monotonic() < self._next_listing:
            return self._snapshot
        with self._lock:
            return self._relist(st.st_mtime_ns, signature)

    def invalidate(self) -> None:
        """Forget the signature: the next snapshot() re-lists (after a StaleSnapshot)."""
        self._trust_signature = False

    def _lost(self, message: str) -> Snapshot:
        if self.error != message:
            log.warning("%s; serving nothing", message)
        self.error, self._signature, self._listing = message, None, {}
        self._snapshot = Snapshot({}, {}, time.time_ns())
        return self._snapshot

    def _relist(self, mtime_ns: int, signature: tuple[int, int, int]) -> Snapshot:
        started_ns = time.time_ns()
        try:
            root_fd = os.open(self.root, _ROOT_FLAGS)
        except OSError as exc:
            return self._lost(f"cannot open the models folder {self.root}: {exc.strerror}")
        try:
            listing = _list_pipelines(root_fd)
            changed = any(p.changed for p in self._snapshot.pipelines.values())
            if listing != self._listing or self.error is not None or changed:
                self._snapshot = self._reload(root_fd, listing)
                self._listing = listing
        finally:
            os.close(root_fd)
        self.error = None
        self._signature = signature
        # An mtime close to the scan may hide a rename made in the same clock tick: re-list again.
        self._trust_signature = started_ns - mtime_ns > self.racy_window_ns
        self._next_listing = time.monotonic() + self.rescan_interval
        return self._snapshot

    def _reload(self, root_fd: int, listing: dict[str, int]) -> Snapshot:
        pipelines: dict[str, Pipeline] = {}
        for name, inode in sorted(listing.items()):
            current = self._snapshot.pipelines.get(name)
            if current is not None and current.inode == inode and not current.changed:
                pipelines[name] = current
                continue
            if self._broken.get(name) == inode:
                continue
            pipeline = _load_pipeline(root_fd, name)
            if pipeline is None:
                self._broken[name] = inode
                continue
            self._broken.pop(name, None)
            pipelines[name] = pipeline
            skipped = f" ({sum(pipeline.rejected.values())} rejected)" if pipeline.rejected else ""
            log.info("serving pipeline %s: %d models%s", name, len(pipeline.models), skipped)
        for gone in self._snapshot.pipelines.keys() - pipelines.keys():
            log.info("pipeline %s is no longer served", gone)
        self.reloads += 1
        return Snapshot.of(pipelines)


def _list_pipelines(root_fd: int) -> dict[str, int]:
    """Folder name -> inode for every candidate pipeline (dot folders are being written: skipped)."""
    listing = {}
    with os.scandir(root_fd) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not _NAME_RE.match(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                listing[entry.name] = entry.inode()
    return listing


def _load_pipeline(root_fd: int, name: str) -> Pipeline | None:
    """Read one pipeline through a descriptor of its folder; None when it is not a valid pipeline."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
    except OSError as exc:
        log.warning("skipping %s: %s", name, exc.strerror)
        return None
    try:
        st = os.fstat(fd)
        metadata = _read_json(fd, layout.METADATA)
        if not isinstance(metadata, dict):
            log.warning("skipping %s: no metadata.json object, not a pipeline", name)
            os.close(fd)
            return None
        node_types = _node_types(_read_json(fd, layout.NODE_TYPE_INDEX))
        scan = _Scan(name)
        models = sorted(_scan_models(fd, scan, node_types), key=lambda m: m.path)
    except (OSError, Rejected) as exc:
        log.warning("skipping %s: %s", name, exc)
        os.close(fd)
        return None
    pipeline = Pipeline(name, st.st_ino, fd, _published_ns(metadata, st), metadata, node_types, models,
                        rejected=scan.rejected, verified=scan.verified)
    pipeline._finalizer = weakref.finalize(pipeline, os.close, fd)
    return pipeline


def _published_ns(metadata: dict[str, Any], st: os.stat_result) -> int:
    """When the pipeline was last trained (metadata), else when its folder was renamed into place."""
    stamp = metadata.get("last_update_time")
    if isinstance(stamp, str):
        try:
            parsed = time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")
            return calendar.timegm(parsed) * 1_000_000_000
        except ValueError:
            pass
    return st.st_ctime_ns


def _node_types(index: Any) -> dict[int, NodeType]:
    if not isinstance(index, dict):
        return {}
    node_types = {}
    for key, entry in index.items():
        if not (isinstance(key, str) and key.isdigit() and isinstance(entry, dict)):
            continue
        given = entry.get("attrs")
        attrs = {k: given[k] for k in ATTRIBUTES if given.get(k) is not None} if isinstance(given, dict) else {}
        if isinstance(attrs.get("processor"), str):
            attrs["processor"] = normalise_processor(attrs["processor"])
        members = entry.get("members")
        node_types[int(key)] = NodeType(int(key), attrs, len(members) if isinstance(members, list) else 0)
    return node_types


def _subdirs(fd: int) -> list[str]:
    with os.scandir(fd) as entries:
        return sorted(e.name for e in entries
                      if e.is_dir(follow_symlinks=False) and not e.name.startswith(".") and _NAME_RE.match(e.name))


def _files(fd: int) -> set[str]:
    with os.scandir(fd) as entries:
        return {e.name for e in entries if e.is_file(follow_symlinks=False)}


def _opendir(name: str, dir_fd: int) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None


@dataclass
class _Scan:
    """What one pipeline scan learns besides its models: rejections, and the files it validated."""

    pipeline: str
    rejected: dict[str, int] = field(default_factory=dict)
    verified: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def reject(self, where: str, reason: str, detail: str) -> None:
        log.warning("skipping model %s: %s", where, detail)
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


def _scan_models(pipeline_fd: int, scan: _Scan, node_types: dict[int, NodeType]) -> Iterator[ModelEntry]:
    """Every model folder `<source>/<ot>/<fg>/<Trainer>_<n>/` holding a usable metadata.json."""
    for source_dir, source_fd in _each_subfolder(pipeline_fd):
        output_types = sorted(set(_subdirs(source_fd)) & set(OUTPUT_TYPES))
        for output_type, ot_fd in _each_subfolder(source_fd, output_types):
            for group, group_fd in _each_subfolder(ot_fd):
                yield from _scan_group(group_fd, (scan.pipeline, source_dir, output_type, group), node_types, scan)


def _each_subfolder(fd: int, names: list[str] | None = None) -> Iterator[tuple[str, int]]:
    """(name, descriptor) of each sub-folder (no symlinks, no dot folders); each closed after its turn."""
    for name in _subdirs(fd) if names is None else names:
        sub = _opendir(name, fd)
        if sub is None:
            continue
        try:
            yield name, sub
        finally:
            os.close(sub)


def _scan_group(group_fd: int, prefix: tuple[str, str, str, str],
                node_types: dict[int, NodeType], scan: _Scan) -> Iterator[ModelEntry]:
    files = _files(group_fd)
    for model_name in _subdirs(group_fd):
        match = MODEL_NAME_RE.match(model_name)
        if not match:
            continue
        model_fd = _opendir(model_name, group_fd)
        if model_fd is None:
            continue
        where = "/".join((*prefix, model_name))
        try:
            entry = _model_entry(model_fd, group_fd, files, prefix, model_name, match, node_types)
            if entry is not None and entry.zip_rel is not None:
                scan.verified[entry.zip_rel] = check_zip(group_fd, layout.model_archive(model_name))
        except Rejected as exc:
            scan.reject(where, exc.reason, str(exc))
            entry = None
        finally:
            os.close(model_fd)
        if entry is not None:
            yield entry


def _model_entry(model_fd: int, group_fd: int, group_files: set[str], prefix: tuple[str, str, str, str],
                 model_name: str, match: Any, node_types: dict[int, NodeType]) -> ModelEntry | None:
    pipeline, source_dir, output_type, group = prefix
    where = "/".join((*prefix, model_name))
    metadata = _read_json(model_fd, layout.METADATA)
    if not isinstance(metadata, dict):
        log.warning("skipping model %s: no metadata.json object", where)
        return None
    mae = _finite(metadata.get("mae"))
    features = metadata.get("features")
    if mae is None or not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
        log.warning("skipping model %s: metadata lacks a finite mae or a features list", where)
        return None
    check_errors(metadata)
    if metadata.get("passed_gate") is False:  # kept for the record, but over the pipeline's accuracy gate
        log.info("not serving model %s: its mae %s is over the pipeline's accuracy gate", where, mae)
        return None
    node_type = int(match.group(2))
    trainer = match.group(1)
    weight_file = _weight_file(model_fd, group_fd, group_files, model_name)
    weight = _decode_weight(weight_file, where)
    loadable = weight is not None and kepler_can_evaluate(trainer, features, metadata)
    if weight is not None and not loadable:
        log.info("not serving %s as Kepler weights: %s", where,
                 metadata.get("kepler_weights_reason") or "a curve fit over several features")
    spec = metadata.get("machine_spec")
    if not isinstance(spec, dict):
        spec = node_types[node_type].attrs if node_type in node_types else None
    weight_file = answer = None
    if weight is not None:
        weight_file = orjson.dumps(weight)
        extras: dict[str, Any] = {"model_name": model_name, "mae": float(mae)}
        served_spec = go_spec(spec) if spec else {}
        if served_spec:
            extras["machine_spec"] = served_spec
        answer = orjson.dumps({**weight, **extras})
    zip_name = layout.model_archive(model_name)
    return ModelEntry(
        pipeline=pipeline, source=canonical_source(source_dir), output_type=output_type,
        feature_group=group, model_name=model_name, trainer=trainer, node_type=node_type,
        features=frozenset(features), mae=float(mae), metadata=metadata,
        rel_dir=layout.model_relative_dir(source_dir, output_type, group, model_name),
        zip_rel=f"{source_dir}/{output_type}/{group}/{zip_name}" if zip_name in group_files else None,
        weight=weight, weight_file=weight_file, weight_answer=answer, machine_spec=spec, kepler_weights=loadable,
    )


def kepler_can_evaluate(trainer: str, features: list[str], metadata: dict[str, Any]) -> bool:
    """Kepler's regressor computes what we do: a weight trainer, a curve fit only over one feature
    (Kepler feeds curve fits the first of its own feature names), and not marked otherwise at publish."""
    if metadata.get("kepler_weights") is False or trainer not in WEIGHT_TRAINERS:
        return False
    return trainer not in CURVE_TRAINERS or len(features) == 1


def _weight_file(model_fd: int, group_fd: int, group_files: set[str], model_name: str) -> bytes | None:
    """The published `<model>.json` beside the folder, else the folder's weight.json."""
    if layout.model_file(model_name) in group_files:
        return _read_bytes(group_fd, layout.model_file(model_name))
    return _read_bytes(model_fd, layout.WEIGHTS)


def _decode_weight(raw: bytes | None, where: str) -> dict[str, Any] | None:
    """The weight document, checked as Kepler decodes it; Rejected (the model is skipped) when bad."""
    if raw is None:
        return None
    try:
        weight = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Rejected("weight", "its weight file is not JSON") from None
    check_weight(weight)
    # The components alone (`<model>.json` also carries model_name and machine_spec: 0.7.11 cannot decode them).
    return {k: v for k, v in weight.items() if k.lower() in COMPONENTS and v is not None}


def _read_bytes(dir_fd: int, name: str) -> bytes | None:
    """A regular file's bytes; None when absent; Rejected when it is something else or too big."""
    try:
        fd, st = open_regular(dir_fd, name)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Rejected("unreadable", f"cannot read {name}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise Rejected("too_large", f"{name} is larger than {MAX_JSON_BYTES} bytes")
    return data


def _read_json(dir_fd: int, name: str) -> Any:
    raw = _read_bytes(dir_fd, name)
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Upstream metadata may hold NaN, which orjson rejects; the standard parser accepts it.
        import json
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than orjson's 1024 too
            return None


def _finite(value: Any) -> float | None:
    """The value as a float when it is a finite JSON number (not a boolean), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
