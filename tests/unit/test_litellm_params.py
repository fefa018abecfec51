"""Which fields a litellm provider may go without (pure logic; the adapter's real-HTTP tests
are in tests/test_litellm_adapter.py)."""

from __future__ import annotations

import pytest

from switchyard.workers.modelproxy.providers import litellm_params as lp

SENT = ["frequency_penalty", "logprobs", "top_logprobs", "user", "seed", "dimensions"]


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        (
            "anthropic does not support parameters: ['logprobs', 'top_logprobs'], for "
            "model=claude. To drop these, set `litellm.drop_params=True` ... "
            "allowed_openai_params=['seed']",
            ["logprobs", "top_logprobs"],
        ),
        (
            "mistral does not support parameters: {'dimensions': 256, 'user': 'u'}, for "
            "model=mistral-embed. To drop these, set `litellm.drop_params=True`",
            ["user", "dimensions"],
        ),
        (
            "Setting dimensions is not supported for OpenAI `text-embedding-3` and later "
            "models. To drop it from the call, set `litellm.drop_params = True`.",
            ["dimensions"],
        ),
        ("something else went wrong", []),
    ],
    ids=["list", "dict", "sentence", "none"],
)
def test_named_reads_each_shape_of_litellms_refusal(message: str, fields: list[str]) -> None:
    assert lp.named(message, SENT) == fields


def test_a_field_named_only_inside_another_word_is_not_named() -> None:
    assert lp.named("does not support parameters: ['top_logprobs']", ["logprobs"]) == []


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("frequency_penalty", 0, True),
        ("frequency_penalty", 0.0, True),
        ("frequency_penalty", 0.5, False),
        ("logprobs", False, True),
        ("logprobs", True, False),
        ("top_logprobs", 0, True),
        ("top_logprobs", False, False),  # a boolean is not the number 0
        ("n", 1, True),
        ("n", True, False),
        ("parallel_tool_calls", True, True),
        ("parallel_tool_calls", False, False),
        ("tool_choice", "auto", True),
        ("tool_choice", "required", False),
        ("response_format", {"type": "text"}, True),
        ("response_format", {"type": "json_object"}, False),
        ("dimensions", 256, False),
        ("dimensions", None, True),
        ("user", "u-1", True),
        ("seed", 42, True),
        ("stream_options", {"include_usage": True}, True),
        ("web_search_options", {}, False),
    ],
)
def test_can_go_without(field: str, value: object, expected: bool) -> None:
    assert lp.can_go_without(field, value, {field: value}) is expected


def test_tool_choice_none_asks_for_something_only_while_tools_are_offered() -> None:
    """A reviewer's case: Bedrock with tools and `tool_choice: "none"` had the field dropped
    and the model free to call a tool the client forbade."""
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert lp.can_go_without("tool_choice", "none", {"tool_choice": "none"})
    assert not lp.can_go_without("tool_choice", "none", {"tool_choice": "none", "tools": tools})
    assert not lp.can_go_without("function_call", "none", {"functions": [{"name": "f"}]})


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("anthropic does not support parameters: ['logprobs'], for model=x", ["logprobs"]),
        ("mistral does not support parameters: {'dimensions': 256}, for model=m", ["dimensions"]),
        ("Setting dimensions is not supported for OpenAI `text-embedding-3`", ["dimensions"]),
        (
            "gpt-5.1 only supports logprobs, top_p, top_logprobs when reasoning_effort "
            "resolves to 'none'",
            [],
        ),
    ],
    ids=["list", "dict", "sentence", "prose"],
)
def test_listed_blames_only_what_litellm_lists(message: str, fields: list[str]) -> None:
    """A sentence mentions fields litellm does take: none of them is blamed."""
    sent = ["logprobs", "top_p", "reasoning_effort", "dimensions"]
    assert lp.listed(message, sent) == fields


def test_refusal_names_every_field_and_points_at_the_first() -> None:
    error = lp.refusal("anthropic-main", "claude-x", ["logprobs", "top_logprobs"], "ignored")
    assert error.status == 400
    assert (error.param, error.code) == ("logprobs", "unsupported_parameter")
    assert error.message.startswith("`logprobs`, `top_logprobs`: provider anthropic-main does")
    assert "these fields for model claude-x" in error.message


def test_refusal_without_a_named_field_keeps_litellms_reason_not_its_advice() -> None:
    said = "bedrock does not support this. To drop these, set `litellm.drop_params=True`"
    error = lp.refusal("aws", "titan", [], said)
    expected = (
        "provider aws cannot take this request for model titan: bedrock does not support this"
    )
    assert error.message == expected
    assert error.param is None


def test_without_leaves_the_rest() -> None:
    assert lp.without({"a": 1, "b": 2, "c": 3}, ["b"]) == {"a": 1, "c": 3}


def test_a_refusal_in_litellms_words_shows_no_litellm_class_name() -> None:
    """litellm's refusal in a sentence was quoted whole: "litellm.UnsupportedParamsError:
    VertexAI doesn't support ..." showed clients the gateway's library and class names."""
    said = (
        "litellm.UnsupportedParamsError: VertexAI doesn't support tool_choice=x. Supported "
        "tool_choice values=['auto', 'required', json object]. To drop it from the call, set "
        "`litellm.drop_params = True."
    )
    exc = lp.refusal("p", "m", [], said)
    assert exc.message == (
        "provider p cannot take this request for model m: VertexAI doesn't support "
        "tool_choice=x. Supported tool_choice values=['auto', 'required', json object]"
    )
    assert lp.plain("failed: litellm.llms.anthropic.AnthropicException - no") == "failed: - no"
