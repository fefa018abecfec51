"""The reply protocol (DESIGN §4): what a caller receives on its reply subject.

A request gets, in order: optionally ``accepted`` (the head stored it in a work queue),
``keepalive`` messages during provider silence, ``chunk`` messages (``Sy-Seq`` 0..n) for a
stream, and exactly one ``final`` or ``error`` message; then a zero-length message without
headers, which ends the stream and frees the server's reply mapping. Senders are here, in one
place, so head and model-proxy cannot disagree on the shape.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from switchyard.bus import headers as h
from switchyard.errors import ApiError
from switchyard.schemas.openai import error_body

_KEEPALIVE = {h.KIND: h.KIND_KEEPALIVE}
_ACCEPTED = {h.KIND: "accepted"}


async def send_accepted(nc: NATS, reply: str) -> None:
    await nc.publish(reply, b"", headers=_ACCEPTED)


async def send_keepalive(nc: NATS, reply: str) -> None:
    await nc.publish(reply, b"", headers=_KEEPALIVE)


async def send_chunk(nc: NATS, reply: str, seq: int, body: bytes, delivery: str) -> None:
    await nc.publish(
        reply, body, headers={h.KIND: h.KIND_CHUNK, h.SEQ: str(seq), h.ATTEMPT: delivery}
    )


async def end_stream(nc: NATS, reply: str) -> None:
    """The terminator: zero bytes, no headers."""
    await nc.publish(reply, b"")


async def send_final(nc: NATS, reply: str, body: bytes, headers: dict[str, str]) -> None:
    """The final message (status 200 unless ``headers`` say otherwise), then the terminator."""
    await nc.publish(reply, body, headers={h.KIND: h.KIND_FINAL, h.STATUS: "200", **headers})
    await end_stream(nc, reply)


def error_headers(exc: ApiError, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {h.KIND: h.KIND_ERROR, h.STATUS: str(exc.status)}
    if exc.retry_after is not None:
        headers[h.RETRY_AFTER] = f"{exc.retry_after:g}"
    if extra:
        headers.update(extra)
    return headers


async def send_error(
    nc: NATS, reply: str, exc: ApiError, extra: dict[str, str] | None = None
) -> None:
    """An OpenAI-shaped error as the final message, then the terminator."""
    await nc.publish(reply, error_body(exc), headers=error_headers(exc, extra))
    await end_stream(nc, reply)
