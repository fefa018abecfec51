"""Client keys, limits and budgets that hold across ingress replicas, and exact accounting."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import httpx2
import msgspec
import openai
import pytest
import pytest_asyncio
import redis.exceptions

from switchyard.admin.keys import KeyAdmin, KeyNotFound
from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.client import LLMClient
from switchyard.errors import AuthenticationFailed, PermissionDenied
from switchyard.limits import addresses
from switchyard.limits import keys as rk
from switchyard.limits.addresses import Resolve
from switchyard.limits.credentials import read_password
from switchyard.limits.limiter import MAX_CARRIED, Limiter
from switchyard.limits.resp import RedisReplyError, RedisUnavailable, ScriptClient
from switchyard.limits.store import connect_redis
from switchyard.schemas.events import USAGE_BATCH_ENCODER, UsageBatch, UsageEvent
from switchyard.schemas.keys import ClientKey, hash_key, new_key_id, record_name
from switchyard.stack import local
from switchyard.stack.process import ManagedProcess
from tests.stacks import start_stack
from tests.support import day_totals, free_port
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRICES = {
    "gpt-4o": {"input_per_token": 0.000001, "output_per_token": 0.000002},
    "gpt-4o-mini": {"input_per_token": 0.0000005, "output_per_token": 0.000001},
    "pricey": {"input_per_token": 0.001, "output_per_token": 0.001},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def limited(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[dict[str, Any]]:
    fake = {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 256}
    routes: dict[str, Any] = {
        alias: {"deployments": [{"provider": "fake", "model": f"echo:{alias}", "price": price}]}
        for alias, price in PRICES.items()
    }
    # Answers after 3 s: a burst is admitted (or refused) before any of it settles.
    routes["held-mini"] = {
        "deployments": [{"provider": "fake", "model": "slow:3000", "price": PRICES["gpt-4o-mini"]}]
    }
    routes["held-pricey"] = {
        "deployments": [{"provider": "fake", "model": "slow:2000", "price": PRICES["pricey"]}]
    }
    stack = await start_stack(
        tmp_path_factory.mktemp("limits"), {"providers": {"fake": fake}, "routes": routes}
    )
    # A third edge: a second tail on its own port, same settings otherwise.
    port = free_port()
    env = {
        **local.child_env(stack.settings, stack.config_file, {}),
        "SWITCHYARD_INGRESS__TAIL__PORT": str(port),
    }
    step = local.components(stack.settings, env, [local.ComponentSpec("tail", http_port=port)])[0]
    step.spec.name = "tail-2"
    tail2 = ManagedProcess(step.spec, stack.home.logs)
    await tail2.start()
    assert await tail2.wait_healthy(60), tail2.tail_log()
    try:
        yield {
            "stack": stack,
            "edges": [stack.tail_url, stack.gateway_url, f"http://127.0.0.1:{port}"],
        }
    finally:
        await tail2.stop(10)
        await stack.supervisor.stop()


def _body(model: str, text: str | list[dict[str, Any]] = "hello there", **extra: Any) -> bytes:
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    ).encode()


async def _post(http: httpx.AsyncClient, edge: str, key: str, body: bytes) -> httpx.Response:
    return await http.post(
        f"{edge}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )


async def _new_key(limited: dict[str, Any], **fields: Any) -> tuple[str, str]:
    """A new key, once every edge knows it (each follows the key bucket: an edge a loaded
    machine kept from reading its watch would refuse the test's first requests with 401)."""
    stack, edges = limited["stack"], limited["edges"]
    resp = await stack.admin("POST", "/keys", {"name": "test", **fields})
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    await asyncio.sleep(0.2)  # the watches take milliseconds: a slow edge alone is asked twice
    auth = {"Authorization": f"Bearer {doc['key']}"}
    async with httpx.AsyncClient(timeout=10) as http:
        for edge in edges:  # (listing models counts against no limit of the key)
            deadline = time.monotonic() + 10
            # Until 200, every 0.5 s: each 401 counts against this address (20 a minute, then
            # 429 for a minute), so a slow edge must not be asked faster than that allows.
            while (got := await http.get(f"{edge}/v1/models", headers=auth)).status_code != 200:
                assert got.status_code in (401, 503), got.text
                assert time.monotonic() < deadline, f"{edge} never learned the new key"
                await asyncio.sleep(0.5)
    return doc["key"], doc["record"]["id"]


async def test_rpm_is_shared_exactly_across_three_replicas(limited: dict[str, Any]) -> None:
    edges = limited["edges"]
    key, _ = await _new_key(limited, rpm=60)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=300)) as http:
        results = await asyncio.gather(
            *(_post(http, edges[i % 3], key, _body("gpt-4o")) for i in range(200))
        )
    codes = [r.status_code for r in results]
    assert codes.count(200) == 60, codes
    assert codes.count(429) == 140
    refused = next(r for r in results if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "60"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    ok = next(r for r in results if r.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == "60"


async def test_tpm_is_shared_within_one_request(
    limited: dict[str, Any], upstream: FakeOpenAI
) -> None:
    edges = limited["edges"]
    # A provider that takes 3 s: no admitted request settles (and frees room) during the burst.
    body = _body("held-mini", "count my tokens " * 10)
    estimate = len(body) // 4
    tpm = estimate * 12 + estimate // 2
    key, _ = await _new_key(limited, tpm=tpm)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=300)) as http:
        results = await asyncio.gather(*(_post(http, edges[i % 3], key, body) for i in range(80)))
    admitted = [r for r in results if r.status_code == 200]
    assert all(r.status_code in (200, 429) for r in results)
    # The burst is admitted on estimates: within one request's tokens of the limit, across all
    # three edges together (12 x estimate <= tpm < 13 x estimate).
    assert len(admitted) * estimate <= tpm < (len(admitted) + 1) * estimate, len(admitted)
    refused = next(r for r in results if r.status_code == 429)
    assert refused.headers["x-ratelimit-limit-tokens"] == str(tpm)
    # Afterwards the estimates are replaced by the tokens actually used (fewer here), which
    # frees room for more requests within the same minute.
    used = sum(r.json()["usage"]["total_tokens"] for r in admitted)
    assert used < len(admitted) * estimate
    await asyncio.sleep(0.3)
    async with httpx.AsyncClient(timeout=30) as http:
        again = await _post(http, edges[0], key, body)
    assert again.status_code == 200, again.text


