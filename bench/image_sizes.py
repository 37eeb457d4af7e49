"""Installed size of what each container image installs, without a Docker engine.

Each image's build stage installs the project into a virtual environment (/opt/venv),
compiles its bytecode, and the runtime stage copies only that environment onto the slim
Python base. So the image's own weight is the size of that environment: this script
builds it the same way in a temporary folder (same build context as .dockerignore lets
through, same pip and compileall commands as the Dockerfiles) and reports its size, the
part of it that is bytecode, its largest distributions, and whether the operator and
server environments stayed free of the scientific stack.

    python bench/image_sizes.py [--only trainer|trainer-slim|operator|server] [--keep DIR]

The python:3.11-slim base layer is not included (it cannot be measured offline), and the
environment is built with this machine's Python, not the image's 3.11.14.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTEXT_ITEMS = ("pyproject.toml", "README.md", "LICENSE", "trainer_image", "operator", "contract")
FORBIDDEN_IN_OPERATOR = ("pandas", "scikit-learn", "numpy", "scipy", "xgboost", "xgboost-cpu")
"""Not in the operator image, nor in the server image."""
SLIM = ("operator", "server")
COMPILE = ["-m", "compileall", "-f", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
"""As every Dockerfile's build stage runs it over /opt/venv, after the last install."""


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: str
    description: str


IMAGES = {
    "trainer": Image("trainer", "Dockerfile.trainer", 'pip install ".[server,xgboost]" (the default EXTRAS)'),
    "trainer-slim": Image("trainer-slim", "Dockerfile.trainer", 'pip install ".[server]" (EXTRAS=server)'),
    "operator": Image("operator", "Dockerfile.operator", "operator extra + pip install --no-deps ."),
    "server": Image("server", "Dockerfile.server", "server extra + pip install --no-deps ."),
}


def build_context(dest: Path) -> Path:
    """Copy what .dockerignore lets into the build: metadata and the two packages."""
    dest.mkdir(parents=True)
    for item in CONTEXT_ITEMS:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, dest / item)
    if not (dest / "README.md").exists():  # pyproject's `readme` must exist for the build
        (dest / "README.md").write_text("kepler-model-operator\n")
    return dest


def extra_requirements(context: Path, extra: str) -> list[str]:
    """An extra's requirements, read as Dockerfile.operator and Dockerfile.server read theirs."""
    with open(context / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"][extra]


def pip_commands(image: Image, context: Path) -> list[list[str]]:
    if image.name in SLIM:
        reqs = context / f"{image.name}-requirements.txt"
        reqs.write_text("\n".join(extra_requirements(context, image.name)) + "\n")
        return [["install", "-r", str(reqs)], ["install", "--no-deps", "."]]
    extras = "server,xgboost" if image.name == "trainer" else "server"
    return [["install", f".[{extras}]"]]


def install(image: Image, context: Path, venv: Path) -> float:
    # As in the Dockerfiles: a venv without pip, filled by the outer pip.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.perf_counter()
    for args in pip_commands(image, context):
        pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
        subprocess.run([*pip, *args, "-q"], cwd=context, env=env, check=True)
    subprocess.run([str(venv / "bin" / "python"), *COMPILE, str(venv)], env=env, check=True)
    return time.perf_counter() - started


def tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def bytecode_bytes(path: Path) -> int:
    return sum(os.lstat(f).st_size for f in path.rglob("*.pyc"))


def distributions(venv: Path) -> dict[str, int]:
    """Bytes per installed distribution, from each one's RECORD."""
    site = next((venv / "lib").glob("python*/site-packages"))
    sizes: dict[str, int] = {}
    for info in site.glob("*.dist-info"):
        meta = (info / "METADATA").read_text(errors="replace")
        name = next(line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Name:"))
        record = info / "RECORD"
        files = [line.split(",", 1)[0] for line in record.read_text().splitlines()] if record.exists() else []
        sizes[name.lower()] = sum(
            (site / f).stat().st_size for f in files if (site / f).is_file()
        )
    return sizes


SMOKE = {
    # What each image's entry point needs at start, run with the venv's own interpreter.
    "trainer": "import kepler_trainer.cli, fastapi, uvicorn, prometheus_client, sklearn, xgboost",
    "trainer-slim": "import kepler_trainer.cli, fastapi, uvicorn, prometheus_client, sklearn",
    "operator": "import kepler_operator.__main__, kepler_operator.handlers",
    "server": "import kepler_model_server.__main__, kepler_model_server.app, granian, uvicorn",
}
ENTRY_POINTS = {"operator": "kepler-model-operator", "server": "kepler-model-server"}


def smoke(image: Image, venv: Path) -> str:
    """Import what the entry point needs, from outside the source tree, as the container would."""
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv's packages, not a checkout's
    proc = subprocess.run([python, "-c", SMOKE[image.name]], cwd=venv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return "FAILED: " + proc.stderr.strip().splitlines()[-1]
    entry = ENTRY_POINTS.get(image.name, "kepler-model")
    if not (venv / "bin" / entry).exists():
        return f"FAILED: no {entry} console script"
    return "ok"


def measure(image: Image, workdir: Path) -> dict:
    context = build_context(workdir / f"{image.name}-context")
    venv = workdir / f"{image.name}-venv"
    seconds = install(image, context, venv)
    dists = distributions(venv)
    largest = sorted(dists.items(), key=lambda kv: kv[1], reverse=True)[:8]
    return {
        "image": image.name,
        "dockerfile": image.dockerfile,
        "install": image.description,
        "venv_mb": round(tree_bytes(venv) / 2**20, 1),
        "bytecode_mb": round(bytecode_bytes(venv) / 2**20, 1),
        "distributions": len(dists),
        "largest_mb": {name: round(size / 2**20, 1) for name, size in largest},
        "scientific_stack": sorted(set(dists) & set(FORBIDDEN_IN_OPERATOR)),
        "install_seconds": round(seconds, 1),
        "smoke": smoke(image, venv),
    }


def report(result: dict) -> None:
    print(f"{result['image']:<13} {result['venv_mb']:>8.1f} MB (bytecode {result['bytecode_mb']:.1f} MB)  "
          f"{result['distributions']:>3} distributions  "
          f"install {result['install_seconds']:.1f} s  ({result['install']})  imports: {result['smoke']}")
    print("    largest: " + ", ".join(f"{n} {mb} MB" for n, mb in result["largest_mb"].items()))
    if result["image"] in SLIM:
        verdict = "none" if not result["scientific_stack"] else ", ".join(result["scientific_stack"])
        print(f"    scientific stack in the {result['image']} image: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(IMAGES), action="append")
    parser.add_argument("--keep", type=Path, help="build here and keep the environments")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="image-sizes-"))
    try:
        results = [measure(IMAGES[name], workdir) for name in (args.only or IMAGES)]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for result in results:
        report(result)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of the pip processes: {peak_mb:.0f} MB; base image layer not included")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    forbidden = any(r["scientific_stack"] for r in results if r["image"] in SLIM)
    broken = any(r["smoke"] != "ok" for r in results)
    return 1 if forbidden or broken else 0


if __name__ == "__main__":
    sys.exit(main())
