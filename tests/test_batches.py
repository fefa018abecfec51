"""The OpenAI Batch API with the official SDK: upload, run, read results; and a full restart.

Its own stack (a deployment of concurrency 4 in front of a provider that takes 50 ms), so the
kill test can stop every process. Results are checked line by line (exactly one per input
line), and spend is read back per key: one billed request per line, however often a line ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import openai
import pytest
import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from switchyard.admin.keys import KeyAdmin
from switchyard.bus import subjects
from switchyard.runtime.batchstore import BatchStore
from switchyard.runtime.objects import CHUNK_BYTES, ObjectWriter, chunks_subject, stream_of
from switchyard.schemas import batches as b
from switchyard.stack import local
from tests.stacks import Stack, batch_config, start_stack
from tests.support import day_totals, pause
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LINES = 200


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def batchy(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    # Keep-alives every half second: what tells a line a provider works on from a queued one.
    extra = batch_config(upstream.base_url) | {"modelproxy": {"ack_wait_s": 4, "keepalive_s": 0.5}}
    extra["routes"]["bulk-5s"] = {"deployments": [{"provider": "fake", "model": "slow:5000"}]}
    extra["routes"]["bulk-15s"] = {"deployments": [{"provider": "fake", "model": "slow:15000"}]}
    # Answers reporting 4 more prompt tokens, read from the prompt cache.
    extra["routes"]["bulk-cached"] = {"deployments": [{"provider": "fake", "model": "cached:4"}]}
    # Held at the provider until a test opens the gate (lines queue behind them meanwhile).
    extra["routes"]["bulk-gated"] = {"deployments": [{"provider": "fake", "model": "gate:orphans"}]}
    stack = await start_stack(tmp_path_factory.mktemp("batchy"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _input(tag: str, model: str = "bulk") -> bytes:
    rows = [
        {
            "custom_id": f"{tag}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"{tag} {i}"}]},
        }
        for i in range(LINES)
    ]
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _client(stack: Stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.tail_url + "/v1", api_key=key, max_retries=2)


async def _wait_for(
    client: openai.AsyncOpenAI, batch_id: str, done: set[str], timeout: float
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in done:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def _files_as_edge(stack: Stack) -> AsyncIterator[tuple[JetStreamContext, ObjectStore]]:
    """The Batch API's object store as an edge reaches it (to damage or inspect it)."""
    tail = await stack.connect("tail")
    try:
        js = tail.jetstream(timeout=10)
        yield js, await js.object_store(subjects.FILES_BUCKET)
    finally:
        await tail.close()


async def _check_output(client: openai.AsyncOpenAI, batch: Any, tag: str) -> None:
    assert batch.request_counts.total == LINES
    assert batch.request_counts.completed == LINES
    assert batch.request_counts.failed == 0
    assert batch.error_file_id is None
    download = await client.files.content(batch.output_file_id)
    text = download.text
    # Streamed from the store with its length announced (not chunked, not held whole).
    assert download.response.headers["content-length"] == str(len(download.content))
    assert (await client.files.retrieve(batch.output_file_id)).bytes == len(download.content)
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == LINES
    assert sorted(r["custom_id"] for r in rows) == sorted(f"{tag}-{i}" for i in range(LINES))
    for row in rows:
        assert row["response"]["status_code"] == 200
        number = row["custom_id"].rsplit("-", 1)[1]
        content = row["response"]["body"]["choices"][0]["message"]["content"]
        assert content == f"echo: {tag} {number}"


def _summed_usage(rows: list[dict[str, Any]]) -> dict[str, int]:
    """What a batch's ``usage`` should be: its rows' answers' usage, summed."""
    used = [r["response"]["body"]["usage"] for r in rows if r["response"]]
    return {
        "input_tokens": sum(u["prompt_tokens"] for u in used),
        "cached_tokens": sum(
            u.get("prompt_tokens_details", {}).get("cached_tokens", 0) for u in used
        ),
        "output_tokens": sum(u["completion_tokens"] for u in used),
        "total_tokens": sum(u["total_tokens"] for u in used),
    }