async def test_revocation_reaches_every_replica_within_a_second(limited: dict[str, Any]) -> None:
    stack, edges = limited["stack"], limited["edges"]
    key, key_id = await _new_key(limited)
    async with httpx.AsyncClient(timeout=10) as http:
        for edge in edges:
            assert (await _post(http, edge, key, _body("gpt-4o"))).status_code == 200
        revoked = await stack.admin("POST", f"/keys/{key_id}/revoke")
        assert revoked.status_code == 200
        began = time.monotonic()
        pending = list(edges)
        while pending:
            # The edges are asked at once: a round costs one request, where three in a row
            # (each a whole provider round trip while accepted) can take most of the second
            # on a loaded machine, a second meant for the revocation to spread.
            answers = await asyncio.gather(
                *(_post(http, edge, key, _body("gpt-4o")) for edge in pending)
            )
            for edge, resp in zip(list(pending), answers, strict=True):
                if resp.status_code == 401:
                    assert resp.json()["error"]["code"] == "api_key_revoked"
                    pending.remove(edge)
            assert time.monotonic() - began < 1.0, f"still accepted by {pending}"
        took = time.monotonic() - began
    assert took < 1.0


async def test_budget_is_refused_after_the_crossing_request_and_resets(
    limited: dict[str, Any],
) -> None:
    stack, edges = limited["stack"], limited["edges"]
    period = 8
    key, key_id = await _new_key(limited, budget_usd=0.01, budget_period=str(period))
    while time.time() % period > 1.0:  # start near the beginning of a budget window
        await asyncio.sleep(0.1)
    async with httpx.AsyncClient(timeout=10) as http:
        # Each request costs $0.009 (9 tokens at $0.001): the 2nd crosses $0.01.
        assert (await _post(http, edges[0], key, _body("pricey", "hi"))).status_code == 200
        await asyncio.sleep(0.3)
        assert (await _post(http, edges[1], key, _body("pricey", "hi"))).status_code == 200
        refused = None
        for _ in range(20):
            await asyncio.sleep(0.1)
            resp = await _post(http, edges[2], key, _body("pricey", "hi"))
            if resp.status_code == 429:
                refused = resp
                break
        assert refused is not None, "the budget was never enforced"
        error = refused.json()["error"]
        assert error["type"] == "insufficient_quota"
        assert error["code"] == "budget_exceeded"
        assert 1 <= int(refused.headers["retry-after"]) <= period
        assert "x-should-retry" not in refused.headers  # back within seconds: SDKs wait
        # The reset named is the period's end, not the second before it.
        resets = dt.datetime.fromisoformat(error["message"].rsplit("it resets at ", 1)[1])
        assert resets.timestamp() % period == 0, error["message"]
        shown = (await stack.admin("GET", f"/keys/{key_id}")).json()["spend"]
        assert shown["period_spend_usd"] >= 0.018
        # After the period resets, the key works again.
        await asyncio.sleep(period - time.time() % period + 0.3)
        assert (await _post(http, edges[0], key, _body("pricey", "hi"))).status_code == 200


