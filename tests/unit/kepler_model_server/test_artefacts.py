"""The catalog trusts nothing it reads (issue 13): FIFOs, broken zips, weight files Kepler cannot
decode and negative errors are skipped, logged and counted, and never selected as the best model."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from kepler_model_server.catalog import Catalog, Snapshot
from kepler_model_server.errors import StaleSnapshot
from kepler_model_server.selection import Criteria, select
from tests.support.server import FakeModel, publish, weight_doc, write_pipeline

GROUP = "rapl-sysfs/AbsPower/BPFOnly"
GOOD = FakeModel("LinearRegressionTrainer", mae=5.0)
BEST = FakeModel("SGDRegressorTrainer", mae=1.0)  # the one each test breaks
ZIP_CRITERIA = Criteria(source="rapl-sysfs", output_type="AbsPower")
WEIGHT_CRITERIA = Criteria(source="rapl-sysfs", output_type="AbsPower", weight=True)


def scan(root: Path, timeout: float = 10.0) -> Snapshot:
    """A snapshot taken in a thread: a scan that blocks (on a FIFO) fails the test instead of hanging it."""
    result: list[Snapshot] = []
    worker = threading.Thread(target=lambda: result.append(Catalog(root).snapshot()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert result, f"the catalog scan blocked for more than {timeout} s"
    return result[0]


def published(tmp_path: Path) -> Path:
    return publish(tmp_path, "p", [GOOD, BEST]) and tmp_path / "p"


def assert_best_is_skipped(snapshot: Snapshot, reason: str) -> None:
    pipeline = snapshot.pipelines["p"]
    assert [m.model_name for m in pipeline.models] == ["LinearRegressionTrainer_0"]
    assert pipeline.rejected == {reason: 1}
    for criteria in (ZIP_CRITERIA, WEIGHT_CRITERIA):
        assert select(pipeline, criteria).entry.model_name == "LinearRegressionTrainer_0"


@pytest.mark.parametrize("name, served", [
    ("SGDRegressorTrainer_0/metadata.json", False),  # no metadata: not a model
    ("SGDRegressorTrainer_0/weight.json", False),    # rejected: not a regular file
    ("SGDRegressorTrainer_0.json", True),            # not a file beside the folder: the folder's weight.json
    ("SGDRegressorTrainer_0.zip", True),             # likewise: served by weight only
])
def test_a_fifo_in_a_model_never_blocks_the_scan(tmp_path: Path, name: str, served: bool) -> None:
    folder = published(tmp_path)
    target = folder / GROUP / name
    target.unlink()
    os.mkfifo(target)
    if name.endswith("weight.json"):  # read only when there is no weight file beside the folder
        (folder / GROUP / "SGDRegressorTrainer_0.json").unlink()
    pipeline = scan(tmp_path).pipelines["p"]
    names = [m.model_name for m in pipeline.models]
    assert names == (["LinearRegressionTrainer_0", "SGDRegressorTrainer_0"] if served
                     else ["LinearRegressionTrainer_0"])
    if name.endswith("weight.json"):
        assert pipeline.rejected == {"not_a_file": 1}
    if name.endswith(".zip"):
        assert select(pipeline, ZIP_CRITERIA).entry.model_name == "LinearRegressionTrainer_0"


def test_a_fifo_as_pipeline_metadata_skips_the_pipeline_without_blocking(tmp_path: Path) -> None:
    folder = published(tmp_path)
    publish(tmp_path, "q", [GOOD])
    (folder / "metadata.json").unlink()
    os.mkfifo(folder / "metadata.json")
    assert set(scan(tmp_path).pipelines) == {"q"}


@pytest.mark.parametrize("content", [b"", bytes(range(256)) * 16, b"PK\x05\x06" + bytes(18)],
                         ids=["emptied", "random-bytes", "empty-archive"])
def test_a_zip_replaced_by_garbage_is_never_listed(tmp_path: Path, content: bytes) -> None:
    folder = published(tmp_path)
    (folder / GROUP / "SGDRegressorTrainer_0.zip").write_bytes(content)
    assert_best_is_skipped(scan(tmp_path), "zip")


def test_a_zip_with_a_corrupt_member_is_never_listed(tmp_path: Path) -> None:
    folder = published(tmp_path)
    archive = folder / GROUP / "SGDRegressorTrainer_0.zip"
    data = bytearray(archive.read_bytes())
    data[60] ^= 0xFF  # inside the first member's data: its CRC no longer matches
    archive.write_bytes(bytes(data))
    assert_best_is_skipped(scan(tmp_path), "zip")


@pytest.mark.parametrize("change", [
    lambda doc: doc["package"].update(All_Weights="a string"),
    lambda doc: doc["package"].update(All_Weights=[1, 2]),
    lambda doc: doc["core"]["All_Weights"].update(Bias_Weight="1"),
    lambda doc: doc["dram"]["All_Weights"].update(Numerical_Variables=[]),
    lambda doc: doc["dram"]["All_Weights"]["Numerical_Variables"]["bpf_cpu_time_ms"].update(scale="x"),
    lambda doc: doc.update(package=7),
    lambda doc: [doc.pop(c) for c in list(doc)],
])
def test_a_weight_file_kepler_cannot_decode_is_never_listed(tmp_path: Path, change) -> None:
    folder = published(tmp_path)
    for path in (folder / GROUP / "SGDRegressorTrainer_0.json", folder / GROUP / "SGDRegressorTrainer_0/weight.json"):
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))
    assert_best_is_skipped(scan(tmp_path), "weight")


@pytest.mark.parametrize("errors", [{"mae": -1.0}, {"package_mae": -0.5}, {"package_mae": float("inf")},
                                    {"core_mae": "0.1"}, {"dram_mae": None}])
def test_negative_or_non_finite_errors_are_never_listed(tmp_path: Path, errors: dict) -> None:
    folder = published(tmp_path)
    meta = folder / GROUP / "SGDRegressorTrainer_0/metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **errors}))  # json writes inf as Infinity
    assert_best_is_skipped(scan(tmp_path), "errors")


def test_metadata_nested_too_deep_is_skipped_not_a_crash(tmp_path: Path) -> None:
    folder = published(tmp_path)
    (folder / GROUP / "SGDRegressorTrainer_0/metadata.json").write_text("[" * 100_000 + "]" * 100_000)
    assert [m.model_name for m in scan(tmp_path).pipelines["p"].models] == ["LinearRegressionTrainer_0"]


def test_a_zip_changed_after_the_scan_is_not_served_and_its_pipeline_is_read_again(tmp_path: Path) -> None:
    folder = published(tmp_path)
    catalog = Catalog(tmp_path)
    snapshot = catalog.snapshot()
    best = select(snapshot.pipelines["p"], ZIP_CRITERIA).entry
    assert best.model_name == "SGDRegressorTrainer_0"
    (folder / GROUP / "SGDRegressorTrainer_0.zip").write_bytes(os.urandom(1000))
    with pytest.raises(StaleSnapshot):
        snapshot.pipelines["p"].read(best.zip_rel)
    catalog.invalidate()
    again = catalog.snapshot()
    assert select(again.pipelines["p"], ZIP_CRITERIA).entry.model_name == "LinearRegressionTrainer_0"
    assert again.pipelines["p"].rejected == {"zip": 1}


def test_a_symlinked_models_folder_is_served(tmp_path: Path) -> None:
    publish(tmp_path / "real", "p", [GOOD])
    os.symlink(tmp_path / "real", tmp_path / "models")
    catalog = Catalog(tmp_path / "models")
    assert set(catalog.snapshot().pipelines) == {"p"} and catalog.ready


def test_the_trainers_own_weight_documents_pass(tmp_path: Path) -> None:
    from kepler_model_server.artefacts import Rejected, check_weight

    write_pipeline(tmp_path / "p", "p", [GOOD])
    check_weight(weight_doc(GOOD))
    check_weight({"model_name": "x", "platform": {"All_Weights": {"Numerical_Variables": {"a": {"scale": 1.0}},
                                                                  "CurveFit_Weights": [1.0, 2.0, 3.0]}}})
    with pytest.raises(Rejected):
        check_weight({"platform": None})
