"""Flow control for ordered push consumers without nats-py's quarter-second poll.

A push consumer with flow control (every ordered consumer, so every KV watch) must answer the
server's flow-control requests once the application has the messages sent before them. nats-py
answers at once when it can, and for the other case gives every such subscription a task that
looks four times a second, for the life of the subscription, whether or not anything waits.
That poll was most of an idle platform's CPU: each wake-up costs ~0.2 ms here, so ~0.08% of a
core per consumer (10 KV watches in one process: 0.97% of a core with the polls, 0.13% without),
and every process follows several buckets.

:func:`quiet_flow_control` swaps that task for one that sleeps until nats-py schedules an
answer, then looks every 20 ms until the answer is sent. For callback subscriptions (all of
Switchyard's) nats-py always answers at once, so the new task normally never wakes. It touches
nats-py's private subscription state; if that state is not what it expects (another nats-py
version), it leaves nats-py's own poll in place and says so at debug level: slower, never wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("switchyard.bus")

_POLL_S = 0.02  # while an answer waits for the messages before it to be handed over
# A connection closed without unsubscribing (nats-py's own tasks end then) ends this one too.
_IDLE_CHECK_S = 30.0


def quiet_flow_control(subscription: Any) -> bool:
    """Replace the flow-control poll of ``subscription`` (what ``js.subscribe`` returned, or a
    KV watcher's ``_sub``); True if it was replaced."""
    core: Any = getattr(subscription, "_sub", None)
    jsi: Any = getattr(core, "_jsi", None)
    poll = getattr(jsi, "_fctask", None)
    schedule = getattr(jsi, "schedule_flow_control_response", None)
    expected = ("_fcr", "_fcd", "_fciseq", "_conn")
    if (
        not isinstance(poll, asyncio.Task)
        or not callable(schedule)
        or not all(hasattr(jsi, name) for name in expected)
        or not isinstance(getattr(core, "_pending_queue", None), asyncio.Queue)
    ):
        log.debug("left nats-py's flow-control poll in place on %r", subscription)
        return False
    asked = asyncio.Event()

    def schedule_and_wake(reply: str) -> None:
        schedule(reply)
        asked.set()

    poll.cancel()
    jsi.schedule_flow_control_response = schedule_and_wake
    # nats-py cancels ``_fctask`` when the subscription ends, so it cancels this task too.
    jsi._fctask = asyncio.get_running_loop().create_task(_answer(jsi, core._pending_queue, asked))
    return True


async def _answer(jsi: Any, pending: asyncio.Queue[Any], asked: asyncio.Event) -> None:
    """Send each scheduled answer once the messages delivered before its request have left the
    subscription's queue (nats-py's own condition)."""
    while not jsi._conn.is_closed:  # a closed connection ends it within _IDLE_CHECK_S
        try:
            await asyncio.wait_for(asked.wait(), _IDLE_CHECK_S)
        except TimeoutError:
            continue
        asked.clear()
        while jsi._fcr:
            if jsi._conn.is_closed:
                return
            if jsi._fciseq - pending.qsize() >= jsi._fcd:
                reply, jsi._fcr, jsi._fcd = jsi._fcr, None, 0
                with contextlib.suppress(Exception):  # as nats-py's poll: the next one retries
                    await jsi._conn.publish(reply)
                break
            await asyncio.sleep(_POLL_S)
