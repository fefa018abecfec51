"""Audit entries say what an admin change changed (an auditor's finds).

A provider's ``api_base`` is where the model-proxies send its key: an admin credential could
point a provider at any host (``PUT /providers``, the whole table, the web app) and the audit
said only ``provider.put fake 'revision 13'``. Each table write now names what it changed about
providers, old -> new (URLs and secret names, never a key). The session stack's gateway.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def audited(stack: Stack, action: str, target: str, count: int = 1) -> list[dict[str, Any]]:
    """The newest ``count`` entries of ``action`` on ``target``, newest first, once there
    (the log is a stream read a moment behind)."""
    async with asyncio.timeout(10):
        while True:
            page = await stack.admin("GET", f"/audit?limit=500&q={target}")
            found = [
                e for e in page.json()["entries"] if e["action"] == action and e["target"] == target
            ]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.1)


async def test_a_provider_write_says_where_its_key_goes_old_to_new(stack: Stack) -> None:
    first = {"kind": "openai-compatible", "api_base": "http://127.0.0.1:9/v1", "secret": "aw-one"}
    put = await stack.admin("PUT", "/providers/aw-prov", first)
    assert put.status_code == 200, put.text
    moved = {**first, "api_base": "http://127.0.0.2:9/v1", "secret": "aw-two"}
    put = await stack.admin("PUT", "/providers/aw-prov", moved)
    assert put.status_code == 200, put.text
    newest, added = await audited(stack, "provider.put", "aw-prov", 2)
    assert added["detail"] == (
        "provider aw-prov added: kind openai-compatible, api_base http://127.0.0.1:9/v1, "
        f"secret aw-one; revision {put.json()['revision'] - 1}"
    )
    assert newest["detail"] == (
        "provider aw-prov: api_base http://127.0.0.1:9/v1 -> http://127.0.0.2:9/v1, "
        f"secret aw-one -> aw-two; revision {put.json()['revision']}"
    )

    live = (await stack.admin("GET", "/routes")).json()
    table = live["table"]
    table["providers"]["aw-prov"] = {**moved, "kind": "vllm"}
    replaced = await stack.admin(
        "PUT", "/routes", {"table": table, "expected_revision": live["revision"]}
    )
    assert replaced.status_code == 200, replaced.text
    async with asyncio.timeout(10):
        while True:
            entries = (await stack.admin("GET", "/audit?kind=routes&limit=50")).json()["entries"]
            mine = [e for e in entries if "aw-prov" in e["detail"]]
            if mine:
                break
            await asyncio.sleep(0.1)
    assert mine[0]["action"] == "routes.replace"
    assert mine[0]["detail"] == (
        f"provider aw-prov: kind openai-compatible -> vllm; revision {replaced.json()['revision']}"
    )

    gone = await stack.admin("DELETE", "/providers/aw-prov")
    assert gone.status_code == 200, gone.text
    (deleted,) = await audited(stack, "provider.delete", "aw-prov")
    assert deleted["detail"] == f"provider aw-prov removed; revision {gone.json()['revision']}"


async def test_a_provider_edited_in_the_web_app_says_its_api_base_moved(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    http, _ = signed_in
    first = {"kind": "openai-compatible", "api_base": "http://127.0.0.1:9/v1", "secret": "aw-ui"}
    assert (await stack.admin("PUT", "/providers/aw-ui", first)).status_code == 200
    try:
        form = await http.get("/ui/providers/edit?name=aw-ui")
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.text))
        fields = hidden | {
            "name": "aw-ui",
            "kind": "openai-compatible",
            "api_base": "http://127.0.0.3:9/v1",
            "api_version": "",
            "secret": "aw-ui",
            "concurrency": "64",
            "timeouts-first_token_s": "60",
            "timeouts-request_s": "600",
            "timeouts-stream_s": "600",
        }
        saved = await http.post("/ui/providers/save", data=fields)
        assert saved.status_code == 303, saved.text
        assert "Saved provider aw-ui" in (await http.get(saved.headers["location"])).text
        newest, _ = await audited(stack, "provider.put", "aw-ui", 2)
        assert newest["via"] == "ui"
        assert newest["detail"].startswith(
            "provider aw-ui: api_base http://127.0.0.1:9/v1 -> http://127.0.0.3:9/v1; revision "
        )
    finally:
        await stack.admin("DELETE", "/providers/aw-ui")


async def test_enabling_a_key_is_not_audited_as_disabling_it(stack: Stack) -> None:
    """``keys update ID --enable`` and ``PATCH {"disabled": false}`` wrote the same
    ``key.update 'disabled'`` as ``{"disabled": true}``: a revoked key let in again read as
    one shut."""
    _, record = await stack.new_key("aw-enable")
    off = await stack.admin("PATCH", f"/keys/{record.id}", {"disabled": True})
    assert off.status_code == 200, off.text
    on = await stack.admin("PATCH", f"/keys/{record.id}", {"disabled": False})
    assert on.status_code == 200, on.text
    assert (await stack.admin("POST", f"/keys/{record.id}/revoke")).status_code == 200
    cli = stack.cli("keys", "update", record.id, "--enable")
    assert cli.returncode == 0, cli.stderr
    cli_on, api_on, api_off = await audited(stack, "key.update", record.id, 3)
    assert (api_off["via"], api_on["via"], cli_on["via"]) == ("api", "api", "cli")
    assert api_off["detail"].startswith("disabled")
    assert api_on["detail"].startswith("enabled")
    assert cli_on["detail"].startswith("enabled")
