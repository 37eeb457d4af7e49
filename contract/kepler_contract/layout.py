"""The files and folders a published pipeline is made of: the trainer writes them, the model server and the
operator read them, Kepler downloads them.

Everything is relative to the model path (`--model-path`, the volume root plus `spec.storage.subPath`):

    <pipeline>/                                   the pipeline's folder: its name
        metadata.json                             METADATA (the pipeline's; every model folder has one too)
        train_arguments.json, node_type_index.json
        profile/<source>.json                     idle profiles (profile_file)
        preprocessed_data/                        PREPROCESSED_DIR: the training rows
        report/                                   HELD_OUT_DIR: held-out rows for the report page
        report.html                               REPORT
        <source>_<output_type>_model_metadata.csv metadata_table(source, output_type)
        <pipeline>.zip                            the whole pipeline (pipeline_archive_member)
        <source>/<output_type>/<group>/           group_dir(...)
            <Trainer>_<n>/                        model_dir(...), named model_name(trainer, node_type)
                metadata.json, weight.json        METADATA, WEIGHTS (Kepler's regressor weights, when loadable)
                <Trainer>_<n>.json                model_file(model): the component index (metadata's model_file)
                model.onnx, onnx_manifest.json    ONNX_MODEL, ONNX_MANIFEST (feature-set runs)
            <Trainer>_<n>.json                    model_file(model): Kepler's model file (name, machine, weights)
            <Trainer>_<n>.zip                     model_archive(model): the folder, zipped
    <pipeline>.zip                                pipeline_archive(pipeline): a link to <pipeline>/<pipeline>.zip
    .lock-<pipeline>                              lock_file(pipeline): the publishing lock (flock)
    estimations/<name>/                           estimation_dir(name): an EnergyEstimation's result
        estimation_result.csv, estimation.json, model.zip, report.html

Who reads what: the model server lists pipelines by `METADATA` (skipping names that start with `.`,
i.e. `LOCK_PREFIX`/`STAGING_PREFIX` entries), walks `MODEL_METADATA_GLOB`, and serves `model_archive`,
`pipeline_archive`, `WEIGHTS`/`model_file` and `ONNX_MODEL`/`ONNX_MANIFEST`; the operator names an
estimation's folder with `estimation_dir` and the ONNX ConfigMap's keys with `ONNX_MODEL`/`ONNX_MANIFEST`;
Kepler downloads `pipeline_archive` and `model_archive`.

All functions return POSIX relative paths (str): join them to a `pathlib.Path` or with `posixpath.join`.
Names never carry a separator of their own, so a pipeline, source, group or model name that passes
`vocabulary.pipeline_name_problem` (or comes from the vocabulary) cannot climb out of its folder.
"""

from __future__ import annotations

import posixpath

METADATA = "metadata.json"
"""A pipeline's description at its root; a model's (trainer, features, MAE, ...) in its folder."""
WEIGHTS = "weight.json"
"""A model's weights in the form Kepler 0.7's regressor loads (only when it can)."""
TRAIN_ARGUMENTS = "train_arguments.json"
NODE_TYPE_INDEX = "node_type_index.json"
PROFILE_DIR = "profile"
PREPROCESSED_DIR = "preprocessed_data"
"""The training rows, one CSV per feature group and output type (not models: no source folder)."""
HELD_OUT_DIR = "report"
"""The held-out rows and predictions the pipeline's report page draws."""
NOT_SOURCE_DIRS = frozenset({PROFILE_DIR, PREPROCESSED_DIR, HELD_OUT_DIR})
"""The folders at a pipeline's root that are not energy sources."""
REPORT = "report.html"
"""The self-contained HTML page of a pipeline or an estimation (`kepler-model report`)."""
ARCHIVE_SUFFIX = ".zip"
ONNX_MODEL = "model.onnx"
ONNX_MANIFEST = "onnx_manifest.json"
"""Beside `model.onnx`: its inputs, outputs and the check against the native model."""
MODEL_METADATA_GLOB = "*/*/*/*/" + METADATA
"""Every model's metadata under a pipeline folder (`<source>/<output_type>/<group>/<model>/`)."""

LOCK_PREFIX = ".lock-"
STAGING_PREFIX = ".tmp-"
"""A pipeline being built: hidden (leading dot) until it is renamed into place."""

ESTIMATIONS = "estimations"
"""Beside the pipelines: one folder per EnergyEstimation (`vocabulary.RESERVED_PIPELINE_NAMES` holds it)."""
ESTIMATION_RESULT = "estimation_result.csv"
ESTIMATION_INFO = "estimation.json"
ESTIMATION_MODEL = "model" + ARCHIVE_SUFFIX
"""A copy of the model archive an estimation used."""


def pipeline_archive(pipeline: str) -> str:
    """`<pipeline>.zip` beside the pipeline folder (what Kepler's initUrl downloads)."""
    return pipeline + ARCHIVE_SUFFIX


def pipeline_archive_member(pipeline: str) -> str:
    """`<pipeline>/<pipeline>.zip`: the archive itself, inside the folder (published with it, atomically)."""
    return posixpath.join(pipeline, pipeline + ARCHIVE_SUFFIX)


def model_name(trainer: str, node_type: int) -> str:
    """`<Trainer>_<node type>`, e.g. `SGDRegressorTrainer_0`."""
    return f"{trainer}_{node_type}"


def group_dir(pipeline: str, source: str, output_type: str, feature_group: str) -> str:
    return posixpath.join(pipeline, source, output_type, feature_group)


def model_dir(pipeline: str, source: str, output_type: str, feature_group: str, model: str) -> str:
    return posixpath.join(group_dir(pipeline, source, output_type, feature_group), model)


def model_relative_dir(source: str, output_type: str, feature_group: str, model: str) -> str:
    """A model folder relative to its pipeline (how the run summary and status name a model)."""
    return posixpath.join(source, output_type, feature_group, model)


def model_file(model: str) -> str:
    """`<model>.json`: inside the model folder the component index, beside it Kepler's model file."""
    return model + ".json"


def model_archive(model: str) -> str:
    """`<model>.zip` beside the model folder."""
    return model + ARCHIVE_SUFFIX


def metadata_table(source: str, output_type: str) -> str:
    """`<source>_<output_type>_model_metadata.csv` at the pipeline root: one row per model."""
    return f"{source}_{output_type}_model_metadata.csv"


def profile_file(source: str) -> str:
    """An energy source's idle profile, relative to the pipeline folder."""
    return posixpath.join(PROFILE_DIR, source + ".json")


def lock_file(pipeline: str) -> str:
    """The file a run holds an exclusive flock on while it builds and publishes `pipeline`."""
    return LOCK_PREFIX + pipeline


def estimation_dir(name: str) -> str:
    """Where an EnergyEstimation named `name` writes, relative to its storage sub-path."""
    return posixpath.join(ESTIMATIONS, name)
