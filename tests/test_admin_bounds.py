"""What the admin side takes, bounded, on the session stack: bodies of the admin API and web app
are refused with 413 before more than their cap is read (with or without a length), free text
stored through them is capped with a 400 naming the field, and the web app signs in behind a
proxy that rewrites ``Host`` but says where the browser was (``X-Forwarded-*``).

Raw sockets show "before it is read": the request's head says (or its chunks add up to) more
than the cap, the rest never comes, and the answer is there anyway. A server that read the
whole body would still be waiting for it."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
import pytest

from switchyard.admin.api import MAX_BODY_BYTES
from switchyard.admin.ui.forms import MAX_FORM_BYTES, SIGNIN_FORM_BYTES
from switchyard.schemas.keys import MAX_TEXT_CHARS
from switchyard.schemas.routing import MAX_DESCRIPTION_CHARS
from tests.stacks import Stack

pytestmark = pytest.mark.integration

# How long an answer may take to come; a server waiting for the rest of the body never sends it.
ANSWER_WAIT_S = 15.0


def _host(stack: Stack) -> str:
    return urlsplit(stack.gateway_url).netloc


def _token(stack: Stack) -> str:
    return stack.settings.admin_token_file.read_text(encoding="utf-8").strip()


async def _answer(stack: Stack, head: bytes, body: bytes) -> tuple[int, bytes]:
    """Send a request's head and the first part of its body, never the rest; the status and
    body of the answer."""
    host, _, port = _host(stack).partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + body)
        await writer.drain()
        got = b""
        try:
            async with asyncio.timeout(ANSWER_WAIT_S):
                while b"\r\n\r\n" not in got or not _complete(got):
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    got += chunk
        except TimeoutError:
            pytest.fail(f"no answer while the rest of the body was not sent: {got[:200]!r}")
    finally:
        writer.close()
    status = int(got.split(b" ", 2)[1])
    return status, got.partition(b"\r\n\r\n")[2]


def _complete(raw: bytes) -> bool:
    head, _, body = raw.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return raw.endswith(b"0\r\n\r\n")  # chunked answer: its last chunk


def _head(stack: Stack, method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {_host(stack)}", *headers, "", ""]
    return "\r\n".join(lines).encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def test_a_sign_in_past_its_cap_is_refused_before_the_body_is_read(stack: Stack) -> None:
    origin = f"Origin: {stack.gateway_url}"
    form = "Content-Type: application/x-www-form-urlencoded"
    declared = _head(stack, "POST", "/ui/signin", origin, form, "Content-Length: 400000000")
    status, page = await _answer(stack, declared, b"name=x&token=")
    assert status == 413
    assert b"too large" in page
    chunked = _head(stack, "POST", "/ui/signin", origin, form, "Transfer-Encoding: chunked")
    status, page = await _answer(stack, chunked, _chunk(b"name=" + b"x" * SIGNIN_FORM_BYTES))
    assert status == 413
    assert b"too large" in page


async def test_an_admin_api_body_past_its_cap_is_refused_before_it_is_read(stack: Stack) -> None:
    auth = f"Authorization: Bearer {_token(stack)}"
    json_type = "Content-Type: application/json"
    declared = _head(
        stack, "PUT", "/admin/v1/routes", auth, json_type, f"Content-Length: {1 << 30}"
    )
    status, body = await _answer(stack, declared, b'{"table": ')
    assert status == 413
    assert b'"code":"request_too_large"' in body.replace(b" ", b"")
    assert str(MAX_BODY_BYTES).encode() in body
    chunked = _head(stack, "POST", "/admin/v1/keys", auth, json_type, "Transfer-Encoding: chunked")
    pad = b"x" * (1 << 20)
    first = b"".join(_chunk(part) for part in [b'{"name": "', *[pad] * (MAX_BODY_BYTES >> 20)])
    status, body = await _answer(stack, chunked, first + _chunk(b"more"))
    assert status == 413
    assert b"request_too_large" in body
    # Under the cap the same endpoint answers as ever.
    ok = await stack.admin("POST", "/keys", {"name": "bounds-ok", "owner": "o" * 100})
    assert ok.status_code == 201, ok.text


async def test_a_web_form_past_its_cap_gets_the_error_page(
    signed_in: tuple[httpx.AsyncClient, str],
) -> None:
    web, csrf = signed_in
    big = await web.post("/ui/keys", data={"csrf": csrf, "name": "x" * MAX_FORM_BYTES})
    assert big.status_code == 413
    assert "request body exceeds the limit" in big.text
    assert 'role="alert"' in big.text  # the app's own error page, signed in
    as_json = await web.post(
        "/ui/keys",
        data={"csrf": csrf, "name": "x" * MAX_FORM_BYTES},
        headers={"Accept": "application/json"},
    )
    assert as_json.status_code == 413
    assert as_json.json()["status"] == 413


async def test_key_text_past_its_bound_is_a_400_naming_the_field(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    long = "n" * (MAX_TEXT_CHARS + 1)
    for field, body in (
        ("name", {"name": long}),
        ("owner", {"name": "bounds", "owner": long}),
        ("team", {"name": "bounds", "team": long}),
        ("models", {"name": "bounds", "models": ["gpt-4o", long]}),
    ):
        refused = await stack.admin("POST", "/keys", body)
        assert refused.status_code == 400, (field, refused.text)
        error = refused.json()["error"]
        assert error["param"] == field
        assert f"at most {MAX_TEXT_CHARS}" in error["message"]
    _, record = await stack.new_key("bounds-edit")
    changed = await stack.admin("PATCH", f"/keys/{record.id}", {"team": long})
    assert changed.status_code == 400
    assert changed.json()["error"]["param"] == "team"
    assert (await stack.admin("GET", f"/keys?q={long[:50]}")).json()["total"] == 0
    web, csrf = signed_in
    form = await web.post("/ui/keys", data={"csrf": csrf, "name": long, "models": "*"})
    assert form.status_code == 400
    assert f"at most {MAX_TEXT_CHARS} are allowed" in form.text


async def test_a_route_description_past_its_bound_is_refused(stack: Stack) -> None:
    route = {
        "deployments": [{"provider": "fake", "model": "echo"}],
        "description": "d" * (MAX_DESCRIPTION_CHARS + 1),
    }
    refused = await stack.admin("PUT", "/routes/bounds-long", route)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "routes.bounds-long.description"
    assert (await stack.admin("GET", "/routes/bounds-long")).status_code == 404


async def test_sign_in_behind_a_proxy_that_rewrites_host(stack: Stack) -> None:
    """nginx sends ``Host`` as its upstream's name; the browser's ``Origin`` is the public
    one, which the proxy states in ``X-Forwarded-Host``/``-Proto``."""
    data = {"name": "proxied", "token": _token(stack)}
    proxy = {"X-Forwarded-Host": "admin.example.com", "X-Forwarded-Proto": "https"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as web:
        signin = await web.post(
            "/ui/signin", data=data, headers={**proxy, "Origin": "https://admin.example.com"}
        )
        assert signin.status_code == 303, signin.text
        assert "secure" in signin.headers["set-cookie"].lower()
        for origin, headers in (
            ("https://evil.example", proxy),
            ("https://evil.example", {}),
            ("http://admin.example.com", proxy),  # the proxy said https
            ("https://admin.example.com", {}),  # no proxy said so
        ):
            refused = await web.post("/ui/signin", data=data, headers={**headers, "Origin": origin})
            assert refused.status_code == 403, (origin, headers)
