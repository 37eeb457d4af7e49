"""What keeps a GitOps tool from seeing drift: deterministic renders, no live-only fields in Git, and
CRDs whose status lives in its own subresource (re-apply is tested for real in
tests/integration/manifests/test_apiserver.py)."""

from __future__ import annotations

from typing import Any

import pytest

from .test_render import INSTALLS, KUSTOMIZATIONS, MANIFESTS, kustomize, render, render_text

LIVE_ONLY_METADATA = {"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
                      "selfLink", "deletionTimestamp", "generateName"}


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_rendering_is_deterministic(path: str) -> None:
    assert kustomize(MANIFESTS / path) == render_text(path)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_git_carries_no_live_only_fields(path: str) -> None:
    for obj in render(path):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert "status" not in obj, f"{where}: status belongs to the cluster"
        assert not LIVE_ONLY_METADATA & set(obj["metadata"]), where
        annotations = obj["metadata"].get("annotations") or {}
        assert not [a for a in annotations if a.startswith(("kopf.", "modeltraining.kepler.io/",
                                                             "kubectl.kubernetes.io/last-applied"))], where


@pytest.mark.parametrize("path", INSTALLS)
def test_crds_keep_status_in_its_own_subresource(path: str) -> None:
    for crd in (o for o in render(path) if o["kind"] == "CustomResourceDefinition"):
        for version in crd["spec"]["versions"]:
            if not version["served"]:
                continue
            assert version.get("subresources", {}).get("status") == {}, crd["metadata"]["name"]
            status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            assert status["observedGeneration"]["type"] == "integer"
            conditions = status["conditions"]
            assert conditions["x-kubernetes-list-type"] == "map"
            assert conditions["x-kubernetes-list-map-keys"] == ["type"]
            assert set(conditions["items"]["properties"]["status"]["enum"]) == {"True", "False", "Unknown"}


def test_workloads_set_what_the_api_server_would_otherwise_default_differently() -> None:
    """Fields whose absence makes an apply-based diff flap between tools: set them explicitly."""
    def check(obj: dict[str, Any]) -> None:
        spec = obj["spec"]
        assert "replicas" in spec and "revisionHistoryLimit" in spec, obj["metadata"]["name"]
        for container in spec["template"]["spec"]["containers"]:
            assert container.get("imagePullPolicy"), container["name"]
            for port in container.get("ports", []):
                assert port.get("protocol") == "TCP", container["name"]
    for path in INSTALLS:
        for obj in render(path):
            if obj["kind"] == "Deployment":
                check(obj)
