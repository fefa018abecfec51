"""Regression tests for bugs the hostile-input suites found, each named after its bug."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_reused_request_id_is_not_dropped_as_duplicate(stack: Stack) -> None:
    """Found by HTTP fuzzing: two requests sharing a client-chosen ``X-Request-Id`` got the
    same JetStream ``Nats-Msg-Id``; the second was deduplicated away and its caller hung
    until the deadline. A client could also stall another's request by guessing its id."""
    headers = {"Authorization": f"Bearer {stack.api_key}", "X-Request-Id": "reused-id-1"}
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{stack.tail_url}/v1/chat/completions"
        first = await http.post(url, json=CHAT, headers=headers)
        again = await asyncio.gather(
            *(http.post(url, json=CHAT, headers=headers) for _ in range(3))
        )
    assert first.status_code == 200, first.text
    assert [r.status_code for r in again] == [200, 200, 200]
    # Each request keeps the client's id as its prefix (for correlation) and is made unique
    # by the edge, because the request id is also the billing identity (design notes).
    ids = [r.headers["x-request-id"] for r in (first, *again)]
    assert all(i.startswith("reused-id-1.") for i in ids), ids
    assert len(set(ids)) == 4, ids


async def test_clearing_the_cooldown_of_an_invalid_deployment_id_is_400(stack: Stack) -> None:
    """Found by HTTP fuzzing of /admin/v1: an id that cannot be a NATS KV key (non-ASCII,
    wildcards) made the control service fail with 500."""
    for bad in ("caf\u00e9", "a.>", "x y"):
        got = await stack.admin("DELETE", f"/deployments/{bad}/cooldown")
        assert got.status_code == 400, got.text
        assert got.json()["error"]["param"] == "deployment"
    ok = await stack.admin("DELETE", "/deployments/never-routed/cooldown")
    assert ok.status_code == 200, ok.text


async def test_secret_provider_label_with_control_characters_is_400(stack: Stack) -> None:
    """Found by HTTP fuzzing of /admin/v1: OpenBao refuses control characters in custom
    metadata, and that refusal reached the admin as a 503."""
    for provider in ("a\nb", "\u0000", "x" * 200):
        got = await stack.admin("PUT", "/secrets/label-test", {"value": "v", "provider": provider})
        assert got.status_code == 400, got.text
    ok = await stack.admin("PUT", "/secrets/label-test", {"value": "v", "provider": "openai"})
    assert ok.status_code == 200, ok.text


async def test_secret_whose_last_characters_are_not_printable_is_stored(stack: Stack) -> None:
    """Found by HTTP fuzzing of /admin/v1: the last four characters of a value are kept as a
    hint in OpenBao metadata, which refuses control characters: the put answered 503."""
    for value in ("abcdefg\u009a", "abcd\U0001f600xyz\u0000", "k" * 7 + "\u00e9"):
        got = await stack.admin("PUT", "/secrets/odd-tail", {"value": value})
        assert got.status_code == 200, got.text
        assert got.json()["last4"] == ""
    got = await stack.admin("PUT", "/secrets/odd-tail", {"value": "sk-abcdefgh1234"})
    assert got.json()["last4"] == "1234"
