"""A request whose client gave up stops costing provider money and capacity.

Its own stack, in front of a fake provider that holds each call whose last user message is
``gate:<name>`` until the test opens that gate (``half:<name>``: a stream's first chunk
first), and that records a call whose caller hung up meanwhile (aiohttp cancels the handler,
as a real server stops working for a closed connection). The fake reports 1000 completion
tokens for every answer, so a call billed in full is told at once from one billed the
estimate of a cancelled call (its prompt only).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest
import pytest_asyncio
from aiohttp import web
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.bus.cancel_proof import cancel_proof
from switchyard.client import LLMClient
from switchyard.schemas.events import UsageEvent
from switchyard.schemas.keys import hash_key
from tests.fakes.server import FakeServer, InThread
from tests.stacks import Stack, start_stack
from tests.support import flushed, usage_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ANSWER_TOKENS = 1000  # what the fake reports for every answer: a full bill is unmistakable


@dataclass
class Provider(FakeServer):
    """An OpenAI-compatible chat endpoint whose calls the test holds and releases."""

    loop: asyncio.AbstractEventLoop | None = None
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    holding: list[str] = field(default_factory=list)  # held at their gate (or released since)
    cut: list[str] = field(default_factory=list)  # the caller hung up while they were held
    answered: list[str] = field(default_factory=list)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    async def start(self) -> str:
        self.loop = asyncio.get_running_loop()
        return f"http://127.0.0.1:{await self.serve()}/v1"

    def open_gate(self, name: str) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._gate(name).set)

    def _gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    def seen(self, text: str) -> bool:
        return any(_text(c.body) == text for c in self.calls)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        text = _text(body)
        stream: web.StreamResponse | None = None
        if body.get("stream"):  # the headers go at once; the first token waits at the gate
            stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await stream.prepare(request)
        if stream is not None and text.startswith("half:"):  # part of the answer, then the gate
            first = {"id": "chatcmpl-held", "object": "chat.completion.chunk", "created": 0}
            delta = {"index": 0, "delta": {"content": "half an answer"}, "finish_reason": None}
            await stream.write(b"data: " + json.dumps({**first, "choices": [delta]}).encode())
            await stream.write(b"\n\n")
        if text.startswith(("gate:", "half:")):
            self.holding.append(text)
            try:
                await self._gate(text).wait()
            except asyncio.CancelledError:
                self.cut.append(text)
                raise
        self.answered.append(text)
        usage = {"prompt_tokens": 7, "completion_tokens": ANSWER_TOKENS, "total_tokens": 1007}
        if stream is None:
            message = {"role": "assistant", "content": f"echo: {text}"}
            return web.json_response(
                {
                    "id": "chatcmpl-held",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": usage,
                }
            )
        base = {"id": "chatcmpl-held", "object": "chat.completion.chunk", "created": 0}
        choice = {"index": 0, "delta": {"content": f"echo: {text}"}, "finish_reason": "stop"}
        for chunk in ({**base, "choices": [choice]}, {**base, "choices": [], "usage": usage}):
            await stream.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await stream.write(b"data: [DONE]\n\n")
        await stream.write_eof()
        return stream


def _text(body: Any) -> str:
    messages = body.get("messages") or [{}]
    return str(messages[-1].get("content", ""))


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[Provider, str]]:
    fake = Provider()
    runner = InThread(fake)
    try:
        yield fake, runner.start(fake.start)
    finally:
        runner.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def leaving(
    tmp_path_factory: pytest.TempPathFactory, provider: tuple[Provider, str]
) -> AsyncIterator[Stack]:
    _, base_url = provider
    extra = {
        "providers": {
            "held": {"kind": "openai-compatible", "api_base": base_url, "concurrency": 8},
            # One call at a time: a second request waits in the queue behind the first.
            "narrow": {"kind": "openai-compatible", "api_base": base_url, "concurrency": 1},
        },
        "routes": {
            "held": {"deployments": [{"provider": "held", "model": "m"}]},
            "narrow": {"deployments": [{"provider": "narrow", "model": "m"}]},
        },
    }
    stack = await start_stack(tmp_path_factory.mktemp("cancel"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _chat(model: str, text: str, *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


async def _eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _leave_while(
    stack: Stack, body: dict[str, Any], request_id: str, ready: Callable[[], bool]
) -> None:
    """Send ``body`` to the tail on a raw connection and drop the connection once ``ready``
    (the request is where the test wants it): a client that timed out, or was killed."""
    raw = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.settings.ingress.tail.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer %s\r\nX-Request-Id: %s\r\nX-Request-Timeout: 60\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (stack.api_key.encode(), request_id.encode(), len(raw), raw)
    )
    await writer.drain()
    try:
        assert await _eventually(ready), "the request never got where the test wanted it"
        assert not await _read_some(reader), "answered before the client left"
    finally:
        writer.transport.abort()


async def _read_some(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(1), 0.05)
    except TimeoutError:
        return b""


async def _usage_events(stack: Stack, request_id: str, count: int) -> list[UsageEvent]:
    """The usage events of ``request_id`` (as the model-proxies sent it), once ``count`` are
    in the USAGE stream (or what is there after a while)."""
    nc = await stack.connect("provisioner")
    found: list[UsageEvent] = []
    try:
        js = nc.jetstream()
        for _ in range(50):
            found = []
            last = (await js.stream_info(subjects.USAGE_STREAM)).state.last_seq
            for seq in range(max(1, last - 100), last + 1):
                raw = await js.get_msg(subjects.USAGE_STREAM, seq)
                found += [e for e in usage_events(raw.data) if e.request_id == request_id]
            if len(found) >= count:
                break
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
    return found


def _billed_as_cancelled(event: UsageEvent | None) -> None:
    """Billed what a cancelled call costs: the prompt, estimated, no completion; never the
    provider's full answer."""
    assert event is not None, "a provider call that ran must be billed"
    assert event.status == 499
    assert event.completion_tokens == 0
    assert event.prompt_tokens > 0
    assert event.prompt_tokens_estimated == event.prompt_tokens


