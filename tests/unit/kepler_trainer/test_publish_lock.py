"""One writer per pipeline (kepler_trainer.publish_lock, used by pipeline.publish): concurrent publishes
of one pipeline never lose an update, and staging entries of dead runs are removed by the next run."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from kepler_trainer import pipeline, publish_lock
from kepler_trainer.errors import InputError, PipelineLockedError


def _increment(model_path: str, name: str, rounds: int, tag: str) -> None:
    """Publish `rounds` versions, each the previous version's counter plus one, and this writer's mark."""
    def build(folder: Path, previous: Path | None) -> None:
        count = int((previous / "count").read_text()) if previous else 0
        marks = (previous / "marks").read_text() if previous else ""
        time.sleep(0.005)  # widen the read-base -> swap window: a race here would lose updates
        (folder / "count").write_text(str(count + 1))
        (folder / "marks").write_text(marks + tag)

    for _ in range(rounds):
        pipeline.publish(Path(model_path), name, build)


def test_concurrent_publishes_of_one_pipeline_never_lose_an_update(tmp_path):
    writers, rounds = 3, 25
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_increment, args=(str(tmp_path), "p", rounds, tag)) for tag in "abc"[:writers]]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    published = tmp_path / "p"
    assert int((published / "count").read_text()) == writers * rounds
    marks = (published / "marks").read_text()
    assert sorted(set(marks)) == list("abc") and all(marks.count(t) == rounds for t in "abc")
    assert publish_lock.staging_entries(tmp_path, "p") == []
    assert (tmp_path / "p.zip").is_file()


def test_a_dead_runs_staging_entries_are_removed_but_not_another_pipelines(tmp_path):
    dead = publish_lock.new_run_id()
    (tmp_path / f".tmp-p-{dead}").mkdir()
    (tmp_path / f".tmp-p-{dead}" / "half-written").write_text("x")
    (tmp_path / f".tmp-p-{publish_lock.new_run_id()}.zip").write_bytes(b"PK")
    other = tmp_path / f".tmp-p-b-{publish_lock.new_run_id()}"  # pipeline "p-b", possibly alive
    other.mkdir()
    legacy = tmp_path / ".tmp-p-notarunid"
    legacy.mkdir()
    pipeline.publish(tmp_path, "p", lambda folder, previous: (folder / "ok").write_text("1"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".lock-p", "p", "p.zip", other.name, legacy.name])


def test_staging_names_carry_a_random_run_id_not_a_pid(tmp_path):
    seen: list[str] = []
    for _ in range(2):
        pipeline.publish(tmp_path, "p", lambda folder, previous: seen.append(folder.name))
    assert seen[0] != seen[1]
    for name in seen:
        run_id = name.removeprefix(".tmp-p-")
        assert publish_lock.RUN_ID.fullmatch(run_id) and str(os.getpid()) not in run_id


def test_a_held_lock_makes_the_next_writer_wait_then_give_up(tmp_path):
    with publish_lock.locked(tmp_path, "p"):
        started = time.monotonic()
        with pytest.raises(PipelineLockedError, match="being published by another run"):
            pipeline.publish(tmp_path, "p", lambda folder, previous: None, lock_timeout=0.3)
        assert time.monotonic() - started >= 0.3
    assert not (tmp_path / "p").exists() and publish_lock.staging_entries(tmp_path, "p") == []
    pipeline.publish(tmp_path, "p", lambda folder, previous: None, lock_timeout=0)  # free again
    assert (tmp_path / "p").is_dir()


def test_the_lock_file_is_never_followed_through_a_symlink_or_a_fifo(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    (tmp_path / ".lock-p").symlink_to(target)
    with pytest.raises(InputError, match="cannot open the pipeline lock"):
        pipeline.publish(tmp_path, "p", lambda folder, previous: None)
    os.mkfifo(tmp_path / ".lock-q")
    with pytest.raises(InputError, match="not a regular file"):
        pipeline.publish(tmp_path, "q", lambda folder, previous: None)
    assert target.read_text() == "precious"