async def test_a_burst_sent_at_once_stops_at_the_budget(limited: dict[str, Any]) -> None:
    """Requests in flight hold their estimated cost: 50 sent at once on a key whose budget is
    worth ~5 requests were all answered (10x the budget), since spend lands only as each
    answer ends. Now they stop within one request of it, and their holds free as they end."""
    stack, edges = limited["stack"], limited["edges"]
    cost = 9 * rk.NANO // 1000  # "hi": 7 + 2 tokens at $0.001, $0.009 a request
    budget = 0.05  # 5.5 requests
    key, key_id = await _new_key(limited, budget_usd=budget, budget_period="total")
    ops = connect_redis(stack.settings, "ops")
    try:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as http:
            # One answer first: accounting learns what a request of this key and model costs.
            assert (await _post(http, edges[0], key, _body("held-pricey", "hi"))).status_code == 200
            deadline = time.monotonic() + 10
            while await ops.hget(rk.estimates(key_id), "held-pricey") is None:
                assert time.monotonic() < deadline, "accounting never learnt the cost"
                await asyncio.sleep(0.1)
            assert int(await ops.hget(rk.estimates(key_id), "held-pricey") or 0) == cost
            burst = _body("held-pricey", "hi")
            results = await asyncio.gather(
                *(_post(http, edges[i % 3], key, burst) for i in range(50))
            )
        codes = [r.status_code for r in results]
        assert set(codes) == {200, 429}, codes
        # Admitted while spend + holds < budget: 1 + 4 x 0.009 < 0.05 <= 1 + 5 x 0.009.
        answered = 1 + codes.count(200)
        assert answered <= int(budget * rk.NANO) // cost + 1, codes
        refused = next(r for r in results if r.status_code == 429)
        error = refused.json()["error"]
        assert error["code"] == "budget_exceeded"
        assert error["type"] == "insufficient_quota"
        assert "still running" in error["message"], error["message"]
        assert "held ~$" in error["message"], error["message"]
        assert refused.headers["retry-after"] == "1"  # a total budget, but they end soon
        assert "x-should-retry" not in refused.headers  # a retry in a second may pass
        deadline = time.monotonic() + 10
        while True:  # every answer billed
            shown = (await stack.admin("GET", f"/keys/{key_id}")).json()["spend"]
            billed = round(shown["total_spend_usd"] * rk.NANO)
            if billed == answered * cost or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert billed == answered * cost
        assert billed <= budget * rk.NANO + cost
        # The holds were freed as the requests ended.
        deadline = time.monotonic() + 5
        while int(await ops.hget(rk.holds(key_id), "_sum") or 0) != 0:
            assert time.monotonic() < deadline, await ops.hgetall(rk.holds(key_id))
            await asyncio.sleep(0.1)
    finally:
        await ops.aclose()


