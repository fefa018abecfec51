"""What ends a batch line, and what a line may hold while it waits: on a real stack.

A cancel lets the lines a provider works on finish and keeps their answers (they ran and were
billed), and stops the others (a provider that began one a moment ago stops its call);
a batch whose lines keep failing holds no sending slot while they wait, so another tenant's
batch runs; a line too large for the bus, or one no answer comes for in
``batch.line_timeout_s`` (three times), is an error row and the batch ends; a batch that
expires writes OpenAI's ``batch_expired`` rows for the lines that did not run.

Its own stack: a runner with 4 sending slots and a 1 s line timeout, a provider that takes
50 ms, and a deployment whose provider key is not stored (503 at once).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
import pytest_asyncio

from switchyard.bus import subjects
from switchyard.schemas import batches as b
from tests.stacks import Stack, batch_config, start_stack
from tests.test_batches import _client, _wait_for
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLOTS = 4


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def runner_stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    fake = {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 8}
    extra = batch_config(upstream.base_url)
    extra["providers"] = {"fake": fake, "keyless": {**fake, "secret": "never-stored"}}
    extra["routes"] = {
        "bulk": {"deployments": [{"provider": "fake", "model": "slow:50"}]},
        "cancel": {"deployments": [{"provider": "fake", "model": "slow:401"}]},
        "mcancel": {"deployments": [{"provider": "fake", "model": "slow:402"}]},
        "slow": {"deployments": [{"provider": "fake", "model": "slow:2500"}]},
        "nokey": {"deployments": [{"provider": "keyless", "model": "slow:50"}]},
        "narrow": {"deployments": [{"provider": "fake", "model": "ctl:narrow", "concurrency": 1}]},
        "priced": {
            "deployments": [
                {
                    "provider": "fake",
                    "model": "echo",
                    "price": {"input_per_token": 0.01, "output_per_token": 0.01},
                }
            ]
        },
    }
    # Keep-alives while the provider works (what tells a slow provider from a busy queue)
    # come more often than the line timeout.
    extra["modelproxy"] = {"keepalive_s": 0.2}
    extra["batch"] |= {
        "max_in_flight": SLOTS,
        "line_timeout_s": 1.0,
        "progress_s": 0.2,
        "max_file_bytes": 12 * 1024 * 1024,
    }
    stack = await start_stack(tmp_path_factory.mktemp("runner"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _line(custom_id: str, model: str, content: str = "hi") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}]},
    }


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


async def _start(client: openai.AsyncOpenAI, rows: list[dict[str, Any]]) -> Any:
    file = await client.files.create(file=("in.jsonl", _jsonl(rows)), purpose="batch")
    return await client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


async def _rows(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = (await client.files.content(file_id)).text
    return [json.loads(line) for line in text.splitlines()]


async def _until_calls(upstream: FakeOpenAI, model: str, at_least: int) -> None:
    deadline = time.monotonic() + 15
    while len(upstream.calls_for(model)) < at_least:
        assert time.monotonic() < deadline, f"{model} called {len(upstream.calls_for(model))}"
        await asyncio.sleep(0.02)


async def test_a_cancel_keeps_the_answers_of_the_lines_already_sent(
    runner_stack: Stack, upstream: FakeOpenAI
) -> None:
    """Every line the provider answered has its row in the output. The lines it began less
    than a keep-alive before the cancel are stopped (no keep-alive told the runner a provider
    works on them): at most the 4 in flight."""
    key, _ = await runner_stack.new_key("runner-cancel")
    async with _client(runner_stack, key) as client:
        batch = await _start(client, [_line(f"c-{i}", "cancel") for i in range(40)])
        await _until_calls(upstream, "slow:401", SLOTS + 1)  # lines are at the provider
        await client.batches.cancel(batch.id)
        done = await _wait_for(client, batch.id, {"cancelled"}, timeout=20)
        rows = await _rows(client, done.output_file_id)
    ran = len(upstream.calls_for("slow:401"))
    assert ran < 40
    assert len(rows) == done.request_counts.completed
    assert ran - SLOTS <= len(rows) <= ran
    assert all(r["response"]["status_code"] == 200 for r in rows)
    assert done.error_file_id is None


async def test_a_cancelled_message_batch_says_succeeded_for_what_ran(
    runner_stack: Stack, upstream: FakeOpenAI
) -> None:
    key, _ = await runner_stack.new_key("runner-mcancel")
    requests = [
        {
            "custom_id": f"m-{i}",
            "params": {
                "model": "mcancel",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"m {i}"}],
            },
        }
        for i in range(40)
    ]
    client = anthropic.AsyncAnthropic(base_url=runner_stack.tail_url, api_key=key)
    async with client:
        batch = await client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        await _until_calls(upstream, "slow:402", SLOTS + 1)
        await client.messages.batches.cancel(batch.id)
        deadline = time.monotonic() + 20
        while (got := await client.messages.batches.retrieve(batch.id)).processing_status != (
            "ended"
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        results = [row async for row in await client.messages.batches.results(batch.id)]
    kinds = [r.result.type for r in results]
    ran = len(upstream.calls_for("slow:402"))
    assert len(kinds) == 40
    succeeded = kinds.count("succeeded")
    assert succeeded == got.request_counts.succeeded
    assert ran - SLOTS <= succeeded <= ran  # (a line begun just before the cancel is stopped)
    assert kinds.count("canceled") == 40 - succeeded


async def test_a_batch_whose_lines_keep_failing_does_not_starve_another_tenant(
    runner_stack: Stack,
) -> None:
    """Tenant A's lines get 503 at once (their provider key is not stored) and wait to be
    sent again for as long as the batch's window; tenant B's one-line batch still runs."""
    stuck_key, _ = await runner_stack.new_key("runner-stuck", team="team-a")
    other_key, _ = await runner_stack.new_key("runner-other", team="team-b")
    async with _client(runner_stack, stuck_key) as stuck, _client(runner_stack, other_key) as other:
        blocked = await _start(stuck, [_line(f"a-{i}", "nokey") for i in range(3 * SLOTS)])
        await _wait_for(stuck, blocked.id, {"in_progress"}, timeout=10)
        await asyncio.sleep(1.0)  # its lines have all been refused at least once
        batch = await _start(other, [_line("b-0", "bulk", "from b")])
        done = await _wait_for(other, batch.id, {"completed"}, timeout=10)
        assert done.request_counts.completed == 1
        assert (await stuck.batches.retrieve(blocked.id)).status == "in_progress"
        await stuck.batches.cancel(blocked.id)
        gone = await _wait_for(stuck, blocked.id, {"cancelled"}, timeout=15)
    assert gone.request_counts.completed == 0


async def test_a_line_larger_than_the_bus_carries_is_an_error_row(runner_stack: Stack) -> None:
    key, _ = await runner_stack.new_key("runner-bigline")
    huge = "x" * (9 * 1024 * 1024)  # above NATS's 8 MiB max payload
    async with _client(runner_stack, key) as client:
        batch = await _start(client, [_line("big", "bulk", huge), _line("small", "bulk")])
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=20)
        assert done.status == "completed", done.errors
        assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
        (row,) = await _rows(client, done.error_file_id)
    assert row["custom_id"] == "big"
    assert row["response"]["status_code"] == 413
    assert row["response"]["body"]["error"]["code"] == "request_too_large"


async def test_a_line_never_answered_in_time_is_given_up_after_three_attempts(
    runner_stack: Stack, upstream: FakeOpenAI
) -> None:
    key, _ = await runner_stack.new_key("runner-slow")
    async with _client(runner_stack, key) as client:
        batch = await _start(client, [_line("slow", "slow")])
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=20)
        assert done.status == "completed", done.errors
        (row,) = await _rows(client, done.error_file_id)
    assert row["response"]["status_code"] == 504
    error = row["response"]["body"]["error"]
    assert "batch.line_timeout_s" in error["message"]
    assert "3 times" in error["message"]
    assert len(upstream.calls_for("slow:2500")) == 3


async def test_a_line_waiting_in_a_busy_queue_is_not_given_up(
    runner_stack: Stack, upstream: FakeOpenAI
) -> None:
    """Timeouts spent queued behind other traffic cost nothing at the provider: the line goes
    on waiting (up to its batch's window), unlike one a provider was slow to answer."""
    upstream.set_mode("narrow", "gate:narrow")
    key, _ = await runner_stack.new_key("runner-queued")
    async with _client(runner_stack, key) as client:
        held = asyncio.ensure_future(  # takes the deployment's one slot until the gate opens
            client.chat.completions.create(
                model="narrow",
                messages=[{"role": "user", "content": "first"}],
                extra_headers={"X-Request-Timeout": "60"},
            )
        )
        await _until_calls(upstream, "ctl:narrow", 1)
        batch = await _start(client, [_line("queued", "narrow", "later")])
        await asyncio.sleep(4.5)  # more than three line timeouts (1 s each) in the queue
        assert (await client.batches.retrieve(batch.id)).status == "in_progress"
        upstream.open_gate("narrow")
        await held
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=20)
        assert done.status == "completed", done.errors
        (row,) = await _rows(client, done.output_file_id)
    assert row["response"]["status_code"] == 200
    assert row["response"]["body"]["choices"][0]["message"]["content"] == "echo: later"
    assert len(upstream.calls_for("ctl:narrow")) == 2  # the held request, then the line once
    upstream.set_mode("narrow", "echo")


