"""Clients other than the OpenAI SDK, on a real edge: a browser front end (CORS), an HTTP/1.0
client reading a stream, and bytes that are not HTTP at all (raw sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.ingress.edge import Edge
from switchyard.ingress.server import run_edge
from tests.conftest import CORS_ORIGIN
from tests.stacks import Stack
from tests.support import flushed, free_port
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORIGIN = CORS_ORIGIN
MODEL = "gpt-4o-mini"  # the session stack's route to the fake provider's echo


@pytest_asyncio.fixture(loop_scope="session")
async def edge(stack: Stack) -> Stack:
    """The session stack, whose edges list ``ORIGIN`` in ``ingress.cors_origins``
    (tests/conftest.py)."""
    return stack


async def _until_closed(
    stack: Stack, raw: bytes, *, wait: float = 10.0, port: int = 0
) -> tuple[bytes, bool]:
    """Send ``raw`` on a new connection (to the stack's tail, or ``port``); what came back,
    and whether the server closed it."""
    port = port or stack.settings.ingress.tail.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    got, closed = b"", False
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                got += chunk
            closed = True
    except TimeoutError:
        pass
    writer.close()
    return got, closed


def _chat(stack: Stack, body: dict[str, Any], version: bytes = b"1.1") -> bytes:
    raw = json.dumps(body).encode()
    return (
        b"POST /v1/chat/completions HTTP/" + version + b"\r\nHost: x\r\n"
        b"Authorization: Bearer " + stack.api_key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(raw) + raw
    )


def _head(raw: bytes) -> dict[bytes, bytes]:
    lines = raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}


async def test_a_stream_to_an_http10_client_is_not_chunked_and_ends_with_the_close(
    edge: Stack,
) -> None:
    """RFC 9112: no chunked encoding to an HTTP/1.0 client; the body is raw and the
    connection's close ends it (``curl -0 -N`` showed the chunk sizes among the events)."""
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    got, closed = await _until_closed(edge, _chat(edge, body, b"1.0"))
    assert got.startswith(b"HTTP/1.1 200"), got[:300]
    head = _head(got)
    assert b"transfer-encoding" not in head, head
    assert b"content-length" not in head, head
    assert head.get(b"connection") == b"close", head
    assert closed
    events = got.partition(b"\r\n\r\n")[2]
    assert events.startswith(b"data: {"), events[:100]  # no chunk size before the first event
    assert events.endswith(b"data: [DONE]\n\n"), events[-100:]
    datas = [line for line in events.split(b"\n") if line]
    assert all(line.startswith(b"data: ") for line in datas), datas
    assert json.loads(datas[0][6:])["object"] == "chat.completion.chunk"


async def test_http10_answers_of_known_length_keep_their_length(edge: Stack) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    got, closed = await _until_closed(edge, _chat(edge, body, b"1.0"))
    head = _head(got)
    assert got.startswith(b"HTTP/1.1 200"), got[:300]
    assert int(head[b"content-length"]) == len(got.partition(b"\r\n\r\n")[2])
    assert head.get(b"connection") == b"close"
    assert closed
    assert json.loads(got.partition(b"\r\n\r\n")[2])["object"] == "chat.completion"


async def test_a_stream_to_an_http11_client_is_still_chunked(edge: Stack) -> None:
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    raw = _chat(edge, body).replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    got, closed = await _until_closed(edge, raw)
    assert _head(got).get(b"transfer-encoding") == b"chunked", got[:300]
    assert got.endswith(b"0\r\n\r\n")
    assert closed


def _error(raw: bytes) -> dict[str, Any]:
    """The OpenAI-shaped error of a whole answer ``raw``."""
    head = _head(raw)
    assert head[b"content-type"] == b"application/json", raw[:300]
    body = raw.partition(b"\r\n\r\n")[2]
    assert int(head[b"content-length"]) == len(body)
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error", error
    return error


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, "Invalid method"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", "Invalid header token"),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "Transfer-Encoding can't be present with Content-Length",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            "chunk size",
        ),
    ],
    ids=["tls-to-plain-port", "header-without-colon", "length-and-chunked", "bad-chunk-size"],
)
async def test_bytes_the_parser_rejects_get_an_openai_400_with_a_request_id(
    edge: Stack, raw: bytes, reason: str
) -> None:
    """uvicorn answered these ``text/plain`` "Invalid HTTP request received." with no id."""
    got, closed = await _until_closed(edge, raw)
    assert got.startswith(b"HTTP/1.1 400 "), got[:300]
    error = _error(got)
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("malformed HTTP request: ")
    assert reason in error["message"], error
    assert _head(got)[b"x-request-id"]
    assert _head(got)[b"connection"] == b"close"
    assert closed