async def test_a_request_larger_than_the_whole_tpm_says_waiting_will_not_help(
    limited: dict[str, Any],
) -> None:
    """Its 429 carried ``Retry-After: 60``: the OpenAI SDKs waited it out twice (two minutes)
    before raising, for a request that can never run on the key."""
    edges = limited["edges"]
    key, _ = await _new_key(limited, tpm=100)
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await _post(http, edges[0], key, _body("gpt-4o", "word " * 600))
        assert refused.status_code == 429, refused.text
        small = await _post(http, edges[1], key, _body("gpt-4o", "hi"))
    error = refused.json()["error"]
    assert error["code"] == "request_too_large"
    assert "however long you wait" in error["message"], error["message"]
    assert "retry-after" not in refused.headers, refused.headers
    # Without it the OpenAI SDK sent the request 3 times (each counted against the key's rpm).
    assert refused.headers["x-should-retry"] == "false", refused.headers
    assert refused.headers["x-ratelimit-remaining-tokens"] == "100"  # it took nothing
    assert small.status_code == 200, small.text
    sent: list[httpx2.Request] = []

    async def count(request: httpx2.Request) -> None:
        sent.append(request)

    hooks = {"request": [count]}
    async with httpx2.AsyncClient(timeout=10, event_hooks=hooks) as sdk_http:  # (its httpx)
        sdk = openai.AsyncOpenAI(
            api_key=key, base_url=f"{edges[0]}/v1", max_retries=2, http_client=sdk_http
        )
        with pytest.raises(openai.RateLimitError) as raised:
            await sdk.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "word " * 600}]
            )
    assert raised.value.code == "request_too_large"
    assert len(sent) == 1, "the OpenAI SDK retried a request that can never run"


async def test_an_inline_image_counts_as_an_image_not_as_its_bytes(
    limited: dict[str, Any],
) -> None:
    """A 100 KiB image was ~25,600 tokens by its bytes: 429 ``request_too_large`` for ever on a
    key of 20,000 tokens a minute, where a provider bills it at most ~1,100."""
    edges = limited["edges"]
    key, _ = await _new_key(limited, tpm=20000)
    image = base64.b64encode(os.urandom(100 * 1024)).decode()
    content: list[dict[str, Any]] = [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
    ]
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await _post(http, edges[0], key, _body("gpt-4o", content, max_tokens=300))
    assert resp.status_code == 200, resp.text
    # It holds its prompt (the image at 1,000) and its answer's cap, until its usage settles.
    left = int(resp.headers["x-ratelimit-remaining-tokens"])
    assert 20000 - 1400 <= left <= 20000 - 1300, left


async def test_an_image_in_base64_lines_counts_as_an_image(limited: dict[str, Any]) -> None:
    """Base64 wrapped at 76 characters (``base64 photo.jpg`` in a shell, Python's
    ``base64.encodebytes``) counted as text: a 400 KB image ~102,000 tokens, a 429
    ``request_too_large`` for good on a key of 20,000 tokens a minute."""
    edges = limited["edges"]
    key, _ = await _new_key(limited, tpm=20000)
    image = base64.encodebytes(os.urandom(300 * 1024)).decode()
    content: list[dict[str, Any]] = [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{image}"}},
    ]
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await _post(http, edges[1], key, _body("gpt-4o", content, max_tokens=300))
    assert resp.status_code == 200, resp.text
    left = int(resp.headers["x-ratelimit-remaining-tokens"])
    assert 20000 - 1400 <= left <= 20000 - 1300, left


async def test_pre_tokenized_embedding_input_counts_one_token_an_id(
    limited: dict[str, Any],
) -> None:
    """LangChain's OpenAIEmbeddings sends token ids: 20 lists of 700, counted at 4 bytes a
    token, were ~24,000 tokens, a 429 ``request_too_large`` for good on a key of 20,000."""
    edges = limited["edges"]
    key, _ = await _new_key(limited, tpm=20000)
    ids = [[(i * 7919 + j * 104729) % 100000 for j in range(700)] for i in range(20)]
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(
            f"{edges[0]}/v1/embeddings",
            json={"model": "gpt-4o", "input": ids},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert resp.status_code == 200, resp.text
    # Admitted on its 14,000 ids and the few bytes around them.
    left = int(resp.headers["x-ratelimit-remaining-tokens"])
    assert 20000 - 14020 <= left <= 20000 - 14000, left


async def test_a_tiny_total_budget_is_enforced_and_says_waiting_will_not_help(
    limited: dict[str, Any],
) -> None:
    """A budget under a nano-dollar rounded to 0, which means none: every request passed. A
    spent ``total`` budget never resets, but its 429 said "resets at <now>" with
    ``Retry-After: 1``, so a client honouring it retried every second forever."""
    stack, edges = limited["stack"], limited["edges"]
    key, key_id = await _new_key(limited, budget_usd=1e-10, budget_period="total")
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await _post(http, edges[0], key, _body("pricey", "hi"))).status_code == 200
        refused = None
        for _ in range(50):  # once the first request's spend is counted
            await asyncio.sleep(0.1)
            resp = await _post(http, edges[1], key, _body("pricey", "hi"))
            if resp.status_code == 429:
                refused = resp
                break
        assert refused is not None, "a budget under a nano-dollar was never enforced"
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "retry-after" not in refused.headers, refused.headers
    assert refused.headers["x-should-retry"] == "false", refused.headers  # the SDKs retried
    assert "does not reset" in error["message"], error["message"]
    assert "per total period" not in error["message"]
    shown = (await stack.admin("GET", f"/keys/{key_id}")).json()["spend"]
    assert shown["period_resets_at"] is None


