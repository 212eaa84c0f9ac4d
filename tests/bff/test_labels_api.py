"""``POST /labels`` in-process (ASGI, no lifespan): validation errors that name the field, 503 when S3
does not answer (a closed port, nothing faked), and labels written to a real SeaweedFS's ground-truth table."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from bff.app import Platform, create_app
from bff.settings import Settings
from devstack.processes import free_port
from mlops_common.ground_truth import MAX_LABELS_PER_WRITE, load_labels

LABEL = {"applicant_id": 100002, "outcome": 1, "observed_at": "2026-11-01T00:00:00Z"}


def client_for(settings: Settings) -> httpx.AsyncClient:
    app = create_app(settings)
    # The route needs no Triton and no online store: only the settings.
    platform = Platform(settings, triton=None, router=None, online=None, logs=None, dependencies=None)  # type: ignore[arg-type]
    app.state.platform = platform  # what the lifespan sets in the service
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bff")


@pytest.mark.parametrize(
    ("body", "loc", "error_type"),
    [
        ({"labels": [{**LABEL, "outcome": 2}]}, ["body", "labels", 0, "outcome"], "less_than_equal"),
        (
            {"labels": [LABEL, {**LABEL, "observed_at": "2026-11-01T00:00:00"}]},
            ["body", "labels", 1, "observed_at"],
            "timezone_aware",
        ),
        ({"labels": [{**LABEL, "applicant_id": -1}]}, ["body", "labels", 0, "applicant_id"], "greater_than_equal"),
        ({"labels": [{k: v for k, v in LABEL.items() if k != "outcome"}]}, ["body", "labels", 0, "outcome"], "missing"),
        ({"labels": [{**LABEL, "TARGET": 1}]}, ["body", "labels", 0, "TARGET"], "extra_forbidden"),
        ({"labels": []}, ["body", "labels"], "too_short"),
        ({"labels": [LABEL] * (MAX_LABELS_PER_WRITE + 1)}, ["body", "labels"], "too_long"),
    ],
)
async def test_invalid_labels_are_refused_naming_the_field(body, loc, error_type):
    async with client_for(Settings()) as client:
        answer = await client.post("/labels", json=body)
    assert answer.status_code == 422
    assert [(e["loc"], e["type"]) for e in answer.json()["detail"]] == [(loc, error_type)]


async def test_labels_answer_503_when_s3_does_not_answer():
    closed = Settings(
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        aws_access_key_id="key",
        aws_secret_access_key=SecretStr("secret"),
        labels_write_timeout_s=1.0,
    )
    async with client_for(closed) as client:
        answer = await client.post("/labels", json={"labels": [LABEL]})
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["detail"].startswith("temporarily unavailable: ground-truth table: ")


@pytest.mark.integration
async def test_labels_are_written_once_per_applicant(s3_server):
    settings = Settings(**s3_server.settings().model_dump(), logs_bucket=s3_server.new_bucket("labels"))
    later = {**LABEL, "outcome": 0, "observed_at": "2026-12-01T00:00:00Z"}
    async with client_for(settings) as client:
        first = await client.post("/labels", json={"labels": [LABEL, {**LABEL, "applicant_id": 100003}]})
        assert first.status_code == 200, first.text
        assert first.json() == {"inserted": 2, "updated": 0, "unchanged": 0}
        again = await client.post("/labels", json={"labels": [later, LABEL]})
        assert again.json() == {"inserted": 0, "updated": 1, "unchanged": 0}
    stored = {row["applicant_id"]: row for row in load_labels(settings).to_pylist()}
    assert sorted(stored) == [100002, 100003]
    assert stored[100002]["outcome"] == 0
    assert stored[100002]["observed_at"] == datetime(2026, 12, 1, tzinfo=UTC)
