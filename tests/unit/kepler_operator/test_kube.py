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

from kepler_operator.errors import ApiUnavailableError, JobRejectedError, KubeApiError, PolicyDeniedError
from kepler_operator.kube import API_ERRORS, Kube

JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "demo-train-g1", "namespace": "ns"},
       "spec": {"template": {"spec": {"containers": [{"name": "trainer", "image": "x"}]}}}}


class FakeAPI(ThreadingHTTPServer):
    """Answers every POST, DELETE and PATCH with `status` and a Status body; GET returns the existing Job,
    or answers with `get_status` when one is given."""

    def __init__(self, status: int, message: str = "", get_status: int = 200) -> None:
        self.answer, self.message, self.get_answer, self.requests = status, message, get_status, []
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
                    self._failure(server.answer)

            def _failure(self, code: int) -> None:
                self._reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "message": server.message, "code": code})

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(("GET", self.path, None))
                if server.get_answer != 200:
                    self._failure(server.get_answer)
                else:
                    self._reply(200, {**JOB, "metadata": {**JOB["metadata"], "uid": "existing"}})

            def do_DELETE(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append(("DELETE", self.path, None))
                self._failure(server.answer) if server.answer >= 400 else self._reply(200, {})

            def do_PATCH(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append(("PATCH", self.path, None))
                self._failure(server.answer) if server.answer >= 400 else self._reply(200, {})

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
    server = FakeAPI(*request.param)
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


@pytest.mark.parametrize("api_server", [(500, "", 404)], indirect=True)
def test_a_missing_secret_has_no_labels(api_server, tmp_path, monkeypatch):
    assert api_server.kube(tmp_path, monkeypatch).secret_labels("ns", "token") is None


@pytest.mark.parametrize("api_server", [(500, 'secrets "token" is forbidden', 403)], indirect=True)
def test_a_secret_the_operator_may_not_read_is_a_policy_refusal(api_server, tmp_path, monkeypatch):
    with pytest.raises(PolicyDeniedError, match="is forbidden"):
        api_server.kube(tmp_path, monkeypatch).secret_labels("ns", "token")


@pytest.mark.parametrize("api_server", [(500, "", 503)], indirect=True)
def test_a_secret_read_that_fails_for_now_is_retried(api_server, tmp_path, monkeypatch):
    with pytest.raises(kopf.TemporaryError, match="reading Secret token: 503"):
        api_server.kube(tmp_path, monkeypatch).secret_labels("ns", "token")


@pytest.mark.parametrize("api_server", [(code, "why", code) for code in (400, 403, 409, 422, 429, 500)], indirect=True)
def test_every_call_translates_a_status_with_the_one_table(api_server, tmp_path, monkeypatch):
    kube = api_server.kube(tmp_path, monkeypatch)
    expected = API_ERRORS.get(api_server.answer, ApiUnavailableError)
    for call in (lambda: kube.delete_job("ns", "j"), lambda: kube.patch_status("TrainingPipeline", "ns", "t", {}),
                 lambda: kube.list_pods("ns", "a=b")):
        with pytest.raises(KubeApiError) as caught:
            call()
        assert type(caught.value) is expected and caught.value.status == api_server.answer
        assert caught.value.message == "why"


@pytest.mark.parametrize("api_server", [(404, "gone", 404)], indirect=True)
def test_deleting_or_patching_what_is_gone_is_fine(api_server, tmp_path, monkeypatch):
    kube = api_server.kube(tmp_path, monkeypatch)
    kube.delete_job("ns", "j")
    kube.patch_status("TrainingPipeline", "ns", "t", {"phase": "Pending"})
    assert [r[0] for r in api_server.requests] == ["DELETE", "PATCH"]