async def _stream_chunks(
    http: httpx.AsyncClient, edge: str, key: str, body: bytes
) -> list[dict[str, Any]]:
    """The JSON chunks of a streamed chat completion."""
    async with http.stream(
        "POST",
        f"{edge}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {key}"},
    ) as resp:
        return [
            json.loads(line[6:]) async for line in resp.aiter_lines() if line.startswith("data: {")
        ]


async def test_forged_key_headers_cannot_unlock_a_model(limited: dict[str, Any]) -> None:
    stack = limited["stack"]
    restricted, _ = await _new_key(limited, models=["gpt-4o-mini"])
    _, open_id = await _new_key(limited)
    open_record = (await stack.admin("GET", f"/keys/{open_id}")).json()
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await _post(http, stack.tail_url, restricted, _body("gpt-4o"))
        assert resp.status_code == 403
        assert (
            await _post(http, stack.tail_url, restricted, _body("gpt-4o-mini"))
        ).status_code == 200
        models = (
            await http.get(
                f"{stack.tail_url}/v1/models", headers={"Authorization": f"Bearer {restricted}"}
            )
        ).json()
        assert [m["id"] for m in models["data"]] == ["gpt-4o-mini"]
    body = _body("gpt-4o")
    forged = {h.KEY_ID: open_id, h.KEY_HASH: "0" * 64, h.TENANT: open_record["team"]}
    # An internal client presenting the restricted key, with forged identity headers.
    app = await stack.connect("app")
    try:
        async with LLMClient(app, api_key=restricted) as llm:
            with pytest.raises(PermissionDenied):
                await llm.request(subjects.CHAT, body, forged)
        async with LLMClient(app) as anonymous:
            with pytest.raises(AuthenticationFailed):
                await anonymous.request(subjects.CHAT, body, forged)
    finally:
        await app.close()
    # Even an edge identity (as if a tail were compromised) cannot use the key for gpt-4o:
    # the head looks the key up itself.
    tail = await stack.connect("tail")
    try:
        async with LLMClient(tail) as llm:
            with pytest.raises(PermissionDenied):
                await llm.request(
                    subjects.CHAT, body, {h.KEY_ID: "key_forged", h.KEY_HASH: hash_key(restricted)}
                )
    finally:
        await tail.close()


