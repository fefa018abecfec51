"""Reading the cancels the server stored back into a model-proxy's memory
(``workers.modelproxy.stored_cancels``), on a real nats-server: what counts, what is skipped,
and the bounds of a read (count, time, a missing stream).

The end-to-end case (every model-proxy stopped, a caller leaves, the next model-proxies drop
its queued request) is in ``test_cancel``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.bus.cancel_proof import cancel_proof
from switchyard.config import load_settings
from switchyard.runtime.definitions import cancels_stream_config
from switchyard.schemas.keys import hash_key
from switchyard.workers.modelproxy.cancels import CancelMemory, Cancels
from switchyard.workers.modelproxy.stored_cancels import StoredCancels
from tests.support import jetstream_server, pause

pytestmark = pytest.mark.integration

KEY = "sk-sy-replay"
KEY_HASH = hash_key(KEY)
TAIL_INFO = '{"acc":"CLIENT","user":"CN=tail,OU=client,O=Switchyard"}'


async def _stream(nc: NATS, tmp_path: Path) -> None:
    settings = load_settings(None, env={}, overrides={"home": str(tmp_path)})
    await nc.jetstream(timeout=10).add_stream(cancels_stream_config(settings))


async def _stored(nc: NATS, tmp_path: Path, count: int) -> None:
    """Wait until the stream holds ``count`` cancels: a flush says the server read them, and
    the stream stores them after (on a loaded machine, a read may otherwise come first)."""
    settings = load_settings(None, env={}, overrides={"home": str(tmp_path)})
    js = nc.jetstream(timeout=10)
    name = cancels_stream_config(settings).name
    assert name is not None
    async with asyncio.timeout(10):
        while (await js.stream_info(name)).state.messages < count:
            await asyncio.sleep(0.02)


async def _cancel(nc: NATS, request_id: str, **extra: str) -> None:
    """A cancel of ``request_id`` with the proof of ``KEY`` (and ``extra`` headers)."""
    headers = {h.REQUEST_ID: request_id, h.CANCEL_PROOF: cancel_proof(KEY_HASH, request_id)}
    await nc.publish(subjects.CANCEL, b"", headers=headers | extra)


async def test_stored_cancels_count_by_their_proof_and_the_rest_is_skipped(
    tmp_path: Path,
) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        await _stream(nc, tmp_path)
        deadline = str(int((time.time() + 300) * 1000))
        await _cancel(nc, "proved", **{h.DEADLINE: deadline, h.ATTEMPT: "2"})
        # An older client's cancel presents the key itself: it still counts.
        await nc.publish(
            subjects.CANCEL, b"", headers={h.REQUEST_ID: "presented", h.AUTHORIZATION: KEY}
        )
        # A key hash counts only from an edge's identity, which a stored copy does not carry
        # (a value claiming one, whoever wrote it, is not believed).
        await nc.publish(
            subjects.CANCEL,
            b"",
            headers={h.REQUEST_ID: "hashed", h.KEY_HASH: KEY_HASH, h.REQUEST_INFO: TAIL_INFO},
        )
        # What is no cancel: skipped, and the read goes on past it.
        await nc.publish(subjects.CANCEL, b"no headers at all")
        await nc.publish(subjects.CANCEL, b"", headers={h.CANCEL_PROOF: "0" * 64})
        await _cancel(nc, "bad id with spaces")
        await _cancel(nc, "bad-deadline", **{h.DEADLINE: "tomorrow"})
        await _cancel(nc, "bad-attempt", **{h.ATTEMPT: "0"})
        await _cancel(nc, "long-state", **{h.TRACESTATE: "x" * 600})
        await nc.publish(
            subjects.CANCEL, b"", headers={h.REQUEST_ID: "short-proof", h.CANCEL_PROOF: "ab"}
        )
        await _cancel(nc, "last")
        await nc.flush()
        await _stored(nc, tmp_path, 11)  # a CI run read the stream before any was stored

        cancels = Cancels(CancelMemory())
        reading = await StoredCancels(nc, cancels).read()

        assert (reading.heard, reading.skipped, reading.complete) == (3, 8, True)
        assert reading.last_seq == 11
        memory = cancels.memory
        assert memory.holds("proved", KEY_HASH, 2)
        assert not memory.holds("proved", KEY_HASH, 3)  # a later attempt is served
        assert not memory.holds("proved", hash_key("another key"), 1)
        assert memory.holds("presented", KEY_HASH, 1)
        assert memory.holds("last", KEY_HASH, 1)
        assert not memory.holds("hashed", KEY_HASH, 1)
        assert len(memory) == 3


async def test_a_read_takes_the_newest_up_to_its_limit_then_goes_on_from_there(
    tmp_path: Path,
) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        await _stream(nc, tmp_path)
        for i in range(10):
            await _cancel(nc, f"r{i}")
        await _stored(nc, tmp_path, 10)
        cancels = Cancels(CancelMemory())
        stored = StoredCancels(nc, cancels, limit=3)

        first = await stored.read()
        assert (first.heard, first.complete, first.last_seq) == (3, True, 10)
        kept = [f"r{i}" for i in range(10) if cancels.memory.holds(f"r{i}", KEY_HASH, 1)]
        assert kept == ["r7", "r8", "r9"]

        for i in range(10, 12):  # sent while this model-proxy was cut off
            await _cancel(nc, f"r{i}")
        await _stored(nc, tmp_path, 12)
        again = await stored.read()
        assert (again.heard, again.last_seq) == (2, 12)  # only what came since
        assert cancels.memory.holds("r11", KEY_HASH, 1)
        assert len(cancels.memory) == 5
        assert (await stored.read()).heard == 0  # nothing new


async def test_a_stored_cancel_is_remembered_from_when_it_was_sent(tmp_path: Path) -> None:
    """A cancel without a deadline counts for the edges' default deadline from when it was
    stored, not from when a model-proxy read it."""
    async with jetstream_server(tmp_path) as (nc, _):
        await _stream(nc, tmp_path)
        before = time.time()
        await _cancel(nc, "old")
        await nc.flush()
        await _stored(nc, tmp_path, 1)
        after = time.time()  # the server stored it in between (a loaded machine: seconds)
        now = [before + 599]  # read late in its window: it still counts, until its end
        cancels = Cancels(CancelMemory(default_s=600, clock=lambda: now[0]))
        await StoredCancels(nc, cancels).read()
        assert cancels.memory.holds("old", KEY_HASH, 1)
        now[0] = after + 601
        assert not cancels.memory.holds("old", KEY_HASH, 1)

        late = Cancels(CancelMemory(default_s=600, clock=lambda: now[0]))
        assert (await StoredCancels(nc, late).read()).heard == 1  # read, but past its end
        assert len(late.memory) == 0


async def test_a_read_that_cannot_finish_gives_up_in_its_time(tmp_path: Path) -> None:
    """A server that does not answer (here stopped with SIGSTOP) or a missing stream: the
    model-proxy starts anyway, without an error."""
    async with jetstream_server(tmp_path) as (nc, server):
        missing = await StoredCancels(nc, Cancels(CancelMemory())).read()
        assert (missing.heard, missing.complete) == (0, False)

        await _stream(nc, tmp_path)
        await _cancel(nc, "r1")
        await nc.flush()
        await _stored(nc, tmp_path, 1)
        await pause(server.pid)
        try:
            stalled = await StoredCancels(nc, Cancels(CancelMemory()), budget_s=0.5).read()
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert (stalled.heard, stalled.complete) == (0, False)
        assert (await StoredCancels(nc, Cancels(CancelMemory())).read()).heard == 1
