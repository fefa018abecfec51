"""The web app's New key form creates one key, whichever gateway replica each sending reaches.

Its one-time token is the create's idempotency value in the ``sy_admin_idempotency`` bucket
(as an API ``Idempotency-Key`` is), not an entry in one replica's memory: a form opened on one
replica and sent to another was refused ("no longer valid", no key), and sent to both (a
browser's retry, a double click behind a load balancer) could make two keys. The session
stack's gateway is one replica; a second runs in the test's process on the same NATS, as the
gateway runs it, sharing the session through the sessions bucket.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from switchyard.admin.plugin import AdminPlugin
from switchyard.bus import identities
from switchyard.client import LLMClient
from switchyard.runtime.metrics import Metrics
from tests.stacks import Stack
from tests.test_admin_ui_stale_forms import form_of

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def replicas(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(the gateway, a second replica) for one browser: the same session cookie on both."""
    web, _ = signed_in
    plugin = AdminPlugin(stack.settings)
    nc = await stack.connect(identities.ADMIN.name)
    try:
        await plugin.start(LLMClient(nc), Metrics("test-ui-once"))
        app = FastAPI()
        for router in plugin.routers():
            app.include_router(router)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=stack.gateway_url,
            headers={"Origin": stack.gateway_url},
            cookies=web.cookies,
            timeout=30,
        ) as other:
            yield web, other
    finally:
        await plugin.stop()
        await nc.close()


async def _total(stack: Stack, name: str, expected: int) -> int:
    """How many keys ``name`` finds once ``expected`` are listed and a moment more passed:
    the list comes from the index, which follows the bucket a moment behind a create (read at
    once, it could miss the key, or a second key made a moment after the first)."""
    await stack.listed_keys(f"q={name}", lambda keys: len(keys) >= expected)
    await asyncio.sleep(0.5)
    return len(await stack.listed_keys(f"q={name}", lambda _keys: True))


async def test_a_form_sent_to_another_replica_and_again_makes_one_key(
    stack: Stack, replicas: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    gateway, other = replicas
    form = {**form_of((await gateway.get("/ui/keys/new")).text, "/ui/keys"), "name": "once-moved"}
    assert form["once"]

    created = await other.post("/ui/keys", data=form)  # the gateway that did not render it
    assert created.status_code == 200, created.text
    assert "Copy the key now" in created.text
    key_id = re.search(r"Key id: <code>(key_[^<]+)</code>", created.text)
    assert key_id is not None, created.text

    for replica in (gateway, other):  # a reload, on either replica
        again = await replica.post("/ui/keys", data=form)
        assert again.status_code == 409, again.text
        assert "No second key was created" in again.text
        assert key_id[1] in again.text
        assert "cannot be shown again" in again.text
        assert "sk-" not in again.text.split("<main", 1)[1]  # the secret is never shown again
    # Other fields in the same form (Back, edit, send): still its one key, named.
    edited = await gateway.post("/ui/keys", data={**form, "name": "once-moved-2"})
    assert edited.status_code == 409, edited.text
    assert key_id[1] in edited.text
    assert await _total(stack, "once-moved", 1) == 1


async def test_a_form_sent_twice_at_once_to_two_replicas_makes_one_key(
    stack: Stack, replicas: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    gateway, other = replicas
    form = {**form_of((await gateway.get("/ui/keys/new")).text, "/ui/keys"), "name": "once-race"}
    answers = await asyncio.gather(*(r.post("/ui/keys", data=form) for r in (gateway, other)))
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    assert sum("Copy the key now" in a.text for a in answers) == 1
    assert await _total(stack, "once-race", 1) == 1
    # A new form is a new key.
    fresh = {**form_of((await other.get("/ui/keys/new")).text, "/ui/keys"), "name": "once-race"}
    assert fresh["once"] != form["once"]
    assert (await gateway.post("/ui/keys", data=fresh)).status_code == 200
    assert await _total(stack, "once-race", 2) == 2


async def test_a_refused_form_keeps_its_token_for_the_corrected_sending(
    stack: Stack, replicas: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    """A form the key store refused (a bad field) freed its token: corrected, it creates."""
    gateway, other = replicas
    form = {**form_of((await gateway.get("/ui/keys/new")).text, "/ui/keys"), "name": "once-fixed"}
    refused = await other.post("/ui/keys", data={**form, "team": "key_0123456789abcdef"})
    assert refused.status_code == 400, refused.text
    assert form_of(refused.text, "/ui/keys")["once"] == form["once"]
    created = await gateway.post("/ui/keys", data=form)
    assert created.status_code == 200, created.text
    assert await _total(stack, "once-fixed", 1) == 1
