"""Anthropic's Message Batches API with Anthropic's own SDK: create, poll, results, cancel,
delete, and the refusals, each in Anthropic's shape.

Its own stack (a deployment of concurrency 4 in front of a provider that takes 50 ms). The
batch runner is the one that runs OpenAI batches, so what it guarantees there (a line answered
once, billed once, across restarts) is tested in ``test_batches.py``; here: that Anthropic's
client gets Anthropic's objects and one result per request, whatever became of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
import pytest_asyncio

from switchyard.schemas.batches import BATCH_PREFIX, FILE_PREFIX, owned_key
from tests.stacks import Stack, batch_config, start_stack
from tests.support import pause
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def msgbatchy(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    stack = await start_stack(tmp_path_factory.mktemp("msgbatchy"), batch_config(upstream.base_url))
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _requests(tag: str, n: int, model: str = "bulk") -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{tag}-{i}",
            "params": {
                "model": model,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"{tag} {i}"}],
            },
        }
        for i in range(n)
    ]


def _client(stack: Stack, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=stack.tail_url, api_key=key, max_retries=2)


async def _until_ended(client: anthropic.AsyncAnthropic, batch_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = await client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"still {batch.processing_status}"
        await asyncio.sleep(0.5)


async def _results(client: anthropic.AsyncAnthropic, batch_id: str) -> dict[str, Any]:
    """Results by custom_id; fails on a custom_id seen twice."""
    out: dict[str, Any] = {}
    async for row in await client.messages.batches.results(batch_id):
        assert row.custom_id not in out, f"{row.custom_id} answered twice"
        out[row.custom_id] = row.result
    return out


async def _billed(stack: Stack, key_id: str, expected: int, timeout: float = 20.0) -> int:
    """Billed requests of a key once they reached ``expected`` (or what they were at the end
    of ``timeout``), then 3 s later, so a late double bill shows."""
    deadline = time.monotonic() + timeout
    while True:
        days = (await stack.admin("GET", "/spend?days=1")).json()["days"]
        billed = sum(r["requests"] for r in days if r.get("key") == key_id)
        if billed >= expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)
    days = (await stack.admin("GET", "/spend?days=1")).json()["days"]
    return sum(r["requests"] for r in days if r.get("key") == key_id)


async def test_the_sdk_runs_a_batch_and_reads_one_result_per_request(msgbatchy: Stack) -> None:
    key, record = await msgbatchy.new_key("msgbatch-happy")
    requests = _requests("happy", 40)
    requests[7]["params"]["model"] = "no-such-model"  # errored, the rest still run
    async with _client(msgbatchy, key) as client:
        batch = await client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        assert batch.id.startswith("msgbatch_")
        assert batch.type == "message_batch"
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == 40
        assert batch.results_url is None
        assert batch.expires_at > batch.created_at
        done = await _until_ended(client, batch.id, timeout=60)
        counts = done.request_counts
        assert (counts.processing, counts.succeeded, counts.errored) == (0, 39, 1)
        assert (counts.canceled, counts.expired) == (0, 0)
        assert done.ended_at is not None
        assert done.results_url == f"{msgbatchy.tail_url}/v1/messages/batches/{batch.id}/results"
        results = await _results(client, batch.id)
        assert sorted(results) == sorted(r["custom_id"] for r in requests)
        for custom_id, result in results.items():
            if custom_id == "happy-7":
                assert result.type == "errored"
                assert result.error.error.type == "not_found_error"
                assert "no-such-model" in result.error.error.message
                continue
            assert result.type == "succeeded", result
            assert result.message.type == "message"
            number = custom_id.rsplit("-", 1)[1]
            assert result.message.content[0].text == f"echo: happy {number}"
        listed = [b.id async for b in client.messages.batches.list(limit=5)]
        assert batch.id in listed
    assert await _billed(msgbatchy, record.id, 39) == 39
    # OpenAI's Batch API neither shows the batch nor its files; another tenant sees nothing.
    async with openai.AsyncOpenAI(base_url=msgbatchy.tail_url + "/v1", api_key=key) as oai:
        with pytest.raises(openai.NotFoundError):
            await oai.batches.retrieve(batch.id)
        assert batch.id not in [b.id for b in (await oai.batches.list()).data]
        assert (await oai.files.list()).data == []
    other, _ = await msgbatchy.new_key("msgbatch-stranger")
    async with _client(msgbatchy, other) as stranger:
        with pytest.raises(anthropic.NotFoundError):
            await stranger.messages.batches.retrieve(batch.id)
        assert [b.id async for b in stranger.messages.batches.list()] == []
    # Deleting an ended batch removes it and its results.
    async with _client(msgbatchy, key) as client:
        deleted = await client.messages.batches.delete(batch.id)
        assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.batches.retrieve(batch.id)
    assert (
        await msgbatchy.object_traces([f"file-{batch.id}-input", f"file-{batch.id}-results"]) == []
    )
    keys = [
        owned_key(BATCH_PREFIX, record.id, batch.id),  # the key has no team: it is the owner
        owned_key(FILE_PREFIX, record.id, f"file-{batch.id}-input"),
        owned_key(FILE_PREFIX, record.id, f"file-{batch.id}-results"),
    ]
    deadline = time.monotonic() + 15
    while traces := await msgbatchy.bucket_traces(keys):  # the runner's sweep purges them
        assert time.monotonic() < deadline, f"still in sy_batches: {traces}"
        await asyncio.sleep(0.5)


async def test_cancel_ends_the_batch_with_the_unrun_requests_canceled(msgbatchy: Stack) -> None:
    key, _ = await msgbatchy.new_key("msgbatch-cancel")
    # 300 x 400 ms over 4 slots a model proxy: far more work than the steps before the cancel
    # take on a loaded machine (with 50 ms calls a slow CI run once saw all 300 done first).
    requests = _requests("cancel", 300, model="bulk-slow")
    async with _client(msgbatchy, key) as client:
        batch = await client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        with pytest.raises(anthropic.ConflictError) as refused:  # results before the end
            await client.get(f"/v1/messages/batches/{batch.id}/results", cast_to=httpx.Response)
        assert "still processing" in str(refused.value)
        # Sent once: the SDK retries a 409 unless told no retry can succeed (x-should-retry).
        assert refused.value.response.headers.get("x-should-retry") == "false"
        with pytest.raises(anthropic.ConflictError) as early:  # delete before the end
            await client.messages.batches.delete(batch.id)
        assert early.value.response.request.headers["x-stainless-retry-count"] == "0"
        await asyncio.sleep(0.5)
        canceling = await client.messages.batches.cancel(batch.id)
        assert canceling.processing_status in ("canceling", "ended")
        assert canceling.cancel_initiated_at is not None
        done = await _until_ended(client, batch.id, timeout=60)
        counts = done.request_counts
        assert counts.canceled > 0
        assert counts.succeeded + counts.errored + counts.canceled == 300
        results = await _results(client, batch.id)
        assert len(results) == 300
        kinds = [r.type for r in results.values()]
        assert kinds.count("canceled") == counts.canceled
        assert kinds.count("succeeded") == counts.succeeded
        with pytest.raises(anthropic.ConflictError) as ended:  # cancelling what has ended
            await client.messages.batches.cancel(batch.id)
        assert ended.value.response.request.headers["x-stainless-retry-count"] == "0"


async def test_a_canceling_batchs_results_are_refused_not_to_retry(msgbatchy: Stack) -> None:
    """A canceling message batch waits for the lines a provider is answering (up to
    ``batch.line_timeout_s`` and slack), and indefinitely while no runner runs (as here): the
    409 of its results or delete says ``x-should-retry: false``, as while it processes."""
    key, _ = await msgbatchy.new_key("msgbatch-canceling")
    runner = msgbatchy.process("batch").proc
    assert runner is not None
    async with _client(msgbatchy, key) as client:
        await pause(runner.pid)  # the batch stays canceling until the runner goes on
        try:
            batch = await client.messages.batches.create(requests=_requests("canceling", 3))  # type: ignore[arg-type]
            canceling = await client.messages.batches.cancel(batch.id)
            assert canceling.processing_status == "canceling"
            once = client.with_options(max_retries=0)
            with pytest.raises(anthropic.ConflictError) as results:
                await once.get(f"/v1/messages/batches/{batch.id}/results", cast_to=httpx.Response)
            with pytest.raises(anthropic.ConflictError) as delete:
                await once.messages.batches.delete(batch.id)
        finally:
            runner.send_signal(signal.SIGCONT)
        for refused in (results.value, delete.value):
            assert refused.response.headers["x-should-retry"] == "false"
            assert "retry-after" not in refused.response.headers
        await _until_ended(client, batch.id, timeout=60)
        deleted = await client.messages.batches.delete(batch.id)
        assert deleted.id == batch.id


async def test_creates_at_once_beyond_the_edges_limit_wait_their_turn(msgbatchy: Stack) -> None:
    """An edge holds at most ``CREATES_AT_ONCE`` creates in memory; more sent together wait,
    then each is made, with its own id and its own requests."""
    key, _ = await msgbatchy.new_key("msgbatch-together")
    async with _client(msgbatchy, key) as client:
        sent = [_requests(f"together{n}", 40) for n in range(5)]
        made = await asyncio.gather(
            *(client.messages.batches.create(requests=r) for r in sent)  # type: ignore[arg-type]
        )
        assert len({b.id for b in made}) == 5
        assert [b.request_counts.processing for b in made] == [40] * 5
        for batch in made:  # (their 50 ms calls may all have ended them: 409, nothing to stop)
            with contextlib.suppress(anthropic.ConflictError):
                await client.messages.batches.cancel(batch.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"requests": []}, "requests"),
        ({"requests": [{"custom_id": "a b", "params": {"model": "bulk"}}]}, "requests.0.custom_id"),
        ({"requests": [{"custom_id": "x" * 65, "params": {"model": "bulk"}}]}, "custom_id"),
        (
            {"requests": [{"custom_id": "a", "params": {"model": "bulk"}}] * 2},
            "requests.1.custom_id",
        ),
        ({"requests": [{"custom_id": "a", "params": {"max_tokens": 5}}]}, "params.model"),
        ({"requests": [{"custom_id": "a"}]}, "requests"),
        ({"nope": 1}, "requests"),
        ("not json", "requests"),
    ],
)
async def test_a_bad_create_is_refused_in_anthropics_shape(
    msgbatchy: Stack, body: Any, param: str
) -> None:
    key, _ = await msgbatchy.new_key("msgbatch-bad")
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    async with httpx.AsyncClient(base_url=msgbatchy.tail_url) as http:
        response = await http.post(
            "/v1/messages/batches",
            content=content,
            headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        )
    assert response.status_code == 400, response.text
    doc = response.json()
    assert doc["type"] == "error"
    assert doc["error"]["type"] == "invalid_request_error"
    assert param in doc["error"]["message"]


async def test_unknown_batches_and_keys_get_anthropics_errors(msgbatchy: Stack) -> None:
    key, _ = await msgbatchy.new_key("msgbatch-404")
    async with httpx.AsyncClient(base_url=msgbatchy.tail_url) as http:
        missing = await http.get("/v1/messages/batches/msgbatch_nope", headers={"x-api-key": key})
        unauthenticated = await http.get("/v1/messages/batches", headers={"x-api-key": "sk-no"})
        bad_page = await http.get("/v1/messages/batches?limit=0", headers={"x-api-key": key})
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["type"] == "authentication_error"
    assert bad_page.status_code == 400
    assert "limit" in bad_page.json()["error"]["message"]


async def test_the_clean_up_loop_deletes_every_batch_past_the_first_page(msgbatchy: Stack) -> None:
    """``for b in client.messages.batches.list(limit=2): client.messages.batches.delete(b.id)``
    deletes them all: the next page's ``after_id`` names a batch deleted meanwhile, which is
    placed by the time its id starts with (it was a 400 ``after_id: no batch ...`` after the
    first page)."""
    key, _ = await msgbatchy.new_key("msgbatch-cleanup")
    async with _client(msgbatchy, key) as client:
        made = []
        for i in range(5):
            batch = await client.messages.batches.create(requests=_requests(f"clean{i}", 1))  # type: ignore[arg-type]
            made.append(batch.id)
        for batch_id in made:
            await _until_ended(client, batch_id, timeout=30)
        deleted = []
        async for batch in client.messages.batches.list(limit=2):
            await client.messages.batches.delete(batch.id)
            deleted.append(batch.id)
        assert sorted(deleted) == sorted(made)
        assert [b.id async for b in client.messages.batches.list(limit=2)] == []
