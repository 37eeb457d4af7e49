"""Kepler's own model-reading Go code, built from the verbatim reference copy and run on cases.

The build tree is assembled in a temporary folder at test time: Kepler's files from
`../shared/reference/kepler-go/<version>/pkg` (copied unmodified; never committed here), and from
`kepler_go/` beside this file the module file, the stand-ins for the three libraries Kepler's files
import (klog, x/sys/unix, gopsutil), the hooks that read Kepler's predictors out, and the driver.
Debian's `golang-go` builds it offline. The binary is cached per machine under
`$XDG_CACHE_HOME/kepler-model-operator/conformance/`, keyed by a hash of every source file and the Go
version, so a rerun costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GO_TREE = HERE / "kepler_go"
REPO = HERE.parents[1]
KEPLER_GO = Path(os.environ.get("KEPLER_GO_REFERENCE", REPO.parent / "shared" / "reference" / "kepler-go"))
VERSIONS = ("v0.7.11", "v0.7.12")
GO_ENV = {"GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local", "GO111MODULE": "on", "GOSUMDB": "off"}


class Unavailable(Exception):
    """Go or the Kepler reference is missing on this machine (the tier is skipped with this reason)."""


def _kepler_files(version: str) -> list[Path]:
    root = KEPLER_GO / version
    if not (root / "pkg").is_dir():
        raise Unavailable(f"the Kepler reference {root} is missing")
    return sorted(p for p in (root / "pkg").rglob("*.go") if not p.name.endswith("_test.go"))


def _our_files(version: str) -> list[Path]:
    return sorted(p for p in GO_TREE.rglob("*") if p.is_file()
                  and not any(part.startswith("v0.") and part != version for part in p.relative_to(GO_TREE).parts))


def _go() -> str:
    go = shutil.which("go") or ("/usr/lib/go/bin/go" if Path("/usr/lib/go/bin/go").exists() else None)
    if go is None:
        raise Unavailable("Go is not installed (Debian golang-go; hack/install.sh --test installs it)")
    return go


def _digest(version: str, go_version: str) -> str:
    h = hashlib.sha256(go_version.encode())
    for root, files in ((KEPLER_GO / version, _kepler_files(version)), (GO_TREE, _our_files(version))):
        for path in files:
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "kepler-model-operator" / "conformance"


def driver(version: str) -> Path:
    """The compiled driver for `version`, built on first use (about a minute on a busy 2-core machine)."""
    go = _go()
    env = {**os.environ, **GO_ENV}
    go_version = subprocess.run([go, "version"], capture_output=True, text=True, check=True, env=env).stdout
    binary = cache_dir() / _digest(version, go_version) / f"kepler-conformance-{version}"
    if binary.is_file():
        return binary
    with tempfile.TemporaryDirectory(prefix=f"kepler-go-{version}-") as tmp:
        tree = Path(tmp) / "src"
        _assemble(version, tree)
        env["GOCACHE"] = str(Path(tmp) / "gocache")
        env["GOPATH"] = str(Path(tmp) / "gopath")
        built = Path(tmp) / binary.name
        done = subprocess.run([go, "build", "-trimpath", "-o", str(built), "./cmd/conformance"], cwd=tree,
                              capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"building Kepler {version}'s code failed:\n{done.stdout}{done.stderr}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        staged = binary.with_name(f".{binary.name}.{os.getpid()}")
        shutil.copy2(built, staged)
        os.replace(staged, binary)  # concurrent builders: the last complete copy wins, never a partial one
    return binary


def _assemble(version: str, tree: Path) -> None:
    for path in _kepler_files(version):
        target = tree / path.relative_to(KEPLER_GO / version)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    shutil.copyfile(GO_TREE / "go.mod", tree / "go.mod")
    shutil.copytree(GO_TREE / "standin", tree / "standin")
    for hooks in (GO_TREE / "hooks" / "all", GO_TREE / "hooks" / version):
        shutil.copytree(hooks, tree, dirs_exist_ok=True)
    (tree / "cmd" / "conformance").mkdir(parents=True)
    for source in (GO_TREE / "driver" / "common", GO_TREE / "driver" / version):
        for path in source.glob("*.go"):
            shutil.copyfile(path, tree / "cmd" / "conformance" / path.name)


def run(version: str, cases: list[dict], timeout: float = 300) -> dict[str, dict]:
    """Kepler `version`'s results for `cases`, by case id."""
    done = subprocess.run([str(driver(version))], input=json.dumps({"cases": cases}), capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "KEPLER_NAMESPACE": "kepler"})
    if done.returncode != 0:
        raise RuntimeError(f"Kepler {version} driver failed ({done.returncode}):\n{done.stderr[-4000:]}")
    answer = json.loads(done.stdout)
    assert answer["version"] == version
    return {r["id"]: r for r in answer["results"]}