async def test_lines_an_expired_batch_never_ran_are_batch_expired(runner_stack: Stack) -> None:
    """The batch's window closes while its lines wait to be sent again: each gets OpenAI's
    row for a line that did not run, not a made-up HTTP answer."""
    key, record = await runner_stack.new_key("runner-expire")
    async with _client(runner_stack, key) as client:
        rows = [_line(f"e-{i}", "nokey") for i in range(3)]
        file = await client.files.create(file=("e.jsonl", _jsonl(rows)), purpose="batch")
        now = int(time.time())
        batch = b.Batch(
            id="batch_expiring",
            endpoint="/v1/chat/completions",
            input_file_id=file.id,
            completion_window="24h",
            status="validating",
            created_at=now,
            expires_at=now + 3,  # (the edge always gives 24 h)
        )
        stored = b.BatchRecord(batch=batch, owner=record.id, key_id=record.id, key_hash=record.hash)
        tail = await runner_stack.connect("tail")
        try:
            kv = await tail.jetstream(timeout=10).key_value(subjects.BATCHES_BUCKET)
            key_name = b.owned_key(b.BATCH_PREFIX, record.id, batch.id)
            await kv.create(key_name, b.ENCODER.encode(stored))
        finally:
            await tail.close()
        done = await _wait_for(client, batch.id, {"expired", "completed"}, timeout=20)
        assert done.status == "expired"
        assert (done.request_counts.completed, done.request_counts.failed) == (0, 3)
        errors = await _rows(client, done.error_file_id)
    assert sorted(r["custom_id"] for r in errors) == ["e-0", "e-1", "e-2"]
    for row in errors:
        assert row["response"] is None
        assert row["error"]["code"] == "batch_expired"


