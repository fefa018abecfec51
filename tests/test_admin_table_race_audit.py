"""``PUT /admin/v1/routes`` without ``expected_revision`` audits what it replaced, not what it
read before: the session stack's control service and audit stream, with the management API's
handler run here so another admin's write can land between its read and its write."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import msgspec
import pytest
from starlette.requests import Request
from starlette.types import Message

from switchyard.admin.api import AdminApi
from switchyard.admin.context import AdminContext
from switchyard.bus import identities
from switchyard.bus.audit import AuditWriter
from switchyard.bus.control_admin import ControlClient
from switchyard.runtime.client_address import TrustedProxies
from switchyard.schemas import control as wire
from switchyard.schemas.routing import Provider
from tests.stacks import Stack

pytestmark = pytest.mark.integration

ADDED = Provider(kind="openai-compatible", api_base="http://127.0.0.5:9/v1", secret="race-b")


class RacedControl(ControlClient):
    """Another admin adds provider ``race-b`` right after this client's first table read."""

    raced = False  # (the first read is raced)

    async def table(self) -> wire.TableState:
        state = await super().table()
        if not self.raced:
            self.raced = True
            other = self.acting_for("another admin")
            await other.edit(
                lambda t: msgspec.structs.replace(t, providers={**t.providers, "race-b": ADDED})
            )
        return state


async def _replaced(stack: Stack) -> list[dict[str, Any]]:
    """This test's whole-table write's entries (its address is its own)."""
    page = await stack.admin("GET", "/audit?kind=routes&limit=500")
    return [e for e in page.json()["entries"] if e["source"] == "127.0.0.213"]


def _request(body: bytes) -> Request:
    scope = {
        "type": "http",
        "method": "PUT",
        "path": "/admin/v1/routes",
        "query_string": b"",
        "headers": [(b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.213", 40000),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


async def test_a_whole_table_write_audits_the_write_it_replaced(stack: Stack) -> None:
    """The handler read the table, then wrote: a write landing between was undone by it (here
    provider race-b, added and then removed by the replace) and its entry did not say so."""
    first = {"kind": "openai-compatible", "api_base": "http://127.0.0.1:9/v1", "secret": "race-a"}
    assert (await stack.admin("PUT", "/providers/race-a", first)).status_code == 200
    live = (await stack.admin("GET", "/routes")).json()
    table = live["table"]
    table["providers"]["race-a"] = {**first, "api_base": "http://127.0.0.3:9/v1"}
    nc = await stack.connect(identities.ADMIN.name)
    try:
        control = RacedControl(nc, actor="test")
        none = cast(Any, None)
        context = AdminContext(
            auth=none,
            control=control,
            secrets=none,
            llm=none,
            keys=none,
            spend=none,
            index=none,
            audit=AuditWriter(nc, "api"),
            audit_log=none,
            key_presence=none,
            files=none,
            proxies=TrustedProxies(),
        )
        body = msgspec.json.encode({"table": table})
        answer = await AdminApi(lambda: context).put_table(_request(body), context)
        assert answer.status_code == 200, answer.body
        state = wire.TABLE_STATE.decode(answer.body)
        assert state.change_words is None  # the HTTP answer is as it was
        assert "race-b" not in state.table.providers  # the replace undid the other write
    finally:
        await nc.close()
        await stack.admin("DELETE", "/providers/race-a")
    async with asyncio.timeout(10):
        while not (entries := await _replaced(stack)):
            await asyncio.sleep(0.1)
    (entry,) = entries
    assert entry["detail"] == (
        "provider race-a: api_base http://127.0.0.1:9/v1 -> http://127.0.0.3:9/v1; "
        f"provider race-b removed; revision {state.revision}"
    )
