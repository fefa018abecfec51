"""Key pages while the gateway's key index has not caught up with the key bucket.

The index follows the bucket asynchronously, so a page asked for right after a write (a
reload of "Key created", the key page a save redirects to) can find it a step behind. The
web app runs here in the test's process on the session stack's NATS, Valkey and OpenBao, as
the gateway runs it; stopping its index's follower holds the index exactly where it was, a
lag that lasts as long as the test needs.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from switchyard.admin.context import AdminContext
from switchyard.admin.key_lag import MAX_UNAPPLIED
from switchyard.admin.plugin import AdminPlugin
from switchyard.bus import identities
from switchyard.client import LLMClient
from switchyard.runtime.metrics import Metrics
from tests.stacks import Stack
from tests.test_admin_ui_stale_forms import form_of

pytestmark = pytest.mark.integration

BASE = "http://gateway.test"


@dataclass
class LaggingUi:
    """The web app in this process, signed in, whose key index can be held still."""

    web: httpx.AsyncClient
    context: AdminContext

    async def hold_index(self) -> None:
        """From now on the index misses every write to the bucket."""
        await self.context.index.stop()

    async def indexed(self, key_id: str) -> None:
        async with asyncio.timeout(10):
            while self.context.index.get(key_id) is None:
                await asyncio.sleep(0.05)


@pytest_asyncio.fixture(loop_scope="session")
async def lagging(stack: Stack) -> AsyncIterator[LaggingUi]:
    plugin = AdminPlugin(stack.settings)
    nc = await stack.connect(identities.ADMIN.name)
    try:
        await plugin.start(LLMClient(nc), Metrics("test-ui"))
        app = FastAPI()
        for router in plugin.routers():
            app.include_router(router)
        transport = httpx.ASGITransport(app=app)
        origin = {"Origin": BASE}
        async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=origin) as web:
            token = stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
            signin = await web.post("/ui/signin", data={"name": "index-lag", "token": token})
            assert signin.status_code == 303, signin.text
            assert plugin.context is not None
            yield LaggingUi(web, plugin.context)
    finally:
        await plugin.stop()
        await nc.close()


async def test_a_new_key_form_sent_again_before_the_index_has_the_key_names_it(
    stack: Stack, lagging: LaggingUi
) -> None:
    """A quick reload of "Key created" looked the key up in the index, which did not have it
    yet, and said "No key was created": one was, and its secret was already shown."""
    web = lagging.web
    await lagging.hold_index()
    form = {**form_of((await web.get("/ui/keys/new")).text, "/ui/keys"), "name": "lag-resent"}
    created = await web.post("/ui/keys", data=form)
    assert created.status_code == 200, created.text
    key_id = re.search(r"Key id: <code>(key_[^<]+)</code>", created.text)
    assert key_id is not None, created.text

    again = await web.post("/ui/keys", data=form)
    assert again.status_code == 409, again.text
    assert "No key was created" not in again.text
    assert f"created the key with id <code>{key_id[1]}</code>" in again.text
    assert "No second key was created" in again.text
    assert "cannot be shown again" in again.text
    assert "sk-" not in again.text.split("<main", 1)[1]
    keys = (await stack.admin("GET", "/keys?q=lag-resent")).json()
    assert [k["id"] for k in keys["keys"]] == [key_id[1]]


async def test_a_key_page_after_a_save_shows_what_was_saved_and_saves_again(
    stack: Stack, lagging: LaggingUi
) -> None:
    """The page a save redirects to came from the index: a step behind, it showed the old
    values and the old digest, and the next Save was refused as "changed by someone else"
    when nobody else had changed the key."""
    web = lagging.web
    _, record = await stack.new_key("lag-saved", budget_usd=5.0)
    await lagging.indexed(record.id)
    await lagging.hold_index()
    path = f"/ui/keys/{record.id}"
    form = form_of((await web.get(path)).text, path)
    saved = await web.post(path, data={**form, "owner": "first save"})
    assert saved.status_code == 303, saved.text

    page = await web.get(path)
    assert "Saved. Every edge applies it within a second." in page.text
    form = form_of(page.text, path)
    assert form["owner"] == "first save"
    again = await web.post(path, data={**form, "budget_usd": "7"})
    assert again.status_code == 303, again.text
    kept = (await stack.admin("GET", f"/keys/{record.id}")).json()
    assert (kept["owner"], kept["budget_usd"]) == ("first save", 7)

    # Someone else's change is still noticed.
    form = form_of((await web.get(path)).text, path)
    assert (await stack.admin("PATCH", f"/keys/{record.id}", {"tpm": 900})).status_code == 200
    stale = await web.post(path, data={**form, "owner": "third save"})
    assert stale.status_code == 409, stale.text
    assert "was changed by someone else since you opened this form" in stale.text


async def test_a_key_made_through_the_api_opens_before_the_index_has_it(
    stack: Stack, lagging: LaggingUi
) -> None:
    """A key made with ``POST /admin/v1/keys`` and opened in the web app a moment later was
    a 404: the page found the key's record through the index, which had not caught up. The
    record is read from the bucket then; an id no key has is still a 404."""
    web = lagging.web
    await lagging.hold_index()
    made = await stack.admin("POST", "/keys", {"name": "lag-api-made"})
    assert made.status_code in (200, 201), made.text
    key_id = made.json()["record"]["id"]
    assert lagging.context.index.get(key_id) is None  # the index missed it

    path = f"/ui/keys/{key_id}"
    page = await web.get(path)
    assert page.status_code == 200, page.text
    assert "lag-api-made" in page.text
    saved = await web.post(path, data={**form_of(page.text, path), "owner": "ops"})
    assert saved.status_code == 303, saved.text
    assert (await stack.admin("GET", f"/keys/{key_id}")).json()["owner"] == "ops"

    missing = await web.get("/ui/keys/key_0000000000000000")
    assert missing.status_code == 404, missing.text


async def test_a_key_opens_while_the_index_is_far_behind(stack: Stack, lagging: LaggingUi) -> None:
    """Past the writes read one by one (a stalled watch) the whole bucket is read instead:
    the key still opens, and an id no key has is still a 404."""
    await lagging.hold_index()
    _, first = await stack.new_key("lag-far-first")
    for n in range(MAX_UNAPPLIED + 2):
        await stack.new_key(f"lag-far-{n}")
    assert lagging.context.index.get(first.id) is None

    page = await lagging.web.get(f"/ui/keys/{first.id}")
    assert page.status_code == 200, page.text
    assert "lag-far-first" in page.text
    missing = await lagging.web.get("/ui/keys/key_0000000000000000")
    assert missing.status_code == 404, missing.text
