"""The batch runner holds every line to its key's budget, on a real stack with real Valkey.

The edge checks a key's budget when a batch is created; the lines went out later, past the
edge, so a key under its budget at creation could spend far past it through one large batch.
Now each line is checked first (spend read as the runner's own Valkey role, which can read
budget counters and nothing else): a line past the budget is an error row with the 429 an HTTP
request of that key gets, a budget raised meanwhile lets the next lines run, and while Valkey
is down (``fail_closed``) lines wait instead of failing. The spend read once a second misses
the lines sent since: each line the runner sends holds its estimated cost until a read includes
it, and lines wait while spend plus holds reach the budget (a fast batch once spent 18x it).
A runner stopped mid-batch lets its lines at the provider finish, so each line is billed once.

Its own stack: a runner with 2 sending slots, deployments that charge $0.001 per token (a
line saying "hi" uses 7 + 2 tokens: $0.009), one of them taking 1.5 s a line, and four
that hold their lines until the test opens their gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio

from switchyard.admin.keys import KeyAdmin
from switchyard.limits import keys as rk
from switchyard.limits import periods
from switchyard.limits.credentials import read_password
from switchyard.limits.resp import RedisReplyError, ScriptClient
from switchyard.limits.store import connect_redis
from switchyard.stack.process import ManagedProcess
from tests.stacks import Stack, batch_config, start_stack
from tests.test_batches import _client, _wait_for
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLOTS = 2
PRICE = {"input_per_token": 0.001, "output_per_token": 0.001}
LINE_USD = 0.009  # 7 prompt tokens + 2 ("echo: hi"), at $0.001 each
LINE_NANO = int(LINE_USD * rk.NANO)
SLOW_MODEL = "slow:1500"  # the provider model of ``paid-slow``


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def budget_stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    fake = {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 8}
    extra = batch_config(upstream.base_url)
    extra["providers"] = {"fake": fake}
    extra["routes"] = {
        alias: {"deployments": [{"provider": "fake", "model": model, "price": PRICE}]}
        for alias, model in {
            "paid": "echo",
            "paid-slow": SLOW_MODEL,
            "gate-a": "gate:budget-a",
            "gate-b": "gate:budget-b",
            "gate-c": "gate:budget-c",
            "gate-d": "gate:budget-d",
        }.items()
    }
    extra["batch"] |= {"max_in_flight": SLOTS, "progress_s": 0.2}
    stack = await start_stack(tmp_path_factory.mktemp("budget"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _line(custom_id: str, model: str) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
    }


def _jsonl(row: dict[str, Any]) -> bytes:
    return json.dumps(row).encode() + b"\n"


async def _start(client: openai.AsyncOpenAI, rows: list[dict[str, Any]]) -> Any:
    data = b"".join(_jsonl(r) for r in rows)
    file = await client.files.create(file=("in.jsonl", data), purpose="batch")
    return await client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


async def _rows(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = (await client.files.content(file_id)).text
    return [json.loads(line) for line in text.splitlines()]


async def _spend_until_refused(client: openai.AsyncOpenAI) -> openai.RateLimitError:
    """Spend the key's budget over HTTP until the edge refuses it (accounting records spend a
    moment after each answer)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            await client.chat.completions.create(
                model="paid", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.RateLimitError as exc:
            return exc
        assert time.monotonic() < deadline, "the budget never ran out"
        await asyncio.sleep(0.1)


async def _until_running(
    client: openai.AsyncOpenAI, batch_id: str, upstream: FakeOpenAI, model: str, lines: int
) -> None:
    await _wait_for(client, batch_id, {"in_progress"}, timeout=15)
    deadline = time.monotonic() + 15
    while len(upstream.calls_for(model)) < lines:  # at the provider, holding the slots
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def _spent_usd(stack: Stack, key_id: str, period: str = "monthly") -> float:
    redis = connect_redis(stack.settings, "ops")
    try:
        period_id, _ = periods.current(period, time.time())
        return int(await redis.get(rk.budget(key_id, period_id)) or 0) / rk.NANO
    finally:
        await redis.aclose()


async def _calls_once_spent(
    stack: Stack, key_id: str, budget_usd: float, upstream: FakeOpenAI, model: str
) -> int:
    """How many calls of ``model`` the provider had got when the key's spend counter was
    first seen at its budget (read as often as Valkey answers, every 50 ms)."""
    redis = connect_redis(stack.settings, "ops")
    try:
        period_id, _ = periods.current("monthly", time.time())
        counter = rk.budget(key_id, period_id)
        while int(await redis.get(counter) or 0) < int(budget_usd * rk.NANO):
            await asyncio.sleep(0.05)
        return len(upstream.calls_for(model))
    finally:
        await redis.aclose()


def _budget_error(row: dict[str, Any]) -> dict[str, Any]:
    assert row["error"] is None
    assert row["response"]["status_code"] == 429, row
    error: dict[str, Any] = row["response"]["body"]["error"]
    return error


async def test_lines_after_the_budget_is_crossed_are_budget_errors(
    budget_stack: Stack, upstream: FakeOpenAI
) -> None:
    """A $0.04 budget is crossed by the fifth line: the lines before the crossing are results,
    every line after it an error row with the 429 an HTTP request of the key gets, and the
    key's spend stops near its budget instead of growing with the batch."""
    key, record = await budget_stack.new_key("budget-cross", budget_usd=0.04)
    total = 40
    crossing = asyncio.ensure_future(
        _calls_once_spent(budget_stack, record.id, 0.04, upstream, SLOW_MODEL)
    )
    try:
        async with _client(budget_stack, key) as client:
            batch = await _start(client, [_line(f"l-{i}", "paid-slow") for i in range(total)])
            done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=60)
            assert done.status == "completed", done.errors
            results = await _rows(client, done.output_file_id)
            errors = await _rows(client, done.error_file_id)
            with pytest.raises(openai.RateLimitError) as http:
                await client.chat.completions.create(
                    model="paid", messages=[{"role": "user", "content": "hi"}]
                )
        calls_at_crossing = await asyncio.wait_for(crossing, 15)  # (the refusals were seen)
    finally:
        crossing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await crossing
    ran = sorted(int(r["custom_id"][2:]) for r in results)
    refused = sorted(int(r["custom_id"][2:]) for r in errors)
    # Lines are checked in order and spend only grows: the results are the first lines.
    assert ran == list(range(len(ran)))
    assert refused == list(range(len(ran), total))
    assert (done.request_counts.completed, done.request_counts.failed) == (len(ran), len(refused))
    # Four lines ($0.036) leave budget; the fifth is sent. How many more run depends on
    # accounting's lag (the spend lands after the answers), which a loaded machine stretches
    # without bound, so the count is not bounded by a number of lines. The runner's part is:
    # once the spend in Valkey is at the budget, a line asks again at the latest when its
    # cached read (1 s) ends, and a slot's next line starts only when its line (1.5 s) ended.
    # So each slot sends at most one more line to the provider after the crossing: the one
    # already on its way or sent on a read made just before it (twice that here, for a read
    # whose answer a loaded runner took over half a second to take in).
    assert 5 <= len(ran) < total, ran
    sent_after = len(upstream.calls_for(SLOW_MODEL)) - calls_at_crossing
    assert sent_after <= 2 * SLOTS, (len(ran), sent_after)
    deadline = time.monotonic() + 10
    while (spent := await _spent_usd(budget_stack, record.id)) < len(ran) * LINE_USD - 1e-9:
        assert time.monotonic() < deadline, (spent, len(ran))  # accounting lags the answers
        await asyncio.sleep(0.2)
    assert 0.04 <= spent <= len(ran) * LINE_USD + 1e-9  # each line that ran, and no more
    # The same error an HTTP request of the key gets (the amount spent aside).
    want = http.value.body
    assert isinstance(want, dict)
    assert http.value.status_code == 429
    for row in errors:
        error = _budget_error(row)
        assert error.keys() == want.keys()
        assert (error["type"], error["code"], error["param"]) == (
            "insufficient_quota",
            "budget_exceeded",
            None,
        )
        assert (want["type"], want["code"]) == (error["type"], error["code"])
        assert error["message"].split("(spent")[0] == want["message"].split("(spent")[0]
        assert error["message"].startswith("this key's budget of $0.04 per monthly period")


