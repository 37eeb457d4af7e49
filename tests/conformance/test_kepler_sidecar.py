"""`kepler-model estimator` answers Kepler's own sidecar client (pkg/model/estimator/sidecar/estimate.go,
0.7.11 and 0.7.12) with our `estimate`'s power, for every model family: the ones Kepler's regressor can
run from weights and the ones it cannot (trees, kernels, neighbours, polynomials, multi-feature curves).

The sidecar runs as a real process on a real unix socket and finds its models as upstream's does: from
the model server (`MODEL_SERVER_ENABLE=true`; a new model whenever Kepler asks for another trainer), or
from `MODEL_CONFIG`'s `<KEY>_INIT_URL`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conformance import harness, kepler
from tests.conformance.harness import TALLY, Model
from tests.support.checkout import stop

pytestmark = [pytest.mark.conformance, pytest.mark.usefixtures("drivers")]
SIDECAR_SPEC = {**harness.NODE_SPEC, "cores": 48}   # half the training machine's cores: core_ratio 0.5
ROWS_PER_REQUEST = 10                                # Kepler reads the reply in one 4096-byte read


@contextmanager
def estimator(work: Path, env: dict[str, str]) -> Iterator[Path]:
    """`kepler-model estimator` on a socket in `work`, with upstream's settings in its environment."""
    work.mkdir(parents=True, exist_ok=True)
    sock, spec = work / "estimator.sock", work / "spec.json"
    spec.write_text(json.dumps(SIDECAR_SPEC))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kepler_trainer.cli", "estimator", "--socket", str(sock), "--machine-spec", str(spec),
         "--download-path", str(work / "download"), "-c", str(work / "no-config"), "-l", "warn"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                said = proc.stdout.read() if proc.poll() is not None else ""
                raise RuntimeError(f"the estimator did not start: {said}")
            time.sleep(0.05)
        yield sock
    finally:
        stop(proc, timeout=10)


def sidecar_case(case_id: str, sock: Path, asked: Model, chosen: Model, trainer: str) -> dict:
    return {"id": case_id, "mode": "sidecar", "socket": str(sock), "output_type": asked.output_type,
            "source": harness.KEPLER_SOURCE[asked.source], "trainer": trainer, "features": asked.kepler_features,
            "system_features": harness.SYSTEM_FEATURES, "system_values": harness.SYSTEM_VALUES,
            "rows": harness.rows_for(asked, chosen), "batch_rows": ROWS_PER_REQUEST,
            "artefact": f"sidecar {chosen.path}"}


def check(version: str, path: str, cases: list[tuple[dict, Model]]) -> None:
    results = kepler.run(version, [c for c, _ in cases], timeout=900)
    problems = []
    for case, model in cases:
        result = results[case["id"]]
        found = harness.compare(case["id"], result, model.expected[1])
        if not found and version == "v0.7.12" and result.get("core_ratio") != pytest.approx(0.5):
            found = [f"{case['id']}: core_ratio {result.get('core_ratio')}, want 48/96"]
        TALLY.record(version, path, harness.family(model.trainer), "fails" if found else "works")
        TALLY.artefacts.add(case["artefact"])
        problems += found
    assert not problems, f"{len(problems)} of {len(cases)} cases failed:\n" + "\n".join(problems[:25])


# The feature groups of the 2023 dump each version asks the sidecar for (every trainer of each): several
# features each, so they include the curve fits Kepler cannot run from weights. Every model of the two
# nx12 groups is asked by both. (The weight tier covers every weight artefact; this one every family.)
SIDECAR_GROUPS = {"v0.7.11": "BPFIRQ", "v0.7.12": "Basic"}


def groups_for(version: str, all_models: list[Model]) -> list[Model]:
    """One model per feature group asked (its group's features are what Kepler sends)."""
    groups = {(m.pipeline_dir.name, m.source, m.output_type, m.group): m for m in all_models}
    return [m for (pipeline, _, output_type, group), m in sorted(groups.items())
            if pipeline == "nx12" or (output_type == "AbsPower" and group == SIDECAR_GROUPS[version])]


@pytest.mark.parametrize("version", kepler.VERSIONS)
def test_sidecar_with_the_model_server(version: str, all_models: list[Model], servers: dict[str, str],
                                       tmp_path: Path) -> None:
    by_path = {m.path: m for m in all_models}
    trainers = sorted({m.trainer for m in all_models})
    cases = []
    for pipeline in ("dump2023", "nx12"):
        with estimator(tmp_path / pipeline, {"MODEL_SERVER_ENABLE": "true",
                                             "MODEL_SERVER_URL": servers[pipeline]}) as sock:
            pipeline_cases = []
            for n, asked in enumerate(m for m in groups_for(version, all_models) if m.pipeline_dir.name == pipeline):
                # each group starts with another trainer than the last ended with: every request refetches
                for trainer in trainers[n % len(trainers):] + trainers[:n % len(trainers)]:
                    body = {"metrics": asked.kepler_features + harness.SYSTEM_FEATURES,
                            "output_type": asked.output_type,
                            "source": asked.source, "filter": "", "trainer_name": trainer,
                            "machine_spec": {k: v for k, v in SIDECAR_SPEC.items() if k != "vendor"}}
                    answer = httpx.post(f"{servers[pipeline]}/model", json=body, timeout=30)
                    if answer.status_code != 200:
                        continue  # no such trainer's model for these features
                    chosen = by_path[answer.headers["X-Model-Path"]]
                    name = f"{version} sidecar {chosen.path} (asked {asked.group}, {trainer})"
                    pipeline_cases.append((sidecar_case(name, sock, asked, chosen, trainer), chosen))
            check(version, "sidecar (model server)", pipeline_cases)
            cases += pipeline_cases
    assert {harness.family(m.trainer) for _, m in cases} == {harness.family(t) for t in trainers}


@pytest.mark.parametrize("version", kepler.VERSIONS)
def test_sidecar_with_an_init_url(version: str, all_models: list[Model], tmp_path: Path) -> None:
    """No model server: `MODEL_CONFIG` names a model zip (file://) per energy source, as upstream's
    kustomize patch does with kepler-model-db URLs. Models Kepler cannot run from weights."""
    picks = {}
    for m in all_models:
        if m.pipeline_dir.name == "dump2023" and m.output_type == "AbsPower" and m.group == "BPFOnly" \
                and m.trainer == ("XgboostFitTrainer" if m.source == "acpi" else "GradientBoostingRegressorTrainer"):
            picks[m.source] = m
    config = (f"NODE_TOTAL_INIT_URL=file://{picks['acpi'].folder.with_suffix('.zip')}\n"
              f"NODE_COMPONENTS_INIT_URL=file://{picks['rapl-sysfs'].folder.with_suffix('.zip')}\n")
    with estimator(tmp_path, {"MODEL_CONFIG": config, "MODEL_SERVER_ENABLE": "false"}) as sock:
        cases = [(sidecar_case(f"{version} sidecar init {m.path}", sock, m, m, ""), m) for m in picks.values()]
        check(version, "sidecar (init URL)", cases)