def _usage_of(batch: Any) -> dict[str, int]:
    usage = batch.usage
    assert usage is not None, batch
    assert usage.output_tokens_details.reasoning_tokens == 0  # (the fake reasons not)
    return {
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.input_tokens_details.cached_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


async def _wait_counting_usage(
    client: openai.AsyncOpenAI, batch_id: str, timeout: float, *, until: int = 0
) -> Any:
    """Wait for the batch to end (or, with ``until``, to show that many lines answered while
    it runs), checking at each read that its ``usage`` holds the tokens of exactly the lines
    its ``request_counts`` say completed (7 prompt tokens each, in the stack's echo): none lost,
    none counted twice, whatever restarts meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        counts = batch.request_counts
        answered = counts.completed + counts.failed if counts else 0
        completed = counts.completed if counts else 0  # a failed line's row has no usage
        if batch.usage is not None:
            assert batch.usage.input_tokens == 7 * completed, (batch.usage, counts)
        else:
            assert completed == 0, batch
        if batch.status in b.ENDED or (until and answered >= until):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {counts}"
        await asyncio.sleep(0.2)


async def _billed_requests(stack: Stack, key_id: str) -> int:
    response = await stack.admin("GET", "/spend?days=2")  # a run across midnight: two days
    return int(day_totals(response.json()["days"], "key", key_id).get("requests", 0))


async def _settled_requests(stack: Stack, key_id: str, *, quiet_s: float = 6.0) -> int:
    """Billed requests once nothing changed for ``quiet_s`` (late redeliveries included)."""
    last, since = -1, time.monotonic()
    while time.monotonic() - since < quiet_s:
        now = await _billed_requests(stack, key_id)
        if now != last:
            last, since = now, time.monotonic()
        await asyncio.sleep(0.5)
    return last


async def test_sdk_runs_a_200_line_batch_to_completion(batchy: Stack) -> None:
    key, record = await batchy.new_key("batch-happy")
    async with _client(batchy, key) as client:
        file = await client.files.create(file=("in.jsonl", _input("happy")), purpose="batch")
        assert file.purpose == "batch"
        assert file.bytes > 0
        assert (await client.files.retrieve(file.id)).id == file.id
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.status == "validating"
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=90)
        assert done.status == "completed", done.errors
        await _check_output(client, done, "happy")
        listed = await client.batches.list()
        assert batch.id in [b.id for b in listed.data]
        with pytest.raises(openai.ConflictError) as ended:
            await client.batches.cancel(batch.id)
        # Sent once: the SDK retries a 409 unless told no retry can succeed (it sent it 3 times).
        assert ended.value.response.headers.get("x-should-retry") == "false"
        assert ended.value.response.request.headers["x-stainless-retry-count"] == "0"
    # Another key sees neither the batch nor the file.
    other, _ = await batchy.new_key("batch-stranger")
    async with _client(batchy, other) as stranger:
        with pytest.raises(openai.NotFoundError):
            await stranger.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            await stranger.files.content(done.output_file_id)
    # Progress for admins; billed once per line.
    response = await batchy.admin("GET", f"/batches/{batch.id}")
    assert response.json()["progress"] == 1.0
    assert response.json()["key_id"] == record.id
    assert await _settled_requests(batchy, record.id, quiet_s=3.0) == LINES


async def test_a_batch_made_before_its_key_is_rotated_runs_on_as_the_key_s(
    batchy: Stack,
) -> None:
    """A batch names its key by the hash of the secret that made it; rotated with no grace,
    that secret is refused, but the batch is the key's: its lines run and are billed to the
    key, and the new secret sees it."""
    key, record = await batchy.new_key("batch-rotated")
    async with _client(batchy, key) as client:
        file = await client.files.create(file=("r.jsonl", _input("rotated")), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    rotated = await batchy.admin("POST", f"/keys/{record.id}/rotate")
    assert rotated.status_code == 200, rotated.text
    async with _client(batchy, rotated.json()["key"]) as client:
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=90)
        assert done.status == "completed", done.errors
        await _check_output(client, done, "rotated")
    assert await _settled_requests(batchy, record.id, quiet_s=3.0) == LINES


async def test_after_its_grace_the_old_secret_cannot_cancel_a_batch_it_made(
    batchy: Stack, upstream: FakeOpenAI
) -> None:
    """A batch made with a secret later rotated is the key's: once the old secret's grace
    ended, a cancel with it is the 401 any request with it gets (the batch runs on), and the
    new secret cancels it."""
    key, record = await batchy.new_key("batch-old-cancel")
    async with _client(batchy, key) as client:
        data = _input("oldcancel", model="bulk-5s")
        file = await client.files.create(file=("o.jsonl", data), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    turned = await batchy.admin("POST", f"/keys/{record.id}/rotate", {"grace_seconds": 1})
    assert turned.status_code == 200, turned.text
    await asyncio.sleep(1.5)  # the grace is over
    async with _client(batchy, key) as old:
        with pytest.raises(openai.AuthenticationError, match="rotated"):
            await old.batches.cancel(batch.id)
    async with _client(batchy, turned.json()["key"]) as client:
        assert (await client.batches.retrieve(batch.id)).status in ("validating", "in_progress")
        await client.batches.cancel(batch.id)
        done = await _wait_for(client, batch.id, {"cancelled"}, timeout=30)
    assert done.status == "cancelled"


async def test_a_batch_is_finalizing_while_its_files_are_written(batchy: Stack) -> None:
    """OpenAI's statuses in order, ``finalizing`` included (the runner used to go from
    ``in_progress`` to ``completed``); ``finalizing_at`` is when the files were written (their
    ``created_at``), and a cancelled batch, which OpenAI does not finalize, has none."""
    key, _ = await batchy.new_key("batch-finalizing")
    statuses: list[str] = []
    tail = await batchy.connect("tail")
    try:
        kv = await tail.jetstream(timeout=10).key_value(subjects.BATCHES_BUCKET)
        watcher = await kv.watchall()
        async with _client(batchy, key) as client:
            file = await client.files.create(file=("in.jsonl", _input("fin")), purpose="batch")
            batch = await client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            deadline = time.monotonic() + 90
            while not statuses or statuses[-1] != "completed":
                assert time.monotonic() < deadline, statuses
                entry = await watcher.updates(timeout=5)
                if entry is None or not entry.value or not entry.key.startswith(b.BATCH_PREFIX):
                    continue
                record = b.BATCH_RECORD.decode(entry.value)
                if record.batch.id == batch.id and record.batch.status not in statuses[-1:]:
                    statuses.append(record.batch.status)
            await watcher.stop()
            done = await client.batches.retrieve(batch.id)
            output = await client.files.retrieve(done.output_file_id or "")
    finally:
        await tail.close()
    assert statuses == ["validating", "in_progress", "finalizing", "completed"]
    assert done.finalizing_at is not None
    assert output.created_at == done.finalizing_at
    assert (done.in_progress_at or 0) <= done.finalizing_at <= (done.completed_at or 0)


async def test_failed_lines_go_to_the_error_file_and_large_files_span_chunks(
    batchy: Stack,
) -> None:
    """Lines for a model the key cannot use fail one by one; the rest succeed with answers
    long enough that the output spans several of the object store's 128 KiB chunks, written
    as the runner reads the answers."""
    key, _ = await batchy.new_key("batch-mixed")
    long = "x" * 3000
    rows = [
        {
            "custom_id": f"mixed-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "no-such-model" if i % 4 == 0 else "bulk",
                "messages": [{"role": "user", "content": f"{i} {long}"}],
            },
        }
        for i in range(120)
    ]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    async with _client(batchy, key) as client:
        file = await client.files.create(file=("in.jsonl", data), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=90)
        assert done.status == "completed", done.errors
        assert (done.request_counts.completed, done.request_counts.failed) == (90, 30)
        files = {}
        for name, file_id in (("output", done.output_file_id), ("errors", done.error_file_id)):
            download = await client.files.content(file_id or "")
            assert (await client.files.retrieve(file_id or "")).bytes == len(download.content)
            files[name] = [json.loads(line) for line in download.text.splitlines()]
    assert len(json.dumps(files["output"])) > 2 * 128 * 1024
    good = {r["custom_id"]: r for r in files["output"]}
    bad = {r["custom_id"]: r for r in files["errors"]}
    assert sorted(good) == sorted(f"mixed-{i}" for i in range(120) if i % 4)
    assert sorted(bad) == sorted(f"mixed-{i}" for i in range(0, 120, 4))
    for custom_id, row in good.items():
        number = custom_id.rsplit("-", 1)[1]
        assert row["response"]["status_code"] == 200
        content = row["response"]["body"]["choices"][0]["message"]["content"]
        assert content == f"echo: {number} {long}"
    for row in bad.values():
        assert row["response"]["status_code"] == 404
        assert row["response"]["body"]["error"]["code"] == "model_not_found"


async def test_a_bad_input_file_fails_the_batch_naming_the_line(batchy: Stack) -> None:
    key, _ = await batchy.new_key("batch-bad")
    bad = _input("bad").splitlines()
    bad[3] = b'{"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {}}'
    async with _client(batchy, key) as client:
        file = await client.files.create(file=("bad.jsonl", b"\n".join(bad)), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await _wait_for(client, batch.id, {"failed", "completed"}, timeout=30)
    assert done.status == "failed"
    assert done.errors is not None
    assert done.errors.data[0].line == 4


async def test_cancel_stops_a_running_batch(batchy: Stack) -> None:
    key, _ = await batchy.new_key("batch-cancel")
    async with _client(batchy, key) as client:
        # 400 ms calls: the batch cannot end before the cancel arrives, however slow the machine.
        data = _input("cancel", model="bulk-slow")
        file = await client.files.create(file=("c.jsonl", data), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        # Its usage grows with its answered lines while it runs.
        running = await _wait_counting_usage(client, batch.id, timeout=30, until=8)
        assert running.status == "in_progress"
        cancelling = await client.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        done = await _wait_for(client, batch.id, {"cancelled"}, timeout=30)
    assert done.request_counts.completed < LINES
    assert done.finalizing_at is None  # (OpenAI sets it only for a batch that completes)


def _calls_of(upstream: FakeOpenAI, model: str, tag: str) -> int:
    return sum(1 for c in upstream.calls_for(model) if f"{tag} " in json.dumps(c.body))


@pytest.mark.parametrize("rotated", [False, True], ids=["same-secret", "rotated"])
async def test_a_cancel_withdraws_the_lines_still_queued_and_keeps_those_running(
    batchy: Stack, upstream: FakeOpenAI, rotated: bool
) -> None:
    """5 s calls, 4 at a time: at the cancel 4 lines are at the provider and up to 60 more
    wait in the deployment's queue. The queued ones are dropped there (never reach the
    provider, never billed); the 4 running ones finish, are kept and billed. So too for a
    batch made before its key was rotated (no grace), cancelled after: its lines, sent after
    the rotation, name the key by its new hash (the runner follows the rotation), and so do
    the runner's cancels (the queued lines were once kept, and ran; then the old secret's
    hash, named beside the key for the batch's whole life, could cancel them)."""
    tag = "withdrawrot" if rotated else "withdraw"
    key, record = await batchy.new_key(f"batch-{tag}")
    runner = batchy.process("batch").proc
    assert runner is not None
    async with _client(batchy, key) as client:
        data = _input(tag, model="bulk-5s")
        file = await client.files.create(file=("w.jsonl", data), purpose="batch")
        if rotated:  # the runner sends no line before the rotation
            await pause(runner.pid)
        try:
            batch = await client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            if rotated:
                turned = await batchy.admin("POST", f"/keys/{record.id}/rotate")
                assert turned.status_code == 200, turned.text
                key = turned.json()["key"]
        finally:
            runner.send_signal(signal.SIGCONT)
    async with _client(batchy, key) as client:
        deadline = time.monotonic() + 30
        while _calls_of(upstream, "slow:5000", tag) < 4:
            assert time.monotonic() < deadline, "the lines never reached the provider"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # their keep-alives came: a provider works on them
        await client.batches.cancel(batch.id)
        # Not the ~250 s the queued lines would take, nor 240 s waiting for their answers.
        done = await _wait_for(client, batch.id, {"cancelled"}, timeout=20)
        assert done.error_file_id is None  # a cancelled batch's lines that never ran: no row
        output = await client.files.content(done.output_file_id or "")
    await asyncio.sleep(2)  # a queued line that had not been withdrawn would have started
    ran = _calls_of(upstream, "slow:5000", tag)
    assert ran == 4
    assert done.request_counts.completed == ran == len(output.text.splitlines())
    assert await _settled_requests(batchy, record.id, quiet_s=3.0) == ran


