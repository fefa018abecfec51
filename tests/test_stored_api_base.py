"""A provider stored before ``api_base`` had to be an http(s) URL no longer blocks every edit.

The control service checked the whole table an edit produced against the newest rules, so
one such provider, kept as it was, refused every later route or provider edit with a 400
naming it. Now an edit elsewhere goes through, and an edit of that provider must fix it. On
the session stack: the old document is written straight to the bucket, as a release before
the rule left it, and put back at the end.
"""

from __future__ import annotations

import msgspec
import pytest

from switchyard.bus import subjects
from switchyard.runtime.definitions import ROUTE_TABLE_KEY
from tests.stacks import Stack

pytestmark = pytest.mark.integration

LEGACY = "stored-base-legacy"
FIELD = f"providers.{LEGACY}.api_base"


async def test_an_old_api_base_blocks_only_edits_of_its_own_provider(stack: Stack) -> None:
    nc = await stack.connect("provisioner")
    kv = await nc.jetstream(timeout=10).key_value(subjects.ROUTES_BUCKET)
    entry = await kv.get(ROUTE_TABLE_KEY)
    original = entry.value or b"{}"
    doc = msgspec.json.decode(original)
    doc["providers"][LEGACY] = {"kind": "openai-compatible", "api_base": "llm.internal:8000/v1"}
    await kv.update(ROUTE_TABLE_KEY, msgspec.json.encode(doc), last=entry.revision)
    try:
        route = {"deployments": [{"provider": "fake", "model": "echo"}]}
        elsewhere = await stack.admin("PUT", "/routes/stored-base-other", route)
        assert elsewhere.status_code == 200, elsewhere.text
        assert "stored-base-other" in elsewhere.json()["table"]["routes"]

        kept_bad = {"kind": "openai-compatible", "api_base": "llm.internal:9000/v1"}
        still = await stack.admin("PUT", f"/providers/{LEGACY}", kept_bad)
        assert still.status_code == 400, still.text
        error = still.json()["error"]
        assert error["param"] == FIELD
        assert "is not an http:// or https:// URL" in error["message"]

        fixed = {"kind": "openai-compatible", "api_base": "http://llm.internal:8000/v1"}
        mended = await stack.admin("PUT", f"/providers/{LEGACY}", fixed)
        assert mended.status_code == 200, mended.text
        assert mended.json()["table"]["providers"][LEGACY]["api_base"] == fixed["api_base"]
    finally:
        await kv.put(ROUTE_TABLE_KEY, original)
        await nc.close()
