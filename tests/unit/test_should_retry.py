"""Which errors tell the SDKs not to retry (``x-should-retry: false``), and that the HTTP
answers carry it: the OpenAI and Anthropic SDKs read that header before their status rules,
by which they retry every 408, 409, 429 and 5xx, however certain the failure is to repeat."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest

from switchyard.errors import (
    ApiError,
    InvalidRequest,
    PayloadTooLarge,
    ProviderError,
    RateLimited,
    error_for_status,
)
from switchyard.ingress.fastpath import _respond_error
from switchyard.limits.budgets import budget_exceeded
from switchyard.runtime.http import error_response
from switchyard.schemas.keys import ClientKey

pytestmark = pytest.mark.unit

KEY = ClientKey(id="key_x", hash="0" * 64, name="x", budget_usd=1.0, budget_period="total")


async def _edge_headers(exc: ApiError, op: str = "chat") -> dict[bytes, bytes]:
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await _respond_error(send, exc, "req-1", op)
    return dict(sent[0]["headers"])


def test_a_class_says_whether_a_retry_can_help() -> None:
    assert PayloadTooLarge("too big").no_retry
    assert error_for_status(413, "too big").no_retry  # as rebuilt from a bus reply
    assert not RateLimited("slow down").no_retry
    assert not ProviderError("down", provider="p").no_retry
    assert not InvalidRequest("bad").no_retry
    assert RateLimited("never fits", code="request_too_large", no_retry=True).no_retry
    assert not PayloadTooLarge("too big", no_retry=False).no_retry  # one error's own say


def test_a_spent_budget_says_so_only_when_waiting_cannot_help() -> None:
    assert budget_exceeded(KEY, retry_s=None, spent=2).no_retry  # total: never resets
    assert budget_exceeded(KEY, retry_s=86_400.0, spent=2).no_retry  # past what SDKs wait
    assert not budget_exceeded(KEY, retry_s=5.0, spent=2).no_retry  # SDKs wait it out
    held = budget_exceeded(KEY, retry_s=1.0, spent=1, held=1, holders=1)
    assert not held.no_retry  # the requests holding it end soon


@pytest.mark.asyncio
@pytest.mark.parametrize("op", ["chat", "messages"])
async def test_the_edge_answers_it_with_x_should_retry_false(op: str) -> None:
    refused = RateLimited("never fits", code="request_too_large", no_retry=True)
    headers = await _edge_headers(refused, op)
    assert headers[b"x-should-retry"] == b"false"
    assert b"retry-after" not in headers
    plain = await _edge_headers(RateLimited("slow down", retry_after=2.0), op)
    assert b"x-should-retry" not in plain
    assert plain[b"retry-after"] == b"2"


def test_the_app_answers_it_with_x_should_retry_false() -> None:
    resp = error_response(PayloadTooLarge("too big"), "req-1")
    assert resp.status_code == 413
    assert resp.headers["x-should-retry"] == "false"
    assert "x-should-retry" not in error_response(RateLimited("slow down")).headers
