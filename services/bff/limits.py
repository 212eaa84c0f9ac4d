"""Request-body limits decided before the app parses anything (plain ASGI middleware): size and time."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class BodyLimitMiddleware:
    """Reads the whole body before the app sees it, and refuses:

    * 413 for a body over ``max_bytes``: from ``Content-Length`` before reading a byte, and for a body
      without it (chunked) as soon as the bytes read pass the limit, without reading the rest;
    * 408 for a body not received in full within ``read_timeout_s``: a client that trickles its body
      would otherwise hold one of the server's in-flight slots for as long as it likes.

    The body that passes is handed to the app as it came.
    """

    def __init__(self, app: Any, max_bytes: int, read_timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        # The server (h11/httptools) already refuses a malformed length or a body longer than declared.
        if declared is not None and int(declared) > self.max_bytes:
            await self._refuse(send, 413, f"request body of {int(declared)} bytes exceeds {self._limit}")
            return
        try:
            async with asyncio.timeout(self.read_timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            detail = f"request body not received within {self.read_timeout_s:g} s (BODY_READ_TIMEOUT_S)"
            await self._refuse(send, 408, detail)
            return
        except _TooLarge:
            await self._refuse(send, 413, f"chunked request body exceeds {self._limit}")
            return
        if body is None:  # the client went away
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @property
    def _limit(self) -> str:
        return f"the limit of {self.max_bytes} bytes (MAX_BODY_BYTES)"

    async def _read(self, receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, send, status: int, detail: str) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                # The rest of the body is not read: the connection cannot be reused.
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})


class _TooLarge(Exception):
    pass
