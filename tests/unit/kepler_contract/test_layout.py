"""The folder layout the contract describes is the one `kepler-model train` and `estimate` write.

One small real run (one feature group, one trainer per output type, on the recorded Kepler metrics)
and one estimation from it, then every name of `kepler_contract.layout` is looked up in what they wrote.
"""

from __future__ import annotations

import json
import os
import posixpath
import zipfile
from pathlib import Path

import pytest

from kepler_contract import layout, vocabulary
from kepler_contract.summary import parse_summary
from tests.support import checkout

cli = pytest.importorskip("kepler_trainer.cli")

REAL = checkout.DATA / "kepler-metrics" / "prom_response_2023.json"
SOURCE, GROUP, TRAINER = "rapl-sysfs", "CounterOnly", "LinearRegressionTrainer"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("layout")
    log = work / "summary.json"
    code = cli.main(["train", "-i", str(REAL), "-p", "p", "-e", SOURCE, "-fg", GROUP, "--abs-trainers", TRAINER,
                     "--dyn-trainers", TRAINER, "--data-path", str(work), "--termination-log", str(log), "-q"])
    assert code == 0
    code = cli.main(["estimate", "-i", str(REAL), "-p", "p", "-e", SOURCE, "-fg", GROUP, "-o",
                     layout.estimation_dir("est"), "--data-path", str(work), "-q"])
    assert code == 0
    return work, json.loads(log.read_text())


def test_a_published_pipeline_has_the_layout(published: tuple[Path, dict]) -> None:
    work, summary = published
    models = work / "models"
    pipeline = models / "p"
    for name in (layout.METADATA, layout.TRAIN_ARGUMENTS, layout.NODE_TYPE_INDEX,
                 layout.metadata_table(SOURCE, "AbsPower"), layout.metadata_table(SOURCE, "DynPower")):
        assert (pipeline / name).is_file(), name
    assert {p.name for p in pipeline.iterdir() if p.is_dir()} - layout.NOT_SOURCE_DIRS == {SOURCE}
    assert os.readlink(models / layout.pipeline_archive("p")) == layout.pipeline_archive_member("p")
    with zipfile.ZipFile(models / layout.pipeline_archive_member("p")) as archive:
        assert layout.METADATA in archive.namelist()
    assert (models / layout.lock_file("p")).is_file()
    assert sorted(pipeline.glob(layout.MODEL_METADATA_GLOB)) == sorted(
        pipeline / layout.model_relative_dir(SOURCE, ot, GROUP, layout.model_name(TRAINER, 0)) / layout.METADATA
        for ot in ("AbsPower", "DynPower"))


def test_a_model_folder_has_the_layout(published: tuple[Path, dict]) -> None:
    work, summary = published
    name = layout.model_name(TRAINER, 0)
    folder = work / "models" / layout.model_dir("p", SOURCE, "AbsPower", GROUP, name)
    metadata = json.loads((folder / layout.METADATA).read_text())
    assert metadata["model_name"] == name and metadata["model_file"] == layout.model_file(name)
    assert (folder / layout.model_file(name)).is_file() and (folder / layout.WEIGHTS).is_file()
    assert (folder.parent / layout.model_file(name)).is_file()  # Kepler's model file beside the folder
    with zipfile.ZipFile(folder.parent / layout.model_archive(name)) as archive:
        assert layout.METADATA in archive.namelist()
    best = parse_summary(json.dumps(summary))
    assert best is not None and best.path == str(work / "models" / "p")
    assert {m.path for m in best.best} <= {layout.model_relative_dir(SOURCE, ot, GROUP, name)
                                           for ot in ("AbsPower", "DynPower")}


def test_an_estimation_has_the_layout(published: tuple[Path, dict]) -> None:
    work, _ = published
    folder = work / layout.estimation_dir("est")
    for name in (layout.ESTIMATION_RESULT, layout.ESTIMATION_INFO, layout.ESTIMATION_MODEL):
        assert (folder / name).is_file(), name
    assert posixpath.dirname(layout.estimation_dir("est")) in vocabulary.RESERVED_PIPELINE_NAMES


def test_layout_paths_are_relative_and_single_segment_per_name() -> None:
    paths = [layout.model_dir("p", SOURCE, "AbsPower", GROUP, "m"), layout.pipeline_archive_member("p"),
             layout.estimation_dir("e"), layout.profile_file(SOURCE), layout.lock_file("p")]
    for path in paths:
        assert not path.startswith("/") and ".." not in path.split("/"), path
    assert layout.model_dir("p", SOURCE, "AbsPower", GROUP, "m").split("/") == ["p", SOURCE, "AbsPower", GROUP, "m"]
