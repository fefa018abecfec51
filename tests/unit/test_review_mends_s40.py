"""What a review of this session's second half found: an interrupt that comes twice, a vector
beyond float32, a usage of zeros, Anthropic's 529 in an OpenAI batch line."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from switchyard.ingress.departure import Stoppable, Waiting, edge_stopping
from switchyard.schemas import batches as b
from switchyard.workers.batch.formats import OpenAIFormat
from switchyard.workers.modelproxy.providers.embedding_format import encoded, to_base64
from switchyard.workers.modelproxy.providers.litellm_stream import delivers as _delivers

pytestmark = pytest.mark.unit


async def test_a_second_interrupt_of_an_expiring_wait_is_no_error() -> None:
    """A client leaving and the edge stopping can both come before the interrupted task runs
    again; the second found the scope expiring and its RuntimeError escaped the edge's stop
    (the requests after it were never answered)."""
    waiting = Waiting()
    inside = Stoppable(waiting)
    errors: list[BaseException] = []

    async def wait() -> None:
        async with inside:
            await asyncio.sleep(10)

    task = asyncio.create_task(wait())
    await asyncio.sleep(0)  # inside the block
    inside.stop()
    scope = inside._scope
    assert scope is not None
    # The deadline fires (CPython's own hook): the task is told, but has not run yet.
    fire = getattr(scope, "_on_timeout")  # noqa: B009 - private, so not in the stubs
    fire()
    assert scope.expired()
    inside.stopping = False  # as the client's leaving finds it
    try:
        inside.stop()
    except RuntimeError as exc:  # pragma: no cover - the defect
        errors.append(exc)
    with pytest.raises(type(edge_stopping())):
        await task
    assert errors == []
    assert waiting.stop() == 0


def test_a_vector_beyond_float32_stays_floats_rather_than_fail() -> None:
    assert to_base64([1e39, 0.5]) == [1e39, 0.5]
    doc = {"data": [{"embedding": [0.5, 1.0]}]}
    data = base64.b64decode(encoded(doc, "base64")["data"][0]["embedding"])
    assert len(data) == 8


def test_a_usage_of_zeros_delivers_nothing() -> None:
    zeros = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert not _delivers({"choices": [], "usage": zeros})
    assert _delivers({"choices": [], "usage": {**zeros, "prompt_tokens": 7}})
    assert _delivers({"choices": [{"delta": {"content": "hi"}}]})
    assert not _delivers({"choices": [{"delta": {"role": "assistant"}, "finish_reason": "stop"}]})


def test_an_openai_batch_line_never_says_529() -> None:
    line = b.BatchLine(custom_id="r1", method="POST", url="/v1/chat/completions", body={})
    out = json.loads(OpenAIFormat().line("batch_1", 0, line, 529, b'{"error":{}}'))
    assert out["response"]["status_code"] == 503
