"""The exporter's DaemonSet example (manifests/examples/kepler-model-exporter.yaml): valid for the oldest and
newest Kubernetes the project supports, locked down (restricted pod security but for the one read-only
hostPath, the host's /proc), resources set, and its Prometheus scrape job valid for a real promtool."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.support import checkout

from .test_render import K8S_VERSIONS

EXAMPLE = checkout.ROOT / "manifests" / "examples" / "kepler-model-exporter.yaml"


def _objects() -> dict[str, dict]:
    return {o["kind"]: o for o in yaml.safe_load_all(EXAMPLE.read_text())}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_objects_pass_strict_schema_validation(version: str) -> None:
    import kubernetes_validate

    for obj in _objects().values():
        kubernetes_validate.validate(obj, version, strict=True)


def test_daemonset_is_locked_down_with_procfs_read_only() -> None:
    pod = _objects()["DaemonSet"]["spec"]["template"]["spec"]
    assert not pod.get("hostPID") and not pod.get("hostNetwork") and not pod.get("hostIPC")
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0 and ctx["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False and pod["nodeSelector"]
    host = [v for v in pod["volumes"] if "hostPath" in v]
    assert [v["hostPath"]["path"] for v in host] == ["/proc"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert all(mounts[v["name"]]["readOnly"] is True for v in host)
    procfs = container["args"][container["args"].index("--procfs") + 1]
    assert procfs == mounts[host[0]["name"]]["mountPath"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {p["path"] for p in (container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"])} == {
        "/readyz", "/healthz"}


def test_the_exporter_command_accepts_the_manifests_arguments() -> None:
    from kepler_trainer.cli import build_parser

    container = _objects()["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "exporter"  # the image's entry point is `kepler-model`
    args = build_parser("exporter").parse_args(container["args"])
    assert args.interval == 5.0 and args.port == container["ports"][0]["containerPort"]


@pytest.mark.parametrize("key", ["scrape.yaml", "scrape-vm.yaml"])
def test_scrape_jobs_are_valid_for_promtool(tmp_path, key: str) -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (hack/install.sh --test installs Debian's prometheus)")
    config = tmp_path / "prometheus.yml"
    config.write_text(_objects()["ConfigMap"]["data"][key])
    proc = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    if "field kubernetes_sd_configs not found" in proc.stdout + proc.stderr:
        pytest.skip("this promtool is built without Kubernetes service discovery (Debian's is)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