async def test_a_cancel_while_the_runner_is_down_withdraws_the_lines_it_left_queued(
    batchy: Stack, upstream: FakeOpenAI
) -> None:
    """The runner is killed (SIGKILL) with its lines on the bus: a few held at the provider,
    the rest waiting in the deployment's queue. The team cancels the batch while no runner
    runs, and the runner comes back. The queued lines are dropped unserved (never reach the
    provider, never billed), as after a cancel the runner saw itself. They were not: the
    restarted runner found the batch `cancelling` and ended it at once, and every queued line
    the dead runner had sent (up to `batch.max_in_flight`, 64) ran at the provider, billed to
    the key, with no row in any file (a 100-line batch cancelled with 0 rows billed 64)."""
    tag = "orphaned"
    model = "gate:orphans"
    key, record = await batchy.new_key(f"batch-{tag}")
    async with _client(batchy, key) as client:
        data = _input(tag, model="bulk-gated")
        file = await client.files.create(file=("o.jsonl", data), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 30
        while _calls_of(upstream, model, tag) < 4:  # the deployment's 4 slots, all held
            assert time.monotonic() < deadline, "the lines never reached the provider"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # (the runner's other lines wait in the queue)
        held = _calls_of(upstream, model, tag)
        batchy.kill("batch")
        try:
            cancelling = await client.batches.cancel(batch.id)
            assert cancelling.status == "cancelling"
        finally:
            await batchy.process("batch").start()
        # The restarted runner takes the lease once the killed one's lapses (7 s at most).
        done = await _wait_for(client, batch.id, {"cancelled"}, timeout=60)
    upstream.open_gate("orphans")
    await asyncio.sleep(3)  # a queued line not withdrawn would reach the provider by now
    assert _calls_of(upstream, model, tag) == held
    assert done.request_counts.completed == 0  # (the held lines' answers had nobody to take)
    assert done.output_file_id is None
    assert done.error_file_id is None
    assert await _settled_requests(batchy, record.id, quiet_s=3.0) == held


async def test_lines_sent_under_a_rotated_keys_old_hash_are_withdrawn_by_a_cancel(
    batchy: Stack, upstream: FakeOpenAI
) -> None:
    """A line read its key's current hash before waiting for a sending slot (a wait of
    minutes while other batches hold them): rotated meanwhile with no grace, it went out under
    the old hash, the head stamped it with the new one, and the runner's cancel, proved with
    the old, was refused by the model-proxy: the line, still queued, ran and was billed after
    the batch was cancelled. The hash is read in the slot now, and a withdrawn line's cancel
    is also proved with the key's current hash."""
    filler_key, _ = await batchy.new_key("batch-slots-filler")
    key, record = await batchy.new_key("batch-slots-rotated")
    async with _client(batchy, filler_key) as filler_client, _client(batchy, key) as client:
        data = _input("slotfill", model="bulk-15s")
        file = await filler_client.files.create(file=("f.jsonl", data), purpose="batch")
        filler = await filler_client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 30
        while _calls_of(upstream, "slow:15000", "slotfill") < 4:  # its lines hold every slot
            assert time.monotonic() < deadline, "the filler's lines never reached the provider"
            await asyncio.sleep(0.05)
        data = _input("slotwait", model="bulk-15s")
        file = await client.files.create(file=("w.jsonl", data), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        await _wait_for(client, batch.id, {"in_progress"}, timeout=10)
        await asyncio.sleep(1.0)  # its lines wait for a slot
        turned = await batchy.admin("POST", f"/keys/{record.id}/rotate")
        assert turned.status_code == 200, turned.text
        await asyncio.sleep(1.2)  # (the runner's key records are read again after 1 s)
        # The filler's queued lines are withdrawn: their slots go to the waiting lines, which
        # are sent and wait in the deployment's queue behind the filler's 4 running ones (15 s
        # calls: still running when this batch is cancelled).
        await filler_client.batches.cancel(filler.id)
        await asyncio.sleep(2.0)
    async with _client(batchy, turned.json()["key"]) as client:
        await client.batches.cancel(batch.id)
        done = await _wait_for(client, batch.id, {"cancelled"}, timeout=20)
    async with _client(batchy, filler_key) as filler_client:
        await _wait_for(filler_client, filler.id, {"cancelled"}, timeout=30)
    await asyncio.sleep(2)  # a queued line that had not been withdrawn would have started
    assert _calls_of(upstream, "slow:15000", "slotwait") == 0
    assert done.request_counts.completed == 0
    assert await _settled_requests(batchy, record.id, quiet_s=3.0) == 0


@pytest.mark.parametrize("how", ["revoke", "delete"])
async def test_revoking_or_deleting_its_key_ends_a_running_batch_at_once(
    batchy: Stack, upstream: FakeOpenAI, how: str
) -> None:
    """As for the key's HTTP requests: its lines in flight are cancelled (queued ones never
    reach the provider), none is sent any more, and the batch is ``failed`` naming why, each
    line that did not run an error row with the 401 the key now gets. Its team sees it so."""
    tag = f"gone{how}"
    key, record = await batchy.new_key(f"batch-{tag}", team=tag)
    mate, _ = await batchy.new_key(f"batch-{tag}-mate", team=tag)
    async with _client(batchy, key) as client:
        data = _input(tag, model="bulk-5s")
        file = await client.files.create(file=("g.jsonl", data), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    deadline = time.monotonic() + 30
    while _calls_of(upstream, "slow:5000", tag) < 4:
        assert time.monotonic() < deadline, "the lines never reached the provider"
        await asyncio.sleep(0.05)
    if how == "revoke":
        assert (await batchy.admin("POST", f"/keys/{record.id}/revoke")).is_success
    else:
        assert (await batchy.admin("DELETE", f"/keys/{record.id}")).is_success
    async with _client(batchy, mate) as team:
        # Not the ~250 s its 200 lines of 5 s calls would take.
        done = await _wait_for(team, batch.id, {"failed", "completed"}, timeout=15)
        assert done.status == "failed"
        code = "api_key_revoked" if how == "revoke" else "invalid_api_key"
        assert done.errors is not None
        assert done.errors.data[0].code == code
        counts = done.request_counts
        assert (counts.total, counts.completed, counts.failed) == (LINES, 0, LINES)
        text = (await team.files.content(done.error_file_id or "")).text
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == LINES
    answers = {(r["response"]["status_code"], r["response"]["body"]["error"]["code"]) for r in rows}
    assert answers == {(401, code)}
    await asyncio.sleep(2)  # a queued line not cancelled would have started by now
    assert _calls_of(upstream, "slow:5000", tag) == 4  # (those 4 were stopped)
    assert await _settled_requests(batchy, record.id, quiet_s=3.0) <= 4  # (their prompts)


async def test_a_list_that_deletes_as_it_pages_deletes_every_file(batchy: Stack) -> None:
    """The SDK's auto-paging loop asks for each page after the last file it deleted: the
    list goes on from where that file was (an upload's id carries its time; a batch's output
    file's comes from its batch), where it used to end with an empty page after one page."""
    key, _ = await batchy.new_key("batch-pages")
    async with _client(batchy, key) as client:
        for i in range(12):
            await client.files.create(file=(f"{i}.jsonl", _input(f"p{i}")), purpose="batch")
        # A finished batch: its output file is the newest file, so the first page's cursor.
        batch = await client.batches.create(
            input_file_id=(await client.files.list(limit=1)).data[0].id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        done = await _wait_for(client, batch.id, {"completed"}, timeout=60)
        listed = [f.id async for f in client.files.list()]
        assert len(listed) == 13
        assert listed[0] == done.output_file_id
        deleted = []
        async for file in client.files.list(limit=1):
            await client.files.delete(file.id)
            deleted.append(file.id)
        assert deleted == listed
        assert (await client.files.list()).data == []
        for i in range(5):  # oldest first, pages of 2, deleting as it goes
            await client.files.create(file=(f"{i}.jsonl", _input(f"q{i}")), purpose="batch")
        ascending = [f.id async for f in client.files.list(order="asc")]
        async for file in client.files.list(limit=2, order="asc"):
            await client.files.delete(file.id)
            deleted.append(file.id)
        assert deleted[13:] == ascending
        # An id no list can place (not one this version gives): a 400 naming `after`.
        with pytest.raises(openai.BadRequestError) as refused:
            await client.files.list(after="file-nosuchfile")
        assert refused.value.body["param"] == "after"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError):
            await client.batches.list(after="batch_nosuchbatch")


async def test_a_405_names_every_method_of_its_path(batchy: Stack) -> None:
    key, _ = await batchy.new_key("batch-allow")
    async with httpx.AsyncClient(base_url=batchy.tail_url) as http:
        auth = {"Authorization": f"Bearer {key}"}
        for path, allowed in (
            ("/v1/files/file-x", {"GET", "HEAD", "DELETE"}),
            ("/v1/files", {"GET", "HEAD", "POST"}),
            ("/v1/batches", {"GET", "HEAD", "POST"}),
            ("/v1/messages/batches/msgbatch_x", {"GET", "HEAD", "DELETE"}),
        ):
            response = await http.put(path, headers=auth)
            assert response.status_code == 405
            assert set(response.headers["allow"].split(", ")) == allowed, path
            assert response.json()["error"]["type"] == "invalid_request_error"


async def test_a_bad_list_purpose_or_create_field_is_a_400_naming_it(batchy: Stack) -> None:
    key, _ = await batchy.new_key("batch-fields")
    async with _client(batchy, key) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.files.list(purpose="nope")
        assert refused.value.param == "purpose"
        assert (await client.files.list(purpose="assistants")).data == []  # OpenAI's: none here
        bad: list[tuple[dict[str, Any], str]] = [
            ({"input_file_id": None}, "input_file_id"),
            ({"input_file_id": "file-x", "metadata": {"a": 1}}, "metadata"),
            ({"input_file_id": "file-x", "endpoint": 7}, "endpoint"),
        ]
        for fields, param in bad:
            body = {"endpoint": "/v1/chat/completions", "completion_window": "24h", **fields}
            with pytest.raises(openai.BadRequestError) as refused:
                await client.post("/batches", body=body, cast_to=httpx.Response)
            assert refused.value.param == param, fields


async def test_a_batch_without_a_24h_completion_window_is_a_400_naming_it(batchy: Stack) -> None:
    """OpenAI requires ``completion_window`` and takes only ``24h``: a create without it was
    accepted (and ran with 24h), so a client that forgot it never learnt so."""
    key, _ = await batchy.new_key("batch-window")
    async with _client(batchy, key) as client:
        file = await client.files.create(file=("w.jsonl", _input("window")), purpose="batch")
        for window in ({}, {"completion_window": "48h"}, {"completion_window": None}):
            body = {"input_file_id": file.id, "endpoint": "/v1/chat/completions", **window}
            with pytest.raises(openai.BadRequestError) as refused:
                await client.post("/batches", body=body, cast_to=httpx.Response)
            assert refused.value.status_code == 400
            assert refused.value.param == "completion_window", window
            assert "completion_window" in refused.value.message
        assert [b async for b in client.batches.list()] == []


async def test_a_batch_upload_not_named_jsonl_is_a_400_and_stores_nothing(batchy: Stack) -> None:
    """OpenAI refuses a Batch API file whose name does not end in ``.jsonl`` ("Invalid file
    format for Batch API. Must be .jsonl"); it was stored, to fail only once a batch ran."""
    key, _ = await batchy.new_key("batch-filename")
    async with _client(batchy, key) as client:
        for name in ("in.json", "in.jsonl.txt", "jsonl", "in.csv"):
            with pytest.raises(openai.BadRequestError) as refused:
                await client.files.create(file=(name, _input("named")), purpose="batch")
            assert refused.value.param == "file", name
            assert "Must be .jsonl" in refused.value.message
        assert [f async for f in client.files.list()] == []
        kept = await client.files.create(file=("IN.JSONL", _input("named")), purpose="batch")
        assert kept.filename == "IN.JSONL"


async def test_a_line_asking_to_stream_gets_a_whole_response_body(
    batchy: Stack, upstream: FakeOpenAI
) -> None:
    """A batch's result is a response body, never SSE: a line with ``"stream": true`` runs
    unstreamed, and its ``stream_options`` are dropped with the stream (sent on a request that
    does not stream, OpenAI refuses them: the line's result was that 400)."""
    key, _ = await batchy.new_key("batch-stream")
    rows = [
        {
            "custom_id": f"stream-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "bulk",
                "messages": [{"role": "user", "content": f"streamed {i}"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        }
        for i in range(3)
    ]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    async with _client(batchy, key) as client:
        file = await client.files.create(file=("s.jsonl", data), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=60)
        assert done.status == "completed", done.errors
        assert done.request_counts.completed == 3
        output = (await client.files.content(done.output_file_id)).text
    for row in map(json.loads, output.splitlines()):
        answer = row["response"]["body"]
        assert answer["object"] == "chat.completion"
        number = row["custom_id"].rsplit("-", 1)[1]
        assert answer["choices"][0]["message"]["content"] == f"echo: streamed {number}"
    sent = [c.body for c in upstream.calls_for("slow:50") if "streamed " in json.dumps(c.body)]
    assert len(sent) == 3
    for body in sent:
        assert body["stream"] is False
        assert "stream_options" not in body


async def test_a_batch_shows_its_model_and_its_lines_summed_usage(batchy: Stack) -> None:
    """OpenAI's batch object names the model of its lines and sums their answers' usage;
    both were always null here."""
    key, _ = await batchy.new_key("batch-usage")
    async with _client(batchy, key) as client:
        file = await client.files.create(
            file=("u.jsonl", _input("usage", model="bulk-cached")), purpose="batch"
        )
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert (batch.model, batch.usage) == (None, None)  # (nothing read or run yet)
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=60)
        assert done.status == "completed", done.errors
        assert done.model == "bulk-cached"
        output = (await client.files.content(done.output_file_id)).text
        rows = [json.loads(line) for line in output.splitlines()]
        assert len(rows) == LINES
        summed = _summed_usage(rows)
        assert summed["cached_tokens"] == 4 * LINES
        assert _usage_of(done) == summed
        assert _usage_of(await client.batches.retrieve(batch.id)) == summed  # (kept)
        # Lines of two models: the batch names none of them, and sums both.
        mixed = _input("mixed", model="bulk").splitlines()[:2]
        mixed += _input("mixed2", model="bulk-cached").splitlines()[:1]
        file = await client.files.create(file=("m.jsonl", b"\n".join(mixed)), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=60)
        assert done.model is None
        output = (await client.files.content(done.output_file_id)).text
        rows = [json.loads(line) for line in output.splitlines()]
        assert _usage_of(done) == _summed_usage(rows)
        assert done.usage.input_tokens_details.cached_tokens == 4


async def test_a_batch_none_of_whose_lines_succeeded_has_no_output_file(batchy: Stack) -> None:
    key, _ = await batchy.new_key("batch-no-output")
    async with _client(batchy, key) as client:
        # Every line fails: an error file and, as at OpenAI, no output file (not an empty one).
        file = await client.files.create(
            file=("f.jsonl", _input("nothing", model="no-such-model")), purpose="batch"
        )
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await _wait_for(client, batch.id, {"completed"}, timeout=60)
        assert done.request_counts.failed == LINES
        assert done.output_file_id is None
        assert done.model == "no-such-model"
        assert done.usage is not None
        assert done.usage.total_tokens == 0  # (error answers: no tokens)
        assert done.error_file_id is not None
        assert {f.id async for f in client.files.list()} == {file.id, done.error_file_id}


async def test_a_key_moved_to_another_team_leaves_its_files_with_the_old_team(
    batchy: Stack,
) -> None:
    """What docs/batch-api.md says of a team change: nothing moves; the key gets 404 for what
    it created, the old team's other keys keep it, and setting the team back restores it."""
    key, record = await batchy.new_key("batch-mover", team="movers")
    mate, _ = await batchy.new_key("batch-mover-mate", team="movers")

    async def set_team(team: str) -> None:
        nc = await batchy.connect("admin")
        try:
            await KeyAdmin(nc.jetstream(timeout=10)).update(record.id, team=team)
        finally:
            await nc.close()

    async with _client(batchy, key) as client, _client(batchy, mate) as team:
        file = await client.files.create(file=("m.jsonl", _input("move")), purpose="batch")
        await set_team("elsewhere")
        deadline = time.monotonic() + 10
        while True:  # (the edges learn of the change within a second)
            try:
                await client.files.retrieve(file.id)
            except openai.NotFoundError:
                break
            assert time.monotonic() < deadline, "the key still sees its old team's file"
            await asyncio.sleep(0.2)
        assert file.id not in [f.id async for f in client.files.list()]
        assert (await team.files.retrieve(file.id)).id == file.id
        await set_team("movers")
        deadline = time.monotonic() + 10
        while file.id not in [f.id async for f in client.files.list()]:
            assert time.monotonic() < deadline, "the key did not get its file back"
            await asyncio.sleep(0.2)


async def test_files_are_listed_and_deleted_but_not_under_a_batch_still_running(
    batchy: Stack,
) -> None:
    """``files.list`` and ``files.delete``, as the SDK calls them: without them a user could
    not see or reclaim what every batch leaves in the object store."""
    key, _ = await batchy.new_key("batch-files")
    async with _client(batchy, key) as client:
        first = await client.files.create(file=("a.jsonl", _input("files")), purpose="batch")
        second = await client.files.create(file=("b.jsonl", _input("other")), purpose="batch")
        listed = [f async for f in client.files.list()]
        assert {f.id for f in listed} == {first.id, second.id}
        assert [f.created_at for f in listed] == sorted(
            (f.created_at for f in listed), reverse=True
        )
        one = await client.files.list(limit=1)
        assert len(one.data) == 1
        assert one.has_more
        assert {f.id async for f in client.files.list(limit=1)} == {first.id, second.id}
        # The runner is paused until the delete was refused: 200 lines of 50 ms can end the
        # batch before the delete arrives on a loaded machine, and an ended batch holds nothing.
        runner = batchy.process("batch").proc
        assert runner is not None
        await pause(runner.pid)
        try:
            batch = await client.batches.create(
                input_file_id=first.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            with pytest.raises(openai.ConflictError) as busy:
                await client.files.delete(first.id)  # its batch reads it again after a restart
        finally:
            runner.send_signal(signal.SIGCONT)
        assert batch.id in str(busy.value)
        assert busy.value.response.request.headers["x-stainless-retry-count"] == "0"
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=90)
        assert done.status == "completed", done.errors
        outputs = [f async for f in client.files.list(purpose="batch_output")]
        assert [f.id for f in outputs] == [done.output_file_id]
        deleted = await client.files.delete(first.id)
        assert (deleted.id, deleted.deleted) == (first.id, True)
        assert (await client.files.delete(done.output_file_id)).deleted
        for gone in (first.id, done.output_file_id):
            with pytest.raises(openai.NotFoundError):
                await client.files.retrieve(gone)
            with pytest.raises(openai.NotFoundError):
                await client.files.content(gone)
            with pytest.raises(openai.NotFoundError):
                await client.files.delete(gone)
        assert [f.id async for f in client.files.list()] == [second.id]
        assert (await client.batches.retrieve(batch.id)).status == "completed"
    # Nothing of a deleted file stays in the object store, not even its "deleted" entry.
    assert await batchy.object_traces([first.id, done.output_file_id or ""]) == []
    assert await batchy.object_traces([second.id]) == [second.id]
    other, _ = await batchy.new_key("batch-files-stranger")
    async with _client(batchy, other) as stranger:
        assert [f async for f in stranger.files.list()] == []
        with pytest.raises(openai.NotFoundError):
            await stranger.files.delete(second.id)


async def test_a_file_under_a_cancelling_batch_is_refused_not_to_retry(batchy: Stack) -> None:
    """A cancelling batch waits for the lines a provider is answering (up to
    ``batch.line_timeout_s`` and slack), and indefinitely while no runner runs (as here): the
    409 of deleting its file says ``x-should-retry: false``, as for a running batch (only a
    finalizing one ends within seconds: tests/unit/test_batch_busy.py)."""
    key, _ = await batchy.new_key("batch-cancelling-file")
    async with _client(batchy, key) as client:
        uploaded = await client.files.create(file=("c.jsonl", _input("cancel")), purpose="batch")
        runner = batchy.process("batch").proc
        assert runner is not None
        await pause(runner.pid)  # the batch stays cancelling until the runner goes on
        try:
            batch = await client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            assert (await client.batches.cancel(batch.id)).status == "cancelling"
            with pytest.raises(openai.ConflictError) as busy:
                await client.with_options(max_retries=0).files.delete(uploaded.id)
        finally:
            runner.send_signal(signal.SIGCONT)
        assert "cancelling" in str(busy.value)
        assert busy.value.response.headers["x-should-retry"] == "false"
        assert "retry-after" not in busy.value.response.headers
        done = await _wait_for(client, batch.id, {"cancelled"}, timeout=60)
        assert done.status == "cancelled"
        assert (await client.files.delete(uploaded.id)).deleted


async def test_a_batch_whose_input_file_was_deleted_fails_naming_it(batchy: Stack) -> None:
    """The edge refuses to delete a running batch's input, but a delete can still land between
    a batch's creation and the runner's first read: the batch then fails with a clear error
    instead of retrying forever. The runner is paused to open that window."""
    key, record = await batchy.new_key("batch-vanished")
    owner = record.id  # a key without a team owns its files and batches itself
    runner = batchy.process("batch").proc
    assert runner is not None
    async with _client(batchy, key) as client:
        file = await client.files.create(file=("v.jsonl", _input("vanish")), purpose="batch")
        await pause(runner.pid)
        try:
            batch = await client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            nc = await batchy.connect("tail")
            try:
                await BatchStore(nc).delete_file(file.id, owner)
            finally:
                await nc.close()
        finally:
            runner.send_signal(signal.SIGCONT)
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=30)
    _failed_for_its_input(done, file.id)


def _failed_for_its_input(batch: Any, file_id: str) -> str:
    """The error message of a batch that failed for its input file ``file_id``."""
    assert batch.status == "failed"
    assert batch.errors is not None
    error = batch.errors.data[0]
    assert (error.code, error.param) == ("invalid_file", "input_file_id")
    assert file_id in (error.message or "")
    return str(error.message)


async def test_a_damaged_file_is_a_clear_error_to_download_and_fails_its_batch(
    batchy: Stack,
) -> None:
    """A file whose bytes the store lost (storage damage, nothing a client can send): its
    download is an error before any byte is sent, not a body cut short, and a batch on it
    fails naming the file instead of being retried for ever."""
    key, _ = await batchy.new_key("batch-damaged")
    async with _client(batchy, key) as client:
        file = await client.files.create(file=("d.jsonl", _input("damaged")), purpose="batch")
        async with _files_as_edge(batchy) as (js, store):
            info = await store.get_info(file.id)
            stream = stream_of(subjects.FILES_BUCKET)
            await js.purge_stream(stream, subject=chunks_subject(subjects.FILES_BUCKET, info.nuid))
        async with httpx.AsyncClient(base_url=batchy.tail_url) as http:
            download = await http.get(
                f"/v1/files/{file.id}/content", headers={"Authorization": f"Bearer {key}"}
            )
        assert download.status_code == 500, download.text
        assert "damaged" in download.json()["error"]["message"]
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=30)
    assert "damaged" in _failed_for_its_input(done, file.id)


async def test_a_batch_stored_before_owner_keys_runs_and_then_moves(batchy: Stack) -> None:
    """An upgrade: a file and a batch stored under their ids alone, as before owner keys. The
    caller still finds them, the runner runs the batch, and once it ended the sweep moves
    every record to its owner key, where lists and reads keep finding them."""
    key, record = await batchy.new_key("batch-upgrade")
    owner = record.id
    data, now = _input("upgrade"), int(time.time())
    file = b.FileObject(
        id="file-upgrade",
        bytes=len(data),
        created_at=now,
        filename="upgrade.jsonl",
        purpose="batch",
        expires_at=now + 86400,
    )
    batch = b.Batch(
        id="batch_upgrade",
        endpoint="/v1/chat/completions",
        input_file_id=file.id,
        completion_window="24h",
        status="validating",
        created_at=now,
        expires_at=now + 86400,
    )
    tail = await batchy.connect("tail")
    try:
        js = tail.jetstream(timeout=10)
        await (await js.object_store(subjects.FILES_BUCKET)).put(file.id, data)
        kv = await js.key_value(subjects.BATCHES_BUCKET)
        await kv.put(f"f.{file.id}", b.ENCODER.encode(b.FileRecord(file=file, owner=owner)))
        stored = b.BatchRecord(batch=batch, owner=owner, key_id=record.id, key_hash=record.hash)
        await kv.create(f"b.{batch.id}", b.ENCODER.encode(stored))
    finally:
        await tail.close()
    async with _client(batchy, key) as client:
        assert (await client.files.retrieve(file.id)).filename == "upgrade.jsonl"
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=90)
        assert done.status == "completed", done.errors
        await _check_output(client, done, "upgrade")
        deadline = time.monotonic() + 15
        while traces := await batchy.bucket_traces([f"f.{file.id}", f"b.{batch.id}"]):
            assert time.monotonic() < deadline, f"not moved: {traces}"
            await asyncio.sleep(0.3)
        moved = [
            b.owned_key(b.FILE_PREFIX, owner, file.id),
            b.owned_key(b.FILE_PREFIX, owner, done.output_file_id),
            b.owned_key(b.BATCH_PREFIX, owner, batch.id),
        ]
        assert await batchy.bucket_traces(moved) == moved
        assert (await client.batches.retrieve(batch.id)).status == "completed"
        assert batch.id in [x.id for x in (await client.batches.list()).data]
        listed = {f.id async for f in client.files.list()}
        assert {file.id, done.output_file_id} <= listed
        assert (await client.files.content(file.id)).content == data
    # The admin API reads any tenant's batch by its id alone, and lists everyone's.
    seen = await batchy.admin("GET", f"/batches/{batch.id}")
    assert seen.status_code == 200, seen.text
    assert (seen.json()["id"], seen.json()["status"]) == (batch.id, "completed")
    listing = (await batchy.admin("GET", "/batches")).json()["batches"]
    assert batch.id in [x["id"] for x in listing]
    missing = await batchy.admin("GET", "/batches/batch_nobody")
    assert missing.status_code == 404


async def test_files_and_batch_records_expire_as_at_openai(batchy: Stack) -> None:
    """Uploads and outputs carry ``expires_at`` (the caller's ``expires_after`` /
    ``output_expires_after``, else 30 days); an expired file is gone for callers at once, and
    the runner's sweep deletes it and the records of long-finished batches from the buckets.
    Without it both grew for ever."""
    key, record = await batchy.new_key("batch-expiry")
    owner = record.id  # a key without a team owns its files and batches itself
    async with _client(batchy, key) as client:
        hour: Any = {"anchor": "created_at", "seconds": 3600}
        short = await client.files.create(
            file=("s.jsonl", _input("expiry")), purpose="batch", expires_after=hour
        )
        assert short.expires_at == short.created_at + 3600
        plain = await client.files.create(file=("p.jsonl", b"{}\n"), purpose="batch")
        assert plain.expires_at == plain.created_at + 30 * 86400
        bads: list[Any] = [
            {"anchor": "created_at", "seconds": 60},
            {"anchor": "last_used", "seconds": 3600},
        ]
        for bad in bads:
            with pytest.raises(openai.BadRequestError) as refused:
                await client.files.create(
                    file=("b.jsonl", b"{}\n"),
                    purpose="batch",
                    expires_after=bad,
                )
            assert refused.value.body["param"] == "expires_after"  # type: ignore[index]
        async with httpx.AsyncClient(base_url=batchy.tail_url) as http:  # curl -F's mistake
            flat = await http.post(
                "/v1/files",
                headers={"Authorization": f"Bearer {key}"},
                data={"purpose": "batch", "expires_after": json.dumps(hour)},
                files={"file": ("f.jsonl", b"{}\n")},
            )
        assert flat.status_code == 400, flat.text
        assert "expires_after[anchor]" in flat.json()["error"]["message"]
        batch = await client.batches.create(
            input_file_id=short.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            output_expires_after={"anchor": "created_at", "seconds": 7200},
        )
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=90)
        assert done.status == "completed", done.errors
        output = await client.files.retrieve(done.output_file_id or "")
        assert output.expires_at == output.created_at + 7200

    # Records as they look once time has passed: a file past its expiry (not yet swept) and a
    # batch that ended 31 days ago.
    tail = await batchy.connect("tail")
    try:
        store = BatchStore(tail)
        now = int(time.time())
        old = await store.file(plain.id, owner)
        assert old is not None
        stale = b.FileObject(**{**msgspec.structs.asdict(old.file), "expires_at": now - 120})
        await store.put_file(b.FileRecord(file=stale, owner=old.owner), b"{}\n")
        found = await store.get(done.id, owner)
        assert found is not None
        ended = now - 31 * 86400
        await store.create(
            msgspec.structs.replace(
                found[0],
                batch=msgspec.structs.replace(
                    found[0].batch, id="batch_ended_long_ago", completed_at=ended
                ),
            )
        )
        async with _client(batchy, key) as client:
            with pytest.raises(openai.NotFoundError):  # gone for callers at once
                await client.files.retrieve(plain.id)
            assert plain.id not in {f.id async for f in client.files.list()}
            with pytest.raises(openai.BadRequestError):
                await client.batches.create(
                    input_file_id=plain.id, endpoint="/v1/chat/completions", completion_window="24h"
                )
            # (The old batch may be swept any moment now, so no read of it before the wait.)
            deadline = time.monotonic() + 15
            old_batch = "batch_ended_long_ago"
            while await store.file(plain.id, owner) or await store.get(old_batch, owner):
                assert time.monotonic() < deadline, "the runner's sweep did not delete them"
                await asyncio.sleep(0.3)
            assert await store.content(plain.id) is None
            assert await batchy.object_traces([plain.id]) == []
            with pytest.raises(openai.NotFoundError):
                await client.batches.retrieve("batch_ended_long_ago")
            # What has not expired stays: the batch that ended just now and its files.
            assert (await client.batches.retrieve(done.id)).status == "completed"
            assert (await client.files.content(done.output_file_id or "")).content
            assert (await client.files.retrieve(short.id)).id == short.id
    finally:
        await tail.close()


