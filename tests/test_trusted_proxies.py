"""Clients behind a trusted reverse proxy are told apart by ``X-Forwarded-For`` (or RFC 7239
``Forwarded``, with ``ingress.forwarded_header: forwarded``), over real HTTP.

The stack trusts 127.0.0.1 only (``ingress.trusted_proxies``): a request from it plays one
sent by a proxy, whose header names the client; one from another loopback address (127.0.0.2
and up, as ``local_address``) plays a client reaching the edge directly, whose header is
anyone's to write. Without the setting every client behind a proxy shared its address: one
guessing keys got every other one refused (429) on the edges and at the web app's sign-in, and
audit entries named the proxy. The parsing rule itself is tested in
tests/unit/test_client_address.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from switchyard.admin.ui.signin_guard import LIMIT as SIGNIN_LIMIT
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

FAILED_AUTH_LIMIT = 5
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def proxied(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {"fake": {"kind": "openai-compatible", "api_base": upstream.base_url}},
        "routes": {"echo": {"deployments": [{"provider": "fake", "model": "echo"}]}},
        "ingress": {
            "trusted_proxies": ["127.0.0.1"],
            "failed_auth_limit": FAILED_AUTH_LIMIT,
            "failed_auth_window_s": 300,
        },
        "stack": {"heads": 1},
    }
    stack = await start_stack(
        tmp_path_factory.mktemp("proxied"), extra, components=["tail", "gateway", "head"]
    )
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _from(address: str, base_url: str) -> httpx.AsyncClient:
    """A client whose connections leave from ``address`` (127.0.0.1: the trusted proxy)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=30)


