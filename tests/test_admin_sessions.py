"""The web app's sign-in sessions listed, and ended per role ("sign out everywhere"), over real
HTTP on the session stack: ``/admin/v1/sessions`` and the Sessions page's form. A leaked
session cookie, or a read-only token handed out, could only be stopped by rotating the token.

Sessions are shared by every gateway replica (tests/test_admin_sessions_shared.py runs two):
the answers name the replica that gave them, and the sign-out is said to be every replica's."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def _signed_in(
    stack: Stack, name: str, address: str, *, read_only: bool
) -> httpx.AsyncClient:
    """A browser-like client, signed in from ``address`` (the caller closes it)."""
    settings = stack.settings
    path = settings.admin_readonly_token_file if read_only else settings.admin_token_file
    token = path.read_text(encoding="utf-8").strip()
    web = httpx.AsyncClient(
        base_url=stack.gateway_url,
        transport=httpx.AsyncHTTPTransport(local_address=address),
        headers={"Origin": stack.gateway_url},
        timeout=30,
    )
    answer = await web.post("/ui/signin", data={"name": name, "token": token})
    assert answer.status_code == 303, answer.text[:300]
    return web


def _mine(doc: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [s for s in doc["sessions"] if s["name"].startswith(prefix)]


async def _still_in(web: httpx.AsyncClient) -> bool:
    answer = await web.get("/ui/audit")
    return answer.status_code == 200


async def test_sessions_are_listed_without_cookies_and_ended_per_role(stack: Stack) -> None:
    admin = await _signed_in(stack, "sess-admin", "127.0.0.41", read_only=False)
    reader = await _signed_in(stack, "sess-reader", "127.0.0.42", read_only=True)
    try:
        listed = await stack.admin("GET", "/sessions")
        assert listed.status_code == 200, listed.text
        doc = listed.json()
        assert isinstance(doc["gateway"], str), doc
        assert doc["gateway"], doc  # the replica's name
        rows = {s["name"]: s for s in _mine(doc, "sess-")}
        assert set(rows) == {"sess-admin", "sess-reader"}, doc
        assert rows["sess-admin"]["role"] == "admin"
        assert rows["sess-reader"]["role"] == "read-only"
        assert rows["sess-admin"]["address"] == "127.0.0.41"
        assert rows["sess-reader"]["address"] == "127.0.0.42"
        for row in rows.values():
            assert set(row) == {"role", "name", "address", "signed_in_at", "last_seen_at"}
            assert row["signed_in_at"] <= row["last_seen_at"]
        # Never the cookie, nor its digest (what the store keys sessions by).
        for web in (admin, reader):
            cookie = web.cookies["sy_session"]
            assert cookie not in listed.text
            assert hashlib.sha256(cookie.encode()).hexdigest() not in listed.text

        # The read-only token may look, not sign anyone out.
        read_only = {
            "Authorization": "Bearer "
            + stack.settings.admin_readonly_token_file.read_text(encoding="utf-8").strip()
        }
        async with httpx.AsyncClient(
            base_url=f"{stack.gateway_url}/admin/v1", headers=read_only, timeout=30
        ) as http:
            assert (await http.get("/sessions")).status_code == 200
            refused = await http.post("/sessions/signout", json={"role": "admin"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "admin_read_only"
        bad = await stack.admin("POST", "/sessions/signout", {"role": "everyone"})
        assert bad.status_code == 400
        assert bad.json()["error"]["type"] == "invalid_request_error"
        assert await _still_in(admin)
        assert await _still_in(reader)

        # Every read-only session ends; the admin's stays.
        ended = await stack.admin("POST", "/sessions/signout", {"role": "read-only"})
        assert ended.status_code == 200, ended.text
        assert ended.json()["role"] == "read-only"
        assert ended.json()["gateway"] == doc["gateway"]
        assert ended.json()["ended"] >= 1
        assert not await _still_in(reader)
        assert await _still_in(admin)
        after = (await stack.admin("GET", "/sessions")).json()
        assert [s["name"] for s in _mine(after, "sess-")] == ["sess-admin"]
        assert all(s["role"] == "admin" for s in after["sessions"])

        # The page's form ends every admin session, the sender's too, audited with its name.
        page = await admin.get("/ui/sessions")
        assert page.status_code == 200
        assert "sess-admin" in page.text
        assert "shared by every gateway replica" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        out = await admin.post(
            "/ui/sessions/signout", data={"csrf": csrf.group(1), "role": "admin"}
        )
        assert out.status_code == 303
        assert out.headers["location"].endswith("/ui/signin")
        assert not await _still_in(admin)
        assert _mine((await stack.admin("GET", "/sessions")).json(), "sess-") == []
    finally:
        await admin.aclose()
        await reader.aclose()

    audit = (await stack.admin("GET", "/audit?q=signout_all&limit=50")).json()["entries"]
    said = {(e["actor"], e["target"], e["via"]) for e in audit}
    assert ("admin token", "read-only sessions", "api") in said, audit
    assert ("sess-admin", "admin sessions", "ui") in said, audit
    entry = next(e for e in audit if e["actor"] == "sess-admin")
    assert entry["action"] == "session.signout_all"
    assert entry["source"] == "127.0.0.41"
    assert "ended on every gateway replica" in entry["detail"]
