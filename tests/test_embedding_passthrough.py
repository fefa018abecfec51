"""Embeddings through the OpenAI-compatible fast path come in the encoding asked for.

The Node SDK asks for base64 by default and decodes whatever comes back as base64. A server
that ignores ``encoding_format`` answers lists of floats, which that SDK turned into garbage
without an error: the model-proxy now encodes them. Through the session stack, over real HTTP,
to the fake provider (``tests/upstream.py``): the session's ``text-embedding-3-small`` route
reaches a model that ignores the field, ``embedformat`` one that honours it.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

HONOURS = "passthrough-embedformat"
FAKE_VECTOR = [0.1, 0.2, 0.3]  # what the fake embeds any text as


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(stack: Stack) -> AsyncIterator[Stack]:
    route = {"deployments": [{"provider": "fake", "model": "embedformat"}]}
    put = await stack.admin("PUT", f"/routes/{HONOURS}", route)
    assert put.status_code == 200, put.text
    try:
        yield stack
    finally:
        await stack.admin("DELETE", f"/routes/{HONOURS}")


async def _embed(stack: Stack, model: str, **fields: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        answer = await http.post(
            "/v1/embeddings",
            json={"model": model, "input": ["a", "bb"], **fields},
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


def _float32(encoded: Any) -> list[float]:
    assert isinstance(encoded, str), f"not base64: {encoded!r}"
    raw = base64.b64decode(encoded, validate=True)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _as_float32(vector: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))


@pytest.mark.parametrize("model", ["text-embedding-3-small", HONOURS])
async def test_base64_asked_is_base64_whatever_the_server_sent(
    routed: Stack, upstream: FakeOpenAI, model: str
) -> None:
    doc = await _embed(routed, model, encoding_format="base64")
    assert [_float32(item["embedding"]) for item in doc["data"]] == [_as_float32(FAKE_VECTOR)] * 2
    assert [item["index"] for item in doc["data"]] == [0, 1]
    assert doc["usage"]["prompt_tokens"] == 2
    upstream_model = "embedformat" if model == HONOURS else "echo"
    sent = upstream.calls_for(upstream_model)[-1].body
    assert sent["encoding_format"] == "base64"  # passed on: a server that honours it may


@pytest.mark.parametrize("fields", [{}, {"encoding_format": "float"}])
async def test_floats_asked_pass_through_as_floats(routed: Stack, fields: dict[str, Any]) -> None:
    doc = await _embed(routed, "text-embedding-3-small", **fields)
    assert [item["embedding"] for item in doc["data"]] == [FAKE_VECTOR] * 2
