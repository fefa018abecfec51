"""Asking a NATS server for a PONG without ever cutting the PING short.

``nc.flush(timeout)`` is nats-py's only way to ask: it writes a PING and waits for the PONG
on a future kept in the connection's queue of PINGs. nats-py (2.16) cancels that future when
the flush times out or is cancelled, but leaves it in the queue; when its PONG comes after
all, the read loop sets a result on the cancelled future, dies of ``InvalidStateError``, and
the connection stays "connected" while receiving nothing until nats-py's stale-connection
check reconnects it (30-40 s with :mod:`switchyard.bus.connect`'s pings). So no flush in
Switchyard is given a timeout that can expire or is cancelled: :func:`ping` sends one whose
own timeout is never meant to be reached, and :func:`pong` / :func:`answered` wait for it
within a bound of their own (``asyncio.wait``, which never cancels what it waits for). A ping
left behind ends with its PONG; one whose connection reconnected or closed meanwhile (nats-py
drops the old PINGs without an answer) lives until its own timeout, an hour: it costs a small
task, not a connection.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS
from nats.errors import ConnectionClosedError, FlushTimeoutError
from nats.errors import Error as NatsError

# A ping's own timeout, never meant to be reached (see the module). While it runs, the task is
# held by the event loop through that timeout's timer, so a ping nobody waits for is not lost.
PING_TIMEOUT_S = 3600
_RECONNECT_POLL_S = 0.05  # how often a wait for a reconnecting connection looks again


def ping(nc: NATS) -> asyncio.Task[None]:
    """Send a PING on ``nc``: the task ends when its PONG came (or with the flush's error: a
    closed connection's). Never cancel it (see the module); wait for it with ``asyncio.wait``
    or :func:`pong`. Its error is retrieved when it ends, so none is logged as unread."""
    task = asyncio.ensure_future(nc.flush(timeout=PING_TIMEOUT_S))
    task.add_done_callback(_retrieved)
    return task


async def pong(nc: NATS, within: float) -> None:
    """Return once the server answered a PING on ``nc`` (everything written before it has been
    read by the server), raising ``FlushTimeoutError`` if that takes longer than ``within``
    seconds, or the flush's own error (a closed connection). The PING is not cut short either
    way, nor when the caller is cancelled."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    # A PING asked while nats-py reconnects comes back at once, unsent (its fallback writes
    # its buffer and returns): that is no answer. Wait for the new connection first.
    while not nc.is_connected:
        if nc.is_closed:
            raise ConnectionClosedError
        if loop.time() >= end:
            raise FlushTimeoutError
        await asyncio.sleep(_RECONNECT_POLL_S)
    sent = ping(nc)
    await asyncio.wait((sent,), timeout=max(0.0, end - loop.time()))
    if not sent.done():
        raise FlushTimeoutError
    sent.result()
    if not nc.is_connected:  # it broke meanwhile: nats-py's fallback, not the server, ended it
        raise FlushTimeoutError


async def answered(nc: NATS, within: float) -> bool:
    """Whether the server answered a PING on ``nc`` within ``within`` seconds (False also for
    a connection that failed, is closed, or is still reconnecting at the end): :func:`pong`
    for callers that only need to know."""
    try:
        await pong(nc, within)
    except (NatsError, TimeoutError):
        return False
    return True


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
