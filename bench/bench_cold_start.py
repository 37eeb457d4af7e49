"""Cold start of the model server from the slim server image's environment, with and without bytecode.

    python bench/bench_cold_start.py [--venv DIR] [--runs 7]

The server image's environment (what Dockerfile.server installs; built with bench/image_sizes.py, or
given with --venv as kept by `image_sizes.py --keep DIR`: DIR/server-venv) is copied twice: once
with its bytecode compiled as the Dockerfile compiles it, once with every `__pycache__` removed. Both
copies are then made read-only (chmod -R a-w), as a container's read-only root filesystem is, and
each run starts `<venv>/bin/python -m kepler_model_server` (what the image's `kepler-model-server` runs)
over the benchmark pipeline of bench_serve.py with
PYTHONDONTWRITEBYTECODE=1 and measures the time from process start to the first HTTP 200 on /healthz
and on /readyz (the models folder read). Runs alternate between the two copies; medians are printed.

Not counted: the base image's own standard library is this machine's Python's (its bytecode is
whatever that installation ships), and no container runtime starts the process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import build_models  # noqa: E402  (the benchmark pipeline: 100 models, 60 weight files)
from image_sizes import COMPILE, IMAGES, measure  # noqa: E402

from tests.support.server import free_port  # noqa: E402


def prepared(source: Path, dest: Path, precompiled: bool) -> Path:
    """A read-only copy of the environment, its bytecode compiled as the image's, or none at all."""
    shutil.copytree(source, dest, symlinks=True)
    for cache in list(dest.rglob("__pycache__")):
        shutil.rmtree(cache)
    if precompiled:
        subprocess.run([str(dest / "bin" / "python"), *COMPILE, str(dest)], check=True)
    subprocess.run(["chmod", "-R", "a-w", str(dest)], check=True)
    return dest


def start_to_ok(venv: Path, models: Path) -> tuple[float, float]:
    """Seconds from process start to the first 200 on /healthz, and on /readyz."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}  # the venv's code, not a checkout's
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    started = time.perf_counter()
    # `python -m`: the copies' console scripts would name the original venv's interpreter in their #! line
    proc = subprocess.Popen([str(venv / "bin" / "python"), "-m", "kepler_model_server", "--models-dir", str(models),
                             "--port", str(port), "--log-level", "warning"], env=env, cwd="/",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        healthy = _first_ok(f"http://127.0.0.1:{port}/healthz", proc) - started
        ready = _first_ok(f"http://127.0.0.1:{port}/readyz", proc) - started
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    return healthy, ready


def _first_ok(url: str, proc: subprocess.Popen) -> float:
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.perf_counter()
        except httpx.TransportError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"no 200 from {url} within 60 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, help="the server image's environment (else built now)")
    parser.add_argument("--runs", type=int, default=7, help="starts per variant (default 7)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cold-start-"))
    try:
        source = args.venv
        if source is None:
            measure(IMAGES["server"], work)
            source = work / "server-venv"
        models = work / "models"
        build_models(models)
        variants = {"bytecode compiled at build": prepared(source, work / "compiled", True),
                    "no bytecode": prepared(source, work / "bare", False)}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(args.runs):
            for name, venv in variants.items():
                times[name].append(start_to_ok(venv, models))
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.runs} starts per variant, alternating; read-only venv, PYTHONDONTWRITEBYTECODE=1; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for name, runs in times.items():
        healthz = statistics.median(h for h, _ in runs)
        readyz = statistics.median(r for _, r in runs)
        spread = ", ".join(f"{h:.2f}" for h, _ in runs)
        print(f"{name:28} first 200 /healthz {healthz:.2f} s, /readyz {readyz:.2f} s  (healthz runs: {spread})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
