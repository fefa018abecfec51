"""Writes of the route table that change nothing write nothing.

A ``PUT`` of the live table as it is (a script applying the same desired state, the same
LiteLLM file imported again) wrote a new revision: an audit line, every head and model-proxy
woken to apply the same table, and the next ``expected_revision`` of a script that read the
table before was stale. Such a write now answers the revision that is live with ``changed:
false``. The session stack's own gateway, control service and CLI.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.stacks import Stack

pytestmark = pytest.mark.integration

ROUTE = {"deployments": [{"provider": "demo", "model": "demo"}]}
FAKE = {"provider": "fake", "model": "unchanged"}


async def _audited(stack: Stack, target: str) -> list[dict[str, Any]]:
    """The audit entries, newest first, once one for ``target`` arrived (the log is a
    stream read a moment behind)."""
    async with asyncio.timeout(10):
        while True:
            entries: list[dict[str, Any]] = (await stack.admin("GET", "/audit?limit=500")).json()[
                "entries"
            ]
            if any(e["target"] == target for e in entries):
                return entries
            await asyncio.sleep(0.1)


async def test_putting_the_live_table_or_route_as_it_is_writes_no_revision(stack: Stack) -> None:
    # Other tests on the session stack replace the whole table too: only this test's entries.
    before = (await stack.admin("GET", "/audit?limit=1")).json()["entries"]
    first_seq = before[0]["seq"] if before else 0
    put = await stack.admin("PUT", "/routes/unchanged-a", ROUTE)
    assert put.status_code == 200, put.text
    live = (await stack.admin("GET", "/routes")).json()
    revision = live["revision"]
    assert put.json()["revision"] == revision
    assert put.json()["changed"] is True

    same = {"table": live["table"], "expected_revision": revision}
    for _ in range(2):  # a script that applies its desired state twice is not told it is stale
        again = await stack.admin("PUT", "/routes", same)
        assert again.status_code == 200, again.text
        assert again.json() == {**live, "changed": False}
    # The same table with its routes and providers in another order (a script's `jq -S`).
    table = live["table"]
    shuffled = {
        **table,
        "routes": dict(reversed(table["routes"].items())),
        "providers": dict(reversed(table["providers"].items())),
    }
    assert list(shuffled["routes"]) != list(table["routes"])
    reordered = await stack.admin(
        "PUT", "/routes", {"table": shuffled, "expected_revision": revision}
    )
    assert reordered.status_code == 200, reordered.text
    assert (reordered.json()["revision"], reordered.json()["changed"]) == (revision, False)
    route = await stack.admin("PUT", "/routes/unchanged-a", ROUTE)
    assert route.status_code == 200, route.text
    assert (route.json()["revision"], route.json()["changed"]) == (revision, False)
    assert (await stack.admin("GET", "/routes")).json()["revision"] == revision

    # A real change still writes, and is the next revision.
    gone = await stack.admin("DELETE", "/routes/unchanged-a")
    assert gone.status_code == 200, gone.text
    assert (gone.json()["revision"], gone.json()["changed"]) == (revision + 1, True)
    # A stale expected_revision is still refused, the table being the same or not.
    stale = await stack.admin("PUT", "/routes", same)
    assert stale.status_code == 409, stale.text

    entries = await _audited(stack, "unchanged-a")
    mine = [
        e
        for e in entries
        if e["seq"] > first_seq
        and (e["target"] == "unchanged-a" or e["action"] == "routes.replace")
    ]
    assert [e["action"] for e in mine] == ["route.delete", "route.put"], mine


def _import(stack: Stack, config: Path) -> subprocess.CompletedProcess[str]:
    argv = ["import", "litellm-config", str(config), "--apply"]
    return subprocess.run(
        [sys.executable, "-m", "switchyard", "--config", str(stack.config_file), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_importing_the_same_litellm_file_again_changes_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    entry = {
        "model_name": "unchanged-import",
        "litellm_params": {
            "model": "openai/m",
            "api_base": "http://unchanged.invalid/v1",
            "api_key": "os.environ/UNCHANGED_IMPORT_KEY",
        },
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": [entry]}))
    first = await asyncio.to_thread(_import, stack, config)
    assert first.returncode == 0, first.stdout + first.stderr
    revision = (await stack.admin("GET", "/routes")).json()["revision"]
    assert f"applied: route table revision {revision}" in first.stdout

    again = await asyncio.to_thread(_import, stack, config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "applied:" not in again.stdout
    assert (
        f"nothing changed: the live route table already has these (revision {revision})"
        in again.stdout
    )
    assert (await stack.admin("GET", "/routes")).json()["revision"] == revision
    table = (await stack.admin("GET", "/routes")).json()["table"]
    (used,) = {d["provider"] for d in table["routes"]["unchanged-import"]["deployments"]}
    assert (await stack.admin("DELETE", "/routes/unchanged-import")).status_code == 200
    entries = await _audited(stack, "unchanged-import")
    imports = [e for e in entries if e["action"] == "import.litellm"]
    assert [e["detail"].rsplit("; ", 1)[-1] for e in imports][:1] == [f"revision {revision}"]
    assert len([e for e in imports if e["detail"].endswith(f"revision {revision}")]) == 1
    await stack.admin("DELETE", f"/providers/{used}")


async def test_a_route_saved_in_the_web_app_as_it_is_says_nothing_changed(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    http, _ = signed_in
    put = await stack.admin("PUT", "/routes/unchanged-ui", {"deployments": [FAKE]})
    assert put.status_code == 200, put.text
    revision = put.json()["revision"]
    try:
        form = await http.get("/ui/routes/edit?alias=unchanged-ui")
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.text))
        fields = hidden | {
            "description": "",
            "fallbacks": "",
            "deployments-0-provider": FAKE["provider"],
            "deployments-0-model": FAKE["model"],
            "deployments-0-weight": "1",
        }
        saved = await http.post("/ui/routes/save", data=fields)
        assert saved.status_code == 303, saved.text
        flash = re.sub(r"<[^>]+>", "", (await http.get(saved.headers["location"])).text)
        assert "Nothing changed: route unchanged-ui was already so." in flash
        assert (await stack.admin("GET", "/routes")).json()["revision"] == revision
    finally:
        await stack.admin("DELETE", "/routes/unchanged-ui")
