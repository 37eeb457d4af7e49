"""Hostile names, paths, query strings and bodies against the real server: 4xx with a reason, never 5xx.

Paths go out on a raw socket, so `..`, encoded dots and odd bytes reach the server unnormalized.
A secret file sits beside the models folder (and a symlink to it inside a model folder): no answer
may ever contain it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.support.server import FakeModel, ServerProcess, publish

SECRET = b"TOP-SECRET-4f1c"
GROUP = "rapl-sysfs/AbsPower/BPFOnly"
REAL = [f"p/{GROUP}/SGDRegressorTrainer_0", f"p/{GROUP}/GradientBoostingRegressorTrainer_0"]
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hostile")
    (root / "secret.txt").write_bytes(SECRET)
    models = root / "models"
    publish(models, "p", [FakeModel("SGDRegressorTrainer"), FakeModel("GradientBoostingRegressorTrainer", mae=1.0)])
    os.symlink(root / "secret.txt", models / "p" / GROUP / "SGDRegressorTrainer_0" / "secret.zip")
    os.symlink(root, models / "escape")  # a symlinked "pipeline" pointing outside
    with ServerProcess(models) as proc:
        proc.client = httpx.Client(base_url=proc.url, timeout=10)
        yield proc
        proc.client.close()


def raw_get(server: ServerProcess, target: bytes) -> tuple[int, bytes]:
    """Send `GET <target>` as is; (status, body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


SEGMENT = st.one_of(
    st.sampled_from(["..", ".", "%2e%2e", "%2E%2e%2f", "..%2f..%2fsecret.txt", "%00", "escape", "secret.txt",
                     "p", "rapl-sysfs", "AbsPower", "BPFOnly", "SGDRegressorTrainer_0", "SGDRegressorTrainer_0.zip",
                     "secret.zip", "~", "%5c..%5c", "a" * 300, "\u00e9", "%ff%fe", "*", "?x=1", "#", ";"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=0, max_size=12),
)


@SETTINGS
@given(prefix=st.sampled_from(["/models/", "/model-weights/"]), segments=st.lists(SEGMENT, min_size=1, max_size=7))
def test_hostile_model_paths(server: ServerProcess, prefix: str, segments: list[str]) -> None:
    target = (prefix + "/".join(segments)).encode("utf-8")
    status, body = raw_get(server, target)
    assert status < 500, (target, status, body[:200])
    assert SECRET not in body
    if status != 200:
        assert status in (400, 404, 405), (target, status)
    else:  # only the real models answer
        path = target.decode().split("/", 2)[2].split("?")[0].removesuffix(".zip").removesuffix(".json")
        assert path in REAL or path in ("AbsPower", "DynPower"), target


def test_known_traversal_tries_are_refused(server: ServerProcess) -> None:
    for target in [b"/models/../../secret.txt", b"/models/%2e%2e/%2e%2e/secret.txt", b"/models/escape/secret.txt",
                   b"/models/p/" + GROUP.encode() + b"/secret", b"/model-weights/p/..%2f..%2fsecret.txt",
                   b"/models/p/" + GROUP.encode() + b"/SGDRegressorTrainer_0/..", b"/models//etc/passwd"]:
        status, body = raw_get(server, target)
        assert status in (400, 404), (target, status)
        assert SECRET not in body


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries({}, optional={
    "metrics": st.one_of(JSONISH, st.lists(st.sampled_from(["bpf_cpu_time_ms", "bpf_page_cache_hit", "../x", "",
                                                            "cpu_architecture", "a/b"]), max_size=6)),
    "output_type": st.one_of(st.sampled_from(["AbsPower", "DynPower", "", "../AbsPower"]), JSONISH),
    "source": st.one_of(st.sampled_from(["rapl", "intel_rapl", "acpi", "", "..", "rapl/../../x"]), JSONISH),
    "node_type": st.one_of(st.integers(-5, 2**40), JSONISH),
    "weight": st.one_of(st.booleans(), JSONISH),
    "trainer_name": st.one_of(st.sampled_from(["SGDRegressorTrainer", "../x", "SGD"]), JSONISH),
    "filter": st.one_of(st.sampled_from(["mae:1", "features:a,b", ";;", "mae:nan", ":", "a:b:c"]), JSONISH),
    "pipeline_name": st.one_of(st.sampled_from(["p", "escape", "..", ".tmp"]), JSONISH),
    "machine_spec": st.one_of(st.fixed_dictionaries({}, optional={
        "processor": st.text(max_size=40), "cores": JSONISH, "memory": JSONISH}), JSONISH),
})


@SETTINGS
@given(body=st.one_of(FIELDS, JSONISH))
def test_hostile_json_bodies(server: ServerProcess, body: object) -> None:
    answer = server.client.post("/model", content=json.dumps(body))
    assert answer.status_code in (200, 400), (body, answer.status_code, answer.text[:300])
    assert SECRET not in answer.content
    if answer.status_code == 400:
        assert answer.json()["error"] in ("InvalidRequest", "InvalidName", "ModelNotFound")
        assert answer.json()["message"]


@SETTINGS
@given(body=st.binary(max_size=2000))
def test_hostile_bytes(server: ServerProcess, body: bytes) -> None:
    answer = server.client.post("/model", content=body)
    assert answer.status_code in (200, 400), (body, answer.status_code)


@SETTINGS
@given(params=st.dictionaries(st.sampled_from(["energy-source", "output-type", "feature-group", "node-type",
                                               "filter", "pipeline-name", "metrics", "trainer-name", "x"]),
                              st.text(max_size=40), max_size=6),
       route=st.sampled_from(["/best-models", "/model-weights/AbsPower", "/models/DynPower"]))
def test_hostile_query_strings(server: ServerProcess, params: dict[str, str], route: str) -> None:
    answer = server.client.get(route, params=params)
    assert answer.status_code in (200, 400), (params, answer.status_code, answer.text[:300])
    assert SECRET not in answer.content


def test_the_symlinked_pipeline_and_files_are_not_served(server: ServerProcess) -> None:
    pipelines = httpx.get(f"{server.url}/pipelines").json()["pipelines"]
    assert [p["name"] for p in pipelines] == ["p"]
    answer = httpx.post(f"{server.url}/model", json={"metrics": [], "output_type": "AbsPower",
                                                     "pipeline_name": "escape"})
    assert answer.status_code == 400
