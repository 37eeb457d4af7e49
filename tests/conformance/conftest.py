"""The conformance tier's fixtures (Kepler's code built, real pipelines published and served) and its
closing summary: artefacts checked, the worst relative difference, the (version, path, family) table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance import harness, kepler
from tests.conformance.harness import TALLY, Model
from tests.support.server import ServerProcess


@pytest.fixture(scope="session")
def drivers() -> dict[str, Path]:
    try:
        return {v: kepler.driver(v) for v in kepler.VERSIONS}
    except kepler.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def published(drivers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return harness.train_all(tmp_path_factory.mktemp("conformance"))


@pytest.fixture(scope="session")
def servers(published: dict[str, Path]) -> Iterator[dict[str, str]]:
    """One model server per models folder (Kepler cannot name a pipeline, so each folder has one)."""
    with ServerProcess(published["dump2023"]) as dump, ServerProcess(published["nx12"]) as nx12:
        yield {"dump2023": dump.url, "nx12": nx12.url}


@pytest.fixture(scope="session")
def all_models(published: dict[str, Path]) -> list[Model]:
    found = [m for d in published.values() for m in harness.models(d)]
    assert {m.trainer for m in found} >= set(harness.CURVE_TRAINERS + harness.LINEAR_TRAINERS)
    return found


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not TALLY.table:
        return
    write = terminalreporter.write_line
    write(f"Kepler conformance: {len(TALLY.artefacts)} artefacts, {TALLY.cases} loads compared, "
          f"{TALLY.values} power values; worst relative difference {TALLY.worst:.3g} ({TALLY.worst_where})")
    for (version, path, family), outcomes in sorted(TALLY.table.items()):
        write(f"  {version:8} {path:13} {family:48} {'/'.join(sorted(outcomes))}")
