"""A test stand-in for the kubelet and the Job controller, for API servers where nothing runs pods.

It polls the Jobs of one namespace that carry a label selector, creates a Pod for each new Job, and
either runs the Job's real command as a local subprocess or lets the test finish the pod by hand.
When a pod ends it writes what a real cluster writes: the pod's container status with exit code,
reason and termination message (at most 4096 bytes), and the Job's counters and conditions
(`Complete`, or `Failed` with `BackoffLimitExceeded`, `PodFailurePolicy` or `DeadlineExceeded`).

Running a command locally maps the container's paths onto folders, by rewriting arguments:

* each `persistentVolumeClaim` volume's mountPath -> `volumes[claimName]` (a local folder);
* each `emptyDir` mountPath and `$HOME` -> a fresh temporary folder per pod;
* each `secret` mountPath -> a temporary folder holding the Secret's keys, read from the API;
* the container's `terminationMessagePath` -> a temporary file, read back after the exit;
* the command's first word, when it is `kepler-model`, -> this Python's `kepler_trainer.cli`;
and maps the local folders in the termination message back to the container's paths.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

MAX_MESSAGE = 4096
Outcome = tuple[int, str]
"""(exit code, termination message)."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _exit_reason(code: int) -> str:
    return "Completed" if code == 0 else "Error"


@dataclasses.dataclass
class PodRun:
    """One pod the stand-in created for a Job."""

    job: dict[str, Any]
    pod_name: str
    attempt: int


