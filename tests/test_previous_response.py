"""``previous_response_id`` continues only the caller's own key's responses (native Responses).

Every tenant reaches OpenAI with one provider key, so OpenAI would continue any response id it
is given. On the session stack, with a native (kind ``openai``) route to the fake upstream
added for this module: key A's answer (plain and streamed) is continued for A, while key B's
continuation of it, and one of an id never answered here, are refused 404 in OpenAI's shape
and never reach the provider. A key whose secret is rotated continues its own answers with
the new secret (a record names the key's id), an answer recorded before that (the secret's hash
alone) is still continued by that secret, and a record is one an older model-proxy (a rolling
upgrade, a rollback) reads as its secret's.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio

from switchyard.bus import subjects
from switchyard.schemas.keys import hash_key
from switchyard.workers.modelproxy.response_owners import KEY_ID
from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROVIDER = "prevresp-native"
ALIAS = "prevresp"
MODEL = "o-prevresp"  # the fake's calls for this module are told apart by it


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def native(stack: Stack, upstream: FakeOpenAI) -> AsyncIterator[str]:
    put = await stack.admin(
        "PUT", f"/providers/{PROVIDER}", {"kind": "openai", "api_base": upstream.base_url}
    )
    assert put.status_code in (200, 201), put.text
    route = {"deployments": [{"provider": PROVIDER, "model": MODEL}]}
    put = await stack.admin("PUT", f"/routes/{ALIAS}", route)
    assert put.status_code in (200, 201), put.text
    try:
        yield ALIAS
    finally:
        await stack.admin("DELETE", f"/routes/{ALIAS}")
        await stack.admin("DELETE", f"/providers/{PROVIDER}")


def _client(stack: Stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.tail_url}/v1", api_key=key, max_retries=0)


async def _create(client: openai.AsyncOpenAI, rid: str, **extra: Any) -> Any:
    """A new response named ``rid``; re-sent while a head has not seen the new alias (404)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await client.responses.create(
                model=ALIAS, input="remember 42", metadata={"response_id": rid}, **extra
            )
        except openai.NotFoundError:
            assert time.monotonic() < deadline, "the route never appeared"
            await asyncio.sleep(0.1)


async def _continued(client: openai.AsyncOpenAI, rid: str) -> Any:
    """``rid`` continued, once its owner is recorded (written just after the answer left)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await client.responses.create(
                model=ALIAS, input="what number?", previous_response_id=rid
            )
        except openai.NotFoundError:
            assert time.monotonic() < deadline, f"{rid} was never recorded for its key"
            await asyncio.sleep(0.1)


@pytest.mark.asyncio(loop_scope="session")
async def test_only_the_creating_key_continues_a_response(
    stack: Stack, upstream: FakeOpenAI, native: str
) -> None:
    key_a, _ = await stack.new_key("prevresp-a")
    key_b, _ = await stack.new_key("prevresp-b")
    a, b = _client(stack, key_a), _client(stack, key_b)
    try:
        plain, streamed = f"resp_{secrets.token_hex(8)}", f"resp_{secrets.token_hex(8)}"
        assert (await _create(a, plain)).id == plain
        async with await _create(a, streamed, stream=True) as events:
            ids = {e.response.id async for e in events if e.type == "response.created"}
        assert ids == {streamed}
        for rid in (plain, streamed):
            assert (await _continued(a, rid)).output_text == "native: what number?"
        sent = len(upstream.calls_for(MODEL))
        for rid in (plain, streamed, f"resp_{secrets.token_hex(8)}"):
            with pytest.raises(openai.NotFoundError) as refused:
                await b.responses.create(
                    model=ALIAS, input="what number?", previous_response_id=rid
                )
            error = refused.value.body
            assert isinstance(error, dict)
            assert error["message"] == f"Previous response with id '{rid}' not found."
            assert error["type"] == "invalid_request_error"
            assert error["param"] == "previous_response_id"
        assert len(upstream.calls_for(MODEL)) == sent  # never forwarded
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_rotated_key_continues_its_own_responses_with_the_new_secret(
    stack: Stack, upstream: FakeOpenAI, native: str
) -> None:
    old_secret, record = await stack.new_key("prevresp-rotated")
    other_secret, _ = await stack.new_key("prevresp-other")
    old = _client(stack, old_secret)
    rid = f"resp_{secrets.token_hex(8)}"
    try:
        assert (await _create(old, rid)).id == rid
        await _continued(old, rid)  # recorded
    finally:
        await old.close()
    rotated = await stack.admin("POST", f"/keys/{record.id}/rotate")
    assert rotated.status_code == 200, rotated.text
    new, other = _client(stack, rotated.json()["key"]), _client(stack, other_secret)
    try:
        assert (await _continued(new, rid)).output_text == "native: what number?"
        with pytest.raises(openai.NotFoundError):  # still nobody else's
            await other.responses.create(model=ALIAS, input="x", previous_response_id=rid)
    finally:
        await new.close()
        await other.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_an_answer_recorded_by_the_secrets_hash_is_still_its_secrets(
    stack: Stack, native: str
) -> None:
    """What a model-proxy recorded before answers were bound to key ids: the hash of the
    secret that asked. Its secret continues it; another key does not."""
    secret, _ = await stack.new_key("prevresp-legacy")
    other_secret, _ = await stack.new_key("prevresp-legacy-other")
    rid = f"resp_{secrets.token_hex(8)}"
    nc = await stack.connect("modelproxy")
    try:
        kv = await nc.jetstream(timeout=10).key_value(subjects.RESPONSE_OWNERS_BUCKET)
        await kv.put(rid, hash_key(secret).encode())
    finally:
        await nc.close()
    mine, other = _client(stack, secret), _client(stack, other_secret)
    try:
        assert (await _continued(mine, rid)).output_text == "native: what number?"
        with pytest.raises(openai.NotFoundError):
            await other.responses.create(model=ALIAS, input="x", previous_response_id=rid)
    finally:
        await mine.close()
        await other.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_an_older_model_proxy_continues_a_new_record_for_its_secret(
    stack: Stack, native: str
) -> None:
    """A model-proxy of 0.2.0 or 0.3.0 (5bef525) reads the record with the KV API and passes a
    continuation when the value is the continuing secret's hash (``entry.value !=
    _owner(key_hash)`` there); the key's id is in a header it never looks at."""
    secret, record = await stack.new_key("prevresp-mixed")
    other_secret, _ = await stack.new_key("prevresp-mixed-other")
    rid = f"resp_{secrets.token_hex(8)}"
    client = _client(stack, secret)
    try:
        assert (await _create(client, rid)).id == rid
        await _continued(client, rid)  # recorded
    finally:
        await client.close()
    nc = await stack.connect("modelproxy")
    try:
        js = nc.jetstream(timeout=10)
        older = (await (await js.key_value(subjects.RESPONSE_OWNERS_BUCKET)).get(rid)).value
        assert older == hash_key(secret).encode()  # what the older reader compares
        assert older != hash_key(other_secret).encode()
        bucket = subjects.RESPONSE_OWNERS_BUCKET
        raw = await js.get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{rid}", direct=True)
        assert raw.headers is not None
        assert raw.headers[KEY_ID] == record.id
    finally:
        await nc.close()
