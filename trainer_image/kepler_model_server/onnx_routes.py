"""ONNX routes: a published model's ONNX graph and its manifest (onnx_export, docs/vm-models.md).

    GET /onnx/{pipeline}/{source}/{output_type}/{group}/{model}/manifest    -> onnx_manifest.json
    GET /onnx/{pipeline}/{source}/{output_type}/{group}/{model}/model.onnx  -> the graph

Read from the models folder at request time: every path part is checked as a name (no traversal), the file
is opened without following symlinks and must be a regular file under `MAX_ONNX_BYTES`. A model that was
not exportable has a manifest saying why, and no graph (404).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Path as PathParam, Response

from kepler_contract import layout

from . import table
from .errors import NotFound, ServeError
from .routes import ERRORS, JSON, error_reply, to_response
from .schema import check_name

ONNX = "application/octet-stream"
MAX_ONNX_BYTES = 64 * 1024 * 1024
FILES = {"manifest": (layout.ONNX_MANIFEST, JSON), layout.ONNX_MODEL: (layout.ONNX_MODEL, ONNX)}
Name = Annotated[str, PathParam(description="a folder name of the published pipeline tree")]


def read_model_file(models_dir: Path, parts: list[str], which: str) -> tuple[bytes, str]:
    """(bytes, media type) of a model's ONNX file; ServeError for a bad name or a missing file."""
    for part, what in zip(parts, ("pipeline", "energy source", "output type", "feature group", "model"), strict=False):
        check_name(part, what)
    file_name, media_type = FILES[which]
    path = models_dir.joinpath(*parts, file_name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise NotFound(f"no {file_name} for {'/'.join(parts)}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ONNX_BYTES:
            raise NotFound(f"no {file_name} for {'/'.join(parts)}")
        return handle.read(MAX_ONNX_BYTES + 1), media_type


def build_onnx_router(models_dir: Path) -> APIRouter:
    """The /onnx route (its template is table.py's)."""
    async def get_onnx(pipeline: Name, source: Name, output_type: Name, group: Name, model: Name,
                       which: Annotated[str, PathParam(pattern="^(manifest|model\\.onnx)$")]) -> Response:
        try:
            body, media_type = read_model_file(Path(models_dir), [pipeline, source, output_type, group, model], which)
        except ServeError as exc:
            return to_response(error_reply(exc))
        return Response(body, 200, media_type=media_type)

    router = APIRouter()
    responses = {200: {"content": {ONNX: {}, JSON: {}}, "description": "The ONNX graph or its manifest"}, **ERRORS}
    table.register(router, {"/onnx": get_onnx}, {"/onnx": responses})
    return router
