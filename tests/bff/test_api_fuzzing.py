"""Property-based fuzzing of the running prediction API from its own OpenAPI schema (schemathesis):
every operation, valid and invalid inputs (Hypothesis, derandomized: the same cases every run; bounded
per operation and mode), and no answer is a 5xx and every answer conforms to the documented schema:
status code, content type, headers and body. Once with the local defaults, once with API keys required
(the key sent: what a client with a key can reach)."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from bff.api_keys import hash_key, new_key
from devstack.components import app_daemon
from devstack.processes import free_port

pytestmark = pytest.mark.integration

# Per operation and mode: enough to reach each field's edge cases, bounded for CI time.
MAX_EXAMPLES = 25
# Invalid input must be refused with one of these: schemathesis' defaults, and the documented 413 for a
# batch past its maxItems (which the defaults lack).
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
# The columnar batch forms have rules across fields that JSON Schema cannot state (every row of "data" as
# long as "columns"; every v2 input's shape the same): a schema-valid body may break them, and gets a 422
# naming the place (still checked against the documented error body).
BATCH_ACCEPTANCE = ["2xx", "401", "403", "404", "409", "413", "422", "429", "5xx"]
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}},
        "operations": [
            {
                "include-path": "/predict/batch",
                "checks": {"positive_data_acceptance": {"expected-statuses": BATCH_ACCEPTANCE}},
            }
        ],
    }
)


def fuzz(base_url: str, headers: dict[str, str] | None = None) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=CONFIG)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case) -> None:
                case.call_and_validate(headers=headers)

            try:
                check()
            except Unsatisfiable:
                # An operation without inputs (GET /health/live) has nothing to make invalid.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as err:
                failures.append(f"{operation.label} ({mode.value}): {err}"[:3000])
    return failures


def test_fuzzed_requests_get_no_5xx_and_documented_answers(serving):
    failures = fuzz(serving.bff_url)
    assert not failures, "\n\n".join(failures)


def test_fuzzed_requests_with_api_keys_required(serving, tmp_path):
    # A second BFF beside the first, on the same Triton and store, requiring keys.
    key = new_key()
    port = free_port()
    env = {
        **serving.env,
        "BFF_PORT": str(port),
        "BFF_METRICS_PORT": str(free_port()),
        "API_KEYS_REQUIRED": "true",
        "API_KEYS": json.dumps({"fuzz": hash_key(key)}),
    }
    url = f"http://{env['BFF_HOST']}:{port}"
    keyed = app_daemon("bff", "bff", tmp_path / "bff.log", env=env, health=f"{url}/health/ready", die_with_parent=True)
    keyed.start(timeout_s=120)
    try:
        failures = fuzz(url, headers={"Authorization": f"Bearer {key}"})
    finally:
        keyed.stop()
    assert not failures, "\n\n".join(failures)