async def _cancelled_count(stack: Stack, stage: str) -> float:
    """``switchyard_cancelled_requests_total{stage}`` over every model-proxy."""
    return await stack.modelproxy_total("switchyard_cancelled_requests_total", stage=stage)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_client_that_leaves_before_its_answer_stops_the_provider_call(
    leaving: Stack, provider: tuple[Provider, str], stream: bool
) -> None:
    """A client that disconnects while the provider works (a non-streamed answer, or a stream
    before its first token): the provider call is abandoned at once and billed the estimate of
    its prompt, not the answer. A client that stays is served and billed in full as before."""
    fake, _ = provider
    kind = "stream" if stream else "whole"
    stays, leaves = f"gate:{kind}-stays", f"gate:{kind}-leaves"
    fake.open_gate(stays)
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(
            f"{leaving.tail_url}/v1/chat/completions",
            json=_chat("held", stays, stream=stream),
            headers={"Authorization": f"Bearer {leaving.api_key}", "X-Request-Id": f"{kind}-1"},
        )
    assert resp.status_code == 200, resp.text
    assert f"echo: {stays}" in resp.text
    stayed = await leaving.usage_of(f"{kind}-1")
    assert stayed is not None
    assert (stayed.status, stayed.completion_tokens) == (200, ANSWER_TOKENS)

    before = await _cancelled_count(leaving, "serving")
    body = _chat("held", leaves, stream=stream)
    await _leave_while(leaving, body, f"{kind}-2", lambda: leaves in fake.holding)
    assert await _eventually(lambda: leaves in fake.cut, 5), "the provider call went on"
    assert leaves not in fake.answered
    _billed_as_cancelled(await leaving.usage_of(f"{kind}-2"))
    assert await _cancelled_count(leaving, "serving") == before + 1


