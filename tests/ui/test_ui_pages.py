"""Every page renders for a signed-in admin (and is photographed); none works without a session."""

from __future__ import annotations

import httpx
import pytest

from tests.stacks import Stack
from tests.ui.conftest import Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGES = {
    "overview": ("/ui/", "Overview"),
    "queues": ("/ui/queues", "Queues"),
    "secrets": ("/ui/secrets", "Secrets"),
    "routes": ("/ui/routes", "Providers & routes"),
    "route-edit": ("/ui/routes/edit?alias=chat", "Route chat"),
    "provider-edit": ("/ui/providers/edit", "New provider"),
    "import": ("/ui/import", "Import a LiteLLM config"),
    "keys": ("/ui/keys", "Client keys"),
    "key-new": ("/ui/keys/new", "New client key"),
    "spend": ("/ui/spend", "Spend"),
    "audit": ("/ui/audit", "Audit log"),
}


async def test_sign_in_then_every_page_renders(web: Browser) -> None:
    await web.goto("/ui/signin")
    await web.shot("signin")
    await web.sign_in()
    for name, (path, heading) in PAGES.items():
        response = await web.goto(path)
        assert response.status == 200, (path, await response.text())
        assert await web.page.locator("h1").inner_text() == heading
        headers = response.headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
        await web.page.wait_for_timeout(300)  # live pages: the first event has arrived
        await web.shot(name)


async def test_no_page_or_call_works_without_a_session(ui_stack: Stack) -> None:
    paths = [p for p, _ in PAGES.values()]
    paths += ["/ui/api/overview", "/ui/api/history", "/ui/spend.csv"]
    async with httpx.AsyncClient(base_url=ui_stack.gateway_url, timeout=10) as http:
        for path in paths:
            resp = await http.get(path)
            if path.startswith("/ui/api/"):
                assert resp.status_code == 401, path
            else:
                assert resp.status_code == 303, path
                assert resp.headers["location"].startswith("/ui/signin"), path
        for path in ("/ui/keys", "/ui/secrets", "/ui/routes/save", "/ui/signout"):
            resp = await http.post(path, data={"name": "x"})
            assert resp.status_code == 401, path
        # a made-up cookie is no session either
        resp = await http.get("/ui/keys", cookies={"sy_session": "forged"})
        assert resp.status_code == 303
