"""The operator's Kubernetes boundary: API answers translated once, into what the handlers understand.

A real HTTP server on a free port answers like the API server would (Status documents with 409,
422, 403, 500), and the operator's `Kube` client talks to it through a kubeconfig.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kopf
import pytest
import yaml

from kepler_operator.errors import JobRejectedError
from kepler_operator.kube import Kube

JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "demo-train-g1", "namespace": "ns"},
       "spec": {"template": {"spec": {"containers": [{"name": "trainer", "image": "x"}]}}}}


class FakeAPI(ThreadingHTTPServer):
    """Answers every POST with `status` and a Status body; GET returns the existing Job."""

    def __init__(self, status: int, message: str = "") -> None:
        self.answer, self.message, self.requests = status, message, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(("POST", self.path, body))
                if server.answer == 201:
                    self._reply(201, {**body, "metadata": {**body["metadata"], "uid": "new"}})
                else:
                    self._reply(server.answer, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                "message": server.message, "code": server.answer})

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(("GET", self.path, None))
                self._reply(200, {**JOB, "metadata": {**JOB["metadata"], "uid": "existing"}})

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def kube(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kube:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{self.server_address[1]}"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        return Kube(connections=2)


@pytest.fixture
def api_server(request):
    status, message = request.param
    server = FakeAPI(status, message)
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("api_server", [(201, "")], indirect=True)
def test_a_created_job_is_returned(api_server, tmp_path, monkeypatch):
    created = api_server.kube(tmp_path, monkeypatch).create_job(JOB)
    assert created["metadata"]["uid"] == "new"
    assert api_server.requests[0][:2] == ("POST", "/apis/batch/v1/namespaces/ns/jobs")


@pytest.mark.parametrize("api_server", [(409, "already exists")], indirect=True)
def test_an_existing_job_of_the_same_name_is_the_same_run(api_server, tmp_path, monkeypatch):
    existing = api_server.kube(tmp_path, monkeypatch).create_job(JOB)
    assert existing["metadata"]["uid"] == "existing"
    assert [r[:2] for r in api_server.requests] == [("POST", "/apis/batch/v1/namespaces/ns/jobs"),
                                                    ("GET", "/apis/batch/v1/namespaces/ns/jobs/demo-train-g1")]


@pytest.mark.parametrize("api_server", [(403, 'jobs "demo-train-g1" is forbidden: exceeded quota'),
                                        (422, "violates PodSecurity \"restricted:latest\"")], indirect=True)
def test_a_refused_job_becomes_job_rejected_with_the_servers_message(api_server, tmp_path, monkeypatch):
    with pytest.raises(JobRejectedError) as caught:
        api_server.kube(tmp_path, monkeypatch).create_job(JOB)
    assert api_server.message in str(caught.value) and caught.value.reason == "JobRejected"


@pytest.mark.parametrize("api_server", [(500, "etcdserver: request timed out"), (429, "slow down")],
                         indirect=True)
def test_a_transient_failure_is_retried_by_kopf(api_server, tmp_path, monkeypatch):
    with pytest.raises(kopf.TemporaryError):
        api_server.kube(tmp_path, monkeypatch).create_job(JOB)


@pytest.mark.parametrize("api_server", [(500, "boom")], indirect=True)
def test_a_lost_event_never_fails_a_reconcile(api_server, tmp_path, monkeypatch):
    involved = {"apiVersion": "modeltraining.kepler.io/v1alpha1", "kind": "TrainingPipeline",
                "metadata": {"name": "demo", "namespace": "ns", "uid": "u"}}
    api_server.kube(tmp_path, monkeypatch).post_event(involved, "Normal", "RunStarted", "started")
    method, path, body = api_server.requests[0]
    assert path == "/api/v1/namespaces/ns/events" and body["involvedObject"]["uid"] == "u"
    assert body["metadata"]["name"].startswith("demo.") and body["reason"] == "RunStarted"
