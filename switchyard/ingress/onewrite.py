"""A whole (non-streamed) response in one socket write.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and its body as a second write. On a TCP connection each write is a
``send()`` system call and, with ``TCP_NODELAY``, its own packet, so every non-streamed answer
cost two. When the app has the whole body at hand, :func:`send_whole` hands uvicorn a stand-in
transport for the two ``send`` calls and passes what they wrote to the real one in one piece.

It relies on one detail of uvicorn's request cycle (``send`` is a method of an object whose
``transport`` it writes to); anything else gets the two plain ``send`` calls.
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
