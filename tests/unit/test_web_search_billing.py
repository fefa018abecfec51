"""Providers' web searches, charged per call: counted where native answers' usage is read, priced
by the route's override, else litellm's map, else $0.01 a search, and added to the spend."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import msgspec
import pytest

from switchyard.dialects.usage import (
    AnthropicUsageTracker,
    ResponsesUsageTracker,
    anthropic_usage,
    responses_usage,
)
from switchyard.schemas.events import USAGE_BATCH_DECODER, UsageEvent
from switchyard.schemas.openai import Usage
from switchyard.schemas.routing import Price, RouteTable, decode_route_table, deployment_id
from switchyard.workers.accounting.pricing import (
    WEB_SEARCH_DEFAULT,
    Pricing,
    price_map,
    search_price,
)

pytestmark = pytest.mark.unit

_SEARCH = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {}}
_MESSAGE = {"type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "x"}]}
_RESPONSES_USAGE = {"input_tokens": 20, "output_tokens": 4, "total_tokens": 24}


def _data(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event).encode()


# ---- counting ----


def test_a_whole_response_counts_its_web_search_call_items() -> None:
    body = {"id": "r", "output": [_SEARCH, _SEARCH, _MESSAGE], "usage": _RESPONSES_USAGE}
    usage = responses_usage(json.dumps(body).encode())
    assert usage == Usage(
        prompt_tokens=20, completion_tokens=4, total_tokens=24, web_search_calls=2
    )
    plain = responses_usage(json.dumps({**body, "output": [_MESSAGE]}).encode())
    assert plain is not None
    assert plain.web_search_calls == 0


def test_a_responses_stream_counts_searches_done_and_listed() -> None:
    tracker = ResponsesUsageTracker()
    tracker.feed(_data({"type": "response.output_item.added", "item": _SEARCH}))
    tracker.feed(_data({"type": "response.output_item.done", "item": _SEARCH}))
    tracker.feed(_data({"type": "response.output_item.done", "item": _MESSAGE}))
    before = tracker.usage
    assert before is None  # the tokens come with the terminal event
    # A terminal event whose output leaves the items out still bills the searches done ...
    tracker.feed(
        _data({"type": "response.completed", "response": {"output": [], "usage": _RESPONSES_USAGE}})
    )
    assert tracker.usage is not None
    assert tracker.usage.web_search_calls == 1
    assert tracker.ended
    # ... and one that lists them counts them all.
    listed = ResponsesUsageTracker()
    done = {"output": [_SEARCH, _SEARCH, _SEARCH, _MESSAGE], "usage": _RESPONSES_USAGE}
    listed.feed(_data({"type": "response.completed", "response": done}))
    assert listed.usage is not None
    assert listed.usage.web_search_calls == 3


def test_an_anthropic_message_reports_its_searches() -> None:
    usage = {"input_tokens": 9, "output_tokens": 3, "server_tool_use": {"web_search_requests": 4}}
    counted = anthropic_usage(json.dumps({"id": "m", "usage": usage}).encode())
    assert counted == Usage(
        prompt_tokens=9, completion_tokens=3, total_tokens=12, web_search_calls=4
    )
    del usage["server_tool_use"]
    plain = anthropic_usage(json.dumps({"id": "m", "usage": usage}).encode())
    assert plain is not None
    assert plain.web_search_calls == 0


def test_an_anthropic_stream_takes_the_latest_cumulative_count() -> None:
    tracker = AnthropicUsageTracker()
    start = {"input_tokens": 9, "output_tokens": 1, "server_tool_use": {"web_search_requests": 0}}
    tracker.feed(_data({"type": "message_start", "message": {"usage": start}}))
    assert tracker.usage is not None
    assert tracker.usage.web_search_calls == 0
    delta = {"output_tokens": 30, "server_tool_use": {"web_search_requests": 2}}
    tracker.feed(_data({"type": "message_delta", "delta": {}, "usage": delta}))
    tracker.feed(_data({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 31}}))
    tracker.feed(_data({"type": "message_stop"}))
    assert tracker.usage == Usage(
        prompt_tokens=9, completion_tokens=31, total_tokens=40, web_search_calls=2
    )


def test_the_count_crosses_old_and_new_workers() -> None:
    """An event from an older model-proxy has no count (0); an older accounting worker reads
    a newer event without it (msgspec ignores fields a struct does not have)."""
    old = b'{"id":"b","events":[{"id":"r:1","request_id":"r","ts":0,"op":"messages",'
    old += b'"alias":"a","deployment":"d","provider":"p","model":"m","prompt_tokens":3}]}'
    assert USAGE_BATCH_DECODER.decode(old).events[0].web_search_calls == 0

    class _OldEvent(msgspec.Struct, kw_only=True):
        id: str
        prompt_tokens: int = 0

    new = msgspec.json.encode(_event("p", "m", searches=3, prompt_tokens=3))
    assert msgspec.json.decode(new, type=_OldEvent).prompt_tokens == 3


# ---- pricing ----

_TABLE = {
    "providers": {
        "claude": {"kind": "anthropic"},
        "openai": {"kind": "openai"},
    },
    "routes": {
        "sonnet": {"deployments": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
        "gpt": {"deployments": [{"provider": "openai", "model": "gpt-4.1"}]},
        "unknown": {"deployments": [{"provider": "claude", "model": "claude-unheard-of"}]},
        "own": {
            "deployments": [
                {
                    "provider": "openai",
                    "model": "own-search",
                    "price": {
                        "input_per_token": 0.000001,
                        "output_per_token": 0.000002,
                        "web_search_per_call": 0.05,
                    },
                }
            ]
        },
        "tokens-only": {
            "deployments": [
                {
                    "provider": "openai",
                    "model": "gpt-4o-search-preview",
                    "price": {"input_per_token": 0.000001, "output_per_token": 0.000002},
                }
            ]
        },
    },
}


def _priced() -> tuple[Pricing, RouteTable]:
    pricing = Pricing()
    asyncio.run(pricing.load())
    return pricing, decode_route_table(msgspec.json.encode(_TABLE))


def _event(
    provider: str, model: str, *, searches: int, prompt_tokens: int = 0, completion: int = 0
) -> UsageEvent:
    return UsageEvent(
        id="r:1",
        request_id="r",
        ts=0.0,
        op="responses",
        alias=model,
        deployment=deployment_id(provider, model),
        provider=provider,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        total_tokens=prompt_tokens + completion,
        web_search_calls=searches,
    )


def test_searches_at_the_routes_own_price() -> None:
    pricing, table = _priced()
    event = _event("openai", "own-search", searches=3, prompt_tokens=1000, completion=500)
    # 1,000 x $1 + 500 x $2 per million, + 3 x $0.05.
    assert pricing.cost_nano(event, table) == 2_000_000 + 150_000_000


def test_searches_at_litellms_price_for_the_model() -> None:
    pricing, table = _priced()
    entry = price_map()["gpt-4.1"]
    assert entry["search_context_cost_per_query"]["search_context_size_medium"] == 0.025
    tokens = 100 * entry["input_cost_per_token"] + 10 * entry["output_cost_per_token"]
    event = _event("openai", "gpt-4.1", searches=2, prompt_tokens=100, completion=10)
    assert pricing.cost_nano(event, table) == round((tokens + 2 * 0.025) * 1e9)
    claude = price_map()["claude-sonnet-4-5"]["search_context_cost_per_query"]
    assert pricing.cost_nano(_event("claude", "claude-sonnet-4-5", searches=1), table) == round(
        claude["search_context_size_medium"] * 1e9
    )


def test_a_route_pricing_tokens_only_keeps_litellms_search_price() -> None:
    pricing, table = _priced()
    entry = price_map()["gpt-4o-search-preview"]
    assert entry["search_context_cost_per_query"]["search_context_size_medium"] == 0.025
    event = _event("openai", "gpt-4o-search-preview", searches=2, prompt_tokens=1000)
    # 1,000 x $1 per million (the route's), + 2 x $0.025 (litellm's).
    assert pricing.cost_nano(event, table) == 1_000_000 + 50_000_000


def test_searches_default_to_a_cent_where_nothing_prices_them() -> None:
    pricing, table = _priced()
    assert WEB_SEARCH_DEFAULT == 0.01
    # A model litellm does not know: its tokens are free, its searches are not.
    assert pricing.cost_nano(_event("claude", "claude-unheard-of", searches=5), table) == 50_000_000
    # A model litellm knows but prices no search for.
    assert "search_context_cost_per_query" not in price_map()["claude-haiku-4-5"]
    assert search_price(price_map()["claude-haiku-4-5"]) == WEB_SEARCH_DEFAULT


def test_no_search_costs_nothing_more() -> None:
    pricing, table = _priced()
    event = _event("openai", "own-search", searches=0, prompt_tokens=1000, completion=500)
    assert pricing.cost_nano(event, table) == 2_000_000
    assert pricing.cost_nano(_event("openai", "own-search", searches=-2), table) == 0


def test_search_prices_read_from_litellms_shapes() -> None:
    assert search_price(None) == WEB_SEARCH_DEFAULT
    assert search_price({}) == WEB_SEARCH_DEFAULT
    sized = {"search_context_size_low": 0.005, "search_context_size_medium": 0.008}
    assert search_price({"search_context_cost_per_query": sized}) == 0.008
    high_only = {"search_context_size_low": 0.005, "search_context_size_high": 0.012}
    assert search_price({"search_context_cost_per_query": high_only}) == 0.012
    assert search_price({"search_context_cost_per_query": 0.02}) == 0.02
    assert search_price({"search_context_cost_per_query": "junk"}) == WEB_SEARCH_DEFAULT


def test_the_search_price_is_validated_like_the_others() -> None:
    base = {"input_per_token": 1e-6, "output_per_token": 1e-6}
    for bad in (-0.01, math.inf, math.nan):
        with pytest.raises(msgspec.ValidationError, match=r"web_search_per_call|>= 0"):
            msgspec.convert({**base, "web_search_per_call": bad}, Price)
    assert msgspec.convert({**base, "web_search_per_call": 0.02}, Price).web_search_per_call == 0.02
    # Left out, it is not written back either.
    assert msgspec.json.decode(msgspec.json.encode(msgspec.convert(base, Price))) == base
