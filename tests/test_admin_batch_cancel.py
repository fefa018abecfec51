"""``POST /admin/v1/batches/{id}/cancel``: an admin stops a tenant's batch as its owner's cancel
does (the runner ends it ``cancelled`` with lines unrun), audited, refused to the read-only
token, 409 once it has ended. The session stack: a real batch runner and provider."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from typing import Any, cast

import httpx
import openai
import pytest
from starlette.requests import Request

from switchyard.admin.api import AdminApi
from switchyard.admin.batch_cancel import cancel_batch
from switchyard.admin.context import AdminContext
from switchyard.bus import identities
from switchyard.bus.audit import AuditWriter
from switchyard.errors import ServiceUnavailable
from switchyard.runtime.batchrecords import BatchRecords
from switchyard.runtime.batchstore import BatchStore
from switchyard.runtime.client_address import TrustedProxies
from tests.stacks import Stack
from tests.support import pause

pytestmark = pytest.mark.integration

LINES = 64


def _input(tag: str, lines: int = LINES) -> bytes:
    rows = [
        {
            "custom_id": f"{tag}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            # 1.5 s calls: the batch cannot end before the cancel arrives.
            "body": {"model": "slow", "messages": [{"role": "user", "content": f"{tag} {i}"}]},
        }
        for i in range(lines)
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


async def test_an_admin_cancel_at_once_after_the_create_finds_the_batch(stack: Stack) -> None:
    """A batch created a moment ago is found, never a 404, though the gateway's copy of the
    batches (a follower of their bucket) may not have it yet: its record is read from the
    bucket itself. The admin's read of one batch likewise."""
    key, record = await stack.new_key("admin-cancel-at-once")
    async with openai.AsyncOpenAI(
        base_url=stack.gateway_url + "/v1", api_key=key, max_retries=2
    ) as client:
        for i in range(20):
            file = await client.files.create(
                # LINES (64) lines of 1.5 s: still running at the cancel on a stalled CI too
                # (2 lines could end first: a 409, not the 404 this test is about)
                file=(f"n{i}.jsonl", _input(f"atonce{i}")),
                purpose="batch",
            )
            batch = await client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            if i % 2:  # the read first, then the cancel (the cancel first otherwise)
                shown = await stack.admin("GET", f"/batches/{batch.id}")
                assert shown.status_code == 200, (i, shown.text)
                assert shown.json()["key_id"] == record.id
            cancelled = await _cancel(stack, batch.id)
            assert cancelled.status_code == 200, (i, cancelled.text)
            assert cancelled.json()["status"] == "cancelling"


def _request(method: str, path: str, batch_id: str) -> Request:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.214", 40000),
        "path_params": {"batch_id": batch_id},
    }
    return Request(scope)


async def test_a_batch_the_gateways_copy_has_not_seen_is_read_from_the_bucket(
    stack: Stack,
) -> None:
    """The management API's handlers run here, with a copy of the batches that stopped
    following the bucket before the batch was created (as a lagging or stalled watch): the
    read and the cancel find the batch in the bucket instead of answering 404."""
    admin_nc = await stack.connect(identities.ADMIN.name)
    edge_nc = await stack.connect(identities.GATEWAY.name)
    records = BatchRecords(admin_nc.jetstream(timeout=10))
    try:
        await records.start()
        await records.stop()  # the copy as it was: nothing created after this is in it
        none = cast(Any, None)
        context = AdminContext(
            auth=none,
            control=none,
            secrets=none,
            llm=none,
            keys=none,
            spend=none,
            index=none,
            audit=AuditWriter(admin_nc, "api"),
            audit_log=none,
            key_presence=none,
            files=none,
            batches=records,
            batch_store=BatchStore(edge_nc),
            proxies=TrustedProxies(),
        )
        key, record = await stack.new_key("admin-cancel-unseen")
        async with openai.AsyncOpenAI(
            base_url=stack.gateway_url + "/v1", api_key=key, max_retries=2
        ) as client:
            file = await client.files.create(file=("u.jsonl", _input("unseen", 2)), purpose="batch")
            batch = await client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        assert records.get(batch.id) is None  # not in the copy

        path = f"/admin/v1/batches/{batch.id}"
        shown = await AdminApi(lambda: context).get_batch(_request("GET", path, batch.id), context)
        assert shown.status_code == 200, shown.body
        assert json.loads(bytes(shown.body))["key_id"] == record.id

        request = _request("POST", path + "/cancel", batch.id)
        cancelled = await cancel_batch(request, context)
        assert cancelled.status_code == 200, cancelled.body
        doc = json.loads(bytes(cancelled.body))
        assert (doc["id"], doc["status"], doc["key_id"]) == (batch.id, "cancelling", record.id)
    finally:
        await records.stop()
        await edge_nc.close()
        await admin_nc.close()


async def test_a_batch_whose_bucket_did_not_answer_is_a_503_not_a_404(stack: Stack) -> None:
    """The copy has no such batch and the bucket could not be read (here: the connection is
    closed; a NATS error or the 2 s bound alike): the batch may exist, so the read and the
    cancel answer 503 with a Retry-After, not "no batch" (404), which they did before."""
    admin_nc = await stack.connect(identities.ADMIN.name)
    records = BatchRecords(admin_nc.jetstream(timeout=10))
    await records.start()
    await records.stop()
    await admin_nc.close()
    batch_id = f"batch_{uuid.uuid4().hex}"
    with pytest.raises(ServiceUnavailable) as refused:
        await records.find(batch_id)
    assert refused.value.status == 503
    assert refused.value.retry_after
    assert batch_id in str(refused.value)


async def test_an_unknown_batch_costs_one_request_when_the_copy_is_up_to_date(
    stack: Stack,
) -> None:
    """A copy that applied every write of the bucket answers an unknown id after one
    STREAM.INFO. Before, each unknown id cost a get of the old key, a watch's consumer and its
    deletion (the consumer left on the server for 120 s when the 2 s bound ended the read
    mid-create). The bucket holds files and the runner's lease too, which the copy's watch
    skips: the first lookup after their writes reads once more that no batch entry came, and
    the next one is a STREAM.INFO again (before, one such write made every lookup cost 3: the
    last entry of the bucket was nearly always the lease's). Counted as the requests its own
    connection sent, with the stack's batch runner paused (its lease renewal every ~2 s, a
    batch's progress, between two lookups make the second read on), the fewest of three
    tries, for a write that was on its way when the runner stopped."""
    admin_nc = await stack.connect(identities.ADMIN.name)
    runner = stack.process("batch").proc
    assert runner is not None
    costs = []
    await pause(runner.pid)
    try:
        for _ in range(3):
            records = BatchRecords(admin_nc.jetstream(timeout=10))
            await records.start()
            await records.stop()  # up to date, and no watch traffic from here on
            assert await records.find(f"batch_{uuid.uuid4().hex}") is None  # (first lookups)
            sent = admin_nc.stats["out_msgs"]
            assert await records.find(f"batch_{uuid.uuid4().hex}") is None
            costs.append(admin_nc.stats["out_msgs"] - sent)
            if costs[-1] == 1:
                break
        assert min(costs) == 1, costs
    finally:
        runner.send_signal(signal.SIGCONT)
        await admin_nc.close()
