"""`kepler-model estimator`: the estimator sidecar Kepler 0.7 asks over a unix socket (`ESTIMATOR=true`).

A drop-in for upstream kepler-model-server's `estimator` command: same arguments, same socket, same way of
finding a model, but it loads our archives with the loaders `estimate` uses (skops behind an
allow-list, XGBoost JSON; never pickle), so every model family we publish reaches Kepler.

Protocol (Kepler's pkg/model/estimator/sidecar/estimate.go): one connection, one request: Kepler writes
one `PowerRequest` JSON object and reads the reply with a single read of at most 4096 bytes:
`{"powers": {component: [watts per row]}, "msg": "", "core_ratio": r}`; `msg` says why when `powers`
is empty. A reply that would not fit is sent at milliwatt precision (what Kepler keeps), or refused.

Finding the model for a request's (output type, energy source), as upstream: a model already unpacked
in `<download path>/<source>/<output type>/`; else, with `MODEL_SERVER_ENABLE=true`, the zip the model
server's `POST /model` selects for the request's features; else the `<KEY>_INIT_URL` of `MODEL_CONFIG`
(NODE_TOTAL for acpi, NODE_COMPONENTS for rapl; http(s) or file:// zip). A model whose features the
request lacks is not used. Settings are read as upstream does: a file `<config dir>/<KEY>` first, then
the environment; `MODEL_CONFIG` lines (`KEY=VALUE`) are settings too.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import machine
from .errors import InputError, KeplerModelError

if TYPE_CHECKING:
    from .persist import LoadedModel

log = logging.getLogger("kepler_model.estimator")

SOCKET = "/tmp/estimator.sock"          # where Kepler 0.7 connects (its model config's Socket)
CONFIG_DIR = "/etc/kepler/kepler.config"
SPEC_FILE = "/etc/kepler/models/machine/spec.json"
REPLY_LIMIT = 4096                      # Kepler reads the reply with one 4096-byte read
REQUEST_LIMIT = 8 * 1024 * 1024
ARCHIVE_LIMIT = 512 * 1024 * 1024       # a model zip larger than this is not ours
CONNECTION_TIMEOUT = 10.0
SOURCES = {"intel_rapl": "rapl-sysfs", "rapl": "rapl-sysfs", "rapl-sysfs": "rapl-sysfs", "acpi": "acpi"}
INIT_KEYS = {"acpi": ("NODE_TOTAL", "CONTAINER_TOTAL", "PROCESS_TOTAL"),
             "rapl-sysfs": ("NODE_COMPONENTS", "CONTAINER_COMPONENTS", "PROCESS_COMPONENTS")}
OUTPUT_TYPES = ("AbsPower", "DynPower")


class RequestError(Exception):
    """A request the sidecar answers with a message instead of powers."""


# -- settings --------------------------------------------------------------------------------------------

class Settings:
    """Upstream's lookup: `<config dir>/<KEY>` first, then the environment, then MODEL_CONFIG's lines."""

    def __init__(self, config_dir: str | None, environ: dict[str, str] | None = None) -> None:
        self.config_dir = Path(config_dir) if config_dir else None
        self.environ = dict(os.environ if environ is None else environ)
        self.model_config = _parse_model_config(self.get("MODEL_CONFIG", ""))

    def get(self, key: str, default: str = "") -> str:
        if self.config_dir is not None:
            path = self.config_dir / key
            if path.is_file():
                return path.read_text().strip()
        if key in self.environ:
            return self.environ[key]
        return getattr(self, "model_config", {}).get(key, default)

    def enabled(self, key: str) -> bool:
        return self.get(key, "false").strip().lower() == "true"

    def model_server_request_url(self) -> str:
        url = self.get("MODEL_SERVER_URL", "kepler-model-server.kepler.svc.cluster.local")
        if "://" not in url:
            url = f"http://{url}:{self.get('MODEL_SERVER_PORT', '8100')}"
        return url.rstrip("/") + self.get("MODEL_SERVER_MODEL_REQ_PATH", "/model")

    def init_url(self, source: str) -> str | None:
        for prefix in INIT_KEYS[source]:
            url = self.get(f"{prefix}_INIT_URL")
            if url:
                return url
        return None


def _parse_model_config(text: str) -> dict[str, str]:
    values = {}
    for token in text.split():
        if token.startswith("#") or "=" not in token:
            continue
        key, value = token.split("=", 1)
        values[key] = value
    return values


# -- finding and loading the model -------------------------------------------------------------------------

@dataclass
class Loaded:
    model: LoadedModel
    trainer: str
    folder: Path


class Models:
    """The model per (source, output type), found as upstream's sidecar finds it, kept once loaded."""

    def __init__(self, settings: Settings, download_path: Path, spec: dict) -> None:
        self.settings = settings
        self.download_path = download_path
        self.spec = spec
        self.loaded: dict[tuple[str, str], Loaded] = {}

    def for_request(self, request: dict) -> Loaded:
        source, output_type = request["source"], request["output_type"]
        key = (source, output_type)
        trainer = request.get("trainer_name") or ""
        current = self.loaded.get(key)
        if current and trainer and current.trainer != trainer and self.settings.enabled("MODEL_SERVER_ENABLE"):
            self.forget(key)
            current = None
        if current is None:
            current = self._find(request)
            self.loaded[key] = current
        missing = set(current.model.features) - set(request["metrics"])
        if missing:
            raise RequestError(f"the model {current.folder.name} needs features the request lacks: {sorted(missing)}")
        return current

    def forget(self, key: tuple[str, str]) -> None:
        self.loaded.pop(key, None)
        shutil.rmtree(self.download_path / key[0] / key[1], ignore_errors=True)

    def _find(self, request: dict) -> Loaded:
        folder = self.download_path / request["source"] / request["output_type"]
        if not (folder / "metadata.json").is_file():
            archive = self._from_server(request) if self.settings.enabled("MODEL_SERVER_ENABLE") else None
            if archive is None:
                archive = self._from_init_url(request["source"])
            _unpack(archive, folder)
        from .persist import LoadedModel  # scikit-learn and skops: imported when a model is loaded

        try:
            model = LoadedModel(folder)
        except InputError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info("loaded model %s for %s %s", model.metadata.get("model_name"), request["source"],
                 request["output_type"])
        return Loaded(model, str(model.metadata.get("trainer", "")), folder)

    def _from_server(self, request: dict) -> bytes | None:
        body = {"metrics": list(request["metrics"]) + list(request.get("system_features") or []),
                "output_type": request["output_type"], "source": request["source"],
                "filter": request.get("filter") or "", "trainer_name": request.get("trainer_name") or ""}
        if self.spec:
            body["machine_spec"] = self.spec
        try:
            http = urllib.request.Request(self.settings.model_server_request_url(), data=json.dumps(body).encode(),
                                          headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(http, timeout=30) as answer:
                return _read_limited(answer)
        except (OSError, ValueError) as exc:
            log.warning("no model from the model server (%s): trying the init URL", exc)
            return None

    def _from_init_url(self, source: str) -> bytes:
        url = self.settings.init_url(source)
        if not url:
            raise RequestError(f"no model for {source}: no model server answer and no "
                               f"{INIT_KEYS[source][0]}_INIT_URL in MODEL_CONFIG")
        parsed = urllib.parse.urlparse(url)
        try:
            if parsed.scheme == "file":
                with open(urllib.parse.unquote(parsed.path), "rb") as handle:
                    return _read_limited(handle)
            if parsed.scheme not in ("http", "https"):
                raise RequestError(f"init URL {url!r}: only http, https and file URLs are read")
            with urllib.request.urlopen(url, timeout=30) as answer:
                return _read_limited(answer)
        except (OSError, ValueError) as exc:
            raise RequestError(f"cannot read the init URL {url}: {exc}") from None


def _read_limited(stream) -> bytes:
    data = stream.read(ARCHIVE_LIMIT + 1)
    if len(data) > ARCHIVE_LIMIT:
        raise RequestError(f"a model archive over {ARCHIVE_LIMIT} bytes is refused")
    return data


def _unpack(archive: bytes, folder: Path) -> None:
    """A model zip into `folder`: flat regular files only, each under the size limit; written aside
    and renamed into place, so a failed unpack leaves nothing half-written."""
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
            members = zipped.infolist()
            for info in members:
                name = info.filename
                if info.is_dir() or "/" in name or "\\" in name or name in (".", "..") or not name \
                        or stat.S_ISLNK(info.external_attr >> 16) or info.file_size > ARCHIVE_LIMIT:
                    raise RequestError(f"the model archive holds an unexpected member {name!r}")
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
            for info in members:
                (staging / info.filename).write_bytes(zipped.read(info))
    except zipfile.BadZipFile as exc:
        raise RequestError(f"the model archive is not a zip: {exc}") from None
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)


