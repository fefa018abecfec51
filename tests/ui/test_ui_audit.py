"""The audit log records every admin change, whichever door it came through: the web UI, the
``/admin/v1`` API, or the CLI; the Audit page filters and pages them on the server."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from tests.ui.conftest import Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_ui_api_and_cli_changes_are_all_in_the_audit_log(web: Browser) -> None:
    stack = web.stack
    created = await stack.admin("POST", "/keys", {"name": "via-api"})
    assert created.status_code == 201
    cli = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "switchyard",
            "--config",
            str(stack.config_file),
            "keys",
            "create",
            "via-cli",
            "--team",
            "ops",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    await web.sign_in("Grace Hopper")
    await web.goto("/ui/keys/new")
    await web.page.get_by_label("Name").fill("via-ui")
    await web.page.get_by_role("button", name="Create key").click()
    await web.page.wait_for_selector("[data-new-key]")

    await web.goto("/ui/audit?kind=key")
    table = await web.page.locator("table.data").inner_text()
    for name, via in (("via-api", "api"), ("via-cli", "cli"), ("via-ui", "ui")):
        row = web.page.locator("tr", has_text=f"'{name}'")
        assert await row.count() == 1, table
        assert via in await row.locator(".badge").inner_text()
    assert "Grace Hopper" in table
    # Filters and pages are the server's.
    await web.goto("/ui/audit?via=cli")
    rows = web.page.locator("tbody tr")
    assert "via-cli" in await rows.first.inner_text()
    api = (await stack.admin("GET", "/audit?via=api&limit=1")).json()
    assert len(api["entries"]) == 1
    assert api["total"] >= 1
    await web.goto("/ui/audit?limit=2")
    assert await web.page.locator("tbody tr").count() == 2
    assert await web.page.get_by_role("link", name="Next").count() == 1
