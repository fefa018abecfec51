"""A whole (non-streamed) response in one socket write.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and its body as a second write. On a TCP connection each write is a
``send()`` system call and, with ``TCP_NODELAY``, its own packet, so every non-streamed answer
cost two. When the app has the whole body at hand, :func:`send_whole` hands uvicorn a stand-in
transport for the two ``send`` calls and passes what they wrote to the real one in one piece.

It relies on one detail of uvicorn's request cycle (``send`` is a method of an object whose
``transport`` it writes to); anything else gets the two plain ``send`` calls.

:func:`send_last` ends a stream that already started with a last event, written at once even
when the client stopped reading (uvicorn's ``send`` first waits until the transport is below
its high-water mark, which for such a client is until ``write_timeout_s`` drops it): the
event is small, the transport keeps it behind what the client has yet to read, and the
protocol's write timeout still drops a client that never reads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


class _Gathered:
    """Stands in for the transport while a response is being sent: keeps the writes."""

    __slots__ = ("_closing", "_parts", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._parts: list[bytes] = []
        self._closing = False

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def close(self) -> None:  # uvicorn closes after the body when the client asked it to
        self._closing = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def flush(self) -> None:
        if self._parts:
            self._transport.write(b"".join(self._parts))
        if self._closing:
            self._transport.close()


class _Unpaused:
    """Stands in for uvicorn's flow control during :func:`send_last`: never paused."""

    write_paused = False


_UNPAUSED = _Unpaused()


async def send_last(send: Send, body: bytes) -> None:
    """``body`` and the end of a response that started, written without waiting for the
    client to read what came before (see above). Under a server other than uvicorn: plain
    ``send`` calls."""
    event: Message = {"type": "http.response.body", "body": body, "more_body": True}
    end: Message = {"type": "http.response.body", "body": b"", "more_body": False}
    cycle: Any = getattr(send, "__self__", None)
    flow = getattr(cycle, "flow", None)
    if not isinstance(getattr(flow, "write_paused", None), bool):
        await send(event)
        await send(end)
        return
    cycle.flow = _UNPAUSED  # uvicorn's send reads it once, before it writes (no await after)
    try:
        await send(event)
        await send(end)
    finally:
        cycle.flow = flow


async def send_whole(
    send: Send, start: Message, body: Message, *, taken: Callable[[], None] | None = None
) -> None:
    """``await send(start); await send(body)``, written to the socket once.

    ``taken()``, if given, is called as soon as ``send(start)`` returns: from then on the
    server has the response's start, even if ``send(body)`` waits (flow control) and is
    interrupted there, so nothing may send another start. (Not before: uvicorn waits for a
    paused transport before it takes a start, and one interrupted there was never taken.)
    """
    cycle: Any = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not callable(getattr(transport, "write", None)):
        await send(start)
        if taken is not None:
            taken()
        await send(body)
        return
    gathered = _Gathered(transport)
    cycle.transport = gathered
    try:
        await send(start)
        if taken is not None:
            taken()
        await send(body)
    finally:
        cycle.transport = transport
        gathered.flush()