async def test_metadata_beyond_openais_limits_is_refused_naming_it(runner_stack: Stack) -> None:
    key, _ = await runner_stack.new_key("runner-metadata")
    async with _client(runner_stack, key) as client:
        # A line that waits (503: no provider key) until the cancel at the end: a line that
        # can answer may end the batch before the refused creates are done, and a cancel of
        # an ended batch is a 409.
        file = await client.files.create(
            file=("m.jsonl", _jsonl([_line("m", "nokey")])), purpose="batch"
        )
        widest = {f"k{i:02d}" + "k" * 61: "v" * 512 for i in range(16)}  # every limit, just
        batch = await client.batches.create(
            input_file_id=file.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata=widest,
        )
        assert batch.metadata == widest
        for metadata in (
            {f"k{i}": "v" for i in range(17)},
            {"k" * 65: "v"},
            {"k": "v" * 513},
        ):
            with pytest.raises(openai.BadRequestError) as refused:
                await client.batches.create(
                    input_file_id=file.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                    metadata=metadata,
                )
            assert refused.value.param == "metadata"
        await client.batches.cancel(batch.id)


async def test_only_an_upload_for_batches_may_be_a_batchs_input(runner_stack: Stack) -> None:
    """Not another batch's output, nor a message batch's input (which ``/v1/files`` hides)."""
    key, _ = await runner_stack.new_key("runner-input-purpose")
    async with _client(runner_stack, key) as client:
        batch = await _start(client, [_line("p", "bulk")])
        done = await _wait_for(client, batch.id, {"completed"}, timeout=15)
        async with anthropic.AsyncAnthropic(base_url=runner_stack.tail_url, api_key=key) as other:
            message_batch = await other.messages.batches.create(
                requests=[
                    {"custom_id": "x", "params": {"model": "bulk", "max_tokens": 8, "messages": []}}
                ]
            )
        for file_id in (done.output_file_id, f"file-{message_batch.id}-input"):
            with pytest.raises(openai.BadRequestError) as refused:
                await client.batches.create(
                    input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
                )
            assert refused.value.param == "input_file_id"


