"""The web app in a browser under a path prefix: a gateway of the UI stack with
``ingress.gateway.root_path: /sy`` behind nginx (``location /sy/ { proxy_pass http://gw/; }``).

Chromium signs in, creates and revokes a key, and clicks through routes, audit, overview
(its live stream) and queues (its history call): every request the page makes, documents,
assets, scripts' calls and the event stream, starts with the prefix, and none fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.prefix_proxy import PREFIX, Fronted, nginx_in_front, prefixed_gateway
from tests.stacks import Stack
from tests.ui.conftest import Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fronted(
    ui_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fronted]:
    workdir = tmp_path_factory.mktemp("nginx-ui")
    async with prefixed_gateway(ui_stack) as gateway, nginx_in_front(gateway, workdir) as doors:
        yield doors


async def test_every_request_of_the_pages_stays_under_the_prefix(
    web: Browser, fronted: Fronted
) -> None:
    page = web.page
    site = fronted.strip + PREFIX
    requests: list[str] = []
    failed: list[tuple[int, str]] = []
    page.on("request", lambda r: requests.append(r.url))

    def on_response(response: Any) -> None:
        if response.status >= 400:
            failed.append((response.status, response.url))

    page.on("response", on_response)

    await page.goto(f"{site}/ui/keys")  # not signed in: the sign-in page, under the prefix
    await page.wait_for_url(f"{site}/ui/signin?next=/ui/keys")
    await page.get_by_label("Your name").fill("Prefixed Admin")
    token = web.stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{site}/ui/keys")

    await page.get_by_role("link", name="New key").click()
    await page.wait_for_url(f"{site}/ui/keys/new")
    await page.get_by_label("Name").fill("prefixed-app")
    await page.get_by_role("button", name="Create key").click()
    await page.wait_for_selector("[data-new-key]")
    await page.get_by_role("link", name="Done: see the key").click()
    await page.wait_for_selector("text=Usage, last 30 days")
    await page.get_by_role("button", name="Revoke").click()  # arms it (the page's script)
    await page.get_by_role("button", name="Revoke prefixed-app? Click again").click()
    await page.wait_for_selector("text=Revoked prefixed-app")

    await page.get_by_role("link", name="Providers & routes").click()
    await page.wait_for_url(f"{site}/ui/routes")
    await page.get_by_role("link", name="Audit").click()
    await page.wait_for_url(f"{site}/ui/audit")
    await page.wait_for_selector("text=Prefixed Admin")

    async with page.expect_request(lambda r: "/ui/api/stream" in r.url):
        await page.get_by_role("link", name="Overview").click()
    await page.wait_for_selector("[data-live=overview]")
    async with page.expect_request(lambda r: "/ui/api/history" in r.url):
        await page.get_by_role("link", name="Queues").click()
    await page.wait_for_url(f"{site}/ui/queues")
    await web.shot("root-path-queues")

    assert len(requests) > 20, requests
    escaped = [url for url in requests if not url.startswith(f"{site}/")]
    assert escaped == [], f"requests left {PREFIX}: {escaped}"
    assert failed == [], failed


@pytest.mark.parametrize("door", ["strip", "keep"])
async def test_the_api_docs_page_renders_under_the_prefix(
    web: Browser, fronted: Fronted, door: str
) -> None:
    """``/docs`` under the prefix fetched ``/openapi.json`` and Swagger UI's files from the
    host's root, outside the gateway: the page stayed blank."""
    page = web.page
    site = getattr(fronted, door) + PREFIX
    requests: list[str] = []
    failed: list[tuple[int, str]] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
    await page.goto(f"{site}/docs")
    await page.wait_for_selector(".opblock", timeout=20_000)
    listed = await page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/chat/completions" in listed, listed
    assert f"{site}/openapi.json" in requests, requests
    escaped = [url for url in requests if not url.startswith(f"{site}/")]
    assert escaped == [], f"requests left {PREFIX}: {escaped}"
    assert failed == [], failed
