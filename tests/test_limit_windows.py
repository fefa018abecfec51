"""The RPM and TPM windows on a real Valkey: what the reset headers and Retry-After promise.

Both limits are exact 60 s sliding windows over the key's request log. The log is written here
as the edges' admissions would have left it, seconds or tens of seconds ago, so a test needs
no minute of waiting: the ``ADMIT`` script reads it as it reads any edge's.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio

from switchyard.errors import RateLimited
from switchyard.limits import keys as rk
from switchyard.limits.limiter import Limiter
from switchyard.limits.store import connect_redis
from switchyard.schemas.keys import ClientKey, new_key_id
from tests.support import valkey_server, write_settings

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def valkey(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    settings, _ = write_settings(tmp_path_factory.mktemp("windows"))
    async with valkey_server(settings):
        ops = connect_redis(settings, "ops")
        limiter = Limiter(settings)
        try:
            yield {"ops": ops, "limiter": limiter}
        finally:
            await limiter.close()
            await ops.aclose()


def _key(**limits: Any) -> ClientKey:
    return ClientKey(id=new_key_id(), hash="0" * 64, name="windows", **limits)


async def _logged(
    ops: redis.asyncio.Redis, key: ClientKey, entries: Sequence[tuple[float, int]]
) -> None:
    """Requests admitted ``age`` seconds ago holding ``tokens`` each, as ADMIT logs them."""
    now = time.time()
    for i, (age, tokens) in enumerate(entries):
        member = f"past{i}"
        await ops.zadd(rk.requests(key.id), {member: int((now - age) * 1000)})
        await ops.hset(rk.tpm_tokens(key.id), member, tokens)
    await ops.hset(rk.tpm_tokens(key.id), "_sum", sum(tokens for _, tokens in entries))


def _seconds(text: bytes | str) -> float:
    """An OpenAI reset duration (``850ms``, ``1.5s``, ``6m0s``) in seconds."""
    value = text.decode() if isinstance(text, bytes) else text
    if value.endswith("ms"):
        return int(value[:-2]) / 1000
    found = re.fullmatch(r"(?:(\d+)m)?([\d.]+)s", value)
    assert found, value
    return int(found[1] or 0) * 60 + float(found[2])


def _header(headers: Any, name: str) -> bytes:
    return dict(headers)[name.encode()]


async def _refused(limiter: Limiter, key: ClientKey, estimate: int = 1) -> RateLimited:
    with pytest.raises(RateLimited) as refused:
        await limiter.admit(key, "probe", estimate)
    return refused.value


async def test_request_resets_say_when_the_window_is_empty_again(valkey: dict[str, Any]) -> None:
    ops, limiter = valkey["ops"], valkey["limiter"]
    # rpm 10, five requests 30 s ago: the sixth is admitted, and the window is whole again only
    # when that sixth leaves it, in 60 s (a bucket's "30 s" was wrong: at 30.5 s only the five
    # had left, and 5 of 10 parallel requests were refused).
    key = _key(rpm=10)
    await _logged(ops, key, [(30, 0)] * 5)
    ticket = await limiter.admit(key, "sixth", 1)
    assert ticket is not None
    assert _header(ticket.headers, "x-ratelimit-remaining-requests") == b"4"
    assert 59 <= _seconds(_header(ticket.headers, "x-ratelimit-reset-requests")) <= 60
    # Full: five from 50 s ago, five from 20 s ago. The first room comes in 10 s (Retry-After),
    # the whole window in 40 s (the reset), not the "1m0s" every refusal once said.
    full = _key(rpm=10)
    await _logged(ops, full, [(50, 0)] * 5 + [(20, 0)] * 5)
    refused = await _refused(limiter, full)
    assert refused.retry_after is not None
    assert 9 <= refused.retry_after <= 10.5
    assert _header(refused.headers, "x-ratelimit-remaining-requests") == b"0"
    assert 39 <= _seconds(_header(refused.headers, "x-ratelimit-reset-requests")) <= 40.5


async def test_token_resets_follow_the_newest_request_that_holds_tokens(
    valkey: dict[str, Any],
) -> None:
    ops, limiter = valkey["ops"], valkey["limiter"]
    # 280 of 300 tokens used (100 from 50 s ago, 180 from 20 s ago), and a token count 5 s ago
    # that holds none: the tokens are all back in 40 s, the requests in 55 s.
    key = _key(rpm=100, tpm=300)
    await _logged(ops, key, [(50, 100), (20, 180), (5, 0)])
    refused = await _refused(limiter, key, estimate=50)
    assert _header(refused.headers, "x-ratelimit-remaining-tokens") == b"20"
    assert 39 <= _seconds(_header(refused.headers, "x-ratelimit-reset-tokens")) <= 40.5
    assert 54 <= _seconds(_header(refused.headers, "x-ratelimit-reset-requests")) <= 55.5
    # Nothing in the window: nothing to wait for.
    empty = _key(rpm=100, tpm=300)
    await _logged(ops, empty, [(61, 100)])
    refused = await _refused(limiter, empty, estimate=301)  # larger than the whole tpm
    assert _header(refused.headers, "x-ratelimit-reset-tokens") == b"0ms"
    assert _header(refused.headers, "x-ratelimit-reset-requests") == b"0ms"


async def test_a_tpm_refusal_waits_until_enough_tokens_leave(valkey: dict[str, Any]) -> None:
    ops, limiter = valkey["ops"], valkey["limiter"]
    # 290 of 300 tokens used: 30 from 50 s ago, 100 from 40 s ago, 160 from 20 s ago. A request
    # of ~78 tokens needs 68 to leave: the oldest 30 are not enough (told 10 s, a client was
    # refused again), the 100 after them are, in 20 s.
    past = [(50.0, 30), (40.0, 100), (20.0, 160)]
    key = _key(tpm=300)
    await _logged(ops, key, past)
    refused = await _refused(limiter, key, estimate=78)
    assert refused.code == "rate_limit_exceeded"
    retry = refused.retry_after
    assert retry is not None
    assert 19 <= retry <= 20.5, retry
    # The same log a second short of that wait still refuses; just past it, admits.
    early = _key(tpm=300)
    await _logged(ops, early, [(age + retry - 1, tokens) for age, tokens in past])
    await _refused(limiter, early, estimate=78)
    late = _key(tpm=300)
    await _logged(ops, late, [(age + retry + 0.5, tokens) for age, tokens in past])
    assert await limiter.admit(late, "late", 78) is not None


async def test_a_request_that_ends_without_usage_keeps_only_its_prompt_in_the_window(
    valkey: dict[str, Any],
) -> None:
    """Admitted on its prompt plus its max_tokens, a request whose provider failed (or whose
    queue was full, or whose client left) kept the whole estimate for 60 s: an Anthropic
    client's `max_tokens: 32000` held 32,000 tokens per failure (reviewer)."""
    limiter: Limiter = valkey["limiter"]
    key = _key(tpm=1000)
    failed = await limiter.admit(key, "failed", 900, "m", prompt=100)
    assert failed is not None
    limiter.settle(failed, None)  # no usage came back
    deadline = time.monotonic() + 5
    while True:  # (the settle leaves within the settle delay, or with the next admission)
        try:
            assert await limiter.admit(key, "next", 800, "m") is not None
            break
        except RateLimited:
            assert time.monotonic() < deadline, "the failed request kept its answer's cap"
            await asyncio.sleep(0.05)
