"""A tenant's file storage quota at the edge, with the official SDKs: uploads past it refused
in OpenAI's shape (before the body is read when its length says so), room made by deleting a
file, tenants independent, two uploads at once not both let through, and Anthropic's message
batch creates (whose requests are stored as a file) held to the same quota.

Its own small stack (a tail edge alone: nothing here runs a batch), with a quota of 2.5 MiB
and 4 files per tenant, and files of at most 2 MiB.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
import pytest_asyncio

from tests.stacks import Stack, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1024 * 1024
QUOTA = 2 * MIB + MIB // 2


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def quota_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    extra = {"batch": {"max_file_bytes": 2 * MIB, "tenant_max_bytes": QUOTA, "tenant_max_files": 4}}
    stack = await start_stack(
        tmp_path_factory.mktemp("quota"), extra, components=["tail"], wait_ready=False
    )
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _client(stack: Stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.tail_url + "/v1", api_key=key, max_retries=0)


async def _upload(client: openai.AsyncOpenAI, size: int) -> Any:
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    data = (line * (size // len(line) + 1))[:size]
    return await client.files.create(file=("in.jsonl", data), purpose="batch")


def _refusal(exc: openai.APIStatusError) -> dict[str, Any]:
    assert exc.status_code == 400
    body: dict[str, Any] = exc.response.json()["error"]
    assert body["type"] == "invalid_request_error"
    assert body["code"] == "storage_quota_exceeded"
    assert "DELETE /v1/files/{file_id}" in body["message"]
    return body


async def test_uploads_past_the_quota_are_refused_until_a_file_is_deleted(
    quota_stack: Stack,
) -> None:
    key, _ = await quota_stack.new_key("quota-full")
    other, _ = await quota_stack.new_key("quota-other")
    async with _client(quota_stack, key) as client, _client(quota_stack, other) as neighbour:
        first = await _upload(client, MIB)
        await _upload(client, MIB)
        with pytest.raises(openai.BadRequestError) as info:
            await _upload(client, MIB)
        body = _refusal(info.value)
        assert (
            f"at most {QUOTA} bytes, they take {2 * MIB}, and this one is {MIB}"
            in (body["message"])
        )
        assert len((await client.files.list()).data) == 2  # nothing stored of the refused one
        # Another tenant's files are its own: this key's full quota does not stop it.
        await _upload(neighbour, 2 * MIB)
        await client.files.delete(first.id)
        await _upload(client, MIB)


async def test_an_upload_whose_length_cannot_fit_is_refused_before_its_body_is_sent(
    quota_stack: Stack,
) -> None:
    """The tenant has 0.5 MiB left; a body announcing 2 MiB is answered from its headers."""
    key, _ = await quota_stack.new_key("quota-announced")
    async with _client(quota_stack, key) as client:
        await _upload(client, 2 * MIB)
    port = quota_stack.settings.ingress.tail.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            "POST /v1/files HTTP/1.1\r\nHost: edge\r\n"
            f"Authorization: Bearer {key}\r\n"
            "Content-Type: multipart/form-data; boundary=b0undary\r\n"
            f"Content-Length: {2 * MIB}\r\n\r\n"
        )
        writer.write(head.encode() + b"--b0undary\r\n")  # and not another byte
        await writer.drain()
        head_in = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        length = re.search(rb"content-length: (\d+)", head_in, re.IGNORECASE)
        assert length is not None, head_in
        body = await asyncio.wait_for(reader.readexactly(int(length.group(1))), 30)
    finally:
        writer.close()
    assert head_in.startswith(b"HTTP/1.1 400"), head_in
    error = json.loads(body)["error"]
    assert error["code"] == "storage_quota_exceeded"
    assert "this one is at least" in error["message"]


async def test_two_uploads_at_once_do_not_both_take_the_last_room(quota_stack: Stack) -> None:
    """Each fits alone, not together: exactly one is stored, whichever order they land in."""
    key, _ = await quota_stack.new_key("quota-race")
    async with _client(quota_stack, key) as client:
        results = await asyncio.gather(
            _upload(client, 3 * MIB // 2), _upload(client, 3 * MIB // 2), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, openai.BadRequestError)]
        assert len(refused) == 1, results
        _refusal(refused[0])
        assert len((await client.files.list()).data) == 1


async def test_a_message_batch_is_held_to_the_same_quota(quota_stack: Stack) -> None:
    """Its requests are stored as its input file: counted, and refused past the quota in
    Anthropic's shape."""
    key, _ = await quota_stack.new_key("quota-count")
    requests: Any = [
        {"custom_id": "q1", "params": {"model": "demo", "max_tokens": 8, "messages": []}}
    ]
    async with _client(quota_stack, key) as client:
        files = [await _upload(client, 100) for _ in range(4)]
        with pytest.raises(openai.BadRequestError) as info:
            await _upload(client, 100)
        assert "at most 4 files, and you have 4" in _refusal(info.value)["message"]
        async with anthropic.AsyncAnthropic(
            base_url=quota_stack.tail_url, api_key=key, max_retries=0
        ) as claude:
            with pytest.raises(anthropic.BadRequestError) as refused:
                await claude.messages.batches.create(requests=requests)
            error = refused.value.body["error"]  # type: ignore[index]
            assert error["type"] == "invalid_request_error"
            assert "at most 4 files" in error["message"]
            await client.files.delete(files[0].id)
            await claude.messages.batches.create(requests=requests)
        # The message batch's input takes the room the delete made.
        with pytest.raises(openai.BadRequestError):
            await _upload(client, 100)