def _guess(forwarded_for: str | None, n: int) -> dict[str, str]:
    headers = {"Authorization": f"Bearer sk-sy-guess-{n}"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return headers


async def _codes(http: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    """What the fast path, a FastAPI route and a Batch API route answer these headers."""
    answers = [
        await http.post("/v1/chat/completions", json=CHAT, headers=headers),
        await http.get("/v1/models", headers=headers),
        await http.get("/v1/files", headers=headers),
    ]
    return [f"{a.status_code} {a.json()['error']['code']}" for a in answers]


REFUSED = "429 too_many_failed_authentications"
UNKNOWN = "401 invalid_api_key"


async def test_clients_behind_a_trusted_proxy_are_guarded_apart(proxied: Stack) -> None:
    """Client A guesses keys through the proxy until it is refused; B, C and the proxy's own
    requests through the same address are not. A's left-hand entries are its own (a client
    may send the header to its proxy): changing them does not free it, and naming A there does
    not get C refused. The edge, its FastAPI routes and the Batch API count one address alike
    (the Batch API counted every client under one empty address)."""
    a = "203.0.113.66, 198.51.100.1"  # A's own claim, then what the proxy appended
    async with _from("127.0.0.1", proxied.tail_url) as proxy:
        for n in range(FAILED_AUTH_LIMIT):
            answer = await proxy.post("/v1/chat/completions", json=CHAT, headers=_guess(a, n))
            assert answer.status_code == 401, answer.text
        assert await _codes(proxy, _guess(a, 99)) == [REFUSED] * 3
        assert await _codes(proxy, _guess("192.0.2.1, 198.51.100.1", 98)) == [REFUSED] * 3
        valid = {"Authorization": f"Bearer {proxied.api_key}", "X-Forwarded-For": a}
        listed = await proxy.get("/v1/models", headers=valid)
        assert listed.status_code == 200, listed.text  # A's valid key still passes

        assert await _codes(proxy, _guess("198.51.100.2", 1)) == [UNKNOWN] * 3  # B
        assert await _codes(proxy, _guess("198.51.100.1, 198.51.100.3", 1)) == [UNKNOWN] * 3
        assert await _codes(proxy, _guess(None, 1)) == [UNKNOWN] * 3  # the proxy itself
        # A header that is not an address leaves the request the proxy's own: its 4th and 5th
        # guesses pass the limit.
        for n, header in enumerate(("unknown", None, "unknown")):
            answer = await proxy.get("/v1/models", headers=_guess(header, 2 + n))
            assert answer.status_code == (429 if n == 2 else 401), answer.text
    # The gateway counts on its own (per edge process), by the same rule.
    async with _from("127.0.0.1", proxied.gateway_url) as proxy:
        assert await _codes(proxy, _guess(a, 1)) == [UNKNOWN] * 3


async def test_an_untrusted_peers_forwarded_for_is_ignored(proxied: Stack) -> None:
    """A client reaching the edge directly cannot spread its guesses over addresses it makes
    up, nor pass for a client behind the proxy."""
    async with _from("127.0.0.2", proxied.tail_url) as direct:
        for n in range(FAILED_AUTH_LIMIT):
            headers = _guess(f"198.51.100.{100 + n}", n)
            answer = await direct.post("/v1/chat/completions", json=CHAT, headers=headers)
            assert answer.status_code == 401, answer.text
        assert await _codes(direct, _guess("198.51.100.200", 50)) == [REFUSED] * 3
        assert await _codes(direct, _guess(None, 51)) == [REFUSED] * 3
    async with _from("127.0.0.1", proxied.tail_url) as proxy:  # not those it named
        assert await _codes(proxy, _guess("198.51.100.200", 52)) == [UNKNOWN] * 3


async def test_the_sign_in_guard_and_audit_see_the_client_behind_the_proxy(
    proxied: Stack,
) -> None:
    """One person's wrong admin tokens through the proxy block that person's address only;
    the audit names the client's address, for sign-ins, web app changes and API changes, and
    the proxy it came through (a listed address can name any client: the entry must still say
    which machine connected)."""
    origin = {"Origin": proxied.gateway_url}
    token = proxied.settings.admin_token_file.read_text(encoding="utf-8").strip()
    async with _from("127.0.0.1", proxied.gateway_url) as proxy:

        async def sign_in(client: str, name: str, given: str) -> httpx.Response:
            headers = {**origin, "X-Forwarded-For": client}
            form = {"name": name, "token": given}
            return await proxy.post("/ui/signin", data=form, headers=headers)

        for _ in range(SIGNIN_LIMIT):
            assert (await sign_in("198.51.100.21", "guesser", "sy-admin-wrong")).status_code == 401
        assert (await sign_in("198.51.100.21", "guesser", "sy-admin-wrong")).status_code == 429
        assert (await sign_in("198.51.100.22", "other", "sy-admin-wrong")).status_code == 401
        signed_in = await sign_in("198.51.100.22", "behind-proxy", token)
        assert signed_in.status_code == 303, signed_in.text
        page = await proxy.get("/ui/keys/new", headers={"X-Forwarded-For": "198.51.100.23"})
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = {"csrf": csrf, "name": "made-behind-proxy", "models": "*"}
        headers = {**origin, "X-Forwarded-For": "198.51.100.23"}
        assert (await proxy.post("/ui/keys", data=form, headers=headers)).status_code == 200
        api = {**proxied.admin_headers(), "X-Forwarded-For": "198.51.100.24"}
        made = await proxy.post("/admin/v1/keys", json={"name": "api-behind-proxy"}, headers=api)
        assert made.status_code == 201, made.text
    async with _from("127.0.0.3", proxied.gateway_url) as direct:
        api = {**proxied.admin_headers(), "X-Forwarded-For": "198.51.100.25"}
        made = await direct.post("/admin/v1/keys", json={"name": "api-direct"}, headers=api)
        assert made.status_code == 201, made.text

    expected = {
        ("guesser", "session.signin", False, "198.51.100.21 via 127.0.0.1"),
        ("other", "session.signin", False, "198.51.100.22 via 127.0.0.1"),
        ("behind-proxy", "session.signin", True, "198.51.100.22 via 127.0.0.1"),
        ("behind-proxy", "key.create", True, "198.51.100.23 via 127.0.0.1"),
        ("admin token", "key.create", True, "198.51.100.24 via 127.0.0.1"),
        ("admin token", "key.create", True, "127.0.0.3"),  # direct: its header is ignored
    }
    entries: list[dict[str, Any]] = []
    for _ in range(100):  # the gateway's audit view follows the stream a moment behind
        entries = (await proxied.admin("GET", "/audit?limit=500")).json()["entries"]
        if expected <= {(e["actor"], e["action"], e["ok"], e["source"]) for e in entries}:
            break
        await asyncio.sleep(0.1)
    seen = {(e["actor"], e["action"], e["ok"], e["source"]) for e in entries}
    assert expected <= seen, entries
    assert [e for e in entries if e["source"] == "127.0.0.1"] == []  # never the proxy's alone


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rfc7239_proxied(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    """The stack behind a proxy that writes RFC 7239 ``Forwarded`` (HAProxy's ``option
    forwarded``): ``ingress.forwarded_header: forwarded``."""
    extra = {
        "providers": {"fake": {"kind": "openai-compatible", "api_base": upstream.base_url}},
        "routes": {"echo": {"deployments": [{"provider": "fake", "model": "echo"}]}},
        "ingress": {
            "trusted_proxies": ["127.0.0.1"],
            "forwarded_header": "forwarded",
            "failed_auth_limit": FAILED_AUTH_LIMIT,
            "failed_auth_window_s": 300,
        },
        "stack": {"heads": 1},
    }
    stack = await start_stack(
        tmp_path_factory.mktemp("rfc7239"), extra, components=["tail", "gateway", "head"]
    )
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def test_a_proxy_writing_rfc7239_forwarded_is_read_and_x_forwarded_for_never(
    rfc7239_proxied: Stack,
) -> None:
    """Behind a proxy that writes ``Forwarded: for=...`` (RFC 7239), its ``for`` nodes name the
    client by the same rule. Which header was read depended on whether ``X-Forwarded-For``
    came, which the client chooses: a client sending its own was believed (a new address per
    guess, never refused). The setting names the header; the other is never read."""
    stack = rfc7239_proxied

    def guess(forwarded: str, n: int, xff: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer sk-sy-rfc7239-{n}", "Forwarded": forwarded}
        if xff is not None:
            headers["X-Forwarded-For"] = xff
        return headers

    a = 'for="[2001:db8:7239::66]:4711";proto=https, for=127.0.0.1'  # A, then a trusted hop
    async with _from("127.0.0.1", stack.tail_url) as proxy:
        for n in range(FAILED_AUTH_LIMIT):  # A names a new address of its own each time
            headers = guess(a, n, xff=f"6.6.6.{n}")
            answer = await proxy.post("/v1/chat/completions", json=CHAT, headers=headers)
            assert answer.status_code == 401, answer.text
        assert await _codes(proxy, guess(a, 99, xff="6.6.6.99")) == [REFUSED] * 3
        assert await _codes(proxy, guess("for=2001:db8:7239::66", 98)) == [REFUSED] * 3
        # A client's own element that does not parse, left of its proxy's, changes nothing.
        assert await _codes(proxy, guess('for="6.6.6.6, for=2001:db8:7239::66', 97)) == (
            [REFUSED] * 3
        )
        # B, whose own X-Forwarded-For names A, is not refused.
        b = guess("for=198.51.100.72", 1, xff="2001:db8:7239::66")
        assert await _codes(proxy, b) == [UNKNOWN] * 3
    async with _from("127.0.0.1", stack.gateway_url) as proxy:
        api = {
            **stack.admin_headers(),
            "Forwarded": "for=198.51.100.74",
            "X-Forwarded-For": "6.6.6.6",
        }
        made = await proxy.post("/admin/v1/keys", json={"name": "api-rfc7239"}, headers=api)
        assert made.status_code == 201, made.text
    sources: set[str] = set()
    for _ in range(100):  # the gateway's audit view follows the stream a moment behind
        entries = (await stack.admin("GET", "/audit?limit=500")).json()["entries"]
        sources = {e["source"] for e in entries}
        if "198.51.100.74 via 127.0.0.1" in sources:
            break
        await asyncio.sleep(0.1)
    assert "198.51.100.74 via 127.0.0.1" in sources, sources
    assert not [s for s in sources if "6.6.6" in s], sources
