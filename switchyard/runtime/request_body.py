"""Request bodies read whole, but never past a cap (the admin API and the admin web app).

Starlette's ``request.body()`` reads whatever the client sends, so one request could make a
process hold as much memory as the client cares to send. :func:`read_body` refuses a
``Content-Length`` above the cap before reading anything, and stops reading a body sent
without one (chunked) as soon as it passes the cap: at most ``limit`` bytes are ever held.
What the client still sends of a refused body is thrown away by the HTTP server as it comes
(uvicorn keeps no part of a request's body once its answer is complete), as the edges do.
"""

from __future__ import annotations

from starlette.requests import Request

from switchyard.errors import PayloadTooLarge


def too_large(limit: int) -> PayloadTooLarge:
    """The 413 for a body over ``limit`` bytes."""
    return PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, at most ``limit`` bytes of it.

    Raises:
        PayloadTooLarge: the body is (or says it is) longer than ``limit`` bytes; the rest of
            it is not kept.
    """
    length = request.headers.get("content-length", "").strip()
    if length.isdigit() and int(length) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)
