"""Request bodies larger than one NATS message carries, with `ingress.max_body_bytes` above it.

The edges took bodies up to ``ingress.max_body_bytes`` and published them as one message; the
server's ``max_payload`` (8 MiB here) is the real ceiling. With the setting raised to 32 MiB, an
8.4 MB image request was a bare 500 "internal error in the gateway" on every route of both edges
(nats-py's ``MaxPayloadError`` from the publish), which SDKs retry for ever, and an internal
client got that untyped exception. Now the edges refuse it with the 413 ``request_too_large`` a
body over the setting gets, naming the limit in force (the smaller of the setting and
``max_payload`` less 16 KiB for headers), the internal client raises that 413, and the edges,
``switchyard config`` and ``up`` warn that the setting is above the ceiling.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from switchyard.bus.replies import HEADERS_ROOM
from switchyard.client import LLMClient
from switchyard.errors import PayloadTooLarge
from switchyard.stack.natsconf import MAX_PAYLOAD
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETTING = 32 * 1024 * 1024
CEILING = MAX_PAYLOAD - HEADERS_ROOM
IMAGE = "data:image/png;base64," + base64.b64encode(b"\x89PNG" * (6_300_000 // 4)).decode()
assert CEILING < len(IMAGE) < SETTING  # an 8.4 MB image: the explorer's case
PICTURE = [{"type": "image_url", "image_url": {"url": IMAGE}}]
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "echo", "messages": [{"role": "user", "content": PICTURE}]},
    "/v1/embeddings": {"model": "echo", "input": [IMAGE]},
    "/v1/responses": {"model": "echo", "input": IMAGE},
    "/v1/messages": {
        "model": "echo",
        "max_tokens": 10,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": IMAGE},
                    }
                ],
            }
        ],
    },
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def raised(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 4}
        },
        "routes": {"echo": {"deployments": [{"provider": "fake", "model": "echo"}]}},
        "ingress": {"max_body_bytes": SETTING},
    }
    stack = await start_stack(tmp_path_factory.mktemp("ceiling"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def test_a_body_past_what_the_bus_carries_is_413_on_every_route_of_both_edges(
    raised: Stack,
) -> None:
    for base in (raised.tail_url, raised.gateway_url):
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            for path, body in BODIES.items():
                got = await http.post(
                    path, json=body, headers={"Authorization": f"Bearer {raised.api_key}"}
                )
                assert got.status_code == 413, (base, path, got.text[:300])
                error = got.json()["error"]
                assert f"limit of {CEILING} bytes" in error["message"], (path, error)
                if path == "/v1/messages":  # Anthropic's shape
                    assert error["type"] == "request_too_large", error
                else:
                    assert error["code"] == "request_too_large", error


async def test_a_body_over_the_default_but_under_the_ceiling_is_served(raised: Stack) -> None:
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": "hi"}],
        "pad": "x" * 5_000_000,
    }
    async with httpx.AsyncClient(base_url=raised.tail_url, timeout=60) as http:
        got = await http.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {raised.api_key}"}
        )
    assert got.status_code == 200, got.text[:300]


async def test_an_internal_client_gets_the_413_not_an_untyped_error(raised: Stack) -> None:
    nc = await raised.connect("app")
    try:
        async with LLMClient(nc, api_key=raised.api_key) as llm:
            with pytest.raises(PayloadTooLarge, match=f"limit of {CEILING} bytes"):
                await llm.chat(BODIES["/v1/chat/completions"])
            with pytest.raises(PayloadTooLarge):
                await llm.embed(BODIES["/v1/embeddings"])
            answer = await llm.chat(
                {"model": "echo", "messages": [{"role": "user", "content": "ok"}]}
            )
    finally:
        await nc.close()
    assert answer["choices"][0]["message"]["content"] == "echo: ok"  # (and it still serves)


def test_the_setting_above_the_ceiling_is_warned_of(raised: Stack) -> None:
    logs = "".join(
        path.read_text(encoding="utf-8", errors="replace")
        for path in raised.home.logs.glob("*.log")
        if path.name.startswith(("tail", "gateway"))
    )
    assert (
        f"ingress.max_body_bytes is {SETTING} but the NATS server carries at most {CEILING}" in logs
    )
    shown = raised.cli("config")
    assert shown.returncode == 0, shown.stderr
    assert f"ingress.max_body_bytes is {SETTING}" in shown.stderr
    assert "request_too_large" in shown.stderr