async def test_a_queued_request_whose_client_left_never_reaches_the_provider(
    leaving: Stack, provider: tuple[Provider, str]
) -> None:
    """Behind a saturated deployment (one slot, held busy), a request whose client leaves is
    dropped unserved when its turn comes: no provider call (so nothing to bill), and the queue
    moves on."""
    fake, _ = provider
    busy, queued = "gate:busy", "gate:queued"
    spy = await leaving.connect("head")  # hears every cancel, as every model-proxy does
    cancels: list[str] = []

    async def heard(msg: Msg) -> None:
        cancels.append((msg.headers or {}).get(h.REQUEST_ID, ""))

    await spy.subscribe(subjects.CANCEL, cb=heard)
    await flushed(spy)
    async with httpx.AsyncClient(timeout=60) as http:
        first = asyncio.create_task(
            http.post(
                f"{leaving.tail_url}/v1/chat/completions",
                json=_chat("narrow", busy),
                headers={"Authorization": f"Bearer {leaving.api_key}"},
            )
        )
        try:
            assert await _eventually(lambda: busy in fake.holding), "the first call never began"
            before = await _cancelled_count(leaving, "queued")
            # Left half a second after sending: queued by then (a cancel that came even
            # before the head queued it is remembered all the same).
            await _leave_while(leaving, _chat("narrow", queued), "queued-1", _after(0.5))
            assert await _eventually(lambda: any(c.startswith("queued-1.") for c in cancels))
            await asyncio.sleep(0.5)  # every model-proxy heard it as the spy did
            fake.open_gate(busy)  # the slot frees: the queued request is pulled next
            fake.open_gate(queued)  # were it called anyway, it would be answered at once
            assert (await first).status_code == 200
            deadline = time.monotonic() + 10
            while await _cancelled_count(leaving, "queued") < before + 1:
                assert time.monotonic() < deadline, "the queued request was never dropped"
                await asyncio.sleep(0.1)
        finally:
            first.cancel()  # (done already, unless the test failed before the answer)
            await spy.close()
    assert not fake.seen(queued)


async def test_a_cancel_with_another_key_is_ignored(
    leaving: Stack, provider: tuple[Provider, str]
) -> None:
    """Only the key that made a request can cancel it: a cancel naming a non-streamed request
    in hand with another key (presented, or proved) changes nothing (the call completes and is
    answered, and is billed once), nor does the owner's proof for another request id, nor the
    owner's cancel once the answer is in; the caller's own leaving while it waits (an internal
    client that stops waiting) stops the call, and its cancel carries a proof for that request,
    never the key: every model-proxy hears it."""
    fake, _ = provider
    other_key, _ = await leaving.new_key("someone-else")
    victim, walker = "gate:victim", "gate:walker"
    app = await leaving.connect("app")
    spy = await leaving.connect("head")  # hears every cancel, as every model-proxy does
    heard: list[Msg] = []

    async def hear(msg: Msg) -> None:
        heard.append(msg)

    await spy.subscribe(subjects.CANCEL, cb=hear)
    await flushed(spy)
    try:
        async with LLMClient(app, api_key=leaving.api_key) as llm:
            body = msgspec.json.encode(_chat("held", victim))
            answer = asyncio.create_task(
                llm.request(subjects.CHAT, body, {h.REQUEST_ID: "victim-1"})
            )
            assert await _eventually(lambda: victim in fake.holding)
            for forged in (
                {h.AUTHORIZATION: f"Bearer {other_key}"},
                {h.CANCEL_PROOF: cancel_proof(hash_key(other_key), "victim-1")},
                # A proof seen on the bus for another request of the same key.
                {h.CANCEL_PROOF: cancel_proof(hash_key(leaving.api_key), "victim-2")},
            ):
                await app.publish(subjects.CANCEL, b"", headers={h.REQUEST_ID: "victim-1"} | forged)
            await app.flush()
            await asyncio.sleep(0.5)  # heard by then; a cancel that counted would cut it
            fake.open_gate(victim)
            reply = await asyncio.wait_for(answer, 30)
            assert f"echo: {victim}".encode() in reply.body
            assert victim not in fake.cut
            # The owner's own cancel, late (the answer is in): nothing left to stop or bill.
            stopped = await _cancelled_count(leaving, "serving")
            late = {h.REQUEST_ID: "victim-1", h.AUTHORIZATION: f"Bearer {leaving.api_key}"}
            await app.publish(subjects.CANCEL, b"", headers={**late, h.ATTEMPT: "1"})
            await app.flush()
            await asyncio.sleep(0.5)
            assert await _cancelled_count(leaving, "serving") == stopped

            body = msgspec.json.encode(_chat("held", walker))
            waiting = asyncio.create_task(
                llm.request(subjects.CHAT, body, {h.REQUEST_ID: "walker-1"})
            )
            assert await _eventually(lambda: walker in fake.holding)
            waiting.cancel()  # the caller stops waiting: LLMClient sends the cancel
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert await _eventually(lambda: walker in fake.cut, 5), "the provider call went on"
            assert await _eventually(lambda: any(_names(m, "walker-1") for m in heard))
    finally:
        await spy.close()
        await app.close()
    sent = next(m for m in heard if _names(m, "walker-1"))
    assert sent.headers is not None
    assert h.AUTHORIZATION not in sent.headers
    assert h.KEY_HASH not in sent.headers
    assert sent.headers[h.CANCEL_PROOF] == cancel_proof(hash_key(leaving.api_key), "walker-1")
    wire = repr(sent.headers).encode() + sent.data
    assert leaving.api_key.encode() not in wire, "the raw client key went out on a cancel"
    assert hash_key(leaving.api_key).encode() not in wire
    victim_bills = await _usage_events(leaving, "victim-1", 1)
    assert [(e.status, e.completion_tokens) for e in victim_bills] == [(200, ANSWER_TOKENS)]
    _billed_as_cancelled(await leaving.usage_of("walker-1"))


