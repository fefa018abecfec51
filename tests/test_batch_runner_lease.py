"""Two batch runners at once (compose recreating the service while the old container still
stops, a second ``switchyard serve batch``, a partition) work no batch twice.

Seen in an upgrade rehearsal with compose: both runners ran the same batch, so some lines' provider
calls were made twice (billed twice), and the one that did not end the batch logged it as
cancelled though it completed. Now only the holder of the runner lease (``runner.leader`` in
``sy_batches``) runs batches; another waits until it is given up or lapses.

A real stack without its own runner (nats-server, Valkey, OpenBao, control, a head, a
model-proxy and the fake provider, lines taking 300 ms, 4 at a time); the runners run here, each
on its own NATS connection as the ``batch`` identity. Each line's provider calls are counted at
the fake provider by the line's text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats.errors
import openai
import pytest
import pytest_asyncio

from switchyard.bus import subjects
from switchyard.runtime.batchstore import BatchStore
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.worker import Process
from switchyard.schemas import batches as b
from switchyard.schemas.scheduling import LEASE_ENCODER, FeederLease
from switchyard.workers.batch.service import BatchRunner
from tests.stacks import Stack, batch_config, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LINES = 24
MODEL = "lease-bulk"
SERVICES = ["secrets", "control", "accounting", "head", "modelproxy", "tail"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def leased(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = batch_config(upstream.base_url)
    extra["routes"][MODEL] = {"deployments": [{"provider": "fake", "model": "slow:300"}]}
    stack = await start_stack(tmp_path_factory.mktemp("leased"), extra, SERVICES)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


class Runners:
    """Runners started here (each on its own connection), all stopped at the end."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._started: list[tuple[BatchRunner, Any]] = []
        self.metrics: dict[str, Metrics] = {}  # each runner's, by name

    async def new(self, name: str, in_flight: int = 0, **kwargs: Any) -> BatchRunner:
        """A runner; ``in_flight``: its ``batch.max_in_flight`` (each line then goes out as one
        is answered, so a stop of the sending shows in the lines not sent)."""
        nc = await self._stack.connect("batch")
        settings = self._stack.settings
        if in_flight:
            limited = msgspec.structs.replace(settings.batch, max_in_flight=in_flight)
            settings = msgspec.structs.replace(settings, batch=limited)
        self.metrics[name] = Metrics("batch")
        runner = BatchRunner(nc, settings, Process(name, self.metrics[name]), **kwargs)
        self._started.append((runner, nc))
        return runner

    async def stop(self, runner: BatchRunner, grace: float = 10.0) -> None:
        for i, (started, nc) in enumerate(self._started):
            if started is runner:
                del self._started[i]
                await runner.stop(grace)
                await nc.close()
                return

    async def close(self) -> None:
        for runner, _ in list(self._started):
            await self.stop(runner, grace=1.0)


@pytest_asyncio.fixture(loop_scope="session")
async def runners(leased: Stack) -> AsyncIterator[Runners]:
    made = Runners(leased)
    try:
        yield made
    finally:
        await made.close()


def _input(tag: str, lines: int = LINES) -> bytes:
    rows = [
        {
            "custom_id": f"{tag}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": f"{tag} {i}"}]},
        }
        for i in range(lines)
    ]
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


async def _create(stack: Stack, tag: str, lines: int = LINES) -> tuple[openai.AsyncOpenAI, str]:
    key, _ = await stack.new_key(f"lease-{tag}")
    client = openai.AsyncOpenAI(base_url=stack.tail_url + "/v1", api_key=key, max_retries=2)
    file = await client.files.create(file=("in.jsonl", _input(tag, lines)), purpose="batch")
    batch = await client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return client, batch.id


