"""Request bodies read with a size limit and a deadline while they stream in (untrusted input:
a body over its limit, or one that stops arriving, never holds a handler)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping

from starlette.requests import ClientDisconnect, Request

# A body still arriving after this long is refused (a slow client never holds a handler).
BODY_TIMEOUT_S = 30.0


class BodyRefused(Exception):
    """A request body refused while it streamed in: over its limit (413), too slow (408) or cut
    off (400); `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 413) -> None:
        super().__init__(message)
        self.status = status


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, read as it streams in and refused (`BodyRefused`) as soon as it passes `limit`
    bytes, whatever Content-Length says (a chunked upload has none)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyRefused(f"body of {declared} bytes is over the {limit} byte limit")
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):  # a client that stops sending is let go
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BodyRefused(f"body is over the {limit} byte limit")
    except ClientDisconnect:
        raise BodyRefused("the client left before its body ended", 400) from None
    except TimeoutError:
        raise BodyRefused(f"the body did not arrive within {BODY_TIMEOUT_S:g} s", 408) from None
    return bytes(body)


def query_float(params: Mapping[str, str], name: str) -> float | None:
    """A finite number (unix seconds) from the query, None when absent; ValueError naming it."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number (unix seconds), got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {raw!r}")
    return value