# -- answering a request -----------------------------------------------------------------------------------

def parse_request(raw: bytes) -> dict:
    try:
        request = json.loads(raw)
    except ValueError:
        raise RequestError("the request is not JSON") from None
    if not isinstance(request, dict):
        raise RequestError("the request must be a JSON object")
    metrics, values = request.get("metrics"), request.get("values")
    if not (isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)):
        raise RequestError("metrics must be a list of names")
    if not (isinstance(values, list) and all(isinstance(r, list) and len(r) == len(metrics) for r in values)):
        raise RequestError("values must be rows of one number per metric")
    source = SOURCES.get(str(request.get("source") or "rapl-sysfs"))
    if source is None:
        raise RequestError(f"unknown energy source {request.get('source')!r}")
    if request.get("output_type") not in OUTPUT_TYPES:
        raise RequestError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}")
    return {**request, "source": source}


def powers(models: Models, request: dict) -> dict[str, list[float]]:
    loaded = models.for_request(request)
    columns = {name: i for i, name in enumerate(request["metrics"])}
    try:
        x = np.asarray(request["values"], dtype=float).reshape(len(request["values"]), len(columns))
    except (TypeError, ValueError):
        raise RequestError("values must be numbers") from None
    x = x[:, [columns[f] for f in loaded.model.features]]
    try:
        predicted = loaded.model.predict(x)
    except Exception as exc:  # noqa: BLE001 - upstream: a model that fails is dropped and fetched again
        models.forget((request["source"], request["output_type"]))
        raise RequestError(f"the model {loaded.folder.name} failed to predict: {exc}") from None
    return {component: values.tolist() for component, values in predicted.items()}