async def test_a_request_sent_again_after_its_cancel_is_billed_for_its_answer(
    leaving: Stack, provider: tuple[Provider, str]
) -> None:
    """The batch runner's case: an attempt stopped because its caller left (the runner
    stopped), then the same request id sent again with a higher attempt (after the restart)
    and answered. Accounting bills each event id once, so the stopped call's estimate and the
    answer must carry different ids, or the answer would never be billed; two stopped attempts
    share theirs (both running at once is the platform's duplicate, as after a failover)."""
    fake, _ = provider
    gate = "gate:resend"
    # As the batch runner: its ids are its own and unique (an internal client's are not, so
    # the head bills each of its requests apart, see test_limits), and it names its key by hash.
    app = await leaving.connect("batch")
    key = {h.KEY_HASH: hash_key(leaving.api_key)}
    try:
        async with LLMClient(app) as llm:
            body = msgspec.json.encode(_chat("held", gate))
            for attempt, cuts in (("1", 1), ("2", 2)):
                stopped = asyncio.create_task(
                    llm.request(
                        subjects.CHAT, body, {h.REQUEST_ID: "resend-1", h.ATTEMPT: attempt, **key}
                    )
                )
                assert await _eventually(_seen_times(fake.holding, gate, cuts))
                stopped.cancel()  # the caller stops waiting: LLMClient sends the cancel
                with pytest.raises(asyncio.CancelledError):
                    await stopped
                assert await _eventually(_seen_times(fake.cut, gate, cuts), 5)
            fake.open_gate(gate)
            reply = await llm.request(
                subjects.CHAT, body, {h.REQUEST_ID: "resend-1", h.ATTEMPT: "3", **key}
            )
            assert f"echo: {gate}".encode() in reply.body
    finally:
        await app.close()
    events = await _usage_events(leaving, "resend-1", 3)
    assert sorted(e.status for e in events) == [200, 499, 499], events
    left = {e.id for e in events if e.status == 499}
    answered = [e for e in events if e.status == 200]
    assert len(left) == 1, "two stopped attempts of one request are billed once"
    assert answered[0].id not in left, "the answer would be taken for a repeat"
    assert answered[0].completion_tokens == ANSWER_TOKENS


