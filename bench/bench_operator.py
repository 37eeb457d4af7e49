"""Operator throughput on a real API server: N TrainingPipelines applied at once.

    python bench/bench_operator.py [--count 200] [--repeat 1]

Starts the CRD apiserver on free ports (or uses $KUBECONFIG), applies the CRDs, starts the operator
(`python -m kepler_operator`) and measures, per repeat:

* jobs_s:    from the first create until all N Jobs exist (target: < 20 s);
* status_s:  from the moment the last Job is marked complete (this script plays the Job controller:
             a pod with the trainer's termination summary, then the Job's Complete condition)
             until all N statuses are Succeeded (target: < 30 s); status_from_first_s counts from
             the first completion (complete_s is how long marking all N took);
* rss_mb:    the operator's peak resident memory, sampled every 50 ms (target: < 200 MB).

Prints one line per repeat and the medians. Needs the CRD apiserver binaries (Kubernetes'
apiextensions-apiserver and etcd, in /opt/crd-apiserver-bin, built by hack/install.sh) or a KUBECONFIG.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.apiserver import OperatorProcess, Resources, ensure_namespace, kube_api, skip_reason  # noqa: E402

SUMMARY = json.dumps({"ok": True, "command": "train", "pipeline": "bench", "path": "/models/bench",
                      "archive": "/models/bench.zip", "models": 4, "best": [
                          {"energy_source": "rapl-sysfs", "output_type": "AbsPower", "feature_group": "BPFOnly",
                           "model_name": "LinearRegressionTrainer_0", "trainer": "LinearRegressionTrainer",
                           "mae": 1.0, "path": "rapl-sysfs/AbsPower/BPFOnly/LinearRegressionTrainer_0"}]})
SPEC = {"prometheus": {"url": "http://prometheus:9090"}, "window": {"intervalSeconds": 3600},
        "pipelineName": "bench"}


class PeakRSS(threading.Thread):
    """Samples a process's resident memory until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process, self.peak, self._halt = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            self._halt.wait(0.05)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def wait_until(check, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not happen within {timeout} s")


def complete(res: Resources, job: dict) -> None:
    """Play kubelet and Job controller for one Job: a finished pod with the summary, then Complete."""
    meta = job["metadata"]
    template = job["spec"]["template"]
    labels = {**template["metadata"]["labels"], "job-name": meta["name"], "batch.kubernetes.io/job-name": meta["name"]}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pod = f"{meta['name']}-p"
    res.core.create_namespaced_pod(res.namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "labels": labels},
        "spec": template["spec"]}, _preload_content=False)
    res.core.patch_namespaced_pod_status(pod, res.namespace, {"status": {"phase": "Succeeded", "containerStatuses": [
        {"name": "trainer", "image": "trainer", "imageID": "", "ready": False, "restartCount": 0,
         "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": SUMMARY,
                                  "finishedAt": now}}}]}}, _preload_content=False)
    res.batch.patch_namespaced_job_status(meta["name"], res.namespace, {"status": {
        "succeeded": 1, "startTime": now, "completionTime": now,
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}]}})


def count_succeeded(res: Resources) -> int:
    items = res.custom.list_namespaced_custom_object("modeltraining.kepler.io", "v1alpha1", res.namespace,
                                                     "trainingpipelines")["items"]
    return sum((i.get("status") or {}).get("phase") == "Succeeded" for i in items)


def one_run(kube, count: int) -> dict[str, float]:
    ns = ensure_namespace(kube, f"bench-{uuid.uuid4().hex[:6]}")
    res = Resources(kube, ns)
    operator = OperatorProcess(kube, ns, allowed_prometheus_urls=SPEC["prometheus"]["url"]).start()
    memory = PeakRSS(operator.proc.pid)
    memory.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            t0 = time.monotonic()
            # one pipeline each: resources publishing one location take turns (one writer per pipeline)
            list(pool.map(lambda i: res.create("TrainingPipeline", f"tp-{i:04d}",
                                               {**SPEC, "pipelineName": f"bench_{i:04d}"}), range(count)))
            applied = time.monotonic()
            jobs_done = wait_until(lambda: len(res.jobs()) >= count, 120, f"{count} Jobs")
            jobs = res.jobs()
            completing = time.monotonic()
            list(pool.map(lambda job: complete(res, job), jobs))
            completed = time.monotonic()
        statuses_done = wait_until(lambda: count_succeeded(res) >= count, 120, f"{count} Succeeded statuses")
        time.sleep(1)
        assert len(res.jobs()) == count, "a pipeline got a second Job"
    finally:
        rss = memory.stop()
        operator.close()
    return {"apply_s": applied - t0, "jobs_s": jobs_done - t0, "complete_s": completed - completing,
            "status_s": statuses_done - completed, "status_from_first_s": statuses_done - completing,
            "rss_mb": rss / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 2
    runs = []
    with kube_api() as kube:
        kube.apply_crds()
        for i in range(args.repeat):
            run = one_run(kube, args.count)
            runs.append(run)
            print(f"run {i + 1}: " + "  ".join(f"{k}={v:.2f}" for k, v in run.items()), flush=True)
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"median of {len(runs)} (count={args.count}): apply {median['apply_s']:.2f} s, "
          f"all Jobs {median['jobs_s']:.2f} s (target < 20), all Succeeded {median['status_s']:.2f} s after the "
          f"last completion (target < 30; {median['status_from_first_s']:.2f} s after the first), "
          f"operator peak RSS {median['rss_mb']:.0f} MB (target < 200)")
    ok = median["jobs_s"] < 20 and median["status_s"] < 30 and median["rss_mb"] < 200
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
