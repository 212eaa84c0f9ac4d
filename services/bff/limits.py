"""A request-body size limit decided before the app parses anything (plain ASGI middleware)."""

from __future__ import annotations

import json
from typing import Any


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``: from ``Content-Length`` before reading a byte, and for a body
    without it (chunked) as soon as the bytes read pass the limit, without reading the rest. The body
    that passes is handed to the app as it came."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            # The server (h11/httptools) already refuses a malformed length or a body longer than declared.
            if int(declared) > self.max_bytes:
                await self._refuse(send, f"request body of {int(declared)} bytes")
                return
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, "chunked request body")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send, what: str) -> None:
        detail = f"{what} exceeds the limit of {self.max_bytes} bytes (MAX_BODY_BYTES)"
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                # The rest of the body is not read: the connection cannot be reused.
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})
