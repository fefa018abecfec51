"""A model-proxy whose NATS connection reconnects while it sends an answer in acknowledged
parts, on a real nats-server restarted under it: the parts the old socket held are lost, not
left unacknowledged by a caller gone, so the answer stays for the replay after the reconnect
(:func:`switchyard.workers.modelproxy.replay.replay_needed`), which sends its parts again
with a fresh window, rather than ending the request 499 ``caller_gone``."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from subprocess import DEVNULL
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import part_acks, parts, replies
from switchyard.bus.envelope import Envelope
from switchyard.errors import ApiError
from switchyard.stack import binaries
from switchyard.stack.ports import accepting
from switchyard.workers.modelproxy import billing, whole
from switchyard.workers.modelproxy.billing import CLIENT_CLOSED
from switchyard.workers.modelproxy.cancels import Cancels
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.replay import replay_needed
from tests.support import free_port, until

pytestmark = pytest.mark.integration

ANSWER = bytes(range(256)) * 40_000  # ~10 MB: past one message, ten parts of 1 MiB


class _Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            str(binaries.nats_server()),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            stdout=DEVNULL,
            stderr=DEVNULL,
        )
        await accepting(self.port)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


@pytest_asyncio.fixture
async def server() -> AsyncIterator[_Server]:
    server = _Server()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _job(proxy: NATS, reply: str) -> Job:
    stored = time.time_ns()
    msg = Msg(
        _client=None,  # type: ignore[arg-type]  # never used: nothing is acked here
        subject="llm.v1.dispatch.dep",
        reply=f"$JS.ACK.DISPATCH.mp.1.7.7.{stored}.0",
        data=b"{}",
    )
    env = Envelope.decode(
        {h.REQUEST_ID: "r1", h.PARTS_MAX: str(len(ANSWER) * 2), h.PARTS_ACK: "1"}
    ).with_(reply=reply)
    inflight = InFlight(reply=reply, msg=msg, last_sent=0.0, last_progress=0.0, out=proxy)
    return Job(msg=msg, env=env, deployment_id="dep", inflight=inflight)


async def test_parts_lost_in_a_reconnect_are_sent_again_not_ended_as_caller_gone(
    server: _Server,
) -> None:
    url = f"nats://127.0.0.1:{server.port}"
    options = {"reconnect_time_wait": 0.1, "max_reconnect_attempts": -1}
    proxy = await nats.connect(url, **options)
    caller = await nats.connect(url, **options)
    came: list[Msg] = []
    acking = asyncio.Event()

    async def on_reply(msg: Msg) -> None:
        came.append(msg)
        if msg.reply and acking.is_set():  # (acknowledges nothing before the reconnect)
            await caller.publish(msg.reply, b"")

    try:
        inbox = caller.new_inbox()
        await caller.subscribe(inbox, cb=on_reply)
        await caller.flush()
        job = _job(proxy, inbox)
        job.answer = ANSWER
        sending = asyncio.create_task(whole.send_final(proxy, job, ANSWER, end=True))
        await until(lambda: len(came) >= 2)
        await server.stop()  # the parts not yet acknowledged go with the old sockets
        await server.start()
        await until(lambda: proxy.is_connected and caller.is_connected)
        await caller.flush()
        acking.set()
        await asyncio.wait_for(sending, 30)  # its ``ACK_WAIT_S``, then it ends
        assert job.answer == ANSWER, "the answer was replaced: the replay would not send it"
        reconnected = proxy.stats["reconnects"] != job.reconnects
        assert replay_needed(answered=True, ended=job.ended, reconnected=reconnected)
        came.clear()
        await whole.send_final(proxy, job, ANSWER, end=True)  # as the handler's replay does
        await until(lambda: bool(came) and not came[-1].data and not came[-1].headers)
    finally:
        await caller.close()
        await proxy.close()
    kinds = [(m.headers or {}).get(h.KIND) for m in came[:-1]]
    assert kinds[-1] == replies.ReplyKind.FINAL.value
    assert b"".join(m.data for m in came[:-2]) == ANSWER  # every part, in order, again


async def test_a_replay_whose_parts_keep_being_lost_ends_with_an_error(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay's send of the parts is cut by a reconnect again, and again: it is sent
    again while that lasts, at most ``PARTS_SENDS`` times, then the caller gets 502
    ``stream_interrupted`` and the terminator. Before, the replay's send returned with
    nothing sent after the second reconnect and the job was acked: the caller got no final,
    no error, no terminator and waited for its deadline."""
    monkeypatch.setattr(  # the real send, with a 1 s acknowledgement wait (not 10 s)
        whole, "send_acked_parts", functools.partial(part_acks.send_acked_parts, wait_s=1.0)
    )
    url = f"nats://127.0.0.1:{server.port}"
    options = {"reconnect_time_wait": 0.1, "max_reconnect_attempts": -1}
    proxy = await nats.connect(url, **options)
    caller = await nats.connect(url, **options)
    came: list[Msg] = []
    parts = asyncio.Event()

    async def on_reply(msg: Msg) -> None:  # (acknowledges nothing: the parts get lost)
        came.append(msg)
        if msg.reply:
            parts.set()

    async def reconnecting() -> None:  # a reconnect under every send of the parts
        while True:
            await parts.wait()
            parts.clear()
            await server.stop()
            await server.start()
            await until(lambda: proxy.is_connected and caller.is_connected)
            await caller.flush()

    cuts = asyncio.create_task(reconnecting())
    try:
        inbox = caller.new_inbox()
        await caller.subscribe(inbox, cb=on_reply)
        await caller.flush()
        job = _job(proxy, inbox)
        job.answer = ANSWER
        await asyncio.wait_for(whole.replay_final(proxy, job, ANSWER), 60)
        cuts.cancel()
        await until(lambda: bool(came) and not came[-1].data and not came[-1].headers)
    finally:
        cuts.cancel()
        await caller.close()
        await proxy.close()
    error = came[-2]
    assert (error.headers or {}).get(h.KIND) == replies.ReplyKind.ERROR.value
    assert b"stream_interrupted" in error.data
    ended: object = job.answer  # (the error now: a replay sends it, not the parts)
    assert isinstance(ended, ApiError)
    assert ended.status == 502
    # Billed as what its caller got (the handler bills after the replay): before, the job kept
    # status 200 and was billed as the request's answer though its caller got a 502.
    assert job.status == 502
    event = billing.usage_event(job, None, estimated=False)
    assert event.status == 502
    assert not event.id.endswith(":answered")