async def _held_batch(client: openai.AsyncOpenAI, upstream: FakeOpenAI, gate: str) -> Any:
    """A batch whose first lines hold both of the runner's slots at the provider (gate
    ``gate``, model ``gate-<last letter>``) and whose next four wait for a slot; the key's
    budget is then spent over HTTP while they wait."""
    alias = f"gate-{gate[-1]}"
    rows = [_line(f"g-{i}", alias) for i in range(SLOTS)]
    rows += [_line(f"p-{i}", "paid") for i in range(4)]
    batch = await _start(client, rows)
    await _until_running(client, batch.id, upstream, f"gate:{gate}", SLOTS)
    assert (await _spend_until_refused(client)).code == "budget_exceeded"
    await asyncio.sleep(1.5)  # past what the runner keeps of a key and of its spend
    return batch


async def test_a_budget_raised_during_the_batch_lets_the_next_lines_run(
    budget_stack: Stack, upstream: FakeOpenAI
) -> None:
    """Each key's batch has its first lines held at the provider while the key's budget is
    spent over HTTP. One key's budget is then raised: its batch's next lines run. The other's
    are budget errors."""
    raised_key, raised = await budget_stack.new_key("budget-raised", budget_usd=0.02)
    kept_key, _ = await budget_stack.new_key("budget-kept", budget_usd=0.02)
    async with _client(budget_stack, raised_key) as client:
        batch = await _held_batch(client, upstream, "budget-a")
        nc = await budget_stack.connect("admin")
        try:
            await KeyAdmin(nc.jetstream(timeout=10)).update(raised.id, budget_usd=100.0)
        finally:
            await nc.close()
        upstream.open_gate("budget-a")
        done = await _wait_for(client, batch.id, {"completed"}, timeout=30)
        assert await _rows(client, done.error_file_id) == []
    assert (done.request_counts.completed, done.request_counts.failed) == (SLOTS + 4, 0)
    async with _client(budget_stack, kept_key) as client:
        batch = await _held_batch(client, upstream, "budget-b")
        upstream.open_gate("budget-b")
        done = await _wait_for(client, batch.id, {"completed"}, timeout=30)
        results = await _rows(client, done.output_file_id)
        errors = await _rows(client, done.error_file_id)
    # The held lines were checked before the spend: they ran. The rest met a spent budget.
    assert sorted(r["custom_id"] for r in results) == [f"g-{i}" for i in range(SLOTS)]
    assert sorted(r["custom_id"] for r in errors) == [f"p-{i}" for i in range(4)]
    assert {_budget_error(r)["code"] for r in errors} == {"budget_exceeded"}