@pytest.mark.parametrize("where", ["serving", "queued"])
async def test_a_cancelled_request_still_closes_its_reply_path(
    leaving: Stack, provider: tuple[Provider, str], where: str
) -> None:
    """A request stopped (or dropped from its queue) because its caller left gets no answer,
    but its reply subject still gets the terminator: the server keeps a cross-account reply
    mapping until one passes, and under overload many callers leave at once."""
    fake, _ = provider
    held = f"gate:term-{where}"
    busy = f"gate:term-busy-{where}"  # a gate once opened stays open
    app = await leaving.connect("app")
    inbox = app.new_inbox()
    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def heard(msg: Msg) -> None:
        await got.put(msg)

    await app.subscribe(inbox, cb=heard)
    auth = f"Bearer {leaving.api_key}"
    blocker = None
    llm = LLMClient(app, api_key=leaving.api_key)
    await llm.start()
    try:
        if where == "queued":  # the one slot of "narrow" is taken: ours waits in the queue
            blocker = asyncio.create_task(
                llm.request(subjects.CHAT, msgspec.json.encode(_chat("narrow", busy)))
            )
            assert await _eventually(lambda: busy in fake.holding)
        model = "narrow" if where == "queued" else "held"
        request_id = f"term-{where}-1"
        headers = {h.REQUEST_ID: request_id, h.AUTHORIZATION: auth}
        await app.publish(
            subjects.CHAT, msgspec.json.encode(_chat(model, held)), reply=inbox, headers=headers
        )
        if where == "serving":
            assert await _eventually(lambda: held in fake.holding)
        else:
            await asyncio.sleep(0.5)  # stored in the queue by then
        await app.publish(subjects.CANCEL, b"", headers={**headers, h.ATTEMPT: "1"})
        await app.flush()
        if where == "queued":
            fake.open_gate(busy)
            assert blocker is not None
            await asyncio.wait_for(blocker, 30)
        deadline = time.monotonic() + 10
        while True:
            msg = await asyncio.wait_for(got.get(), max(0.1, deadline - time.monotonic()))
            if not msg.data and not msg.headers:
                break  # the terminator
        if where == "queued":
            assert not fake.seen(held)
        else:  # the provider hears its connection close a moment after the terminator left
            assert await _eventually(lambda: held in fake.cut, 5)
    finally:
        fake.open_gate(busy)
        if blocker is not None:
            blocker.cancel()
        await llm.close()
        await app.close()


def _names(msg: Msg, request_id: str) -> bool:
    return (msg.headers or {}).get(h.REQUEST_ID) == request_id


def _seen_times(seen: list[str], text: str, times: int) -> Callable[[], bool]:
    """A condition that holds once ``text`` is in ``seen`` ``times`` times."""
    return lambda: seen.count(text) == times


def _after(seconds: float) -> Callable[[], bool]:
    """A condition that holds from ``seconds`` after it is first asked."""
    began: list[float] = []

    def check() -> bool:
        if not began:
            began.append(time.monotonic())
        return time.monotonic() - began[0] >= seconds

    return check


async def test_a_caller_that_gives_up_and_retries_under_the_same_id_is_served(
    leaving: Stack, provider: tuple[Provider, str]
) -> None:
    """An internal service's own timeout cancels its request (LLMClient sends the cancel);
    when it retries under the same request id, the retry is a new attempt past the one the
    cancel named, so model-proxies serve it instead of dropping it as cancelled."""
    fake, _ = provider
    gate = "gate:retry-same-id"
    app = await leaving.connect("app")
    try:
        async with LLMClient(app, api_key=leaving.api_key) as llm:
            body = msgspec.json.encode(_chat("held", gate))
            first = asyncio.create_task(llm.request(subjects.CHAT, body, {h.REQUEST_ID: "job-7"}))
            assert await _eventually(_seen_times(fake.holding, gate, 1))
            first.cancel()  # the caller's own timeout
            with pytest.raises(asyncio.CancelledError):
                await first
            assert await _eventually(_seen_times(fake.cut, gate, 1), 5)
            fake.open_gate(gate)
            reply = await asyncio.wait_for(
                llm.request(subjects.CHAT, body, {h.REQUEST_ID: "job-7"}), 30
            )
            assert f"echo: {gate}".encode() in reply.body
    finally:
        await app.close()


