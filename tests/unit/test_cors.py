"""CORS on the LLM API routes (``ingress.cors_origins``): which requests get which headers,
the setting's checks, and that the edge is not wrapped at all without it. The ASGI app behind
is the edge's real one (:class:`FastPath` in front of a plain ASGI app for other paths); the
end-to-end answers of a running edge are in ``tests/test_http_clients.py``."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from switchyard.config import load_settings
from switchyard.errors import ConfigError
from switchyard.ingress.cors import Cors, _Added, api_path, with_cors
from switchyard.ingress.edge import Edge
from switchyard.ingress.fastpath import FastPath
from switchyard.ingress.onewrite import send_last

pytestmark = pytest.mark.unit

Message = MutableMapping[str, Any]
ORIGIN = "https://app.example.com"


async def _other(scope: Message, receive: Any, send: Any) -> None:
    """Every path the fast path does not serve: a plain 200."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _edge(origins: list[str]) -> FastPath | Cors:
    settings = load_settings(None, env={}, overrides={"ingress.cors_origins": origins})
    return with_cors(FastPath(Edge(settings), _other), settings.ingress.cors_origins)


async def _call(
    app: Any, method: str, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "query_string": b"",
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    got = {k.decode(): v.decode() for k, v in start.get("headers", ())}
    return start["status"], got, b"".join(m.get("body", b"") for m in sent[1:])


def _preflight(origin: str, *, ask: str = "") -> dict[str, str]:
    headers = {"origin": origin, "access-control-request-method": "POST"}
    if ask:
        headers["access-control-request-headers"] = ask
    return headers


def test_no_origins_no_wrapper() -> None:
    """The default: the fast path itself serves, nothing added to any request."""
    assert isinstance(_edge([]), FastPath)


async def test_a_preflight_on_an_llm_route_is_answered_for_an_allowed_origin() -> None:
    app = _edge([ORIGIN])
    ask = "authorization, content-type, x-stainless-os, X-Stainless-Retry-Count"
    status, headers, body = await _call(
        app, "OPTIONS", "/v1/chat/completions", _preflight(ORIGIN, ask=ask)
    )
    assert status == 204
    assert body == b""
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["vary"] == "Origin"
    assert "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == (
        "authorization, content-type, x-stainless-os, x-stainless-retry-count"
    )
    assert int(headers["access-control-max-age"]) > 0
    assert headers["x-request-id"]
    assert "access-control-allow-credentials" not in headers


async def test_anthropic_browser_headers_are_allowed_on_messages() -> None:
    ask = (
        "x-api-key,anthropic-version,anthropic-beta,"
        "anthropic-dangerous-direct-browser-access,content-type"
    )
    for path in ("/v1/messages", "/v1/messages/count_tokens", "/messages"):
        status, headers, _ = await _call(
            _edge([ORIGIN]), "OPTIONS", path, _preflight(ORIGIN, ask=ask)
        )
        assert status == 204, path
        assert headers["access-control-allow-headers"] == ask.replace(",", ", ")


async def test_malformed_requested_header_names_are_left_out() -> None:
    _, headers, _ = await _call(
        _edge([ORIGIN]),
        "OPTIONS",
        "/v1/embeddings",
        _preflight(ORIGIN, ask="authorization, bad name, x:y, , content-type"),
    )
    assert headers["access-control-allow-headers"] == "authorization, content-type"


async def test_a_preflight_from_another_origin_is_an_openai_403() -> None:
    status, headers, body = await _call(
        _edge([ORIGIN]), "OPTIONS", "/v1/chat/completions", _preflight("https://evil.example")
    )
    assert status == 403
    assert headers["content-type"] == "application/json"
    assert "access-control-allow-origin" not in headers
    error = json.loads(body)["error"]
    assert error["code"] == "origin_not_allowed"
    assert error["type"] == "permission_error"  # as every 403's
    assert "https://evil.example" in error["message"]


async def test_answers_and_errors_to_an_allowed_origin_carry_the_headers() -> None:
    app = _edge([ORIGIN])
    # The edge has no key ring yet: the fast path's own 503, an error like any other.
    status, headers, _ = await _call(app, "POST", "/v1/chat/completions", {"origin": ORIGIN})
    assert status == 503
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["vary"] == "Origin"
    exposed = headers["access-control-expose-headers"]
    for name in ("x-request-id", "retry-after", "x-ratelimit-remaining-tokens", "request-id"):
        assert name in exposed
    status, headers, _ = await _call(app, "GET", "/v1/models", {"origin": ORIGIN})
    assert headers["access-control-allow-origin"] == ORIGIN


