"""Requests only a native deployment can serve, and the head's choice for them (pure logic).

What :func:`needs_native` finds must be exactly what the translations refuse because they
translate (checked against the translations themselves), and a route mixing a native deployment
with translating ones never hands such a request to a translating one: when no native one is
left, the answer is the native failure (or the native cooldown), not the translation's 400.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from switchyard.bus.envelope import Deadline, Envelope
from switchyard.dialects import anthropic, native_only, responses
from switchyard.errors import InvalidRequest, ProviderError, RateLimited, ServiceUnavailable
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.schemas.health import Cooldown
from switchyard.schemas.routing import (
    Deployment,
    Provider,
    Route,
    RouteTable,
    decode_route_table,
    deployment_id,
)
from switchyard.workers.head import decide
from switchyard.workers.head.router import Router

pytestmark = pytest.mark.unit

_USER = {"role": "user", "content": "hi"}
# Each refused by the Responses translation only because it translates.
RESPONSES_NATIVE: list[dict[str, Any]] = [
    {"previous_response_id": "resp_1", "input": "more"},
    {"conversation": "conv_1", "input": "more"},
    {"prompt": {"id": "pmpt_1"}, "input": "hi"},
    {"input": "hi", "tools": [{"type": "web_search"}]},
    {
        "input": "hi",
        "tools": [{"type": "function", "name": "f"}, {"type": "file_search"}],
    },
    {"input": "hi", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "mcp"}},
    {
        "input": "hi",
        "tools": [{"type": "function", "name": "f"}],
        "tool_choice": {
            "type": "allowed_tools",
            "mode": "auto",
            "tools": [{"type": "web_search_preview"}],
        },
    },
    {"input": [_USER, {"type": "item_reference", "id": "msg_1"}]},
    {"input": [_USER, {"type": "web_search_call", "id": "ws_1", "status": "completed"}]},
    {
        "input": [
            {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]},
        ]
    },
    {
        "input": [
            {"role": "user", "content": [{"type": "input_file", "file_url": "https://x/y.pdf"}]},
        ]
    },
    {"input": "hi", "moderation": {"model": "omni-moderation-latest"}},
    {"input": "hi", "include": ["message.output_text.logprobs"], "top_logprobs": 2},
]
# Translated as they are: plain conversations, function tools, stateless history, hints.
RESPONSES_TRANSLATED: list[dict[str, Any]] = [
    {"input": "hi"},
    {"input": "hi", "previous_response_id": None, "store": True},
    {
        "input": "hi",
        "moderation": None,
        "include": ["reasoning.encrypted_content"],
        "truncation": "auto",
        "max_tool_calls": 3,
        "context_management": [{"type": "compaction", "compact_threshold": 1000}],
    },
    {
        "input": [
            _USER,
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"},
    },
    {
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "see"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA=="},
                ],
            }
        ]
    },
]
_TEXT = {"role": "user", "content": "hi"}
MCP_SERVER = {"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}
MCP = {"messages": [_TEXT], "mcp_servers": [MCP_SERVER]}
MESSAGES_NATIVE: list[dict[str, Any]] = [
    {"messages": [_TEXT], "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
    {"messages": [_TEXT], "tools": [{"type": "bash_20250124", "name": "bash"}]},
    {
        "messages": [
            _TEXT,
            {
                "role": "assistant",
                "content": [
                    {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},
                    {
                        "type": "web_search_tool_result",
                        "tool_use_id": "s1",
                        "content": {"type": "web_search_tool_result_error", "error_code": "x"},
                    },
                ],
            },
            _TEXT,
        ]
    },
    {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "source": {"type": "file", "file_id": "f1"}}],
            }
        ]
    },
    {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "url", "url": "https://x/y.pdf"}}
                ],
            }
        ]
    },
    {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "search_result", "source": "https://x", "title": "x"}],
                    }
                ],
            }
        ]
    },
    MCP,
    {"messages": [_TEXT], "container": "container_011"},
    {"messages": [_TEXT], "container": {"skills": [{"type": "anthropic", "skill_id": "xlsx"}]}},
    {"messages": [_TEXT], "inference_geo": "us"},
]
MESSAGES_TRANSLATED: list[dict[str, Any]] = [
    {"messages": [_TEXT]},
    {
        "messages": [_TEXT],
        "mcp_servers": [],
        "container": None,
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "speed": "fast",
    },
    {
        "messages": [
            _TEXT,
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "42"}],
                    }
                ],
            },
        ],
        "tools": [
            {"name": "f", "input_schema": {"type": "object"}},
            {"type": "custom", "name": "g", "input_schema": {}},
        ],
    },
    {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                    {"type": "document", "source": {"type": "text", "data": "t"}},
                ],
            }
        ]
    },
]


def _responses(extra: dict[str, Any]) -> bytes:
    return msgspec.json.encode({"model": "m", **extra})


def _messages(extra: dict[str, Any]) -> bytes:
    return msgspec.json.encode({"model": "m", "max_tokens": 16, **extra})


@pytest.mark.parametrize("extra", RESPONSES_NATIVE)
def test_responses_needing_native_are_what_the_translation_refuses(extra: dict[str, Any]) -> None:
    body = _responses(extra)
    assert native_only.needs_native("responses", body)
    assert native_only.needs_native("input_tokens", body)
    with pytest.raises(InvalidRequest):
        responses.to_chat(body)


@pytest.mark.parametrize("extra", RESPONSES_TRANSLATED)
def test_responses_the_translation_carries_need_no_native(extra: dict[str, Any]) -> None:
    body = _responses(extra)
    assert native_only.needs_native("responses", body) == ""
    responses.to_chat(body)


@pytest.mark.parametrize("extra", MESSAGES_NATIVE)
def test_messages_needing_native_are_what_the_translation_refuses(extra: dict[str, Any]) -> None:
    body = _messages(extra)
    assert native_only.needs_native("messages", body)
    assert native_only.needs_native("count_tokens", body)
    with pytest.raises(InvalidRequest):
        anthropic.to_chat(body)


@pytest.mark.parametrize("extra", MESSAGES_TRANSLATED)
def test_messages_the_translation_carries_need_no_native(extra: dict[str, Any]) -> None:
    body = _messages(extra)
    assert native_only.needs_native("messages", body) == ""
    anthropic.to_chat(body)


def test_the_field_is_named_for_the_heads_answer() -> None:
    body = _messages(MCP)
    assert native_only.needs_native("messages", body) == "`mcp_servers`"
    body = _responses({"input": "hi", "include": ["message.output_text.logprobs"]})
    assert native_only.needs_native("responses", body) == "`include` `message.output_text.logprobs`"


def test_malformed_and_other_bodies_are_left_to_the_translation() -> None:
    for body in (b"not json", b"[]", b'{"tools": 3}', b'{"tools": [{"type": 1}]}'):
        assert native_only.needs_native("responses", body) == ""
        assert native_only.needs_native("messages", body) == ""
    assert native_only.needs_native("chat", _responses(RESPONSES_NATIVE[0])) == ""
    # A tool without a type is malformed for the provider too: the translation's 400 is true.
    assert native_only.needs_native("messages", _messages({"messages": [_TEXT]})) == ""


def test_native_kinds_are_the_model_proxys() -> None:
    assert {"responses": {"openai"}, "messages": {"anthropic"}} == native_only.NATIVE
    assert native_only.serves("responses", "openai")
    assert not native_only.serves("responses", "openai-compatible")
    assert native_only.serves("count_tokens", "demo")
    assert not native_only.serves("messages", "demo")
    assert native_only.serves("chat", "vllm")


# --- the head's choice -----------------------------------------------------------------------

NATIVE = deployment_id("native", "o")
TRANSLATED = deployment_id("compat", "c")


def _router(*, fallback: bool) -> Router:
    providers = {
        "native": Provider(kind="openai", api_base="http://n.test/v1"),
        "compat": Provider(kind="openai-compatible", api_base="http://c.test/v1"),
    }
    native = Deployment(provider="native", model="o")
    compat = Deployment(provider="compat", model="c")
    if fallback:
        routes = {
            "main": Route(deployments=(native,), fallbacks=("spare",)),
            "spare": Route(deployments=(compat,)),
        }
    else:
        routes = {"main": Route(deployments=(native, compat))}
    routes["compat-only"] = Route(deployments=(compat,))
    doc = RouteTable(providers=providers, routes=routes)
    return Router(decode_route_table(msgspec.json.encode(doc)))


def _env(alias: str = "main", **fields: Any) -> Envelope:
    env = Envelope(request_id="r", alias=alias, reply="_INBOX.x", op="responses")
    return env.with_(deadline=Deadline.after(60), **fields)


STATEFUL = _responses({"previous_response_id": "resp_1", "input": "more"})
PLAIN = _responses({"input": "hi"})


@pytest.mark.parametrize("fallback", [True, False])
def test_after_the_native_429_no_translating_deployment_is_tried(fallback: bool) -> None:
    router = _router(fallback=fallback)
    env = _env(tried=(NATIVE,), last_status=429, retry_after=7.0, errors=f"{NATIVE}: 429 slow")
    book = Cooldowns({NATIVE: Cooldown(deployment=NATIVE, until=time.time() + 7, status=429)})
    with pytest.raises(RateLimited) as refused:
        decide.choose(router, book, env, pinned=None, body=STATEFUL)
    assert refused.value.retry_after == pytest.approx(7.0, abs=0.5)  # the cooldown's end
    assert "`previous_response_id` needs a native OpenAI Responses API" in refused.value.message
    # A request the translation carries still falls back.
    assert decide.choose(router, book, env, pinned=None, body=PLAIN).id == TRANSLATED


def test_spent_attempts_say_when_a_deployment_that_can_serve_it_is_back() -> None:
    """``routing.max_attempts`` spent on the native deployment's 429s (60 s) while the one
    that would translate cools 2 s after a 500: a request only a native deployment serves was
    told to come back in 2 s (the head read the route's every deployment, as ``choose`` does
    not), to meet the same 429 then."""
    router = _router(fallback=False)
    now = time.time()
    book = Cooldowns(
        {
            NATIVE: Cooldown(deployment=NATIVE, until=now + 60, status=429, asked=True),
            TRANSLATED: Cooldown(deployment=TRANSLATED, until=now + 2, status=500),
        }
    )
    env = _env(tried=(NATIVE,), last_status=429, retry_after=60.0, errors=f"{NATIVE}: 429 slow")
    spent = decide.attempts_spent(router, book, env, STATEFUL)
    assert isinstance(spent, RateLimited)
    assert spent.retry_after == pytest.approx(60, abs=0.5)
    full = ServiceUnavailable("the queue is full", code="queue_full")
    queued = decide.queues_spent(router, book, env, full, failed_before=True, body=STATEFUL)
    assert queued.retry_after == pytest.approx(60, abs=0.5)
    # A request the translation carries can use it: its wait is the shorter one.
    assert decide.attempts_spent(router, book, env, PLAIN).retry_after == pytest.approx(2, abs=0.5)


def test_while_the_native_deployment_cools_the_answer_is_its_cooldown() -> None:
    router = _router(fallback=True)
    book = Cooldowns({NATIVE: Cooldown(deployment=NATIVE, until=time.time() + 7, status=429)})
    with pytest.raises(RateLimited) as refused:
        decide.choose(router, book, _env(), pinned=None, body=STATEFUL)
    assert refused.value.code == "deployments_rate_limited"
    assert refused.value.retry_after is not None
    assert 6 < refused.value.retry_after <= 7
    assert decide.choose(router, book, _env(), pinned=None, body=PLAIN).id == TRANSLATED


@pytest.mark.parametrize("native", [MESSAGES_NATIVE[0], MCP])
def test_an_overloaded_native_deployment_is_the_answer_for_messages(
    native: dict[str, Any],
) -> None:
    providers = {
        "claude": Provider(kind="anthropic", api_base="http://a.test/v1"),
        "compat": Provider(kind="openai-compatible", api_base="http://c.test/v1"),
    }
    doc = RouteTable(
        providers=providers,
        routes={
            "main": Route(
                deployments=(
                    Deployment(provider="claude", model="o"),
                    Deployment(provider="compat", model="c"),
                )
            )
        },
    )
    router = Router(decode_route_table(msgspec.json.encode(doc)))
    claude = deployment_id("claude", "o")
    env = _env(tried=(claude,), last_status=529, retry_after=3.0, errors=f"{claude}: 529 busy")
    env = env.with_(op="messages")
    body = _messages(native)
    with pytest.raises(ProviderError) as refused:
        decide.choose(router, Cooldowns(), env, pinned=None, body=body)
    assert (refused.value.status, refused.value.code) == (529, "provider_overloaded")
    need = native_only.needs_native("messages", body)
    assert f"{need} needs a native Anthropic Messages API" in refused.value.message
    assert decide.choose(
        router, Cooldowns(), env, pinned=None, body=_messages(MESSAGES_TRANSLATED[0])
    ).id == (TRANSLATED)


def test_a_route_that_only_translates_keeps_the_translations_answer() -> None:
    router = _router(fallback=True)
    chosen = decide.choose(router, Cooldowns(), _env("compat-only"), pinned=None, body=STATEFUL)
    assert chosen.id == TRANSLATED  # its translation answers the 400: the truth here
    assert not router.mixed("compat-only", "responses")
    assert router.mixed("main", "responses")
    assert not router.mixed("main", "chat")
