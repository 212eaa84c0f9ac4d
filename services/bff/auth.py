"""Who may call the API, checked before the request's body is read: API keys (``bff.api_keys``) and a
per-key rate limit.

The check runs in the route class, not in a FastAPI dependency: FastAPI reads and parses the body before
it resolves dependencies, so a caller without a key would be told about its malformed JSON (422) and the
server would parse bodies for strangers. The dependency ``caller`` only documents the two key headers in
OpenAPI and hands the authenticated key name to a route.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from bff.api_keys import identify
from bff.metrics import API_KEY_RATE_LIMITED, API_KEY_REQUESTS
from bff.settings import Settings

UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="prediction-api"'}
# An OpenAPI operation's security: either scheme below (their names are FastAPI's for these classes).
KEY_SECURITY = [{"HTTPBearer": []}, {"APIKeyHeader": []}]
KEY_HEADER = "X-API-Key"
_BEARER = HTTPBearer(
    auto_error=False, description="`Authorization: Bearer <API key>`, when the deployment requires keys"
)
_KEY_HEADER = APIKeyHeader(
    name=KEY_HEADER, auto_error=False, description="The API key, when the deployment requires keys"
)


class TokenBucket:
    """``rate`` requests per second on average, up to ``burst`` at once after a quiet spell."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self.updated = clock()

    def take(self) -> float:
        """0 when a request may go now (and it is counted), else the seconds until one may."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class KeyGate:
    """The key check of one process: 401 without a known key, 429 past the key's rate (per process:
    with several workers a key's total is the rate times the workers)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic):
        self.required = settings.api_keys_required
        self.hashes = settings.api_keys
        self.rate = settings.api_key_rate_limit_per_s
        self.buckets = (
            {name: TokenBucket(self.rate, settings.api_key_rate_burst, clock) for name in self.hashes}
            if self.rate
            else {}
        )
        for name in self.hashes:
            API_KEY_REQUESTS.labels(name)
            API_KEY_RATE_LIMITED.labels(name)

    def admit(self, headers: Mapping[str, str]) -> str | None:
        """The caller's key name (None when keys are not required), or an HTTPException."""
        if not self.required:
            return None
        presented = _presented_key(headers)
        if not presented:
            raise HTTPException(401, "an API key is required: Authorization: Bearer <key> or X-API-Key", UNAUTHORIZED)
        name = identify(presented, self.hashes)
        if name is None:
            raise HTTPException(401, "unknown or revoked API key", UNAUTHORIZED)
        API_KEY_REQUESTS.labels(name).inc()
        bucket = self.buckets.get(name)
        wait = bucket.take() if bucket is not None else 0.0
        if wait:
            API_KEY_RATE_LIMITED.labels(name).inc()
            raise HTTPException(
                429,
                f"rate limit of key {name!r} exceeded: {self.rate:g} requests/s (API_KEY_RATE_LIMIT_PER_S)",
                {"Retry-After": str(math.ceil(wait))},
            )
        return name


def _presented_key(headers: Mapping[str, str]) -> str | None:
    scheme, credentials = get_authorization_scheme_param(headers.get("authorization"))
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return headers.get(KEY_HEADER.lower()) or None


def key_checked_route(gate: KeyGate) -> type[APIRoute]:
    """A route class whose handler admits the caller through ``gate`` before FastAPI reads the body."""

    class KeyCheckedRoute(APIRoute):
        def get_route_handler(self) -> Callable:
            handle = super().get_route_handler()

            async def admit_then_handle(request: Request) -> Response:
                request.state.api_key_name = gate.admit(request.headers)
                return await handle(request)

            return admit_then_handle

    return KeyCheckedRoute


async def caller(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    _header_key: Annotated[str | None, Security(_KEY_HEADER)],
) -> str | None:
    """The key name the route class admitted (None when keys are off); its parameters document the headers."""
    return request.state.api_key_name


CallerDep = Annotated[str | None, Depends(caller)]
