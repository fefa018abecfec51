"""The checks made on a request before litellm sees it (pure logic; the real-HTTP tests
against fake providers are in tests/test_litellm_request_fields.py)."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.errors import InvalidRequest
from switchyard.schemas.routing import Deployment, Provider
from switchyard.workers.modelproxy.providers import litellm_request as lr
from switchyard.workers.modelproxy.providers.base import ProviderCall

TAKEN = {"model", "messages", "stream", "stream_options", "temperature", "user"}


def call(**body: Any) -> ProviderCall:
    return ProviderCall(
        op="chat",
        body={"model": "m", "messages": [], **body},
        stream=False,
        client_wants_usage=False,
        provider=Provider(kind="anthropic", secret="s"),
        provider_name="p",
        deployment=Deployment(provider="p", model="m"),
        api_key=None,
        first_token_timeout=1.0,
        total_timeout=1.0,
    )


def test_a_field_not_taken_is_refused_naming_every_such_field() -> None:
    with pytest.raises(InvalidRequest) as info:
        lr.unknown(call(temperature=0.1, thinking={"type": "enabled"}, top_k=3), TAKEN)
    assert (info.value.param, info.value.code) == ("thinking", "unsupported_parameter")
    assert info.value.message.startswith("`thinking`, `top_k`: provider p does not take")
    lr.unknown(call(verbosity="low"), TAKEN)  # Codex's text.verbosity: ignored, not refused


def test_platform_only_fields_nulls_and_safety_identifier_pass() -> None:
    lr.unknown(
        call(
            store=True,
            metadata={"a": "b"},
            prompt_cache_key="k",
            prompt_cache_retention="24h",
            verbosity=None,
            safety_identifier="s",
        ),
        TAKEN,
    )


@pytest.mark.parametrize(
    ("body", "user"),
    [
        ({"safety_identifier": "s"}, "s"),
        ({"safety_identifier": "s", "user": "u"}, "s"),
        ({"user": "u"}, "u"),
        ({"safety_identifier": ""}, "u"),
        ({"safety_identifier": 3}, "u"),
    ],
)
def test_safety_identifier_is_the_end_user(body: dict[str, Any], user: str) -> None:
    args: dict[str, Any] = {"user": "u"}
    lr.end_user(body, args)
    assert args["user"] == user


@pytest.mark.parametrize(
    "choice", [None, "none", "auto", "required", {"type": "function", "function": {"name": "f"}}]
)
def test_openais_tool_choices_pass(choice: object) -> None:
    lr._tool_choice(choice)


@pytest.mark.parametrize(
    "choice",
    [
        "any",
        "",
        True,
        {"type": "function"},
        {"type": "function", "function": {"name": 1}},
        {"type": "tool", "name": "f"},
    ],
)
def test_other_tool_choices_are_refused(choice: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        lr._tool_choice(choice)
    assert (info.value.param, info.value.code) == ("tool_choice", "invalid_value")


def _named(name: str) -> dict[str, object]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def test_allowed_tools_narrow_the_tools_litellm_is_given() -> None:
    """OpenAI's `allowed_tools` choice (which the Responses translation makes from its own)
    was a 400 on the litellm path: it becomes the named tools and their mode."""
    allowed = [{"type": "function", "function": {"name": "b"}}]
    args = {
        "tools": [_named("a"), _named("b")],
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": allowed},
        },
    }
    lr._allowed_tools(args)
    assert args == {"tools": [_named("b")], "tool_choice": "required"}
    lr._tool_choice(args["tool_choice"])
    none_left = {
        "tools": [_named("a")],
        "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
    }
    lr._allowed_tools(none_left)
    assert none_left == {}
    for bad in (
        {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": []}},
        {"type": "allowed_tools", "allowed_tools": {"mode": "any", "tools": allowed}},
        {"type": "allowed_tools"},
    ):
        with pytest.raises(InvalidRequest) as info:
            lr._allowed_tools({"tools": [_named("a")], "tool_choice": bad})
        assert info.value.param == "tool_choice"