async def test_a_request_pipelined_before_malformed_bytes_is_answered_first(
    edge: Stack,
) -> None:
    """Both in one write: the request read whole is answered (it was dropped, the app seeing
    its caller leave while it was queued), then the 400 for what followed it."""
    for stream in (False, True):
        body = {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "p"}]}
        got, closed = await _until_closed(edge, _chat(edge, body) + b"NOT HTTP\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200 "), got[:600]
        second = got.rfind(b"HTTP/1.1 400 ")
        assert second > 0, got[-300:]
        assert b"[DONE]" in got[:second] if stream else b"chat.completion" in got[:second]
        assert _error(got[second:])["code"] == "invalid_request"
        assert closed


BAD_CHUNKED = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ"
)


async def test_a_queued_request_with_a_malformed_body_is_answered_after_the_one_before(
    edge: Stack,
) -> None:
    """One write: a whole request, then one whose chunk size is not hex. The 400 was written
    at once (judged by the request parsed last, queued, not answered yet): the client's only
    answer, while the first request's app ran its LLM call to the end for nobody."""
    for stream in (False, True):
        body = {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "q"}]}
        got, closed = await _until_closed(edge, _chat(edge, body) + BAD_CHUNKED)
        assert got.startswith(b"HTTP/1.1 200 "), got[:600]
        second = got.rfind(b"HTTP/1.1 400 ")
        assert second > 0, got[-300:]
        assert b"[DONE]" in got[:second] if stream else b"chat.completion" in got[:second]
        error = _error(got[second:])
        assert error["code"] == "invalid_request"
        assert "chunk size" in error["message"], error
        assert closed


async def test_a_malformed_body_queued_during_a_stream_is_answered_after_the_stream(
    edge: Stack,
) -> None:
    """A pipelined request with a bad chunk arrives while the first one's answer streams:
    its 400 was written into the middle of that stream's chunked body."""
    body = {"model": "paced", "stream": True, "messages": [{"role": "user", "content": "a b"}]}
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.settings.ingress.tail.port)
    writer.write(_chat(edge, body))
    got = b""
    async with asyncio.timeout(10):
        while b"data: " not in got:  # the answer is going out
            got += await reader.read(65536)
        writer.write(BAD_CHUNKED)
        while chunk := await reader.read(65536):
            got += chunk
    writer.close()
    second = got.find(b"HTTP/1.1 400 ")
    assert second > 0, got[-300:]
    stream = got[:second]
    assert stream.startswith(b"HTTP/1.1 200 "), stream[:300]
    assert stream.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"), stream[-300:]
    assert _error(got[second:])["code"] == "invalid_request"


