"""``item_reference`` items: the ids a request names, the request filled in, the items an answer
keeps, and the bucket keys that keep tenants apart (:mod:`switchyard.dialects.responses.references`,
:mod:`switchyard.workers.modelproxy.response_items`)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from switchyard.dialects.responses import ResponsesStream, response_dict, to_chat
from switchyard.dialects.responses.references import (
    MAX_REFERENCES,
    item_not_found,
    kept_items,
    referenced,
    resolved,
)
from switchyard.errors import InvalidRequest
from switchyard.workers.modelproxy.response_items import INTERNAL, item_key, tenant_of

MESSAGE = {
    "id": "msg_abc",
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "Paris.", "annotations": [], "logprobs": []}],
}
CALL = {
    "id": "fc_abc_1",
    "type": "function_call",
    "status": "completed",
    "call_id": "call_1",
    "name": "weather",
    "arguments": '{"city":"Paris"}',
}


def _ref(item_id: object) -> dict[str, object]:
    return {"type": "item_reference", "id": item_id}


def test_the_references_of_a_request_are_named_once_in_order() -> None:
    body = {
        "input": [
            {"role": "user", "content": "where?"},
            _ref("msg_abc"),
            _ref("fc_abc_1"),
            _ref("msg_abc"),
        ]
    }
    assert referenced(body) == ["msg_abc", "fc_abc_1"]
    assert referenced({"input": "just text"}) == []
    assert referenced({"input": [{"role": "user", "content": "x"}]}) == []


@pytest.mark.parametrize("bad", [None, 7, ""])
def test_a_reference_without_a_string_id_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        referenced({"input": [{"role": "user", "content": "x"}, _ref(bad)]})
    assert caught.value.param == "input[1].id"


def test_too_many_references_are_refused() -> None:
    body = {"input": [_ref(f"msg_{n}") for n in range(MAX_REFERENCES + 1)]}
    with pytest.raises(InvalidRequest):
        referenced(body)


def test_a_resolved_request_translates_as_if_the_items_were_sent() -> None:
    """The SDK's second turn: the answer's message and function call by reference, then the
    tool's output; filled in, chat gets the assistant turn and its tool call back."""
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": "weather in the capital?"},
            _ref("msg_abc"),
            _ref("fc_abc_1"),
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        ],
    }
    full = resolved(body, {"msg_abc": MESSAGE, "fc_abc_1": CALL})
    assert body["input"][1] == _ref("msg_abc")  # the request itself is not changed
    messages = to_chat(full).chat["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "Paris.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


def test_only_messages_and_function_calls_with_ids_are_kept() -> None:
    odd = {"id": "x y", "type": "message"}  # not a key a bucket could hold
    output: list[dict[str, Any]] = [
        MESSAGE,
        CALL,
        {"id": "rs_1", "type": "reasoning"},
        odd,
        {"type": "message"},
    ]
    assert kept_items(output) == [MESSAGE, CALL]


def test_a_whole_answer_keeps_the_ids_it_answered_with() -> None:
    chat = {
        "id": "c",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Looking.",
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "weather", "arguments": "{}"},
                        }
                    ],
                },
            }
        ],
    }
    context = to_chat({"model": "m", "input": "hi"}).context
    answer = response_dict(chat, context, response_id="resp_42")
    kept = kept_items(answer["output"])
    assert [i["id"] for i in kept] == [i["id"] for i in answer["output"]]
    assert [i["type"] for i in kept] == ["message", "function_call"]


def test_a_streams_output_is_the_items_its_events_named() -> None:
    context = to_chat({"model": "m", "input": "hi", "stream": True}).context
    stream = ResponsesStream(context, response_id="resp_7")
    frames = stream.feed(
        {"model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]}
    )
    frames += stream.feed(
        {
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_2",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ]
                    },
                    "finish_reason": "tool_calls",
                }
            ],
        }
    )
    frames += stream.finish()
    done = [
        msgspec.json.decode(line[5:])["item"]
        for line in frames.splitlines()
        if line.startswith(b"data:") and b'"response.output_item.done"' in line
    ]
    assert stream.output == done
    assert [i["id"] for i in kept_items(stream.output)] == ["msg_7", "fc_7_1"]


def test_the_not_found_answer_is_openais_naming_the_id() -> None:
    error = item_not_found("msg_gone")
    assert error.status == 404
    assert error.param == "input"
    assert error.code == "item_not_found"
    assert error.message.startswith("Item with id 'msg_gone' not found.")


def test_tenants_never_share_a_key() -> None:
    assert tenant_of("team-a", "key1") == "team:team-a"
    assert tenant_of("", "key1") == "key:key1"
    assert tenant_of("", "") == INTERNAL
    # A team may be named anything: like a key id, or like the key-less callers' tenant.
    assert tenant_of("key1", "other") != tenant_of("", "key1")
    assert tenant_of(INTERNAL, "other") != tenant_of("", "")
    keys = {item_key(t, "msg_1") for t in ("team-a", "key1", INTERNAL, "a.b", "a b>")}
    assert len(keys) == 5
    for key in keys:
        token, _, item = key.partition(".")
        assert item == "msg_1"
        assert token.isalnum()
