"""The catalog: what is served from a models folder, and how it follows publishes."""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path

import pytest

from kepler_model_server.catalog import Catalog
from kepler_model_server.errors import StaleSnapshot
from tests.support.server import (
    FakeModel,
    publish,
    write_pipeline,
    zip_names,
)

SGD = FakeModel("SGDRegressorTrainer", mae=5.0)
GBR = FakeModel("GradientBoostingRegressorTrainer", mae=3.0)


def test_reads_models_weights_and_archives(tmp_path: Path) -> None:
    publish(tmp_path, "p", [SGD, GBR], node_types={0: {"processor": "x", "cores": 4}})
    snapshot = Catalog(tmp_path).snapshot()
    sgd = snapshot.by_path["p/rapl-sysfs/AbsPower/BPFOnly/SGDRegressorTrainer_0"]
    gbr = snapshot.by_path["p/rapl-sysfs/AbsPower/BPFOnly/GradientBoostingRegressorTrainer_0"]
    assert (sgd.mae, sgd.node_type, sgd.trainer) == (5.0, 0, "SGDRegressorTrainer")
    assert sgd.features == {"bpf_cpu_time_ms", "bpf_page_cache_hit"}
    answer = json.loads(sgd.weight_answer)
    assert answer["model_name"] == "SGDRegressorTrainer_0" and answer["mae"] == 5.0
    assert answer["machine_spec"] == {"processor": "x", "cores": 4}
    assert set(answer) >= {"package", "core", "uncore", "dram"}
    assert gbr.weight_file is None and gbr.weight_answer is None
    data = snapshot.pipelines["p"].read(gbr.zip_rel)
    assert "metadata.json" in zip_names(data)


def test_ignores_dot_folders_non_pipelines_symlinks_and_bad_models(tmp_path: Path) -> None:
    publish(tmp_path, "good", [SGD])
    write_pipeline(tmp_path / ".tmp-half", "half", [SGD])          # being written
    (tmp_path / "not-a-pipeline" / "x").mkdir(parents=True)         # no metadata.json
    os.symlink(tmp_path / "good", tmp_path / "linked")              # symlinked pipeline
    bad = write_pipeline(tmp_path / "bad-models", "bad-models", [SGD, GBR])
    meta = bad / "rapl-sysfs/AbsPower/BPFOnly/SGDRegressorTrainer_0/metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "mae": float("nan")}))
    weird = bad / "rapl-sysfs/AbsPower/BPFOnly/not_a_model_name"
    weird.mkdir()
    (weird / "metadata.json").write_text("{}")
    snapshot = Catalog(tmp_path).snapshot()
    assert set(snapshot.pipelines) == {"good", "bad-models"}
    assert [m.model_name for m in snapshot.pipelines["bad-models"].models] == ["GradientBoostingRegressorTrainer_0"]


def test_a_symlinked_zip_is_not_served(tmp_path: Path) -> None:
    folder = write_pipeline(tmp_path / "p", "p", [GBR])
    archive = folder / "rapl-sysfs/AbsPower/BPFOnly/GradientBoostingRegressorTrainer_0.zip"
    archive.unlink()
    os.symlink("/etc/passwd", archive)
    entry = Catalog(tmp_path).snapshot().models().__next__()
    assert entry.zip_rel is None


def test_every_publish_is_seen_by_the_next_snapshot(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    assert catalog.snapshot().pipelines == {} and catalog.ready
    for version in range(1, 30):
        publish(tmp_path, "p", [FakeModel("SGDRegressorTrainer", mae=float(version))])
        entry = next(catalog.snapshot().models())
        assert entry.mae == version, f"publish {version} not seen"
    shutil.rmtree(tmp_path / "p")
    assert catalog.snapshot().pipelines == {}


def test_unchanged_pipelines_are_not_reread(tmp_path: Path) -> None:
    publish(tmp_path, "a", [SGD])
    catalog = Catalog(tmp_path)
    first = catalog.snapshot().pipelines["a"]
    publish(tmp_path, "b", [GBR])
    snapshot = catalog.snapshot()
    assert set(snapshot.pipelines) == {"a", "b"} and snapshot.pipelines["a"] is first


def test_a_replaced_pipeline_keeps_serving_its_own_files_until_removed(tmp_path: Path) -> None:
    publish(tmp_path, "p", [GBR])
    old = Catalog(tmp_path).snapshot()
    entry = next(old.models())
    before = old.pipelines["p"].read(entry.zip_rel)
    aside = tmp_path / ".old-p"
    os.rename(tmp_path / "p", aside)
    write_pipeline(tmp_path / "p", "p", [FakeModel("GradientBoostingRegressorTrainer", mae=1.0)])
    assert old.pipelines["p"].read(entry.zip_rel) == before     # the version it selected from
    shutil.rmtree(aside)
    with pytest.raises(StaleSnapshot):
        old.pipelines["p"].read(entry.zip_rel)


def test_a_missing_models_folder_is_not_ready_until_it_appears(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "models")
    assert catalog.snapshot().pipelines == {} and not catalog.ready
    assert "models" in (catalog.error or "")
    publish((tmp_path / "models").mkdir() or tmp_path / "models", "p", [SGD])
    assert set(catalog.snapshot().pipelines) == {"p"} and catalog.ready


def test_a_corrupt_pipeline_is_skipped_and_retried_when_replaced(tmp_path: Path) -> None:
    folder = write_pipeline(tmp_path / ".tmp", "p", [SGD])
    (folder / "metadata.json").write_text("not json")
    os.rename(folder, tmp_path / "p")
    catalog = Catalog(tmp_path)
    assert catalog.snapshot().pipelines == {} and catalog.ready
    publish(tmp_path, "p", [SGD])
    assert set(catalog.snapshot().pipelines) == {"p"}


def test_the_machine_spec_in_weight_answers_decodes_into_keplers_go_struct(tmp_path: Path) -> None:
    """Kepler's MachineSpec has int fields: a fractional memory would fail the whole decode."""
    publish(tmp_path, "p", [SGD], node_types={0: {"processor": "x", "cores": 4, "memory": 15.6, "frequency": 3500.0,
                                                  "chips": True, "vendor": "intel"}})
    answer = json.loads(next(Catalog(tmp_path).snapshot().models()).weight_answer)
    assert answer["machine_spec"] == {"processor": "x", "cores": 4, "memory": 16, "frequency": 3500}
    assert all(type(v) is int for k, v in answer["machine_spec"].items() if k != "processor")


def _descriptors_under(folder: Path) -> int:
    """Open descriptors of this process that point into `folder` (other tests' sockets do not count)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(str(folder))
    return count


def test_replaced_pipelines_release_their_descriptors(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    publish(tmp_path, "p", [SGD])
    catalog.snapshot()
    before = _descriptors_under(tmp_path)
    for version in range(20):
        publish(tmp_path, "p", [FakeModel("SGDRegressorTrainer", mae=float(version))])
        catalog.snapshot()
    gc.collect()
    assert _descriptors_under(tmp_path) <= before


def test_models_over_the_accuracy_gate_are_not_served(tmp_path: Path) -> None:
    over = FakeModel("KNeighborsRegressorTrainer", mae=9.0, extra_metadata={"passed_gate": False})
    under = FakeModel("SGDRegressorTrainer", mae=5.0, extra_metadata={"passed_gate": True})
    publish(tmp_path, "p", [over, under])
    served = {m.model_name for m in Catalog(tmp_path).snapshot().models()}
    assert served == {"SGDRegressorTrainer_0"}
