"""The Triton client's pure parts: target parsing and how Triton's HTTP errors are told apart (the calls
themselves are tested on a real Triton in tests/bff/test_serving_integration.py)."""

import orjson
import pytest
from pydantic import ValidationError

from mlops_common.errors import DependencyUnavailableError, InferenceError
from mlops_common.settings import TritonSettings, host_ports
from mlops_common.triton_client import _refused


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:8000", [("127.0.0.1", 8000)]),
        ("mlops-triton-headless:8000", [("mlops-triton-headless", 8000)]),
        ("[::1]:8000", [("::1", 8000)]),
        ("10.0.0.1:8000, 10.0.0.2:8001", [("10.0.0.1", 8000), ("10.0.0.2", 8001)]),
    ],
)
def test_a_target_is_one_or_more_host_and_port(target: str, expected: list[tuple[str, int]]) -> None:
    assert host_ports(target) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("triton", "not 'triton'"),
        ("triton:http", "not 'triton:http'"),
        ("dns:///triton:8001", "not 'dns:///triton:8001'"),
        ("http://triton:8000", "not 'http://triton:8000'"),
        (":8000", "not ':8000'"),
        (" , ", "no host:port"),
    ],
)
def test_a_bad_target_is_refused_at_start_naming_the_setting(target: str, message: str) -> None:
    with pytest.raises(ValidationError, match="triton_http_url") as refused:
        TritonSettings(triton_http_url=target)
    assert message in str(refused.value)


@pytest.mark.parametrize("status", [404, 429, 500, 503])
def test_what_a_retry_can_cure_is_a_dependency_error(status: int) -> None:
    error = _refused(status, orjson.dumps({"error": "Request for unknown model: 'm' is not found"}))
    assert isinstance(error, DependencyUnavailableError)
    assert str(error) == f"triton: HTTP {status}: Request for unknown model: 'm' is not found"


@pytest.mark.parametrize("status", [400, 501])
def test_what_no_retry_fixes_is_an_inference_error_with_triton_s_message(status: int) -> None:
    error = _refused(status, b"<html>not json</html>")
    assert isinstance(error, InferenceError)
    assert str(error) == f"triton refused the request (HTTP {status}): <html>not json</html>"