async def test_a_cancel_after_the_last_part_leaves_the_answer_delivered(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that lands once every part went out, while the send cleans up (its
    unsubscribe can yield, ``job.parts_stop`` still set), came too late to stop anything:
    the final goes out and the job is not marked cancelled (before, it was: counted as
    cancelled, not answered, and a replay sent the end of a caller gone instead of the
    parts, though the answer was delivered). The cancel is
    made to land there by the real send's wrapper, as ``Cancels`` lands one."""
    real = part_acks.send_acked_parts

    async def then_cancelled(*args: Any, **kwargs: Any) -> int:
        count = await real(*args, **kwargs)
        Cancels.gone(job)  # (during the real one's unsubscribe: parts_stop still set)
        return count

    monkeypatch.setattr(whole, "send_acked_parts", then_cancelled)
    url = f"nats://127.0.0.1:{server.port}"
    proxy = await nats.connect(url)
    caller = await nats.connect(url)
    came: list[Msg] = []

    async def on_reply(msg: Msg) -> None:
        came.append(msg)
        if msg.reply:
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
    assert not job.cancelled
    assert job.status != CLIENT_CLOSED
    kinds = [(m.headers or {}).get(h.KIND) for m in came[:-1]]
    assert kinds[-1] == replies.ReplyKind.FINAL.value


async def test_a_replay_cut_after_its_last_part_is_sent_again(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconnect right after the replay's last part went: the last window's parts are not
    waited for, so they and the final may have gone with the old socket. Before, the replay
    returned (its caller, missing them, waited in silence for its deadline); now it sends the
    answer again, as when a reconnect cuts the parts."""
    real = part_acks.send_acked_parts
    sends = 0

    async def then_reconnected(*args: Any, **kwargs: Any) -> int:
        nonlocal sends
        sends += 1
        count = await real(*args, **kwargs)
        if sends == 1:  # the first send only: the server restarts under it, after its parts
            await server.stop()
            await server.start()
            await until(lambda: proxy.is_connected and caller.is_connected)
            await caller.flush()
        return count

    monkeypatch.setattr(whole, "send_acked_parts", then_reconnected)
    url = f"nats://127.0.0.1:{server.port}"
    options = {"reconnect_time_wait": 0.1, "max_reconnect_attempts": -1}
    proxy = await nats.connect(url, **options)
    caller = await nats.connect(url, **options)
    came: list[Msg] = []

    async def on_reply(msg: Msg) -> None:
        came.append(msg)
        if msg.reply:
            await caller.publish(msg.reply, b"")

    try:
        inbox = caller.new_inbox()
        await caller.subscribe(inbox, cb=on_reply)
        await caller.flush()
        job = _job(proxy, inbox)
        job.answer = ANSWER
        await asyncio.wait_for(whole.replay_final(proxy, job, ANSWER), 60)
        await until(lambda: bool(came) and not came[-1].data and not came[-1].headers)
    finally:
        await caller.close()
        await proxy.close()
    assert sends == 2
    assert not job.parts_lost
    assert job.answer == ANSWER
    kinds = [(m.headers or {}).get(h.KIND) for m in came[:-1]]
    assert kinds[-1] == replies.ReplyKind.FINAL.value


async def test_a_cancel_stops_a_replay_of_parts(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel landing while a replay sends an answer's parts (here back-to-back, to a
    caller that does not acknowledge them) stops it: no final, the caller's end, the job
    cancelled and billed as one whose caller left. Before, the answer counted as out
    (``Job.done``) and the cancel was ignored: the parts and the final went on to a caller
    gone, billed as answered."""
    real = parts.send_parts

    async def cancelled_meanwhile(*args: Any, **kwargs: Any) -> int:
        Cancels.gone(job)  # (while the replay's parts go out)
        return await real(*args, **kwargs)

    monkeypatch.setattr(whole, "send_parts", cancelled_meanwhile)
    url = f"nats://127.0.0.1:{server.port}"
    proxy = await nats.connect(url)
    caller = await nats.connect(url)
    came: list[Msg] = []

    async def on_reply(msg: Msg) -> None:
        came.append(msg)

    try:
        inbox = caller.new_inbox()
        await caller.subscribe(inbox, cb=on_reply)
        await caller.flush()
        job = _job(proxy, inbox)
        job.env = job.env.with_(parts_ack=False)
        job.answer = ANSWER
        await asyncio.wait_for(whole.replay_final(proxy, job, ANSWER), 30)
        await until(lambda: bool(came) and not came[-1].data and not came[-1].headers)
    finally:
        await caller.close()
        await proxy.close()
    assert job.cancelled
    assert job.status == CLIENT_CLOSED
    kinds = {(m.headers or {}).get(h.KIND) for m in came}
    assert replies.ReplyKind.FINAL.value not in kinds


async def test_a_cancel_during_a_replays_final_is_too_late(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that lands while a replay's final goes out comes too late, as one after the
    last part of a first send does: the answer is delivered, the job not marked cancelled."""
    real = whole._final

    def cancelled_meanwhile(*args: Any, **kwargs: Any) -> Any:
        Cancels.gone(job)
        return real(*args, **kwargs)

    monkeypatch.setattr(whole, "_final", cancelled_meanwhile)
    url = f"nats://127.0.0.1:{server.port}"
    proxy = await nats.connect(url)
    caller = await nats.connect(url)
    came: list[Msg] = []

    async def on_reply(msg: Msg) -> None:
        came.append(msg)
        if msg.reply:
            await caller.publish(msg.reply, b"")

    try:
        inbox = caller.new_inbox()
        await caller.subscribe(inbox, cb=on_reply)
        await caller.flush()
        job = _job(proxy, inbox)
        job.answer = ANSWER
        with job.replay():
            await asyncio.wait_for(whole.replay_final(proxy, job, ANSWER), 30)
        await until(lambda: bool(came) and not came[-1].data and not came[-1].headers)
    finally:
        await caller.close()
        await proxy.close()
    assert not job.cancelled
    kinds = [(m.headers or {}).get(h.KIND) for m in came[:-1]]
    assert kinds[-1] == replies.ReplyKind.FINAL.value