async def test_spend_per_key_and_model_is_exact(
    limited: dict[str, Any], upstream: FakeOpenAI
) -> None:
    stack, edges = limited["stack"], limited["edges"]
    key, key_id = await _new_key(limited)
    expected_nano = 0
    per_model: dict[str, int] = {}

    def add(model: str, prompt: int, completion: int) -> None:
        nonlocal expected_nano
        price = PRICES[model]
        cost = round(
            (prompt * price["input_per_token"] + completion * price["output_per_token"]) * rk.NANO
        )
        expected_nano += cost
        per_model[model] = per_model.get(model, 0) + cost

    async with httpx.AsyncClient(timeout=30) as http:
        for i in range(3):
            resp = await _post(http, edges[i % 3], key, _body("gpt-4o", "one two three"))
            usage = resp.json()["usage"]
            add("gpt-4o", usage["prompt_tokens"], usage["completion_tokens"])
        for i in range(2):
            body = _body(
                "gpt-4o-mini",
                "stream me please",
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = await _stream_chunks(http, edges[i], key, body)
            usage = chunks[-1]["usage"]
            add("gpt-4o-mini", usage["prompt_tokens"], usage["completion_tokens"])
        # A stream without include_usage is still counted (Switchyard asks upstream itself).
        body = _body("gpt-4o", "quiet stream", stream=True)
        chunks = await _stream_chunks(http, edges[2], key, body)
        assert all("usage" not in c or c["usage"] is None for c in chunks)
        add("gpt-4o", 7, 3)  # the fake answers "echo: quiet stream": 3 words
    deadline = time.monotonic() + 10
    while True:
        shown = (await stack.admin("GET", f"/keys/{key_id}")).json()["spend"]
        if (
            round(shown["total_spend_usd"] * rk.NANO) == expected_nano
            or time.monotonic() > deadline
        ):
            break
        await asyncio.sleep(0.2)
    assert round(shown["total_spend_usd"] * rk.NANO) == expected_nano
    assert round(shown["total_spend_usd"], 2) == round(expected_nano / rk.NANO, 2)
    daily = (await stack.admin("GET", "/spend?days=2")).json()["days"]
    mine = day_totals(daily, "key", key_id)
    assert round(mine["cost_usd"] * rk.NANO) == expected_nano
    assert mine["requests"] == 6


async def test_limits_fail_closed_when_valkey_is_down(limited: dict[str, Any]) -> None:
    stack = limited["stack"]
    limited_key, _ = await _new_key(limited, rpm=1000)
    open_key, _ = await _new_key(limited)
    valkey = stack.process("valkey")
    await valkey.stop(5)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            began = time.monotonic()
            resp = await _post(http, stack.tail_url, limited_key, _body("gpt-4o"))
            took = time.monotonic() - began
            assert resp.status_code == 503
            assert resp.json()["error"]["code"] == "limits_unavailable"
            assert resp.headers["retry-after"] == "3"  # Valkey is back within seconds, usually
            assert took < 3.0  # a clear error, never a hang
            # Keys without limits never need Redis.
            assert (await _post(http, stack.tail_url, open_key, _body("gpt-4o"))).status_code == 200
    finally:
        await valkey.start()
        assert await valkey.wait_healthy(30)
    async with httpx.AsyncClient(timeout=10) as http:
        deadline = time.monotonic() + 10
        while (await _post(http, stack.tail_url, limited_key, _body("gpt-4o"))).status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.3)


