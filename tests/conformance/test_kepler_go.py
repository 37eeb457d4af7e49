"""Kepler 0.7.11 and 0.7.12 load every model we publish or serve as weights, and compute our power.

Kepler's own Go code (regressor estimator, sidecar client, config; verbatim from the release tags in
../shared/reference/kepler-go) is compiled with a small driver (kepler_go/) and given each artefact
of real pipelines the way Kepler gets it: as its init file, from an init URL (our server's
`/model-weights/...`), and from our model server's `POST /model` with the very `ModelRequest` body
that version builds. Kepler builds its predictors itself (trainer name, every component); its power on
real feature rows must equal our `estimate` within 1e-9 relative, with no decode error, no
invalid-weights error and no panic. Which artefact each version reads is in docs/contracts.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conformance import harness, kepler
from tests.conformance.harness import TALLY, Model

pytestmark = [pytest.mark.conformance, pytest.mark.usefixtures("drivers")]


def weight_models(all_models: list[Model]) -> list[Model]:
    return [m for m in all_models if m.weight_json.exists() or m.beside_json.exists()]


def base_case(model: Model, case_id: str, trainer: str) -> dict:
    rows, _ = model.expected
    return {"id": case_id, "mode": "regressor", "output_type": model.output_type,
            "source": harness.KEPLER_SOURCE[model.source], "trainer": trainer, "features": model.kepler_features,
            "system_features": harness.SYSTEM_FEATURES, "system_values": harness.SYSTEM_VALUES,
            "rows": rows.tolist(), "request_spec": harness.NODE_SPEC, "discovered_spec": harness.NODE_SPEC}


def check(version: str, path: str, cases: list[tuple[dict, Model]]) -> None:
    results = kepler.run(version, [c for c, _ in cases])
    problems = []
    for case, model in cases:
        result = results[case["id"]]
        found = harness.compare(case["id"], result, model.expected[1])
        if not found and case["mode"] == "regressor":
            found = predictor_problems(case["id"], version, model, result)
        harness.TALLY.record(version, path, harness.family(model.trainer), "fails" if found else "works")
        TALLY.artefacts.add(case.get("artefact", case["id"]))
        problems += found
    assert not problems, f"{len(problems)} of {len(cases)} cases failed:\n" + "\n".join(problems[:25])


PREDICTOR = {"LogarithmicRegressionTrainer": "*regressor.LogarithmicPredictor",
             "LogisticRegressionTrainer": "*regressor.LogisticPredictor",
             "ExponentialRegressionTrainer": "*regressor.ExponentialPredictor"}


def predictor_problems(case_id: str, version: str, model: Model, result: dict) -> list[str]:
    """Kepler built the predictor kind of the model's trainer for every component (0.7.12 after reading
    the trainer from model_name, or from the URL's file name)."""
    wanted = PREDICTOR.get(model.trainer, "*regressor.LinearPredictor")
    kinds = set(result["predictors"].values())
    if kinds != {wanted}:
        return [f"{case_id}: Kepler built {sorted(kinds)} for a {model.trainer} model"]
    if version == "v0.7.12" and model.trainer in PREDICTOR and result["trainer"] != model.trainer:
        return [f"{case_id}: Kepler 0.7.12 took the model for trainer {result['trainer']!r}"]
    return []


@pytest.mark.parametrize("version", kepler.VERSIONS)
def test_init_file(version: str, all_models: list[Model]) -> None:
    """`<P>_INIT_URL` unset, the weight file on disk: weight.json for 0.7.11 (its trainer set with
    `<P>_TRAINER`, as 0.7.11 takes it from nowhere else), `<model>.json` for 0.7.12 (which reads the
    trainer from its `model_name`), and weight.json of a linear model for 0.7.12 too."""
    cases = []
    for model in weight_models(all_models):
        files = [model.weight_json] if version == "v0.7.11" else [model.beside_json]
        if version == "v0.7.12" and model.trainer in harness.LINEAR_TRAINERS:
            files.append(model.weight_json)
        for file in files:
            case = base_case(model, f"{version} file {model.path} {file.name}", model.trainer)
            cases.append(({**case, "file": str(file), "artefact": str(file.relative_to(model.pipeline_dir.parent))},
                          model))
    assert cases
    check(version, "init file", cases)