async def test_no_cors_headers_for_another_origin_no_origin_or_other_paths() -> None:
    app = _edge([ORIGIN])
    _, headers, _ = await _call(app, "POST", "/v1/chat/completions", {"origin": "https://x.io"})
    assert "access-control-allow-origin" not in headers
    _, headers, _ = await _call(app, "POST", "/v1/chat/completions", {})
    assert "access-control-allow-origin" not in headers
    for path in ("/admin/v1/keys", "/ui/", "/ui/api/stream", "/health", "/metrics"):
        _, headers, _ = await _call(app, "GET", path, {"origin": ORIGIN})
        assert "access-control-allow-origin" not in headers, path
        # A preflight there is not answered here: the app's own answer, as before.
        status, headers, _ = await _call(app, "OPTIONS", path, _preflight(ORIGIN))
        assert status == 200, path  # (the plain app behind; the edge's answers its 405)
        assert "access-control-allow-origin" not in headers, path


async def test_any_origin() -> None:
    app = _edge(["*"])
    status, headers, _ = await _call(
        app, "OPTIONS", "/v1/responses", _preflight("https://anyone.example", ask="authorization")
    )
    assert status == 204
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-headers"] == "authorization"  # "*" would not cover it
    _, headers, _ = await _call(app, "POST", "/v1/responses", {"origin": "https://a.example"})
    assert headers["access-control-allow-origin"] == "*"


def test_api_paths() -> None:
    for path in ("/v1/chat/completions", "/v1/models", "/v1/files/f1", "/chat/completions"):
        assert api_path(path), path
    for path in ("/models", "/embeddings", "/messages/count_tokens"):
        assert api_path(path), path
    for path in ("/admin/v1/keys", "/ui", "/ui/keys", "/health", "/ready", "/docs", "/v1"):
        assert not api_path(path), path


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com/",
        "https://App.example.com",
        "app.example.com",
        "null",
        "",
        "https://app.example.com:443",  # browsers leave the default port out
        "http://localhost:80",
    ],
)
def test_origins_no_browser_sends_are_refused_at_start(origin: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            None, env={}, overrides={"ingress.cors_origins": ["http://localhost:3000", origin]}
        )
    assert caught.value.field == "ingress.cors_origins[1]"
    assert caught.value.hint


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


class _Flow:
    write_paused = True  # a client that stopped reading


class _Cycle:
    """What :mod:`.onewrite` relies on in uvicorn's request cycle: ``send`` is a method of an
    object whose ``transport`` it writes to and whose ``flow`` it waits on."""

    def __init__(self) -> None:
        self.transport: Any = _Transport()
        self.flow: Any = _Flow()
        self.seen_flows: list[Any] = []
        self.headers: list[tuple[bytes, bytes]] = []

    async def send(self, message: Message) -> None:
        self.seen_flows.append(self.flow)
        if message["type"] == "http.response.start":
            self.headers = list(message["headers"])
            self.transport.write(b"start")
        else:
            self.transport.write(message["body"])


async def test_a_whole_answer_is_still_one_write_and_a_last_event_still_unpaused() -> None:
    """The CORS headers are added by a wrapped ``send``: what .onewrite reaches through
    ``send.__self__`` (the cycle's transport and flow) must still be the cycle's."""
    cycle = _Cycle()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"origin", ORIGIN.encode())],
        "query_string": b"",
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    await _edge([ORIGIN])(scope, receive, cycle.send)  # the fast path's 503, via send_whole
    assert len(cycle.transport.writes) == 1  # one write, as without CORS
    assert cycle.transport.writes[0].startswith(b"start{")
    assert (b"access-control-allow-origin", ORIGIN.encode()) in cycle.headers
    wrapped = _Added(cycle.send, [])
    await send_last(wrapped.send, b"last")  # a stream's last event, past flow control
    assert not cycle.seen_flows[-1].write_paused
    assert isinstance(cycle.flow, _Flow)  # and flow control put back
