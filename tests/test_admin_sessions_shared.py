"""The web app's sign-in sessions are shared by every gateway replica, through NATS KV.

The Kubernetes manifests run two gateways: with sessions in each replica's memory, "sign out
everywhere" on one left a read-only user signed in on the other, and the Sessions list showed
one replica's sessions. Here a second gateway process runs beside the session stack's (same
settings and NATS, another port): a session signed in on either is good on both and listed
by both, and a sign-out on one is refused by the other within a moment. The bucket holds no
cookie value (only its digest) and no CSRF token.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

from switchyard.bus import subjects
from switchyard.stack import local
from switchyard.stack.process import ManagedProcess
from tests.stacks import Stack
from tests.support import free_port

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def second_gateway(stack: Stack, tmp_path: Path) -> AsyncIterator[str]:
    """A second gateway replica (``gateway-2``) of the session stack; yields its URL."""
    doc: dict[str, Any] = yaml.safe_load(stack.config_file.read_text(encoding="utf-8"))
    port = free_port({stack.settings.ingress.gateway.port, stack.settings.ingress.tail.port})
    doc["ingress"]["gateway"]["port"] = port
    config = tmp_path / "gateway-2.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = local.child_env(stack.settings, config, {})
    spec = local.ComponentSpec("gateway", replicas=2, http_port=port)
    step = local.components(stack.settings, env, [spec])[1]  # named gateway-2
    proc = ManagedProcess(step.spec, stack.home.logs)
    await proc.start()
    try:
        assert await proc.wait_healthy(60), proc.tail_log()
        yield f"http://127.0.0.1:{port}"
    finally:
        await proc.stop(10)


async def _signed_in(
    stack: Stack, url: str, name: str, *, read_only: bool
) -> tuple[httpx.AsyncClient, str]:
    """A browser-like client signed in on the gateway at ``url`` and its cookie's value."""
    settings = stack.settings
    path = settings.admin_readonly_token_file if read_only else settings.admin_token_file
    web = httpx.AsyncClient(base_url=url, headers={"Origin": url}, timeout=30)
    token = path.read_text(encoding="utf-8").strip()
    answer = await web.post("/ui/signin", data={"name": name, "token": token})
    assert answer.status_code == 303, answer.text[:300]
    return web, web.cookies["sy_session"]


async def _status_with(url: str, cookie: str, page: str = "/ui/audit") -> int:
    """The status of a page fetched from ``url`` with the session cookie ``cookie``."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        answer = await http.get(page, headers={"Cookie": f"sy_session={cookie}"})
        return answer.status_code


async def _refused_within(url: str, cookie: str, seconds: float) -> float:
    """How long until ``url`` refuses the cookie (fails past ``seconds``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while await _status_with(url, cookie) == 200:
        assert loop.time() - start < seconds, f"{url} still took the cookie after {seconds} s"
        await asyncio.sleep(0.05)
    return loop.time() - start


async def _names(url: str, stack: Stack) -> set[str]:
    async with httpx.AsyncClient(timeout=30, headers=stack.admin_headers()) as http:
        answer = await http.get(f"{url}/admin/v1/sessions")
    assert answer.status_code == 200, answer.text
    return {s["name"] for s in answer.json()["sessions"] if s["name"].startswith("shared-")}


async def test_sessions_are_shared_and_signed_out_on_every_gateway(
    stack: Stack, second_gateway: str
) -> None:
    first, second = stack.gateway_url, second_gateway
    admin, admin_cookie = await _signed_in(stack, first, "shared-ada", read_only=False)
    reader, reader_cookie = await _signed_in(stack, second, "shared-rita", read_only=True)
    reader_2, reader_2_cookie = await _signed_in(stack, first, "shared-rob", read_only=True)
    try:
        # A session signed in on one gateway is good on the other, at once (a cookie the
        # other has not heard of yet is looked up in the bucket).
        for cookie in (admin_cookie, reader_cookie, reader_2_cookie):
            assert await _status_with(first, cookie) == 200
            assert await _status_with(second, cookie) == 200
        # Either gateway lists every session, wherever it signed in.
        everyone = {"shared-ada", "shared-rita", "shared-rob"}
        assert await _names(first, stack) == everyone
        assert await _names(second, stack) == everyone

        # The CSRF token of a page from one gateway is good on the other (it is derived from
        # the cookie, which only the browser holds).
        page = await admin.get("/ui/sessions")
        assert page.status_code == 200
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None
        headers = {"Origin": second, "Cookie": f"sy_session={admin_cookie}"}
        async with httpx.AsyncClient(base_url=second, headers=headers) as other:
            out = await other.post(
                "/ui/sessions/signout", data={"csrf": found.group(1), "role": "read-only"}
            )
        # Sign out everywhere (read-only), sent to the second gateway: the first refuses both
        # read-only cookies within a second or two, the admin's stays good on both.
        assert out.status_code == 303, out.text[:300]
        assert out.headers["location"].endswith("/ui/sessions")
        waited = max(
            [
                await _refused_within(first, reader_cookie, 3.0),
                await _refused_within(first, reader_2_cookie, 3.0),
            ]
        )
        assert waited < 3.0
        assert await _status_with(second, reader_cookie) == 303  # to the sign-in page
        assert await _status_with(first, admin_cookie) == 200
        assert await _status_with(second, admin_cookie) == 200
        assert await _names(first, stack) == {"shared-ada"}
        assert await _names(second, stack) == {"shared-ada"}

        # One session's sign-out on the first gateway ends it on the second too.
        page = await admin.get("/ui/")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None
        bye = await admin.post("/ui/signout", data={"csrf": found.group(1)})
        assert bye.status_code == 303
        await _refused_within(second, admin_cookie, 3.0)
        assert await _names(second, stack) == set()
    finally:
        for web in (admin, reader, reader_2):
            await web.aclose()

    # The bucket holds each session under its cookie's digest: never the cookie, nor the
    # CSRF token the pages carried.
    nc = await stack.connect("admin")
    try:
        kv = await nc.jetstream().key_value(subjects.ADMIN_SESSIONS_BUCKET)
        stored = b""
        for key in await kv.keys():
            entry = await kv.get(key)
            stored += key.encode() + (entry.value or b"")
        digest = hashlib.sha256(reader_cookie.encode()).hexdigest()
        assert f"s.{digest}".encode() in stored
        for secret in (admin_cookie, reader_cookie, reader_2_cookie, found.group(1)):
            assert secret.encode() not in stored
    finally:
        await nc.close()


async def test_wrong_tokens_are_counted_on_every_gateway_together(
    stack: Stack, second_gateway: str
) -> None:
    """Ten wrong tokens per address per five minutes, counted per replica, let a guesser
    spread over two replicas try twenty."""
    address = "127.0.93.1"  # its own address: the stack's other tests are not held up

    async def wrong(url: str) -> int:
        async with httpx.AsyncClient(
            base_url=url,
            headers={"Origin": url},
            transport=httpx.AsyncHTTPTransport(local_address=address),
            timeout=30,
        ) as web:
            answer = await web.post("/ui/signin", data={"name": "guess", "token": "x" * 40})
            return answer.status_code

    for _ in range(5):
        assert await wrong(stack.gateway_url) == 401
    await asyncio.sleep(0.3)  # the other gateway hears of them
    for _ in range(5):
        assert await wrong(second_gateway) == 401
    await asyncio.sleep(0.3)
    assert await wrong(second_gateway) == 429
    assert await wrong(stack.gateway_url) == 429
