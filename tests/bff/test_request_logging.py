"""The service's own log lines carry the request they were written for (X-Request-ID or the id the BFF
made), in the JSON format a cluster's log collector reads (LOG_FORMAT=json)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from test_api_docs import Fakes

from bff.schemas import FEATURES_EXAMPLE
from bff.settings import Settings
from mlops_common import logging as platform_logging
from mlops_common.errors import DependencyUnavailableError


@pytest.fixture
def json_log(monkeypatch) -> io.StringIO:
    """configure_logging(json) into a buffer; the root logger's handlers are restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buffer = io.StringIO()
    monkeypatch.setattr(platform_logging.sys, "stderr", buffer)
    platform_logging.configure_logging("INFO", "json")
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


async def test_a_log_line_written_for_a_request_carries_its_id(json_log):
    fakes = Fakes(Settings())
    fakes.triton.failure = DependencyUnavailableError("triton: Deadline Exceeded")
    async with fakes.client() as client:
        given = await client.post("/predict", json=FEATURES_EXAMPLE, headers={"X-Request-ID": "trace-42"})
        made = await client.post("/predict", json=FEATURES_EXAMPLE)
    assert given.status_code == made.status_code == 503
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    unavailable = [line for line in lines if line["message"].startswith("dependency unavailable")]
    assert [line["request_id"] for line in unavailable] == ["trace-42", made.headers["x-request-id"]]
    assert {line["level"] for line in unavailable} == {"WARNING"}
    assert all(line["logger"] == "bff.app" and line["time"].endswith("+00:00") for line in unavailable)
