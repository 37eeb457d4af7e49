"""The real server over a models folder holding garbage (issue 13): FIFOs do not hang it or its
restart, broken zips, undecodable weight files and negative errors are never answered, the
rejections show in /metrics, and a symlinked --models-dir is served."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import FakeModel, ServerProcess, publish

GROUP = "rapl-sysfs/AbsPower/BPFOnly"
METRICS = ["bpf_cpu_time_ms", "bpf_page_cache_hit"]
GOOD = FakeModel("LinearRegressionTrainer", mae=5.0)


def _models(root: Path) -> Path:
    """Pipelines whose lowest-MAE model is garbage in a different way each; GOOD is the right answer."""
    models = root / "models"
    sgd, log = FakeModel("SGDRegressorTrainer", mae=1.0), FakeModel("LogarithmicRegressionTrainer", mae=0.5)
    zips = publish(models, "zips", [GOOD, sgd])
    (zips / GROUP / "SGDRegressorTrainer_0.zip").write_bytes(b"\x00garbage" * 100)
    weights = publish(models, "weights", [GOOD, sgd, log])
    for name in ("SGDRegressorTrainer_0.json", "SGDRegressorTrainer_0/weight.json"):
        doc = json.loads((weights / GROUP / name).read_text())
        doc["package"]["All_Weights"] = "a string"
        (weights / GROUP / name).write_text(json.dumps(doc))
    meta = weights / GROUP / "LogarithmicRegressionTrainer_0/metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "mae": -1.0}))
    fifos = publish(models, "fifos", [GOOD, sgd])
    for name in ("SGDRegressorTrainer_0/metadata.json", "SGDRegressorTrainer_0.zip"):
        (fifos / GROUP / name).unlink()
        os.mkfifo(fifos / GROUP / name)
    os.mkfifo(fifos / "report.html")  # the report page is read per request: a FIFO must not hang it
    (zips / "report.html").symlink_to("/etc/hostname")  # nor may a link serve an outside file
    return models


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _models(tmp_path_factory.mktemp("untrusted"))


@pytest.fixture(scope="module")
def server(models: Path) -> Iterator[httpx.Client]:
    with ServerProcess(models) as proc, httpx.Client(base_url=proc.url, timeout=5) as client:
        yield client


@pytest.mark.parametrize("pipeline", ["zips", "weights", "fifos"])
@pytest.mark.parametrize("weight", [False, True])
def test_the_garbage_is_never_selected(server: httpx.Client, pipeline: str, weight: bool) -> None:
    answer = server.post("/model", json={"metrics": METRICS, "output_type": "AbsPower", "source": "rapl-sysfs",
                                         "pipeline_name": pipeline, "weight": weight})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-model-name"] == "LinearRegressionTrainer_0"


@pytest.mark.parametrize("path", ["/models/zips/{g}/SGDRegressorTrainer_0.zip",
                                  "/model-weights/weights/{g}/SGDRegressorTrainer_0.json",
                                  "/model-weights/weights/{g}/LogarithmicRegressionTrainer_0.json",
                                  "/models/fifos/{g}/SGDRegressorTrainer_0.zip"])
def test_the_garbage_is_not_served_by_path(server: httpx.Client, path: str) -> None:
    assert server.get(path.format(g=GROUP)).status_code == 404


@pytest.mark.parametrize("pipeline", ["fifos", "zips"])
def test_a_report_page_that_is_no_regular_file_is_not_served(server: httpx.Client, pipeline: str) -> None:
    answer = server.get(f"/pipelines/{pipeline}/report")
    assert answer.status_code == 404 and "has no report" in answer.json()["message"]


def test_rejections_are_counted_in_metrics(server: httpx.Client) -> None:
    text = server.get("/metrics").text
    for pipeline, reason in (("zips", "zip"), ("weights", "weight"), ("weights", "errors")):
        assert f'kepler_model_server_rejected_models{{pipeline="{pipeline}",reason="{reason}"}} 1.0' in text


def test_a_restart_over_the_fifos_is_ready_at_once(models: Path) -> None:
    with ServerProcess(models) as proc:
        assert httpx.get(f"{proc.url}/readyz", timeout=5).status_code == 200


def test_a_symlinked_models_dir_becomes_ready(models: Path, tmp_path: Path) -> None:
    os.symlink(models, tmp_path / "link")
    with ServerProcess(tmp_path / "link") as proc:
        assert httpx.get(f"{proc.url}/readyz", timeout=5).status_code == 200
        listed = httpx.get(f"{proc.url}/pipelines", timeout=5)
        assert listed.status_code == 200 and "zips" in listed.text
