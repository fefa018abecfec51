"""A name ending in a line break is refused where a table or a secret is written, and a table
stored with one still loads.

msgspec checks a pattern with ``re.search``, where ``$`` also matches before a final "\\n":
``PUT /admin/v1/routes`` stored a provider named "openai\\n" and a route "chat\\n" (the path
names were checked whole since the last release, the whole table's were not), and the
secrets service sent a secret "openai\\n" to OpenBao, which refused its path: a 503 for a
caller's mistake. New writes are a 400 naming the field; a table already stored with such a
name loads, and edits elsewhere go through (the bucket is written straight, as an older
release left it, and put back).
"""

from __future__ import annotations

import secrets

import msgspec
import pytest

from switchyard.bus import subjects
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.errors import ApiError, NotFound
from switchyard.runtime.definitions import ROUTE_TABLE_KEY
from tests.stacks import Stack

pytestmark = pytest.mark.integration

_PROVIDER = {"kind": "openai-compatible", "api_base": "http://127.0.0.1:9/v1"}


def _route(provider: str) -> dict[str, object]:
    return {"deployments": [{"provider": provider, "model": "m"}]}


async def test_a_whole_table_put_refuses_a_name_ending_in_a_line_break(stack: Stack) -> None:
    current = (await stack.admin("GET", "/routes")).json()
    table = current["table"]
    for section, name, field in (
        ("providers", "nl-provider\n", "providers.nl-provider\\n"),
        ("routes", "nl-route\n", "routes.nl-route\\n"),
    ):
        doc = {
            "providers": {**table["providers"], "nl-provider": _PROVIDER},
            "routes": {**table["routes"], "nl-route": _route("nl-provider")},
        }
        if section == "providers":
            doc["providers"][name] = _PROVIDER
        else:
            doc["routes"][name] = _route("nl-provider")
        put = {"table": doc, "expected_revision": current["revision"]}
        refused = await stack.admin("PUT", "/routes", put)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", field), error
        assert "ends with a line break" in error["message"]
    assert (await stack.admin("GET", "/routes")).json()["revision"] == current["revision"]


async def test_a_table_stored_with_such_a_name_still_loads_and_takes_other_edits(
    stack: Stack,
) -> None:
    nc = await stack.connect("provisioner")
    kv = await nc.jetstream(timeout=10).key_value(subjects.ROUTES_BUCKET)
    entry = await kv.get(ROUTE_TABLE_KEY)
    original = entry.value or b"{}"
    doc = msgspec.json.decode(original)
    doc["providers"]["nl-old\n"] = _PROVIDER
    doc["routes"]["nl-old-route\n"] = _route("nl-old\n")
    await kv.update(ROUTE_TABLE_KEY, msgspec.json.encode(doc), last=entry.revision)
    try:
        for _ in range(100):  # the control service follows the bucket
            read = await stack.admin("GET", "/routes")
            assert read.status_code == 200, read.text
            if "nl-old\n" in read.json()["table"]["providers"]:
                break
        else:
            raise AssertionError("the stored table was not loaded")
        elsewhere = await stack.admin("PUT", "/routes/nl-other", _route("fake"))
        assert elsewhere.status_code == 200, elsewhere.text
        assert "nl-old-route\n" in elsewhere.json()["table"]["routes"]
        # A whole-table PUT that keeps them as they were goes through too.
        state = (await stack.admin("GET", "/routes")).json()
        again = {"table": state["table"], "expected_revision": state["revision"]}
        kept = await stack.admin("PUT", "/routes", again)
        assert kept.status_code == 200, kept.text
        # One that changes such a provider must rename it.
        changed = dict(state["table"])
        changed["providers"] = {**changed["providers"], "nl-old\n": {**_PROVIDER, "concurrency": 3}}
        put = {"table": changed, "expected_revision": kept.json()["revision"]}
        refused = await stack.admin("PUT", "/routes", put)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "providers.nl-old\\n"
    finally:
        await kv.put(ROUTE_TABLE_KEY, original)
        await nc.close()


async def test_the_secrets_service_refuses_a_name_ending_in_a_line_break(stack: Stack) -> None:
    nc = await stack.connect("admin")
    admin = SecretsAdmin(nc, actor="test")
    value = "sk-newline-name-" + secrets.token_hex(8)
    try:
        with pytest.raises(ApiError) as refused:
            await admin.put("nl-secret\n", value)
        assert (refused.value.status, refused.value.param) == (400, "name")
        assert "line break" in refused.value.message
        assert value not in refused.value.message
        with pytest.raises(ApiError) as unread:
            await admin.info("nl-secret\n")
        assert (unread.value.status, unread.value.param) == (400, "name")
        with pytest.raises(NotFound):
            await admin.info("nl-secret")
    finally:
        await nc.close()