async def test_lines_wait_while_valkey_is_down_and_run_when_it_is_back(
    budget_stack: Stack, upstream: FakeOpenAI
) -> None:
    """``redis.on_unavailable: fail_closed``: a line whose budget cannot be checked is not
    failed (a batch must not lose lines to a Valkey outage); it waits and runs later."""
    key, _ = await budget_stack.new_key("budget-outage", budget_usd=10.0)
    async with _client(budget_stack, key) as client:
        rows = [_line(f"g-{i}", "gate-c") for i in range(SLOTS)] + [_line("p-0", "paid")]
        batch = await _start(client, rows)
        await _until_running(client, batch.id, upstream, "gate:budget-c", SLOTS)
        valkey = budget_stack.process("valkey")
        await valkey.stop(5)
        try:
            await asyncio.sleep(1.5)  # past what the runner keeps of the key's spend
            upstream.open_gate("budget-c")
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                now = await client.batches.retrieve(batch.id)
                counts = now.request_counts
                assert now.status == "in_progress", now.status
                assert counts is not None
                assert counts.failed == 0
                await asyncio.sleep(0.5)
            assert counts is not None
            assert counts.completed == SLOTS  # the held lines, sent before
        finally:
            await valkey.start()
            assert await valkey.wait_healthy(30)
        done = await _wait_for(client, batch.id, {"completed"}, timeout=30)
    assert (done.request_counts.completed, done.request_counts.failed) == (SLOTS + 1, 0)


