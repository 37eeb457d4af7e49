"""Publishing that cannot mix or leak (issue 13), with the real `kepler-model train`: no planted symlink
is followed into the new version or its archive; a kill at any rename leaves folder and archive of
one version; worker processes end with the run, whether it finishes or is killed from a shell."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from kepler_trainer import promjson
from tests.support.checkout import REAL, kepler_model
from tests.support.synthetic import generate

SECRET = b"planted-secret-7d41"
ONE_GROUP = ["-e", "rapl-sysfs", "--dyn-trainers", "LinearRegression", "--data-path"]


def train(tmp_path: Path, group: str, trainer: str = "LinearRegression") -> None:
    run = kepler_model("train", "-i", str(REAL), "-p", "p", "-fg", group, "--abs-trainers", trainer,
                       *ONE_GROUP, str(tmp_path))
    assert run.returncode == 0, run.stderr


def test_carry_over_and_zipping_follow_no_planted_symlink(tmp_path):
    train(tmp_path, "CounterOnly")
    outside = tmp_path / "outside"
    (outside / "AbsPower" / "Stolen").mkdir(parents=True)
    (outside / "secret").write_bytes(SECRET)
    (outside / "AbsPower" / "Stolen" / "secret").write_bytes(SECRET)
    pipeline = tmp_path / "models" / "p"
    model = pipeline / "rapl-sysfs/AbsPower/CounterOnly/LinearRegressionTrainer_0"
    os.symlink(outside / "secret", model / "token")                       # a file link in a carried group
    os.symlink(outside / "AbsPower" / "Stolen", pipeline / "rapl-sysfs/AbsPower/Linked")  # a group link
    os.symlink(outside, pipeline / "evil-source")                          # a source link
    train(tmp_path, "BPFOnly")  # CounterOnly, Linked and evil-source are not retrained: carried over
    assert (pipeline / "rapl-sysfs/AbsPower/CounterOnly/LinearRegressionTrainer_0/metadata.json").is_file()
    for path in pipeline.rglob("*"):
        assert not path.is_symlink(), path
        assert not path.is_file() or SECRET not in path.read_bytes(), path
    with zipfile.ZipFile(tmp_path / "models" / "p.zip") as archive:
        assert not any(SECRET in archive.read(name) for name in archive.namelist())
        assert not any(n.startswith(("evil-source", "rapl-sysfs/AbsPower/Linked")) for n in archive.namelist())


def _archive_metadata(models: Path) -> bytes | None:
    try:
        data = (models / "p.zip").read_bytes()
    except FileNotFoundError:
        return None
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read("metadata.json")


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to kill the trainer at a given rename")
def test_a_kill_at_any_rename_leaves_folder_and_archive_of_one_version(tmp_path):
    train(tmp_path, "CounterOnly")
    models = tmp_path / "models"
    env = {**os.environ, "CI": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    killed = 0
    for syscall in ("renameat2", "rename", "renameat"):
        for nth in (1, 2):  # strace counts each syscall on its own
            killed += 1
            trainer = "SGDRegressor" if killed % 2 else "LinearRegression"  # each run a different version
            run = subprocess.run(
                ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"inject={syscall}:signal=SIGKILL:when={nth}",
                 sys.executable, "-m", "kepler_trainer", "train", "-i", str(REAL), "-p", "p", "-fg", "CounterOnly",
                 "--abs-trainers", trainer, "--jobs", "1", *ONE_GROUP, str(tmp_path)],
                capture_output=True, text=True, env=env, timeout=300)
            assert run.returncode in (0, -9, 137), run.stderr[-2000:]
            killed -= run.returncode == 0
            folder = (models / "p" / "metadata.json").read_bytes()
            assert _archive_metadata(models) in (folder, None), f"folder and archive differ: killed at {syscall} #{nth}"
    assert killed >= 1, "no run was killed: the test did not test anything"
    train(tmp_path, "CounterOnly")
    assert _archive_metadata(models) == (models / "p" / "metadata.json").read_bytes()


# -- worker processes ----------------------------------------------------------------------------------

REAPER = textwrap.dedent("""
    # Runs a command as a child subreaper: its orphans (workers left behind) become our children.
    import ctypes, os, signal, subprocess, sys, time

    def children(pid):
        found = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1] == str(pid):
                    found.append(int(entry))
            except (OSError, IndexError):
                pass
        return found

    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if sys.argv[1] != "finish":  # from a shell (SIGTERM or SIGKILL), once training runs in workers
        while len(children(proc.pid)) < 2 and proc.poll() is None:
            time.sleep(0.05)
        how, _, when = sys.argv[1].partition("-")
        time.sleep(0 if when == "early" else 1)  # early: workers may not have run a task yet
        os.kill(proc.pid, getattr(signal, how))
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            print("no process left")
            sys.exit(0)
        time.sleep(0.1)
    left = children(os.getpid())
    print("processes left behind:", left)
    for pid in left:  # not to leave them running after the test
        os.kill(pid, signal.SIGKILL)
    sys.exit(1)
""")


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("workers")
    result, _, _ = generate(containers=20, samples=2000, seed=5)
    return promjson.dump(result, work / "big.json")


@pytest.mark.parametrize("how", ["finish", "SIGTERM", "SIGKILL", "SIGKILL-early"])
def test_no_worker_outlives_the_run(tmp_path, big_input, how):
    (tmp_path / "reaper.py").write_text(REAPER)
    command = [sys.executable, "-m", "kepler_trainer", "train", "-i", str(big_input), "-p", "w", "-e", "rapl-sysfs",
               "--jobs", "2", "--data-path", str(tmp_path)]
    if how == "finish":
        command += ["-fg", "BPFOnly,Basic", "--abs-trainers", "LinearRegression,SGDRegressor",
                    "--dyn-trainers", "LinearRegression"]
    started = time.monotonic()
    run = subprocess.run([sys.executable, str(tmp_path / "reaper.py"), how, *command], capture_output=True,
                         text=True, env={**os.environ, "CI": "1"}, timeout=600)
    assert run.stdout.strip() == "no process left", (run.stdout, run.stderr[-2000:], time.monotonic() - started)
    if how == "finish":
        assert (tmp_path / "models" / "w" / "metadata.json").is_file()
