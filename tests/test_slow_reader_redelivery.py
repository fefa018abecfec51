"""Slow stream readers do not make a request run twice (docs/nats-api.md, ``llm.v1.dispatch``).

Many SSE clients that read slowly from large answers a provider streams fast: the model-proxy
publishes hundreds of MB of chunks on one NATS connection, and each request it serves must
keep its claim on its dispatch message (``in_progress`` before ``ack_wait_s`` runs out) until
it is acknowledged. A claim that lapses makes JetStream deliver the request again: a second
provider call, and a second bill. Here ``ack_wait_s`` is short (4 s, the default is 10 s) so a
lapse shows quickly.

While the edge cannot keep up, nats-server stalls the model-proxies feeding it (thousands of
times in this test), so progress signals travel on a connection of their own
(``modelproxy/heartbeat.py``); on the chunks' connection, one waited behind megabytes, and on a
slower machine a request was delivered again while being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from switchyard.bus import subjects
from switchyard.schemas.events import UsageEvent
from tests.stacks import Stack, start_stack
from tests.support import usage_events
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 100
MODEL = "flood:5000"  # ~3 MB of chunks, as fast as the fake provider writes them


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def slow(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {
            "fake": {
                "kind": "openai-compatible",
                "api_base": upstream.base_url,
                "concurrency": CLIENTS,
            }
        },
        "routes": {"flood": {"deployments": [{"provider": "fake", "model": MODEL}]}},
        "modelproxy": {"ack_wait_s": 4, "keepalive_s": 1},
    }
    stack = await start_stack(tmp_path_factory.mktemp("slowread"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _post(stack: Stack, request_id: str) -> bytes:
    body = json.dumps(
        {
            "model": "flood",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + stack.api_key.encode() + b"\r\n"
        b"X-Request-Id: " + request_id.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


async def _usage(stack: Stack, prefix: str) -> list[UsageEvent]:
    nc = await stack.connect("provisioner")
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.USAGE_STREAM)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await js.get_msg(subjects.USAGE_STREAM, seq)
            found += [e for e in usage_events(raw.data) if e.request_id.startswith(prefix)]
        return found
    finally:
        await nc.close()


async def _settled_usage(stack: Stack, prefix: str, calls: Callable[[], int]) -> list[UsageEvent]:
    """The usage events of the requests named ``prefix``, once they bill as many requests as
    ``calls()`` (provider calls) and no more came for 3 s, or none came for 20 s. A loaded CI
    machine (its model-proxies still busy with 300 MB of chunks as the edge cancels) went 3 s
    without one while two thirds of the bills were still to come."""
    seen, quiet_since = -1, time.monotonic()
    while True:
        events = await _usage(stack, prefix)
        billed = len({event.request_id.split(".", 1)[0] for event in events})
        if len(events) != seen:
            seen, quiet_since = len(events), time.monotonic()
        quiet = time.monotonic() - quiet_since
        if (quiet >= 3 and billed >= calls()) or quiet >= 20:
            return events
        await asyncio.sleep(1)


async def test_slow_readers_get_one_provider_call_and_one_bill(
    slow: Stack, upstream: FakeOpenAI
) -> None:
    before = len(upstream.calls_for(MODEL))
    prefix = f"slow{int(time.time())}"
    socks = []
    for i in range(CLIENTS):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", slow.settings.ingress.tail.port))
        sock.setblocking(False)
        sock.sendall(_post(slow, f"{prefix}-{i}"))
        socks.append(sock)
    try:
        # Read a little, slowly, while the answers are produced and served.
        for _ in range(40):
            await asyncio.sleep(0.5)
            for sock in socks:
                with contextlib.suppress(BlockingIOError):
                    sock.recv(64)
    finally:
        for sock in socks:
            sock.close()  # the edge cancels what is still running
    events = await _settled_usage(slow, prefix, lambda: len(upstream.calls_for(MODEL)) - before)
    calls = len(upstream.calls_for(MODEL)) - before
    bills: dict[str, list[str]] = {}
    for event in events:
        bills.setdefault(event.request_id.split(".", 1)[0], []).append(event.id)
    twice = {request: ids for request, ids in bills.items() if len(ids) > 1}
    assert not twice, _redeliveries(slow)  # one bill per request, however its copies ended
    assert calls == len(bills)  # one provider call per request


def _redeliveries(stack: Stack) -> str:
    """What the model-proxies said of requests delivered again (for a failure's message)."""
    lines = [
        f"{proc.spec.name}: {line}"
        for phase in stack.supervisor.procs
        for proc in phase
        if proc.spec.name.startswith("modelproxy")
        for line in proc.log_path.read_text(errors="replace").splitlines()
        if "delivered" in line and "caller left" not in line
    ]
    return "\n".join(lines[-20:]) or "no model-proxy logged a second delivery"