async def test_the_runners_valkey_role_reads_budget_counters_and_nothing_else(
    budget_stack: Stack,
) -> None:
    settings = budget_stack.settings
    client = ScriptClient(
        settings.redis_url,
        username="batch",
        password=read_password(settings.redis_password_dir, "batch"),
        timeout=2.0,
    )
    counter = rk.budget("key_acl", periods.current("monthly", time.time())[0])
    estimates = [rk.estimates("key_acl"), rk.platform_estimates()]
    ops = connect_redis(settings, "ops")
    try:
        await ops.set(counter, 123)
        await ops.set(rk.total("key_acl"), 456)
        await ops.hset(rk.holds("key_acl"), "m", 7)
        for name in estimates:
            await ops.hset(name, "model-acl", 5)
        assert await client.call("GET", counter) == b"123"
        for name in estimates:  # what one request costs, read whole (one read per key)
            reply = await client.call("HGETALL", name)
            assert dict(zip(reply[::2], reply[1::2], strict=True))[b"model-acl"] == b"5"
        refused = [
            ("SET", counter, "0"),
            ("INCRBY", counter, "1"),
            ("DEL", counter),
            ("HSET", estimates[0], "model-acl", "6"),
            ("HSET", estimates[1], "model-acl", "6"),
            ("HDEL", estimates[1], "model-acl"),
            ("HGETALL", rk.holds("key_acl")),  # the edge's holds
            ("HGET", estimates[0], "model-acl"),
            ("GET", rk.total("key_acl")),  # spend, but not a budget period's
            ("GET", rk.day_key("2026-01-01", "key_acl")),
            ("GET", rk.requests("key_acl")),  # rate-limit state
            ("ZCARD", rk.parallel("key_acl")),
            ("GET", rk.seen("x")),
            ("SET", "other", "1"),
            ("EVAL", "return redis.call('GET', KEYS[1])", "1", counter),
            ("SCRIPT", "LOAD", "return 1"),
            ("SCAN", "0"),
            ("KEYS", "*"),
            ("CONFIG", "GET", "*"),
            ("FLUSHALL",),
        ]
        for command in refused:
            with pytest.raises(RedisReplyError, match="NOPERM"):
                await client.call(*command)
        assert await ops.get(counter) == b"123"  # nothing changed
        assert await ops.hget(estimates[1], "model-acl") == b"5"
    finally:
        await ops.hdel(rk.platform_estimates(), "model-acl")
        await ops.delete(counter, rk.total("key_acl"), rk.holds("key_acl"), estimates[0])
        await ops.aclose()
        await client.close()


async def _estimate(stack: Stack, key_id: str, alias: str) -> int:
    """The key's estimated cost of one request of ``alias`` (nano-USD, 0: none yet)."""
    redis = connect_redis(stack.settings, "ops")
    try:
        return int(await redis.hget(rk.estimates(key_id), alias) or 0)
    finally:
        await redis.aclose()


async def _spend_settled(stack: Stack, key_id: str, at_least: float) -> float:
    """The key's spend once accounting has billed at least ``at_least`` and it stopped moving."""
    deadline = time.monotonic() + 15
    last = -1.0
    while (spent := await _spent_usd(stack, key_id)) < at_least - 1e-9 or spent != last:
        assert time.monotonic() < deadline, (spent, at_least)
        last = spent
        await asyncio.sleep(0.5)
    return spent


