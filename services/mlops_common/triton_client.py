"""The platform's Triton client (the BFF, the batch-scoring job): Triton's HTTP endpoint (KServe v2
protocol) with the features and the probabilities as raw bytes (Triton's binary tensor extension), one
request per call over kept-alive HTTP/1.1 connections, and the routing model sync wrote into the model's
config.

Why not gRPC or tritonclient: on the same Triton, a grpcio aio call costs the calling process about three
times the CPU of a request written straight onto a kept-alive socket and read by httptools (uvicorn's
parser), and tritonclient's gRPC and HTTP clients cost more still (``benchmarks/serving``, part (e),
measures the four side by side). The API's CPU per request is what limits it, so the client is this thin.

A target is ``host:port`` or several, comma-separated. Calls take the resolved addresses in turn (a
headless Service's name resolves to one address per ready Triton pod), names are resolved again every
``RESOLVE_EVERY_S`` so pods added later get calls, and connections are retired after
``MAX_CONNECTION_AGE_S`` so a Service's connection-level balancing reaches new pods too. Inference has no
side effects: a call whose connection fails before the whole answer arrived is sent again, to another
address where there is one, within the call's one deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import sys
import time
from collections import defaultdict

import httptools
import numpy as np
import orjson

from mlops_common.errors import DependencyUnavailableError, InferenceError
from mlops_common.features import MODEL_INPUT, MODEL_OUTPUT
from mlops_common.rollout import Routing
from mlops_common.settings import host_ports

# Triton's answers that a retry can cure: the model is not loaded (with explicit model control, a model
# being (re)loaded is 404), the server is overloaded or shutting down (503), or a backend crashed and
# restarts (500). Anything else (400: a tensor the model cannot take) is the caller's bug: no retry fixes it.
TRANSIENT_HTTP_STATUSES = frozenset({404, 408, 429, 500, 502, 503, 504})
ATTEMPTS = 3
RESOLVE_EVERY_S = 30.0
MAX_CONNECTION_AGE_S = 60.0
# After a refused connection, other calls skip that address for this long (a stopped pod, as gRPC's
# subchannel backoff), unless every address is down.
ADDRESS_BACKOFF_S = 1.0
INFERENCE_HEADER_LENGTH = b"inference-header-content-length"

Address = tuple[str, int]


class _Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection: one request at a time, its answer parsed by httptools."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.opened_at = time.monotonic()
        self.closed = False
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[tuple[int, int | None, bytes]] | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._body: list[bytes] = []
        self._header_length: int | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(ConnectionError(f"unreadable answer from {_show(self.address)}: {err}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"connection to {_show(self.address)} closed: {exc or 'by the server'}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == INFERENCE_HEADER_LENGTH:
            self._header_length = int(value)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        answer = (self._parser.get_status_code(), self._header_length, b"".join(self._body))
        self._body, self._header_length = [], None
        if not self._parser.should_keep_alive():
            self.close()
        waiting = self._take_answer()
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)

    def send(self, parts: tuple[bytes, ...], deadline: float) -> asyncio.Future[tuple[int, int | None, bytes]]:
        """Writes a request; the future gets (status, Inference-Header-Content-Length, body), or
        TimeoutError at ``deadline`` (the loop's clock), which also closes the connection: a late answer
        on it would belong to no call. A timer on the loop, cheaper on this hot path than asyncio.timeout's
        context manager."""
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        self._deadline_timer = loop.call_at(deadline, self._expire)
        self._transport.writelines(parts)
        return self._answer

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _expire(self) -> None:
        self._deadline_timer = None
        self._fail(TimeoutError())
        self.close()

    def _fail(self, err: Exception) -> None:
        waiting = self._take_answer()
        if waiting is not None and not waiting.done():
            waiting.set_exception(err)

    def _take_answer(self) -> asyncio.Future[tuple[int, int | None, bytes]] | None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        waiting, self._answer = self._answer, None
        return waiting


class _ConnectionPool:
    """Kept-alive connections per address of the target; each call takes the next address in turn."""

    def __init__(self, target: str) -> None:
        self._targets = host_ports(target)
        self.host = self._targets[0][0]
        self._addresses: list[Address] = []
        self._resolved_at = float("-inf")
        self._turn = itertools.count()
        self._idle: defaultdict[Address, list[_Connection]] = defaultdict(list)
        self._down_until: dict[Address, float] = {}
        self._closed = False

    async def send(self, parts: tuple[bytes, ...], timeout_s: float) -> tuple[int, int | None, bytes]:
        """Sends a request, again on a failed connection (up to ATTEMPTS in all); TimeoutError after
        ``timeout_s`` in all."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        failed: set[Address] = set()
        last_error = ""
        for _ in range(ATTEMPTS):
            address = await self._next_address(failed, deadline)
            try:
                connection = self._idle_connection(address)
                if connection is None:
                    async with asyncio.timeout_at(deadline):
                        connection = await self._connect(address)
            except TimeoutError:  # an OSError too, but the call's time is up: no other attempt
                raise
            except OSError as err:
                self._down_until[address] = time.monotonic() + ADDRESS_BACKOFF_S
                failed.add(address)
                last_error = f"cannot connect to {_show(address)}: {err}"
                continue
            try:
                answer = await connection.send(parts, deadline)
            except ConnectionError as err:  # the connection died before the whole answer: send it again
                failed.add(address)
                last_error = str(err)
                continue
            except asyncio.CancelledError:
                connection.close()  # a late answer on this connection would belong to no call
                raise
            self._release(connection)
            return answer
        raise DependencyUnavailableError(f"triton: {last_error}")

    async def _next_address(self, failed: set[Address], deadline: float) -> Address:
        now = time.monotonic()
        if now - self._resolved_at > RESOLVE_EVERY_S or not self._addresses:
            async with asyncio.timeout_at(deadline):  # a hung DNS server must not outlast the call
                await self._resolve()
        live = [a for a in self._addresses if a not in failed and self._down_until.get(a, 0.0) <= now]
        candidates = live or [a for a in self._addresses if a not in failed] or self._addresses
        return candidates[next(self._turn) % len(candidates)]

    async def _resolve(self) -> None:
        self._resolved_at = time.monotonic()  # one resolution at a time, not one per waiting call
        loop = asyncio.get_running_loop()
        addresses: list[Address] = []
        error: OSError | None = None
        for host, port in self._targets:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as err:
                error = err
                continue
            addresses += [(info[4][0], port) for info in infos if (info[4][0], port) not in addresses]
        if addresses:
            self._addresses = addresses
        elif not self._addresses:  # nothing resolved now or before: no address to try
            self._resolved_at = float("-inf")
            raise DependencyUnavailableError(f"triton: cannot resolve {self._targets}: {error}")

    def _idle_connection(self, address: Address) -> _Connection | None:
        idle = self._idle[address]
        while idle:
            connection = idle.pop()
            if not self._retired(connection):
                return connection
            connection.close()
        return None

    async def _connect(self, address: Address) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(lambda: _Connection(address), *address)
        return connection

    def _release(self, connection: _Connection) -> None:
        if self._closed or self._retired(connection) or connection.address not in self._addresses:
            connection.close()
        else:
            self._idle[connection.address].append(connection)

    @staticmethod
    def _retired(connection: _Connection) -> bool:
        return connection.closed or time.monotonic() - connection.opened_at > MAX_CONNECTION_AGE_S

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class TritonPredictor:
    def __init__(self, url: str, model_name: str, timeout_s: float):
        self._pool = _ConnectionPool(url)
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._model_path = f"/v2/models/{model_name}"
        self._host = self._pool.host.encode()

    async def predict(self, features: np.ndarray, *, version: str = "", request_id: str = "") -> tuple[np.ndarray, str]:
        """Default probabilities for each row, and the model version that computed them (``version``
        pins one; ``request_id`` goes to Triton, which shows it in its logs and traces)."""
        raw = np.ascontiguousarray(features, dtype=np.float32).tobytes()
        request: dict = {
            "inputs": [
                {
                    "name": MODEL_INPUT,
                    "shape": features.shape,
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": MODEL_OUTPUT, "parameters": {"binary_data": True}}],
        }
        if request_id:
            request["id"] = request_id
        header = orjson.dumps(request)
        path = f"{self._model_path}/versions/{version}/infer" if version else f"{self._model_path}/infer"
        head = (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
            b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
            % (path.encode(), self._host, len(header), len(header) + len(raw))
        )
        status, header_length, body = await self._call(head, header, raw)
        if status != 200:
            raise _refused(status, body)
        if header_length is None:
            raise InferenceError(f"triton answered {self.model_name} without binary output: {body[:200]!r}")
        answer = orjson.loads(body[:header_length])
        [output] = answer["outputs"]
        probabilities = np.frombuffer(body, dtype=np.float32, offset=header_length).reshape(output["shape"])
        # One string object per version, not one per answer: the inference log's publisher keeps the versions.
        return probabilities[:, 1], sys.intern(answer["model_version"])

    async def routing(self) -> Routing | None:
        """The routing in the loaded model's config (None: a config without one, e.g. an older model sync)."""
        config = await self._config()
        return Routing.from_parameters({k: v["string_value"] for k, v in config.get("parameters", {}).items()})

    async def max_batch_size(self) -> int:
        """The most rows one call may carry (the config's max_batch_size)."""
        return (await self._config())["max_batch_size"]

    async def _config(self) -> dict:
        status, _, body = await self._get(f"{self._model_path}/config")
        if status != 200:
            raise _refused(status, body)
        return orjson.loads(body)

    async def version_ready(self, version: str) -> bool:
        return await self._ready(f"{self._model_path}/versions/{version}/ready")

    async def model_ready(self) -> bool:
        return await self._ready(f"{self._model_path}/ready")

    async def _ready(self, path: str) -> bool:
        try:
            status, _, _ = await self._get(path)
        except DependencyUnavailableError:
            return False
        return status == 200

    async def _get(self, path: str) -> tuple[int, int | None, bytes]:
        return await self._call(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), self._host))

    async def _call(self, *parts: bytes) -> tuple[int, int | None, bytes]:
        try:
            return await self._pool.send(parts, self.timeout_s)
        except TimeoutError:
            raise DependencyUnavailableError(f"triton: no answer within {self.timeout_s} s") from None

    async def close(self) -> None:
        self._pool.close()


def check_probabilities(probabilities: np.ndarray, model_name: str, version: str) -> None:
    """A probability outside [0, 1] (NaN too) is an InferenceError: a broken model version, never an answer."""
    invalid = ~((probabilities >= 0) & (probabilities <= 1))  # NaN compares False: invalid too
    if invalid.any():
        raise InferenceError(
            f"model {model_name} version {version} returned {int(invalid.sum())} probabilities "
            f"outside [0, 1] (e.g. {probabilities[invalid][0]!r}) for {len(probabilities)} rows"
        )


def _refused(status: int, body: bytes) -> Exception:
    try:
        message = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = body[:200].decode(errors="replace")
    if status in TRANSIENT_HTTP_STATUSES:
        return DependencyUnavailableError(f"triton: HTTP {status}: {message}")
    return InferenceError(f"triton refused the request (HTTP {status}): {message}")


def _show(address: Address) -> str:
    return f"{address[0]}:{address[1]}"