def core_ratio(models: Models, request: dict) -> float:
    """The discovered cores over the model's training machine's (1 when either is unknown)."""
    loaded = models.loaded.get((request["source"], request["output_type"]))
    trained = (loaded.model.metadata.get("machine_spec") or {}).get("cores") if loaded else None
    cores = models.spec.get("cores")
    if isinstance(trained, (int, float)) and trained > 0 and isinstance(cores, int) and cores > 0:
        return cores / trained
    return 1.0


def reply(models: Models, raw: bytes) -> bytes:
    try:
        request = parse_request(raw)
        answer = {"powers": powers(models, request), "msg": "", "core_ratio": core_ratio(models, request)}
    except RequestError as exc:
        return json.dumps({"powers": {}, "msg": str(exc)}).encode()
    except KeplerModelError as exc:
        return json.dumps({"powers": {}, "msg": f"cannot load the model: {exc}"}).encode()
    encoded = json.dumps(answer).encode()
    if len(encoded) > REPLY_LIMIT:  # Kepler keeps milliwatts: send those rather than a cut reply
        answer["powers"] = {c: [round(v, 3) for v in vs] for c, vs in answer["powers"].items()}
        encoded = json.dumps(answer).encode()
    if len(encoded) > REPLY_LIMIT:
        rows = len(next(iter(answer["powers"].values()), []))
        return json.dumps({"powers": {}, "msg": f"{rows} rows do not fit Kepler's {REPLY_LIMIT}-byte reply"}).encode()
    return encoded


def _receive(connection: socket.socket) -> bytes:
    """Kepler writes one JSON object and waits: read until the bytes parse (or the peer closes)."""
    data = b""
    while len(data) <= REQUEST_LIMIT:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
        if data.rstrip().endswith(b"}"):
            try:
                json.loads(data)
                return data
            except ValueError:
                continue
    raise RequestError(f"a request over {REQUEST_LIMIT} bytes is refused")


def serve(path: str, models: Models, ready=None) -> None:
    """Answer connections one at a time, for ever."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise InputError(f"{path} exists and is not a socket: not replacing it")
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o117)  # the socket: owner and group (Kepler's container) only
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(8)
    log.info("estimator listening on %s", path)
    if ready is not None:
        ready()
    with listener:
        while True:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(CONNECTION_TIMEOUT)
                try:
                    answer = reply(models, _receive(connection))
                except RequestError as exc:
                    answer = json.dumps({"powers": {}, "msg": str(exc)}).encode()
                except OSError as exc:
                    log.warning("dropped a connection: %s", exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - a bug answers one request, not the node's power
                    log.exception("internal error answering a request")
                    answer = json.dumps({"powers": {}, "msg": f"internal error: {exc!r}"[:1000]}).encode()
                try:
                    connection.sendall(answer)
                except OSError as exc:
                    log.warning("could not answer: %s", exc)


# -- command line -------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-l", "--log-level", default="info", choices=["debug", "info", "warn", "error"],
                        help="log level (default info)")
    parser.add_argument("--machine-spec", default=None,
                        help=f"JSON file with this machine's spec (default {SPEC_FILE}, else discovered)")
    parser.add_argument("-c", "--config-path", default=os.environ.get("CONFIG_PATH", CONFIG_DIR),
                        help=f"folder of setting files, KEY -> value (default $CONFIG_PATH or {CONFIG_DIR})")
    parser.add_argument("--socket", default=os.environ.get("ESTIMATOR_SOCKET", SOCKET),
                        help=f"unix socket Kepler connects to (default {SOCKET})")
    parser.add_argument("--download-path", default=None,
                        help="where fetched models are unpacked (default $MODEL_PATH, else "
                             "<MNT_PATH or /mnt>/download, else a temporary folder)")


def _spec(path: str | None) -> dict:
    for candidate in ([path] if path else [SPEC_FILE]):
        try:
            return machine.go_spec(json.loads(Path(candidate).read_text()))
        except FileNotFoundError:
            if path:
                raise InputError(f"machine spec {path} not found") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read machine spec {candidate}: {exc}") from None
    return machine.go_spec(machine.discover())


def _download_path(settings: Settings, given: str | None) -> Path:
    candidates = [given] if given else [settings.get("MODEL_PATH"),
                                        str(Path(settings.get("MNT_PATH", "/mnt")) / "download")]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            pass
        if given:
            raise InputError(f"cannot write to the download path {given}")
    return Path(tempfile.mkdtemp(prefix="kepler-estimator-"))


def run(args) -> int:
    logging.basicConfig(level=args.log_level.upper().replace("WARN", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(args.config_path)
    models = Models(settings, _download_path(settings, args.download_path), _spec(args.machine_spec))
    serve(args.socket, models)
    return 0