@pytest.mark.parametrize("batches", [1, 2], ids=["one-batch", "two-batches-at-once"])
async def test_a_fast_batch_stops_about_one_line_past_the_budget(
    budget_stack: Stack, batches: int
) -> None:
    """An explorer's key with a budget worth ~11 lines ran all 200 lines of a fast batch (18x
    the budget): the spend is read once a second and the lines sent meanwhile counted for
    nothing. Now each line sent holds the estimate learnt from the warm-up request, and lines
    wait while spend plus holds reach the budget: the batch stops near it and every other
    line is a ``budget_exceeded`` row. Two batches of the key at once share its holds."""
    budget = 0.1  # 11.1 lines
    key, record = await budget_stack.new_key(f"budget-fast-{batches}", budget_usd=budget)
    total = 200
    async with _client(budget_stack, key) as client:
        await client.chat.completions.create(
            model="paid", messages=[{"role": "user", "content": "hi"}]
        )
        deadline = time.monotonic() + 15
        while await _estimate(budget_stack, record.id, "paid") != LINE_NANO:
            assert time.monotonic() < deadline, "accounting learnt no estimate"
            await asyncio.sleep(0.1)
        per = total // batches
        files = [
            await client.files.create(
                file=("in.jsonl", b"".join(_jsonl(_line(f"b{b}-{i}", "paid")) for i in range(per))),
                purpose="batch",
            )
            for b in range(batches)
        ]
        # Created at once: the edge refuses to create a batch once the key's spend is at its
        # budget, and the first batch's lines reach it within a second.
        started = await asyncio.gather(
            *(
                client.batches.create(
                    input_file_id=file.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                )
                for file in files
            )
        )
        ran: list[str] = []
        refused: list[str] = []
        for batch in started:
            done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=60)
            assert done.status == "completed", done.errors
            results = await _rows(client, done.output_file_id)
            errors = await _rows(client, done.error_file_id)
            assert (done.request_counts.completed, done.request_counts.failed) == (
                len(results),
                len(errors),
            )
            ran += [r["custom_id"] for r in results]
            refused += [r["custom_id"] for r in errors]
            assert {_budget_error(r)["code"] for r in errors} == {"budget_exceeded"}
    # Every line has exactly one row.
    assert len(ran) + len(refused) == total
    assert sorted(ran + refused) == sorted(f"b{b}-{i}" for b in range(batches) for i in range(per))
    # The warm-up and 10 lines leave budget (each let through while spend plus holds were
    # under it): the 11th goes, and 12 lines bill $0.108. One more may go when accounting
    # lags an answer by more than the 0.5 s the runner allows it (a loaded machine). Before
    # holds, every line sent in the second after the crossing ran: about all 200.
    billed = 1 + len(ran)
    assert 11 <= billed <= int(budget / LINE_USD) + 2, billed
    spent = await _spend_settled(budget_stack, record.id, billed * LINE_USD)
    assert spent == pytest.approx(billed * LINE_USD)  # each line that ran, and no more


async def test_lines_held_back_by_holds_run_once_the_budget_is_raised(
    budget_stack: Stack, upstream: FakeOpenAI
) -> None:
    """A line at the provider holds an estimate of $0.015 of a $0.02 budget (its answer is
    held at a gate); the next line ($0.009) runs, and then spend plus the hold reach the
    budget while the spend alone does not: the lines after it wait (neither sent nor failed)
    for as long as the hold lasts. Raising the budget lets them run, the held line still
    running."""
    key, record = await budget_stack.new_key("budget-held", budget_usd=0.02)
    ops = connect_redis(budget_stack.settings, "ops")
    try:  # (what accounting would have learnt from earlier requests of the key)
        await ops.hset(rk.estimates(record.id), mapping={"gate-d": 15_000_000, "paid": LINE_NANO})
    finally:
        await ops.aclose()
    async with _client(budget_stack, key) as client:
        rows = [_line("g-0", "gate-d")] + [_line(f"p-{i}", "paid") for i in range(3)]
        batch = await _start(client, rows)
        await _until_running(client, batch.id, upstream, "gate:budget-d", 1)
        await _spend_settled(budget_stack, record.id, LINE_USD)  # p-0 ran
        await asyncio.sleep(2.5)  # past the runner's reads of the key and its spend
        now = await client.batches.retrieve(batch.id)
        assert now.status == "in_progress"
        assert now.request_counts is not None
        assert (now.request_counts.completed, now.request_counts.failed) == (1, 0)
        nc = await budget_stack.connect("admin")
        try:
            await KeyAdmin(nc.jetstream(timeout=10)).update(record.id, budget_usd=100.0)
        finally:
            await nc.close()
        deadline = time.monotonic() + 15
        while True:  # the waiting lines run while g-0 still holds its gate
            now = await client.batches.retrieve(batch.id)
            assert now.request_counts is not None
            if now.request_counts.completed == 3:
                break
            assert now.request_counts.failed == 0
            assert time.monotonic() < deadline, now.request_counts
            await asyncio.sleep(0.2)
        upstream.open_gate("budget-d")
        done = await _wait_for(client, batch.id, {"completed"}, timeout=30)
        assert await _rows(client, done.error_file_id) == []
    assert (done.request_counts.completed, done.request_counts.failed) == (4, 0)


