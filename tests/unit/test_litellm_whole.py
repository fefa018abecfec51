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