def test_cli_creates_and_revokes_keys(limited: dict[str, Any]) -> None:
    import subprocess
    import sys

    stack = limited["stack"]
    run = [sys.executable, "-m", "switchyard", "--config", str(stack.config_file), "keys"]
    created = subprocess.run(
        [*run, "create", "cli-key", "--rpm", "5", "--models", "gpt-4o,gpt-4o-*", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(created.stdout)
    assert doc["key"].startswith("sk-sy-")
    assert doc["record"]["models"] == ["gpt-4o", "gpt-4o-*"]
    listed = subprocess.run([*run, "list", "--json"], capture_output=True, text=True, check=True)
    assert doc["key"] not in listed.stdout
    assert any(k["id"] == doc["record"]["id"] for k in json.loads(listed.stdout))
    subprocess.run(
        [*run, "revoke", doc["record"]["id"]], capture_output=True, text=True, check=True
    )
    shown = json.loads(
        subprocess.run(
            [*run, "show", doc["record"]["id"], "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert shown["disabled"] is True
    bad = subprocess.run(
        [*run, "create", "x", "--budget-period", "fortnightly"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0
    assert "budget period" in bad.stderr


async def test_every_settle_lands_even_beyond_what_one_admission_carries(
    limited: dict[str, Any],
) -> None:
    settings = limited["stack"].settings
    slots = MAX_CARRIED * 3
    key = ClientKey(id=new_key_id(), hash="0" * 64, name="settles", max_parallel=slots)
    limiter = Limiter(settings)
    tickets = [await limiter.admit(key, f"r{i}", 1) for i in range(slots)]
    for ticket in tickets:
        assert ticket is not None
        limiter.settle(ticket, None)  # all queued before any of them is sent
    await limiter.admit(key, "carrier", 1)  # carries the first MAX_CARRIED settles
    await limiter.close()  # sends whatever is still queued
    # Only "carrier" still holds a slot: every other one can be taken again.
    again = Limiter(settings)
    try:
        for i in range(slots - 1):
            assert await again.admit(key, f"again{i}", 1) is not None
    finally:
        await again.close()


def _sockets_to(port: int) -> int:
    """TCP connections this process holds to ``port``."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            mine.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table, encoding="ascii") as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and f"socket:[{fields[9]}]" in mine:
                    count += 1
    return count


async def test_refused_logins_leave_no_connection_open(limited: dict[str, Any]) -> None:
    settings = limited["stack"].settings
    port = urlsplit(settings.redis_url).port or 6379
    before = _sockets_to(port)
    client = ScriptClient(
        settings.redis_url, username="ingress", password="wrong-" + secrets.token_hex(8), timeout=5
    )
    for _ in range(20):
        with pytest.raises(RedisReplyError):
            await client.call("PING")
    await client.close()
    deadline = time.monotonic() + 10
    while _sockets_to(port) > before and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # transports close on the next loop iteration
    assert _sockets_to(port) == before


def _script_client(settings: Any, port: int | None, resolve: Resolve) -> ScriptClient:
    return ScriptClient(
        f"redis://valkey.example:{port}/0",
        username="ingress",
        password=read_password(settings.redis_password_dir, "ingress"),
        timeout=0.3,
        resolve=resolve,
    )


async def _refused(client: ScriptClient, match: str) -> None:
    with pytest.raises(RedisUnavailable, match=match):
        await client.call("PING")


async def test_a_slow_name_lookup_fails_calls_fast_and_its_address_is_kept(
    limited: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edge's Valkey client looks its host up outside the 0.5 s bound of a call.

    A container's DNS once took 10 s to answer; a lookup inside the bound failed every
    connection for as long as that lasted. Here the lookup answers only when the test says so.
    """
    settings = limited["stack"].settings
    port = urlsplit(settings.redis_url).port
    answers = asyncio.Queue[tuple[str, ...]]()
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> tuple[str, ...]:
        asked.append((host, port))
        return await answers.get()

    monkeypatch.setattr(addresses, "LOOK_AGAIN_S", 0.0)
    slow = r"looking up 'valkey\.example' takes long"
    client = _script_client(settings, port, resolve)
    try:
        for _ in range(3):  # each call gives up at its bound; the one lookup goes on
            await _refused(client, slow)
        # Calls that arrive together each fail at their own bound (0.3 s), not one after
        # another (ten in a row would take 3 s).
        started = time.monotonic()
        await asyncio.gather(*(_refused(client, slow) for _ in range(10)))
        assert time.monotonic() - started < 1.5
        assert asked == [("valkey.example", port)]
        # The lookup answers with an address where nothing listens (the server moved):
        # the connection fails and the name is looked up again.
        await answers.put(("127.0.0.2",))
        await _refused(client, "ConnectionRefusedError")
        for _ in range(100):  # the second lookup runs in its own task
            if len(asked) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(asked) == 2
        # Every address a lookup gives is tried in its order (IPv6 first on many hosts).
        await answers.put(("127.0.0.2", "127.0.0.1"))
        while not answers.empty():  # the lookup takes its answer and keeps it at once
            await asyncio.sleep(0.01)
        assert await client.call("PING") == b"PONG"
        for _ in range(5):  # connected: no more lookups
            assert await client.call("PING") == b"PONG"
        assert len(asked) == 2
    finally:
        await client.close()
    # Closing the client while a call waits for the first lookup: that call is told so.
    pending = _script_client(settings, port, resolve)
    waiting = asyncio.ensure_future(pending.call("PING"))
    await asyncio.sleep(0.1)
    await pending.close()
    with pytest.raises(RedisUnavailable, match="closed"):
        await waiting


async def test_the_pooled_client_looks_its_host_up_outside_the_connection_bound(
    limited: dict[str, Any],
) -> None:
    """The admin app's and accounting's redis-py client: the same slow lookup fails its calls
    within their bound, goes on, and its addresses serve every connection afterwards."""
    settings = limited["stack"].settings
    port = urlsplit(settings.redis_url).port
    url = f"redis://valkey.example:{port}/0"
    named = msgspec.structs.replace(
        settings, redis=msgspec.structs.replace(settings.redis, url=url)
    )
    answers = asyncio.Queue[tuple[str, ...]]()
    asked: list[str] = []

    async def resolve(host: str, port: int) -> tuple[str, ...]:
        asked.append(host)
        return await answers.get()

    client = connect_redis(named, "admin", resolve=resolve)
    try:
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(redis.exceptions.ConnectionError, match="takes long"):
                await client.ping()
            assert time.monotonic() - started < 2 * settings.redis.timeout_s + 0.5
        assert asked == ["valkey.example"]  # one lookup, still going
        await answers.put(("127.0.0.2", "127.0.0.1"))  # every address, in order
        while not answers.empty():
            await asyncio.sleep(0.01)
        assert await client.ping() is True
        assert await client.mget("sy:lookup-test-a", "sy:lookup-test-b") == [None, None]
        assert asked == ["valkey.example"]
    finally:
        await client.aclose()


async def test_concurrent_key_changes_all_apply_and_a_deleted_key_stays_deleted(
    limited: dict[str, Any],
) -> None:
    stack = limited["stack"]
    _, key_id = await _new_key(limited)
    nc = await stack.connect("admin")
    try:
        admin = KeyAdmin(nc.jetstream(timeout=10))
        await asyncio.gather(
            admin.update(key_id, rpm=5),
            admin.update(key_id, tpm=7),
            admin.update(key_id, max_parallel=3),
        )
        record = await admin.find(key_id)
        assert (record.rpm, record.tpm, record.max_parallel) == (5, 7, 3)
        deleted, updated = await asyncio.gather(
            admin.delete(key_id), admin.update(key_id, rpm=9), return_exceptions=True
        )
        assert deleted is None
        assert isinstance(updated, ClientKey | KeyNotFound), updated
        with pytest.raises(KeyNotFound):
            await admin.find(key_id)
        # Gone for good: the bucket keeps a marker, not the key's old records (its hash and
        # settings), which every edge's watch replayed at each start.
        bucket = await nc.jetstream(timeout=10).key_value(subjects.KEYS_BUCKET)
        history = await bucket.history(record_name(record.hash))
        assert [entry.operation for entry in history] == ["PURGE"]
        assert not history[0].value
    finally:
        await nc.close()


async def test_a_request_executed_twice_is_billed_once(limited: dict[str, Any]) -> None:
    """A NATS failover re-send or a redelivery runs a request again; its usage event has the
    same id (request and hop) in a new batch, and accounting counts it once."""
    stack = limited["stack"]
    _, key_id = await _new_key(limited)

    def event(event_id: str) -> UsageEvent:
        return UsageEvent(
            id=event_id,
            request_id=event_id.split(":", maxsplit=1)[0],
            ts=time.time(),
            op="chat",
            alias="gpt-4o",
            deployment="fake",
            provider="fake",
            model="echo",
            key_id=key_id,
            prompt_tokens=7,
            completion_tokens=3,
            total_tokens=10,
        )

    nc = await stack.connect("modelproxy")
    try:
        js = nc.jetstream(timeout=5)
        batches = [
            UsageBatch(id=f"b1-{key_id}", events=[event("r1:"), event("r2:")]),
            UsageBatch(id=f"b2-{key_id}", events=[event("r1:"), event("r3:")]),  # r1 again
            UsageBatch(id=f"b3-{key_id}", events=[event("r1:fake")]),  # r1's next hop
        ]
        for batch in batches:
            await js.publish(subjects.USAGE, USAGE_BATCH_ENCODER.encode(batch))
    finally:
        await nc.close()
    deadline = time.monotonic() + 10
    while True:
        daily = (await stack.admin("GET", "/spend?days=2")).json()["days"]
        mine: dict[str, Any] = day_totals(daily, "key", key_id)
        if mine.get("requests") == 4 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # and nothing more arrives
    daily = (await stack.admin("GET", "/spend?days=2")).json()["days"]
    mine = day_totals(daily, "key", key_id)
    assert (mine["requests"], mine["prompt_tokens"], mine["completion_tokens"]) == (4, 28, 12)


async def test_a_nats_caller_reusing_one_request_id_pays_for_every_request(
    limited: dict[str, Any],
) -> None:
    """Usage is billed once per request id; an internal client chooses its own ids, and one
    id reused for every request made them all one bill (free usage past the first)."""
    stack = limited["stack"]
    key, key_id = await _new_key(limited)
    app = await stack.connect("app")
    try:
        async with LLMClient(app, api_key=key) as llm:
            for _ in range(3):
                await llm.request(subjects.CHAT, _body("gpt-4o"), {h.REQUEST_ID: "same-id"})
    finally:
        await app.close()
    deadline = time.monotonic() + 10
    while True:
        daily = (await stack.admin("GET", "/spend?days=2")).json()["days"]
        mine: dict[str, Any] = day_totals(daily, "key", key_id)
        if mine.get("requests") == 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # and nothing more arrives
    daily = (await stack.admin("GET", "/spend?days=2")).json()["days"]
    assert day_totals(daily, "key", key_id)["requests"] == 3
