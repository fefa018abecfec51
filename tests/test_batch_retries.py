"""A batch line a provider fails is sent again, with longer and longer waits, a bounded number
of times: on a real stack.

A provider's 500 (the head's 502 ``all_deployments_failed``) or a provider down for a moment
no longer ends a line at once; a line the provider fails every time ends after
``retries.FAILED_TIMES`` attempts, one it refuses with 429 every time after
``retries.RATE_LIMITED_TIMES``; a client error stays the line's row at once.

Its own stack: ``batch.retry_base_s`` 0.02 s and deployments that cool down 0.2 s after a
failure, so the waits (0.02 s, 0.06 s, ... and at least the provider's ``Retry-After`` of 2 s
for a 429) fit a test. (At 0.05 s the 429 waits doubled past the 2 s from the seventh on, to
the 7.5 s bound: 29 s of the rate-limited test instead of ~20 s, asserting the same.)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from switchyard.workers.batch import retries
from tests.stacks import Stack, batch_config, start_stack
from tests.test_batch_runner_limits import _line, _rows, _start
from tests.test_batches import _client, _wait_for
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def retry_stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = batch_config(upstream.base_url)
    extra["routes"] = {
        "bulk": {"deployments": [{"provider": "fake", "model": "slow:50"}]},
        "flaky": {"deployments": [{"provider": "fake", "model": "flaky:7"}]},
        "broken": {"deployments": [{"provider": "fake", "model": "status:500"}]},
        "refused": {"deployments": [{"provider": "fake", "model": "status:400"}]},
        "limited": {"deployments": [{"provider": "fake", "model": "status:429"}]},
    }
    extra["routing"] = {"cooldown_s": 0.2}
    extra["batch"] |= {"retry_base_s": 0.02, "progress_s": 0.2}
    stack = await start_stack(tmp_path_factory.mktemp("retries"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def test_lines_a_provider_failed_for_a_moment_are_sent_again_and_succeed(
    retry_stack: Stack, upstream: FakeOpenAI
) -> None:
    """The provider fails its first 7 calls with 500: every line still ends answered, each
    billed once (before, the lines those calls were for were 502 rows)."""
    key, _ = await retry_stack.new_key("retry-flaky")
    async with _client(retry_stack, key) as client:
        batch = await _start(client, [_line(f"f-{i}", "flaky", f"n{i}") for i in range(8)])
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=60)
        assert done.status == "completed", done.errors
        assert (done.request_counts.completed, done.request_counts.failed) == (8, 0), await _rows(
            client, done.error_file_id
        )
        rows = await _rows(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in rows) == sorted(f"f-{i}" for i in range(8))
    assert len(upstream.calls_for("flaky:7")) == 8 + 7


async def test_a_line_failed_every_time_is_given_up_and_a_client_error_at_once(
    retry_stack: Stack, upstream: FakeOpenAI
) -> None:
    key, _ = await retry_stack.new_key("retry-broken")
    # (the fake provider serves the whole session: count only this test's calls)
    before = len(upstream.calls_for("status:500")), len(upstream.calls_for("status:400"))
    async with _client(retry_stack, key) as client:
        rows_in = [_line("broken", "broken"), _line("refused", "refused"), _line("ok", "bulk")]
        batch = await _start(client, rows_in)
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=60)
        assert done.status == "completed", done.errors
        assert (done.request_counts.completed, done.request_counts.failed) == (1, 2)
        errors = {r["custom_id"]: r for r in await _rows(client, done.error_file_id)}
    broken = errors["broken"]["response"]
    assert broken["status_code"] == 502
    assert f"failed {retries.FAILED_TIMES} times in a row" in broken["body"]["error"]["message"]
    # Sent FAILED_TIMES times (each attempt may be tried more than once by the head).
    calls = len(upstream.calls_for("status:500")) - before[0]
    assert calls >= retries.FAILED_TIMES, calls
    assert calls % retries.FAILED_TIMES == 0, calls
    assert errors["refused"]["response"]["status_code"] == 400
    assert len(upstream.calls_for("status:400")) - before[1] == 1  # a client error: not sent again


async def test_a_line_the_provider_rate_limits_every_time_is_given_up(
    retry_stack: Stack, upstream: FakeOpenAI
) -> None:
    """A line refused with 429 (``Retry-After: 2``) every time is an error row after
    ``RATE_LIMITED_TIMES`` attempts spaced at least that far apart, not re-sent every few
    seconds for the whole 24 h window; the other lines of its batch run meanwhile."""
    key, _ = await retry_stack.new_key("retry-limited")
    before = len(upstream.calls_for("status:429"))
    started = time.monotonic()
    async with _client(retry_stack, key) as client:
        batch = await _start(client, [_line("poison", "limited"), _line("ok", "bulk")])
        done = await _wait_for(client, batch.id, {"completed", "failed"}, timeout=90)
        took = time.monotonic() - started
        assert done.status == "completed", done.errors
        assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
        (row,) = await _rows(client, done.error_file_id)
    assert row["custom_id"] == "poison"
    assert row["response"]["status_code"] == 429
    error = row["response"]["body"]["error"]
    assert "rate limited every time" in error["message"], error
    assert f"{retries.RATE_LIMITED_TIMES} times" in error["message"], error
    calls = [c.at for c in upstream.calls_for("status:429")[before:]]
    assert len(calls) == retries.RATE_LIMITED_TIMES, len(calls)
    # The provider's Retry-After (2 s) is waited for between re-sends.
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert min(gaps) >= 1.9, gaps
    assert took >= 2 * (retries.RATE_LIMITED_TIMES - 1)