class Kubelet:
    """Plays kubelet + Job controller for the Jobs matching `selector` in `namespace`.

    mode "run": run each pod's command locally; "manual": leave pods running until `finish()`;
    or a callable job -> (exit code, message) that finishes each pod at once.
    """

    def __init__(self, api: client.ApiClient, namespace: str, selector: str, *,
                 volumes: dict[str, Path] | None = None, mode: str | Callable[[dict[str, Any]], Outcome] = "run",
                 poll: float = 0.2, env: dict[str, str] | None = None) -> None:
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.namespace, self.selector, self.mode, self.poll = namespace, selector, mode, poll
        self.volumes = volumes or {}
        self.env = env or {}
        self.seen: dict[str, PodRun] = {}
        self.finished: set[str] = set()
        self.logs: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    # ------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Kubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for worker in self._workers:
            worker.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                jobs = self.batch.list_namespaced_job(self.namespace, label_selector=self.selector,
                                                      _preload_content=False)
                for job in json.loads(jobs.data)["items"]:
                    name = job["metadata"]["name"]
                    if name not in self.seen and not self._job_done(job):
                        self._start_pod(job, attempt=1)
            except ApiException:
                pass  # the server may be restarting; try again at the next poll
            self._stop.wait(self.poll)

    @staticmethod
    def _job_done(job: dict[str, Any]) -> bool:
        return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                   for c in (job.get("status") or {}).get("conditions") or [])

    # ---------------------------------------------------------------------------------- pods
    def _start_pod(self, job: dict[str, Any], attempt: int) -> None:
        meta = job["metadata"]
        template = job["spec"]["template"]
        pod_name = f"{meta['name']}-{secrets.token_hex(3)}"
        labels = {**(template.get("metadata") or {}).get("labels", {}), "job-name": meta["name"],
                  "batch.kubernetes.io/job-name": meta["name"]}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": pod_name, "namespace": self.namespace, "labels": labels,
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                                 "uid": meta["uid"], "controller": True}]},
               "spec": template["spec"]}
        self.core.create_namespaced_pod(self.namespace, pod, _preload_content=False)
        container = template["spec"]["containers"][0]["name"]
        self._patch_pod(pod_name, {"phase": "Running", "startTime": _now(), "containerStatuses": [
            {"name": container, "image": template["spec"]["containers"][0].get("image", ""), "imageID": "",
             "ready": True, "restartCount": 0, "state": {"running": {"startedAt": _now()}}}]})
        status = {"active": 1, "startTime": (job.get("status") or {}).get("startTime") or _now()}
        self.batch.patch_namespaced_job_status(meta["name"], self.namespace, {"status": status})
        run = PodRun(job=job, pod_name=pod_name, attempt=attempt)
        with self._lock:
            self.seen[meta["name"]] = run
        if self.mode == "manual":
            return
        worker = threading.Thread(target=self._execute, args=(run,), daemon=True)
        self._workers.append(worker)
        worker.start()

    def _execute(self, run: PodRun) -> None:
        if callable(self.mode):
            code, message = self.mode(run.job)
        else:
            code, message = self._run_command(run)
        self._finish_pod(run, code, message)

    def finish(self, job_name: str, exit_code: int, message: str = "") -> None:
        """Finish the running pod of a Job (mode "manual")."""
        deadline = time.monotonic() + 30
        while job_name not in self.seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no pod was started for Job {job_name}")
            time.sleep(0.05)
        self._finish_pod(self.seen[job_name], exit_code, message)

    def _patch_pod(self, name: str, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(name, self.namespace, {"status": status}, _preload_content=False)

    def _finish_pod(self, run: PodRun, code: int, message: str) -> None:
        job = run.job
        spec = job["spec"]
        container = spec["template"]["spec"]["containers"][0]["name"]
        message = message.encode()[:MAX_MESSAGE].decode(errors="ignore")
        terminated = {"exitCode": code, "reason": _exit_reason(code), "message": message,
                      "startedAt": _now(), "finishedAt": _now()}
        self._patch_pod(run.pod_name, {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
            {"name": container, "image": spec["template"]["spec"]["containers"][0].get("image", ""), "imageID": "",
             "ready": False, "restartCount": 0, "state": {"terminated": terminated}}]})
        name = job["metadata"]["name"]
        if code == 0:
            self._set_job(name, {"active": 0, "succeeded": 1, "completionTime": _now()}, "Complete", "Completed",
                          "")
            return
        if self._fails_job(spec, container, code):
            self._set_job(name, {"active": 0, "failed": run.attempt}, "Failed", "PodFailurePolicy",
                          f"Container {container} for pod {self.namespace}/{run.pod_name} failed with exit code "
                          f"{code} matching FailJob rule at index 0")
        elif run.attempt > int(spec.get("backoffLimit", 6)):
            self._set_job(name, {"active": 0, "failed": run.attempt}, "Failed", "BackoffLimitExceeded",
                          "Job has reached the specified backoff limit")
        else:
            self._start_pod(job, attempt=run.attempt + 1)

    @staticmethod
    def _fails_job(spec: dict[str, Any], container: str, code: int) -> bool:
        for rule in (spec.get("podFailurePolicy") or {}).get("rules") or []:
            codes = rule.get("onExitCodes")
            if rule.get("action") == "FailJob" and codes and codes.get("containerName", container) == container:
                inside = code in codes.get("values", [])
                if inside == (codes.get("operator") == "In"):
                    return True
        return False

    def _set_job(self, name: str, counters: dict[str, Any], cond: str, reason: str, message: str) -> None:
        conditions = [{"type": cond, "status": "True", "reason": reason, "message": message,
                       "lastProbeTime": _now(), "lastTransitionTime": _now()}]
        if cond == "Complete":
            conditions.insert(0, {**conditions[0], "type": "SuccessCriteriaMet"})
        else:
            conditions.insert(0, {**conditions[0], "type": "FailureTarget"})
        self.batch.patch_namespaced_job_status(name, self.namespace, {"status": {**counters,
                                                                                 "conditions": conditions}})
        with self._lock:
            self.finished.add(name)

    # ------------------------------------------------------------------------------- commands
    def _run_command(self, run: PodRun) -> Outcome:
        pod_spec = run.job["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        with tempfile.TemporaryDirectory(prefix="kubelet-") as tmp:
            root = Path(tmp)
            mapping = self._path_mapping(pod_spec, container, root)
            log = root / "termination-log"
            mapping[container.get("terminationMessagePath", "/dev/termination-log")] = str(log)
            command = [self._rewrite(arg, mapping) for arg in container.get("command", []) + container.get("args", [])]
            if command and command[0] == "kepler-model":
                command = [sys.executable, "-m", "kepler_trainer.cli", *command[1:]]
            env = {**os.environ, **self.env, **{e["name"]: self._rewrite(e.get("value", ""), mapping)
                                                for e in container.get("env", [])}}
            deadline = run.job["spec"].get("activeDeadlineSeconds")
            try:
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=deadline)
            except subprocess.TimeoutExpired:
                return 137, ""
            self.logs[run.pod_name] = done.stdout + done.stderr
            message = log.read_text(errors="ignore") if log.exists() else ""
            return done.returncode, self._unmap(message, mapping)

    def _path_mapping(self, pod_spec: dict[str, Any], container: dict[str, Any], root: Path) -> dict[str, str]:
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        mapping: dict[str, str] = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            local = root / mount["name"]
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if claim not in self.volumes:
                    raise KeyError(f"the kubelet stand-in has no folder for PVC {claim!r}")
                local = self.volumes[claim]
            elif "secret" in volume:
                local.mkdir()
                self._write_secret(volume["secret"], local)
            else:
                local.mkdir()
            mapping[mount["mountPath"]] = str(local)
        return mapping

    def _write_secret(self, source: dict[str, Any], folder: Path) -> None:
        secret = self.core.read_namespaced_secret(source["secretName"], self.namespace, _preload_content=False)
        data = json.loads(secret.data).get("data") or {}
        for item in source.get("items") or [{"key": k, "path": k} for k in data]:
            (folder / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))

    @staticmethod
    def _unmap(text: str, mapping: dict[str, str]) -> str:
        """Local folders back to the container's paths, as the program inside a pod would have printed."""
        for mount, local in sorted(mapping.items(), key=lambda kv: len(kv[1]), reverse=True):
            text = text.replace(local, mount)
        return text

    @staticmethod
    def _rewrite(arg: str, mapping: dict[str, str]) -> str:
        for prefix in sorted(mapping, key=len, reverse=True):
            if arg == prefix or arg.startswith(prefix + "/"):
                return mapping[prefix] + arg[len(prefix):]
        return arg


def kepler_model_available() -> str | None:
    """Why the trainer CLI cannot run here, or None."""
    try:
        import kepler_trainer.cli  # noqa: F401
    except ImportError as exc:
        return f"the trainer CLI is not importable yet: {exc}"
    return None
