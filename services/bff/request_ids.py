"""Request ids (plain ASGI middleware): ``X-Request-ID`` taken from the caller (validated) or made up,
set before anything else runs, so that every answer of an API route echoes it (errors, 413s and
load-shedding 503s too) and every log line written for the request carries it."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from starlette.requests import Request

from mlops_common.logging import request_id_var

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,100}$"
_VALID = re.compile(REQUEST_ID_PATTERN)
# The header as an OpenAPI operation parameter.
REQUEST_ID_PARAMETER = {
    "name": REQUEST_ID_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
    "description": "Your id for this request (letters, digits, . _ : -; at most 100): the prediction's "
    "`request_id` (a batch's rows get `<id>-<index>`), the inference log's key and Triton's request id. "
    "Unique per request (a retry with the same id is logged as a request of its own). Made up when absent. "
    "Echoed in the answer's `X-Request-ID` header, errors included.",
}
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode()


class RequestIdMiddleware:
    """On ``paths``: 422 for a malformed ``X-Request-ID`` (FastAPI's error shape), else the id in
    ``scope["state"]["request_id"]`` and the log context, and in the answer's headers."""

    def __init__(self, app: Any, paths: set[str] | frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        given = next((value for key, value in scope["headers"] if key == _HEADER_KEY), None)
        if given is None:
            request_id = uuid.uuid4().hex
        else:
            request_id = given.decode("latin-1")
            if not _VALID.match(request_id):
                await _refuse(send, request_id)
                return
        scope.setdefault("state", {})["request_id"] = request_id
        request_id_var.set(request_id)
        echoed = (_HEADER_KEY, request_id.encode())

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), echoed]
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id_of(request: Request) -> str:
    """The id ``RequestIdMiddleware`` took or made for ``request``."""
    return request.scope["state"]["request_id"]


async def _refuse(send, given: str) -> None:
    error = {
        "type": "string_pattern_mismatch",
        "loc": ["header", REQUEST_ID_HEADER],
        "msg": f"String should match pattern '{REQUEST_ID_PATTERN}'",
        "input": given,
        "ctx": {"pattern": REQUEST_ID_PATTERN},
    }
    await send({"type": "http.response.start", "status": 422, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps({"detail": [error]}).encode()})
