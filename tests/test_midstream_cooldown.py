"""A provider that fails after part of its answer was sent is cooled down like any other.

Before anything reached the caller, a failure is rerouted and the head that takes it cools the
deployment. A stream that breaks midway cannot be rerouted, so no head heard of it and the
deployment kept its full share of traffic; the model-proxy now cools it itself. A caller that
leaves mid-stream says nothing of the provider: no cooldown. On the session stack, with routes
of this module's own, removed at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import msgspec
import pytest
from nats.js.errors import KeyNotFoundError

from switchyard.bus import subjects
from switchyard.runtime.cooldowns import CooldownWriter
from switchyard.schemas.health import PREFIX, Cooldown
from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack
from tests.support import jetstream_server
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BREAKS = deployment_id("fake", "midfail")  # streams two words, then an error event
HOLDS = deployment_id("fake", "ctl:midstream-ok")  # echoes (its mode is never set)
TRICKLE = "trickle:45"  # 300 chunks 45 ms apart; its own pace, so its cuts are this module's
LEAVES = deployment_id("fake", TRICKLE)


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Wait for ``check`` (generous: a loaded machine is slow, never wrong)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _route(stack: Stack, alias: str, *models: str) -> None:
    route = {"deployments": [{"provider": "fake", "model": m} for m in models]}
    changed = await stack.admin("PUT", f"/routes/{alias}", route)
    assert changed.status_code == 200, changed.text


async def _chat(stack: Stack, alias: str, *, stream: bool) -> httpx.Response:
    """One chat request, sent again while a head has not seen the new alias yet (404)."""
    body = {"model": alias, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=60) as http:
        while True:
            resp = await http.post(
                f"{stack.tail_url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {stack.api_key}", "X-Request-Timeout": "30"},
            )
            if resp.status_code != 404:
                return resp
            await asyncio.sleep(0.1)


async def _cooldown(stack: Stack, dep: str) -> Cooldown | None:
    """The cooldown every head follows for ``dep``, as stored in ``sy_health``."""
    nc = await stack.connect("provisioner")
    try:
        kv = await nc.jetstream(timeout=10).key_value(subjects.HEALTH_BUCKET)
        try:
            entry = await kv.get(f"{PREFIX}{dep}")
        except KeyNotFoundError:
            return None
        return msgspec.json.decode(entry.value or b"", type=Cooldown)
    finally:
        await nc.close()


async def _stopped_streams(stack: Stack, dep: str) -> float:
    """Requests on ``dep`` whose caller left while a model-proxy served them, over every
    model-proxy (counted once the request is done with: after any cooldown it wrote)."""
    return await stack.modelproxy_total(
        "switchyard_cancelled_requests_total", deployment=dep, stage="serving"
    )


async def test_a_stream_broken_midway_cools_its_deployment(stack: Stack) -> None:
    """The caller gets the error in its stream; the deployment is then cooling down for every
    head (``routing.cooldown_s``: 5 s here, status and reason as a head writes them), and the
    route's other deployment takes the requests that follow."""
    alias = "midstream-cools"
    await stack.admin("DELETE", f"/deployments/{BREAKS}/cooldown")
    await _route(stack, alias, "midfail", "ctl:midstream-ok")
    try:
        for _ in range(3):  # a loaded machine may see the 5 s out before a request is sent
            await stack.admin("DELETE", f"/deployments/{BREAKS}/cooldown")
            for _ in range(40):  # the weighted pick lands on the breaking deployment
                resp = await _chat(stack, alias, stream=True)
                assert resp.status_code == 200, resp.text
                if resp.headers["x-switchyard-deployment"] == BREAKS:
                    break
            else:
                pytest.fail("40 streams never reached the deployment that breaks")
            assert "half" in resp.text  # part of the answer was sent before it broke
            assert "failed mid-stream: upstream broke mid-answer" in resp.text

            async def cooled() -> bool:
                return await _cooldown(stack, BREAKS) is not None

            await _until(cooled, "the broken deployment's cooldown")
            entry = await _cooldown(stack, BREAKS)
            assert entry is not None
            assert entry.until - entry.since == pytest.approx(stack.settings.routing.cooldown_s)
            assert entry.status == 502
            assert entry.reason.startswith(f"{BREAKS}: 502 provider fake failed mid-stream")
            # The cooldown's own clock: while it runs (less what a request takes to reach a
            # head), every request goes to the other deployment.
            sent = 0
            while time.time() < entry.until - 1.0:
                resp = await _chat(stack, alias, stream=False)
                assert resp.status_code == 200, resp.text
                assert resp.headers["x-switchyard-deployment"] == HOLDS
                sent += 1
            if sent >= 3:
                break
            # Tried again once it ended: a model-proxy writes a deployment's cooldown once
            # while the one it wrote runs, even if the admin API ended it meanwhile.
            await asyncio.sleep(max(0.0, entry.until - time.time() + 0.1))
        else:
            pytest.fail("no try sent three requests inside the cooldown: nothing was proved")
    finally:
        await stack.admin("DELETE", f"/deployments/{BREAKS}/cooldown")
        await stack.admin("DELETE", f"/routes/{alias}")


async def test_a_caller_leaving_mid_stream_cools_nothing(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    """A client that disconnects after a few chunks stops the provider call; the provider did
    nothing wrong, so its deployment is not cooled down."""
    alias = "midstream-leaves"
    await stack.admin("DELETE", f"/deployments/{LEAVES}/cooldown")
    await _route(stack, alias, TRICKLE)
    assert (await _chat(stack, alias, stream=False)).status_code == 200  # the route is live
    stopped = await _stopped_streams(stack, LEAVES)
    cuts = upstream.cut.count(TRICKLE)
    body = json.dumps(
        {"model": alias, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.settings.ingress.tail.port)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer %s\r\nX-Request-Timeout: 60\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (stack.api_key.encode(), len(body), body)
        )
        await writer.drain()
        seen = b""
        while seen.count(b"data: {") < 3:
            more = await asyncio.wait_for(reader.read(4096), 30)
            assert more, seen
            seen += more
    finally:
        writer.transport.abort()  # the client is gone, mid-stream

    async def cut() -> bool:
        return upstream.cut.count(TRICKLE) > cuts

    async def done_with() -> bool:
        return await _stopped_streams(stack, LEAVES) > stopped

    try:
        await _until(cut, "the provider call stopped")
        await _until(done_with, "the model-proxy done with the stopped request")
        assert await _cooldown(stack, LEAVES) is None
    finally:
        await stack.admin("DELETE", f"/deployments/{LEAVES}/cooldown")
        await stack.admin("DELETE", f"/routes/{alias}")


async def test_a_cooldown_written_from_a_model_proxy_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write that fails (no bucket: KV unavailable) is logged and returns; the request it
    follows is answered all the same. Once the bucket takes it, a deployment is written once
    while that cooldown runs: every stream of a broken provider fails at about one moment."""
    caplog.set_level(logging.INFO)
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=2)
        writer = CooldownWriter(js)
        assert await writer.cool("d", 5, status=502, reason="d: 502 broke") is None
        assert "could not put deployment d in cooldown" in caplog.text
        kv = await js.create_key_value(bucket=subjects.HEALTH_BUCKET)
        written = await writer.cool("d", 5, status=502, reason="d: 502 broke")
        assert written is not None
        assert written.until - written.since == pytest.approx(5)
        assert await writer.cool("d", 5, status=502, reason="d: 502 again") is None
        stored = msgspec.json.decode((await kv.get(f"{PREFIX}d")).value or b"", type=Cooldown)
        assert stored == written
        assert (await kv.status()).values == 1
