"""Messages handled as they are parsed, and publishes without a coroutine, on a nats-py client.

nats-py hands each message of a callback subscription to a task of its own through a queue
(the message is parsed into a ``Msg``, its headers into a dict, the queue wakes the task, the
task awaits the callback), and each ``publish`` validates, encodes and wakes the flusher through
a future. For a process whose work is a few tiny messages per request (the feeder: a freed slot,
a store's acknowledgement) that machinery is most of its CPU. :class:`DirectDelivery` gives
chosen subscriptions a plain function called from the connection's read loop with the raw
subject, reply, payload and header bytes, and :meth:`DirectDelivery.publish` appends the
encoded command to the connection's outgoing buffer and wakes the flusher once per batch.

Everything else stays nats-py's: connecting, TLS, authentication, reconnecting (a subscription
keeps its id, so its handler keeps working after a reconnect), PING/PONG, buffering while
disconnected. It touches nats-py's private state (``_process_msg``, ``_pending``,
``_flush_queue``, the parser's ``buf`` and ``state``); :meth:`DirectDelivery.attach` checks
that state is there and hands nats-py's parser a message for a subscription of its own (no
publish: a zone's identity may not publish to its own inbox), and otherwise (another nats-py
version) serves the same calls through nats-py's public API: slower, never wrong.

A handler runs inside the read loop: it must not block or await, and must be quick. An
exception it raises is logged and the message dropped, as nats-py does for a callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import (
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    OutboundBufferLimitError,
)
from nats.errors import Error as NatsError

log = logging.getLogger("switchyard.bus")

# subject, reply ("" bytes when none), payload, the raw header block (None when none)
RawHandler = Callable[[bytes, bytes, bytes, bytes | None], None]
_ProcessMsg = Callable[[int, bytes, bytes, bytes, bytes | None], Awaitable[None]]
_REQUIRED = (
    "_process_msg",
    "_pending",
    "_pending_data_size",
    "_flush_queue",
    "_max_pending_size",
    "_max_payload",
)
NATS_HEADER_LINE = b"NATS/1.0\r\n"
CHECK_S = 2.0  # how long attach waits for the parser to be between messages
_BETWEEN_MESSAGES = 1  # nats.protocol.parser.AWAITING_CONTROL_LINE


class DirectDelivery:
    """Direct handlers and publishes for one connection (see the module docstring)."""

    def __init__(self, nc: NATS, original: _ProcessMsg | None) -> None:
        self._nc = nc
        self._original = original  # None: nats-py's public API only (see attach)
        self._handlers: dict[int, RawHandler] = {}
        self._loop = asyncio.get_running_loop()
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def direct(self) -> bool:
        """False when nats-py's internals were not as expected (its own path is used)."""
        return self._original is not None

    @classmethod
    async def attach(cls, nc: NATS, *, check_s: float = CHECK_S) -> DirectDelivery:
        """Route this connection's messages through a new instance, which passes every
        message without a direct handler on to what handled them before, once a message
        parsed by nats-py's own parser reached a direct handler (tried for up to ``check_s``
        while the parser is between messages). Call once per connection and keep the
        instance."""
        client: Any = nc
        if all(hasattr(client, name) for name in _REQUIRED) and isinstance(client._pending, list):
            original = client._process_msg
            direct = cls(nc, original)
            client._process_msg = direct._process_msg
            if await direct._passes_parser(check_s):
                return direct
            client._process_msg = original
        log.warning(
            "nats-py's internals differ from what switchyard.bus.direct expects:"
            " using its slower public API"
        )
        return cls(nc, None)

    async def _passes_parser(self, timeout: float) -> bool:
        """Whether a message nats-py's parser reads reaches a direct handler. The message is
        handed to the parser, not published: the connection's identity may not publish to
        its own inbox (the zones), and this needs no server. Only while the parser holds no
        part of a message from the socket, which it then finishes without yielding."""
        parser: Any = getattr(self._nc, "_ps", None)
        if not all(hasattr(parser, name) for name in ("buf", "state", "parse")):
            return False
        came: list[bytes] = []
        try:
            sub = await self.subscribe(self._nc.new_inbox(), lambda *parts: came.append(parts[2]))
        except (NatsError, OSError):
            return False
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + timeout
            while parser.buf or parser.state != _BETWEEN_MESSAGES:
                if loop.time() > end:
                    return False
                await asyncio.sleep(0.01)
            await parser.parse(f"MSG {sub.subject} {_sid(sub)} 2\r\nok\r\n".encode())
        except Exception:  # the parser is not what this module knows: nats-py's own path
            log.debug("direct delivery's check failed", exc_info=True)
            return False
        finally:
            with contextlib.suppress(NatsError, OSError):
                await self.unsubscribe(sub)
        return came == [b"ok"]

    async def subscribe(self, subject: str, handler: RawHandler) -> Subscription:
        """Subscribe ``handler`` to ``subject``; unsubscribe through :meth:`unsubscribe`."""
        if self._original is None:

            async def adapt(msg: Msg) -> None:
                fields = dict(msg.headers or {})
                status = fields.pop("Status", "")
                raw = header_block(fields, status) if fields or status else None
                handler(msg.subject.encode(), msg.reply.encode(), msg.data, raw)

            return await self._nc.subscribe(subject, cb=adapt)
        sub = await self._nc.subscribe(subject)  # no callback: nats-py starts no task for it
        self._handlers[_sid(sub)] = handler
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        self._handlers.pop(_sid(sub), None)
        await sub.unsubscribe()

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self._handlers.get(sid)
        if handler is None:
            if self._original is not None:  # (always: installed only with it)
                await self._original(sid, subject, reply, data, headers)
            return
        stats: Any = self._nc.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        try:
            handler(subject, reply, data, headers)
        except Exception:  # as nats-py does for a callback: log, keep reading
            log.exception("a direct handler failed on %r", subject[:200])

    def publish(
        self, subject: str, payload: bytes, reply: str = "", headers: bytes | None = None
    ) -> None:
        """Queue a message (``headers``: a full header block, see :func:`header_block`) and
        wake the flusher.

        Raises:
            ConnectionClosedError: the connection is closed.
            ConnectionDrainingError: the connection is draining.
            MaxPayloadError: larger than the server takes.
            OutboundBufferLimitError: disconnected and the reconnect buffer is full.
        """
        nc: Any = self._nc
        if nc.is_closed:
            raise ConnectionClosedError
        if nc.is_draining_pubs:
            raise ConnectionDrainingError
        if self._original is None:
            self._publish_slowly(subject, payload, reply, headers)
            return
        size = len(payload)
        if size + len(headers or b"") > nc._max_payload:  # the server would close the connection
            raise MaxPayloadError
        if headers is None:
            line = f"PUB {subject} {reply} {size}\r\n" if reply else f"PUB {subject} {size}\r\n"
            command = b"".join((line.encode(), payload, b"\r\n"))
        else:
            total = len(headers) + size
            line = (
                f"HPUB {subject} {reply} {len(headers)} {total}\r\n"
                if reply
                else f"HPUB {subject} {len(headers)} {total}\r\n"
            )
            command = b"".join((line.encode(), headers, payload, b"\r\n"))
        connected = nc.is_connected
        if not connected and (
            nc._max_pending_size <= 0 or nc._pending_data_size + len(command) > nc._max_pending_size
        ):
            raise OutboundBufferLimitError
        nc._pending.append(command)
        nc._pending_data_size += len(command)
        stats: Any = nc.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += size
        queue: asyncio.Queue[Any] = nc._flush_queue
        if connected and queue.empty():  # one wake of the flusher per batch of publishes
            queue.put_nowait(self._loop.create_future())

    def _publish_slowly(
        self, subject: str, payload: bytes, reply: str, headers: bytes | None
    ) -> None:
        """nats-py's own publish, in a task (tasks started in order append in order)."""
        fields = _header_fields(headers) if headers is not None else None
        task = self._loop.create_task(
            self._nc.publish(subject, payload, reply=reply, headers=fields)
        )
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a publish failed: %s", task.exception())


def header_block(headers: dict[str, str], status: str = "") -> bytes:
    """The raw header block of ``headers`` (keys and values are ours: no line breaks)."""
    lines = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    first = f"NATS/1.0 {status}\r\n".encode() if status else NATS_HEADER_LINE
    return b"".join((first, lines.encode(), b"\r\n"))


def _header_fields(block: bytes) -> dict[str, str]:
    """``block``'s fields (the inverse of :func:`header_block`, status line dropped)."""
    fields: dict[str, str] = {}
    for line in block.decode().split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def status_of(headers: bytes | None) -> bytes:
    """The status code of a raw header block (``b"503"`` for no responders), else b""."""
    if not headers or not headers.startswith(b"NATS/1.0 "):
        return b""
    return headers[9:12]


def _sid(sub: Subscription) -> int:
    sid: Any = getattr(sub, "_id", None)
    if not isinstance(sid, int):
        raise TypeError("nats-py subscription without an integer id")
    return sid
