"""``POST /admin/v1/batches/{id}/cancel``: an admin stops a tenant's batch as its owner's cancel
does (the runner ends it ``cancelled`` with lines unrun), audited, refused to the read-only
token, 409 once it has ended. The session stack: a real batch runner and provider."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration

LINES = 64


def _input(tag: str) -> bytes:
    rows = [
        {
            "custom_id": f"{tag}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            # 1.5 s calls: the batch cannot end before the cancel arrives.
            "body": {"model": "slow", "messages": [{"role": "user", "content": f"{tag} {i}"}]},
        }
        for i in range(LINES)
    ]
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


async def _cancel(stack: Stack, batch_id: str, token: str | None = None) -> httpx.Response:
    headers = stack.admin_headers() if token is None else {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{stack.gateway_url}/admin/v1/batches/{batch_id}/cancel", headers=headers
        )


async def _seen(stack: Stack, batch_id: str) -> dict[str, Any]:
    """The batch as the admin API shows it, once the gateway's follower has it."""
    async with asyncio.timeout(15):
        while True:
            answer = await stack.admin("GET", f"/batches/{batch_id}")
            if answer.status_code == 200:
                doc: dict[str, Any] = answer.json()
                return doc
            await asyncio.sleep(0.1)


def _error(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    return error


async def test_an_admin_cancels_a_tenants_running_batch(stack: Stack) -> None:
    key, record = await stack.new_key("admin-cancel")
    async with openai.AsyncOpenAI(
        base_url=stack.tail_url + "/v1", api_key=key, max_retries=2
    ) as client:
        file = await client.files.create(file=("c.jsonl", _input("admincancel")), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        seen = await _seen(stack, batch.id)
        assert seen["status"] in ("validating", "in_progress")

        readonly = stack.settings.admin_readonly_token_file.read_text(encoding="utf-8").strip()
        refused = _error(await _cancel(stack, batch.id, readonly), 403)
        assert refused["code"] == "admin_read_only"

        cancelled = await _cancel(stack, batch.id)
        assert cancelled.status_code == 200, cancelled.text
        doc = cancelled.json()
        assert doc["id"] == batch.id
        assert doc["status"] == "cancelling"
        assert doc["key_id"] == record.id  # whose it is, as GET shows it

        deadline = time.monotonic() + 30
        while (ended := await client.batches.retrieve(batch.id)).status != "cancelled":
            assert time.monotonic() < deadline, f"batch still {ended.status}"
            await asyncio.sleep(0.5)
        assert ended.request_counts is not None
        assert ended.request_counts.completed < LINES  # stopped, not run to its end

    again = _error(await _cancel(stack, batch.id), 409)
    assert "cancelled" in again["message"]
    missing = _error(await _cancel(stack, "batch_doesnotexist"), 404)
    assert missing["param"] == "batch_id"

    entries = (await stack.admin("GET", f"/audit?kind=batch&q={batch.id}")).json()["entries"]
    assert [(e["action"], e["target"], e["via"]) for e in entries] == [
        ("batch.cancel", batch.id, "api")
    ]
    assert record.id in entries[0]["detail"]


async def test_an_admin_cancel_of_a_stopping_batch_is_a_409_and_not_audited(stack: Stack) -> None:
    """A batch its owner is cancelling (or one writing its results) cannot be changed by an
    admin's cancel: a 200 there said, and audited, a cancel that did nothing."""
    key, _ = await stack.new_key("admin-cancel-stopping")
    async with openai.AsyncOpenAI(
        base_url=stack.tail_url + "/v1", api_key=key, max_retries=2
    ) as client:
        file = await client.files.create(file=("s.jsonl", _input("adminstopping")), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        await _seen(stack, batch.id)
        mine = await client.batches.cancel(batch.id)  # the owner's cancel first
        assert mine.status == "cancelling"
        async with asyncio.timeout(15):  # the gateway's follower sees the owner's write
            while (await _seen(stack, batch.id))["status"] in ("validating", "in_progress"):
                await asyncio.sleep(0.05)
        refused = _error(await _cancel(stack, batch.id), 409)
        assert refused["param"] == "batch_id"
        assert "cancel" in refused["message"]  # being cancelled, or cancelled by now

    entries = (await stack.admin("GET", f"/audit?kind=batch&q={batch.id}")).json()["entries"]
    assert entries == []
