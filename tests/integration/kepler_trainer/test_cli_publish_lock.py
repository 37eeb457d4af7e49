"""The real `kepler-model train`, several at once on one pipeline, and killed as a container's PID 1:
no update is lost and no staging entry outlives the next run (kepler_trainer.publish_lock)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from kepler_trainer import promjson, publish_lock
from tests.support import checkout
from tests.support.synthetic import generate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DATA = checkout.DATA
REAL = DATA / "kepler-metrics" / "prom_response_2023.json"
ENV = {**os.environ, "CI": "1"}


def train_command(work: Path, group: str, seed: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kepler_trainer", "train", "-i", str(REAL), "-p", "shared", "-e", "rapl-sysfs",
            "-fg", group, "--abs-trainers", "LinearRegression", "--dyn-trainers", "LinearRegression",
            "--seed", str(seed), "--data-path", str(work), "-q", *extra]


def published_seed(models: Path, group: str) -> int:
    meta = models / "shared" / "rapl-sysfs" / "AbsPower" / group / "LinearRegressionTrainer_0" / "metadata.json"
    return json.loads(meta.read_text())["evaluation"]["seed"]


def test_two_concurrent_trains_of_one_pipeline_both_land_every_time(tmp_path):
    models = tmp_path / "models"
    for round_ in range(3):
        seeds = {"CounterOnly": 2 * round_, "KubeletOnly": 2 * round_ + 1}
        procs = [subprocess.Popen(train_command(tmp_path, group, seed), env=ENV, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for group, seed in seeds.items()]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        # each run carried over the other's group from the version current when it swapped
        assert {group: published_seed(models, group) for group in seeds} == seeds, f"round {round_}"
        archive_names = set(zipfile.ZipFile(models / "shared.zip").namelist())
        assert {f"rapl-sysfs/AbsPower/{g}/LinearRegressionTrainer_0/metadata.json" for g in seeds} <= archive_names
    assert publish_lock.staging_entries(models, "shared") == []


def test_a_run_that_cannot_get_the_lock_fails_with_one_line_and_exit_12(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    with publish_lock.locked(models, "shared"):
        run = subprocess.run(train_command(tmp_path, "CounterOnly", 0, "--lock-timeout", "1"), env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert run.returncode == 12, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kepler-model: error:") and "another run" in lines[0]
    assert not (models / "shared").exists()


@pytest.mark.parametrize("name, fragment", [("x.zip", "may not end in .zip"), ("X.ZIP", "may not end in .zip"),
                                            ("estimations", "reserved"), ("", "invalid pipeline name")])
def test_pipeline_names_that_would_collide_are_refused(tmp_path, name, fragment):
    command = train_command(tmp_path, "CounterOnly", 0)
    command[command.index("shared")] = name
    run = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 7, run.stderr
    assert fragment in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def _as_pid_1(command: list[str]) -> list[str]:
    return ["unshare", "--pid", "--fork", "--kill-child", *command]


def _unshare_problem() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    probe = subprocess.run(["unshare", "--pid", "--fork", "sh", "-c", "echo $$"], capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "1":
        return f"cannot make a PID namespace here: {probe.stderr.strip()[:200]}"
    return None


def test_a_trainer_killed_as_pid_1_leaves_no_staging_entry_after_the_next_run(tmp_path):
    problem = _unshare_problem()
    if problem:
        pytest.skip(problem)
    models = tmp_path / "models"
    big, _, _ = generate(containers=30, samples=3000, seed=3)
    promjson.dump(big, tmp_path / "big.json")
    command = train_command(tmp_path, "CounterOnly", 0)
    command[command.index(str(REAL))] = str(tmp_path / "big.json")
    proc = subprocess.Popen(_as_pid_1(command), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not list(models.glob(".tmp-shared-*/*/*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the new version is being written
    proc.send_signal(signal.SIGKILL)  # unshare's child, the trainer as PID 1, dies with it (--kill-child)
    proc.wait()
    time.sleep(0.5)
    left = publish_lock.staging_entries(models, "shared")
    assert left, "the kill left a staging folder behind (otherwise this test proves nothing)"
    zip_left = models / f".tmp-shared-{publish_lock.new_run_id()}.zip"  # as if killed while zipping
    zip_left.write_bytes(b"PK\x05\x06" + bytes(18))
    again = subprocess.run(_as_pid_1(train_command(tmp_path, "KubeletOnly", 1)), env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert publish_lock.staging_entries(models, "shared") == []
    assert not list(models.glob(".tmp-*"))
    assert published_seed(models, "KubeletOnly") == 1
