"""No number an operator types makes a record nobody can read, on the session stack.

A budget of ``inf``, ``nan`` or ``1e309`` is refused naming the field by the admin API, the web
form and the command line, with nothing stored; route and provider forms say which number is
wrong and what it takes. A key record made unreadable (bytes written straight into its KV
entry, as an older version wrote an infinite budget) is left out of `keys list` with a warning,
its requests get a 401, not a 500, and the admin revokes it. A LiteLLM import the route table
refuses stores none of the keys written in its file.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import msgspec
import pytest

from switchyard.bus import subjects
from switchyard.schemas.keys import ClientKey, record_name
from tests.stacks import Stack

pytestmark = pytest.mark.integration

BUDGET_RULE = "budget must be a finite number of dollars, 0 or more"
ENDLESS_JSON = [b"1e309", b"Infinity", b"NaN", b"-Infinity"]
ENDLESS_TEXT = ["inf", "nan", "1e309", "Infinity"]


async def _raw(stack: Stack, method: str, path: str, body: bytes) -> httpx.Response:
    """An admin API call with ``body`` as sent (httpx's encoder refuses to write infinities)."""
    headers = {**stack.admin_headers(), "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(
            method, f"{stack.gateway_url}/admin/v1{path}", content=body, headers=headers
        )


async def _named(stack: Stack, name: str) -> list[dict[str, Any]]:
    found = (await stack.admin("GET", f"/keys?q={name}")).json()["keys"]
    return [k for k in found if k["name"] == name]


def _key_form(csrf: str, name: str, budget: str) -> dict[str, str]:
    return {
        "csrf": csrf,
        "name": name,
        "models": "*",
        "rpm": "0",
        "tpm": "0",
        "max_parallel": "0",
        "budget_usd": budget,
        "budget_period": "monthly",
        "expires": "",
    }


async def test_a_budget_json_cannot_carry_is_refused_everywhere_and_nothing_is_stored(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    for number in ENDLESS_JSON:
        made = await _raw(stack, "POST", "/keys", b'{"name":"finite-api","budget_usd":%s}' % number)
        assert made.status_code == 400, made.text
        error = made.json()["error"]
        assert (error["param"], error["message"][: len(BUDGET_RULE)]) == ("budget_usd", BUDGET_RULE)
    assert await _named(stack, "finite-api") == []

    web, csrf = signed_in
    for text in ENDLESS_TEXT:
        form = await web.post("/ui/keys", data=_key_form(csrf, "finite-form", text))
        assert form.status_code == 400, form.text
        assert "Budget must be a finite number of dollars, 0 or more" in form.text
        cli = stack.cli("keys", "create", "finite-cli", f"--budget={text}")
        assert cli.returncode == 2, cli.stderr
        assert f"argument --budget: B{BUDGET_RULE[1:]}" in cli.stderr
        assert "Traceback" not in cli.stderr
    assert await _named(stack, "finite-form") == []
    assert await _named(stack, "finite-cli") == []

    _, record = await stack.new_key("finite-kept", budget_usd=5)
    for number in ENDLESS_JSON:
        changed = await _raw(stack, "PATCH", f"/keys/{record.id}", b'{"budget_usd":%s}' % number)
        assert changed.status_code == 400, changed.text
        assert changed.json()["error"]["param"] == "budget_usd"
    form = await web.post(f"/ui/keys/{record.id}", data=_key_form(csrf, "finite-kept", "1e309"))
    assert form.status_code == 400
    assert "Budget must be a finite number of dollars" in form.text
    shown = await stack.admin("GET", f"/keys/{record.id}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["budget_usd"] == 5


async def _status(stack: Stack, api_key: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(
            f"{stack.tail_url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {api_key}"},
        )
    return resp.status_code, (resp.json().get("error") or {}) if resp.status_code >= 400 else {}


async def _until(stack: Stack, api_key: str, done: Any) -> tuple[int, dict[str, Any]]:
    """The answer to a request with ``api_key`` once ``done(status, error)`` holds (a change
    reaches the edges and heads through KV within moments)."""
    answer = await _status(stack, api_key)
    for _ in range(100):
        if done(*answer):
            break
        await asyncio.sleep(0.1)
        answer = await _status(stack, api_key)
    return answer


def _null_budget(record: ClientKey) -> bytes:
    """The record as an older version wrote it for a budget of ``inf``."""
    doc = msgspec.to_builtins(record)
    doc["budget_usd"] = None
    return msgspec.json.encode(doc)


async def test_an_unreadable_key_is_refused_listed_apart_and_revoked(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    nulled_key, nulled = await stack.new_key("finite-nulled")
    garbled_key, garbled = await stack.new_key("finite-garbled")
    _, fine = await stack.new_key("finite-fine")
    for api_key in (nulled_key, garbled_key):  # every edge and head knows them
        assert (await _until(stack, api_key, lambda s, _e: s != 401))[0] == 200
    nc = await stack.connect("admin")
    try:
        kv = await nc.jetstream(timeout=10).key_value(subjects.KEYS_BUCKET)
        await kv.put(record_name(nulled.hash), _null_budget(nulled))
        await kv.put(record_name(garbled.hash), b"\xff not a record")
    finally:
        await nc.close()

    for api_key in (nulled_key, garbled_key):
        status, error = await _until(stack, api_key, lambda s, _e: s != 200)
        assert status == 401, error
        assert "its stored record cannot be read" in error["message"]

    listed = stack.cli("keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert fine.id in listed.stdout
    assert nulled.id not in listed.stdout
    assert f"warning: key {nulled.id}: its stored record cannot be read" in listed.stderr
    assert f"switchyard keys revoke {record_name(garbled.hash)}" in listed.stderr

    one = await stack.admin("GET", f"/keys/{nulled.id}")
    for _ in range(50):  # the gateway's index follows the bucket
        if one.status_code != 200:
            break
        await asyncio.sleep(0.1)
        one = await stack.admin("GET", f"/keys/{nulled.id}")
    assert one.status_code == 409, one.text
    assert "cannot be read" in one.json()["error"]["message"]
    assert (await stack.admin("GET", "/keys?q=finite")).status_code == 200
    web, _ = signed_in
    page = await web.get("/ui/keys")
    assert page.status_code == 200
    assert "Records that cannot be read" in page.text
    assert f"/ui/keys/{nulled.id}/revoke" in page.text

    revoked = await stack.admin("POST", f"/keys/{nulled.id}/revoke")
    assert revoked.status_code == 200, revoked.text
    assert (revoked.json()["disabled"], revoked.json()["name"]) == (True, "finite-nulled")
    shut = await stack.admin("POST", f"/keys/{garbled.id}/revoke")  # the index knew its id
    assert shut.status_code == 200, shut.text
    for api_key in (nulled_key, garbled_key):
        status, error = await _until(
            stack, api_key, lambda _s, e: "record cannot be read" not in e.get("message", "")
        )
        assert (status, error["code"]) == (401, "api_key_revoked")
    assert (await stack.admin("GET", f"/keys/{nulled.id}")).json()["disabled"] is True


async def test_route_and_provider_numbers_are_refused_at_their_field(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    web, csrf = signed_in
    for weight in ("inf", "nan", "-1", "1e309"):
        form = await web.post(
            "/ui/routes/save",
            data={
                "csrf": csrf,
                "alias": "finite-route",
                "rows": "1",
                "deployments-0-provider": "fake",
                "deployments-0-model": "echo",
                "deployments-0-weight": weight,
            },
        )
        assert form.status_code == 400, form.text
        assert "Weight must be a finite number from 0 to 1,000,000" in form.text
        assert "Expected `float`" not in form.text
    assert (await stack.admin("GET", "/routes/finite-route")).status_code == 404
    for seconds in ("inf", "nan", "0", "-5"):
        form = await web.post(
            "/ui/providers/save",
            data={"csrf": csrf, "name": "finite-provider", "kind": "openai",
                  "timeouts-request_s": seconds},
        )  # fmt: skip
        assert form.status_code == 400, form.text
        assert "The request timeout must be a finite number of seconds above 0" in form.text
    assert "finite-provider" not in (await stack.admin("GET", "/providers")).text


async def test_a_refused_import_stores_no_secret(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    web, csrf = signed_in
    config = (
        "model_list:\n"
        "  - model_name: 'not a name!'\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o\n"
        "      api_base: http://finite-import.invalid/v1\n"
        "      api_key: sk-finite-0123456789abcdef0123456789abcdef\n"
    )
    secret = "openai-compatible-finite-import-invalid-key"
    preview = await web.post("/ui/import/preview", data={"csrf": csrf, "config": config})
    assert preview.status_code == 200, preview.text
    shown = re.search(r'name="preview" value="([^"]+)"', preview.text)
    assert shown is not None, preview.text  # the Apply form names the preview on its page
    applied = await web.post("/ui/import/apply", data={"csrf": csrf, "preview": shown.group(1)})
    assert applied.status_code == 303
    assert applied.headers["location"] == "/ui/import"
    assert "Not applied: invalid route table" in (await web.get("/ui/import")).text
    names = [s["name"] for s in (await stack.admin("GET", "/secrets")).json()["secrets"]]
    assert secret not in names
    routes = (await stack.admin("GET", "/routes")).json()
    assert "not a name!" not in str(routes)
    assert "Apply would be refused, storing nothing" in preview.text  # said before, too
