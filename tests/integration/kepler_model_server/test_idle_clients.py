"""Hostile clients that connect and send nothing (issue 13): with 2,000 of them held open the real server
still answers /healthz and a model request in under a second, and drops a connection that has not
finished its headers within --header-timeout."""

from __future__ import annotations

import importlib.util
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import FakeModel, ServerProcess, publish

IDLE = 2000
WEIGHTS = "/model-weights/p/rapl-sysfs/AbsPower/BPFOnly/SGDRegressorTrainer_0.json"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("idle")
    publish(root, "p", [FakeModel("SGDRegressorTrainer")])
    return root


@pytest.fixture
def enough_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = IDLE + 200
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the open-files hard limit ({hard}) is below the {need} descriptors this test holds")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def timed_get(url: str) -> tuple[int, float]:
    start = time.monotonic()
    answer = httpx.get(url, timeout=5)
    return answer.status_code, time.monotonic() - start


@pytest.mark.parametrize("server", ["default", "uvicorn"])
def test_2000_idle_connections_do_not_starve_the_others(models: Path, enough_descriptors: None, server: str) -> None:
    if server == "default" and importlib.util.find_spec("granian") is None:
        pytest.skip("granian (the default server) is not installed")
    extra = ("--http-server", server) if server != "default" else ()
    with ServerProcess(models, *extra) as proc:
        for _ in idle_connections(proc.port, IDLE):
            time.sleep(0.5)  # every idle connection is accepted (or queued) by now
            for path in ("/healthz", WEIGHTS, "/healthz"):
                status, seconds = timed_get(proc.url + path)
                assert status == 200 and seconds < 1.0, (path, status, seconds)


def test_a_connection_stalling_in_its_headers_is_dropped_after_the_header_timeout(models: Path) -> None:
    """(A connection that sends nothing at all is held by granian, but only takes one of the
    --max-connections slots: the test above.)"""
    if importlib.util.find_spec("granian") is None:
        pytest.skip("granian (the default server) is not installed")
    with ServerProcess(models, "--header-timeout", "1") as proc:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the rest (slowloris)
            start = time.monotonic()
            while sock.recv(1024):  # an error answer may come first; then the server closes (or times out)
                pass
            waited = time.monotonic() - start
        assert 0.5 < waited < 5, f"the idle connection was closed after {waited:.1f} s"
