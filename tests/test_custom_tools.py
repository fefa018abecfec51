"""OpenAI's Codex CLI through a translating deployment: custom tools with the official SDK.

On the session stack (route ``gpt-4o-mini``: an OpenAI-compatible chat server, so Responses
requests are translated), the ``openai`` SDK sends a freeform ``apply_patch`` custom tool with
a Lark grammar, as Codex does, and gets a ``custom_tool_call`` back, whole and streamed; a
second turn sends that call and its output back as history and gets the model's answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from openai.types.responses import ResponseCustomToolCall, ResponseCustomToolCallInputDoneEvent

from tests.stacks import Stack
from tests.upstream import CUSTOM_INPUT, FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files.",
    "format": {
        "type": "grammar",
        "syntax": "lark",
        "definition": 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF',
    },
}
MODEL = "gpt-4o-mini"


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=f"{stack.tail_url}/v1", api_key=stack.api_key, max_retries=0)
    try:
        yield sdk
    finally:
        sdk.close()


def _custom_call(output: list[object]) -> ResponseCustomToolCall:
    [call] = [item for item in output if isinstance(item, ResponseCustomToolCall)]
    return call


def test_a_custom_tool_call_whole_then_its_output_as_history(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    first = client.responses.create(
        model=MODEL,
        input="add hello.txt",
        tools=[APPLY_PATCH],  # type: ignore[list-item]
    )
    call = _custom_call(first.output)  # type: ignore[arg-type]
    assert (call.name, call.input) == ("apply_patch", CUSTOM_INPUT)
    assert first.tools[0].type == "custom"
    offered = upstream.calls[-1].body["tools"][0]["function"]
    assert offered["name"] == "apply_patch"
    assert APPLY_PATCH["format"]["definition"] in offered["description"]  # type: ignore[index]

    second = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "add hello.txt"},
            {
                "type": "custom_tool_call",
                "call_id": call.call_id,
                "name": call.name,
                "input": call.input,
            },
            {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"},
        ],
        tools=[APPLY_PATCH],  # type: ignore[list-item]
    )
    assert second.output_text == "echo: add hello.txt"  # the fake answers a tool's output so
    sent = upstream.calls[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"input": CUSTOM_INPUT}
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "Done!"}


def test_a_streamed_custom_tool_call(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=MODEL,
        input="add hello.txt",
        tools=[APPLY_PATCH],  # type: ignore[list-item]
    ) as stream:
        kinds = []
        deltas = []
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.custom_tool_call_input.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == CUSTOM_INPUT
    assert kinds.index("response.custom_tool_call_input.done") < kinds.index("response.completed")
    assert _custom_call(final.output).input == CUSTOM_INPUT  # type: ignore[arg-type]

    events = list(
        client.responses.create(
            model=MODEL,
            input="add hello.txt",
            tools=[APPLY_PATCH],  # type: ignore[list-item]
            stream=True,
        )
    )
    [done] = [e for e in events if isinstance(e, ResponseCustomToolCallInputDoneEvent)]
    assert done.input == CUSTOM_INPUT
