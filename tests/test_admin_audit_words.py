"""Audit entries say what an admin change changed (an auditor's finds).

A provider's ``api_base`` is where the model-proxies send its key: an admin credential could
point a provider at any host (``PUT /providers``, the whole table, the web app) and the audit
said only ``provider.put fake 'revision 13'``. Each table write now names what it changed about
providers, old -> new (URLs and secret names, never a key). The session stack's gateway.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

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
    assert mine[0]["detail"] == (  # a change of kind says where the key goes, even unmoved
        "provider aw-prov: kind openai-compatible -> vllm, "
        "api_base http://127.0.0.2:9/v1 -> http://127.0.0.2:9/v1; "
        f"revision {replaced.json()['revision']}"
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


async def test_key_entries_say_what_was_set_old_to_new_and_what_was_deleted(
    stack: Stack,
) -> None:
    """``key.update 'budget_usd, rpm'``, ``key.create "name 'k2'"`` and ``key.delete ''`` said
    neither values nor which key."""
    fields = {"name": "aw-k2", "models": ["gpt-*"], "budget_usd": 10, "owner": "ann", "team": "ml"}
    created = await stack.admin("POST", "/keys", fields)
    assert created.status_code == 201, created.text
    key_id = created.json()["record"]["id"]
    changed = await stack.admin("PATCH", f"/keys/{key_id}", {"budget_usd": 25, "rpm": 60})
    assert changed.status_code == 200, changed.text
    cli = stack.cli("keys", "update", key_id, "--team", "infra")
    assert cli.returncode == 0, cli.stderr
    gone = await stack.admin("DELETE", f"/keys/{key_id}")
    assert gone.status_code == 200, gone.text

    (made,) = await audited(stack, "key.create", key_id)
    assert made["detail"] == "name 'aw-k2', models gpt-*, owner 'ann', team 'ml', budget_usd 10"
    by_cli, by_api = await audited(stack, "key.update", key_id, 2)
    assert by_api["detail"] == "budget_usd 10 -> 25, rpm 0 -> 60"
    assert by_cli["detail"] == "team 'ml' -> 'infra'"
    (deleted,) = await audited(stack, "key.delete", key_id)
    assert deleted["detail"] == "name 'aw-k2'"
    hashes = [created.json()["key"], created.json()["record"].get("hint", "")]
    for entry in (made, by_api, by_cli, deleted):
        assert not any(h and h in entry["detail"] for h in hashes)


async def test_a_forced_secret_delete_says_it_was_forced_and_what_it_left_keyless(
    stack: Stack,
) -> None:
    """``?force=true`` deleted a key providers used with an entry like any other delete."""
    assert (
        await stack.admin("PUT", "/secrets/aw-forced", {"value": "sk-aw-0123456789abcdefgh"})
    ).status_code == 200
    provider = {
        "kind": "openai-compatible",
        "api_base": "http://127.0.0.1:9/v1",
        "secret": "aw-forced",
    }
    assert (await stack.admin("PUT", "/providers/aw-forced", provider)).status_code == 200
    route = {"deployments": [{"provider": "aw-forced", "model": "m"}]}
    assert (await stack.admin("PUT", "/routes/aw-forced", route)).status_code == 200
    try:
        gone = await stack.admin("DELETE", "/secrets/aw-forced?force=true")
        assert gone.status_code == 200, gone.text
        (entry,) = await audited(stack, "secret.delete", "aw-forced")
        assert entry["detail"] == (
            "forced (?force=true); it was the key of providers aw-forced; routes left with "
            "nothing to answer: aw-forced"
        )
    finally:
        await stack.admin("DELETE", "/routes/aw-forced")
        await stack.admin("DELETE", "/providers/aw-forced")


async def test_a_cli_import_names_the_providers_it_added_and_where_their_keys_go(
    stack: Stack, tmp_path: Path
) -> None:
    entry = {
        "model_name": "aw-import",
        "litellm_params": {
            "model": "openai/m",
            "api_base": "http://aw-import.invalid/v1",
            "api_key": "os.environ/AW_IMPORT_KEY",
        },
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": [entry]}))
    done = await asyncio.to_thread(
        stack.cli, "import", "litellm-config", str(config), "--apply", "--allow-missing-secrets"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = (await stack.admin("GET", "/routes")).json()["table"]
    (provider,) = {d["provider"] for d in table["routes"]["aw-import"]["deployments"]}
    secret = table["providers"][provider]["secret"]
    try:
        async with asyncio.timeout(10):
            while True:
                page = await stack.admin("GET", "/audit?kind=import&q=aw-import&limit=5")
                if page.json()["entries"]:
                    break
                await asyncio.sleep(0.1)
        detail = page.json()["entries"][0]["detail"]
        assert (
            f"provider {provider} added: kind openai-compatible, "
            f"api_base http://aw-import.invalid/v1, secret {secret}; revision "
        ) in detail
    finally:
        await stack.admin("DELETE", "/routes/aw-import")
        await stack.admin("DELETE", f"/providers/{provider}")