BOUNDARY = "switchyard-test-boundary"


async def _chunked_upload(size: int) -> AsyncIterator[bytes]:
    """A multipart upload of a ``size``-byte file, sent in pieces with no length."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        'filename="big.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    piece = b"x" * 65536
    for _ in range(size // len(piece)):
        yield piece
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def test_an_upload_may_be_max_file_bytes_and_a_larger_one_leaves_nothing(
    batchy: Stack,
) -> None:
    """An upload streams through the edge to the store a chunk at a time: one of exactly
    ``batch.max_file_bytes`` is stored whole, and one byte more is a 400 that leaves nothing
    in the store (no record, no chunks)."""
    limit = batchy.settings.batch.max_file_bytes
    key, _ = await batchy.new_key("upload-limit")
    row = b'{"custom_id":"r","method":"POST","url":"/v1/chat/completions","body":{}}\n'
    exact = row * (limit // len(row)) + b" " * (limit % len(row))
    assert len(exact) == limit
    headers = {"Authorization": f"Bearer {key}"}
    stream = stream_of(subjects.FILES_BUCKET)
    async with (
        _files_as_edge(batchy) as (js, _),
        httpx.AsyncClient(base_url=batchy.tail_url, timeout=60) as http,
    ):
        stored = await http.post(
            "/v1/files",
            headers=headers,
            data={"purpose": "batch"},
            files={"file": ("exact.jsonl", exact)},
        )
        assert stored.status_code == 200, stored.text
        assert stored.json()["bytes"] == limit
        content = await http.get(f"/v1/files/{stored.json()['id']}/content", headers=headers)
        assert content.content == exact
        before = (await js.stream_info(stream, subjects_filter="$O.>")).state.subjects
        refused = await http.post(
            "/v1/files",
            headers=headers,
            data={"purpose": "batch"},
            files={"file": ("over.jsonl", exact + b"\n")},
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["type"] == "invalid_request_error"
        # Without a length (chunked), a body is counted as it comes, and refused once it
        # passes the limit: the parser would spool any size to disk.
        chunked = await http.post(
            "/v1/files",
            headers={**headers, "content-type": f"multipart/form-data; boundary={BOUNDARY}"},
            content=_chunked_upload(2 * limit),
        )
        assert chunked.status_code == 400, chunked.text
        assert "limited to" in chunked.json()["error"]["message"]
        after = (await js.stream_info(stream, subjects_filter="$O.>")).state.subjects
        assert set(after or {}) <= set(before or {})  # (a sweep may only remove)
        listed = await http.get("/v1/files", headers=headers)
        assert [f["id"] for f in listed.json()["data"]] == [stored.json()["id"]]


async def test_chunks_a_killed_writer_left_are_swept_and_live_files_stay(batchy: Stack) -> None:
    """An edge or runner killed while storing a file leaves chunks that no file names; the
    runner's sweep purges them once they are old (ten seconds in this stack), with its own
    permissions, and leaves every live file alone."""
    key, _ = await batchy.new_key("dead-chunks")
    async with _client(batchy, key) as client:
        upload = await client.files.create(file=("kept.jsonl", _input("kept")), purpose="batch")
    async with _files_as_edge(batchy) as (js, store):
        killed = ObjectWriter(js, store, subjects.FILES_BUCKET, "file-killed-mid-write")
        await killed.write(b"x" * (3 * CHUNK_BYTES + 1))  # three chunks out, then "SIGKILL"
        dead = chunks_subject(subjects.FILES_BUCKET, killed.nuid)
        stream = stream_of(subjects.FILES_BUCKET)
        assert (await js.stream_info(stream, subjects_filter=dead)).state.subjects == {dead: 3}
        deadline = time.monotonic() + 40
        while (await js.stream_info(stream, subjects_filter=dead)).state.subjects:
            assert time.monotonic() < deadline, "the sweep left a killed writer's chunks"
            await asyncio.sleep(0.5)
    async with _client(batchy, key) as client:
        assert (await client.files.content(upload.id)).content == _input("kept")


async def test_killing_every_model_proxy_then_restarting_loses_and_repeats_nothing(
    batchy: Stack, upstream: FakeOpenAI
) -> None:
    key, record = await batchy.new_key("batch-restart")
    before = len(upstream.calls_for("slow:50"))
    async with _client(batchy, key) as client:
        file = await client.files.create(file=("r.jsonl", _input("restart")), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        # Killed once 50 lines reached the provider, counted where they arrive: the batch's
        # request_counts lag up to a progress write (1 s), in which the 150 lines left can
        # all end on a loaded machine, and a batch that ended has nothing to restart.
        deadline = time.monotonic() + 60
        while len(upstream.calls_for("slow:50")) - before < 50:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    for name in ("modelproxy-1", "modelproxy-2"):
        batchy.kill(name)
    await asyncio.sleep(1.0)
    # Then the whole stack goes down and comes back, as `switchyard up` would.
    await batchy.supervisor.stop()
    env = local.child_env(batchy.settings, batchy.config_file, {})
    steps = local.components(batchy.settings, env, local.component_specs(batchy.settings))
    batchy.supervisor = local.stack_supervisor(batchy.settings, batchy.home, steps)
    await batchy.supervisor.start()
    async with _client(batchy, key) as client:
        done = await _wait_counting_usage(client, batch.id, timeout=120)
        assert done.status == "completed", done.errors
        await _check_output(client, done, "restart")
        # Every line's tokens counted once, those answered before the restart included.
        output = (await client.files.content(done.output_file_id)).text
        rows = [json.loads(line) for line in output.splitlines()]
        assert _usage_of(done) == _summed_usage(rows)
        assert done.usage.input_tokens == 7 * LINES
        assert done.model == "bulk"
    response = await batchy.admin("GET", f"/batches/{batch.id}")
    assert response.json()["restarts"] >= 1
    assert await _settled_requests(batchy, record.id) == LINES


async def test_a_batch_create_body_is_small_and_shallow_or_refused(batchy: Stack) -> None:
    """``POST /v1/batches`` reads at most 64 KiB (it read any size into memory) and answers
    deep nesting with a 400 (it was a 500)."""
    key, _ = await batchy.new_key("create-bounds")
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    huge = b'{"input_file_id": "file-x", "metadata": {"a": "' + b"x" * 200_000 + b'"}}'
    deep = b'{"input_file_id": "file-x", "extra": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    async with httpx.AsyncClient(base_url=batchy.tail_url, timeout=30) as http:
        refused = await http.post("/v1/batches", headers=headers, content=huge)
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["type"] == "invalid_request_error"
        nested = await http.post("/v1/batches", headers=headers, content=deep)
        assert nested.status_code == 400, nested.text
        assert "recursion" in nested.json()["error"]["message"]
