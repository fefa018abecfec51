"""Responses custom tools (Codex's ``apply_patch``) translated to chat function tools and back.

Each Response object and stream event is parsed with the official ``openai`` package's types,
and streams go through its stream state machine (what ``client.responses.stream()`` uses).
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from switchyard.dialects import native_only
from switchyard.dialects.anthropic import to_chat as messages_to_chat
from switchyard.dialects.responses import ResponsesStream, references, response_dict, to_chat
from switchyard.dialects.responses._custom import InputStream, input_of
from switchyard.errors import InvalidRequest
from tests.unit.sse import USAGE, call, chunk, completion
from tests.unit.test_dialect_responses import _validated

pytestmark = pytest.mark.unit

EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
GRAMMAR = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF'
PATCH_TOOL = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files with a patch.",
    "format": {"type": "grammar", "syntax": "lark", "definition": GRAMMAR},
}
PATCH = '*** Begin Patch\n*** Add File: a.txt\n+hi "there"\n*** End Patch'


def _request(**fields: Any) -> bytes:
    return json.dumps({"model": "gpt-4o", **fields}).encode()


def _tool_call(name: str, arguments: str, call_id: str = "call_1") -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


# -- requests --------------------------------------------------------------------------------


def test_a_custom_tool_becomes_a_function_taking_one_string() -> None:
    req = to_chat(_request(input="edit a.txt", tools=[PATCH_TOOL]))
    [tool] = req.chat["tools"]
    function = tool["function"]
    assert tool["type"] == "function"
    assert function["name"] == "apply_patch"
    assert function["description"].startswith("Edit files with a patch.\n\n")
    assert GRAMMAR in function["description"]
    assert "lark" in function["description"]
    assert function["parameters"]["required"] == ["input"]
    assert function["parameters"]["properties"]["input"]["type"] == "string"
    assert req.context.custom == frozenset({"apply_patch"})
    # The Response echoes the tool as the client sent it.
    assert req.context.echo["tools"] == [PATCH_TOOL]


@pytest.mark.parametrize("fmt", [{"type": "text"}, None])
def test_a_free_text_custom_tool(fmt: dict[str, Any] | None) -> None:
    tool: dict[str, Any] = {"type": "custom", "name": "note"}
    if fmt is not None:
        tool["format"] = fmt
    req = to_chat(_request(input="x", tools=[tool]))
    function = req.chat["tools"][0]["function"]
    assert "description" not in function
    assert "free text" in function["parameters"]["properties"]["input"]["description"]
    assert req.context.echo["tools"][0]["format"] == {"type": "text"}


def test_a_long_grammar_is_cut_short_in_the_description() -> None:
    tool = {
        **PATCH_TOOL,
        "format": {"type": "grammar", "syntax": "regex", "definition": "a" * 50_000},
    }
    description = to_chat(_request(input="x", tools=[tool])).chat["tools"][0]["function"][
        "description"
    ]
    assert "a" * 1000 in description
    assert len(description) < 10_000


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "custom"}, "tools[0].name"),
        ({"type": "custom", "name": "x", "format": {"type": "json"}}, "tools[0].format.type"),
        (
            {"type": "custom", "name": "x", "format": {"type": "grammar", "syntax": "ebnf"}},
            "tools[0].format.syntax",
        ),
        ({"type": "web_search"}, "tools[0].type"),
    ],
)
def test_malformed_custom_tools_are_refused_naming_the_field(
    tool: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat(_request(input="x", tools=[tool]))
    assert caught.value.param == param


def test_the_built_in_refusal_no_longer_blames_custom_tools() -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat(_request(input="x", tools=[{"type": "web_search"}]))
    assert "`custom`" in caught.value.message


def test_tool_choice_naming_a_custom_tool() -> None:
    chat = to_chat(
        _request(
            input="x",
            tools=[PATCH_TOOL],
            tool_choice={"type": "custom", "name": "apply_patch"},
        )
    ).chat
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "apply_patch"}}
    allowed = to_chat(
        _request(
            input="x",
            tools=[PATCH_TOOL],
            tool_choice={
                "type": "allowed_tools",
                "mode": "auto",
                "tools": [{"type": "custom", "name": "apply_patch"}],
            },
        )
    ).chat["tool_choice"]
    assert allowed["allowed_tools"]["tools"] == [
        {"type": "function", "function": {"name": "apply_patch"}}
    ]


def test_custom_tool_history_becomes_tool_calls_and_tool_messages() -> None:
    req = to_chat(
        _request(
            tools=[PATCH_TOOL],
            input=[
                {"role": "user", "content": "add a.txt"},
                {
                    "type": "custom_tool_call",
                    "id": "ctc_1",
                    "call_id": "call_p",
                    "name": "apply_patch",
                    "input": PATCH,
                },
                {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done!"},
                {
                    "type": "custom_tool_call_output",
                    "call_id": "call_q",
                    "output": [{"type": "input_text", "text": "also"}],
                },
            ],
        )
    )
    messages = req.chat["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_p",
                "type": "function",
                "function": {
                    "name": "apply_patch",
                    "arguments": json.dumps({"input": PATCH}, separators=(",", ":")),
                },
            }
        ],
    }
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"input": PATCH}
    assert messages[2] == {"role": "tool", "tool_call_id": "call_p", "content": "Done!"}
    assert messages[3] == {"role": "tool", "tool_call_id": "call_q", "content": "also"}


def test_a_custom_tool_call_without_input_is_refused_naming_it() -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat(
            _request(input=[{"type": "custom_tool_call", "call_id": "c", "name": "apply_patch"}])
        )
    assert caught.value.param == "input[0].input"


# -- replies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (json.dumps({"input": PATCH}), PATCH),
        ("*** Begin Patch raw", "*** Begin Patch raw"),  # not JSON: the raw text
        ('{"patch": "x"}', '{"patch": "x"}'),  # JSON of another shape: the raw text
    ],
)
def test_a_call_to_a_custom_tool_is_a_custom_tool_call(arguments: str, expected: str) -> None:
    context = to_chat(_request(input="edit", tools=[PATCH_TOOL])).context
    data = response_dict(
        completion(finish="tool_calls", tool_calls=[_tool_call("apply_patch", arguments)]),
        context,
        response_id="resp_9",
    )
    response = Response.model_validate(data)
    [item] = response.output
    assert item.type == "custom_tool_call"
    assert (item.call_id, item.name, item.input, item.id) == (
        "call_1",
        "apply_patch",
        expected,
        "ctc_9_0",
    )
    assert response.tools[0].type == "custom"


def test_a_function_call_stays_a_function_call_next_to_custom_tools() -> None:
    function = {"type": "function", "name": "shell", "parameters": {"type": "object"}}
    context = to_chat(_request(input="x", tools=[PATCH_TOOL, function])).context
    data = response_dict(
        completion(
            finish="tool_calls",
            tool_calls=[
                _tool_call("shell", '{"cmd":"ls"}', "call_s"),
                _tool_call("apply_patch", json.dumps({"input": PATCH}), "call_p"),
            ],
        ),
        context,
    )
    output = Response.model_validate(data).output
    assert [item.type for item in output] == ["function_call", "custom_tool_call"]


def _stream(context: Any, fragments: list[bytes]) -> bytes:
    stream = ResponsesStream(context, response_id="resp_s")
    return b"".join([*(stream.feed(f) for f in fragments), stream.finish()])


def test_a_streamed_custom_tool_call() -> None:
    context = to_chat(_request(input="edit", stream=True, tools=[PATCH_TOOL])).context
    arguments = json.dumps({"input": PATCH})
    out = _stream(
        context,
        [
            chunk(content="Patching."),
            chunk(tool_calls=[call(0, call_id="call_p", name="apply_patch")]),
            chunk(tool_calls=[call(0, args=arguments[:10])]),  # {"input":
            chunk(tool_calls=[call(0, args=arguments[10:30])]),
            chunk(tool_calls=[call(0, args=arguments[30:])]),
            chunk(finish="tool_calls"),
            chunk(usage=USAGE),
        ],
    )
    decoded = _validated(out)
    types = [d["type"] for d in decoded]
    calls = [d for d in decoded if d.get("output_index") == 1]
    # The input streams as its arguments arrive (it came whole at the call's end: a long
    # patch from a slow model was a silent stream).
    assert [d["type"] for d in calls] == [
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
    ]
    assert "response.function_call_arguments.delta" not in types
    added, first, second, done, item_done = calls
    assert first["delta"] == json.loads(arguments[:30] + '"}')["input"]
    delta = {"delta": first["delta"] + second["delta"]}
    assert added["item"] == {
        "id": "ctc_s_1",
        "type": "custom_tool_call",
        "call_id": "call_p",
        "name": "apply_patch",
        "input": "",
    }
    assert delta["delta"] == PATCH
    assert done["input"] == PATCH
    assert item_done["item"]["input"] == PATCH
    final = Response.model_validate(decoded[-1]["response"])
    assert [item.type for item in final.output] == ["message", "custom_tool_call"]
    assert final.output[1].input == PATCH  # type: ignore[union-attr]


@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("wrapped", [True, False])
def test_a_custom_input_streams_whatever_its_arguments_are_cut_into(
    ensure_ascii: bool, wrapped: bool
) -> None:
    """Escapes, \\u escapes and surrogate pairs cut between fragments decode once whole; a
    bare JSON string (a model that obeyed "do not wrap it in JSON") streams too."""
    text = 'a\\b "q" \n\t é 日本 😀 \\u0041 end'
    value: object = {"input": text} if wrapped else text
    arguments = json.dumps(value, ensure_ascii=ensure_ascii)
    for size in (1, 2, 3, 5, 7):
        stream = InputStream()
        pieces = [stream.feed(arguments[i : i + size]) for i in range(0, len(arguments), size)]
        assert "".join(pieces) == text, (size, pieces)
        assert stream.sent == text
        assert sum(1 for p in pieces if p) > 3  # it came in pieces, not at the end


def test_arguments_that_open_otherwise_stream_nothing() -> None:
    for arguments in ('{"patch": "x"}', "*** Begin Patch raw", '[{"input": "x"}]'):
        stream = InputStream()
        assert [stream.feed(c) for c in arguments] == [""] * len(arguments)
    assert input_of('{"patch": "x"}') == '{"patch": "x"}'  # the whole text comes at the end


def test_a_streamed_custom_call_whose_arguments_are_cut_short_ends_with_what_came() -> None:
    """A stream cut inside the string: what streamed stays, ``.done`` holds the raw text
    (the input the whole arguments read as)."""
    context = to_chat(_request(input="edit", stream=True, tools=[PATCH_TOOL])).context
    out = _stream(
        context,
        [
            chunk(tool_calls=[call(0, call_id="call_p", name="apply_patch")]),
            chunk(tool_calls=[call(0, args='{"input": "*** Begin')]),
            chunk(finish="length"),
        ],
    )
    decoded = _validated(out)
    deltas = [d["delta"] for d in decoded if d["type"].endswith("custom_tool_call_input.delta")]
    assert deltas == ["*** Begin"]
    [done] = [d for d in decoded if d["type"] == "response.custom_tool_call_input.done"]
    assert done["input"] == '{"input": "*** Begin'


def test_a_streamed_custom_call_with_empty_input_has_no_delta() -> None:
    context = to_chat(_request(input="edit", stream=True, tools=[PATCH_TOOL])).context
    out = _stream(
        context,
        [chunk(tool_calls=[call(0, call_id="call_p", name="apply_patch")]), chunk(finish="stop")],
    )
    decoded = _validated(out)
    types = [d["type"] for d in decoded]
    assert "response.custom_tool_call_input.delta" not in types
    [done] = [d for d in decoded if d["type"] == "response.custom_tool_call_input.done"]
    assert done["input"] == ""


# -- which deployments serve it --------------------------------------------------------------


def test_custom_tools_and_their_items_need_no_native_deployment() -> None:
    body = _request(
        tools=[PATCH_TOOL, {"type": "custom", "name": "note", "format": {"type": "text"}}],
        tool_choice={"type": "custom", "name": "apply_patch"},
        input=[
            {"role": "user", "content": "x"},
            {"type": "custom_tool_call", "call_id": "c", "name": "apply_patch", "input": PATCH},
            {"type": "custom_tool_call_output", "call_id": "c", "output": "ok"},
        ],
    )
    assert native_only.needs_native("responses", body) == ""
    allowed = _request(
        input="x",
        tools=[PATCH_TOOL],
        tool_choice={
            "type": "allowed_tools",
            "mode": "auto",
            "tools": [{"type": "custom", "name": "apply_patch"}],
        },
    )
    assert native_only.needs_native("responses", allowed) == ""
    # Built-in tools still do, and so does a custom tool format the translation refuses: it
    # was placed on a translating deployment and answered 400 there (SDKs do not retry one).
    assert native_only.needs_native("responses", _request(tools=[{"type": "web_search"}]))
    ebnf = {"type": "grammar", "syntax": "ebnf", "definition": "x"}
    odd = _request(tools=[{"type": "custom", "name": "t", "format": ebnf}])
    assert native_only.needs_native("responses", odd) == "`tools[0].format`"


# -- Anthropic's client tools ----------------------------------------------------------------


def test_anthropic_client_tools_are_refused_saying_they_run_in_the_client() -> None:
    body = json.dumps(
        {
            "model": "claude",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}],
        }
    ).encode()
    with pytest.raises(InvalidRequest) as caught:
        messages_to_chat(body)
    assert caught.value.param == "tools[0].type"
    assert "run in your client" in caught.value.message
    assert "built-in tools run at Anthropic" not in caught.value.message


def test_a_custom_tool_call_answered_is_kept_for_item_references() -> None:
    context = to_chat(_request(input="edit", tools=[PATCH_TOOL])).context
    answer = response_dict(
        completion(
            finish="tool_calls",
            tool_calls=[_tool_call("apply_patch", json.dumps({"input": PATCH}))],
        ),
        context,
        response_id="resp_k",
    )
    [kept] = references.kept_items(answer["output"])
    assert kept["type"] == "custom_tool_call"
    body = {
        "model": "gpt-4o",
        "tools": [PATCH_TOOL],
        "input": [
            {"role": "user", "content": "edit"},
            {"type": "item_reference", "id": kept["id"]},
            {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Done!"},
        ],
    }
    messages = to_chat(references.resolved(body, {kept["id"]: kept})).chat["messages"]
    assert messages[1]["tool_calls"][0]["function"]["name"] == "apply_patch"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "Done!"}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"input": "*** Begin Patch\\nP"}', "*** Begin Patch\nP"),
        # A model obeying Codex's "do not wrap the patch in JSON": a bare JSON string, which
        # vLLM's hermes parser passes on encoded. It kept its quotes and escapes.
        ('"*** Begin Patch\\nP"', "*** Begin Patch\nP"),
        ('{"input": "P"}}', "P"),  # a stray brace after the object
        ("*** Begin Patch", "*** Begin Patch"),  # not JSON at all: as written
    ],
)
def test_a_custom_calls_input_is_its_text_however_the_model_wrapped_it(
    arguments: str, expected: str
) -> None:
    assert input_of(arguments) == expected
