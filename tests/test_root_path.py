"""The gateway served under a path prefix (``ingress.gateway.root_path``) behind nginx.

A gateway of the session stack runs here with ``ingress.gateway.root_path: /sy``; nginx
serves it under ``/sy/`` on two ports, one stripping the prefix (``proxy_pass http://gw/;``,
the documented snippet) and one keeping it. Through either, the web app's redirects, links,
assets, form actions and session cookie stay under ``/sy``, sign-in passes the origin check,
and the LLM API answers; without the proxy the gateway still answers at its root.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from tests.prefix_proxy import PREFIX, Fronted, nginx_in_front, prefixed_gateway
from tests.stacks import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_URL_ATTR = re.compile(r'\b(?:href|src|action)="([^"#][^"]*)"')


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fronted(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fronted]:
    async with prefixed_gateway(stack) as gateway:
        workdir: Path = tmp_path_factory.mktemp("nginx")
        async with nginx_in_front(gateway, workdir) as doors:
            yield doors


def _urls(html: str) -> list[str]:
    return _URL_ATTR.findall(html)


async def _sign_in(web: httpx.AsyncClient, stack: Stack, next_path: str) -> httpx.Response:
    token = stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
    data = {"name": "root-path", "token": token, "next": next_path}
    return await web.post(f"{PREFIX}/ui/signin", data=data)


@pytest.mark.parametrize("door", ["strip", "keep"])
async def test_the_web_app_stays_under_the_prefix(
    fronted: Fronted, stack: Stack, door: str
) -> None:
    base = getattr(fronted, door)
    async with httpx.AsyncClient(base_url=base, timeout=30, headers={"Origin": base}) as web:
        # Not signed in: to the sign-in page under the prefix, the page asked for kept.
        start = await web.get(f"{PREFIX}/ui/keys")
        assert start.status_code == 303
        assert start.headers["location"] == f"{PREFIX}/ui/signin?next=/ui/keys"
        assert (await web.get(f"{PREFIX}/ui")).headers["location"] == f"{PREFIX}/ui/"
        form = await web.get(f"{PREFIX}/ui/signin?next=/ui/keys")
        assert form.status_code == 200
        assert _urls(form.text)
        assert all(u.startswith(f"{PREFIX}/ui/") for u in _urls(form.text))
        # nginx rewrites Host; X-Forwarded-Host/-Proto pass the origin check.
        signin = await _sign_in(web, stack, "/ui/keys")
        assert signin.status_code == 303, signin.text
        assert signin.headers["location"] == f"{PREFIX}/ui/keys"
        cookie = signin.headers["set-cookie"]
        assert f"Path={PREFIX}/ui" in cookie, cookie
        for page in ("/ui/", "/ui/keys", "/ui/routes", "/ui/audit", "/ui/queues", "/ui/spend"):
            got = await web.get(PREFIX + page)
            assert got.status_code == 200, (page, got.text[:300])
            urls = _urls(got.text)
            assert urls, page
            escaped = [u for u in urls if not u.startswith(f"{PREFIX}/")]
            assert not escaped, (page, escaped)
            assert f'data-root="{PREFIX}"' in got.text
        asset = await web.get(f"{PREFIX}/ui/static/live.js")
        assert asset.status_code == 200
        assert "${BASE}/ui/api/stream" in asset.text
        stream = await web.get(f"{PREFIX}/ui/api/overview")
        assert stream.status_code == 200, stream.text
        # A form's redirect, and the sign-out's, stay under the prefix too.
        csrf = re.search(r'name="csrf" value="([^"]+)"', (await web.get(f"{PREFIX}/ui/")).text)
        assert csrf is not None
        out = await web.post(f"{PREFIX}/ui/signout", data={"csrf": csrf.group(1)})
        assert out.status_code == 303
        assert out.headers["location"] == f"{PREFIX}/ui/signin"
        assert f"Path={PREFIX}/ui" in out.headers["set-cookie"]


async def test_the_llm_api_answers_through_either_door_and_at_the_root(
    fronted: Fronted, stack: Stack
) -> None:
    key, _ = await stack.new_key("root-path-llm")
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=30, headers=auth) as http:
        for base in (fronted.strip + PREFIX, fronted.keep + PREFIX, fronted.gateway):
            models = await http.get(f"{base}/v1/models")
            assert models.status_code == 200, (base, models.text)
            chat = await http.post(f"{base}/v1/chat/completions", json=body)
            assert chat.status_code == 200, (base, chat.text)
            assert chat.json()["choices"][0]["message"]["content"]
            unknown = await http.get(f"{base}/v1/no-such-thing")
            assert unknown.status_code == 404
            assert "error" in unknown.json()


@pytest.mark.parametrize("door", ["strip", "keep"])
async def test_the_api_docs_load_their_schema_and_assets_under_the_prefix(
    fronted: Fronted, door: str
) -> None:
    """``/docs`` named ``/openapi.json`` and its assets at the host's root: behind the proxy
    the browser fetched them outside the gateway and the page stayed blank. The schema names
    the prefix as its server, so "Try it out" calls under it too."""
    base = getattr(fronted, door)
    async with httpx.AsyncClient(base_url=base, timeout=30) as web:
        page = await web.get(f"{PREFIX}/docs")
        assert page.status_code == 200, page.text[:300]
        urls = re.findall(r"""(?:href|src)="([^"]+)"|url: '([^']+)'""", page.text)
        named = [href or url for href, url in urls]
        assert f"{PREFIX}/openapi.json" in named, named
        assert f"{PREFIX}/docs/assets/swagger-ui-bundle.js" in named, named
        for url in named:
            assert url.startswith(f"{PREFIX}/"), (url, named)
            assert (await web.get(url)).status_code == 200, url
        schema = (await web.get(f"{PREFIX}/openapi.json")).json()
        assert schema["servers"] == [{"url": PREFIX}]
        assert "/v1/chat/completions" in schema["paths"]


@pytest.mark.parametrize("door", ["strip", "keep", "gateway"])
async def test_a_trailing_slash_redirect_keeps_the_prefix(fronted: Fronted, door: str) -> None:
    """Starlette's redirect of ``/health/`` to ``/health`` named the host's root: through a
    proxy that keeps the prefix the client was sent out of the gateway (``/health``, a 404 of
    the proxy's or another app's page)."""
    base = getattr(fronted, door)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for asked, there in (
            (f"{PREFIX}/health/?probe=1", f"{PREFIX}/health?probe=1"),
            (f"{PREFIX}/docs/", f"{PREFIX}/docs"),
            (f"{PREFIX}/admin/v1/keys/", f"{PREFIX}/admin/v1/keys"),
        ):
            moved = await http.get(asked)
            assert moved.status_code == 307, (asked, moved.text[:300])
            assert moved.headers["location"] == there, asked
        assert (await http.get(f"{PREFIX}/health?probe=1")).status_code == 200  # followed
        unknown = await http.get(f"{PREFIX}/no-such-thing/")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "not_found"
