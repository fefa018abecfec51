"""The token estimate for providers that cannot count (``/v1/messages/count_tokens``), and
the edge's probe of a count request. Real tokenizer files (the ones litellm ships)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import tiktoken

from switchyard.config import prepare_tokenizer_environment
from switchyard.dialects import anthropic
from switchyard.dialects.probes import probe_count_tokens, probe_input_tokens
from switchyard.errors import InvalidRequest
from switchyard.workers.modelproxy.providers.token_estimate import (
    MEDIA_PART,
    as_chat,
    count_chat,
    encoding_name,
)


@pytest.fixture(scope="module")
def o200k() -> tiktoken.Encoding:
    prepare_tokenizer_environment()
    return tiktoken.get_encoding("o200k_base")


def _count(encoding: tiktoken.Encoding, request: dict[str, Any]) -> int:
    return count_chat(encoding, anthropic.to_chat({**request, "max_tokens": 1}).chat)


def _user(content: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}]}


def test_the_estimate_follows_the_text(o200k: tiktoken.Encoding) -> None:
    short = _count(o200k, _user("hi"))
    assert 5 <= short <= 12  # "hi", the role and the framing
    assert 995 <= _count(o200k, _user("word " * 1000)) - short <= 1005
    # Every message costs its framing: two messages of "hi" cost more than one of "hi hi" (a
    # user turn and an assistant one: two user turns in a row merge, as Anthropic merges them).
    two = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"}],
    }
    assert _count(o200k, two) > _count(o200k, _user("hi hi")) + 2


def test_system_tools_tool_calls_and_media_count(o200k: tiktoken.Encoding) -> None:
    short = _count(o200k, _user("hi"))
    system = {**_user("hi"), "system": "Answer in French, briefly."}
    assert _count(o200k, system) >= short + 5
    tool = {
        "name": "get_weather",
        "description": "Current weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    assert _count(o200k, {**_user("hi"), "tools": [tool]}) >= short + 15
    history = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny, 21C"}],
            },
        ],
    }
    plain = _count(o200k, _user("weather?"))
    assert _count(o200k, history) >= plain + 10  # the call's name and arguments, the result
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    image = _user([{"type": "image", "source": png}, {"type": "text", "text": "hi"}])
    assert _count(o200k, image) - short >= MEDIA_PART


def test_special_token_text_is_counted_not_refused(o200k: tiktoken.Encoding) -> None:
    """A prompt that quotes a special token is text to count; tiktoken raises by default."""
    assert _count(o200k, _user("<|endoftext|> and more")) > 5


def test_the_encoding_is_the_models_when_known() -> None:
    assert encoding_name("gpt-4o-mini") == "o200k_base"
    assert encoding_name("gpt-3.5-turbo") == "cl100k_base"
    assert encoding_name("claude-sonnet-4-5") == "o200k_base"  # unknown to tiktoken
    assert encoding_name("echo") == "o200k_base"


def test_an_operators_tokenizer_directory_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/srv/tokenizers")
    prepare_tokenizer_environment()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == "/srv/tokenizers"
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    prepare_tokenizer_environment()
    assert os.path.isdir(os.environ["TIKTOKEN_CACHE_DIR"])


def test_a_count_request_needs_model_and_messages_not_max_tokens() -> None:
    probe = probe_count_tokens(b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}')
    assert (probe.model, probe.stream) == ("m", False)
    for body, field in (
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
    ):
        with pytest.raises(InvalidRequest) as refused:
            probe_count_tokens(body)
        assert refused.value.param == field, body


def test_both_dialects_count_the_same_conversation_alike(o200k: tiktoken.Encoding) -> None:
    """A Responses request and a Messages request holding the same conversation translate to
    the same chat request, so they get the same estimate."""
    as_messages = {
        "model": "m",
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello there"}],
    }
    as_responses = {"model": "m", "instructions": "be brief", "input": "hello there"}
    messages = count_chat(o200k, as_chat("count_tokens", as_messages))
    assert messages == count_chat(o200k, as_chat("input_tokens", as_responses))
    with pytest.raises(InvalidRequest) as stateful:
        as_chat("input_tokens", {**as_responses, "previous_response_id": "resp_1"})
    assert stateful.value.param == "previous_response_id"


def test_an_input_token_count_needs_a_model() -> None:
    assert probe_input_tokens(b'{"model": "m", "input": "x"}').model == "m"
    with pytest.raises(InvalidRequest) as refused:
        probe_input_tokens(b'{"input": "x"}')
    assert refused.value.param == "model"
