"""The Triton client's pure parts: target parsing and how Triton's HTTP errors are told apart (the calls
themselves are tested on a real Triton in tests/bff/test_serving_integration.py)."""

import orjson
import pytest

from mlops_common.errors import DependencyUnavailableError, InferenceError
from mlops_common.triton_client import TritonPredictor, _host_port, _refused


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("mlops-triton-headless:8000", ("mlops-triton-headless", 8000)),
        ("[::1]:8000", ("::1", 8000)),
    ],
)
def test_an_address_is_host_and_port(address: str, expected: tuple[str, int]) -> None:
    assert _host_port(address) == expected


@pytest.mark.parametrize("address", ["triton", "triton:http", "dns:///triton:8001,", ":"])
def test_an_address_without_a_port_is_refused_at_start(address: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        TritonPredictor(address, "m", 1.0)


def test_several_addresses_are_one_target_and_an_empty_one_is_refused() -> None:
    TritonPredictor("10.0.0.1:8000, 10.0.0.2:8000", "m", 1.0)
    with pytest.raises(ValueError, match="no Triton address"):
        TritonPredictor(" , ", "m", 1.0)


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
