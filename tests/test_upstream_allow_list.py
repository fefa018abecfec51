"""``modelproxy.allowed_upstreams``: the operator's allow-list of provider hosts (an auditor's
find: any admin could point a provider at a host of their own, and the model-proxies sent it
the stored key as ``Authorization: Bearer``).

Its own stack, allowing ``127.0.0.1`` (over plain http) and ``*.example.com`` (https) only:
the fake provider listens there, and is reached as ``localhost`` by a provider seeded in the
file (stored before the setting, as it were). A call
to that one is refused with a 503 naming the setting, its key neither fetched nor sent; a
table write adding or moving a provider to a host not allowed is a 400 from the control
service; the allowed provider still answers with its key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

INSIDE_KEY = "sk-allowlist-inside-0123456789abcdef"
OUTSIDE_KEY = "sk-allowlist-outside-0123456789abcdef"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fenced(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    elsewhere = upstream.base_url.replace("127.0.0.1", "localhost")
    extra = {
        "providers": {
            "inside": {"kind": "openai-compatible", "api_base": upstream.base_url, "secret": "in"},
            "outside": {"kind": "openai-compatible", "api_base": elsewhere, "secret": "out"},
            # litellm would call http://localhost:11434 for `ollama/...`: a host nobody listed.
            "loose": {"kind": "litellm", "secret": "out"},
        },
        "routes": {
            "inside": {"deployments": [{"provider": "inside", "model": "echo:allow-in"}]},
            "outside": {"deployments": [{"provider": "outside", "model": "echo:allow-out"}]},
            "loose": {"deployments": [{"provider": "loose", "model": "ollama/allow-loose"}]},
        },
        "modelproxy": {"allowed_upstreams": ["http://127.0.0.1", "*.example.com"]},
    }
    stack = await start_stack(tmp_path_factory.mktemp("allowlist"), extra)
    try:
        for name, value in (("in", INSIDE_KEY), ("out", OUTSIDE_KEY)):
            stored = await stack.admin("PUT", f"/secrets/{name}", {"value": value})
            assert stored.status_code == 200, stored.text
        yield stack
    finally:
        await stack.supervisor.stop()


async def _chat(stack: Stack, model: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(
            f"{stack.tail_url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )


async def test_a_provider_off_the_allow_list_gets_no_call_and_no_key(
    fenced: Stack, upstream: FakeOpenAI
) -> None:
    refused = await _chat(fenced, "outside")
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "upstream_not_allowed"
    assert "modelproxy.allowed_upstreams" in error["message"]
    assert "localhost" not in error["message"]  # the client is not told the host
    assert upstream.calls_for("echo:allow-out") == []
    assert all(OUTSIDE_KEY not in str(c.headers) for c in upstream.calls)

    # Kind litellm without api_base: its host comes from the model string, unknowable here.
    loose = await _chat(fenced, "loose")
    assert loose.status_code == 503, loose.text
    assert loose.json()["error"]["code"] == "upstream_not_allowed"

    served = await _chat(fenced, "inside")
    assert served.status_code == 200, served.text
    (call,) = upstream.calls_for("echo:allow-in")
    assert call.headers.get("Authorization") == f"Bearer {INSIDE_KEY}"


async def test_the_control_service_refuses_a_provider_moved_off_the_allow_list(
    fenced: Stack, upstream: FakeOpenAI
) -> None:
    exfil = {"kind": "openai-compatible", "api_base": "http://attacker.invalid/v1", "secret": "in"}
    refused = await fenced.admin("PUT", "/providers/exfil", exfil)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "providers.exfil.api_base"
    assert "modelproxy.allowed_upstreams" in error["message"]
    assert "attacker.invalid" in error["message"]  # the admin is told which host
    assert (await fenced.admin("GET", "/providers")).json().get("exfil") is None

    # Moving an allowed provider there, or through the whole table, is refused the same way.
    moved = {"kind": "openai-compatible", "api_base": "http://attacker.invalid/v1", "secret": "in"}
    assert (await fenced.admin("PUT", "/providers/inside", moved)).status_code == 400
    live = (await fenced.admin("GET", "/routes")).json()
    live["table"]["providers"]["inside"]["api_base"] = "http://10.9.9.9/v1"
    whole = {"table": live["table"], "expected_revision": live["revision"]}
    replaced = await fenced.admin("PUT", "/routes", whole)
    assert replaced.status_code == 400, replaced.text
    assert replaced.json()["error"]["param"] == "providers.inside.api_base"

    # A kind litellm provider without api_base goes where its models say: refused too.
    unknown = await fenced.admin("PUT", "/providers/loose2", {"kind": "litellm", "secret": "in"})
    assert unknown.status_code == 400, unknown.text
    assert unknown.json()["error"]["param"] == "providers.loose2.api_base"
    assert "kind litellm without api_base" in unknown.json()["error"]["message"]

    # Allowed hosts (a wildcard) are written; a provider stored before the setting and left
    # where it is does not block other edits (its calls are refused all the same).
    ok = {"kind": "openai-compatible", "api_base": "https://llm.example.com/v1", "secret": "in"}
    assert (await fenced.admin("PUT", "/providers/wild", ok)).status_code == 200
    # ...over https: its key would cross the network in clear over plain http.
    clear = await fenced.admin(
        "PUT", "/providers/wild", {**ok, "api_base": "http://llm.example.com/v1"}
    )
    assert clear.status_code == 400, clear.text
    assert "https only" in clear.json()["error"]["message"]
    kept = {**(await fenced.admin("GET", "/providers")).json()["outside"], "concurrency": 7}
    edited = await fenced.admin("PUT", "/providers/outside", kept)
    assert edited.status_code == 200, edited.text
    assert (await fenced.admin("DELETE", "/providers/wild")).status_code == 200
