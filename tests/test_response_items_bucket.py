"""The ``sy_response_items`` bucket against a real nats-server: bounded with the oldest items
going first (nats-py makes buckets refuse new writes instead), its bounds applied again by
``switchyard provision``, items read back only by their own tenant, and a bucket that cannot be
written or read neither fails an answer nor forwards a request
(:mod:`switchyard.workers.modelproxy.response_items`)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js import api as js_api

from switchyard.bus import subjects
from switchyard.config.queue_settings import StreamSettings
from switchyard.config.settings import Settings
from switchyard.errors import NotFound, ServiceUnavailable
from switchyard.runtime.definitions import response_items_stream_config
from switchyard.schemas.routing import Provider
from switchyard.stack.provision import _ensure_stream
from switchyard.workers.modelproxy.dialects import resolve_references
from switchyard.workers.modelproxy.response_items import ResponseItems
from tests.support import jetstream_server
from tests.unit.demo_calls import demo_call

MIB = 1024 * 1024
STREAM = f"KV_{subjects.RESPONSE_ITEMS_BUCKET}"


def _settings(max_bytes: int = MIB, max_age_s: float = 3600.0) -> Settings:
    streams = StreamSettings(response_items_max_bytes=max_bytes, response_items_max_age_s=max_age_s)
    return Settings(streams=streams)


@pytest_asyncio.fixture
async def nc(tmp_path: Path) -> AsyncIterator[NATS]:
    async with jetstream_server(tmp_path) as (client, _):
        yield client


def _message(n: int, size: int = 0) -> dict[str, Any]:
    return {
        "id": f"msg_{n:04d}",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": f"answer {n} " + "x" * size}],
    }


def _referencing(*ids: str) -> Any:
    return demo_call("responses", input=[{"type": "item_reference", "id": i} for i in ids])


@pytest.mark.asyncio
async def test_a_full_bucket_lets_its_oldest_items_go(nc: NATS) -> None:
    js = nc.jetstream(timeout=10)
    await _ensure_stream(js, response_items_stream_config(_settings()))
    items = ResponseItems(nc)
    for n in range(40):  # ~40 KiB each: 1.6 MiB into a bucket of 1 MiB
        items.keep([_message(n, 40 * 1024)], "team-a")
        await items.close()
    assert items.stored == 40
    assert items.failed == 0
    info = await js.stream_info(STREAM)
    assert info.state.bytes <= MIB
    call = await items.resolve(_referencing("msg_0039"), "team-a")
    assert call.body["input"][0]["content"][0]["text"].startswith("answer 39 ")
    with pytest.raises(NotFound) as gone:
        await items.resolve(_referencing("msg_0000"), "team-a")
    assert gone.value.code == "item_not_found"
    assert "msg_0000" in gone.value.message


@pytest.mark.asyncio
async def test_only_the_tenant_that_stored_an_item_reads_it(nc: NATS) -> None:
    js = nc.jetstream(timeout=10)
    await _ensure_stream(js, response_items_stream_config(_settings()))
    items = ResponseItems(nc)
    items.keep([_message(1), {"id": "rs_1", "type": "reasoning", "summary": []}], "team-a")
    await items.close()
    assert items.stored == 1  # a reasoning item is not kept
    call = _referencing("msg_0001")
    assert (await resolve_references(call, items, "team-a")).body["input"] == [_message(1)]
    for tenant in ("team-b", "internal"):
        with pytest.raises(NotFound):
            await resolve_references(call, items, tenant)
    # A native deployment's provider holds its own items: what is not kept here goes on as
    # it came, what is (a conversation begun on a translating deployment) is filled in.
    native = dataclasses.replace(call, provider=Provider(kind="openai"))
    assert await resolve_references(native, items, "team-b") is native
    mixed = dataclasses.replace(native, body=_referencing("msg_0001", "msg_openai_own").body)
    filled = await resolve_references(mixed, items, "team-a")
    assert filled.body["input"] == [_message(1), {"type": "item_reference", "id": "msg_openai_own"}]


@pytest.mark.asyncio
async def test_provision_applies_changed_bounds_in_place(nc: NATS) -> None:
    js = nc.jetstream(timeout=10)
    await _ensure_stream(js, response_items_stream_config(_settings()))
    items = ResponseItems(nc)
    items.keep([_message(7)], "t")
    await items.close()
    await _ensure_stream(js, response_items_stream_config(_settings(4 * MIB, 86400.0)))
    config = (await js.stream_info(STREAM)).config
    assert config.max_bytes == 4 * MIB
    assert config.max_age == 86400.0
    assert config.discard == js_api.DiscardPolicy.OLD
    assert (await items.resolve(_referencing("msg_0007"), "t")).body["input"][0]["id"] == "msg_0007"


@pytest.mark.asyncio
async def test_a_missing_bucket_fails_no_answer_and_forwards_no_request(nc: NATS) -> None:
    items = ResponseItems(nc)  # nothing provisioned
    items.keep([_message(1)], "t")  # never raises
    await items.close()
    assert (items.stored, items.failed) == (0, 1)
    with pytest.raises(ServiceUnavailable) as refused:
        await items.resolve(_referencing("msg_0001"), "t")
    assert refused.value.code == "items_unavailable"
    plain = demo_call("responses", input="no references")
    assert await items.resolve(plain, "t") is plain  # nothing read, nothing refused
    # A native deployment's references may all be its provider's: passed on, not refused.
    native = dataclasses.replace(_referencing("msg_0001"), provider=Provider(kind="openai"))
    assert await resolve_references(native, items, "t") is native


@pytest.mark.asyncio
async def test_switched_off_nothing_is_kept_or_read(nc: NATS) -> None:
    """``modelproxy.keep_response_items: false``: no answer content is stored; a reference on
    a translating deployment is OpenAI's 404, on a native one it goes on as it came."""
    js = nc.jetstream(timeout=10)
    await _ensure_stream(js, response_items_stream_config(_settings()))
    items = ResponseItems(nc, enabled=False)
    items.keep([_message(1)], "t")
    await items.close()
    assert (items.stored, items.failed) == (0, 0)
    assert (await js.stream_info(STREAM)).state.messages == 0
    with pytest.raises(NotFound):
        await items.resolve(_referencing("msg_0001"), "t")
    native = dataclasses.replace(_referencing("msg_0001"), provider=Provider(kind="openai"))
    assert await resolve_references(native, items, "t") is native