async def _wait_for(
    client: openai.AsyncOpenAI, batch_id: str, done: set[str], timeout: float
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in done:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        await asyncio.sleep(0.3)


async def _holding(runner: BatchRunner, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not runner.leader.held():
            await asyncio.sleep(0.05)


def _calls_per_line(upstream: FakeOpenAI, tag: str, lines: int = LINES) -> dict[str, int]:
    """How often the provider was called for each line of batch ``tag`` (its text)."""
    wanted = {f"{tag} {i}" for i in range(lines)}
    counts = dict.fromkeys(sorted(wanted), 0)
    for call in list(upstream.calls):
        messages = call.body.get("messages") or []
        text = messages[-1].get("content") if messages else None
        if isinstance(text, str) and text in wanted:  # (other files' calls: any shape)
            counts[text] += 1
    return counts


async def test_two_runners_make_one_provider_call_per_line_and_the_batch_completes(
    leased: Stack, runners: Runners, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchyard.batch")
    first, second = await runners.new("batch-one"), await runners.new("batch-two")
    await asyncio.gather(first.start(), second.start())
    client, batch_id = await _create(leased, "twice")
    async with client:
        done = await _wait_for(client, batch_id, {"completed", "failed", "cancelled"}, 60)
    assert done.status == "completed", done.errors
    assert done.request_counts.completed == LINES
    await asyncio.sleep(1.0)  # (a second runner's late calls would have reached it by now)
    calls = _calls_per_line(upstream, "twice")
    assert calls == dict.fromkeys(calls, 1), {k: n for k, n in calls.items() if n != 1}
    said = [r.getMessage() for r in caplog.records if batch_id in r.getMessage()]
    assert not [m for m in said if "cancelled" in m], said


def _lease_held(runners: Runners, name: str) -> float | None:
    """The runner's ``switchyard_batch_runner_lease_held``, as a scrape shows it."""
    return runners.metrics[name].registry.get_sample_value("switchyard_batch_runner_lease_held")


async def test_a_runner_waits_for_a_lease_another_holds_until_it_lapses(
    leased: Stack, runners: Runners, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    # A runner that stopped renewing (killed, partitioned) left its lease: a minute more at
    # first (nothing may be sent however slow this machine is), then 1.5 s, timed. This
    # runner's lease is 3 s (renewal rounds 0.5 s), as in the handover test.
    nc = await leased.connect("batch")
    try:
        kv = await nc.jetstream(timeout=10).key_value(subjects.BATCHES_BUCKET)
        ghost = FeederLease("a-killed-runner", time.time() + 60.0)
        await kv.put(b.RUNNER_LEASE_KEY, LEASE_ENCODER.encode(ghost))
        runner = await runners.new("batch-waiting", lease_ttl=3.0)
        await runner.start()
        assert not runner.leader.holding
        client, batch_id = await _create(leased, "lapsed")
        async with client:
            await asyncio.sleep(1.0)
            assert sum(_calls_per_line(upstream, "lapsed").values()) == 0  # nothing sent yet
            assert not runner.leader.holding
            assert _lease_held(runners, "batch-waiting") == 0.0
            ghost = FeederLease("a-killed-runner", time.time() + 1.5)
            await kv.put(b.RUNNER_LEASE_KEY, LEASE_ENCODER.encode(ghost))
            await _holding(runner, 4.0)  # its 1.5 s, a renewal round (0.5 s), and slack
            assert time.time() >= ghost.until
            assert _lease_held(runners, "batch-waiting") == 1.0
            done = await _wait_for(client, batch_id, {"completed", "failed", "cancelled"}, 60)
    finally:
        await nc.close()
    assert done.status == "completed", done.errors
    assert set(_calls_per_line(upstream, "lapsed").values()) == {1}
    # A lease lasting a minute where this runner writes 3 s ones: a clock ahead, said once.
    ahead = [r for r in caplog.records if "check that the hosts' clocks agree" in r.getMessage()]
    assert len(ahead) == 1, [r.getMessage() for r in ahead]


async def test_stopping_the_holder_hands_the_batch_over_within_a_bound(
    leased: Stack, runners: Runners, upstream: FakeOpenAI
) -> None:
    # A 3 s lease: the old holder's renewals (every 0.5 s) keep it well inside its margin
    # while it finishes its lines; lapsing by itself would take 2.5 s or more after the stop.
    old = await runners.new("batch-old", lease_ttl=3.0)
    await old.start()
    assert old.leader.holding
    new = await runners.new("batch-new", lease_ttl=3.0)
    await new.start()
    assert not new.leader.holding
    client, batch_id = await _create(leased, "handover")
    async with client:
        async with asyncio.timeout(30):  # the old runner is half-way through
            while sum(_calls_per_line(upstream, "handover").values()) < LINES // 3:
                await asyncio.sleep(0.05)
        await runners.stop(old)  # its lines on the bus are answered first, then it lets go
        released = time.monotonic()
        await _holding(new, 5.0)  # one renewal round (0.5 s) after the release, and slack
        assert time.monotonic() - released < 2.0  # given up, not lapsed
        done = await _wait_for(client, batch_id, {"completed", "failed", "cancelled"}, 60)
    assert done.status == "completed", done.errors
    assert done.request_counts.completed == LINES
    calls = _calls_per_line(upstream, "handover")
    assert calls == dict.fromkeys(calls, 1), {k: n for k, n in calls.items() if n != 1}


async def test_a_batch_another_runner_completed_is_not_logged_as_cancelled(
    leased: Stack, runners: Runners, caplog: pytest.LogCaptureFixture
) -> None:
    # A runner that lost the lease (a partition) may still have lines out when the holder
    # completes the batch: here the record is completed under the runner's feet.
    caplog.set_level(logging.INFO, logger="switchyard.batch")
    runner = await runners.new("batch-behind")
    await runner.start()
    client, batch_id = await _create(leased, "elsewhere")
    async with client:
        await _wait_for(client, batch_id, {"in_progress"}, 30)
        record = runner._records.get(batch_id)
        assert record is not None
        now = int(time.time())

        def completed(r: b.BatchRecord) -> b.BatchRecord:
            batch = msgspec.structs.replace(r.batch, status="completed", completed_at=now)
            return msgspec.structs.replace(r, batch=batch)

        nc = await leased.connect("batch")
        try:
            await BatchStore(nc).update(batch_id, record.owner, completed)
        finally:
            await nc.close()
        async with asyncio.timeout(10):
            while not [r for r in caplog.records if "withdrew" in r.getMessage()]:
                await asyncio.sleep(0.1)
    said = [r.getMessage() for r in caplog.records if "withdrew" in r.getMessage()]
    assert said == [f"batch {batch_id} completed elsewhere: " + said[0].split(": ", 1)[1]]


async def test_one_renewal_that_times_out_neither_stops_nor_restarts_a_batch(
    leased: Stack, runners: Runners, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    # A renewal whose KV write times out (the bucket's leader failing over) left the lease
    # "not held" for a second while the runner still held it: every line in flight stopped the
    # batch's pass, and the batch was run again from a second pass.
    caplog.set_level(logging.INFO, logger="switchyard.batch")
    ttl, lines = 3.0, 4 * LINES
    runner = await runners.new("batch-slow-renewal", in_flight=4, lease_ttl=ttl)
    await runner.start()
    assert runner.leader.holding
    lease = runner.leader._lease
    assert lease is not None
    kv = lease._kv
    real_update = kv.update
    failed: list[float] = []

    async def update_timing_out_once(*args: Any, **kwargs: Any) -> int:
        if not failed:  # as a write to a failing-over bucket: its timeout, then the error
            failed.append(time.monotonic())
            await asyncio.sleep(ttl / 3)
            raise nats.errors.TimeoutError
        return await real_update(*args, **kwargs)

    client, batch_id = await _create(leased, "renewal", lines)
    async with client:
        async with asyncio.timeout(30):  # well into the batch
            while sum(_calls_per_line(upstream, "renewal", lines).values()) < lines // 4:
                await asyncio.sleep(0.05)
        kv.update = update_timing_out_once  # type: ignore[method-assign]
        done = await _wait_for(client, batch_id, {"completed", "failed", "cancelled"}, 90)
    assert failed, "no renewal was made to fail"
    assert done.status == "completed", done.errors
    assert done.request_counts.completed == lines
    assert runner.leader.holding
    calls = _calls_per_line(upstream, "renewal", lines)
    assert calls == dict.fromkeys(calls, 1), {k: n for k, n in calls.items() if n != 1}
    record = runner._records.get(batch_id)
    assert record is not None
    assert record.generation == 1, "the batch was run again from a second pass"
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "lost the batch runner lease" in m], said


async def test_a_runner_cut_off_from_its_lease_hands_the_batch_over(
    leased: Stack, runners: Runners, upstream: FakeOpenAI
) -> None:
    # The holder is cut off from its lease (every renewal's write times out, as in a
    # partition) with most of a batch's lines queued at the deployment (4 run at a time).
    # A standby takes over and completes the batch; the old holder's lines on the bus run
    # and are recorded, and those whose answer was not yet recorded are sent again.
    ttl, lines = 3.0, 2 * LINES
    holder = await runners.new("batch-cut-off", lease_ttl=ttl)
    await holder.start()
    assert holder.leader.holding
    standby = await runners.new("batch-standby", lease_ttl=ttl)
    await standby.start()
    assert not standby.leader.holding
    lease = holder.leader._lease
    assert lease is not None
    kv = lease._kv

    async def update_timing_out(*args: Any, **kwargs: Any) -> int:
        await asyncio.sleep(ttl / 3)
        raise nats.errors.TimeoutError

    # It writes no batch's counts once it lost the lease (the new holder does).
    unheld_writes: list[str] = []
    real_store_update = holder.store.update

    async def store_update(batch_id: str, *args: Any, **kwargs: Any) -> Any:
        if not holder.leader.holding:
            unheld_writes.append(batch_id)
        return await real_store_update(batch_id, *args, **kwargs)

    holder.store.update = store_update  # type: ignore[method-assign]
    client, batch_id = await _create(leased, "cut-off", lines)
    async with client:
        async with asyncio.timeout(30):
            while sum(_calls_per_line(upstream, "cut-off", lines).values()) < 4:
                await asyncio.sleep(0.05)
        kv.update = update_timing_out  # type: ignore[method-assign]
        await _holding(standby, 10.0)
        assert not holder.leader.held()
        done = await _wait_for(client, batch_id, {"completed", "failed", "cancelled"}, 90)
    assert done.status == "completed", done.errors
    assert done.request_counts.completed == lines
    calls = _calls_per_line(upstream, "cut-off", lines)
    assert set(calls.values()) <= {1, 2}, calls  # (at most once by each runner)
    assert unheld_writes == []


async def test_a_lone_runner_that_loses_its_lease_in_a_blip_sends_no_line_twice(
    leased: Stack, runners: Runners, upstream: FakeOpenAI
) -> None:
    # The one runner deployed cannot renew for ~4 s (a NATS blip): its 1 s margin runs out
    # and it loses the lease, then takes it back. Withdrawing its lines on the loss stopped
    # the provider calls already made (billed) and sent them again from the next pass.
    ttl, lines = 3.0, 2 * LINES
    runner = await runners.new("batch-alone", lease_ttl=ttl)
    await runner.start()
    assert runner.leader.held()
    lease = runner.leader._lease
    assert lease is not None
    kv = lease._kv
    real_update = kv.update
    blip_ends = float("inf")

    async def update_in_a_blip(*args: Any, **kwargs: Any) -> int:
        if time.monotonic() < blip_ends:
            await asyncio.sleep(ttl / 6)
            raise nats.errors.TimeoutError
        return await real_update(*args, **kwargs)

    client, batch_id = await _create(leased, "blip", lines)
    async with client:
        async with asyncio.timeout(30):
            while sum(_calls_per_line(upstream, "blip", lines).values()) < 8:
                await asyncio.sleep(0.05)
        blip_ends = time.monotonic() + 4.0
        kv.update = update_in_a_blip  # type: ignore[method-assign]
        async with asyncio.timeout(10):
            while runner.leader.holding:
                await asyncio.sleep(0.05)
        await _holding(runner, 10.0)  # taken back once the blip is over
        done = await _wait_for(client, batch_id, {"completed", "failed", "cancelled"}, 90)
    assert done.status == "completed", done.errors
    assert done.request_counts.completed == lines
    await asyncio.sleep(1.0)  # (a line sent again late would have reached it by now)
    calls = _calls_per_line(upstream, "blip", lines)
    assert calls == dict.fromkeys(calls, 1), {k: n for k, n in calls.items() if n != 1}


async def test_a_slow_bucket_lookup_does_not_fail_the_start(
    leased: Stack, runners: Runners, upstream: FakeOpenAI
) -> None:
    # Opening sy_batches reads its stream's info. That request had the lease's sixth as its
    # timeout (0.25 s for a 1.5 s lease, 1 s for the default): one slower reply made
    # runner.start() raise. Here every stream-info reply comes 0.5 s late.
    runner = await runners.new("batch-slow-lookup", lease_ttl=1.5)
    nc = runner.leader._nc
    real_request = nc.request

    async def request(subject: str, payload: bytes = b"", timeout: float = 0.5, **kw: Any) -> Any:
        async with asyncio.timeout(timeout):
            try:
                if ".STREAM.INFO." in subject:
                    await asyncio.sleep(0.5)
                return await real_request(subject, payload, timeout=timeout, **kw)
            except TimeoutError:
                raise nats.errors.TimeoutError from None

    nc.request = request  # type: ignore[method-assign,assignment]
    await runner.start()
    await _holding(runner, 5.0)
    client, batch_id = await _create(leased, "slow-lookup")
    async with client:
        done = await _wait_for(client, batch_id, {"completed", "failed", "cancelled"}, 60)
    assert done.status == "completed", done.errors
    calls = _calls_per_line(upstream, "slow-lookup")
    assert calls == dict.fromkeys(calls, 1), {k: n for k, n in calls.items() if n != 1}


async def test_a_round_that_fails_unforeseen_is_not_a_renewal(
    leased: Stack, runners: Runners
) -> None:
    """A lease round that raised anything but a timeout left ``holding`` true past the
    lease: every line then waited in ``wait_held`` for ever (and the gauge read 1)."""
    runner = await runners.new("batch-odd-round", lease_ttl=3.0)
    await runner.start()
    assert runner.leader.held()
    lease = runner.leader._lease
    assert lease is not None
    real_renew = lease.renew
    fails_until = time.monotonic() + 4.0

    async def renew_that_fails(now: float | None = None) -> bool:
        if time.monotonic() < fails_until:
            raise RuntimeError("a round that fails unforeseen")
        return await real_renew(now)

    lease.renew = renew_that_fails  # type: ignore[method-assign]
    async with asyncio.timeout(10):
        while runner.leader.holding:  # lost once its own lease ran out
            await asyncio.sleep(0.05)
    await _holding(runner, 10.0)  # and taken back once rounds work again
