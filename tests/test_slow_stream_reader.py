"""A stream client that reads too slowly cannot make the edge hold its answer without bound.

Nothing pushes back on a model-proxy: it publishes chunks as fast as its provider answers, and
the edge queued them per request until its client took them. A client that reads a byte a
second never trips ``write_timeout_s`` (it reads something), so the edge held the whole answer
(200 such clients of a 5 MB answer: over 1 GB). Past ``ingress.max_unread_bytes`` (8 MiB here,
the default) the edge ends the stream with the error event ``reader_too_slow``, frees what it
held and cancels the provider call, which is billed once, as for a client that left.

On the session stack, with the fake provider's ``flood`` (chunks of ~1 KiB, as fast as it can).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from switchyard.bus import subjects
from switchyard.schemas.events import UsageEvent
from tests.stacks import Stack
from tests.support import usage_events
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

# The fake provider writes as fast as it can, faster than the model-proxy relays, so the
# answer must outlast what the buffers between them hold (socket buffers, NATS) for the
# cancel to find the call still running: ~66 MB of SSE, ~92 MiB as the edge counts it, 11x
# the cap. A reader in this process, competing for the machine's 2 cores with the whole
# stack, once fell 8 MiB behind that one while reading at full speed (httpx, line by line):
# the full-speed reader reads a shorter one, still 3x the cap as counted.
MODEL = "flood:60000"
WHOLE = "flood:16000"
ALIAS = "s45-flood"
WHOLE_ALIAS = "s45-flood-whole"
PROBE = "s45-probe"
UNREAD = "switchyard_edge_unread_bytes"
SLOW = "switchyard_edge_slow_readers_total"
CANCELLED = "switchyard_cancelled_requests_total"
ENDED = "gen_ai_server_request_duration_seconds_count"  # a request the edge finished serving


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def flood(stack: Stack) -> AsyncIterator[Stack]:
    try:
        for alias, model in ((ALIAS, MODEL), (WHOLE_ALIAS, WHOLE), (PROBE, "echo")):
            route = {"deployments": [{"provider": "fake", "model": model}]}
            assert (await stack.admin("PUT", f"/routes/{alias}", route)).status_code == 200
        for _ in range(300):  # heads and model-proxies follow the table on their own
            async with httpx.AsyncClient(timeout=30) as http:
                probe = await http.post(
                    f"{stack.tail_url}/v1/chat/completions",
                    json=_chat(PROBE, stream=False),
                    headers={"Authorization": f"Bearer {stack.api_key}"},
                )
            if probe.status_code == 200:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the flood route, written before the probe's
        yield stack
    finally:
        for alias in (ALIAS, WHOLE_ALIAS, PROBE):
            await stack.admin("DELETE", f"/routes/{alias}")


def _chat(model: str, *, stream: bool = True) -> dict[str, object]:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


async def _tail(stack: Stack, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.get(f"{stack.tail_url}/metrics")
    assert resp.status_code == 200, resp.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def _until(check: Callable[[], object], seconds: float = 30.0) -> bool:
    """Polls ``check`` (sync or async) until it is true; False after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)


async def _usage(stack: Stack, request_id: str) -> list[UsageEvent]:
    """Usage events of the request its client called ``request_id`` (the edge adds a suffix)."""
    nc = await stack.connect("provisioner")
    try:
        js = nc.jetstream()
        last = (await js.stream_info(subjects.USAGE_STREAM)).state.last_seq
        found = []
        for seq in range(last, max(0, last - 200), -1):
            raw = await js.get_msg(subjects.USAGE_STREAM, seq)
            found += [
                e for e in usage_events(raw.data) if e.request_id.split(".", 1)[0] == request_id
            ]
        return found
    finally:
        await nc.close()


def _recv_all(sock: socket.socket) -> bytes:
    """What the edge sent, read until the chunked stream's end (or silence, or the close)."""
    got = b""
    sock.settimeout(10)
    try:
        while not got.endswith(b"0\r\n\r\n") and (chunk := sock.recv(1 << 20)):
            got += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return got


