"""When a chat stream through litellm is whole (:meth:`ChatStream.finished`): every choice
asked for finished. The adapter then waits 2 s at most for the end of the response, as the
direct path does; a legacy stream is never taken as whole (litellm ends its choices)."""

from __future__ import annotations

import pytest

from switchyard.workers.modelproxy.providers import litellm_answer

pytestmark = pytest.mark.unit


def _chunk(index: int, finish: str | None = None) -> dict[str, object]:
    delta = {} if finish else {"content": "x"}
    return {"id": "c", "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def test_whole_once_every_choice_asked_for_finished() -> None:
    shape = litellm_answer.ChatStream("m")
    assert not shape.finished(1)
    shape.chunk(_chunk(0))
    assert not shape.finished(1)
    shape.chunk(_chunk(1))
    shape.chunk(_chunk(0, "stop"))
    assert not shape.finished(1)  # choice 1 still open
    assert not shape.finished(2)
    shape.chunk(_chunk(1, "length"))
    assert shape.finished(2)
    assert not shape.finished(3)  # asked for three, two came


def test_a_legacy_stream_is_never_taken_as_whole() -> None:
    assert not litellm_answer.LegacyStream("m").finished(1)


def test_content_after_a_finish_reason_opens_the_choice_again() -> None:
    """litellm has put a finish_reason on intermediate chunks (Gemini's tool-call pieces): the
    answer was taken as whole at the first, and the adapter's 2 s grace could end it before
    the rest came (a review). Content after a finish opens the choice again; its next finish
    ends it."""
    shape = litellm_answer.ChatStream("m")
    call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{"}}
    shape.chunk(
        {
            "id": "c",
            "choices": [
                {"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": "tool_calls"}
            ],
        }
    )
    assert shape.finished(1)
    more = {"index": 0, "function": {"arguments": '"a": 1}'}}
    shape.chunk({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [more]}}]})
    assert not shape.finished(1)  # the grace is not armed now
    shape.chunk(_chunk(0))
    assert not shape.finished(1)
    shape.chunk({"id": "c", "choices": [{"index": 0, "delta": {}}]})  # nothing in it
    assert not shape.finished(1)
    shape.chunk(_chunk(0, "tool_calls"))
    assert shape.finished(1)
    shape.chunk({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    assert shape.finished(1)  # a delta with nothing generated changes nothing
