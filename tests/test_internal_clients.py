"""Internal clients (``nats.internal_clients``) against a whole stack with the real head.

They live in the INTERNAL account, which imports the LLM API from CORE and nothing else. What
they still do: chat, streamed and not, list models, cancel a stream they leave, and get answers
after a reroute. What they no longer can: aim the head's answer at a CLIENT stream or bucket by
naming its subject as the reply subject of a request (nats-server does not check reply
subjects against publish permissions, and delivers the answer in the requester's account).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.bus.replies import ReplyKind
from switchyard.client import LLMClient
from switchyard.schemas.events import LEFT
from switchyard.workers.modelproxy.billing import CLIENT_CLOSED
from switchyard.workers.modelproxy.probes import GONE_AFTER_S, NEVER_ANSWERED, NOTICED_WITHIN_S
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "over nats"}]}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def internal(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    routes: dict[str, Any] = {
        alias: {"deployments": [{"provider": "fake", "model": model}]}
        for alias, model in {
            "echo": "echo",
            "trickle": "trickle:50",
            "crawl": "trickle:100",
        }.items()
    }
    # A deployment that fails, then the fallback: the answer comes from a rerouted request.
    routes["failover"] = {
        "deployments": [{"provider": "fake", "model": "status:500"}],
        "fallbacks": ["echo"],
    }
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 8}
        },
        "routes": routes,
    }
    stack = await start_stack(tmp_path_factory.mktemp("internal"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def test_internal_client_chats_streamed_and_not(internal: Stack) -> None:
    nc = await internal.connect("app")
    try:
        async with LLMClient(nc, api_key=internal.api_key) as llm:
            answer = await llm.chat(CHAT)
            chunks = [c async for c in llm.chat_stream(CHAT)]
            models = await llm.models()
            rerouted = await llm.chat({**CHAT, "model": "failover"})
    finally:
        await nc.close()
    assert answer["choices"][0]["message"]["content"] == "echo: over nats"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo: over nats"
    assert {"echo", "trickle", "failover"} <= set(models)
    assert rerouted["choices"][0]["message"]["content"] == "echo: over nats"


async def test_internal_client_cancels_a_stream_it_leaves(
    internal: Stack, upstream: FakeOpenAI
) -> None:
    """``llm.v1.cancel`` reaches the model-proxies from INTERNAL: the provider call stops long
    before its 300 chunks (15 s)."""
    nc = await internal.connect("app")
    cuts = upstream.cut.count("trickle:50")
    try:
        async with LLMClient(nc, api_key=internal.api_key) as llm:
            # An async generator: closing it early is what sends the cancel.
            stream = cast(AsyncGenerator[Any], llm.chat_stream({**CHAT, "model": "trickle"}))
            async with contextlib.aclosing(stream) as chunks:
                seen = 0
                async for _ in chunks:
                    seen += 1
                    if seen == 3:
                        break  # closing the stream sends the cancel
            began = time.monotonic()
            while upstream.cut.count("trickle:50") == cuts and time.monotonic() - began < 10:
                await asyncio.sleep(0.1)
    finally:
        await nc.close()
    assert upstream.cut.count("trickle:50") == cuts + 1


async def test_a_caller_that_crashes_mid_stream_is_noticed_and_billed_as_left(
    internal: Stack, upstream: FakeOpenAI
) -> None:
    """An ``LLMClient`` answers the model-proxy's probes; when its connection dies mid-stream
    without a cancel (a crash), the probes go unanswered and the provider call (300 chunks,
    30 s) stops within ``NOTICED_WITHIN_S``, billed like a cancel (``:left``, 499) for what
    was produced, not as answered."""
    nc = await internal.connect("app")
    cuts = upstream.cut.count("trickle:100")
    request_id = f"crash-{time.time_ns()}"
    body = json.dumps({**CHAT, "model": "crawl", "stream": True}).encode()
    chunks = 0
    llm = LLMClient(nc, api_key=internal.api_key)
    await llm.start()
    try:
        envelope = {h.REQUEST_ID: request_id}
        stream = cast(AsyncGenerator[Any], llm.exchange(subjects.CHAT, body, envelope))
        began = time.monotonic()
        async for reply in stream:
            chunks += reply.kind is ReplyKind.CHUNK
            if time.monotonic() - began > 3:  # a probe was answered meanwhile
                await nc.close()  # the crash: no cancel can go out now
                break
        await stream.aclose()
    finally:
        with contextlib.suppress(Exception):  # its connection is gone
            await llm.close()
    crashed = time.monotonic()
    while (
        upstream.cut.count("trickle:100") == cuts
        and time.monotonic() - crashed < NOTICED_WITHIN_S + 5
    ):
        await asyncio.sleep(0.1)
    took = time.monotonic() - crashed
    assert upstream.cut.count("trickle:100") == cuts + 1
    assert took < NOTICED_WITHIN_S + 1, took
    event = await internal.usage_of(request_id)
    assert event is not None
    assert event.status == CLIENT_CLOSED
    assert event.id.endswith(f":{LEFT}")
    # Billed at least the text it got: "t0", then " t1" and on (3 bytes or more each).
    assert -(-(3 * chunks - 1) // 4) <= event.completion_tokens < 300


async def test_a_caller_stopped_for_unanswered_probes_is_told_why(internal: Stack) -> None:
    """A caller that answered probes, then let them go unanswered while it still reads (its
    answers lost or late), is stopped no sooner than ``GONE_AFTER_S`` after it fell silent, and
    what ends its reply is an error saying why (``caller_gone``, 499), not a bare terminator."""
    nc = await internal.connect("app")
    body = json.dumps({**CHAT, "model": "crawl", "stream": True}).encode()
    headers = {h.AUTHORIZATION: f"Bearer {internal.api_key}"}
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(subjects.CHAT, body, reply=inbox, headers=headers)
        began = time.monotonic()
        silent_since: float | None = None
        last: Any = None
        while True:
            msg = await sub.next_msg(timeout=NOTICED_WITHIN_S + 5)
            if not msg.data and not msg.headers:
                break  # the terminator
            last = msg
            if msg.reply and time.monotonic() - began < 3:
                await nc.publish(msg.reply, b"")  # answered, then no more
            elif msg.reply and silent_since is None:
                silent_since = time.monotonic()
        stopped = time.monotonic()
    finally:
        await nc.close()
    assert silent_since is not None
    assert stopped - silent_since >= GONE_AFTER_S - 1
    assert last.headers[h.KIND] == ReplyKind.ERROR.value
    assert last.headers[h.STATUS] == "499"
    assert json.loads(last.data)["error"]["code"] == "caller_gone"


async def test_callers_that_stay_are_served_whole_whether_they_answer_probes_or_not(
    internal: Stack,
) -> None:
    """Probes stop only a caller that answered some and then fell silent: an ``LLMClient``
    (which answers them, probed every few seconds all along) and a raw subscriber (which
    ignores them, as keep-alives may be: probed ``NEVER_ANSWERED`` times, then no more) each
    read a whole 15 s stream."""
    nc = await internal.connect("app")
    body = json.dumps({**CHAT, "model": "trickle", "stream": True}).encode()
    headers = {h.AUTHORIZATION: f"Bearer {internal.api_key}"}

    async def ignoring() -> tuple[int, int]:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(subjects.CHAT, body, reply=inbox, headers=headers)
        chunks = probed = 0
        while True:
            msg = await sub.next_msg(timeout=10)
            if not msg.data and not msg.headers:
                return chunks, probed  # the terminator
            probed += bool(msg.reply)
            chunks += (msg.headers or {}).get(h.KIND) == "chunk"

    async def answering() -> int:
        replies = llm.exchange(subjects.CHAT, body)
        return sum([r.kind is ReplyKind.CHUNK async for r in replies])

    try:
        async with LLMClient(nc, api_key=internal.api_key) as llm:
            (chunks, probed), answered = await asyncio.gather(ignoring(), answering())
    finally:
        await nc.close()
    assert probed == NEVER_ANSWERED  # then asked no more (each probe may leave a mapping)
    assert chunks >= 300
    assert answered >= 300


async def _stored(internal: Stack, victim: str) -> tuple[int, int, list[str]]:
    """AUDIT's last sequence, the victim key record's revision, and what ``sy_batches`` holds
    under the key the attack names."""
    admin = await internal.connect("admin")
    try:
        js = admin.jetstream()
        audit = (await js.stream_info(subjects.AUDIT_STREAM)).state.last_seq
        revision = (await (await js.key_value(subjects.KEYS_BUCKET)).get(victim)).revision
    finally:
        await admin.close()
    return audit, revision or 0, await internal.bucket_traces(["b.victim"])


async def _attack(nc: NATS, reply_subjects: list[str], api_key: str) -> None:
    """Requests the head answers (an error without a key, the model list with one), each
    naming a CLIENT stream's subject as its reply."""
    for reply in reply_subjects:
        for headers in ({}, {h.AUTHORIZATION: f"Bearer {api_key}"}):
            await nc.publish(subjects.MODELS, b"{}", reply=reply, headers=headers)
            await nc.publish(subjects.CHAT, b"{}", reply=reply, headers=headers)
    await nc.flush()


