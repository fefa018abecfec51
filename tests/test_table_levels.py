"""A route table that processes of an older version would refuse is not written while one runs,
on a real stack. The older process is an accounting heartbeat stating protocol level 2, published
under accounting's own identity (as the upgrade-order tests do): while it beats, a route priced
with ``web_search_per_call`` is refused through the admin API (per route and whole table) with a
message naming the field and the process; a route without the field is written throughout; once
the process says goodbye the same route is written."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from switchyard.bus import subjects
from switchyard.schemas.monitor import ENCODER, Heartbeat
from tests.stacks import Stack
from tests.support import beat_until

pytestmark = pytest.mark.integration

ALIAS = "levels-search"
OLD = "accounting-old"
TOKENS = {"input_per_token": 1e-6, "output_per_token": 2e-6}
SEARCHES = {**TOKENS, "web_search_per_call": 0.02}
REFUSED = (
    f"`price.web_search_per_call` needs protocol level 3; still older: {OLD} (level 2); "
    "finish the upgrade"
)


def _route(price: dict[str, float]) -> dict[str, Any]:
    return {"deployments": [{"provider": "fake", "model": "echo:levels", "price": price}]}


async def _listed(stack: Stack) -> set[str]:
    resp = await stack.admin("GET", "/overview")
    assert resp.status_code == 200, resp.text
    return {p["instance"] for p in resp.json()["processes"]}


async def _routes(stack: Stack) -> dict[str, Any]:
    resp = await stack.admin("GET", "/routes")
    assert resp.status_code == 200, resp.text
    state: dict[str, Any] = resp.json()
    return state


def _refusal(resp: Any) -> str:
    assert resp.status_code == 503, resp.text
    error = resp.json()["error"]
    assert error["code"] == "upgrade_unfinished"
    message: str = error["message"]
    return message


async def test_a_table_an_older_process_would_refuse_waits_until_it_is_gone(stack: Stack) -> None:
    beat = Heartbeat(
        component="accounting",
        instance=OLD,
        host="elsewhere",
        pid=4343,
        started_at=time.time(),
        version="0.1.0",
        protocol=2,
    )
    nc: NATS = await stack.connect("accounting")

    async def publish() -> None:
        await nc.publish(subjects.process_stats("accounting", OLD), ENCODER.encode(beat))
        await nc.flush()

    async def nothing() -> None:
        return None

    try:
        try:

            async def seen() -> bool | None:
                return True if OLD in await _listed(stack) else None

            await beat_until(seen, publish)
            await publish()
            # Per route: the admin API's read-modify-write edit.
            refused = await stack.admin("PUT", f"/routes/{ALIAS}", _route(SEARCHES))
            assert REFUSED in _refusal(refused)
            # The whole table, compare-and-set.
            state = await _routes(stack)
            table = {
                **state["table"],
                "routes": {**state["table"]["routes"], ALIAS: _route(SEARCHES)},
            }
            whole = await stack.admin(
                "PUT", "/routes", {"table": table, "expected_revision": state["revision"]}
            )
            assert REFUSED in _refusal(whole)
            assert ALIAS not in (await _routes(stack))["table"]["routes"]
            # A table without the field is written as before.
            plain = await stack.admin("PUT", f"/routes/{ALIAS}", _route(TOKENS))
            assert plain.status_code == 200, plain.text
        finally:
            last = ENCODER.encode(msgspec.structs.replace(beat, stopping=True))
            await nc.publish(subjects.process_stats("accounting", OLD), last)
            await nc.flush()
            await nc.close()

        async def gone() -> bool | None:
            return True if OLD not in await _listed(stack) else None

        await beat_until(gone, nothing)
        written = await stack.admin("PUT", f"/routes/{ALIAS}", _route(SEARCHES))
        assert written.status_code == 200, written.text
        stored = (await _routes(stack))["table"]["routes"][ALIAS]["deployments"][0]["price"]
        assert stored["web_search_per_call"] == 0.02
    finally:
        await stack.admin("DELETE", f"/routes/{ALIAS}")
