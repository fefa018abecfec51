"""Read everything a JetStream pull consumer holds, a page bounded in bytes at a time.

nats-py's ``fetch`` bounds a page by its number of messages only. A page of large messages can
then pass the subscription's pending limit, where nats-py drops messages and tells the reader
nothing (with no acknowledgements they are not sent again), and it waits on a timer for every
message. This asks for at most ``PAGE_BYTES`` a page, hears each message in one callback, and
checks that the consumer's sequence has no gap, so a reader gets every message or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.errors import BusError

PAGE_MESSAGES = 256
PAGE_BYTES = 16 * 1024 * 1024  # above NATS's largest payload: a page always holds one
PAGE_WAIT_S = 30.0  # the server answers at once; this is for a server that cannot
_JSON = msgspec.json.Encoder()


class _Page:
    """The messages of one pull request as they arrive; ``ended`` once all came, or a status
    (no messages, the byte limit reached, the batch completed) closed the request. Each
    request has its own reply subject, so a status a server sends late for the one before
    (a "batch completed" after a page that ended by count) cannot end this one."""

    def __init__(self, inbox: str) -> None:
        self._inbox = inbox
        self._asked = 0
        self.reply = ""
        self.msgs: list[Msg] = []
        self.want = 0
        self.ended = asyncio.Event()

    def start(self, want: int) -> None:
        self._asked += 1
        self.reply = f"{self._inbox}.{self._asked}"
        self.msgs = []
        self.want = want
        self.ended.clear()

    async def on_msg(self, msg: Msg) -> None:
        if not msg.reply:  # a status message (404, 408, 409): its request is over
            if msg.subject == self.reply:
                self.ended.set()
            return
        self.msgs.append(msg)
        if len(self.msgs) >= self.want:
            self.ended.set()


async def read_all(nc: NATS, stream: str, consumer: str, pending: int) -> AsyncGenerator[Msg]:
    """Every message of the pull consumer ``consumer`` of ``stream`` (``pending``: how many it
    has, from its info), in order. The consumer must not acknowledge (``ack_policy`` none).

    Raises:
        BusError: a page did not come within ``PAGE_WAIT_S``, or a message is missing.
    """
    inbox = nc.new_inbox()
    page = _Page(inbox)
    sub = await nc.subscribe(f"{inbox}.*", cb=page.on_msg)
    api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
    seen = 0
    try:
        while pending > 0:
            page.start(min(pending, PAGE_MESSAGES))
            # ``no_wait``: what is there now, then a 404, rather than waiting for more.
            ask = {"batch": page.want, "max_bytes": PAGE_BYTES, "no_wait": True}
            await nc.publish(api, _JSON.encode(ask), reply=page.reply)
            try:
                await asyncio.wait_for(page.ended.wait(), PAGE_WAIT_S)
            except TimeoutError:
                # A page that fills the byte limit exactly ends with no status: what came is
                # the page (the checks below still see any gap). Nothing at all: no answer.
                if not page.msgs:
                    raise BusError(
                        f"reading {stream}: no answer within {PAGE_WAIT_S:.0f} s"
                    ) from None
            if not page.msgs:
                raise BusError(f"reading {stream}: {pending} messages pending, none sent")
            for msg in page.msgs:
                meta = msg.metadata
                if meta.sequence.consumer != seen + 1:  # dropped on the way: never sent again
                    raise BusError(f"reading {stream}: message {seen + 1} went missing")
                seen = meta.sequence.consumer
                pending = meta.num_pending
                yield msg
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
