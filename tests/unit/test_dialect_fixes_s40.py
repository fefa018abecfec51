"""Answers the edges and the dialect translations used to get wrong: absolute URLs behind a
TLS-ending proxy, the output limit an Ollama-style server reads, a repeated ``anthropic-beta``
header, Anthropic's 529, and tool calls a provider streams interleaved."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.requests import Request

from switchyard.dialects import anthropic
from switchyard.dialects.anthropic import batches as ab
from switchyard.dialects.anthropic.request import MessagesContext
from switchyard.dialects.anthropic.stream import MessagesStream
from switchyard.errors import ProviderError
from switchyard.ingress.fastpath import _wanted
from switchyard.ingress.message_batches import _base_url
from switchyard.runtime import forwarded
from switchyard.schemas import batches as b
from switchyard.schemas.routing import Deployment, Provider
from switchyard.workers.modelproxy.dialects import plan
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from switchyard.workers.modelproxy.providers.base import ProviderCall
from switchyard.workers.modelproxy.providers.registry import Adapters

# ---- absolute URLs behind a reverse proxy ----


def _request(headers: dict[str, str], *, scheme: str = "http") -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "scheme": scheme,
        "path": "/v1/messages/batches/x",
        "root_path": "",
        "query_string": b"",
        "server": ("10.0.0.5", 8980),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope)


def test_results_url_names_the_scheme_and_host_the_client_used() -> None:
    direct = _request({"host": "10.0.0.5:8980"})
    assert _base_url(direct) == "http://10.0.0.5:8980"
    proxied = _request(
        {
            "host": "10.0.0.5:8980",
            "x-forwarded-proto": "https, http",
            "x-forwarded-host": "llm.example.com, 10.0.0.5:8980",
        }
    )
    assert _base_url(proxied) == "https://llm.example.com"
    ended = b.Batch(
        id="msgbatch_1",
        endpoint=b.MESSAGES_ENDPOINT,
        input_file_id="file-in",
        completion_window="24h",
        status="completed",
        created_at=1,
        output_file_id="file-out",
    )
    url = ab.batch_object(ended, _base_url(proxied))["results_url"]
    assert url == "https://llm.example.com/v1/messages/batches/msgbatch_1/results"


@pytest.mark.parametrize(
    ("proto", "host"),
    [
        ("ftp", "evil.example/path"),
        ("https://x", "evil.example com"),
        ("javascript", "user@evil.example"),
        ("", "evil.example?x=1"),
    ],
)
def test_forwarded_values_that_are_no_plain_scheme_or_host_are_ignored(
    proto: str, host: str
) -> None:
    request = _request({"host": "gw:8980", "x-forwarded-proto": proto, "x-forwarded-host": host})
    assert forwarded.base_url(request) == "http://gw:8980"


def test_forwarded_hosts_with_ports_and_ipv6_are_kept() -> None:
    for given in ("llm.example.com:8443", "[2001:db8::1]:443", "10.1.2.3"):
        request = _request({"host": "gw", "x-forwarded-host": given})
        assert forwarded.base_url(request) == f"http://{given}"


def test_a_proxy_saying_http_does_not_undo_a_direct_tls_connection() -> None:
    assert forwarded.over_tls(_request({"host": "gw"}, scheme="https"))
    assert forwarded.over_tls(_request({"host": "gw", "x-forwarded-proto": "https"}))
    assert not forwarded.over_tls(_request({"host": "gw", "x-forwarded-proto": "http"}))


# ---- the output limit each provider kind reads ----


def _call(kind: str, op: str, body: dict[str, Any]) -> ProviderCall:
    return ProviderCall(
        op=op,
        body=body,
        stream=False,
        client_wants_usage=False,
        provider=Provider(kind=kind, api_base="http://127.0.0.1:9"),  # type: ignore[arg-type]
        provider_name="p",
        deployment=Deployment(provider="p", model="m"),
        api_key=None,
        first_token_timeout=5,
        total_timeout=5,
    )


_MESSAGES = {"model": "a", "max_tokens": 33, "messages": [{"role": "user", "content": "hi"}]}
_RESPONSES = {"model": "a", "max_output_tokens": 44, "input": "hi"}


# The name of the output limit each kind reads.
_READS = {
    "ollama": "max_tokens",
    "openai-compatible": "max_tokens",
    "vllm": "max_tokens",
    "together": "max_tokens",
    "openai": "max_completion_tokens",  # its o-series refuse max_tokens
    "azure": "max_completion_tokens",
    "groq": "max_completion_tokens",
}


def test_each_kind_gets_the_output_limit_under_the_name_it_reads() -> None:
    adapters = Adapters()
    for kind, name in _READS.items():
        other = "max_completion_tokens" if name == "max_tokens" else "max_tokens"
        _, messages = plan(_call(kind, "messages", dict(_MESSAGES)), adapters)
        assert (messages.body.get(name), other in messages.body) == (33, False), kind
        if kind != "openai":  # OpenAI answers Responses itself
            _, responses = plan(_call(kind, "responses", dict(_RESPONSES)), adapters)
            assert (responses.body.get(name), other in responses.body) == (44, False), kind
    # A client's own chat request is sent as written, whatever the kind.
    body = {"model": "a", "max_completion_tokens": 5, "messages": []}
    _, chat = plan(_call("ollama", "chat", body), adapters)
    assert chat.body == {"model": "a", "max_completion_tokens": 5, "messages": []}


# ---- a repeated anthropic-beta header ----


def test_repeated_anthropic_beta_lines_are_one_list() -> None:
    headers = [
        (b"x-api-key", b"k"),
        (b"anthropic-beta", b"files-api-2025-04-14"),
        (b"content-length", b"2"),
        (b"anthropic-beta", b"token-efficient-tools-2025-02-19, context-1m-2025-08-07"),
    ]
    wanted = _wanted(headers)
    assert wanted[b"anthropic-beta"] == (
        b"files-api-2025-04-14, token-efficient-tools-2025-02-19, context-1m-2025-08-07"
    )
    assert wanted[b"x-api-key"] == b"k"
    assert b"anthropic-beta" not in _wanted([(b"x-api-key", b"k")])


# ---- Anthropic's 529 ----


def test_an_upstream_529_stays_overloaded_and_goes_elsewhere() -> None:
    exc = ue.from_status(529, "Overloaded", provider="claude", retry_after=3.0)
    assert isinstance(exc, ProviderError)
    assert ue.retryable(exc)  # another deployment may have room
    assert (exc.status, exc.code, exc.upstream_status) == (529, "provider_overloaded", 529)
    assert exc.retry_after == 3.0
    body = json.loads(anthropic.error_body(exc))
    assert body["error"]["type"] == "overloaded_error"
    assert "overloaded" in body["error"]["message"]
    # The other 5xx are unchanged: a 502 provider error.
    assert ue.from_status(503, "busy", provider="p").status == 502


# ---- tool calls streamed interleaved ----


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return json.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [choice]}).encode()


def _head(index: int, call_id: str, name: str) -> bytes:
    call = {"index": index, "id": call_id, "type": "function", "function": {"name": name}}
    return _chunk({"tool_calls": [{**call, "function": {"name": name, "arguments": ""}}]})


def _args(index: int, text: str) -> bytes:
    return _chunk({"tool_calls": [{"index": index, "function": {"arguments": text}}]})


def _events(frames: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :])
        for line in frames.decode().splitlines()
        if line.startswith("data: ")
    ]


def _tool_inputs(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Each tool_use block's input, as Anthropic's SDKs assemble it from the events."""
    names: dict[int, str] = {}
    parts: dict[int, list[str]] = {}
    open_block: int | None = None
    for event in events:
        kind = event["type"]
        if kind == "content_block_start":
            assert open_block is None, "a block started before the last one stopped"
            open_block = event["index"]
            if event["content_block"]["type"] == "tool_use":
                names[event["index"]] = event["content_block"]["name"]
                parts[event["index"]] = []
        elif kind == "content_block_delta":
            assert event["index"] == open_block
            if event["delta"]["type"] == "input_json_delta":
                parts[event["index"]].append(event["delta"]["partial_json"])
        elif kind == "content_block_stop":
            assert event["index"] == open_block
            open_block = None
    return {names[i]: json.loads("".join(parts[i]) or "{}") for i in names}


