"""A native stream's failure event once its answer began: relayed, then raised as the attempt's
failure with no second error for the client; and the status a cooldown records (the provider's
own where known), carried on a reroute. Pure logic, no servers."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchyard.bus import headers as h
from switchyard.bus.envelope import Envelope, MalformedHeader
from switchyard.errors import ApiError, InvalidRequest, ProviderError
from switchyard.schemas.routing import Deployment, Provider
from switchyard.workers.modelproxy.dialects import ended_in_dialect, plan
from switchyard.workers.modelproxy.midstream import provider_status
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from switchyard.workers.modelproxy.providers.base import Completion, ProviderCall, StreamEvent
from switchyard.workers.modelproxy.providers.native_stream import Relayed, relayed_failure
from switchyard.workers.modelproxy.providers.registry import Adapters


def _sse(kind: str, doc: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **doc})}\n\n".encode()


def _error(kind: str) -> bytes:
    return _sse("error", {"error": {"type": kind, "message": "it broke"}})


DELTA = _sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "hi"}})
FAILED = _sse(
    "response.failed",
    {"response": {"status": "failed", "error": {"code": "server_error", "message": "m"}}},
)


def test_a_relayed_failure_is_read_from_failure_events_only() -> None:
    assert relayed_failure("messages", DELTA, "ant", None) is None
    assert relayed_failure("messages", _sse("message_stop", {}), "ant", None) is None
    overloaded = relayed_failure("messages", _error("overloaded_error"), "ant", None)
    assert isinstance(overloaded, ProviderError)
    assert (overloaded.status, overloaded.retryable) == (529, True)
    broken = relayed_failure("messages", _error("api_error"), "ant", None)
    assert isinstance(broken, ProviderError)
    assert (broken.status, broken.upstream_status) == (502, 500)
    assert isinstance(
        relayed_failure("messages", _error("invalid_request_error"), "a", None), InvalidRequest
    )
    failed = relayed_failure("responses", FAILED, "oai", None)
    assert isinstance(failed, ProviderError)
    assert failed.upstream_status == 500
    # An event without its ``event:`` line is told by its data's type.
    bare = b'data: {"type":"error","error":{"type":"api_error","message":"m"}}\n\n'
    assert isinstance(relayed_failure("messages", bare, "ant", None), ProviderError)
    text = b'data: {"type":"content_block_delta","delta":{"text":"\\"error\\""}}\n\n'
    assert relayed_failure("messages", text, "ant", None) is None


class _Inner:
    def __init__(self, *events: bytes) -> None:
        self._events = events
        self.closed = False

    async def complete(self, call: ProviderCall) -> Completion:
        raise AssertionError("not called")

    async def stream(self, call: ProviderCall) -> AsyncIterator[StreamEvent]:
        try:
            for event in self._events:
                yield StreamEvent(event)
        finally:
            self.closed = True

    async def close(self) -> None:
        pass


def _call(op: str, kind: str, *, stream: bool = True) -> ProviderCall:
    return ProviderCall(
        op=op,
        body={"model": "m", "input": "hi", "messages": []},
        stream=stream,
        client_wants_usage=False,
        provider=Provider(kind=kind, api_base="http://127.0.0.1:9"),  # type: ignore[arg-type]
        provider_name="p",
        deployment=Deployment(provider="p", model="m"),
        api_key=None,
        first_token_timeout=5,
        total_timeout=5,
    )


async def test_a_failure_event_after_content_is_relayed_then_raised() -> None:
    tail = _sse("message_stop", {})  # never reached: the stream ends at the error
    inner = _Inner(DELTA, _error("api_error"), tail)
    relayed = Relayed(inner)
    got: list[bytes | None] = []

    async def drain() -> None:
        async for event in relayed.stream(_call("messages", "anthropic")):
            got.append(event.payload)

    with pytest.raises(ProviderError) as failed:
        await drain()
    assert got == [DELTA, _error("api_error")]
    assert failed.value.upstream_status == 500
    assert ended_in_dialect(relayed)  # the handler sends no second error
    assert inner.closed


async def test_a_stream_that_ends_well_is_relayed_as_it_came() -> None:
    relayed = Relayed(_Inner(DELTA, _sse("message_stop", {})))
    got = [e.payload async for e in relayed.stream(_call("messages", "anthropic"))]
    assert len(got) == 2
    assert not ended_in_dialect(relayed)


def test_native_streams_are_relayed_and_whole_answers_passed_through() -> None:
    adapters = Adapters()
    streamed, _ = plan(_call("messages", "anthropic"), adapters)
    assert isinstance(streamed, Relayed)
    whole, _ = plan(_call("messages", "anthropic", stream=False), adapters)
    assert whole is adapters.passthrough()


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (ue.from_status(500, "boom", provider="p"), 500),
        (ue.from_status(503, "busy", provider="p"), 503),
        (ue.from_status(429, "slow", provider="p"), 429),
        (ue.from_status(529, "overloaded", provider="p"), 529),
        (ue.timed_out("p", "the first token"), 0),
        (ue.not_a_stream("p", "text/html", 10), 0),  # answered 200: no error status
        (ue.cut_short("p"), 0),
        (InvalidRequest("bad"), 0),
    ],
)
def test_the_providers_own_status(failure: ApiError, status: int) -> None:
    assert provider_status(failure) == status


def test_a_reroute_carries_the_providers_status_and_older_ones_do_without() -> None:
    env = Envelope(request_id="r", last_status=502, upstream_status=500)
    headers = env.encode()
    assert headers[h.UPSTREAM_STATUS] == "500"
    assert Envelope.decode(headers) == env
    older = {k: v for k, v in headers.items() if k != h.UPSTREAM_STATUS}
    assert Envelope.decode(older).upstream_status == 0  # the head falls back to last_status
    assert h.UPSTREAM_STATUS not in Envelope(request_id="r", last_status=502).encode()
    for bad in ("200", "abc", "5000"):
        with pytest.raises(MalformedHeader):
            Envelope.decode({**headers, h.UPSTREAM_STATUS: bad})


def test_unsigned_thinking_is_not_relayed_to_anthropic() -> None:
    """A translating deployment answers a provider's reasoning as thinking blocks with an
    empty signature; sent back next turn on a route that also has a native deployment, that
    turn may go to Anthropic, which refuses a thinking block it did not sign (a 400 in the
    middle of a Claude Code session). Signed thinking and everything else go as they came."""
    signed = {"type": "thinking", "thinking": "hm", "signature": "sig=="}
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "mine", "signature": ""},
                {"type": "text", "text": "hello"},
            ],
        },
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": [signed, {"type": "text", "text": "yes"}]},
    ]
    call = dataclasses.replace(
        _call("messages", "anthropic", stream=False),
        body={"model": "m", "max_tokens": 9, "messages": messages},
    )
    _, sent = plan(call, Adapters())
    assert sent.body["messages"][1]["content"] == [{"type": "text", "text": "hello"}]
    assert sent.body["messages"][3]["content"] == [signed, {"type": "text", "text": "yes"}]
    assert call.body["messages"][1]["content"][0]["signature"] == ""  # the request untouched
    clean = dataclasses.replace(call, body={"model": "m", "messages": messages[:1]})
    assert plan(clean, Adapters())[1] is clean  # nothing to drop: nothing copied


async def test_a_translated_stream_without_usage_counts_the_providers_chunks() -> None:
    """A tool call's arguments are held until the call ends (one frame for them all), so an
    estimate counting the frames billed a 40-fragment call about 2 output tokens. Every
    fragment's arguments count (a quarter token per byte, as a whole answer's)."""
    from switchyard.dialects import anthropic
    from switchyard.workers.modelproxy.dialects import Translated

    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        return json.dumps(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        ).encode()

    call0 = {"index": 0, "id": "t1", "type": "function", "function": {"name": "bash"}}
    fragments = [
        chunk(
            {
                "role": "assistant",
                "tool_calls": [{**call0, "function": {"name": "bash", "arguments": ""}}],
            }
        )
    ]
    fragments += [
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "function": {
                            "arguments": '{"a": "' if i == 0 else '"' if i == 39 else "abcdefgh"
                        },
                    }
                ]
            }
        )
        for i in range(40)
    ]
    fragments += [
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
        chunk({}, "tool_calls"),
    ]
    request = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]}
    context = anthropic.to_chat(request).context
    translated = Translated(_Inner(*fragments), context, None)
    call = dataclasses.replace(_call("messages", "vllm"), body=request)
    events = [e async for e in translated.stream(call)]
    usage = events[-1].usage
    assert usage is not None
    # "bash", then '{"a": "', 38 x "abcdefgh", '"' and "}": 317 bytes.
    assert usage.completion_tokens == -(-(4 + 7 + 38 * 8 + 1 + 1) // 4) == 80
