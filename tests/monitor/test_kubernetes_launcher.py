"""The cluster path of the retraining trigger through the real Kubernetes Python client, against a fake
API server at the HTTP boundary (no cluster here). The Job body itself is validated against the
Kubernetes schema with the chart's own CronJob in tests/charts/test_monitor_retraining_job.py."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from monitor.retraining import TRIGGERED_BY_LABEL, KubernetesLauncher, job_from_cronjob

NAMESPACE = "mlops"
CRONJOB = {
    "apiVersion": "batch/v1",
    "kind": "CronJob",
    "metadata": {"name": "mlops-trainer-retrain", "namespace": NAMESPACE, "uid": "c0ffee", "labels": {"app": "t"}},
    "spec": {
        "schedule": "0 3 * * 0",
        "jobTemplate": {
            "metadata": {"labels": {"app.kubernetes.io/component": "trainer"}},
            "spec": {
                "backoffLimit": 1,
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/component": "trainer"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "trainer", "image": "trainer:1", "command": ["python", "-m", "trainer"]}
                        ],
                    },
                },
            },
        },
    },
}


def job(name: str, active: int, owner: str | None) -> dict:
    owners = [{"apiVersion": "batch/v1", "kind": "CronJob", "name": owner, "uid": "c0ffee"}] if owner else []
    return {"metadata": {"name": name, "ownerReferences": owners}, "status": {"active": active}}


class FakeApi:
    def __init__(self) -> None:
        self.jobs: list[dict] = []
        self.created: list[dict] = []


@pytest.fixture
def fake_api() -> Iterator[tuple[FakeApi, KubernetesLauncher]]:
    state = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs/mlops-trainer-retrain":
                self._answer(200, CRONJOB)
            elif self.path.startswith(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"):
                self._answer(200, {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": state.jobs})
            else:
                self._answer(404, {"kind": "Status", "code": 404, "message": f"{self.path} not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs":
                self._answer(404, {"kind": "Status", "code": 404})
                return
            state.created.append(body)
            self._answer(201, body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    configuration = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
    api = client.BatchV1Api(client.ApiClient(configuration))
    try:
        yield state, KubernetesLauncher("mlops-trainer-retrain", NAMESPACE, api)
    finally:
        server.shutdown()


def test_a_job_from_the_cronjob_template_carries_the_trigger(fake_api):
    state, launcher = fake_api
    started = launcher.start({"retraining.reason": "drift", "retraining.drift_streak": "3"})
    assert len(state.created) == 1
    body = state.created[0]
    assert started == f"Job {NAMESPACE}/{body['metadata']['name']}"
    assert body == job_from_cronjob(
        CRONJOB, body["metadata"]["name"], {"retraining.reason": "drift", "retraining.drift_streak": "3"}
    )
    trainer = body["spec"]["template"]["spec"]["containers"][0]
    assert trainer["args"] == ["--no-promote", "--tag=retraining.drift_streak=3", "--tag=retraining.reason=drift"]
    assert body["metadata"]["ownerReferences"][0]["name"] == "mlops-trainer-retrain"
    assert body["spec"]["template"]["metadata"]["labels"][TRIGGERED_BY_LABEL] == "monitor"
    assert body["spec"]["backoffLimit"] == 1  # the template's own settings are kept
    assert len(body["metadata"]["name"]) <= 63


def test_running_means_an_active_job_of_that_cronjob(fake_api):
    state, launcher = fake_api
    assert not launcher.running()
    state.jobs = [job("other", 1, "some-other-cronjob"), job("old", 0, "mlops-trainer-retrain")]
    assert not launcher.running()
    state.jobs.append(job("mlops-trainer-retrain-auto-1", 1, "mlops-trainer-retrain"))
    assert launcher.running()


def test_a_cronjob_without_a_trainer_container_is_refused():
    broken = json.loads(json.dumps(CRONJOB))
    broken["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["name"] = "other"
    with pytest.raises(ValueError, match="no container named trainer"):
        job_from_cronjob(broken, "x", {})
