"""The read-only admin token on the session stack, over HTTP: every GET of ``/admin/v1`` and
every page of the web app answers as it does for the admin token, and every other request is
refused with an OpenAI-shaped 403 ``admin_read_only`` naming what it needed, changing nothing.

The routes are the running gateway's own (its OpenAPI document) and the app's route lists, so
a route added later is covered without editing this file."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import httpx
import pytest

from switchyard.admin.api import AdminApi
from switchyard.admin.read_slots import STREAMS_AT_ONCE
from switchyard.admin.ui import AdminUi
from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack

pytestmark = pytest.mark.integration

ADDRESS = "127.0.214.1"  # this module's own: the wrong-token guard counts per address
READS = {"GET", "HEAD"}
# Values for the routes' path parameters: real ones where the session stack has them, so a
# read reaches its handler (a 404 for an unknown id is as good: the token was taken).
PARAMS = {
    "alias": "chat",
    "name": "fake",
    "deployment": deployment_id("fake", "echo"),
    "key_id": "missing-key",
    "batch_id": "batch_missing",
}


def _read_only_token(stack: Stack) -> str:
    return stack.settings.admin_readonly_token_file.read_text(encoding="utf-8").strip()


def _fill(path: str, params: dict[str, str] | None = None) -> str:
    values = {**PARAMS, **(params or {})}

    def one(match: re.Match[str]) -> str:
        return values.get(match.group(1).split(":")[0], "x")

    return re.sub(r"\{([^}]+)\}", one, path)


def _api_routes() -> list[tuple[str, str]]:
    """(method, path under /admin/v1) of every route the management API mounts."""
    found = []
    for route in AdminApi(lambda: None).router().routes:
        for method in getattr(route, "methods", ()):
            found.append((method, str(getattr(route, "path_format", "")).removeprefix("/admin/v1")))
    return sorted(found)


def _ui_routes() -> list[tuple[str, str]]:
    """(method, path) of every route of the web app that needs a session."""
    found = []
    for router in AdminUi(lambda: None).routers():
        for route in router.routes:
            path = str(getattr(route, "path_format", ""))
            if path in ("/ui", "/ui/signin", "/ui/static/{name}"):
                continue  # no session needed: the same for everyone
            found += [(method, path) for method in getattr(route, "methods", ())]
    return sorted(found)


async def test_the_route_lists_are_the_running_gateways(stack: Stack) -> None:
    """What the other tests walk is what the gateway serves."""
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        spec = (await http.get("/openapi.json")).json()
    served = sorted(
        (method.upper(), path.removeprefix("/admin/v1"))
        for path, item in spec["paths"].items()
        if path.startswith("/admin/v1/")
        for method in item
    )
    assert served == _api_routes()
    assert {m for m, _ in _api_routes()} - READS, "no route changes anything?"


async def test_every_change_of_the_api_is_refused_and_changes_nothing(stack: Stack) -> None:
    """The admin token was the only one: looking at queues meant holding the keys to every
    provider secret."""
    headers = {"Authorization": f"Bearer {_read_only_token(stack)}"}
    before = (await stack.admin("GET", "/routes")).json()
    keys_before = (await stack.admin("GET", "/keys?limit=1")).json()["total"]
    changes = [(m, p) for m, p in _api_routes() if m not in READS]
    assert len(changes) >= 10
    async with httpx.AsyncClient(
        base_url=f"{stack.gateway_url}/admin/v1", timeout=30, headers=headers
    ) as http:
        for method, path in changes:
            body: Any = {"name": "ro-made", "value": "sk-ro-canary-0123456789", "provider": "x"}
            answer = await http.request(method, _fill(path), json=body)
            assert answer.status_code == 403, (method, path, answer.text)
            error = answer.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, error
            assert (error["type"], error["code"]) == ("permission_error", "admin_read_only")
            assert f"{method} /admin/v1{path} changes the gateway" in error["message"]
            assert "needs the admin token" in error["message"]
            assert "sk-ro-canary" not in answer.text
    assert (await stack.admin("GET", "/routes")).json()["revision"] == before["revision"]
    assert (await stack.admin("GET", "/keys?limit=1")).json()["total"] == keys_before
    secrets = (await stack.admin("GET", "/secrets")).json()
    assert "ro-made" not in str(secrets)


async def test_every_read_of_the_api_answers_as_for_the_admin_token(stack: Stack) -> None:
    read_only = {"Authorization": f"Bearer {_read_only_token(stack)}"}
    reads = [(m, p) for m, p in _api_routes() if m in READS]
    assert len(reads) >= 10
    async with httpx.AsyncClient(base_url=f"{stack.gateway_url}/admin/v1", timeout=30) as http:
        for method, path in reads:
            url = _fill(path)
            if path == "/stream":  # server-sent events: the answer's start is enough
                async with http.stream(method, url, headers=read_only) as answer:
                    assert answer.status_code == 200
                    assert answer.headers["content-type"].startswith("text/event-stream")
                continue
            admin = await http.request(method, url, headers=stack.admin_headers())
            answer = await http.request(method, url, headers=read_only)
            assert answer.status_code == admin.status_code, (method, path, answer.text)
            assert answer.status_code not in (401, 403), (method, path, answer.text)


async def test_wrong_read_only_tokens_count_with_the_admin_tokens(stack: Stack) -> None:
    """One count per address for every token: guessing the read-only one is no way around
    the guard, and the right one still works from a blocked address."""
    token = _read_only_token(stack)
    transport = httpx.AsyncHTTPTransport(local_address=ADDRESS)
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, transport=transport, timeout=30
    ) as web:
        statuses = []
        for i in range(60):
            wrong = {"Authorization": f"Bearer {token[:-3]}{i:03d}"}
            answer = await web.get("/admin/v1/routes", headers=wrong)
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                break
        assert statuses[-1] == 429, statuses
        assert set(statuses[:-1]) == {401}, statuses
        right = await web.get("/admin/v1/routes", headers={"Authorization": f"Bearer {token}"})
        assert right.status_code == 200, right.text


async def test_a_read_only_session_sees_every_page_and_changes_nothing(stack: Stack) -> None:
    origin = {"Origin": stack.gateway_url}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=origin) as web:
        form = {"name": "ro-viewer", "token": _read_only_token(stack)}
        signin = await web.post("/ui/signin", data=form)
        assert signin.status_code == 303, signin.text
        overview = await web.get("/ui/")
        assert overview.status_code == 200
        assert 'data-read-only="1"' in overview.text
        assert ">read-only</span>" in overview.text
        found = re.search(r'data-csrf="([^"]+)"', overview.text)
        assert found is not None
        csrf = found.group(1)
        _, record = await stack.new_key("ro-viewed")
        value = "sk-ro-" + "v" * 30
        stored = await stack.admin("PUT", "/secrets/ro-viewed", {"value": value})
        assert stored.status_code in (200, 201), stored.text
        real = {"key_id": record.id, "name": "ro-viewed"}
        pages = [(m, p) for m, p in _ui_routes() if m in READS]
        changes = [(m, p) for m, p in _ui_routes() if m not in READS and p != "/ui/signout"]
        assert len(pages) >= 10
        assert len(changes) >= 10
        for method, path in pages:
            url = _fill(path)
            if path.endswith("/stream"):
                async with web.stream(method, url) as answer:
                    assert answer.status_code == 200, path
                continue
            answer = await web.request(method, _fill(path, real))
            assert answer.status_code == 200, (path, answer.status_code)
            assert value not in answer.text, path  # no page shows a secret's value
            assert "needs the admin token" not in answer.text, path
        for method, path in changes:
            # A form a person sent (the CSRF field) gets a page; a script's call JSON.
            page = await web.request(method, _fill(path), data={"csrf": csrf, "name": "ro"})
            assert page.status_code == 403, (path, page.text[:300])
            assert "needs the admin token" in page.text
            call = await web.request(
                method,
                _fill(path),
                headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
            )
            assert call.status_code == 403, (path, call.text[:300])
            assert "needs the admin token" in call.json()["error"]
        signout = await web.post("/ui/signout", data={"csrf": csrf})
        assert signout.status_code == 303
    assert (await stack.admin("DELETE", "/secrets/ro-viewed")).status_code == 200
    audit = (await stack.admin("GET", "/audit?kind=session&q=ro-viewer&limit=10")).json()
    entries = {e["action"]: e for e in audit["entries"]}
    assert set(entries) == {"session.signin", "session.signout"}, audit
    for entry in entries.values():
        assert entry["detail"] == "read-only admin token", entry
        assert entry["ok"] is True


async def test_live_streams_open_at_once_are_bounded_per_token_role(stack: Stack) -> None:
    """Each /admin/v1/stream asks the control service once a second on its own, and the
    read-only token could open any number. Past the role's bound: 429, OpenAI-shaped, with
    Retry-After; the admin token's streams are counted apart; a closed one frees its slot."""
    read_only = {"Authorization": f"Bearer {_read_only_token(stack)}"}
    limits = httpx.Limits(max_connections=STREAMS_AT_ONCE + 10)
    async with (
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, limits=limits) as web,
        contextlib.AsyncExitStack() as streams,
    ):
        opened = [
            await streams.enter_async_context(
                web.stream("GET", "/admin/v1/stream", headers=read_only)
            )
            for _ in range(STREAMS_AT_ONCE)
        ]
        assert {s.status_code for s in opened} == {200}
        async with web.stream("GET", "/admin/v1/stream", headers=read_only) as refused:
            assert refused.status_code == 429  # (a stream on the old code: 200)
            await refused.aread()
        assert refused.json()["error"]["code"] == "too_many_concurrent_requests"
        assert int(refused.headers["retry-after"]) > 0
        async with web.stream("GET", "/admin/v1/stream", headers=stack.admin_headers()) as admin:
            assert admin.status_code == 200
        await opened[0].aclose()
        for _ in range(50):  # the gateway sees the close at its next send (once a second)
            async with web.stream("GET", "/admin/v1/stream", headers=read_only) as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.1)
        assert again.status_code == 200