async def test_a_runner_stop_lets_its_lines_at_the_provider_finish_and_bills_each_once(
    budget_stack: Stack, upstream: FakeOpenAI
) -> None:
    """A runner stopped (SIGTERM, as ``switchyard down`` or a rolling restart sends) while
    two lines are at a provider taking 1.5 s sends no line more, lets those two be answered
    and recorded within its stop grace (5 s), and the runner started again sends only the
    rest. A stop used to cancel every line in flight at once: each was billed as a stopped
    call (the key's estimate), then ran, and was billed, again after the restart."""
    key, record = await budget_stack.new_key("batch-stop", budget_usd=10.0)
    ops = connect_redis(budget_stack.settings, "ops")
    try:  # (what accounting would have learnt: a stopped call is billed this much)
        await ops.hset(rk.estimates(record.id), mapping={"paid-slow": LINE_NANO})
    finally:
        await ops.aclose()
    total = 6
    texts = {f"stop{i}" for i in range(total)}  # (one word: "echo: stopN" costs $0.009)

    def calls() -> int:
        return sum(
            c.body["messages"][-1]["content"] in texts for c in upstream.calls_for(SLOW_MODEL)
        )

    rows = [_line(f"s-{i}", "paid-slow") for i in range(total)]
    for i, row in enumerate(rows):
        row["body"]["messages"][0]["content"] = f"stop{i}"
    runner = budget_stack.process("batch")
    async with _client(budget_stack, key) as client, _started_again(runner):
        batch = await _start(client, rows)
        await _wait_for(client, batch.id, {"in_progress"}, timeout=15)
        deadline = time.monotonic() + 15
        while calls() < SLOTS:  # both slots' lines at the provider
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await runner.stop(budget_stack.settings.stack.stop_timeout_s)
        stopped = await client.batches.retrieve(batch.id)
        assert calls() == SLOTS  # no line was sent while it stopped
        assert stopped.status == "in_progress"
        assert stopped.request_counts is not None
        assert (stopped.request_counts.completed, stopped.request_counts.failed) == (SLOTS, 0)
        await runner.start()
        assert await runner.wait_healthy(30), runner.tail_log()
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=60)
        assert done.status == "completed", done.errors
        results = await _rows(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in results) == sorted(r["custom_id"] for r in rows)
    assert all(r["response"]["status_code"] == 200 for r in results)
    assert calls() == total  # each line reached the provider once
    spent = await _spend_settled(budget_stack, record.id, total * LINE_USD)
    assert spent == pytest.approx(total * LINE_USD)  # and was billed once


@contextlib.asynccontextmanager
async def _started_again(proc: ManagedProcess) -> AsyncIterator[None]:
    """Whatever the test did, ``proc`` runs again after it (the module's other tests need it)."""
    try:
        yield
    finally:
        if not proc.running:
            await proc.start()
            await proc.wait_healthy(30)