async def test_a_cancel_sent_while_no_model_proxy_runs_still_drops_the_queued_request(
    leaving: Stack, provider: tuple[Provider, str]
) -> None:
    """``switchyard down`` stops the edges and the workers together (a stopping edge cancels what
    it still waits for), and a model-proxy that restarts forgets the cancels it heard. The server
    keeps every cancel (stream ``CANCELS``): a request queued while no model-proxy runs, whose
    client then leaves, is dropped unserved by the model-proxies started after, and nothing is
    billed for it."""
    fake, _ = provider
    text = "after-restart"  # no gate: a call would be answered (and billed) at once
    proxies = [p for ps in leaving.supervisor.procs for p in ps if "modelproxy" in p.spec.name]
    assert len(proxies) == 2
    queue = subjects.dispatch(_deployment_of(leaving, "narrow"))
    app = await leaving.connect("app")
    try:
        await asyncio.gather(*(p.stop(10) for p in proxies))
        queued = asyncio.Event()

        async def watch_queue() -> None:
            while await _stored(leaving, subjects.DISPATCH_STREAM, queue) == 0:
                await asyncio.sleep(0.05)
            queued.set()

        watcher = asyncio.create_task(watch_queue())
        try:
            await _leave_while(leaving, _chat("narrow", text), "restart-1", queued.is_set)
        finally:
            watcher.cancel()
        # An internal client's cancel (INTERNAL account) is kept the same way.
        proof = cancel_proof(hash_key(leaving.api_key), "restart-app-1")
        await app.publish(
            subjects.CANCEL, b"", headers={h.REQUEST_ID: "restart-app-1", h.CANCEL_PROOF: proof}
        )
        await app.flush()
        kept: list[str] = []
        deadline = time.monotonic() + 10
        while not (any(r.startswith("restart-1.") for r in kept) and "restart-app-1" in kept):
            assert time.monotonic() < deadline, f"the cancels were not stored: {kept}"
            await asyncio.sleep(0.1)
            kept = await _stored_cancels(leaving)
        for proc in proxies:
            await proc.start()
        for proc in proxies:
            assert await proc.wait_healthy(60), proc.tail_log()
        deadline = time.monotonic() + 10
        while await _cancelled_count(leaving, "queued") < 1:
            assert time.monotonic() < deadline, "the queued request was never dropped"
            await asyncio.sleep(0.1)
        assert await _stored(leaving, subjects.DISPATCH_STREAM, queue) == 0
    finally:
        await app.close()
        for proc in proxies:
            if not proc.running:
                await proc.start()
                await proc.wait_healthy(60)
    assert not fake.seen(text)
    assert not await _usage_now(leaving, "restart-1"), "a request nobody waited for was billed"


async def test_a_stream_cut_by_a_killed_model_proxy_does_not_reach_the_provider_again(
    leaving: Stack, provider: tuple[Provider, str]
) -> None:
    """Every model-proxy is killed after part of a streamed answer reached the client. The
    request is delivered again once they restart, but the client cannot take a second
    delivery after content: its stream ends (``stream_interrupted``) and its cancel stops the
    new copy. An explorer saw that copy call the provider first (a wasted call, its prompt
    billed by the provider); the copy now announces itself and waits for the cancel. Billed
    once, what a cancelled call costs (the killed call's usage was never reported)."""
    fake, _ = provider
    text = "half:killed"
    proxies = [p for ps in leaving.supervisor.procs for p in ps if "modelproxy" in p.spec.name]
    headers = {"Authorization": f"Bearer {leaving.api_key}", "X-Request-Id": "cut-1"}
    url = f"{leaving.tail_url}/v1/chat/completions"
    body = _chat("held", text, stream=True)
    try:
        async with (
            httpx.AsyncClient(timeout=60) as http,
            http.stream("POST", url, json=body, headers=headers) as resp,
        ):
            lines = resp.aiter_lines()
            async for line in lines:
                if "half an answer" in line:
                    break
            for proc in proxies:
                leaving.kill(proc.spec.name)
            for proc in proxies:
                assert proc.proc is not None
                await proc.proc.wait()
                await proc.start()
            rest = "\n".join([line async for line in lines])
    finally:
        fake.open_gate(text)
        for proc in proxies:
            if not proc.running:
                await proc.start()
            assert await proc.wait_healthy(60), proc.tail_log()
    assert "stream_interrupted" in rest, rest
    assert [_text(c.body) for c in fake.calls].count(text) == 1
    _billed_as_cancelled(await leaving.usage_of("cut-1"))


