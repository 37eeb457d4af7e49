"""`kepler-model serve`, `kepler-model-server` and `python -m kepler_model_server` serve without the
scientific stack: each real command is started serving a published pipeline, answers a model request
over HTTP, and the modules its processes imported (Python's own import log, PYTHONPROFILEIMPORTTIME,
which every granian worker inherits) hold no pandas, numpy, scikit-learn, scipy or XGBoost. The slim
server image (Dockerfile.server) installs none of them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.checkout import stop
from tests.support.server import FakeModel, free_port, publish

pytestmark = pytest.mark.slow

HEAVY = ("pandas", "numpy", "sklearn", "scipy", "xgboost")
BODY = {"metrics": ["bpf_cpu_time_ms", "bpf_page_cache_hit"], "output_type": "AbsPower", "weight": True,
        "machine_spec": {"processor": "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "cores": 96}}


def _script(name: str, fallback: list[str]) -> list[str]:
    """The installed console script, or what it runs when this checkout's install predates it."""
    found = shutil.which(name)
    return [found] if found and subprocess.run([found, "--help"], capture_output=True).returncode == 0 else fallback


COMMANDS = {
    "kepler-model serve": lambda: [*_script("kepler-model", [sys.executable, "-m", "kepler_trainer"]), "serve"],
    "kepler-model-server": lambda: _script("kepler-model-server", [
        sys.executable, "-c", "import sys; from kepler_model_server.__main__ import main; sys.exit(main())"]),
    "python -m kepler_model_server": lambda: [sys.executable, "-m", "kepler_model_server"],
}


def imported_modules(import_log: str) -> set[str]:
    """Module names from `-X importtime` lines: `import time: self | cumulative | <indent>name`."""
    return {line.rsplit("|", 1)[1].strip() for line in import_log.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_server_imports_no_scientific_stack(tmp_path: Path, command: str) -> None:
    models = tmp_path / "models"
    publish(models, "p", [FakeModel("SGDRegressorTrainer", mae=1.0)])
    port = free_port()
    log = tmp_path / "imports.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen([*COMMANDS[command](), "--models-dir", str(models), "--port", str(port),
                                 "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=stderr,
                                env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
        try:
            answer = _first_answer(proc, f"http://127.0.0.1:{port}")
        finally:
            stop(proc)
    assert answer.status_code == 200 and answer.headers["x-model-name"] == "SGDRegressorTrainer_0", answer.text
    modules = imported_modules(log.read_text())
    assert {"kepler_model_server.routes", "fastapi", "kepler_contract.machine"} <= modules  # the log is the server's
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"{command} imported {heavy[:10]}"
    if command != "kepler-model serve":
        assert not [m for m in modules if m.startswith("kepler_trainer")], f"{command} imported the trainer"


def _first_answer(proc: subprocess.Popen, url: str) -> httpx.Response:
    """POST /model once the server listens (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            return httpx.post(f"{url}/model", json=BODY, timeout=5)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server did not answer within 30 s")
