"""An expired held request's delete that HOLD answers "no leader" is tried again, not given up.

In a cluster, nats-server answers a message delete itself while the stream has no leader (an
election): 503, ``err_code`` 10008, "JetStream system temporarily unavailable". That is an
answer, not a timeout, and the feeder took every answer but "no such message" for a refusal:
it gave the delete up at once, and the purge then dropped the request with no 504 to its
caller, in the very case the retry is for. Now a 503 is tried again like a timeout.

A plain nats-server (no JetStream, so nothing but this test answers the JetStream API
subject) and a responder that answers the first delete "no leader", the next one done.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from switchyard.bus import subjects
from switchyard.control.heldexpiry import Taken, take
from switchyard.stack import binaries
from switchyard.stack.ports import accepting
from tests.support import flushed, free_port

pytestmark = pytest.mark.integration

DELETE = f"$JS.API.STREAM.MSG.DELETE.{subjects.HOLD_STREAM}"
NO_LEADER = {
    "type": "io.nats.jetstream.api.v1.stream_msg_delete_response",
    "error": {
        "code": 503,
        "err_code": 10008,
        "description": "JetStream system temporarily unavailable",
    },
}
SEALED = {
    "type": "io.nats.jetstream.api.v1.stream_msg_delete_response",
    "error": {"code": 400, "err_code": 10109, "description": "invalid operation on sealed stream"},
}
DONE = {"type": "io.nats.jetstream.api.v1.stream_msg_delete_response", "success": True}


async def _answering(
    first: Mapping[str, object], then: Mapping[str, object]
) -> tuple[int, list[int]]:
    """How ``take`` ends when HOLD answers ``first``, then ``then``; and the seqs asked."""
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        str(binaries.nats_server()),
        *["-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await accepting(port)
        hold = await nats.connect(f"nats://127.0.0.1:{port}")
        feeder = await nats.connect(f"nats://127.0.0.1:{port}")
        asked: list[int] = []

        async def answer(msg: Msg) -> None:
            asked.append(msgspec.json.decode(msg.data)["seq"])
            await msg.respond(msgspec.json.encode(first if len(asked) == 1 else then))

        await hold.subscribe(DELETE, cb=answer)
        await flushed(hold)
        try:
            taken = await take(feeder, 41, tries=3)
        finally:
            await feeder.close()
            await hold.close()
        return list(Taken).index(taken), asked
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)


async def test_a_delete_answered_no_leader_is_tried_again_and_goes_through() -> None:
    index, asked = await _answering(NO_LEADER, DONE)
    assert list(Taken)[index] is Taken.MINE  # (was REFUSED: given up at the first answer)
    assert asked == [41, 41]


async def test_a_definite_refusal_is_still_given_up_at_once() -> None:
    index, asked = await _answering(SEALED, DONE)
    assert list(Taken)[index] is Taken.REFUSED
    assert asked == [41]
