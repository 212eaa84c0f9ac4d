"""The jobs API in-process (ASGI, no lifespan) on a real PostgreSQL database and RabbitMQ queue: what a
submission leaves in both, validation that names the field, 503 with nothing left behind when the queue or
the database is down, API keys. The worker that runs the jobs: tests/job_worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import httpx
import pytest
from pydantic import SecretStr

from bff.api_keys import hash_key, new_key
from bff.app import create_app
from bff.jobs import Jobs
from bff.settings import Settings
from devstack.processes import free_port
from mlops_common.jobs import JobStore
from mlops_common.rabbit import declare_job_queue
from mlops_common.training_profiles import load_training_profiles

SCORE = {"as_of": "now", "output": "s3://mlops-scores/daily"}


@pytest.fixture(scope="module")
def jobs_database(postgres_dsn_factory) -> str:
    return postgres_dsn_factory()


@pytest.fixture
def settings(jobs_database, rabbitmq_url, unique_name) -> Settings:
    return Settings(
        jobs_database_url=SecretStr(jobs_database),
        jobs_queue=unique_name("jobs"),
        rabbitmq_url=SecretStr(rabbitmq_url),
        jobs_broker_timeout_s=2.0,
    )


@pytest.fixture
async def client(settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(settings) as client:
        yield client


class client_for:
    """An in-process client of an app whose jobs clients are what the lifespan would create."""

    def __init__(self, settings: Settings, headers: dict[str, str] | None = None) -> None:
        self.app = create_app(settings)
        self.app.state.jobs = Jobs(settings)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://bff", headers=headers
        )

    async def __aenter__(self) -> httpx.AsyncClient:
        return self.client

    async def __aexit__(self, *exc) -> None:
        await self.client.aclose()
        await self.app.state.jobs.close()


async def queued_job_ids(settings: Settings) -> list[str]:
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = await declare_job_queue(channel, settings.jobs_queue)
        ids = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            ids.append(json.loads(message.body)["job_id"])
        return ids


async def test_a_score_job_is_queued_and_shown_with_as_of_now_pinned(client, settings):
    before = datetime.now(UTC)
    answer = await client.post("/jobs/score", json=SCORE)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert answer.headers["location"] == f"/jobs/{job['id']}"
    assert (job["kind"], job["state"], job["attempts"], job["submitted_by"]) == ("score", "queued", 0, None)
    # `now` became the submission time: a retry scores the same portfolio.
    pinned = datetime.fromisoformat(job["request"]["as_of"])
    assert before <= pinned <= datetime.now(UTC)
    assert job["request"]["output"] == SCORE["output"]
    assert await queued_job_ids(settings) == [job["id"]]

    shown = await client.get(f"/jobs/{job['id']}")
    assert shown.status_code == 200
    assert shown.json() == job
    listed = (await client.get("/jobs", params={"kind": "score", "limit": 100})).json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]


async def test_a_train_job_keeps_what_was_asked_and_the_worker_gets_its_arguments(client, settings):
    body = {"profile": "small", "hyperparameters": {"max_iter": 20, "max_depth": None}, "promote": False}
    answer = await client.post("/jobs/train", json=body)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["request"] == body
    stored = JobStore(settings.jobs_database_url.get_secret_value()).get(job["id"])
    assert stored.args() == [
        "--profile", "small", "--tag", f"job_id={job['id']}",
        "--param", "max_iter=20", "--param", "max_depth=null", "--no-promote",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "loc", "error_type"),
    [
        ("/jobs/score", {"output": "s3://bucket/x"}, ["body"], "value_error"),
        ("/jobs/score", {**SCORE, "output": "/tmp/scores"}, ["body", "output"], "string_pattern_mismatch"),
        ("/jobs/score", {**SCORE, "input": "s3://bucket/table.xlsx"}, ["body", "input"], "string_pattern_mismatch"),
        ("/jobs/score", {**SCORE, "output": "s3://bucket/a\u0000b"}, ["body", "output"], "string_pattern_mismatch"),
        ("/jobs/score", {**SCORE, "as_of": "2026-11-01T00:00:00"}, ["body", "as_of", "datetime"], "timezone_aware"),
        ("/jobs/score", {**SCORE, "as_of": 1764288000}, ["body", "as_of"], "value_error"),
        ("/jobs/train", {"promote": "yes"}, ["body", "promote"], "bool_type"),
        ("/jobs/score", {**SCORE, "model_version": "latest"}, ["body", "model_version"], "string_pattern_mismatch"),
        ("/jobs/score", {**SCORE, "TARGET": 1}, ["body", "TARGET"], "extra_forbidden"),
        ("/jobs/train", {"profile": "huge"}, ["body", "profile"], "literal_error"),
        ("/jobs/train", {"hyperparameters": {"max_iter": "50"}}, ["body", "hyperparameters", "max_iter"], "int_type"),
        (
            "/jobs/train",
            {"hyperparameters": {"learning_rate": 0}},
            ["body", "hyperparameters", "learning_rate"],
            "greater_than",
        ),
        (
            "/jobs/train",
            {"hyperparameters": {"class_weight": {"1": 3.0}}},
            ["body", "hyperparameters", "class_weight"],
            "literal_error",
        ),
        (
            "/jobs/train",
            {"hyperparameters": {"scoring": "roc_auc\u0000"}},
            ["body", "hyperparameters", "scoring"],
            "string_pattern_mismatch",
        ),
        (
            "/jobs/train",
            {"hyperparameters": {"n_estimators": 5}},
            ["body", "hyperparameters", "n_estimators"],
            "extra_forbidden",
        ),
    ],
)
async def test_invalid_requests_are_refused_naming_the_field_and_nothing_is_queued(
    client, settings, path, body, loc, error_type
):
    answer = await client.post(path, json=body)
    assert answer.status_code == 422
    errors = answer.json()["detail"]
    assert [(e["loc"][: len(loc)], e["type"]) for e in errors][:1] == [(loc, error_type)], errors
    assert await queued_job_ids(settings) == []


async def test_an_unknown_or_malformed_job_id(client):
    assert (await client.get("/jobs/0123456789ab")).status_code == 404
    assert (await client.get("/jobs/NOT-AN-ID")).status_code == 422
    assert (await client.get("/jobs", params={"limit": 0})).status_code == 422
    assert (await client.get("/jobs", params={"state": "lost"})).status_code == 422


async def test_profiles_are_the_trainers_file(client, settings):
    answer = await client.get("/profiles")
    assert answer.status_code == 200
    profiles = answer.json()["profiles"]
    expected = load_training_profiles(settings.training_profiles_file)
    assert set(profiles) == set(expected) >= {"default", "small", "large"}
    assert profiles["small"]["hyperparameters"]["max_iter"] == expected["small"].hyperparameters.max_iter


async def test_the_queue_down_is_a_503_and_leaves_no_job(settings):
    down = settings.model_copy(update={"rabbitmq_url": SecretStr(f"amqp://guest:guest@127.0.0.1:{free_port()}/")})
    async with client_for(down) as client:
        before = {j["id"] for j in (await client.get("/jobs", params={"limit": 100})).json()["jobs"]}
        answer = await client.post("/jobs/score", json=SCORE)
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        assert "job queue" in answer.json()["detail"]
        after = {j["id"] for j in (await client.get("/jobs", params={"limit": 100})).json()["jobs"]}
    assert after == before


async def test_the_database_down_is_a_503_and_queues_nothing(settings):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/jobs"
    async with client_for(settings.model_copy(update={"jobs_database_url": SecretStr(url)})) as client:
        for answer in await asyncio.gather(client.post("/jobs/score", json=SCORE), client.get("/jobs")):
            assert answer.status_code == 503
            assert "jobs database" in answer.json()["detail"]
    assert await queued_job_ids(settings) == []


async def test_job_routes_need_a_key_where_keys_are_required(settings):
    key = new_key()
    keyed = settings.model_copy(update={"api_keys_required": True, "api_keys": {"analyst": hash_key(key)}})
    async with client_for(keyed) as client:
        for method, path in (
            ("POST", "/jobs/score"),
            ("GET", "/jobs"),
            ("GET", "/profiles"),
            ("GET", "/jobs/0123456789ab"),
        ):
            answer = await client.request(method, path, json=SCORE if method == "POST" else None)
            assert answer.status_code == 401, path
        answer = await client.post("/jobs/score", json=SCORE, headers={"X-API-Key": key})
    assert answer.status_code == 202
    assert answer.json()["submitted_by"] == "analyst"


def test_without_a_jobs_database_there_are_no_job_routes():
    paths = create_app(Settings()).openapi()["paths"]
    assert not [path for path in paths if path.startswith(("/jobs", "/profiles"))]


async def test_more_requests_at_once_than_database_connections_all_get_their_answer(client):
    answers = await asyncio.gather(*(client.post("/jobs/score", json=SCORE) for _ in range(5)))
    answers += await asyncio.gather(*(client.get("/jobs", params={"limit": 5}) for _ in range(20)))
    assert [a.status_code for a in answers] == [202] * 5 + [200] * 20