async def test_a_client_that_leaves_with_a_request_queued_stops_the_running_one(
    edge: Stack, upstream: FakeOpenAI
) -> None:
    """uvicorn tells only the request parsed last that its client left: with a second one
    queued, the running request's app never heard it and its LLM call went on to the end."""
    marker = f"leaves-{uuid.uuid4().hex[:8]}"
    request_id = f"req-{marker}"
    body = {"model": "slow", "messages": [{"role": "user", "content": marker}]}
    first = _chat(edge, body).replace(
        b"Host: x\r\n", b"Host: x\r\nX-Request-Id: %s\r\n" % (request_id.encode())
    )
    spy = await edge.connect("head")  # hears every cancel, as every model-proxy does
    cancels: list[str] = []

    async def heard(msg: Msg) -> None:
        cancels.append((msg.headers or {}).get(h.REQUEST_ID, ""))

    try:
        await spy.subscribe(subjects.CANCEL, cb=heard)
        await flushed(spy)
        _, writer = await asyncio.open_connection("127.0.0.1", edge.settings.ingress.tail.port)
        writer.write(first + _chat(edge, {**body, "model": MODEL}))
        async with asyncio.timeout(10):  # the provider is working on the first one
            while not any(marker in json.dumps(call.body) for call in upstream.calls):
                await asyncio.sleep(0.02)
        writer.close()
        async with asyncio.timeout(5):
            while not any(c.startswith(f"{request_id}.") for c in cancels):  # (id.unique)
                await asyncio.sleep(0.05)
    finally:
        await spy.close()


