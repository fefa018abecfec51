"""The Messages translation's fidelity: turn merging, malformed tool arguments, small details.

Chat templates that require alternating roles (Mistral's, Gemma's on vLLM) refuse two user
messages in a row; Anthropic merges consecutive turns of one role, so the translation does too.
"""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.dialects.anthropic import to_chat
from switchyard.errors import InvalidRequest

pytestmark = pytest.mark.unit

BASH = {"type": "tool_use", "id": "t1", "name": "bash", "input": {"command": "ls"}}
PNG = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}


def _chat(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = {"model": "claude-sonnet-5", "max_tokens": 64, "messages": messages}
    return to_chat(body).chat["messages"]


def _roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


@pytest.mark.parametrize(
    "empty",
    [
        [{"type": "thinking", "thinking": "Let me see.", "signature": "sig"}],
        [{"type": "redacted_thinking", "data": "EmwKAhgB"}],
        [],
        "",
        [{"type": "text", "text": ""}],
    ],
)
def test_an_assistant_turn_with_nothing_to_read_leaves_one_user_turn(empty: Any) -> None:
    """An interrupted Claude Code turn (thinking only, or nothing): the user turns around it
    become one user message, not ``user, user``."""
    messages = _chat(
        [
            {"role": "user", "content": "Fix the bug."},
            {"role": "assistant", "content": empty},
            {"role": "user", "content": [{"type": "text", "text": "Go on."}]},
        ]
    )
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Fix the bug."},
                {"type": "text", "text": "Go on."},
            ],
        }
    ]


def test_consecutive_turns_of_one_role_merge_in_order() -> None:
    messages = _chat(
        [
            {"role": "user", "content": "One."},
            {"role": "user", "content": [PNG, {"type": "text", "text": "Two."}]},
            {"role": "assistant", "content": "Looking."},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}]},
            {"role": "assistant", "content": [BASH]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.py"}],
            },
            {"role": "user", "content": "And now?"},
        ]
    )
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "One."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "text", "text": "Two."},
            ],
        },
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "bash", "arguments": '{"command":"ls"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "a.py"},
        {"role": "user", "content": "And now?"},
    ]


def test_tool_results_still_follow_their_call_when_user_turns_merge() -> None:
    """Text sent before the tool result, in a turn of its own (the result came after an
    interruption): the result's ``tool`` message still directly follows the call."""
    messages = _chat(
        [
            {"role": "user", "content": "List files."},
            {"role": "assistant", "content": [BASH]},
            {"role": "user", "content": "[Request interrupted by user]"},
            {"role": "assistant", "content": []},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "shot"}, PNG],
                    },
                    {"type": "text", "text": "Continue."},
                ],
            },
        ]
    )
    assert _roles(messages) == ["user", "assistant", "tool", "user"]
    assert messages[2]["tool_call_id"] == "t1"
    assert messages[3]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        {"type": "text", "text": "[Request interrupted by user]"},
        {"type": "text", "text": "Continue."},
    ]


def test_an_empty_prefill_is_left_out() -> None:
    """A trailing assistant ``""`` used to reach the provider as an empty assistant message,
    after which chat servers answer nothing useful; ``[]`` vanished: both are left out now."""
    empties: list[Any] = ["", []]
    for empty in empties:
        messages = _chat(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": empty}]
        )
        assert messages == [{"role": "user", "content": "Hi"}]


def test_a_system_turn_between_user_turns_keeps_them_apart() -> None:
    messages = _chat(
        [
            {"role": "user", "content": "a"},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "b"},
        ]
    )
    assert _roles(messages) == ["user", "system", "user"]


def test_paths_still_name_the_block_at_fault() -> None:
    with pytest.raises(InvalidRequest) as caught:
        _chat(
            [
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "video"}]},
            ]
        )
    assert caught.value.param == "messages[1].content[1].type"
    with pytest.raises(InvalidRequest) as caught:
        _chat([{"role": "user", "content": "a"}, {"role": "user", "content": []}])
    assert caught.value.param == "messages[1].content"
