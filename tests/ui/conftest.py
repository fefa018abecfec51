"""Browser tests of the admin web app: Debian's Chromium driven by Playwright against a real
stack (every process, real NATS, OpenBao, Valkey) with the fake provider over HTTP.

One stack for the package. Every response the browser receives is recorded, and each test
ends by checking that none carries the canary secret (the provider key stored through the UI
in ``test_ui_flows``), so the leak canary runs over every page and call the tests make.
Screenshots go to ``artifacts/ui/`` (git-ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = os.environ.get("SWITCHYARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "ui"
CANARY = "sk-uicanary-" + secrets.token_hex(20)
HELD = deployment_id("fake", "ctl:held")
COOLING = deployment_id("fake", "ctl:cool")
VAULTED = deployment_id("fake-vault", "echo")
XSS = "<img src=x onerror=alert(1)>"

if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@dataclass
class Recorder:
    """Every response body the browser received, and every dialog it opened."""

    bodies: list[tuple[str, bytes]] = field(default_factory=list)
    pending: list[asyncio.Task[None]] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def on_response(self, response: Any) -> None:
        if "text/event-stream" in (response.headers.get("content-type") or ""):
            return  # a stream never ends; its data is the same as /ui/api/overview

        async def read() -> None:
            with contextlib.suppress(Exception):  # redirects and aborted loads have no body
                self.bodies.append((response.url, await response.body()))

        self.pending.append(asyncio.ensure_future(read()))

    async def settle(self) -> None:
        if self.pending:
            await asyncio.wait(self.pending, timeout=10)
        self.pending.clear()


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def ui_stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    base = upstream.base_url
    price = {"input_per_token": 0.000002, "output_per_token": 0.000008}
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": base, "concurrency": 8},
            "fake-vault": {"kind": "openai-compatible", "api_base": base, "secret": "vault-key"},
        },
        "routes": {
            "chat": {
                "deployments": [{"provider": "fake", "model": "echo", "price": price}],
                "description": "the fake provider, echoing",
            },
            "held": {"deployments": [{"provider": "fake", "model": "ctl:held", "concurrency": 1}]},
            "cool": {"deployments": [{"provider": "fake", "model": "ctl:cool"}]},
            "vaulted": {"deployments": [{"provider": "fake-vault", "model": "echo"}]},
        },
        "routing": {"cooldown_s": 120, "max_attempts": 1},
        "modelproxy": {"secret_ttl_s": 3},
    }
    stack = await start_stack(tmp_path_factory.mktemp("ui"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Browser:
    """A fresh browser context (no cookies) on the stack's gateway, recording what it gets."""

    stack: Stack
    page: Any
    recorder: Recorder

    @property
    def base(self) -> str:
        return self.stack.gateway_url

    async def goto(self, path: str) -> Any:
        return await self.page.goto(self.base + path)

    async def sign_in(self, name: str = "Ada Admin", *, read_only: bool = False) -> None:
        """Signs in with the admin token, or with the read-only one (``read_only``)."""
        await self.goto("/ui/signin")
        await self.page.get_by_label("Your name").fill(name)
        settings = self.stack.settings
        path = settings.admin_readonly_token_file if read_only else settings.admin_token_file
        token = path.read_text(encoding="utf-8").strip()
        await self.page.get_by_label("Admin token").fill(token)
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.wait_for_url(self.base + "/ui/")

    async def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    async def csrf(self) -> str:
        return str(await self.page.get_attribute("body", "data-csrf"))

    def chats(self, http: Any, model: str, count: int, prefix: str) -> list[asyncio.Future[Any]]:
        """``count`` chat requests to ``model`` through the stack's tail, sent at once: the
        futures of their ``httpx`` responses (``http`` is an ``httpx.AsyncClient``)."""
        return [
            asyncio.ensure_future(
                http.post(
                    f"{self.stack.tail_url}/v1/chat/completions",
                    json={
                        "model": model,
                        "messages": [{"role": "user", "content": f"{prefix}{i}"}],
                    },
                    headers={"Authorization": f"Bearer {self.stack.api_key}"},
                )
            )
            for i in range(count)
        ]


@pytest_asyncio.fixture(loop_scope="session")
async def web(ui_stack: Stack, browser: Any) -> AsyncIterator[Browser]:
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    page = await context.new_page()
    recorder = Recorder()
    page.on("response", recorder.on_response)

    async def on_dialog(dialog: Any) -> None:
        recorder.dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield Browser(ui_stack, page, recorder)
    finally:
        await recorder.settle()
        await context.close()
    leaked = [url for url, body in recorder.bodies if CANARY.encode() in body]
    assert leaked == [], f"the canary secret reached the browser in: {leaked}"
    assert recorder.dialogs == [], f"a page opened a dialog: {recorder.dialogs}"
