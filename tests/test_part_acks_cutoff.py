"""The cutoff of an answer's acknowledged parts grows with the answer (docs/nats-api.md,
"Acknowledging parts"): a caller reading a large answer steadily is not cut by a flat limit,
on a real nats-server."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import part_acks, replies
from switchyard.workers.modelproxy import whole
from tests.support import until
from tests.test_part_acks_reconnect import ANSWER, _job, _Server, server  # noqa: F401

pytestmark = pytest.mark.integration


def test_the_limit_is_the_flat_one_and_a_second_per_mib() -> None:
    assert part_acks.send_limit(0) == part_acks.SEND_MAX_S
    assert part_acks.send_limit(1024**3) == part_acks.SEND_MAX_S + 1024  # 1 GiB: 1144 s


async def test_a_large_answer_read_steadily_is_not_cut_by_the_flat_cutoff(
    server: _Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flat part made 1 s (it is 120 s): ~10 MB read at ~3 parts a second takes ~3 s.
    Before, the cutoff was the flat 120 s whatever the size (here 1 s): the request ended 499
    ``caller_gone`` midway; now it is 1 s and ~10 s for its ~10 MiB, and the answer goes out
    whole."""
    monkeypatch.setattr(part_acks, "SEND_MAX_S", 1.0)
    monkeypatch.setattr(whole, "SEND_MAX_S", 1.0, raising=False)  # (the old module's copy)
    url = f"nats://127.0.0.1:{server.port}"
    proxy = await nats.connect(url)
    caller = await nats.connect(url)
    came: list[Msg] = []

    async def on_reply(msg: Msg) -> None:
        came.append(msg)
        if msg.reply:  # a part: acknowledged after a while, as a slow reader does
            await asyncio.sleep(0.3)
            await caller.publish(msg.reply, b"")

    try:
        inbox = caller.new_inbox()
        await caller.subscribe(inbox, cb=on_reply)
        await caller.flush()
        job = _job(proxy, inbox)
        job.answer = ANSWER
        await asyncio.wait_for(whole.send_final(proxy, job, ANSWER, end=True), 30)
        await until(lambda: bool(came) and not came[-1].data and not came[-1].headers)
    finally:
        await caller.close()
        await proxy.close()
    assert job.answer == ANSWER  # not replaced by caller_gone
    kinds = [(m.headers or {}).get(h.KIND) for m in came[:-1]]
    assert kinds[-1] == replies.ReplyKind.FINAL.value
    assert b"".join(m.data for m in came[:-2]) == ANSWER
