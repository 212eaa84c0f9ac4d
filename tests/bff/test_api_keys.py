"""API keys in-process (ASGI, fakes for Triton and the store): 401 without or with a wrong key (before the
body is parsed), both header forms, rotation with two keys, revocation, per-name counts, the per-key rate
limit (429), open health and docs, settings checks, and the key command."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from test_api_docs import KNOWN_APPLICANT, Fakes

from bff import api_keys
from bff.auth import TokenBucket
from bff.metrics import REGISTRY
from bff.settings import Settings
from mlops_common.features import ENTITY_KEY

OLD_KEY, NEW_KEY = api_keys.new_key(), api_keys.new_key()
BODY = {ENTITY_KEY: KNOWN_APPLICANT}


def keyed(settings: dict | None = None, **keys: str) -> Fakes:
    hashes = {name: api_keys.hash_key(k) for name, k in keys.items()}
    return Fakes(Settings(api_keys_required=True, api_keys=hashes, **(settings or {})))


def count(name: str, metric: str = "bff_api_key_requests_total") -> float:
    return REGISTRY.get_sample_value(metric, {"key_name": name}) or 0.0


async def test_requests_without_a_valid_key_get_401_and_health_and_docs_stay_open():
    fakes = keyed(app_old=OLD_KEY)
    async with fakes.client() as client:
        missing = await client.post("/predict", json=BODY)
        wrong = await client.post("/predict", json=BODY, headers={"Authorization": f"Bearer {NEW_KEY}"})
        labels = await client.post("/labels", json={"labels": []})
        open_paths = [(await client.get(path)).status_code for path in ("/health/live", "/docs", "/openapi.json")]
    assert missing.status_code == wrong.status_code == labels.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="prediction-api"'
    assert missing.json() == {"detail": "an API key is required: Authorization: Bearer <key> or X-API-Key"}
    assert wrong.json() == {"detail": "unknown or revoked API key"}
    assert open_paths == [200, 200, 200]
    assert fakes.triton.matrices == []


async def test_rotation_two_keys_work_both_header_forms_and_counts_by_name():
    fakes = keyed(app_old=OLD_KEY, app_new=NEW_KEY)
    old_before, new_before = count("app_old"), count("app_new")
    async with fakes.client() as client:
        bearer = await client.post("/predict", json=BODY, headers={"Authorization": f"Bearer {OLD_KEY}"})
        header = await client.post("/predict/batch", json=[BODY], headers={"X-API-Key": NEW_KEY})
    assert bearer.status_code == header.status_code == 200
    assert (count("app_old") - old_before, count("app_new") - new_before) == (1, 1)

    revoked = keyed(app_new=NEW_KEY)  # app_old's hash removed
    async with revoked.client() as client:
        assert (await client.post("/predict", json=BODY, headers={"X-API-Key": OLD_KEY})).status_code == 401
        assert (await client.post("/predict", json=BODY, headers={"X-API-Key": NEW_KEY})).status_code == 200


async def test_the_key_is_checked_before_the_body_is_parsed():
    fakes = keyed(app_old=OLD_KEY)
    malformed = {"content": b"[{", "headers": {"content-type": "application/json"}}
    async with fakes.client() as client:
        stranger = await client.post("/predict/batch", **malformed)
        caller = await client.post(
            "/predict/batch", content=b"[{", headers={**malformed["headers"], "X-API-Key": OLD_KEY}
        )
    # A stranger learns nothing about the body (no 422) and the server parsed none.
    assert stranger.status_code == 401
    assert caller.status_code == 422
    assert caller.json()["detail"][0]["type"] == "json_invalid"


async def test_a_key_past_its_rate_limit_gets_429_with_retry_after_and_is_counted():
    fakes = keyed({"api_key_rate_limit_per_s": 0.5, "api_key_rate_burst": 2}, limited=OLD_KEY, other=NEW_KEY)
    before = count("limited", "bff_api_key_rate_limited_total")
    async with fakes.client() as client:
        statuses = [
            (await client.post("/predict", json=BODY, headers={"X-API-Key": OLD_KEY})).status_code for _ in range(3)
        ]
        refused = await client.post("/predict", json=BODY, headers={"X-API-Key": OLD_KEY})
        other = await client.post("/predict", json=BODY, headers={"X-API-Key": NEW_KEY})
    assert statuses == [200, 200, 429]  # the burst of 2, then the key waits for its rate
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"  # one request per 2 s
    assert refused.json() == {
        "detail": "rate limit of key 'limited' exceeded: 0.5 requests/s (API_KEY_RATE_LIMIT_PER_S)"
    }
    assert other.status_code == 200  # each key has its own budget
    assert count("limited", "bff_api_key_rate_limited_total") - before == 2
    assert len(fakes.triton.matrices) == 3


def test_token_bucket_refills_at_its_rate_up_to_its_burst():
    now = [0.0]
    bucket = TokenBucket(rate=4.0, burst=2, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.25]
    now[0] = 0.25  # one token back
    assert bucket.take() == 0.0
    assert bucket.take() == 0.25
    now[0] = 100.0  # a long quiet spell saves up no more than the burst
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.25]


async def test_keys_off_by_default():
    async with Fakes(Settings()).client() as client:
        assert (await client.post("/predict", json=BODY)).status_code == 200


def test_settings_refuse_unusable_key_configurations():
    with pytest.raises(ValidationError, match="holds no key"):
        Settings(api_keys_required=True)
    with pytest.raises(ValidationError, match=r"\['plain'\] are not 'sha256:<64 hex digits>'"):
        Settings(api_keys={"plain": OLD_KEY})


def test_the_key_command_prints_a_key_and_its_entry(capsys):
    assert api_keys.main(["new", "partner-a"]) == 0
    key_line, entry_line = capsys.readouterr().out.splitlines()
    key = key_line.rsplit(" ", 1)[1]
    entry = json.loads(entry_line.removeprefix("API_KEYS entry: "))
    assert entry == {"partner-a": api_keys.hash_key(key)}
    assert Settings(api_keys_required=True, api_keys=entry).api_keys == entry
    with pytest.raises(SystemExit):
        api_keys.main(["new", "bad name!"])