def _deployment_of(stack: Stack, alias: str) -> str:
    (deployment,) = stack.settings.route_table.routes[alias].deployments
    return deployment.id


async def _stored(stack: Stack, stream: str, subject: str) -> int:
    """How many messages ``stream`` holds on ``subject``."""
    nc = await stack.connect("provisioner")
    try:
        info = await nc.jetstream().stream_info(stream, subjects_filter=subject)
        return (info.state.subjects or {}).get(subject, 0)
    finally:
        await nc.close()


async def _stored_cancels(stack: Stack) -> list[str]:
    """The request ids of the cancels the server kept."""
    nc = await stack.connect("provisioner")
    try:
        js = nc.jetstream()
        state = (await js.stream_info(subjects.CANCELS_STREAM)).state
        ids = []
        for seq in range(state.first_seq, state.last_seq + 1):
            msg = await js.get_msg(subjects.CANCELS_STREAM, seq)
            ids.append((msg.headers or {}).get(h.REQUEST_ID, ""))
        return ids
    finally:
        await nc.close()


async def _usage_now(stack: Stack, request_id: str) -> list[UsageEvent]:
    """The usage events already stored of the request its client called ``request_id``."""
    nc = await stack.connect("provisioner")
    try:
        js = nc.jetstream()
        state = (await js.stream_info(subjects.USAGE_STREAM)).state
        found = []
        for seq in range(max(state.first_seq, 1), state.last_seq + 1):
            raw = await js.get_msg(subjects.USAGE_STREAM, seq)
            for event in usage_events(raw.data):
                if event.request_id.split(".", 1)[0] == request_id:
                    found.append(event)
        return found
    finally:
        await nc.close()


async def test_an_old_secret_in_a_rotation_s_grace_still_cancels_its_stream(
    leaving: Stack, provider: tuple[Provider, str]
) -> None:
    """A key rotated with a grace: a caller still presenting the old secret proves its cancel
    with that secret's hash, while the head names the key by its new one. The cancel used to
    miss (the provider call ran on and was billed in full); it stops the call now. Another
    key's proof still cancels nothing (test_a_cancel_with_another_key_is_ignored)."""
    fake, _ = provider
    old, record = await leaving.new_key("rotated-canceller")
    rotated = await leaving.admin("POST", f"/keys/{record.id}/rotate", {"grace_seconds": 120})
    assert rotated.status_code == 200, rotated.text
    text = "half:rotated-stream"
    app = await leaving.connect("app")
    try:
        async with LLMClient(app, api_key=old) as llm:
            first: asyncio.Queue[Any] = asyncio.Queue()

            async def read() -> None:
                async for chunk in llm.chat_stream(_chat("held", text), timeout=60):
                    await first.put(chunk)

            reading = asyncio.create_task(read())
            await asyncio.wait_for(first.get(), 30)  # the stream began with the old secret
            assert await _eventually(lambda: text in fake.holding)
            reading.cancel()  # the caller stops reading: LLMClient sends the cancel
            with pytest.raises(asyncio.CancelledError):
                await reading
            assert await _eventually(lambda: text in fake.cut, 5), "the provider call went on"
    finally:
        await app.close()
    assert text not in fake.answered