async def test_a_client_that_stops_reading_is_ended_and_its_provider_call_stopped(
    flood: Stack, upstream: FakeOpenAI
) -> None:
    slow_before = await _tail(flood, SLOW)
    ended_before = await _tail(flood, ENDED, error_type="reader_too_slow")
    serving_before = await flood.modelproxy_total(CANCELLED, stage="serving")
    cut_before = upstream.cut.count(MODEL)
    request_id = f"s45-stalled-{time.time_ns()}"
    body = json.dumps(_chat(ALIAS)).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel buffers little
    sock.connect(("127.0.0.1", flood.settings.ingress.tail.port))
    try:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer %s\r\nX-Request-Id: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (flood.api_key.encode(), request_id.encode(), len(body), body)
        )
        sock.settimeout(30)
        head = sock.recv(64)  # a few bytes, then nothing
        assert head.startswith(b"HTTP/1.1 200"), head

        # Ended by the edge well before write_timeout_s (60 s) would drop the client: what it
        # held for the request is freed, and the provider call is stopped.
        stopped = await _until(lambda: upstream.cut.count(MODEL) == cut_before + 1)
        assert stopped, "the provider call went on (the edge kept taking the answer in)"
        assert await _until(lambda: _equals(flood, SLOW, slow_before + 1))
        assert await _until(lambda: _cancelled_serving(flood, serving_before + 1))
        assert await _until(lambda: _equals(flood, UNREAD, 0))
        # And the request is over while its client still reads nothing: the error event
        # went out past flow control, not once the client reads again or write_timeout_s.
        over = ended_before + 1
        assert await _until(lambda: _equals(flood, ENDED, over, error_type="reader_too_slow"))

        # The client reading on gets what was on its way, then the stream's error event and
        # the end of the response: no [DONE], never the whole answer.
        rest = head + _recv_all(sock)
    finally:
        sock.close()
    assert rest.endswith(b"0\r\n\r\n"), rest[-300:]
    assert b'"code":"reader_too_slow"' in rest[-2000:]
    # In words the client can act on: the limit in MiB, counted as messages (it said "over
    # 8388608 bytes" to a client that had ~2.9 MB of text), and the setting.
    assert b"more than 8 MiB of it waited unread, counted as messages" in rest[-2000:]
    assert b"ingress.max_unread_bytes" in rest[-2000:]
    assert b"[DONE]" not in rest
    assert len(rest) < 60000 * 1000

    # Billed once, as a call whose caller left.
    assert await _until(lambda: _usage(flood, request_id))
    await asyncio.sleep(2)  # a second bill, if any, would be published by now
    events = await _usage(flood, request_id)
    assert len(events) == 1, events
    assert events[0].status == 499


async def _equals(stack: Stack, name: str, value: float, **labels: str) -> bool:
    return await _tail(stack, name, **labels) == value


async def _cancelled_serving(stack: Stack, value: float) -> bool:
    return await stack.modelproxy_total(CANCELLED, stage="serving") == value


async def test_a_long_answer_read_at_full_speed_is_whole(flood: Stack) -> None:
    slow_before = await _tail(flood, SLOW)
    body = json.dumps(_chat(WHOLE_ALIAS)).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", flood.settings.ingress.tail.port)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
            % (flood.api_key.encode(), len(body), body)
        )
        await writer.drain()
        raw = await reader.read()  # everything, until the edge closes the connection
    finally:
        writer.close()
    assert raw.startswith(b"HTTP/1.1 200"), raw[:300]
    assert b"reader_too_slow" not in raw
    assert raw.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"), raw[-300:]
    assert raw.count(b'"content":"') + raw.count(b'"content": "') >= 16000
    assert await _tail(flood, SLOW) == slow_before
    assert await _until(lambda: _equals(flood, UNREAD, 0))
