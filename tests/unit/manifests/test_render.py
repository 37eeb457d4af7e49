"""Every kustomization renders with a real kustomize, and what it renders is valid.

Rendering uses `kubectl kustomize` (kustomize v5 embedded in kubectl >= 1.27). Built-in kinds are
validated offline against the Kubernetes OpenAPI schemas bundled in kubernetes-validate, in strict
mode (unknown fields fail). Custom resources are validated against the project's own CRD schemas
(jsonschema: an approximation, the real API server test is tests/integration/manifests/test_apiserver.py)
and against the pydantic models the operator validates with.

The render helpers here are imported by the other test_manifests_* / test_gitops_* modules.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import pytest
import yaml

from tests.support import checkout

ROOT = checkout.ROOT
MANIFESTS = ROOT / "manifests"
CRD_FILES = [ROOT / "crds" / "trainingpipelines.yaml", ROOT / "crds" / "energyestimations.yaml"]
KUSTOMIZATIONS = ["base", "overlays/namespace-scoped", "overlays/kepler-integration", "samples"]
INSTALLS = ["base", "overlays/namespace-scoped", "overlays/kepler-integration"]
# Oldest and newest Kubernetes releases the manifests are checked against (CEL rules in the CRDs
# need >= 1.25; podFailurePolicy in the operator's Jobs is GA in 1.31).
K8S_VERSIONS = ["1.31.0", "1.37.0"]
GROUP = "modeltraining.kepler.io"
NAMESPACE = "kepler-model"


@functools.lru_cache(maxsize=1)
def kubectl_kustomize_available() -> bool:
    if not shutil.which("kubectl"):
        return False
    out = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True).stdout
    match = re.search(r"Kustomize Version: v(\d+)", out)
    return bool(match and int(match.group(1)) >= 5)


def require_renderer() -> None:
    """Skip (with the reason) when no kustomize v5 is at hand or the CRDs are not generated yet."""
    if not kubectl_kustomize_available():
        pytest.skip("kubectl with embedded kustomize v5 is not installed")
    missing = [p.name for p in CRD_FILES if not p.exists()]
    if missing:
        pytest.skip(f"CRDs not generated yet (crds/{', crds/'.join(missing)}): run the operator's crdgen")


Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def kustomize(path: Path) -> str:
    """`kubectl kustomize <path>`, uncached."""
    proc = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"kustomize failed for {path}:\n{proc.stderr}")
    return proc.stdout


@functools.cache
def _render(path: str) -> tuple[str, list[dict[str, Any]]]:
    text = kustomize(MANIFESTS / path)
    return text, [doc for doc in yaml.load_all(text, Loader=Loader) if doc]


def render_text(path: str) -> str:
    """The YAML stream `kubectl kustomize manifests/<path>` prints (cached per path)."""
    require_renderer()
    return _render(path)[0]


def render(path: str) -> list[dict[str, Any]]:
    """The objects of manifests/<path>, as fresh copies (callers may mutate them)."""
    require_renderer()
    return copy.deepcopy(_render(path)[1])


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def crd_schema(kind: str) -> dict[str, Any]:
    for path in CRD_FILES:
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            version = next(v for v in crd["spec"]["versions"] if v["storage"])
            return version["schema"]["openAPIV3Schema"]
    raise AssertionError(f"no CRD for {kind}")


# ------------------------------------------------------------------------------------------ tests

@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomization_renders_uniquely_named_objects(path: str) -> None:
    objects = render(path)
    assert objects, f"manifests/{path} rendered nothing"
    keys = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"duplicate objects in manifests/{path}"


def test_every_kustomization_folder_is_tested() -> None:
    found = sorted(str(p.parent.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("kustomization.yaml"))
    assert found == sorted(KUSTOMIZATIONS)


@pytest.mark.parametrize("path", INSTALLS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_kinds_pass_strict_schema_validation(path: str, version: str) -> None:
    import kubernetes_validate

    builtin = [o for o in render(path) if GROUP not in o["apiVersion"]]
    for obj in builtin:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} in manifests/{path} (k8s {version}): {exc}")


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """The validation above is not vacuous: an unknown field in a container fails it."""
    import kubernetes_validate

    deployment = find(render("base"), "Deployment", "kepler-model-operator")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("path", INSTALLS)
def test_install_ships_both_crds_and_namespaces_its_objects(path: str) -> None:
    objects = render(path)
    crds = {o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition"}
    assert crds == {f"trainingpipelines.{GROUP}", f"energyestimations.{GROUP}"}
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for obj in objects:
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"], obj["metadata"]["name"]
        elif obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "kepler-cfm":
            assert obj["metadata"]["namespace"] == "kepler"  # Kepler's own namespace
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("path", INSTALLS)
def test_operator_settings_match_the_rendered_objects(path: str) -> None:
    """The operator's env names real settings, its trainer image is the trainer image of the model
    server's release (the server runs its own slim image), and the PVC and ServiceAccount it gives Jobs
    exist in the install."""
    from kepler_operator.settings import OperatorSettings

    objects = render(path)
    operator = find(objects, "Deployment", "kepler-model-operator")["spec"]["template"]["spec"]
    server = find(objects, "Deployment", "kepler-model-server")["spec"]["template"]["spec"]
    env = env_of(operator["containers"][0])
    fields = {f"KEPLER_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    assert set(env) <= fields, f"unknown settings: {set(env) - fields}"
    trainer_image, server_image = env["KEPLER_OPERATOR_TRAINER_IMAGE"], server["containers"][0]["image"]
    assert trainer_image.partition(":")[0] == "kepler-model-trainer"
    assert server_image.partition(":")[0] == "kepler-model-server"
    assert trainer_image.partition(":")[2] == server_image.partition(":")[2]  # one release
    find(objects, "PersistentVolumeClaim", env["KEPLER_OPERATOR_DEFAULT_PVC"])
    find(objects, "ServiceAccount", env["KEPLER_OPERATOR_JOB_SERVICE_ACCOUNT"])
    assert env["KEPLER_OPERATOR_LIVENESS_ENDPOINT"].endswith(operator["containers"][0]["livenessProbe"]["httpGet"]
                                                              ["path"])
    plain = {k: v for k, v in env.items() if isinstance(v, str)}
    settings = OperatorSettings(**{k.removeprefix("KEPLER_OPERATOR_").lower(): v for k, v in plain.items()})
    assert settings.run_as_user == operator["securityContext"]["runAsUser"]


def test_namespace_scoped_install_watches_only_its_namespace() -> None:
    base = render("base")
    scoped = render("overlays/namespace-scoped")
    assert not [o for o in scoped if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    env = env_of(find(scoped, "Deployment", "kepler-model-operator")["spec"]["template"]["spec"]["containers"][0])
    assert env["KEPLER_OPERATOR_NAMESPACES"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    base_env = env_of(find(base, "Deployment", "kepler-model-operator")["spec"]["template"]["spec"]["containers"][0])
    assert base_env["KEPLER_OPERATOR_NAMESPACES"] == ""  # every namespace
    assert find(scoped, "Role", "kepler-model-operator")["rules"] == \
        find(base, "ClusterRole", "kepler-model-operator")["rules"]


@pytest.mark.parametrize("kind,file", [("TrainingPipeline", "trainingpipeline.yaml"),
                                       ("EnergyEstimation", "energyestimation.yaml")])
def test_samples_match_the_crd_schema_and_the_pydantic_model(kind: str, file: str) -> None:
    from kepler_operator import api

    require_renderer()
    sample = yaml.safe_load((MANIFESTS / "samples" / file).read_text())
    assert sample["kind"] == kind and sample["apiVersion"] == api.API_VERSION
    assert "status" not in sample
    # OpenAPI v3.0 schemas are draft-4 shaped (boolean exclusiveMinimum).
    jsonschema.Draft4Validator(crd_schema(kind)).validate(sample)
    resource = next(r for r in api.RESOURCES if r.kind == kind)
    resource.spec.model_validate(sample["spec"])
    broken = {**sample, "spec": {**sample["spec"], "unexpected": 1}}
    with pytest.raises(pydantic.ValidationError):
        resource.spec.model_validate(broken["spec"])


def test_samples_render_in_the_install_namespace() -> None:
    samples = render("samples")
    assert {o["kind"] for o in samples} == {"TrainingPipeline", "EnergyEstimation"}
    assert {o["metadata"]["namespace"] for o in samples} == {NAMESPACE}
    pipeline = find(samples, "TrainingPipeline", "local-v0-7")
    estimation = find(samples, "EnergyEstimation", "last-hour")
    assert estimation["spec"]["model"]["pipelineRef"]["name"] == pipeline["metadata"]["name"]
    assert pipeline["spec"]["storage"]["pvcName"] == find(render("base"), "PersistentVolumeClaim",
                                                          "kepler-models")["metadata"]["name"]


# ------------------------------------------------------------------------------ Kepler integration

WEIGHT_TRAINERS = {"SGDRegressorTrainer", "LogarithmicRegressionTrainer", "LogisticRegressionTrainer",
                   "ExponentialRegressionTrainer"}
MODEL_CONFIG_PREFIXES = {f"{level}_{part}" for level in ("NODE", "CONTAINER", "PROCESS")
                         for part in ("TOTAL", "COMPONENTS")}
MODEL_CONFIG_SUFFIXES = {"ESTIMATOR", "LOCAL_REGRESSOR", "INIT_URL", "TRAINER", "FILTERS"}


def _server_routes() -> list[Any]:
    from kepler_model_server.routes import build_router

    return build_router(lambda request: None).routes


def _served(method: str, path: str) -> bool:
    from starlette.routing import Match

    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    return any(route.matches(scope)[0] == Match.FULL for route in _server_routes())


def _kepler_config() -> dict[str, str]:
    return find(render("overlays/kepler-integration"), "ConfigMap", "kepler-cfm")["data"]


def test_kepler_reaches_the_rendered_model_server_service() -> None:
    objects = render("overlays/kepler-integration")
    service = find(objects, "Service", "kepler-model-server")
    port = service["spec"]["ports"][0]["port"]
    expected = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{port}"
    data = _kepler_config()
    assert data["MODEL_SERVER_ENABLE"] == "true"
    assert data["MODEL_SERVER_URL"] == expected
    assert _served("POST", data["MODEL_SERVER_MODEL_REQ_PATH"])
    assert _served("GET", data["MODEL_SERVER_MODEL_LIST_PATH"])
    for token in data["MODEL_CONFIG"].split():
        key, _, value = token.partition("=")
        if key.endswith("_INIT_URL"):
            assert value.startswith(expected + "/"), value


def test_model_config_is_well_formed_and_names_weight_capable_trainers() -> None:
    tokens = _kepler_config()["MODEL_CONFIG"].split()  # Kepler splits on whitespace
    assert tokens
    for token in tokens:
        key, sep, value = token.partition("=")
        assert sep and value, token
        prefix = next((p for p in MODEL_CONFIG_PREFIXES if key.startswith(p + "_")), None)
        assert prefix and key[len(prefix) + 1:] in MODEL_CONFIG_SUFFIXES, key
        if key.endswith("_TRAINER"):
            assert value in WEIGHT_TRAINERS, value


def test_init_urls_name_weight_files_the_sample_pipeline_publishes() -> None:
    """Each pinned URL is a /model-weights route of the server, for a model the sample trains."""
    from urllib.parse import urlsplit

    spec = find(render("samples"), "TrainingPipeline", "local-v0-7")["spec"]
    urls = [t.partition("=")[2] for t in _kepler_config()["MODEL_CONFIG"].split() if "_INIT_URL=" in t]
    assert len(urls) == 2
    for url in urls:
        path = urlsplit(url).path
        assert _served("GET", path), path
        route, pipeline, source, output_type, group, model = path.strip("/").split("/")
        assert route == "model-weights" and pipeline == spec["pipelineName"]
        assert source in spec["energySources"] and group in spec["featureGroups"]
        assert output_type == "AbsPower"  # Kepler's node estimators ask for absolute power
        trainer, _, node_type = model.removesuffix(".json").rpartition("_")
        assert trainer in spec["absTrainers"] and trainer in WEIGHT_TRAINERS and node_type == "0"


def test_probe_paths_are_routes_of_the_model_server() -> None:
    container = find(render("base"), "Deployment", "kepler-model-server")["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        assert _served("GET", container[probe]["httpGet"]["path"]), probe
