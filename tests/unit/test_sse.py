"""The edge's SSE framing of a reply stream (what an OpenAI SDK parses)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from switchyard.bus.replies import Reply, ReplyKind
from switchyard.errors import ProviderError
from switchyard.ingress.edge import FinalReply, sse_frames
from switchyard.schemas.openai import Usage, error_body

pytestmark = pytest.mark.unit


async def _replies(items: list[Reply | Exception]) -> AsyncGenerator[Reply, None]:
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


async def _frames(first: Reply, rest: list[Reply | Exception], final: FinalReply) -> list[bytes]:
    return [frame async for frame in sse_frames(first, _replies(rest), final)]


async def test_chunks_keepalives_and_done() -> None:
    usage = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    final = FinalReply()
    frames = await _frames(
        Reply(ReplyKind.CHUNK, b'{"a":1}'),
        [
            Reply(ReplyKind.KEEPALIVE, b""),
            Reply(ReplyKind.CHUNK, b'{"a":2}'),
            Reply(ReplyKind.FINAL, b"", usage=usage),
            Reply(ReplyKind.CHUNK, b'{"after":"final"}'),  # never relayed
        ],
        final,
    )
    assert frames == [
        b'data: {"a":1}\n\n',
        b": keep-alive\n\n",
        b'data: {"a":2}\n\n',
        b"data: [DONE]\n\n",
    ]
    assert final.total_tokens == 3


async def test_an_error_message_mid_stream_is_the_last_event() -> None:
    err = ProviderError("upstream broke", provider="d1", code="stream_interrupted")
    frames = await _frames(
        Reply(ReplyKind.CHUNK, b'{"a":1}'),
        [Reply(ReplyKind.ERROR, error_body(err), status=502)],
        FinalReply(),
    )
    assert frames == [b'data: {"a":1}\n\n', b"data: " + error_body(err) + b"\n\n"]


async def test_a_broken_reply_path_ends_the_stream_with_an_error_event() -> None:
    err = ProviderError("the reply stream was interrupted", provider="", code="stream_interrupted")
    final = FinalReply()
    frames = await _frames(Reply(ReplyKind.CHUNK, b"{}"), [err], final)
    assert frames[-1] == b"data: " + error_body(err) + b"\n\n"
    assert final.total_tokens is None


async def test_a_dialect_stream_failing_after_content_keeps_its_usage_and_adds_no_event() -> None:
    """The error ending a Messages stream whose last chunk was its own error event: nothing
    more is sent, the failure is kept for the metrics, and the tokens the error says the
    stream used settle the key's TPM window (they were counted as none)."""
    usage = Usage(prompt_tokens=10, completion_tokens=3000, total_tokens=3010)
    err = ProviderError("upstream broke", provider="d1", code="stream_interrupted")
    final = FinalReply()
    event = b'event: error\ndata: {"type":"error"}\n\n'
    frames = [
        frame
        async for frame in sse_frames(
            Reply(ReplyKind.CHUNK, b"event: message_start\ndata: {}\n\n"),
            _replies(
                [
                    Reply(ReplyKind.CHUNK, event),
                    Reply(
                        ReplyKind.ERROR, error_body(err), status=502, usage=usage, in_stream=True
                    ),
                ]
            ),
            final,
            dialect="messages",
        )
    ]
    assert frames[-1] == event
    assert final.failure is not None
    assert final.total_tokens == 3010
