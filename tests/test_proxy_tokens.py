"""The model-proxy's token metric counts what accounting bills, for every call that reached its
provider: answered, stopped because its caller left, stopped by its deadline, or failed after
part of its answer was sent. Tokens per deployment times price is then spend, and Grafana's
"Tokens/s by deployment" agrees with it. A call stopped because its caller left is timed under
``error_type="cancelled"``, apart from the successes' latency, and is no provider error.

On the session stack, with routes (and so deployments) of this module's own, removed at the
end; what was billed is read from the USAGE stream, the metrics from every model-proxy.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from switchyard.bus import subjects
from switchyard.runtime import semconv as sc
from switchyard.runtime.semconv import CALLER_LEFT
from switchyard.schemas.events import UsageEvent
from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack
from tests.support import usage_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRICKLE = "trickle:43"  # 300 chunks 43 ms apart; its own pace, so its deployment is ours alone
BREAKS = "midfail:tokens"  # two words, then an error event in the stream
LEAVING = 5  # clients that leave a stream after its third chunk
LATE = 2  # streams whose deadline runs out while the provider streams

Samples = list[tuple[str, dict[str, str], float]]


async def _route(stack: Stack, alias: str, model: str) -> None:
    route = {"deployments": [{"provider": "fake", "model": model}]}
    changed = await stack.admin("PUT", f"/routes/{alias}", route)
    assert changed.status_code == 200, changed.text


def _body(alias: str, *, stream: bool) -> dict[str, object]:
    return {"model": alias, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


def _headers(stack: Stack, request_id: str, timeout: float = 60) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {stack.api_key}",
        "X-Request-Id": request_id,
        "X-Request-Timeout": str(timeout),
    }


async def _live(stack: Stack, alias: str, request_id: str) -> None:
    """One whole answer from ``alias``, sent again while a head has not seen it yet (404)."""
    async with httpx.AsyncClient(timeout=60) as http:
        deadline = time.monotonic() + 30
        while True:
            resp = await http.post(
                f"{stack.tail_url}/v1/chat/completions",
                json=_body(alias, stream=False),
                headers=_headers(stack, request_id),
            )
            if resp.status_code != 404:
                assert resp.status_code == 200, resp.text
                return
            assert time.monotonic() < deadline, "the route never went live"
            await asyncio.sleep(0.1)


async def _leave_after_three_chunks(stack: Stack, alias: str, request_id: str) -> None:
    """A streamed request on a raw connection, dropped after its third chunk."""
    raw = json.dumps(_body(alias, stream=True)).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.settings.ingress.tail.port)
    try:
        headers = "".join(f"{k}: {v}\r\n" for k, v in _headers(stack, request_id).items())
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n%s"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (headers.encode(), len(raw), raw)
        )
        await writer.drain()
        seen = b""
        while seen.count(b"data: {") < 3:
            more = await asyncio.wait_for(reader.read(4096), 30)
            assert more, seen
            seen += more
    finally:
        writer.transport.abort()  # the client is gone, mid-stream


async def _stream(stack: Stack, alias: str, request_id: str, timeout: float = 60) -> str:
    """A streamed request read to its end (the error event of a stream that failed)."""
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream(
            "POST",
            f"{stack.tail_url}/v1/chat/completions",
            json=_body(alias, stream=True),
            headers=_headers(stack, request_id, timeout),
        ) as resp,
    ):
        assert resp.status_code == 200
        return (await resp.aread()).decode()


async def _billed(stack: Stack, prefixes: set[str]) -> list[UsageEvent]:
    """The usage events of the requests whose client ids are ``prefixes`` (an edge appends a
    suffix: ``<client id>.<suffix>``), once there is one for each."""
    nc = await stack.connect("provisioner")
    found: dict[str, UsageEvent] = {}
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + 60
        while True:
            last = (await js.stream_info(subjects.USAGE_STREAM)).state.last_seq
            found = {}
            for seq in range(max(1, last - 300), last + 1):
                raw = await js.get_msg(subjects.USAGE_STREAM, seq)
                for event in usage_events(raw.data):
                    client_id = event.request_id.split(".", 1)[0]
                    if client_id in prefixes:
                        assert client_id not in found, f"{client_id} billed twice"
                        found[client_id] = event
            if len(found) == len(prefixes):
                return list(found.values())
            assert time.monotonic() < deadline, f"never billed: {prefixes - set(found)}"
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def _scrape(stack: Stack) -> Samples:
    """Every sample of every model-proxy."""
    return await stack.modelproxy_samples()


def _total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for sample, found, value in samples
        if sample == name and all(found.get(k) == v for k, v in labels.items())
    )


def _ids(kind: str, n: int) -> Iterator[str]:
    run = uuid.uuid4().hex[:8]
    return (f"tok-{kind}-{run}-{i}" for i in range(n))


async def test_tokens_of_stopped_calls_count_as_billed(stack: Stack) -> None:
    """Clients that leave a slow stream after three chunks, streams whose deadline runs out
    midway and one that fails after two words: every one is billed an estimate (no provider
    count came), and the token metric of its deployment rises by exactly what was billed."""
    leaves, breaks = "tokens-trickle", "tokens-midfail"
    slow, broken = deployment_id("fake", TRICKLE), deployment_id("fake", BREAKS)
    await stack.admin("DELETE", f"/deployments/{broken}/cooldown")
    before = await _scrape(stack)
    await _route(stack, leaves, TRICKLE)
    await _route(stack, breaks, BREAKS)
    try:
        whole = list(_ids("whole", 2))
        await _live(stack, leaves, whole[0])  # a whole answer: the provider's own count
        await _live(stack, breaks, whole[1])
        left = list(_ids("left", LEAVING))
        await asyncio.gather(*(_leave_after_three_chunks(stack, leaves, i) for i in left))
        late = list(_ids("late", LATE))
        await asyncio.gather(*(_stream(stack, leaves, i, timeout=1.5) for i in late))
        failed = next(_ids("failed", 1))
        assert "upstream broke mid-answer" in await _stream(stack, breaks, failed)
        events = await _billed(stack, {*whole, *left, *late, failed})
    finally:
        await stack.admin("DELETE", f"/routes/{leaves}")
        await stack.admin("DELETE", f"/routes/{breaks}")
        await stack.admin("DELETE", f"/deployments/{broken}/cooldown")
    after = await _scrape(stack)

    def delta(name: str, **labels: str) -> float:
        return _total(after, name, **labels) - _total(before, name, **labels)

    by_id = {e.request_id.split(".", 1)[0]: e for e in events}
    stopped = [by_id[i] for i in left]
    assert {e.status for e in stopped} == {499}
    # Billed what they delivered: at least "t0 t1 t2" (8 bytes, 2 tokens).
    assert all(e.prompt_tokens > 0 and e.completion_tokens >= 2 for e in stopped)
    assert by_id[failed].prompt_tokens_estimated > 0  # billed an estimate: no count came
    tokens = f"{sc.CLIENT_TOKEN_USAGE}_sum"
    for dep in (slow, broken):
        billed = [e for e in events if e.deployment == dep]
        prompt = float(sum(e.prompt_tokens for e in billed))
        completion = float(sum(e.completion_tokens for e in billed))
        counted = (
            delta(tokens, deployment=dep, gen_ai_token_type="input"),
            delta(tokens, deployment=dep, gen_ai_token_type="output"),
        )
        assert counted == (prompt, completion), dep
        calls = delta(f"{sc.CLIENT_TOKEN_USAGE}_count", deployment=dep, gen_ai_token_type="input")
        assert calls == len(billed), dep
    # Every stopped call timed apart from the successes, and no provider error.
    duration = f"{sc.CLIENT_OPERATION_DURATION}_count"
    cancelled = sum(1 for e in events if e.status == 499)
    assert delta(duration, deployment=slow, error_type=CALLER_LEFT) == cancelled
    assert delta(duration, deployment=slow, error_type="") == 1  # the whole answer only
    # The late streams' deadline ran out after their first chunks: their caller's limit, not
    # the deployment's error (traffic.deployment_failed), though timed under its error_type.
    late_ends = sum(1 for e in events if e.deployment == slow and e.status == 504)
    assert late_ends == LATE
    assert delta(duration, deployment=slow, error_type="deadline_exceeded") == late_ends
    assert delta(sc.PROVIDER_ERRORS, deployment=slow) == 0