async def test_replies_aimed_at_client_streams_store_nothing(internal: Stack) -> None:
    """The head answers every one of these requests; the answers land in INTERNAL, where
    nothing stores them: no junk audit entry, the victim's key record is not overwritten (the
    key still works), no batch record appears."""
    victim_key, victim = await internal.new_key("victim")
    victim_entry = f"k.{victim.hash}"
    before = await _stored(internal, victim_entry)
    assert before[2] == []
    nc = await internal.connect("app")
    try:
        await _attack(
            nc,
            [
                "audit.v1.key.create",
                f"$KV.{subjects.KEYS_BUCKET}.{victim_entry}",
                f"$KV.{subjects.BATCHES_BUCKET}.b.victim",
            ],
            internal.api_key,
        )
        # The head answers within milliseconds; a stored answer shows up here at once. (A
        # wait cannot make this pass wrongly: after it nothing is left to arrive.)
        async with LLMClient(nc, api_key=internal.api_key) as llm:
            for _ in range(2 * internal.settings.stack.heads):  # every head is past its queue
                await llm.models()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            assert await _stored(internal, victim_entry) == before
            await asyncio.sleep(0.25)
    finally:
        await nc.close()
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(
            f"{internal.tail_url}/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {victim_key}"},
        )
    assert resp.status_code == 200, resp.text
