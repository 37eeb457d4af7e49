"""Publishing while the server answers: fresh from the next request, never a 5xx or a torn answer."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import os
import shutil
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.server import (
    FakeModel,
    ServerProcess,
    publish,
    zip_names,
)

GROUP = "rapl-sysfs/AbsPower/BPFOnly"
METRICS = ["bpf_cpu_time_ms", "bpf_page_cache_hit", "cpu_architecture"]
VERSIONS = 40


def version(v: int) -> list[FakeModel]:
    """Version v: its MAEs name the version, so every answer tells which version it came from."""
    return [FakeModel("GradientBoostingRegressorTrainer", mae=float(v)),
            FakeModel("SGDRegressorTrainer", mae=v + 0.5)]


def zip_mae(data: bytes) -> float:
    zip_names(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return json.loads(archive.read("metadata.json"))["mae"]


async def hammer(url: str, stop: threading.Event, tally: Counter, problems: list[str]) -> None:
    """Mixed requests until `stop`; checks each answer is whole and consistent with its headers."""
    requests = [
        ("POST", "/model", {"metrics": METRICS, "output_type": "AbsPower"}),
        ("POST", "/model", {"metrics": METRICS, "output_type": "AbsPower", "weight": True}),
        ("GET", f"/models/p/{GROUP}/GradientBoostingRegressorTrainer_0.zip", None),
        ("GET", f"/model-weights/p/{GROUP}/SGDRegressorTrainer_0.json", None),
        ("POST", "/model", {"metrics": METRICS, "output_type": "AbsPower", "pipeline_name": "q"}),
    ]
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        i = 0
        while not stop.is_set():
            method, path, body = requests[i % len(requests)]
            i += 1
            answer = await client.request(method, path, json=body)
            tally[answer.status_code] += 1
            if answer.status_code >= 500:
                problems.append(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
            elif answer.status_code != 200:
                if "pipeline_name" not in (body or {}):  # q comes and goes; p is always there
                    problems.append(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
            elif answer.headers["content-type"] == "application/zip":
                try:
                    if zip_mae(answer.content) != float(answer.headers["x-model-mae"]):
                        problems.append(f"{path}: zip of one version, headers of another")
                except (zipfile.BadZipFile, AssertionError, KeyError) as exc:
                    problems.append(f"{path}: corrupt zip: {exc}")
            else:
                mae = float(answer.headers["x-model-mae"])
                if "mae" in answer.json() and answer.json()["mae"] != mae:
                    problems.append(f"{path}: weights of one version, headers of another")


@pytest.mark.parametrize(("server_name", "workers"), [("uvicorn", 1), ("granian", 2)])
def test_publish_while_serving(tmp_path: Path, server_name: str, workers: int) -> None:
    if importlib.util.find_spec(server_name) is None:
        pytest.skip(f"{server_name} is not installed")
    publish(tmp_path, "p", version(1))
    with ServerProcess(tmp_path, "--http-server", server_name, workers=workers) as server:
        stop, tally, problems = threading.Event(), Counter(), []

        async def clients() -> None:
            await asyncio.gather(*(hammer(server.url, stop, tally, problems) for _ in range(12)))

        runner = threading.Thread(target=asyncio.run, args=(clients(),))
        runner.start()
        deadline = time.monotonic() + 30
        while sum(tally.values()) < 24 and time.monotonic() < deadline:  # the clients are up
            time.sleep(0.05)
        stale = []
        try:
            with httpx.Client(base_url=server.url) as client:
                for v in range(2, VERSIONS + 1):
                    time.sleep(0.04)  # let the clients run between publishes
                    publish(tmp_path, "p", version(v))
                    if v % 3 == 0:
                        publish(tmp_path, "q", version(v))
                    elif (tmp_path / "q").exists():  # removal: out of sight first, then deleted
                        os.rename(tmp_path / "q", tmp_path / ".removed-q")
                        shutil.rmtree(tmp_path / ".removed-q")
                    # Fresh from the next request on (each request may land on either worker).
                    for _ in range(workers):
                        answer = client.get(f"/model-weights/p/{GROUP}/SGDRegressorTrainer_0.json",
                                            headers={"connection": "close"})
                        if float(answer.headers.get("x-model-mae", "nan")) != v + 0.5:
                            stale.append((v, answer.status_code, answer.headers.get("x-model-mae")))
                    q = client.post("/model", json={"metrics": METRICS, "output_type": "AbsPower",
                                                    "pipeline_name": "q"})
                    if q.status_code != (200 if v % 3 == 0 else 400):
                        stale.append((v, "q", q.status_code))
        finally:
            stop.set()
            runner.join(timeout=30)
        assert not problems, problems[:5]
        assert not stale, stale[:5]
        assert tally[200] >= VERSIONS, tally  # the clients really ran during the publishes
        assert set(tally) <= {200, 400}, tally