def test_interleaved_tool_calls_keep_every_argument() -> None:
    stream = MessagesStream(MessagesContext(model="m"))
    chunks = [
        _chunk({"role": "assistant", "content": "Checking."}),
        _head(0, "call_a", "weather"),
        _head(1, "call_b", "time"),
        _args(0, '{"city": '),
        _args(1, '{"zone": "CET"}'),
        _args(0, '"Paris"}'),
        _chunk({}, "tool_calls"),
    ]
    frames = b"".join(stream.feed(c) for c in chunks) + stream.finish()
    events = _events(frames)
    assert _tool_inputs(events) == {"weather": {"city": "Paris"}, "time": {"zone": "CET"}}
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1, 2]
    assert [s["content_block"].get("id") for s in starts[1:]] == ["call_a", "call_b"]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    # Calls streamed one after another come out the same.
    stream = MessagesStream(MessagesContext(model="m"))
    chunks = [
        _head(0, "call_a", "weather"),
        _args(0, '{"city": "Oslo"}'),
        _head(1, "call_b", "time"),
        _args(1, '{"zone": "CET"}'),
        _chunk({}, "tool_calls"),
    ]
    frames = b"".join(stream.feed(c) for c in chunks) + stream.finish()
    assert _tool_inputs(_events(frames)) == {"weather": {"city": "Oslo"}, "time": {"zone": "CET"}}