async def test_an_empty_custom_id_fails_the_batch_and_a_byte_order_mark_does_not(
    runner_stack: Stack,
) -> None:
    key, _ = await runner_stack.new_key("runner-lines")
    async with _client(runner_stack, key) as client:
        empty = await _start(client, [_line("fine", "bulk"), _line("", "bulk")])
        failed = await _wait_for(client, empty.id, {"failed", "completed"}, timeout=15)
        assert failed.status == "failed"
        assert failed.errors is not None
        (error,) = failed.errors.data
        assert error.line == 2
        assert "custom_id" in (error.message or "")
        data = b"\xef\xbb\xbf" + _jsonl([_line("bom-1", "bulk"), _line("bom-2", "bulk")])
        file = await client.files.create(file=("bom.jsonl", data), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await _wait_for(client, batch.id, {"failed", "completed"}, timeout=15)
        assert done.status == "completed", done.errors
        rows = await _rows(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in rows) == ["bom-1", "bom-2"]


async def test_a_key_over_its_budget_creates_no_batch(runner_stack: Stack) -> None:
    """The runner sends lines past the edge's limiter: a key whose budget was used up could
    go on spending through batches. Creating one is refused as its requests are."""
    key, _ = await runner_stack.new_key("runner-broke", budget_usd=0.01)
    async with _client(runner_stack, key) as client:
        await client.chat.completions.create(  # 7 prompt tokens at $0.01: over the budget
            model="priced", messages=[{"role": "user", "content": "spend"}]
        )
        deadline = time.monotonic() + 15
        while True:  # accounting records the spend a moment after the answer
            try:
                await client.chat.completions.create(
                    model="priced", messages=[{"role": "user", "content": "again"}]
                )
            except openai.RateLimitError:
                break
            assert time.monotonic() < deadline, "the budget never ran out"
            await asyncio.sleep(0.2)
        file = await client.files.create(
            file=("in.jsonl", _jsonl([_line("one", "bulk")])), purpose="batch"
        )
        with pytest.raises(openai.RateLimitError) as refused:
            await client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
    assert refused.value.code == "budget_exceeded"
    assert "budget of $0.01" in refused.value.message
    messages = anthropic.AsyncAnthropic(base_url=runner_stack.tail_url, api_key=key, max_retries=0)
    async with messages:
        with pytest.raises(anthropic.RateLimitError) as also:
            await messages.messages.batches.create(
                requests=[
                    {
                        "custom_id": "one",
                        "params": {
                            "model": "bulk",
                            "max_tokens": 8,
                            "messages": [{"role": "user", "content": "x"}],
                        },
                    }
                ]
            )
    assert also.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