async def test_a_browser_page_on_an_allowed_origin_can_call_the_llm_routes(edge: Stack) -> None:
    """What a browser does: a preflight, then the call, reading the answer and its headers.
    Without CORS the preflight was 405 "takes POST, not OPTIONS" and no answer carried
    ``Access-Control-Allow-Origin``: a playground saw a generic CORS failure."""
    asked = {
        "origin": ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,x-stainless-os",
    }
    auth = {"origin": ORIGIN, "authorization": f"Bearer {edge.api_key}"}
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=edge.tail_url, timeout=30) as http:
        for path in ("/v1/chat/completions", "/v1/models"):
            pre = await http.options(path, headers=asked)
            assert pre.status_code == 204, pre.text
            assert pre.headers["access-control-allow-origin"] == ORIGIN
            assert "POST" in pre.headers["access-control-allow-methods"]
            allowed = pre.headers["access-control-allow-headers"]
            assert allowed == "authorization, content-type, x-stainless-os"
            assert int(pre.headers["access-control-max-age"]) > 0
        whole = await http.post("/v1/chat/completions", json=chat, headers=auth)
        assert whole.status_code == 200, whole.text
        assert whole.headers["access-control-allow-origin"] == ORIGIN
        assert "Origin" in whole.headers["vary"]
        assert "x-request-id" in whole.headers["access-control-expose-headers"]
        async with http.stream(
            "POST", "/v1/chat/completions", json={**chat, "stream": True}, headers=auth
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["access-control-allow-origin"] == ORIGIN
            assert (await stream.aread()).endswith(b"data: [DONE]\n\n")
        refused = await http.post(
            "/v1/chat/completions", json=chat, headers={**auth, "authorization": "Bearer no"}
        )
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == ORIGIN  # errors are readable
        models = await http.get("/v1/models", headers=auth)
        assert models.headers["access-control-allow-origin"] == ORIGIN


async def test_anthropic_browser_access_preflight(edge: Stack) -> None:
    """Anthropic's SDK in a browser sends its own headers, the key in ``x-api-key``."""
    names = (
        "anthropic-beta, anthropic-dangerous-direct-browser-access, anthropic-version, "
        "content-type, x-api-key"
    )
    asked = {
        "origin": ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": names,
    }
    async with httpx.AsyncClient(base_url=edge.tail_url, timeout=30) as http:
        pre = await http.options("/v1/messages", headers=asked)
        assert pre.status_code == 204, pre.text
        assert pre.headers["access-control-allow-headers"] == names
        answer = await http.post(
            "/v1/messages",
            json={"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]},
            headers={
                "origin": ORIGIN,
                "x-api-key": edge.api_key,
                "anthropic-version": "2023-06-01",
                "anthropic-dangerous-direct-browser-access": "true",
            },
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == ORIGIN
        assert "request-id" in answer.headers["access-control-expose-headers"]


async def test_other_origins_and_the_admin_side_get_no_cors(edge: Stack) -> None:
    other = {"origin": "https://elsewhere.example", "access-control-request-method": "POST"}
    async with httpx.AsyncClient(timeout=30) as http:
        pre = await http.options(f"{edge.tail_url}/v1/chat/completions", headers=other)
        assert pre.status_code == 403
        assert pre.json()["error"]["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in pre.headers
        call = await http.post(
            f"{edge.tail_url}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
            headers={"origin": other["origin"], "authorization": f"Bearer {edge.api_key}"},
        )
        assert call.status_code == 200
        assert "access-control-allow-origin" not in call.headers
        # The admin API and the web app keep their own rules, even for an allowed origin.
        mine = {"origin": ORIGIN, "access-control-request-method": "GET"}
        for path in ("/admin/v1/keys", "/ui/keys"):
            pre = await http.options(f"{edge.gateway_url}{path}", headers=mine)
            assert pre.status_code == 405, (path, pre.text)
            assert "access-control-allow-origin" not in pre.headers
        keys = await http.get(
            f"{edge.gateway_url}/admin/v1/keys", headers={**edge.admin_headers(), "origin": ORIGIN}
        )
        assert keys.status_code == 200
        assert "access-control-allow-origin" not in keys.headers


def _cors_of(raw: bytes) -> dict[bytes, bytes]:
    return {k: v for k, v in _head(raw).items() if k.startswith(b"access-control-") or k == b"vary"}


@pytest.mark.parametrize(
    "raw",
    [BAD_CHUNKED, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"],
    ids=["malformed-body", "malformed-head"],
)
async def test_a_malformed_body_from_an_allowed_origin_gets_a_400_it_can_read(
    edge: Stack, raw: bytes
) -> None:
    """The protocol's own 400 carried no CORS headers: a browser page saw "Failed to fetch".
    A head whose bad bytes follow its ``Origin`` field names the origin: its 400 is readable
    too (it had none)."""
    for origin, readable in ((ORIGIN, True), ("https://elsewhere.example", False)):
        sent = raw.replace(b"Host: x\r\n", b"Host: x\r\nOrigin: %s\r\n" % origin.encode())
        got, closed = await _until_closed(edge, sent)
        assert got.startswith(b"HTTP/1.1 400 "), got[:300]
        assert _error(got)["code"] == "invalid_request"
        assert closed
        if readable:
            cors = _cors_of(got)
            assert cors[b"access-control-allow-origin"] == ORIGIN.encode(), got[:600]
            assert cors[b"vary"] == b"Origin"
            assert b"x-request-id" in cors[b"access-control-expose-headers"]
        else:
            assert not _cors_of(got), got[:600]


@pytest.mark.parametrize(
    ("fields", "readable"),
    [
        (b"Origin: %s\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(120)) + b"\r\n", True),
        (b"Origin: %s\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", True),
        (b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n", False),  # no Origin at all
    ],
    ids=["too-many-fields", "field-too-large", "no-origin"],
)
async def test_a_head_too_large_from_an_allowed_origin_gets_a_431_it_can_read(
    edge: Stack, fields: bytes, readable: bool
) -> None:
    """The 431 carried no CORS headers: a browser page whose request head was too large saw
    "Failed to fetch" instead of the error naming why."""
    raw = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + fields.replace(b"%s", ORIGIN.encode())
    got, closed = await _until_closed(edge, raw)
    assert got.startswith(b"HTTP/1.1 431 "), got[:300]
    assert _error(got)["code"] == "headers_too_large"
    assert closed
    cors = _cors_of(got)
    if readable:
        assert cors[b"access-control-allow-origin"] == ORIGIN.encode(), got[:600]
        assert b"x-request-id" in cors[b"access-control-expose-headers"]
    else:
        assert not cors, got[:600]


async def test_a_head_that_stops_from_an_allowed_origin_gets_a_408_it_can_read(
    edge: Stack,
) -> None:
    """A head that stops after its ``Origin`` field (a stalled link): the 408 of
    ``header_timeout_s`` had no CORS headers. One that stops in its request line names no
    path yet, and gets none."""
    async with _edge_with(edge, header_timeout_s=1.0) as port:
        for head, readable in (
            (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\nX-A", True),
            (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-A: b\r\nOrigin: %s\r\n", True),
            (b"POST /v1/chat/comp", False),
        ):
            got, closed = await _until_closed(edge, head.replace(b"%s", ORIGIN.encode()), port=port)
            assert got.startswith(b"HTTP/1.1 408 "), got[:300]
            assert _error(got)["code"] == "request_timeout"
            assert closed
            cors = _cors_of(got)
            if readable:
                assert cors[b"access-control-allow-origin"] == ORIGIN.encode(), got[:600]
            else:
                assert not cors, got[:600]


async def _in_parts(port: int, parts: list[bytes], *, wait: float = 10.0) -> tuple[bytes, float]:
    """Send ``parts`` on a new connection, each written (and sent) before the next; what came
    back once the server closed it, and how long after the first part that took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    for part in parts:
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.2)  # read as its own chunk, as from a slow link
    got = b""
    async with asyncio.timeout(wait):
        while chunk := await reader.read(65536):
            got += chunk
    writer.close()
    return got, time.monotonic() - started


BIG = b"X-Big: " + b"a" * 40_000  # one field past ingress.max_header_bytes (32 KiB)


@pytest.mark.parametrize(
    ("parts", "status", "readable"),
    [
        ([BIG, b"\r\nOrigin: %s\r\n\r\n"], 431, True),
        ([b"Origin: %s\r\n" + BIG, b"\r\n\r\n"], 431, True),
        ([b"Bad Header\r\n", b"Origin: %s\r\n\r\n"], 400, True),
        ([b"Origin: %s\r\nBad Header\r\n", b"\r\n"], 400, True),
        # An Origin split across reads is still read whole.
        ([BIG, b"\r\nOri", b"gin: %s\r", b"\n\r\n"], 431, True),
        ([BIG, b"\r\nOrigin: https://elsewhere.example\r\n\r\n"], 431, False),
        # The head stops after the field that broke it: its answer goes at the head's time.
        ([BIG], 431, False),
        ([b"Bad Header\r\n"], 400, False),
    ],
    ids=[
        "431-origin-after",
        "431-origin-before",
        "400-origin-after",
        "400-origin-before",
        "431-origin-split",
        "431-other-origin-after",
        "431-head-stops",
        "400-head-stops",
    ],
)
async def test_an_origin_after_the_field_that_broke_the_head_still_makes_the_answer_readable(
    edge: Stack, parts: list[bytes], status: int, readable: bool
) -> None:
    """The edge stopped reading a head at the field that broke it (too large: 431; bad bytes:
    400), so an ``Origin`` after it, arriving in a later read, was never seen: the answer had
    no CORS headers and a browser page saw "Failed to fetch". The rest of the head is read for
    that field only, within the head's size and time limits."""
    start = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    sent = [part.replace(b"%s", ORIGIN.encode()) for part in [start + parts[0], *parts[1:]]]
    async with _edge_with(edge, header_timeout_s=2.0) as port:
        got, took = await _in_parts(port, sent)
    assert got.startswith(b"HTTP/1.1 %d " % status), got[:300]
    assert _error(got)["code"] == ("headers_too_large" if status == 431 else "invalid_request")
    assert _head(got)[b"x-request-id"]
    cors = _cors_of(got)
    if readable:
        assert cors[b"access-control-allow-origin"] == ORIGIN.encode(), got[:600]
        assert b"x-request-id" in cors[b"access-control-expose-headers"]
        assert took < 1.5, took  # answered once the field arrived, not at the head's time
    else:
        assert not cors, got[:600]


async def test_a_malformed_head_whose_end_and_body_come_in_one_read_is_answered_at_once(
    edge: Stack,
) -> None:
    """The seek for a refused head's ``Origin`` starts only when its end was not read; that
    was looked for in the last 2 KiB of the read only, so bad bytes, the head's end and more
    than 2 KiB of body in one read made the client wait ``header_timeout_s`` for its 400."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-A: b\r\nBad Header\r\n"
    sent = head + b"Content-Length: 8000\r\n\r\n" + b"x" * 8000
    async with _edge_with(edge, header_timeout_s=5.0) as port:
        got, took = await _in_parts(port, [sent])
    assert got.startswith(b"HTTP/1.1 400 "), got[:300]
    assert _error(got)["code"] == "invalid_request"
    assert took < 2.5, took  # not at the head's time (5 s)


@pytest.mark.parametrize(
    "fields",
    [b"Origin: %s\r\nBad Header\r\n", b"X-A: b\r\nBad Header\r\nOrigin: %s\r\n"],
    ids=["origin-before", "origin-after"],
)
async def test_a_malformed_head_with_an_origin_and_its_body_in_one_read_gets_a_readable_400(
    edge: Stack, fields: bytes
) -> None:
    """A refused head's ``Origin`` was looked for in the last 2 KiB read only: with the
    head's end and more body than that in the same read, those 2 KiB were body, and the 400
    went without CORS headers (a browser page saw "Failed to fetch"). It is looked for in
    the head, wherever it ends in the read."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + fields % ORIGIN.encode()
    sent = head + b"Content-Length: 8000\r\n\r\n" + b"x" * 8000
    async with _edge_with(edge, header_timeout_s=5.0) as port:
        got, took = await _in_parts(port, [sent])
    assert got.startswith(b"HTTP/1.1 400 "), got[:300]
    assert _error(got)["code"] == "invalid_request"
    cors = _cors_of(got)
    assert cors[b"access-control-allow-origin"] == ORIGIN.encode(), got[:600]
    assert b"x-request-id" in cors[b"access-control-expose-headers"]
    assert took < 2.5, took


@contextlib.asynccontextmanager
async def _edge_with(stack: Stack, **limits: float) -> AsyncIterator[int]:
    """A tail of the session stack run in this process (as ``switchyard serve tail`` does),
    with the ``ingress`` settings of ``limits``; its port."""
    ingress = stack.settings.ingress
    port = free_port()
    tail = msgspec.structs.replace(ingress.tail, port=port)
    settings = msgspec.structs.replace(
        stack.settings, ingress=msgspec.structs.replace(ingress, tail=tail, **limits)
    )
    stop = asyncio.Event()
    task = asyncio.ensure_future(run_edge(settings, "tail", stop, instance="tail-short-limits"))
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                assert not task.done(), "the edge ended while starting"
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the edge never started"
                await asyncio.sleep(0.1)
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_body_that_stops_from_an_allowed_origin_gets_a_408_it_can_read(
    edge: Stack,
) -> None:
    """A browser page on an allowed origin whose upload stalls past ``body_timeout_s``: the
    408 had no ``Access-Control-Allow-Origin`` and the page saw "Failed to fetch"."""
    async with _edge_with(edge, body_timeout_s=1.0) as port:
        for origin, readable in ((ORIGIN, True), ("https://elsewhere.example", False)):
            head = (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\n"
                b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{" % (origin.encode(), edge.api_key.encode())
            )
            got, closed = await _until_closed(edge, head, port=port)
            assert got.startswith(b"HTTP/1.1 408 "), got[:300]
            assert _error(got)["code"] == "request_timeout"
            assert closed
            cors = _cors_of(got)
            if readable:
                assert cors[b"access-control-allow-origin"] == ORIGIN.encode(), got[:600]
                assert b"x-request-id" in cors[b"access-control-expose-headers"]
            else:
                assert not cors, got[:600]


async def test_a_queued_body_that_stops_gets_its_408_after_the_answer_before_it(
    edge: Stack,
) -> None:
    """One write: a whole request (its answer takes 1.5 s), then one whose body stops. Its
    body timeout (1 s) fired while the first was still waiting for its provider: the 408,
    judged by the request parsed last, was written at once and the first answer was lost."""
    slow = {"model": "slow", "messages": [{"role": "user", "content": "first"}]}
    stalled = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{" % ORIGIN.encode()
    )
    async with _edge_with(edge, body_timeout_s=1.0) as port:
        got, closed = await _until_closed(edge, _chat(edge, slow) + stalled, port=port)
    assert got.startswith(b"HTTP/1.1 200 "), got[:600]
    second = got.find(b"HTTP/1.1 408 ")
    assert second > 0, got[-300:]
    assert json.loads(got[:second].partition(b"\r\n\r\n")[2])["object"] == "chat.completion"
    assert _error(got[second:])["code"] == "request_timeout"
    assert _cors_of(got[second:])[b"access-control-allow-origin"] == ORIGIN.encode()
    assert closed


async def test_a_queued_body_is_timed_by_the_body_timeout_once_its_turn_comes(
    edge: Stack,
) -> None:
    """A request queued on a connection (pipelined, or sent while the one before was being
    answered) whose body was still arriving: once the answer before it was out, its body was
    timed by ``header_timeout_s`` (1 s here), not ``body_timeout_s`` (4 s), and an upload on a
    slow link was cut with a 408 long before its body timeout."""
    slow = {"model": "slow", "messages": [{"role": "user", "content": "first"}]}
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "second"}]})
    second = _chat(edge, json.loads(body))
    head_end = second.index(b"\r\n\r\n") + 4 + 10  # the head and 10 bytes of its body
    async with _edge_with(edge, header_timeout_s=1.0, body_timeout_s=4.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(_chat(edge, slow) + second[:head_end])
            first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert first.startswith(b"HTTP/1.1 200 "), first
            await reader.readexactly(int(_head(first)[b"content-length"]))
            await asyncio.sleep(2.0)  # past the header timeout, well inside the body's
            writer.write(second[head_end:])
            got = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert got.startswith(b"HTTP/1.1 200 "), got
            answer = json.loads(await reader.readexactly(int(_head(got)[b"content-length"])))
            assert answer["object"] == "chat.completion"
        finally:
            writer.close()


async def test_a_deadline_504_names_the_limit_that_set_the_deadline(
    edge: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 504 said only "the request deadline passed ...": a client could not tell its own
    X-Request-Timeout from the gateway's default or cap, so whether raising its own would
    help. (A 1.5 s answer; the tail's default deadline 0.5 s, its cap 0.8 s.) The words are
    made for that 504 only: every request made them (headers read, floats parsed, text
    formatted), an answer never used them."""
    slow = {"model": "slow", "messages": [{"role": "user", "content": "late"}]}
    auth = {"Authorization": f"Bearer {edge.api_key}"}
    cases = {
        "": "ingress.default_deadline_s (0.5 s)",
        "0.6": "the client's own X-Request-Timeout (0.6 s)",
        "30": "ingress.max_deadline_s (0.8 s), which capped the client's X-Request-Timeout",
    }
    made: list[str] = []
    words = Edge.deadline_limit

    def counted(self: Edge, wanted: dict[bytes, bytes], *, streamed: bool) -> str:
        made.append(words(self, wanted, streamed=streamed))
        return made[-1]

    monkeypatch.setattr(Edge, "deadline_limit", counted)
    async with (
        _edge_with(edge, default_deadline_s=0.5, max_deadline_s=0.8) as port,
        httpx.AsyncClient(timeout=30) as http,
    ):
        quick = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        resp = await http.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json=quick, headers=auth
        )
        assert resp.status_code == 200, resp.text
        assert made == [], "an answered request made the words of a 504 it never sent"
        for timeout, named in cases.items():
            headers = {**auth, "X-Request-Timeout": timeout} if timeout else auth
            resp = await http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions", json=slow, headers=headers
            )
            assert resp.status_code == 504, resp.text
            error = resp.json()["error"]
            assert error["code"] == "deadline_exceeded", error
            assert error["message"].startswith("the request deadline passed"), error
            assert named in error["message"], error
    assert len(made) == len(cases)  # once per 504, none for the answer