@pytest.mark.parametrize("version", kepler.VERSIONS)
def test_init_url(version: str, all_models: list[Model], servers: dict[str, str]) -> None:
    """`<P>_INIT_URL` = our server's `/model-weights/<model path>.json`."""
    cases = []
    for model in weight_models(all_models):
        url = f"{servers[model.pipeline_dir.name]}/model-weights/{model.path}.json"
        case = base_case(model, f"{version} url {model.path}", model.trainer)
        cases.append(({**case, "url": url, "artefact": f"GET /model-weights/{model.path}.json"}, model))
    check(version, "init URL", cases)


@pytest.mark.parametrize("version", kepler.VERSIONS)
def test_model_server(version: str, all_models: list[Model], servers: dict[str, str]) -> None:
    """`MODEL_SERVER_ENABLE=true`: Kepler POSTs its own request for each feature group's features and
    each trainer it can be configured with (none = the server's choice). Whatever the server answers
    must load and compute our power; when it answers nothing, Kepler must fail cleanly (no panic)."""
    by_path = {m.path: m for m in all_models}
    groups = {(m.pipeline_dir.name, m.source, m.output_type, m.group): m for m in all_models}
    cases, refused = [], []
    for (pipeline, _, _, _), model in sorted(groups.items()):
        for trainer in ("",) + harness.LINEAR_TRAINERS[:1] + harness.CURVE_TRAINERS:
            body = harness.kepler_request(version, model, trainer)
            # Which model the server gives this body (asked once here, then Kepler asks itself).
            answer = httpx.post(f"{servers[pipeline]}/model", json=body, timeout=30)
            case = {**base_case(model, f"{version} server {model.path} trainer={trainer!r}", trainer),
                    "endpoint": f"{servers[pipeline]}/model"}
            if answer.status_code != 200:
                assert 400 <= answer.status_code < 500, answer.text
                refused.append(case)
                continue
            chosen = by_path[answer.headers["X-Model-Path"]]
            # The chosen model may come from a smaller group: Kepler sends its rows in its own order.
            cases.append(({**case, "features": model.kepler_features, "rows": harness.rows_for(model, chosen),
                           "artefact": f"POST /model -> {chosen.path}"}, chosen))
    assert cases
    check(version, "model server", cases)
    results = kepler.run(version, refused) if refused else {}
    for case in refused:
        result = results[case["id"]]
        assert not result.get("panic"), f"{case['id']}: {result['panic']}"
        assert result.get("error"), f"{case['id']}: Kepler loaded a model the server refused"


def test_served_machine_spec_names_the_processor_as_kepler_does(published: dict[str, Path],
                                                                servers: dict[str, str]) -> None:
    """0.7.12 sends its processor normalised by its own spec.go: the node-type index and every served
    machine_spec must use that same name (from the raw CPU string the pipeline was trained with)."""
    kepler_name = kepler.run("v0.7.12", [{"id": "p", "mode": "processor",
                                          "processor": harness.RAW_SPEC["processor"]}])["p"]["processor"]
    assert kepler_name == harness.NODE_SPEC["processor"]
    index = json.loads((published["dump2023"] / "dump2023" / "node_type_index.json").read_text())
    assert {entry["attrs"]["processor"] for entry in index.values()} == {kepler_name}
    body = harness.kepler_request("v0.7.12", next(m for m in harness.models(published["dump2023"])
                                          if m.trainer == "SGDRegressorTrainer"), "SGDRegressorTrainer")
    answer = httpx.post(f"{servers['dump2023']}/model", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["machine_spec"]["processor"] == kepler_name
    beside = json.loads(next((published["dump2023"] / "dump2023").glob("*/*/*/SGDRegressorTrainer_0.json")).read_text())
    assert beside["machine_spec"]["processor"] == kepler_name
